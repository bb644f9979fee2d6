"""Data-parallel training under torchrun: 2 CPU processes (gloo) match one process."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.distributed as dist

from lmscaling.distributed import (
    FINAL_FILE,
    LaunchError,
    LayoutError,
    launch,
    slurm_head_node,
    torchrun_command,
    world_layout,
    write_spec,
)
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


def test_multi_node_command_and_layout():
    cmd = torchrun_command(4, "spec.json", nnodes=2, rdzv_endpoint="gpu01:29500", rdzv_id="77")
    assert cmd[:4] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1"]
    assert cmd[5:8] == ["-m", "torch.distributed.run", "--nnodes=2"]
    assert "--nproc_per_node=4" in cmd and "--rdzv_endpoint=gpu01:29500" in cmd
    assert "--rdzv_id=77" in cmd and "--standalone" not in cmd
    with pytest.raises(ValueError, match="rendezvous"):
        torchrun_command(4, "spec.json", nnodes=2)
    assert world_layout(0, 1) == (1, 1) and world_layout(8, 1) == (1, 8)
    assert world_layout(8, 2) == (2, 4)
    with pytest.raises(LayoutError, match="resources.gpu = 6 .* resources.nodes = 4"):
        world_layout(6, 4)
    with pytest.raises(LaunchError, match="SLURM allocation"):
        slurm_head_node({})


def _fake_slurm(bin_dir):
    """``scontrol`` naming this host, and an ``srun`` that starts ``--nodes`` copies here."""
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 127.0.0.1\n")
    (bin_dir / "srun").write_text(
        "#!/bin/bash\nn=1\nwhile [[ $1 == --* ]]; do\n"
        "  case $1 in --nodes=*) n=${1#--nodes=};; esac; shift\ndone\n"
        'for _ in $(seq "$n"); do "$@" & done\nstatus=0\n'
        "for job in $(jobs -p); do wait $job || status=1; done\nexit $status\n"
    )
    for tool in ("scontrol", "srun"):
        (bin_dir / tool).chmod(0o755)


def _ddp_case(tmp_path, mixture=()):
    tmp_path.mkdir(parents=True, exist_ok=True)
    tokens = np.random.default_rng(0).integers(0, 64, 4000).astype("<u2")
    shard = tmp_path / "part-00000.bin"
    tokens.tofile(shard)
    groups = [[(str(shard), "uint16")]]
    if mixture:  # a second corpus, small and drawn often
        small = np.random.default_rng(1).integers(0, 64, 300).astype("<u2")
        small.tofile(tmp_path / "small.bin")
        groups.append([(str(tmp_path / "small.bin"), "uint16")])
        tokens = [[tokens], [small]]
    cfg = TrainConfig(
        mixture=mixture,
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
    write_spec(spec, asdict(MODEL), asdict(cfg), groups, spec.parent, "L1-D32")
    return tokens, cfg, spec


def test_two_node_rendezvous_matches_standalone(tmp_path, monkeypatch):
    """Two torchrun launchers (as srun starts one per node) meet through c10d and train."""
    _fake_slurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    _, cfg, spec = _ddp_case(tmp_path / "nodes")
    env = {"OMP_NUM_THREADS": "1", "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "n[1-2]"}
    launch(1, spec, env={**env, "LMSCALING_RDZV_PORT": str(_free_port())}, nnodes=2)
    _, extra = load_checkpoint(spec.parent / FINAL_FILE)

    _, _, spec_one = _ddp_case(tmp_path / "standalone")
    launch(2, spec_one, env={"OMP_NUM_THREADS": "1"})
    _, extra_one = load_checkpoint(spec_one.parent / FINAL_FILE)
    assert extra["summary"]["world_size"] == 2
    assert [r["loss"] for r in extra["metrics"]] == pytest.approx(
        [r["loss"] for r in extra_one["metrics"]], rel=1e-6
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("mixture", [(), (0.5, 0.5)], ids=["one-corpus", "mixture"])
def test_two_gloo_processes_match_one_process_with_accumulation(tmp_path, mixture):
    tokens, cfg, spec = _ddp_case(tmp_path, mixture)
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
