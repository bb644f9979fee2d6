"""Shared fixtures: small generated corpora as Parquet shards."""

from __future__ import annotations

import random
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


@pytest.fixture
def train_shards(tmp_path: Path) -> list[Path]:
    texts = make_texts(400, seed=1)
    return [
        write_shard(tmp_path / "train" / "part-00000.parquet", texts[:200]),
        write_shard(tmp_path / "train" / "part-00001.parquet", texts[200:]),
    ]
