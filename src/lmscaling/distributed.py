"""Data-parallel training over several processes with ``torchrun`` (DDP).

A training job that owns more than one GPU writes a job spec (JSON) and calls :func:`launch`,
which runs ``python -m torch.distributed.run --standalone --nproc_per_node K -m
lmscaling.distributed SPEC``. Each worker joins the process group (NCCL on CUDA, gloo on CPU),
memory-maps the token shards and runs :func:`lmscaling.train.train`, which wraps the model in
DistributedDataParallel; rank 0 writes the resume file, the fraction checkpoints and, at the end,
``{state_dir}/final.pt`` (the model with ``extra = {"summary", "metrics"}``). The same code runs
on CPU with gloo, e.g. ``torchrun --nproc_per_node 2`` on a laptop.

Several nodes (a SLURM job with ``resources.nodes > 1``): :func:`launch` starts one torchrun
launcher per node with ``srun --nodes N --ntasks-per-node 1``; the launchers meet through the
c10d rendezvous on the first node of the allocation (``--rdzv-endpoint HOST:PORT``, the SLURM job
id as rendezvous id) and each starts its node's workers.

Spec (JSON): ``{"model": GPTConfig fields, "train": TrainConfig fields, "token_groups":
[[[path, dtype], ...], ...] (one list of shards per group of ``train.mixture``, or one group),
"state_dir": path, "name": model id}``.
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
from lmscaling.train import TrainConfig, load_token_groups, train

log = logging.getLogger("lmscaling.distributed")

FINAL_FILE = "final.pt"


class LaunchError(RuntimeError):
    """A torchrun worker group exited with an error."""


RDZV_PORT = 29500


class LayoutError(ValueError):
    """The job's GPU and node counts do not give a whole number of workers per node."""


def world_layout(gpus: int, nodes: int) -> tuple[int, int]:
    """Split a job's GPUs over its nodes: ``(nnodes, nproc_per_node)``.

    Args:
        gpus: GPUs of the whole job (the rule's ``resources.gpu``); 0 or 1 trains in one process.
        nodes: nodes of the job (the rule's ``resources.nodes``, default 1).

    Raises:
        LayoutError: ``nodes < 1``, or ``gpus`` not a multiple of ``nodes``.
    """
    if nodes < 1:
        raise LayoutError(f"resources.nodes must be >= 1, got {nodes}")
    if nodes == 1:
        return 1, max(gpus, 1)
    if gpus < nodes or gpus % nodes:
        raise LayoutError(
            f"resources.gpu = {gpus} does not split evenly over resources.nodes = {nodes} "
            "(give the GPUs of the whole job, the same number on every node)"
        )
    return nodes, gpus // nodes


def slurm_head_node(environ: dict[str, str] | None = None) -> str:
    """First host of the SLURM allocation (``scontrol show hostnames $SLURM_JOB_NODELIST``).

    Raises:
        LaunchError: outside a SLURM job, or when ``scontrol`` fails.
    """
    environ = dict(os.environ if environ is None else environ)
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    if not nodelist:
        raise LaunchError(
            "training on several nodes (resources.nodes > 1) needs a SLURM allocation: "
            "run with --workflow-profile profiles/slurm"
        )
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        raise LaunchError(f"cannot list the hosts of SLURM node list {nodelist!r}: {exc}") from exc
    if not out:
        raise LaunchError(f"SLURM node list {nodelist!r} names no host")
    return out[0]


def torchrun_command(
    nproc: int,
    spec_path: str | os.PathLike[str],
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    rdzv_id: str = "lmscaling",
) -> list[str]:
    """The ``torchrun`` command line (as ``python -m torch.distributed.run``) for a spec.

    One node: ``--standalone``. Several nodes: ``srun`` starts one launcher per node, which
    meet through c10d at ``rdzv_endpoint`` (``HOST:PORT``, required then).

    Raises:
        ValueError: several nodes without a rendezvous endpoint.
    """
    module = ["-m", "lmscaling.distributed", str(spec_path)]
    run = [sys.executable, "-m", "torch.distributed.run"]
    if nnodes <= 1:
        return [*run, "--standalone", f"--nproc_per_node={nproc}", *module]
    if not rdzv_endpoint:
        raise ValueError("a job on several nodes needs a rendezvous endpoint (HOST:PORT)")
    srun = ["srun", f"--nodes={nnodes}", f"--ntasks={nnodes}", "--ntasks-per-node=1"]
    rdzv = ["--rdzv_backend=c10d", f"--rdzv_endpoint={rdzv_endpoint}", f"--rdzv_id={rdzv_id}"]
    return [*srun, *run, f"--nnodes={nnodes}", f"--nproc_per_node={nproc}", *rdzv, *module]


def launch(
    nproc: int,
    spec_path: str | os.PathLike[str],
    env: dict | None = None,
    nnodes: int = 1,
) -> None:
    """Run ``nproc`` workers on each of ``nnodes`` nodes for the job spec and wait.

    Worker output goes to this process's stdout/stderr (the job log). Several nodes need a
    SLURM allocation (the rendezvous host is its first node, the rendezvous id its job id).

    Raises:
        ValueError: when ``nproc < 1``.
        LaunchError: when a worker fails (naming the exit status), or several nodes are asked
            for outside a SLURM allocation.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    full_env = {**os.environ, **(env or {})}
    endpoint, rdzv_id = None, "lmscaling"
    if nnodes > 1:
        endpoint = f"{slurm_head_node(full_env)}:{full_env.get('LMSCALING_RDZV_PORT', RDZV_PORT)}"
        rdzv_id = full_env.get("SLURM_JOB_ID", rdzv_id)
    cmd = torchrun_command(nproc, spec_path, nnodes, endpoint, rdzv_id)
    log.info("launching %d x %d workers: %s", nnodes, nproc, " ".join(cmd))
    result = subprocess.run(cmd, env=full_env, check=False)
    if result.returncode != 0:
        raise LaunchError(f"torchrun workers for {spec_path} exited with {result.returncode}")


def write_spec(
    path: str | os.PathLike[str],
    model_cfg: dict,
    train_cfg: dict,
    token_groups: list[list[tuple[str, str]]],
    state_dir: str | os.PathLike[str],
    name: str,
) -> None:
    """Write a job spec for :func:`launch` (plain JSON; see the module docstring)."""
    from lmscaling.io import write_json

    train = {
        **train_cfg,
        "checkpoint_fractions": list(train_cfg["checkpoint_fractions"]),
        "mixture": list(train_cfg.get("mixture", ())),
    }
    spec = {
        "model": model_cfg,
        "train": train,
        "token_groups": [[list(item) for item in group] for group in token_groups],
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
        groups = load_token_groups(spec["token_groups"])  # one group unless a mixture
        tokens = groups if train_cfg.mixture else groups[0]
        model, summary, metrics = train(
            model_cfg, train_cfg, tokens, name=spec["name"], state_dir=spec["state_dir"]
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
