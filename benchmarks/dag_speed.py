"""How long ``snakemake -n`` takes to build the DAG of a large experiment.

Writes a config of ``--scales`` grid points (default 32) × ``--shards`` Parquet shards per split
(default 64), derived from tests/configs/tiny.yaml, and times ``snakemake -n`` on it in a fresh
directory: the DAG (from Snakemake's "Building DAG of jobs..." to the end of the dry run) and
the whole command (plus interpreter start, imports, parsing and config validation). The goal is
a DAG in ≤ 5 s; the script prints medians of ``--rounds`` runs, their ratios to 5 s, the job
count, the CPU seconds of the whole command (steady under load), and the same figures for the
tiny config itself (the peer, measured in the same run).

Usage: python benchmarks/dag_speed.py [--scales 32] [--shards 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from lmscaling.argtypes import positive_int

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
GOAL_S = 5.0


def big_config(scales: int, shards: int) -> dict:
    """The tiny config with ``scales`` grid points and ``shards`` shards per split."""
    config = yaml.safe_load(TINY.read_text(encoding="utf-8"))
    config["data"]["num_shards"] = shards
    grid = []
    for i in range(scales):
        n_head = 1 + i % 4
        grid.append({"n_layer": 1 + i // 4, "d_model": 16 * n_head, "n_head": n_head})
    config["models"]["grid"] = grid
    return config


def dry_run(configfile: Path, workdir: Path) -> tuple[float, float, float, int]:
    """One ``snakemake -n``: total seconds, seconds from "Building DAG of jobs..." to the end
    (DAG plus the dry-run schedule, without interpreter start and parsing), CPU seconds of the
    whole command (user + system: steady when other work shares the machine), and the job
    count."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--workflow-profile",
        "none",
        "--cores",
        "1",
        "--quiet",
        "rules",
    ]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    dag_start = None
    lines = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
    ) as proc:
        for line in proc.stdout:
            if dag_start is None and line.startswith("Building DAG of jobs"):
                dag_start = time.perf_counter()
            lines.append(line)
    end = time.perf_counter()
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    text = "".join(lines)
    if proc.returncode != 0 or dag_start is None:
        sys.exit(f"snakemake -n failed:\n{text}")
    total = re.search(r"^total\s+(\d+)", text, re.M)
    return end - start, end - dag_start, cpu, int(total[1]) if total else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=positive_int, default=32, help="models in the grid")
    parser.add_argument("--shards", type=positive_int, default=64, help="shards per split")
    parser.add_argument("--rounds", type=positive_int, default=3, help="timed dry runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.yaml"
        big.write_text(yaml.safe_dump(big_config(args.scales, args.shards)), encoding="utf-8")
        cases = {"tiny (peer)": TINY, f"{args.scales} scales x {args.shards} shards": big}
        for name, configfile in cases.items():
            runs = [dry_run(configfile, Path(tmp) / "work") for _ in range(args.rounds)]
            total = statistics.median(r[0] for r in runs)
            dag = statistics.median(r[1] for r in runs)
            cpu = statistics.median(r[2] for r in runs)
            print(
                f"{name:>26}: {runs[0][3]:4d} jobs  DAG {dag:5.2f} s "
                f"(ratio to {GOAL_S:g} s: {dag / GOAL_S:.2f})  "
                f"whole snakemake -n {total:5.2f} s (ratio {total / GOAL_S:.2f}), "
                f"CPU {cpu:5.2f} s"
            )


if __name__ == "__main__":
    main()
