"""Tests for lmscaling.train: config, device choice, LR schedule, token loading, training loop."""

from __future__ import annotations

import io
import json
import logging
import math
import re

import numpy as np
import pytest
import torch

import lmscaling.model as model_mod
import lmscaling.train as train_mod
from lmscaling.io import sha256_file
from lmscaling.model import GPT, GPTConfig, load_checkpoint
from lmscaling.train import (
    PEAK_BF16_FLOPS,
    TokenStream,
    TrainConfig,
    TrainError,
    checkpoint_steps,
    device_peak_flops,
    load_resume,
    load_tokens,
    lr_at,
    mixture_report,
    resolve_precision,
    select_device,
    token_groups,
    train,
)

VOCAB = 64
MODEL = GPTConfig(vocab_size=VOCAB, context_length=32, n_layer=1, d_model=32, n_head=2)


def repetitive_stream(n: int = 4000, period: int = 12) -> np.ndarray:
    """A fixed random pattern repeated: every token is predictable from the one before it."""
    pattern = np.random.default_rng(0).permutation(VOCAB)[:period]
    return np.resize(pattern, n).astype(np.uint16)


# --- config and device ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("tokens", 0),
        ("batch_size", -1),
        ("lr", 0.0),
        ("min_lr_ratio", 1.5),
        ("warmup_fraction", 1.0),
        ("grad_clip", 0.0),
        ("log_every", 0),
        ("threads", -1),
        ("schedule", "linear"),
        ("precision", "fp16"),
        ("decay_fraction", 1.5),
        ("micro_batch_size", -2),
        ("resume_every", -1),
        ("checkpoint_fractions", (0.5, 1.0)),
        ("checkpoint_fractions", (0.5, 0.5)),
        ("mixture", (0.5, 0.6)),
        ("mixture", (1.0, 0.0)),
    ],
)
def test_train_config_rejects_bad_values_naming_key(key, value):
    kwargs = {"tokens": 1000, key: value}
    with pytest.raises(ValueError, match=key):
        TrainConfig(**kwargs)


def test_select_device(monkeypatch):
    assert select_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        select_device("cuda:1")
    with pytest.raises(ValueError, match="not a valid torch device"):
        select_device("gpu-please")


