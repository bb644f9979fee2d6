"""The live progress line (lmscaling.progress): whole fields only, one job per terminal."""

import io
import logging
import os

from lmscaling import progress
from lmscaling.progress import LiveLine, line_format

FIGURES = ["loss 4.154", "30.4k tok/s", "MFU 41.0%"]


def test_line_format_keeps_whole_fields_in_order_then_the_bar():
    wide = line_format("L4-D80", 489, FIGURES, 120)
    assert wide == (
        "L4-D80 step {n_fmt}/{total_fmt} | loss 4.154 | 30.4k tok/s | MFU 41.0% | "
        "ETA {remaining} |{bar}|"
    )
    # "L4-D80 step 489/489 | loss 4.154 | 30.4k tok/s" is 46 characters: no room for MFU
    assert line_format("L4-D80", 489, FIGURES, 50) == (
        "L4-D80 step {n_fmt}/{total_fmt} | loss 4.154 | 30.4k tok/s"
    )
    # the bar only where 5 columns are left for it
    assert line_format("L4-D80", 489, FIGURES, 30) == "L4-D80 step {n_fmt}/{total_fmt} |{bar}|"
    assert line_format("L4-D80", 489, FIGURES, 26) == "L4-D80 step {n_fmt}/{total_fmt}"
    # the step field always shows, however narrow; braces in a name are not tqdm fields
    assert line_format("{x}", 9, [], 5) == "{{x}} step {n_fmt}/{total_fmt}"


def test_live_line_draws_the_fields_and_ends_with_one_newline(terminal):
    with LiveLine("tiny", 20, stream=terminal) as live:
        assert live.enabled and live.active
        for step in range(1, 21):
            live.step()
            if step % 10 == 0:
                live.show([f"loss {5 - step / 10:.3f}", "1.0k tok/s"])
    assert not live.active
    screen = terminal.getvalue()
    assert screen.count("\n") == 1 and screen.endswith("\n")
    final = screen.rsplit("\r", 1)[-1].rstrip("\n")
    assert final.startswith("tiny step 20/20 | loss 3.000 | 1.0k tok/s | ETA 00:00 |")
    assert final.endswith("|") and len(final) == 80  # the width of an 80-column terminal


def test_one_job_draws_at_a_time_the_next_takes_over(terminal, caplog):
    first = LiveLine("first", 10, stream=terminal).__enter__()
    with caplog.at_level(logging.INFO, logger="lmscaling.progress"):
        second = LiveLine("second", 10, stream=terminal).__enter__()
        assert first.active and second.enabled and not second.active
        second.step()
        second.show(["loss 1.000"])
        assert not second.active  # the terminal is still the first job's
    assert caplog.messages == [  # said once, not at every try
        "second: another job's progress is on this terminal; this one's is in its log file "
        "until that line is free"
    ]
    first.__exit__(None, None, None)
    second.step()
    second.show(["loss 0.500"])
    assert second.active  # taken over, from its current step
    second.__exit__(None, None, None)
    lines = terminal.getvalue().split("\n")
    assert lines[0].rsplit("\r", 1)[-1].startswith("first step 0/10")
    assert lines[1].rsplit("\r", 1)[-1].startswith("second step 2/10 | loss 0.500 |")


def test_no_line_off_a_terminal():
    stream = io.StringIO()
    with LiveLine("tiny", 5, stream=stream) as live:
        live.step()
        live.show(["loss 1.000"])
        assert not live.enabled and not live.active
    assert stream.getvalue() == ""


def test_no_line_where_disabled(terminal):
    with LiveLine("tiny", 5, enabled=False, stream=terminal) as live:
        assert not live.enabled and not live.active
    assert terminal.getvalue() == ""


def test_a_resumed_run_starts_at_its_step_with_its_last_figures(terminal):
    with LiveLine("tiny", 10, 4, ["loss 2.000"], stream=terminal):
        pass
    assert terminal.getvalue().lstrip("\r").startswith("tiny step 4/10 | loss 2.000 | ETA ")


def test_the_layout_follows_a_resized_terminal(terminal, monkeypatch):
    size = os.terminal_size((100, 30))
    monkeypatch.setattr(progress, "_terminal_size", lambda stream: size)
    with LiveLine("tiny", 20, 0, ["loss 3.000", "1.0k tok/s"], stream=terminal) as live:
        live.step()
        live.bar.refresh()
        wide = terminal.getvalue().rsplit("\r", 1)[-1]
        size = os.terminal_size((30, 30))
        live.step()
        live.bar.refresh()
        narrow = terminal.getvalue().rsplit("\r", 1)[-1]
    assert wide.startswith("tiny step 1/20 | loss 3.000 | 1.0k tok/s | ETA ")
    assert len(wide) == 100 and wide.endswith("|")  # the whole width, the bar last
    assert narrow == "tiny step 2/20 | loss 3.000"  # whole fields, no padding to 100
