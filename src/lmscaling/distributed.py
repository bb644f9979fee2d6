"""Data-parallel training over several processes with ``torchrun`` (DDP).

A training job that owns more than one GPU writes a job spec (JSON) and calls :func:`launch`,
which runs ``python -m torch.distributed.run --standalone --nproc_per_node K -m
lmscaling.distributed SPEC``. Each worker joins the process group (NCCL on CUDA, gloo on CPU),
memory-maps the token shards and runs :func:`lmscaling.train.train`, which wraps the model in
DistributedDataParallel; rank 0 writes the resume file, the fraction checkpoints and, at the end,
``{state_dir}/final.pt`` (the model with ``extra = {"summary", "metrics"}``). The same code runs
on CPU with gloo, e.g. ``torchrun --nproc_per_node 2`` on a laptop.

Spec (JSON): ``{"model": GPTConfig fields, "train": TrainConfig fields, "token_files":
[[path, dtype], ...], "state_dir": path, "name": model id}``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from lmscaling.model import GPTConfig, save_checkpoint
from lmscaling.train import TrainConfig, load_tokens, train

log = logging.getLogger("lmscaling.distributed")

FINAL_FILE = "final.pt"


class LaunchError(RuntimeError):
    """A torchrun worker group exited with an error."""


def torchrun_command(nproc: int, spec_path: str | os.PathLike[str]) -> list[str]:
    """The ``torchrun`` command line (as ``python -m torch.distributed.run``) for a spec."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "lmscaling.distributed",
        str(spec_path),
    ]


def launch(nproc: int, spec_path: str | os.PathLike[str], env: dict | None = None) -> None:
    """Run ``nproc`` workers on this machine for the job spec at ``spec_path`` and wait.

    Worker output goes to this process's stdout/stderr (the job log).

    Raises:
        ValueError: when ``nproc < 1``.
        LaunchError: when a worker fails (naming the exit status).
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    cmd = torchrun_command(nproc, spec_path)
    log.info("launching %d workers: %s", nproc, " ".join(cmd))
    result = subprocess.run(cmd, env={**os.environ, **(env or {})}, check=False)
    if result.returncode != 0:
        raise LaunchError(f"torchrun workers for {spec_path} exited with {result.returncode}")


def write_spec(
    path: str | os.PathLike[str],
    model_cfg: dict,
    train_cfg: dict,
    token_files: list[tuple[str, str]],
    state_dir: str | os.PathLike[str],
    name: str,
) -> None:
    """Write a job spec for :func:`launch` (plain JSON; see the module docstring)."""
    from lmscaling.io import write_json

    spec = {
        "model": model_cfg,
        "train": {**train_cfg, "checkpoint_fractions": list(train_cfg["checkpoint_fractions"])},
        "token_files": [list(item) for item in token_files],
        "state_dir": str(state_dir),
        "name": name,
    }
    write_json(path, spec)


def main(spec_path: str) -> None:
    """Worker entry point: join the group, train, rank 0 writes ``final.pt``; see module doc."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    logging.basicConfig(
        level=logging.INFO if int(os.environ.get("RANK", 0)) == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    model_cfg = GPTConfig(**spec["model"])
    train_cfg = TrainConfig(**spec["train"])
    cuda = train_cfg.device != "cpu" and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        shards = [s for path, dtype in spec["token_files"] for s in load_tokens([path], dtype)]
        model, summary, metrics = train(
            model_cfg, train_cfg, shards, name=spec["name"], state_dir=spec["state_dir"]
        )
        if dist.get_rank() == 0:
            final = Path(spec["state_dir"]) / FINAL_FILE
            save_checkpoint(final, model, extra={"summary": summary, "metrics": metrics})
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m lmscaling.distributed SPEC.json")
    main(sys.argv[1])
