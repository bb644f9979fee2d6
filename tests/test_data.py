"""Tests for lmscaling.data: corpus reading, normalization, dedup, hash split and shards."""

from __future__ import annotations

import gzip
import hashlib
import json
import platform
import random
import unicodedata
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from lmscaling.data import (
    DEFAULT_STDLIB_EXCLUDE,
    REMOVAL_REASONS,
    SPLITS,
    CorpusError,
    CorpusSpec,
    corpus_spec_from_config,
    iter_documents,
    normalize,
    prepare_corpus,
    resolve_inputs,
    shard_names,
    shard_of,
    split_of,
)

DOLMA = Path(__file__).resolve().parents[1] / ".." / "shared" / "testdata" / "corpora"
DOLMA = DOLMA / "dolma-cc-jsonl"
PINNED_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("text", pa.large_string(), nullable=False),
    ]
)


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """Run in tmp_path so that source ids are short relative paths."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files_spec(*paths: str, **kw) -> CorpusSpec:
    return CorpusSpec(name="c", source="files", paths=paths, **kw)


def write_jsonl(path: Path, records: list, compress: str | None = None) -> None:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress == "gz":
        data = gzip.compress(data, mtime=0)
    elif compress == "zst":  # two frames, as written by concatenating compressed files
        half = len(data) // 2
        cctx = zstandard.ZstdCompressor()
        data = cctx.compress(data[:half]) + cctx.compress(data[half:])
    path.write_bytes(data)


def docs(spec: CorpusSpec) -> tuple[list[tuple[str, str]], Counter]:
    counts: Counter = Counter()
    return list(iter_documents(spec, counts)), counts


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "naïve", "日本語", "λ", "tab\there", "end."]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) for _ in range(n)]


# ----------------------------------------------------------------------------- normalize


def test_normalize_examples():
    assert normalize("\ufeffhello") == "hello"
    assert normalize("a\r\nb\rc\nd") == "a\nb\nc\nd"
    assert normalize("\r\n\r\n") == "\n\n"
    nfd = unicodedata.normalize("NFD", "café Ångström")
    assert nfd != "café Ångström"
    assert normalize(nfd) == "café Ångström"
    assert normalize("a\x00b\x07c\x1bd\x7fe\x85f\x9fg") == "abcdefg"
    assert normalize("keep\ttab\nand newline") == "keep\ttab\nand newline"
    # Only a leading BOM is a byte-order mark; inside the text U+FEFF is kept.
    assert normalize("a\ufeffb") == "a\ufeffb"


def test_normalize_removes_exactly_category_cc_except_tab_newline():
    cc = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc"]
    assert len(cc) == 65
    kept = {"\t", "\n", "\r"}  # \r becomes \n
    assert normalize("".join(c for c in cc if c not in kept)) == ""
    assert normalize("\t\n\r") == "\t\n\n"
    others = "".join(chr(c) for c in (0x20, 0xA0, 0x200B, 0x2028, 0xFFFD, 0x1F600))
    assert normalize(others) == others


@given(st.text())
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once
    assert "\r" not in once and unicodedata.is_normalized("NFC", once)


# ----------------------------------------------------------------------------- config


def test_corpus_spec_from_config():
    spec = corpus_spec_from_config("web", {"source": "files", "paths": "d/*.jsonl", "min_chars": 5})
    assert spec == CorpusSpec("web", "files", ("d/*.jsonl",), "text", (), 5)
    std = corpus_spec_from_config("std", {"source": "python-stdlib"})
    assert std.exclude == DEFAULT_STDLIB_EXCLUDE and std.paths == ()
    assert corpus_spec_from_config("std", {"source": "python-stdlib", "exclude": []}).exclude == ()


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"source": "files", "paths": ["a.txt"], "textfield": "x"}, "corpora.c.textfield"),
        ({"paths": ["a.txt"]}, "corpora.c.source"),
        ({"source": "web", "paths": ["a.txt"]}, "corpora.c.source"),
        ({"source": "files"}, "corpora.c.paths"),
        ({"source": "files", "paths": [1]}, "corpora.c.paths"),
        ({"source": "python-stdlib", "paths": ["a.txt"]}, "corpora.c.paths"),
        ({"source": "files", "paths": ["a"], "min_chars": "9"}, "corpora.c.min_chars"),
        ({"source": "files", "paths": ["a"], "text_field": ""}, "corpora.c.text_field"),
        ({"source": "files", "paths": ["a"], "exclude": 3}, "corpora.c.exclude"),
    ],
)
def test_corpus_spec_from_config_errors_name_the_key(cfg, key):
    with pytest.raises(CorpusError, match=key.replace(".", r"\.")):
        corpus_spec_from_config("c", cfg)


def test_shard_names():
    assert shard_names(3) == ["00000", "00001", "00002"]
    for bad in (0, -1, 2.0, True):
        with pytest.raises(CorpusError, match="data.num_shards"):
            shard_names(bad)


# ----------------------------------------------------------------------------- inputs and formats


def test_resolve_inputs_globs_sorted_deduplicated_excluded(cwd):
    for name in ("d/b.txt", "d/a.txt", "d/sub/c.txt", "d/sub/skip.txt"):
        (cwd / name).parent.mkdir(parents=True, exist_ok=True)
        (cwd / name).write_text(name)
    spec = files_spec("d/**/*.txt", "d/a.txt", "./d/b.txt", exclude=("*/skip.txt",))
    assert [p.as_posix() for p in resolve_inputs(spec)] == ["d/a.txt", "d/b.txt", "d/sub/c.txt"]


def test_resolve_inputs_errors(cwd):
    (cwd / "a.txt").write_text("x")
    (cwd / "notes.md").write_text("x")
    with pytest.raises(CorpusError, match=r"corpora\.c\.paths.*'missing\.txt'"):
        resolve_inputs(files_spec("a.txt", "missing.txt"))
    with pytest.raises(CorpusError, match=r"corpora\.c\.paths.*'none/\*\.jsonl'"):
        resolve_inputs(files_spec("none/*.jsonl"))
    with pytest.raises(CorpusError, match=r"notes\.md: unsupported file type"):
        resolve_inputs(files_spec("*"))
    for name in ("x.jsonl.zst.gz", "x.parquet.gz", "x.gz"):
        (cwd / name).write_bytes(b"")
        with pytest.raises(CorpusError, match=name.replace(".", r"\.") + ": unsupported"):
            resolve_inputs(files_spec(name))
    with pytest.raises(CorpusError, match=r"corpora\.c\.include/exclude"):
        resolve_inputs(files_spec("a.txt", exclude=("*.txt",)))
    with pytest.raises(CorpusError, match="is a directory"):
        resolve_inputs(files_spec("."))


def test_text_files_and_invalid_utf8(cwd):
    (cwd / "a.txt").write_bytes(b"caf\xc3\xa9 ok")
    (cwd / "b.py").write_bytes(b"x = 1  # bad \xff byte\n")
    (cwd / "c.txt.gz").write_bytes(gzip.compress(b"zipped", mtime=0))
    out, counts = docs(files_spec("*.txt", "*.py", "*.gz"))
    assert out == [
        ("a.txt", "café ok"),
        ("b.py", "x = 1  # bad \ufffd byte\n"),
        ("c.txt.gz", "zipped"),
    ]
    assert counts == Counter(invalid_utf8=1)


@pytest.mark.parametrize("compress", [None, "gz", "zst"])
def test_jsonl_formats(cwd, compress):
    name = {None: "d/x.jsonl", "gz": "d/x.jsonl.gz", "zst": "d/x.jsonl.zst"}[compress]
    records = [{"text": f"doc {i}", "meta": {"n": i}} for i in range(50)]
    write_jsonl(cwd / name, records, compress)
    out, counts = docs(files_spec(name))
    assert out == [(f"{name}:{i + 1}", f"doc {i}") for i in range(50)]
    assert counts == Counter()


def test_jsonl_bad_records_are_counted_not_dropped_silently(cwd):
    lines = [
        b'\xef\xbb\xbf{"text": "first, after a BOM"}',
        b"",
        b'{"text": "broken',
        b'{"body": "no text key"}',
        b'{"text": 3}',
        b"[1, 2]",
        b'{"text": "bad \xff byte"}',
        b'{"text": "lone \\ud800 surrogate"}',
        b'{"text": "pair \\ud83d\\ude00 emoji"}',
    ]
    (cwd / "x.json").write_bytes(b"\n".join(lines))  # .json is JSON Lines; no final newline
    out, counts = docs(files_spec("x.json"))
    assert out == [
        ("x.json:1", "first, after a BOM"),
        ("x.json:7", "bad \ufffd byte"),
        ("x.json:8", "lone \ufffd surrogate"),
        ("x.json:9", "pair \U0001f600 emoji"),
    ]
    assert counts == Counter(invalid_json=1, missing_text_field=3, invalid_utf8=2)


@pytest.mark.parametrize("dtype", [pa.string(), pa.large_string()])
def test_parquet_string_and_large_string(cwd, dtype):
    table = pa.table({"n": [0, 1, 2], "body": pa.array(["zero", None, "two"], type=dtype)})
    pq.write_table(table, cwd / "x.parquet", row_group_size=2)
    out, counts = docs(files_spec("x.parquet", text_field="body"))
    assert out == [("x.parquet:0", "zero"), ("x.parquet:2", "two")]
    assert counts == Counter(missing_text_field=1)


def test_wrong_text_field_fails_loudly(cwd):
    write_jsonl(cwd / "x.jsonl.gz", [{"content": "a"}, {"content": "b"}], "gz")
    with pytest.raises(CorpusError, match=r"x\.jsonl\.gz.*'text'.*corpora\.c\.text_field"):
        docs(files_spec("x.jsonl.gz"))
    pq.write_table(pa.table({"content": ["a"], "id": [1]}), cwd / "x.parquet")
    with pytest.raises(CorpusError, match=r"x\.parquet.*corpora\.c\.text_field.*'content', 'id'"):
        docs(files_spec("x.parquet"))
    pq.write_table(pa.table({"text": [1, 2]}), cwd / "n.parquet")
    with pytest.raises(CorpusError, match=r"n\.parquet: column 'text' has type int64"):
        docs(files_spec("n.parquet"))


def test_unreadable_file_is_named(cwd):
    (cwd / "x.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(CorpusError, match=r"x\.jsonl\.gz: cannot read"):
        docs(files_spec("x.jsonl.gz"))


# ----------------------------------------------------------------------------- split and shard


def test_split_and_shard_are_deterministic_and_roughly_uniform():
    texts = random_texts(1000)
    assert len(set(texts)) > 990
    splits = [split_of(t, 0.2) for t in texts]
    shards = [shard_of(t, 4) for t in texts]
    assert [split_of(t, 0.2) for t in reversed(texts)] == splits[::-1]
    assert [shard_of(t, 4) for t in reversed(texts)] == shards[::-1]
    assert 150 <= splits.count("val") <= 250  # Binomial(1000, 0.2): mean 200, sd 12.6
    assert all(200 <= shards.count(s) <= 300 for s in range(4))
    assert split_of("x", 0.0) == "train" and split_of("x", 1.0) == "val"
    # The split uses digest bytes 0..8 and the shard bytes 8..16.
    digest = hashlib.sha256(b"hello").digest()
    assert shard_of("hello", 1000) == int.from_bytes(digest[8:16], "big") % 1000
    u = (int.from_bytes(digest[:8], "big") >> 11) / 2**53
    assert split_of("hello", u) == "train" and split_of("hello", u + 1e-12) == "val"
    with pytest.raises(CorpusError, match="data.val_fraction"):
        split_of("x", 1.5)


# ----------------------------------------------------------------------------- prepare_corpus


def read_rows(out: Path) -> pl.DataFrame:
    return pl.read_parquet(str(out / "*" / "part-*.parquet"))


def check_manifest(out: Path, m: dict, num_shards: int) -> None:
    assert m == json.loads((out / "manifest.json").read_text())
    assert set(m["removed"]) == set(REMOVAL_REASONS)
    assert m["documents_in"] == m["documents_out"] + sum(m["removed"].values())
    assert [(s["split"], s["shard"]) for s in m["shards"]] == [
        (split, shard) for split in SPLITS for shard in shard_names(num_shards)
    ]
    for s in m["shards"]:
        path = out / s["path"]
        assert path == out / s["split"] / f"part-{s['shard']}.parquet"
        assert s["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        table = pq.read_table(path)
        assert table.schema.equals(PINNED_SCHEMA, check_metadata=False)
        texts = table.column("text").to_pylist()
        assert s["rows"] == len(texts)
        assert s["bytes"] == sum(len(t.encode()) for t in texts)
        ids = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        assert table.column("id").to_pylist() == ids
        assert all(split_of(t, m["val_fraction"]) == s["split"] for t in texts)
        assert all(shard_of(t, num_shards) == int(s["shard"]) for t in texts)
    for split in SPLITS:
        rows = [s for s in m["shards"] if s["split"] == split]
        assert m["documents"][split] == sum(s["rows"] for s in rows)
        assert m["bytes"][split] == sum(s["bytes"] for s in rows)
    assert sum(m["documents"].values()) == m["documents_out"]
    assert not list(out.rglob("*.tmp"))


def make_mixed_corpus(root: Path) -> CorpusSpec:
    """Two JSONL files and a text file with known removals (min_chars=5)."""
    texts = random_texts(300, seed=1)
    write_jsonl(
        root / "d/a.jsonl",
        [{"text": t} for t in texts[:200]] + [{"text": "   \n\t"}, {"text": "tiny"}, {"x": 1}],
    )
    # Duplicates across files, also after normalization (CRLF, NFD, BOM).
    dup = [
        texts[0].replace(" ", "\r\n"),
        unicodedata.normalize("NFD", texts[1]),
        "\ufeff" + texts[2],
    ]
    write_jsonl(root / "d/b.jsonl.zst", [{"text": t} for t in texts[200:] + dup], "zst")
    (root / "d/b.jsonl.zst").write_bytes(
        (root / "d/b.jsonl.zst").read_bytes() + zstandard.ZstdCompressor().compress(b"{not json\n")
    )
    (root / "d/c.txt").write_text(texts[3])  # same text as a JSONL record
    return files_spec("d/*", min_chars=5)


def test_prepare_corpus_counts_dedup_and_manifest(cwd):
    spec = make_mixed_corpus(cwd)
    # texts[0] with CRLF instead of spaces is a different text; the NFD and BOM copies are not.
    m = prepare_corpus(spec, cwd / "out", num_shards=3, val_fraction=0.2, row_group_rows=16)
    assert m["removed"] == {
        "empty": 1,
        "too_short": 1,
        "duplicate": 3,  # NFD copy, BOM copy, the .txt copy
        "invalid_json": 1,
        "missing_text_field": 1,
    }
    assert m["documents_in"] == 203 + 104 + 1 and m["documents_out"] == 301
    assert m["input_files"] == 3 and m["source"] == "files" and m["python_version"] is None
    assert m["notes"] == {"invalid_utf8": 0}
    check_manifest(cwd / "out", m, 3)
    rows = read_rows(cwd / "out")
    assert rows.height == 301 and rows["id"].n_unique() == 301
    assert rows.filter(pl.col("source") == "d/c.txt").height == 0  # a duplicate, read last
    assert pa.types.is_large_string(pq.read_schema(cwd / "out/val/part-00000.parquet")[2].type)
    dataset = ds.dataset(cwd / "out", format="parquet", exclude_invalid_files=True)
    assert dataset.count_rows() == 301
    assert 40 <= m["documents"]["val"] <= 80  # Binomial(301, 0.2): mean 60
    # Row groups hold at most row_group_rows rows, and rows keep input order inside a shard.
    for s in m["shards"]:
        pf = pq.ParquetFile(cwd / "out" / s["path"])
        assert all(pf.metadata.row_group(i).num_rows <= 16 for i in range(pf.num_row_groups))
        assert pf.num_row_groups == -(-s["rows"] // 16)
        sources = pf.read().column("source").to_pylist()
        key = [(x.split(":")[0], int(x.split(":")[1])) for x in sources]
        assert key == sorted(key)


def test_prepare_corpus_is_byte_identical_and_order_independent(cwd):
    texts = random_texts(200, seed=2)
    write_jsonl(cwd / "a.jsonl", [{"text": t} for t in texts])
    write_jsonl(cwd / "z.jsonl.gz", [{"text": t} for t in reversed(texts)], "gz")
    m1 = prepare_corpus(files_spec("a.jsonl"), cwd / "o1", 2, 0.3, row_group_rows=7)
    m2 = prepare_corpus(files_spec("a.jsonl"), cwd / "o2", 2, 0.3, row_group_rows=7)
    files1 = sorted(p.relative_to(cwd / "o1") for p in (cwd / "o1").rglob("*") if p.is_file())
    assert len(files1) == 5
    for rel in files1:
        assert (cwd / "o1" / rel).read_bytes() == (cwd / "o2" / rel).read_bytes()
    assert m1 == m2
    # Reversed input: same documents in the same split and shard, only the order differs.
    m3 = prepare_corpus(files_spec("z.jsonl.gz"), cwd / "o3", 2, 0.3)
    assert m3["content_sha256"] != m1["content_sha256"]
    for s1, s3 in zip(m1["shards"], m3["shards"], strict=True):
        ids1 = pq.read_table(cwd / "o1" / s1["path"]).column("id").to_pylist()
        ids3 = pq.read_table(cwd / "o3" / s3["path"]).column("id").to_pylist()
        assert ids3 == ids1[::-1] and (s1["rows"], s1["bytes"]) == (s3["rows"], s3["bytes"])


def test_empty_shards_are_valid_parquet(cwd):
    write_jsonl(cwd / "a.jsonl", [{"text": t} for t in random_texts(6, seed=3)])
    m = prepare_corpus(files_spec("a.jsonl"), cwd / "out", num_shards=8, val_fraction=0.5)
    empty = [s for s in m["shards"] if s["rows"] == 0]
    assert len(empty) >= 8  # 6 documents cannot fill 16 shards
    check_manifest(cwd / "out", m, 8)
    assert read_rows(cwd / "out").height == 6


def test_empty_split_raises_and_leaves_nothing(cwd):
    write_jsonl(cwd / "a.jsonl", [{"text": t} for t in random_texts(20, seed=4)])
    with pytest.raises(CorpusError, match=r"val split is empty.*data\.val_fraction"):
        prepare_corpus(files_spec("a.jsonl"), cwd / "out", 2, 0.0)
    with pytest.raises(CorpusError, match=r"train split is empty.*data\.val_fraction"):
        prepare_corpus(files_spec("a.jsonl"), cwd / "out", 2, 1.0)
    assert [p for p in (cwd / "out").rglob("*") if p.is_file()] == []


def test_failure_keeps_previous_outputs(cwd):
    write_jsonl(cwd / "a.jsonl", [{"text": t} for t in random_texts(50, seed=5)])
    prepare_corpus(files_spec("a.jsonl"), cwd / "out", 2, 0.3)
    before = {p: p.read_bytes() for p in (cwd / "out").rglob("*") if p.is_file()}
    write_jsonl(cwd / "b.jsonl", [{"body": "x"}])  # the second file has no 'text' field
    with pytest.raises(CorpusError, match=r"b\.jsonl.*corpora\.c\.text_field"):
        prepare_corpus(files_spec("*.jsonl"), cwd / "out", 2, 0.3)
    after = {p: p.read_bytes() for p in (cwd / "out").rglob("*") if p.is_file()}
    assert after == before


def test_fewer_shards_on_rerun_removes_stale_shards(cwd):
    write_jsonl(cwd / "a.jsonl", [{"text": t} for t in random_texts(60, seed=6)])
    prepare_corpus(files_spec("a.jsonl"), cwd / "out", 3, 0.3)
    m = prepare_corpus(files_spec("a.jsonl"), cwd / "out", 2, 0.3)
    names = sorted(p.relative_to(cwd / "out").as_posix() for p in (cwd / "out").rglob("*.parquet"))
    assert names == sorted(s["path"] for s in m["shards"])
    assert read_rows(cwd / "out").height == 60


def test_no_usable_document(cwd):
    write_jsonl(cwd / "a.jsonl", [{"text": "short"}, {"text": " "}, {"text": "short"}])
    with pytest.raises(CorpusError, match=r"corpus 'c' has no usable document.*'too_short': 2"):
        prepare_corpus(files_spec("a.jsonl", min_chars=10), cwd / "out", 1, 0.5)


# ----------------------------------------------------------------------------- real inputs


def test_resolve_inputs_python_stdlib():
    spec = corpus_spec_from_config("std", {"source": "python-stdlib"})
    files = resolve_inputs(spec)
    assert len(files) > 100
    posix = [p.as_posix() for p in files]
    for name in ("/os.py", "/json/__init__.py", "/asyncio/events.py", "/encodings/utf_8.py"):
        assert any(p.endswith(name) for p in posix), name
    assert posix == sorted(set(posix))
    for path in posix:
        parts = path.split("/")
        assert "test" not in parts and "tests" not in parts and "site-packages" not in parts
        assert "idlelib" not in parts and "pydoc_data" not in parts
    assert not any(p.endswith("encodings/cp1252.py") for p in posix)


def test_python_stdlib_subset_smoke(tmp_path):
    # Everything but the top-level names starting with "a" (abc.py, argparse.py, asyncio/...).
    spec = CorpusSpec(
        "std", "python-stdlib", exclude=(*DEFAULT_STDLIB_EXCLUDE, "[!a]*"), min_chars=64
    )
    m = prepare_corpus(spec, tmp_path / "out", num_shards=2, val_fraction=0.3)
    check_manifest(tmp_path / "out", m, 2)
    assert m["python_version"] == platform.python_version()
    assert m["documents"]["train"] > 0 and m["documents"]["val"] > 0
    assert m["input_files"] > 20 and m["documents_out"] > 20
    sources = read_rows(tmp_path / "out")["source"].to_list()
    assert "argparse.py" in sources and all(s.startswith("a") for s in sources)


def test_python_stdlib_topics_are_documents():
    # Only os.py: the pseudo-path "pydoc_data.topics" is matched by none of these patterns.
    exclude = (*DEFAULT_STDLIB_EXCLUDE, "[!op]*", "o[!s]*", "p*.py")
    out, counts = docs(CorpusSpec("std", "python-stdlib", exclude=exclude))
    assert [s for s, _ in out if not s.startswith("pydoc_data.topics:")] == ["os.py"]
    from pydoc_data.topics import topics

    assert len(out) == 1 + len(topics) and dict(out)["pydoc_data.topics:assert"] == topics["assert"]


@pytest.mark.skipif(not DOLMA.is_dir(), reason="../shared/testdata absent")
def test_dolma_samples(tmp_path):
    spec = files_spec(f"{DOLMA}/*", exclude=("*/SOURCE.md", "*/test.jsonl*"))
    m = prepare_corpus(spec, tmp_path / "out", num_shards=2, val_fraction=0.3)
    assert m["input_files"] == 3 and m["documents_in"] == 30
    assert m["documents_in"] == m["documents_out"] + sum(m["removed"].values())
    check_manifest(tmp_path / "out", m, 2)
    longest = max(read_rows(tmp_path / "out")["text"].str.len_chars().to_list())
    assert longest > 60_000
    with pytest.raises(CorpusError, match=r"test\.jsonl\.zst.*corpora\.c\.text_field.*'message'"):
        docs(files_spec(f"{DOLMA}/test.jsonl.zst"))


def test_include_selects_a_slice_of_the_stdlib():
    spec = corpus_spec_from_config("lib", {"source": "python-stdlib", "include": ["json/*.py"]})
    files = resolve_inputs(spec)
    names = sorted(p.name for p in files)
    assert "decoder.py" in names and "__init__.py" in names
    assert all(p.parent.name == "json" for p in files)
    counts = Counter()
    docs = list(iter_documents(spec, counts))
    assert len(docs) == len(files)  # the pydoc topics are not included
    with pytest.raises(CorpusError, match=r"corpora\.lib\.include"):
        corpus_spec_from_config("lib", {"source": "python-stdlib", "include": 3})
