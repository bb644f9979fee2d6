"""One GPU per job on a shared workstation: claim free GPUs with lock files.

Snakemake counts GPUs as the resource ``gpu``: ``profiles/local`` caps it at the machine's GPU
count, so the jobs running at once never ask for more GPUs than exist, but Snakemake does not
say *which* GPU a job gets. :func:`claim_gpus` picks them: it takes an exclusive ``flock`` on
one lock file per GPU under ``lock_dir``, skipping GPUs that another job holds, and sets
``CUDA_VISIBLE_DEVICES`` to the ones it got, so ``cuda:0`` (and torchrun's local ranks) of the
job are its own GPUs. The kernel drops a lock when its holder exits, so a killed job never leaves
a GPU claimed.

Under SLURM (``SLURM_JOB_ID`` set) the scheduler has already put the job's GPUs in
``CUDA_VISIBLE_DEVICES``; nothing is claimed.

Command line, for shell commands::

    python -m lmscaling.gpus --count 2 --lock-dir results/.gpu-locks -- torchrun ...
"""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path

ENV = "CUDA_VISIBLE_DEVICES"


class GPUClaimError(ValueError):
    """A job asks for more GPUs than the machine shows, or none came free in time."""


def visible_gpus(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else every NVIDIA GPU.

    The GPUs are counted with ``nvidia-smi -L``, not through PyTorch: initializing CUDA in this
    process would fix its device list before :func:`claim_gpus` narrows it.

    Returns ids as strings ("0", "1", or UUIDs when the variable holds UUIDs); ``[]`` without
    an NVIDIA driver.
    """
    environ = os.environ if environ is None else environ
    if ENV in environ:
        return [d.strip() for d in environ[ENV].split(",") if d.strip()]
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if listing.returncode != 0:
        return []
    gpus = [line for line in listing.stdout.splitlines() if line.startswith("GPU ")]
    return [str(i) for i in range(len(gpus))]


def _try_lock(path: Path):
    """Open ``path`` and take an exclusive non-blocking lock; the open file, or None if held."""
    handle = open(path, "a")  # held open for as long as the claim lasts
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextmanager
def claim_gpus(
    count: int,
    lock_dir: str | os.PathLike[str],
    devices: list[str] | None = None,
    environ: MutableMapping[str, str] | None = None,
    timeout_s: float = 600.0,
    poll_s: float = 1.0,
) -> Iterator[list[str]]:
    """Hold ``count`` free GPUs for the ``with`` block and point ``CUDA_VISIBLE_DEVICES`` at them.

    Args:
        count: GPUs the job needs (the rule's ``resources.gpu``); 0 claims nothing, and so
            does a machine without GPUs (the job falls back to the CPU).
        lock_dir: directory of the lock files (one per host and GPU), shared by the jobs.
        devices: GPU ids to choose from; default :func:`visible_gpus`.
        environ: the environment to set (default ``os.environ``); restored on exit.
        timeout_s: how long to wait for GPUs held by other jobs (only possible when more jobs
            ask for GPUs than the ``gpu`` resource allows, e.g. a second Snakemake run).
        poll_s: seconds between tries while waiting.

    Yields:
        The claimed GPU ids, in order; also the new value of ``CUDA_VISIBLE_DEVICES``.

    Raises:
        GPUClaimError: ``count`` exceeds the GPUs shown (but some are), or they did not come
            free in time.
    """
    environ = os.environ if environ is None else environ
    if count <= 0:
        yield []
        return
    if "SLURM_JOB_ID" in environ:
        yield visible_gpus(environ)
        return
    devices = visible_gpus(environ) if devices is None else list(devices)
    if not devices:  # no GPU at all: the job runs on the CPU (train.device: auto)
        yield []
        return
    if count > len(devices):
        raise GPUClaimError(
            f"the job needs {count} GPU(s) but this machine shows {len(devices)} "
            f"({ENV}={','.join(devices) or 'none'}); lower resources.gpu or the profile's gpu"
        )
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    deadline = time.monotonic() + timeout_s
    held: list[tuple[str, object]] = []
    try:
        while True:
            for dev in devices:
                if len(held) == count:
                    break
                if any(dev == d for d, _ in held):
                    continue
                handle = _try_lock(lock_dir / f"{host}-gpu-{dev}.lock")
                if handle is not None:
                    held.append((dev, handle))
            if len(held) == count:
                break
            if time.monotonic() >= deadline:
                raise GPUClaimError(
                    f"only {len(held)} of {count} GPU(s) came free within {timeout_s:g} s "
                    f"(locks in {lock_dir})"
                )
            time.sleep(poll_s)
        claimed = [dev for dev, _ in held]
        previous = environ.get(ENV)
        environ[ENV] = ",".join(claimed)
        try:
            yield claimed
        finally:
            if previous is None:
                environ.pop(ENV, None)
            else:
                environ[ENV] = previous
    finally:
        for _, handle in held:
            handle.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m lmscaling.gpus --count N --lock-dir DIR -- CMD...``: run CMD on N free GPUs."""
    parser = argparse.ArgumentParser(prog="python -m lmscaling.gpus", description=__doc__)
    parser.add_argument("--count", type=int, required=True, help="GPUs to claim")
    parser.add_argument("--lock-dir", required=True, help="directory of the lock files")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    with claim_gpus(args.count, args.lock_dir, timeout_s=args.timeout):
        return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