def test_resolve_precision(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(train_mod, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (8, 0))  # A100
    assert resolve_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (7, 0))  # V100
    assert resolve_precision("auto", cuda) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"  # asked for: emulated where not native
    monkeypatch.setattr(train_mod, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("fp32", cuda) == "fp32"


def test_training_in_bf16_on_cpu(monkeypatch, tmp_path, caplog):
    """auto trains under bf16 autocast on a CPU with bf16 (attention on its bf16 path), close to
    float32 but not equal to it; a resume file of one precision is not resumed in the other."""
    tokens = np.random.default_rng(5).integers(0, VOCAB, 3000).astype(np.uint16)
    cfg = TrainConfig(tokens=8 * 4 * 32, batch_size=4, log_every=4, device="cpu", resume_every=4)
    calls = []
    attention = model_mod.cpu_bf16_attention
    monkeypatch.setattr(
        model_mod, "cpu_bf16_attention", lambda *a: calls.append(1) or attention(*a)
    )
    monkeypatch.setattr(train_mod, "cpu_has_bf16", lambda: True)
    _, summary_bf16, metrics_bf16 = train(MODEL, cfg, tokens, state_dir=tmp_path)
    assert summary_bf16["precision"] == "bf16" and len(calls) == 8  # 8 steps x 1 block
    fp32 = TrainConfig(**{**cfg.__dict__, "precision": "fp32"})
    with caplog.at_level(logging.WARNING, logger="lmscaling.train"):
        _, summary_fp32, metrics_fp32 = train(MODEL, fp32, tokens, state_dir=tmp_path)
    assert summary_fp32["precision"] == "fp32" and len(calls) == 8  # no bf16 attention
    assert summary_fp32["resumed_from_step"] == 0
    assert "written for other settings (train.precision: 'bf16' -> 'fp32')" in caplog.text
    losses_bf16 = [r["loss"] for r in metrics_bf16]
    losses_fp32 = [r["loss"] for r in metrics_fp32]
    assert losses_bf16 != losses_fp32
    assert losses_bf16 == pytest.approx(losses_fp32, rel=1e-2)


# --- learning-rate schedule -------------------------------------------------------------------


def test_lr_schedule_values():
    cfg = TrainConfig(tokens=1, lr=1e-3, min_lr_ratio=0.1, warmup_fraction=0.05)
    total = 100  # warmup = ceil(5.0) = 5 steps; cosine over steps 5..99
    assert lr_at(0, total, cfg) == pytest.approx(1e-3 / 5)
    assert lr_at(2, total, cfg) == pytest.approx(3e-3 / 5)
    assert lr_at(4, total, cfg) == pytest.approx(1e-3)
    assert lr_at(5, total, cfg) == pytest.approx(1e-3)
    assert lr_at(5 + 47, total, cfg) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))  # half way
    assert lr_at(99, total, cfg) == pytest.approx(1e-4)
    decay = [lr_at(s, total, cfg) for s in range(5, 100)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    with pytest.raises(ValueError, match="outside"):
        lr_at(100, total, cfg)


def test_wsd_schedule_values():
    cfg = TrainConfig(
        tokens=1, lr=1e-3, min_lr_ratio=0.1, warmup_fraction=0.1, schedule="wsd", decay_fraction=0.2
    )
    total = 100  # warmup steps 0..9, stable 10..79, linear decay over 80..99
    assert lr_at(0, total, cfg) == pytest.approx(1e-4)
    assert lr_at(9, total, cfg) == pytest.approx(1e-3)
    assert [lr_at(s, total, cfg) for s in (10, 50, 79)] == [1e-3] * 3
    assert lr_at(80, total, cfg) == pytest.approx(1e-3 - (1e-3 - 1e-4) / 20)
    assert lr_at(89, total, cfg) == pytest.approx(1e-3 - (1e-3 - 1e-4) / 2)
    assert lr_at(99, total, cfg) == pytest.approx(1e-4)
    decay = [lr_at(s, total, cfg) for s in range(79, 100)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))


def test_lr_schedule_edge_cases():
    no_warmup = TrainConfig(tokens=1, lr=2e-3, warmup_fraction=0.0, min_lr_ratio=0.5)
    assert lr_at(0, 10, no_warmup) == pytest.approx(2e-3)
    assert lr_at(9, 10, no_warmup) == pytest.approx(1e-3)
    one_step = TrainConfig(tokens=1, lr=2e-3)
    assert lr_at(0, 1, one_step) == pytest.approx(2e-3)  # ceil(0.05) = 1 warmup step at full lr


# --- token loading ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_load_tokens_concatenates_shards(tmp_path, dtype):
    a = np.array([5, 0, 7, 8, 0], dtype=dtype)
    b = np.array([65535, 1, 0], dtype=dtype)
    a.astype(np.dtype(dtype).newbyteorder("<")).tofile(tmp_path / "part-00000.bin")
    b.astype(np.dtype(dtype).newbyteorder("<")).tofile(tmp_path / "part-00001.bin")
    (tmp_path / "empty.bin").write_bytes(b"")
    paths = [tmp_path / "part-00000.bin", tmp_path / "empty.bin", tmp_path / "part-00001.bin"]
    shards = load_tokens(paths, dtype)
    assert all(isinstance(s, np.memmap) for s in shards)  # nothing read into memory
    assert [s.tolist() for s in shards] == [[5, 0, 7, 8, 0], [65535, 1, 0]]


def test_load_tokens_errors(tmp_path):
    odd = tmp_path / "part-00000.bin"
    odd.write_bytes(b"\x01\x00\x02")
    with pytest.raises(ValueError, match="part-00000.bin"):
        load_tokens([odd], np.uint16)
    with pytest.raises(ValueError, match="uint16 or uint32"):
        load_tokens([odd], np.int64)
    with pytest.raises(ValueError, match="no token shard"):
        load_tokens([], np.uint16)


