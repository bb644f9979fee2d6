"""Shared fixtures: small generated corpora as Parquet shards."""

from __future__ import annotations

import io
import logging
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_TESTDATA = REPO.parent / "shared" / "testdata"

SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("text", pa.large_string())])


def write_shard(path: Path, texts: list[str]) -> Path:
    """Write a Parquet shard with the pinned shard schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "id": [str(i) for i in range(len(texts))],
            "source": ["test"] * len(texts),
            "text": texts,
        },
        schema=SCHEMA,
    )
    pq.write_table(table, path)
    return path


def make_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` small pseudo-English documents with some non-ASCII text."""
    rng = random.Random(seed)
    words = (
        "the of and to in is that for it as with was on be by at this are from code loss".split()
    )
    extra = ["naïve", "café", "数据", "Ωmega", "🙂", "x\ty", "line\nbreak"]
    docs = []
    for _ in range(n):
        k = rng.randint(5, 60)
        docs.append(" ".join(rng.choice(words + extra) for _ in range(k)) + ".")
    return docs


class Terminal(io.StringIO):
    """A stderr that says it is a terminal (of unknown size: 80 columns are assumed)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch, tmp_path: Path) -> Terminal:
    """A fake terminal; the live line's terminal locks live in tmp_path meanwhile."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return Terminal()


@pytest.fixture
def job_logging(monkeypatch):
    """``use(stream=None, log_file=None)``: logging set up as in a job (lmscaling.jobs), to
    ``stream`` as stderr where given; the test's own handlers come back afterwards."""
    from lmscaling.jobs import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:]

    def use(stream=None, log_file=None):
        if stream is not None:
            monkeypatch.setattr(sys, "stderr", stream)
        configure_logging(log_file)

    yield use
    for handler in root.handlers:
        handler.close()
    root.handlers[:] = saved


@pytest.fixture
def train_shards(tmp_path: Path) -> list[Path]:
    texts = make_texts(400, seed=1)
    return [
        write_shard(tmp_path / "train" / "part-00000.parquet", texts[:200]),
        write_shard(tmp_path / "train" / "part-00001.parquet", texts[200:]),
    ]


TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"


def run_snakemake(
    workdir: Path,
    *args: str,
    config: Path = TINY_CONFIG,
    cores: int = 2,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 1200,
) -> subprocess.CompletedProcess:
    """Run the workflow in ``workdir`` with ``config`` (the tiny one by default).

    ``MLFLOW_*`` variables of the calling shell are dropped so every run tracks into its own
    ``workdir``; ``env`` adds or overrides variables. With ``check`` a non-zero exit raises
    AssertionError carrying the end of Snakemake's stderr.
    """
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    cmd += ["--directory", str(workdir), "--configfile", str(config), "--cores", str(cores)]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc
