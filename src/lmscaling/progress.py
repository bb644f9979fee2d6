"""One live progress line for a training job on a terminal (tqdm), shared by parallel jobs.

Snakemake runs several training jobs at once on one terminal. Each would redraw its own line
over the others', so a job draws only while it holds the terminal's lock (``flock`` on a file
named after the terminal in the temporary directory); the others keep trying at every progress
row and take the line over when its holder ends. Where stderr is not a terminal there is no line.

The line holds whole fields only, in this order: "L4-D80 step 300/489", the loss, tokens/s, MFU
and ETA, then the bar in what width is left. A field that does not fit is dropped with those
after it, rather than cut inside a number; the layout follows the terminal's width as it
changes. The line fills the whole width, so that a terminal's deferred wrap starts whatever
another process prints next (Snakemake's job messages, another job's log lines) on a line of
its own, and the live line is drawn again below it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger(__name__)

FALLBACK_SIZE = os.terminal_size((80, 24))  # where the terminal says 0 x 0 (tqdm would hide)
ETA_WIDTH = 5  # "01:40" (until the rate is known; "1:40:00" once it says hours)
MIN_BAR = 5  # narrower than this, no bar


def _ask_terminal(stream, query):
    """``query(fd)`` for the file descriptor of ``stream``; None where the stream has none
    (a test double, a closed file) or the terminal does not answer."""
    try:
        return query(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return None


def _terminal_size(stream) -> os.terminal_size | None:
    """Size of the terminal ``stream`` writes to; None when it reports none (0 x 0)."""
    size = _ask_terminal(stream, os.get_terminal_size)
    return size if size and size.columns > 0 and size.lines > 0 else None


def _lock_path(stream) -> Path:
    """The lock file of the terminal ``stream`` writes to, one per user and terminal."""
    # "terminal": a stream that says it is a terminal but has no device
    terminal = _ask_terminal(stream, os.ttyname) or "terminal"
    name = re.sub(r"[^\w.-]", "-", terminal.strip("/"))
    return Path(tempfile.gettempdir()) / f"lmscaling-{os.getuid()}-{name}.progress.lock"


def line_format(
    name: str, total: int, figures: list[str], columns: int, eta_width: int = ETA_WIDTH
) -> str:
    """tqdm ``bar_format`` for the live line: the fields that fit whole, then the bar.

    Args:
        name: model id, the first field with "step n/total".
        total: total steps (sizes the step counter field).
        figures: e.g. ``["loss 4.154", "30.4k tok/s"]``; "ETA" follows them.
        columns: terminal width.
        eta_width: characters to keep for the ETA's time.

    Returns:
        A format for :class:`tqdm.tqdm` with ``{n_fmt}``, ``{total_fmt}``, ``{remaining}`` and
        ``{bar}`` where they fit; braces in ``name`` and ``figures`` are escaped.
    """
    fields = [f"{name} step {total}/{total}", *figures, "ETA " + "0" * eta_width]
    templates = [f"{_escape(name)} step {{n_fmt}}/{{total_fmt}}"]
    templates += [_escape(f) for f in figures] + ["ETA {remaining}"]
    used, shown = 0, []
    for field, template in zip(fields, templates, strict=True):
        width = len(field) + (3 if shown else 0)  # " | " between fields
        if shown and used + width > columns:
            break
        used += width
        shown.append(template)
    text = " | ".join(shown)
    if columns - used - 3 >= MIN_BAR:
        text += " |{bar}|"
    return text


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


class LiveLine:
    """The live progress line of one training job (rank 0), see the module docstring.

    Use as a context manager around the training loop; call :meth:`step` after every optimizer
    step and :meth:`show` at every progress row. :attr:`enabled` says whether the line is this
    job's progress display (stderr is a terminal; drawn now, :attr:`active`, or once the
    terminal is free): its progress rows then belong in its log file only, since a line printed
    on the terminal would land inside the live line of whichever job draws it.

    Args:
        name: model id shown first.
        total: total optimizer steps.
        done: steps already done (a resumed run).
        figures: the figures to show until the first :meth:`show` (a resumed run's last row).
        enabled: False draws nothing (ranks other than 0); True draws where ``stream`` is a
            terminal.
        stream: where to draw (default ``sys.stderr``).
    """

    def __init__(
        self,
        name: str,
        total: int,
        done: int = 0,
        figures: list[str] | None = None,
        enabled: bool = True,
        stream=None,
    ) -> None:
        self.name, self.total, self.done = name, total, done
        self.figures = list(figures or [])
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.bar: tqdm | None = None
        self.columns = 0  # the width the line is laid out for
        self._lock = None
        self._waiting = False  # another job holds the terminal's line
        self._stack = contextlib.ExitStack()

    @property
    def active(self) -> bool:
        """Whether this job draws the terminal's line now (it holds the terminal's lock)."""
        return self.bar is not None

    def __enter__(self) -> LiveLine:
        self._try_to_draw()
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()  # the bar ends with a newline, then the lock is released
        self.bar = None

    def step(self) -> None:
        """One more optimizer step done."""
        self.done += 1
        if self.bar is not None:
            if self._size().columns != self.columns:  # the window was resized
                self._lay_out()
            self.bar.update()

    def show(self, figures: list[str]) -> None:
        """New figures of the last progress row (e.g. ``["loss 4.154", "30.4k tok/s"]``)."""
        self.figures = figures
        if self.bar is None:
            self._try_to_draw()
        if self.bar is not None:
            self._lay_out()
            self.bar.refresh()

    def _size(self) -> os.terminal_size:
        return _terminal_size(self.stream) or FALLBACK_SIZE

    def _lay_out(self) -> None:
        """Fit the fields and the bar to the terminal's present width."""
        size = self._size()
        if size.columns != self.columns:  # a fresh printer: no padding to the old width
            self.bar.sp = self.bar.status_printer(self.bar.fp)
        rate = self.bar.format_dict["rate"]  # steps/s (tqdm's smoothed estimate), or None
        eta = tqdm.format_interval((self.total - self.done) / rate) if rate else ""
        self.columns = self.bar.ncols = size.columns
        self.bar.nrows = size.lines
        self.bar.bar_format = line_format(
            self.name, self.total, self.figures, size.columns, max(ETA_WIDTH, len(eta))
        )

    def _try_to_draw(self) -> None:
        """Take the terminal's line if no other job holds it, and start drawing."""
        if not self.enabled:
            return
        if self._lock is None:
            try:
                fd = os.open(_lock_path(self.stream), os.O_RDONLY | os.O_CREAT, 0o600)
            except OSError:
                self.enabled = False  # no lock to be had: draw nothing rather than collide
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                if not self._waiting:  # said once, so that a silent terminal is explained
                    self._waiting = True
                    log.info(
                        "%s: another job's progress is on this terminal; this one's is in "
                        "its log file until that line is free",
                        self.name,
                    )
                return
            self._lock = fd
            self._stack.callback(self._release)
        self.bar = self._stack.enter_context(
            tqdm(
                total=self.total,
                initial=self.done,
                file=self.stream,
                mininterval=0.5,
                delay=1e-9,  # drawn by the first refresh, once laid out
            )
        )
        self._lay_out()
        self.bar.refresh()
        self._stack.enter_context(logging_redirect_tqdm())  # log lines print above the bar

    def _release(self) -> None:
        os.close(self._lock)  # closing the descriptor releases the flock
        self._lock = None