def test_token_stream_windows_stay_inside_shards():
    a, b = np.arange(0, 10), np.arange(100, 105)
    stream = TokenStream([a, np.arange(3), b], window=4)  # the 3-token shard holds no window
    assert stream.n_starts == 7 + 2
    got = stream.gather(np.arange(9))
    expected = [list(range(i, i + 4)) for i in range(7)] + [[100, 101, 102, 103]]
    expected.append([101, 102, 103, 104])
    assert got.tolist() == expected and got.dtype == np.int64
    with pytest.raises(ValueError, match="at least context_length"):
        TokenStream([np.arange(3)], window=4)


def test_token_stream_mixture_samples_groups_by_probability_not_size():
    small, large = np.arange(0, 20), np.arange(1000, 11000)  # 17 and 9,997 windows of 4
    rng = np.random.default_rng(0)
    plain = TokenStream([large, small], window=4)
    # without probabilities: uniform over all windows, the same draws as before mixtures
    assert plain.sample(rng, 5).tolist() == np.random.default_rng(0).integers(0, 10014, 5).tolist()
    stream = TokenStream([large, small], window=4, groups=[1, 0], probs=[0.75, 0.25])
    windows = stream.gather(stream.sample(np.random.default_rng(1), 20000))
    from_small = (windows[:, 0] < 1000).mean()  # group 0 (probability 0.75) is the small one
    assert from_small == pytest.approx(0.75, abs=0.01)
    assert (np.diff(windows, axis=1) == 1).all()  # windows stay inside their shard
    assert len(np.unique(windows[windows[:, 0] < 1000, 0])) == 17  # every small window drawn
    with pytest.raises(ValueError, match=r"group\(s\) \[1\] of the mixture"):
        TokenStream([large, np.arange(3)], window=4, groups=[0, 1], probs=[0.5, 0.5])


