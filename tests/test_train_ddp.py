"""Data-parallel training under torchrun: 2 CPU processes (gloo) match one process."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.distributed as dist

from lmscaling.distributed import FINAL_FILE, launch, torchrun_command, write_spec
from lmscaling.model import GPTConfig, load_checkpoint
from lmscaling.train import TrainConfig, train

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")

MODEL = GPTConfig(vocab_size=64, context_length=16, n_layer=1, d_model=32, n_head=2)


def test_torchrun_command_names_module_and_spec():
    cmd = torchrun_command(4, "spec.json")
    assert cmd[1:] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=4",
        "-m",
        "lmscaling.distributed",
        "spec.json",
    ]


def test_two_gloo_processes_match_one_process_with_accumulation(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 64, 4000).astype("<u2")
    shard = tmp_path / "part-00000.bin"
    tokens.tofile(shard)
    cfg = TrainConfig(
        tokens=12 * 8 * 16,
        batch_size=8,
        log_every=4,
        device="cpu",
        threads=1,
        seed=3,
        resume_every=4,
        checkpoint_fractions=(0.5,),
    )
    spec = tmp_path / "state" / "job.json"
    write_spec(spec, asdict(MODEL), asdict(cfg), [(str(shard), "uint16")], spec.parent, "L1-D32")
    launch(2, spec, env={"OMP_NUM_THREADS": "1"})

    model_ddp, extra = load_checkpoint(spec.parent / FINAL_FILE)
    summary, metrics = extra["summary"], extra["metrics"]
    assert summary["world_size"] == 2 and summary["grad_accum_steps"] == 1
    assert summary["D"] == 12 * 8 * 16 and (spec.parent / "frac-0.5.pt").exists()

    # One process, two micro-batches of 4: the same windows and the same averaged gradient.
    single = TrainConfig(**{**cfg.__dict__, "micro_batch_size": 4})
    model_one, summary_one, metrics_one = train(
        MODEL, single, tokens, state_dir=tmp_path / "single"
    )
    assert summary_one["grad_accum_steps"] == 2
    losses = [r["loss"] for r in metrics]
    assert losses == pytest.approx([r["loss"] for r in metrics_one], rel=1e-5)
    assert losses[-1] < losses[0]
    for pa, pb in zip(model_ddp.parameters(), model_one.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)
