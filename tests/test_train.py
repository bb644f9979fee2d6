"""Tests for lmscaling.train: config, device choice, LR schedule, token loading, training loop."""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import pytest
import torch

import lmscaling.train as train_mod
from lmscaling.model import GPT, GPTConfig
from lmscaling.train import TrainConfig, load_tokens, lr_at, select_device, train

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
    paths = [tmp_path / "part-00000.bin", tmp_path / "part-00001.bin"]
    assert load_tokens(paths, dtype).tolist() == [5, 0, 7, 8, 0, 65535, 1, 0]
    single = load_tokens(paths[:1], dtype)
    assert isinstance(single, np.memmap) and single.tolist() == [5, 0, 7, 8, 0]


def test_load_tokens_errors(tmp_path):
    odd = tmp_path / "part-00000.bin"
    odd.write_bytes(b"\x01\x00\x02")
    with pytest.raises(ValueError, match="part-00000.bin"):
        load_tokens([odd], np.uint16)
    with pytest.raises(ValueError, match="uint16 or uint32"):
        load_tokens([odd], np.int64)
    with pytest.raises(ValueError, match="no token shard"):
        load_tokens([], np.uint16)


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
    assert summary["device"] == "cpu"
    assert not model.training and next(model.parameters()).device.type == "cpu"

    lines = [r.getMessage() for r in caplog.records if r.name == "lmscaling.train"]
    assert len(lines) == 5
    assert re.fullmatch(
        r"L1-D32 step 25/120 \| loss \d+\.\d{3} \| lr \d\.\de-0\d \| [\d.]+k tok/s"
        r" \| ETA \d+m\d\ds",
        lines[0],
    )


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
    assert summary["steps"] == 3 and summary["D"] == 3 * 4 * 32
    assert [r["step"] for r in metrics] == [3]  # the last step is always logged


def test_non_finite_loss_names_model_and_step(monkeypatch):
    class NaNAfterTwoSteps(GPT):
        calls = 0

        def forward(self, idx, targets=None):
            logits, loss = super().forward(idx, targets)
            NaNAfterTwoSteps.calls += 1
            return logits, loss * (float("nan") if NaNAfterTwoSteps.calls >= 3 else 1.0)

    monkeypatch.setattr(train_mod, "GPT", NaNAfterTwoSteps)
    cfg = TrainConfig(tokens=10 * 4 * 32, batch_size=4, log_every=5, device="cpu")
    with pytest.raises(
        FloatingPointError, match=r"tiny-model: non-finite training loss at step 3/"
    ):
        train(MODEL, cfg, repetitive_stream(), name="tiny-model")


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