def test_training_mixture_needs_one_token_list_per_group_and_changes_the_batches():
    a = np.random.default_rng(3).integers(0, VOCAB // 2, 2000).astype(np.uint16)
    b = np.random.default_rng(4).integers(VOCAB // 2, VOCAB, 200).astype(np.uint16)
    cfg = TrainConfig(tokens=4 * 8 * 32, batch_size=8, log_every=4, device="cpu")
    mixed = TrainConfig(**{**cfg.__dict__, "mixture": (0.5, 0.5)})
    with pytest.raises(ValueError, match="one list of token arrays per group"):
        train(MODEL, mixed, [a, b])
    _, _, by_size = train(MODEL, cfg, [a, b])
    _, summary, by_weight = train(MODEL, mixed, [[a], [b]])
    assert summary["steps"] == 4 and by_size[-1]["loss"] != by_weight[-1]["loss"]


def test_checkpoint_steps():
    assert checkpoint_steps([0.5, 0.25, 0.001], 10) == {0.5: 5, 0.25: 3, 0.001: 1}


def test_device_peak_flops(monkeypatch):
    assert device_peak_flops(torch.device("cpu")) is None
    for name, expected in [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA H200", 989e12),
        ("Some Future GPU", None),
    ]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device, n=name: n)
        assert device_peak_flops(torch.device("cuda", 0)) == expected
    assert all(peak > 1e13 for _, peak in PEAK_BF16_FLOPS)


# --- training ---------------------------------------------------------------------------------


def test_training_learns_repetitive_stream_and_reports(caplog):
    cfg = TrainConfig(tokens=120 * 16 * 32, batch_size=16, lr=1e-2, log_every=25, device="cpu")
    rows = []
    with caplog.at_level(logging.INFO, logger="lmscaling.train"):
        model, summary, metrics = train(
            MODEL, cfg, repetitive_stream(), on_log=lambda step, row: rows.append((step, row))
        )

    assert summary["steps"] == 120
    assert summary["D"] == 120 * 16 * 32
    assert [r["step"] for r in metrics] == [25, 50, 75, 100, 120]
    assert [r["tokens"] for r in metrics] == [s * 16 * 32 for s in (25, 50, 75, 100, 120)]
    assert rows == [(r["step"], r) for r in metrics]
    assert metrics[-1]["lr"] == pytest.approx(lr_at(119, 120, cfg))
    assert all(r["tokens_per_s"] > 0 for r in metrics)

    # Every token follows from its predecessor: the loss falls far below the uniform ln V.
    assert metrics[0]["loss"] < math.log(VOCAB) + 0.1
    assert summary["train_loss"] == metrics[-1]["loss"] < 0.1 * math.log(VOCAB)

    counts = GPT(MODEL).param_counts()
    assert {k: summary[k] for k in counts} == counts
    assert summary["C"] == 6 * counts["N"] * summary["D"]
    assert summary["flops_per_token"] == GPT(MODEL).flops_per_token()
    assert summary["device"] == "cpu" and summary["mfu"] is None  # no known CPU peak
    assert summary["world_size"] == 1 and summary["grad_accum_steps"] == 1
    assert summary["resumed_from_step"] == 0 and summary["checkpoints"] == {}
    assert not model.training and next(model.parameters()).device.type == "cpu"

    lines = [r.getMessage() for r in caplog.records if r.name == "lmscaling.train"]
    assert len(lines) == 5
    assert re.fullmatch(
        r"L1-D32 step 25/120 \| loss \d+\.\d{3} \| lr \d\.\de-0\d \| [\d.]+k tok/s"
        r" \| ETA \d\d:\d\d",
        lines[0],
    )


def test_progress_is_one_live_line_on_a_terminal_and_rows_in_the_log_file(
    tmp_path, monkeypatch, job_logging, terminal
):
    job_logging(terminal, tmp_path / "train.log")
    monkeypatch.setattr(train_mod, "device_peak_flops", lambda device: 1e12)  # a known peak
    cfg = TrainConfig(tokens=40 * 8 * 32, batch_size=8, log_every=10, device="cpu")
    _, _, metrics = train(MODEL, cfg, repetitive_stream(), name="tiny")

    assert [r["step"] for r in metrics] == [10, 20, 30, 40]
    screen = terminal.getvalue()
    # redrawn in place: carriage returns, one final newline, no progress row as its own line
    assert screen.count("\n") == 1 and screen.count("\r") >= 2
    final = screen.rsplit("\r", 1)[-1].strip()
    match = re.fullmatch(
        r"tiny step 40/40 \| loss (\d+\.\d{3}) \| ([\d.]+)k tok/s \| MFU ([\d.]+)% "
        r"\| ETA 00:00 \|[█#]+\|",
        final,
    )
    assert match, final
    last = metrics[-1]
    assert float(match[1]) == round(last["loss"], 3)
    assert float(match[2]) == round(last["tokens_per_s"] / 1e3, 1)
    assert float(match[3]) == round(100 * last["mfu"], 1)
    rows = re.findall(r"tiny step (\d+)/40 \| loss ", (tmp_path / "train.log").read_text())
    assert rows == ["10", "20", "30", "40"]


def test_progress_rows_print_as_lines_off_a_terminal(job_logging):
    stream = io.StringIO()
    job_logging(stream)
    cfg = TrainConfig(tokens=20 * 8 * 32, batch_size=8, log_every=10, device="cpu")
    train(MODEL, cfg, repetitive_stream(), name="tiny")
    assert "\r" not in stream.getvalue()
    assert re.findall(r"tiny step (\d+)/20 \| loss ", stream.getvalue()) == ["10", "20"]


def test_training_is_deterministic_on_cpu():
    cfg = TrainConfig(tokens=12 * 8 * 32, batch_size=8, log_every=3, device="cpu", seed=7)
    tokens = np.random.default_rng(1).integers(0, VOCAB, 3000).astype(np.uint16)
    model_a, _, metrics_a = train(MODEL, cfg, tokens)
    model_b, _, metrics_b = train(MODEL, cfg, tokens)
    assert [r["loss"] for r in metrics_a] == [r["loss"] for r in metrics_b]
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    _, _, metrics_c = train(MODEL, TrainConfig(**{**cfg.__dict__, "seed": 8}), tokens)
    assert [r["loss"] for r in metrics_c] != [r["loss"] for r in metrics_a]


def test_tokens_rounded_up_to_whole_steps():
    cfg = TrainConfig(tokens=2 * 4 * 32 + 1, batch_size=4, log_every=100, device="cpu")
    _, summary, metrics = train(MODEL, cfg, repetitive_stream())
    assert cfg.steps(32) == summary["steps"] == 3 and summary["D"] == 3 * 4 * 32
    assert [r["step"] for r in metrics] == [3]  # the last step is always logged


def test_non_finite_loss_names_model_and_step(monkeypatch):
    class NaNAfterTwoSteps(GPT):
        calls = 0

        def forward(self, idx, targets=None, return_logits=True):
            logits, loss = super().forward(idx, targets, return_logits)
            NaNAfterTwoSteps.calls += 1
            return logits, loss * (float("nan") if NaNAfterTwoSteps.calls >= 3 else 1.0)

    monkeypatch.setattr(train_mod, "GPT", NaNAfterTwoSteps)
    cfg = TrainConfig(tokens=10 * 4 * 32, batch_size=4, log_every=5, device="cpu")
    with pytest.raises(
        FloatingPointError, match=r"tiny-model: non-finite training loss at step 3/"
    ):
        train(MODEL, cfg, repetitive_stream(), name="tiny-model")


def test_non_finite_weights_after_the_last_update_are_caught(monkeypatch):
    make = train_mod._optimizer

    def breaking_on_step_3(model, cfg, device):
        opt = make(model, cfg, device)
        step, calls = opt.step, []

        def last_step_overflows(*args, **kwargs):
            out = step(*args, **kwargs)
            calls.append(1)
            if len(calls) == 3:  # the last of 3 steps: its loss was finite
                with torch.no_grad():
                    next(model.parameters()).fill_(float("inf"))
            return out

        opt.step = last_step_overflows
        return opt

    monkeypatch.setattr(train_mod, "_optimizer", breaking_on_step_3)
    cfg = TrainConfig(tokens=3 * 4 * 32, batch_size=4, log_every=1, device="cpu")
    with pytest.raises(
        FloatingPointError, match=r"m: non-finite weights after the last optimizer step 3 "
    ):
        train(MODEL, cfg, repetitive_stream(), name="m")


def test_diverging_learning_rate_raises():
    cfg = TrainConfig(
        tokens=30 * 4 * 32,
        batch_size=4,
        lr=1e6,
        warmup_fraction=0.0,
        grad_clip=1e9,
        log_every=1,
        device="cpu",
    )
    with pytest.raises(FloatingPointError, match=r"L1-D32: non-finite training loss at step \d+"):
        train(MODEL, cfg, repetitive_stream())


def test_bad_token_streams():
    cfg = TrainConfig(tokens=1000, device="cpu")
    with pytest.raises(ValueError, match="too few tokens"):
        train(MODEL, cfg, np.zeros(32, dtype=np.uint16))  # needs context_length + 1 = 33
    with pytest.raises(ValueError, match="vocab_size=64"):
        train(MODEL, cfg, np.full(100, 64, dtype=np.uint16))


def test_gradient_accumulation_matches_one_big_batch():
    tokens = np.random.default_rng(2).integers(0, VOCAB, 3000).astype(np.uint16)
    cfg = TrainConfig(
        tokens=10 * 8 * 32, batch_size=8, log_every=5, device="cpu", lr=3e-3, precision="fp32"
    )
    model_a, summary_a, metrics_a = train(MODEL, cfg, tokens)
    accum = TrainConfig(**{**cfg.__dict__, "micro_batch_size": 2})
    model_b, summary_b, metrics_b = train(MODEL, accum, tokens)
    assert summary_a["grad_accum_steps"] == 1 and summary_b["grad_accum_steps"] == 4
    assert summary_b["D"] == summary_a["D"] == 10 * 8 * 32
    # The same windows per step, summed in another order: equal to float32 tolerance.
    losses_a, losses_b = [r["loss"] for r in metrics_a], [r["loss"] for r in metrics_b]
    assert losses_b == pytest.approx(losses_a, rel=1e-5)
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="batch_size 8 is not a multiple of micro_batch_size 3"):
        train(MODEL, TrainConfig(**{**cfg.__dict__, "micro_batch_size": 3}), tokens)


