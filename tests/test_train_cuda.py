"""The CUDA path of lmscaling.train (bf16 autocast, TF32, fused AdamW, MFU, peak memory, resume)
and of lmscaling.evaluate.

Runs wherever CUDA exists; skipped elsewhere.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmscaling.evaluate import evaluate
from lmscaling.model import GPTConfig
from lmscaling.train import TrainConfig, device_peak_flops, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

MODEL = GPTConfig(vocab_size=64, context_length=32, n_layer=2, d_model=64, n_head=2)


def repetitive_stream(n: int = 4000, period: int = 12) -> np.ndarray:
    pattern = np.random.default_rng(0).permutation(64)[:period]
    return np.resize(pattern, n).astype(np.uint16)


def test_cuda_training_learns_and_reports(tmp_path):
    cfg = TrainConfig(
        tokens=80 * 16 * 32,
        batch_size=16,
        micro_batch_size=8,
        lr=1e-2,
        log_every=20,
        device="cuda",
        resume_every=40,
        checkpoint_fractions=(0.5,),
    )
    model, summary, metrics = train(MODEL, cfg, repetitive_stream(), state_dir=tmp_path)
    assert summary["device"].startswith("cuda") and summary["grad_accum_steps"] == 2
    ampere = torch.cuda.get_device_capability() >= (8, 0)
    assert summary["precision"] == ("bf16" if ampere else "fp32")  # auto on CUDA
    assert metrics[-1]["loss"] < 0.2 * math.log(64)  # bf16 autocast still learns
    assert summary["peak_memory_gb"] > 0
    assert torch.backends.cuda.matmul.allow_tf32
    peak = device_peak_flops(torch.device(summary["device"]))
    assert (summary["mfu"] is None) == (peak is None)
    if peak is not None:
        assert 0 < summary["mfu"] < 1 and all(0 < r["mfu"] < 1 for r in metrics)
    assert next(model.parameters()).device.type == "cpu" and (tmp_path / "frac-0.5.pt").exists()


def test_cuda_resume_continues(tmp_path):
    cfg = TrainConfig(
        tokens=40 * 8 * 32, batch_size=8, log_every=10, device="cuda", resume_every=10
    )
    tokens = np.random.default_rng(1).integers(0, 64, 4000).astype(np.uint16)

    def crash(step, row):
        if step == 30:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(MODEL, cfg, tokens, on_log=crash, state_dir=tmp_path / "a")
    _, resumed, metrics_a = train(MODEL, cfg, tokens, state_dir=tmp_path / "a")
    _, clean, metrics_b = train(MODEL, cfg, tokens, state_dir=tmp_path / "b")
    assert resumed["resumed_from_step"] == 20
    # GPU kernels need not be bitwise deterministic: equal to bf16 tolerance.
    assert metrics_a[-1]["loss"] == pytest.approx(metrics_b[-1]["loss"], rel=2e-2)


def test_cuda_compile_or_fallback():
    cfg = TrainConfig(tokens=6 * 8 * 32, batch_size=8, log_every=3, device="cuda", compile=True)
    _, summary, metrics = train(MODEL, cfg, repetitive_stream())
    assert isinstance(summary["compiled"], bool) and math.isfinite(metrics[-1]["loss"])


def test_cuda_evaluation_matches_cpu():
    cfg = TrainConfig(tokens=60 * 16 * 32, batch_size=16, lr=1e-2, log_every=20, device="cuda")
    stream = repetitive_stream()
    model, _, _ = train(MODEL, cfg, stream)
    held_out = repetitive_stream(n=3000)
    on_cpu = evaluate(model, held_out, n_bytes=9000, eot_id=0, batch_size=8, device="cpu")
    on_gpu = evaluate(model, held_out, n_bytes=9000, eot_id=0, batch_size=8, device="cuda")
    assert on_cpu["loss"] < 0.5 * math.log(64)  # a trained model, not uniform logits
    assert on_gpu["tokens"] == on_cpu["tokens"] == 3000
    # float32 logits on both devices (TF32 matmuls on the GPU if training enabled them)
    assert on_gpu["loss"] == pytest.approx(on_cpu["loss"], rel=2e-3, abs=1e-4)
    assert on_gpu["bpb"] == pytest.approx(on_cpu["bpb"], rel=2e-3, abs=1e-4)