def test_fraction_checkpoints_and_in_process_resume(tmp_path):
    tokens = np.random.default_rng(3).integers(0, VOCAB, 3000).astype(np.uint16)
    cfg = TrainConfig(
        tokens=20 * 4 * 32,
        batch_size=4,
        log_every=4,
        device="cpu",
        resume_every=6,
        checkpoint_fractions=(0.25, 0.5),
    )
    with pytest.raises(ValueError, match="need a state_dir"):
        train(MODEL, cfg, tokens)
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    model_full, summary_full, metrics_full = train(MODEL, cfg, tokens, state_dir=full_dir)

    # Fraction checkpoints: ceil(0.25 * 20) = 5 and 10 steps of 128 tokens.
    assert sorted(p.name for p in full_dir.iterdir()) == [
        "frac-0.25.pt",
        "frac-0.5.pt",
        "resume.pt",
    ]
    ckpt = summary_full["checkpoints"]["frac-0.5"]
    assert ckpt == {"fraction": 0.5, "step": 10, "D": 1280, "path": str(full_dir / "frac-0.5.pt")}
    half, extra = load_checkpoint(full_dir / "frac-0.5.pt")
    info = extra["summary"]
    assert (info["step"], info["D"], info["fraction"]) == (10, 1280, 0.5)
    assert info["C"] == 6 * info["N"] * 1280 and info["N"] == summary_full["N"]
    assert info["N_total"] == summary_full["N_total"]
    pairs = zip(half.parameters(), model_full.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)  # a mid-training state
    last = load_resume(full_dir / "resume.pt")
    assert last["step"] == 18  # the last multiple of resume_every before the end

    # Crash at step 16 (an exception from the callback) after the resume file of step 12.
    def crash(step, row):
        if step == 16:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(MODEL, cfg, tokens, on_log=crash, state_dir=part_dir)
    assert load_resume(part_dir / "resume.pt")["step"] == 12
    model_res, summary_res, metrics_res = train(MODEL, cfg, tokens, state_dir=part_dir)
    assert summary_res["resumed_from_step"] == 12
    assert [r["loss"] for r in metrics_res] == [r["loss"] for r in metrics_full]
    assert [r["step"] for r in metrics_res] == [4, 8, 12, 16, 20]
    for pa, pb in zip(model_res.parameters(), model_full.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_stale_resume_file_is_ignored(tmp_path, caplog):
    tokens = np.random.default_rng(3).integers(0, VOCAB, 3000).astype(np.uint16)
    cfg = TrainConfig(tokens=8 * 4 * 32, batch_size=4, log_every=4, device="cpu", resume_every=4)
    train(MODEL, cfg, tokens, state_dir=tmp_path)
    assert load_resume(tmp_path / "resume.pt")["step"] == 4
    other = TrainConfig(**{**cfg.__dict__, "lr": 1e-3})
    with caplog.at_level(logging.WARNING, logger="lmscaling.train"):
        _, summary, _ = train(MODEL, other, tokens, state_dir=tmp_path)
    assert summary["resumed_from_step"] == 0
    assert "written for other settings (train.lr: 0.003 -> 0.001)" in caplog.text
    (tmp_path / "resume.pt").write_bytes(b"torn")
    with caplog.at_level(logging.WARNING, logger="lmscaling.train"):
        _, summary, _ = train(MODEL, other, tokens, state_dir=tmp_path)
    assert summary["resumed_from_step"] == 0 and "cannot read resume state" in caplog.text


def test_resume_file_of_other_data_is_ignored(tmp_path, caplog):
    """Same settings and number of windows, other tokens: the old resume file is not used."""
    cfg = TrainConfig(tokens=8 * 4 * 32, batch_size=4, log_every=4, device="cpu", resume_every=4)
    rng = np.random.default_rng(4)
    shard = tmp_path / "part-00000.bin"

    def write_shard(tokens: np.ndarray) -> list[np.ndarray]:
        shard.write_bytes(tokens.astype("<u2").tobytes())
        sidecar = {"tokens": int(tokens.size), "sha256": sha256_file(shard)}
        shard.with_suffix(".json").write_text(json.dumps(sidecar))
        return load_tokens([shard], np.uint16)

    first = rng.integers(0, VOCAB, 3000)
    state = tmp_path / "state"
    train(MODEL, cfg, write_shard(first), state_dir=state)
    _, summary, _ = train(MODEL, cfg, write_shard(first), state_dir=state)  # same data
    assert summary["resumed_from_step"] == 4
    edited = first.copy()
    edited[:100] = edited[:100][::-1]  # the same length, so the same number of windows
    with caplog.at_level(logging.WARNING, logger="lmscaling.train"):
        _, summary, _ = train(MODEL, cfg, write_shard(edited), state_dir=state)
    assert summary["resumed_from_step"] == 0
    assert "written for other settings (data: other token shards)" in caplog.text
    memory = tmp_path / "memory"  # arrays in memory count by their bytes
    train(MODEL, cfg, first.astype(np.uint16), state_dir=memory)
    _, summary, _ = train(MODEL, cfg, first.astype(np.uint16), state_dir=memory)
    assert summary["resumed_from_step"] == 4
    _, summary, _ = train(MODEL, cfg, edited.astype(np.uint16), state_dir=memory)
    assert summary["resumed_from_step"] == 0


def test_compile_failure_falls_back_to_eager(monkeypatch, caplog):
    def broken_compile(model, **kwargs):
        def fail(*args, **kw):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")

        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    cfg = TrainConfig(tokens=6 * 4 * 32, batch_size=4, log_every=3, device="cpu", compile=True)
    eager = TrainConfig(**{**cfg.__dict__, "compile": False})
    with caplog.at_level(logging.WARNING, logger="lmscaling.train"):
        _, summary, metrics = train(MODEL, cfg, repetitive_stream())
    assert summary["compiled"] is False
    assert "torch.compile failed, training in eager mode: InvalidCxxCompiler" in caplog.text
    _, _, metrics_eager = train(MODEL, eager, repetitive_stream())
    assert [r["loss"] for r in metrics] == [r["loss"] for r in metrics_eager]  # no step lost


def test_token_groups_by_corpus_path():
    files = [
        (f"r/tokens/bpe.v1-512/{c}/train/part-{i}.bin", "uint16") for c in "ab" for i in (0, 1)
    ]
    assert token_groups(files, ["a"]) == [files]  # one corpus: one group of every file
    assert token_groups(files, ["b", "a"]) == [files[2:], files[:2]]  # in mixture order
    with pytest.raises(TrainError, match=r"training corpora without token shards: \['c'\]"):
        token_groups(files, ["a", "b", "c"])
    with pytest.raises(TrainError, match="part-0.bin: not a shard of the training corpora"):
        token_groups(files, ["a", "z"])


def test_mixture_report_names_a_short_corpus_and_warns_of_many_epochs(caplog):
    big, small = np.zeros(1000, np.uint16), np.zeros(50, np.uint16)
    report = mixture_report([[big], [small]], ["web", "code"], [0.9, 0.1], 33, 2000)
    assert report["web"] == {
        "probability": 0.9,
        "tokens": 1000,
        "tokens_unsampled": 0,
        "epochs": 1.8,
    }
    assert report["code"]["epochs"] == pytest.approx(4.0)  # 2000 * 0.1 / 50: at the limit
    assert "epochs" not in caplog.text
    mixture_report([[big], [small]], ["web", "code"], [0.5, 0.5], 33, 2000)
    assert "corpus 'code': 20.0 epochs over its 50 tokens" in caplog.text
    with pytest.raises(TrainError, match=r"corpus 'code': too few tokens .* lengths \[20, 10\]"):
        mixture_report([[big], [small[:20], small[:10]]], ["web", "code"], [0.5, 0.5], 33, 2000)


def test_shards_too_short_for_a_window_are_counted_and_warned_about(caplog):
    # 3 of 4 shards hold fewer than 33 tokens: never sampled, so not in the epochs
    shards = [np.zeros(n, np.uint16) for n in (1000, 32, 20, 8)]
    (report,) = mixture_report([shards], ["web"], [1.0], 33, 2000).values()
    assert report == {"probability": 1.0, "tokens": 1000, "tokens_unsampled": 60, "epochs": 2.0}
    assert (
        "corpus 'web': 3 of 4 token shards (60 tokens, 5.7% of the corpus) are shorter than "
        "context_length + 1 = 33 tokens and are never sampled" in caplog.text
    )
    assert "data.num_shards" in caplog.text
