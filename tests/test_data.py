"""Tests for lmscaling.data: config, inputs, the map/reduce/publish steps, determinism.

Formats and bad input: test_data_readers.py; cleaning, quality filters and near-dup:
test_data_filters.py; the real samples of ../shared/testdata: test_data_real.py; the workflow
jobs (remote input, --cores): test_data_workflow.py.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
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
    DataOptions,
    InputFile,
    corpus_spec_from_config,
    data_options_from_config,
    iter_documents,
    mixture_probabilities,
    normalize,
    plan_map_tasks,
    prepare_corpus,
    resolve_inputs,
    shard_names,
    shard_of,
    split_of,
)
from lmscaling.readers import Tally

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
    """Documents of ``spec`` and the removals (reason: count) and notes while reading."""
    tally = Tally()
    out = list(iter_documents(spec, tally))
    return out, +(tally.documents + tally.notes)


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
    with pytest.raises(CorpusError, match=r"corpora\.std\.max_chars: 50 is below min_chars 100"):
        corpus_spec_from_config(
            "std", {"source": "python-stdlib", "min_chars": 100, "max_chars": 50}
        )
    # Quality filters are off unless asked for; true means the papers' thresholds.
    assert std.quality.reasons == () and std.near_dedup is None and std.exact_dedup
    full = corpus_spec_from_config(
        "web",
        {
            "source": "files",
            "paths": ["x.txt"],
            "text_unit": "line",
            "weight": 2.5,
            "clean": {"collapse_whitespace": True, "invalid_utf8": "drop", "utf16": "skip"},
            "quality": {"gopher_quality": True, "c4": {"min_sentences": 1}},
            "dedup": {"exact": False, "near": {"threshold": 0.7}},
            "read_errors": "skip",
        },
    )
    assert full.quality.gopher_quality.min_words == 50  # Rae et al. 2021
    assert full.quality.c4.min_sentences == 1 and full.quality.c4.min_words_per_line == 5
    assert full.quality.gopher_repetition is None
    assert full.clean.collapse_whitespace and full.read.invalid_utf8 == "drop"
    assert (full.read.utf16, full.read.read_errors, full.read.text_unit) == ("skip", "skip", "line")
    assert full.near_dedup.threshold == 0.7 and full.near_dedup.shingle_size == 5
    assert not full.exact_dedup and full.weight == 2.5


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
        ({"source": "files", "paths": ["a"], "weight": 0}, "corpora.c.weight"),
        ({"source": "files", "paths": ["a"], "format": "xml"}, "corpora.c.format"),
        ({"source": "files", "paths": ["a"], "text_unit": "page"}, "corpora.c.text_unit"),
        ({"source": "files", "paths": ["a"], "clean": {"nfkc": True}}, "corpora.c.clean.nfkc"),
        ({"source": "files", "paths": ["a"], "clean": {"nfc": 1}}, "corpora.c.clean.nfc"),
        (
            {"source": "files", "paths": ["a"], "clean": {"invalid_utf8": "keep"}},
            "corpora.c.clean.invalid_utf8",
        ),
        ({"source": "files", "paths": ["a"], "read_errors": "ignore"}, "corpora.c.read_errors"),
        (
            {"source": "files", "paths": ["a"], "quality": {"gopher": True}},
            "corpora.c.quality.gopher",
        ),
        (
            {"source": "files", "paths": ["a"], "quality": {"c4": {"min_lines": 3}}},
            "corpora.c.quality.c4.min_lines",
        ),
        (
            {"source": "files", "paths": ["a"], "quality": {"gopher_quality": {"min_words": "5"}}},
            "corpora.c.quality.gopher_quality.min_words",
        ),
        (
            {"source": "files", "paths": ["a"], "dedup": {"near": {"threshold": 1.5}}},
            "dedup.near.threshold",
        ),
        ({"source": "files", "paths": ["a"], "dedup": {"fuzzy": True}}, "corpora.c.dedup.fuzzy"),
    ],
)
def test_corpus_spec_from_config_errors_name_the_key(cfg, key):
    with pytest.raises(CorpusError, match=key.replace(".", r"\.")):
        corpus_spec_from_config("c", cfg)


def test_data_options_from_config():
    opts = data_options_from_config({"val_fraction": 0.1, "num_shards": 4})
    assert opts == DataOptions(val_fraction=0.1, num_shards=4)
    assert opts.row_group_bytes == 16 << 20 and opts.max_shard_bytes == 0
    with pytest.raises(CorpusError, match=r"data\.shards"):
        data_options_from_config({"val_fraction": 0.1, "num_shards": 4, "shards": 2})
    with pytest.raises(CorpusError, match=r"data\.row_group_bytes"):
        data_options_from_config({"val_fraction": 0.1, "num_shards": 4, "row_group_bytes": -1})


def test_shard_names():
    assert shard_names(3) == ["00000", "00001", "00002"]
    for bad in (0, -1, 2.0, True):
        with pytest.raises(CorpusError, match="data.num_shards"):
            shard_names(bad)


def test_mixture_probabilities():
    p = mixture_probabilities({"a": {"weight": 3}, "b": {}, "c": {"weight": 1.0}})
    assert p == {"a": 0.6, "b": 0.2, "c": 0.2}
    assert list(p) == ["a", "b", "c"]
    assert mixture_probabilities({"only": 7.0}) == {"only": 1.0}
    with pytest.raises(CorpusError, match=r"corpora\.b\.weight"):
        mixture_probabilities({"a": {"weight": 1}, "b": {"weight": -1}})


# ----------------------------------------------------------------------------- inputs


def test_resolve_inputs_globs_dirs_sorted_deduplicated_excluded(cwd):
    for name in ("d/b.txt", "d/a.txt", "d/sub/c.txt", "d/sub/skip.txt", "d/.hidden.txt"):
        (cwd / name).parent.mkdir(parents=True, exist_ok=True)
        (cwd / name).write_text(name)
    spec = files_spec("d/**/*.txt", "d/a.txt", "./d/b.txt", exclude=("*/skip.txt",))
    files = resolve_inputs(spec)
    assert [f.name for f in files] == ["d/a.txt", "d/b.txt", "d/sub/c.txt"]
    assert all(f.format == "text" and f.size == len(f.name) for f in files)
    # A directory: every file below it, hidden ones skipped.
    spec = files_spec("d", exclude=("*/skip.txt",))
    assert [f.name for f in resolve_inputs(spec)] == ["d/a.txt", "d/b.txt", "d/sub/c.txt"]


def test_resolve_inputs_links_and_special_files(cwd):
    for name in ("d/a.txt", "elsewhere/b.txt", "elsewhere/sub/c.txt"):
        (cwd / name).parent.mkdir(parents=True, exist_ok=True)
        (cwd / name).write_text(name)
    (cwd / "d/more").symlink_to(cwd / "elsewhere")  # a linked folder is read like its own
    (cwd / "elsewhere/sub/up").symlink_to(cwd / "d")  # a link back up: read once, no loop
    names = [f.name for f in resolve_inputs(files_spec("d"))]
    assert names == ["d/a.txt", "d/more/b.txt", "d/more/sub/c.txt"]
    os.mkfifo(cwd / "d/pipe.txt")  # would block the reader forever
    with pytest.raises(CorpusError, match=r"corpora\.c\.paths: d/pipe\.txt is not a regular"):
        resolve_inputs(files_spec("d"))
    with pytest.raises(CorpusError, match="d/pipe.txt is not a regular file"):
        resolve_inputs(files_spec("d/*.txt"))
    assert len(resolve_inputs(files_spec("d", exclude=("*/pipe.txt",)))) == 3
    (cwd / "d/pipe.txt").unlink()
    (cwd / "d/gone.txt").symlink_to(cwd / "missing.txt")
    with pytest.raises(CorpusError, match=r"d/gone\.txt is a broken symbolic link"):
        resolve_inputs(files_spec("d"))
    with pytest.raises(CorpusError, match="is not a regular file"):
        resolve_inputs(files_spec("/dev/null"))
    (cwd / "d/gone.txt").unlink()
    # ** follows links to folders: a loop is named instead of a glob that never ends
    with pytest.raises(CorpusError, match=r"'d/\*\*/\*\.txt': .*up.* links back to a folder"):
        resolve_inputs(files_spec("d/**/*.txt"))
    (cwd / "elsewhere/sub/up").unlink()
    names = [f.name for f in resolve_inputs(files_spec("d/**/*.txt"))]
    assert names == ["d/a.txt", "d/more/b.txt", "d/more/sub/c.txt"]


def test_resolve_inputs_formats_and_remote(cwd):
    for name in ("a.jsonl.bz2", "b.json.xz", "c.csv.gz", "d.tsv", "e.ndjson.zst", "f.md"):
        (cwd / name).write_bytes(b"")
    files = resolve_inputs(files_spec("*"))
    assert [f.format for f in files] == ["jsonl", "json", "csv", "tsv", "jsonl", "text"]
    pin = "0" * 64
    spec = files_spec(
        "f.md", remote=({"url": "https://h.org/x/part.jsonl.zst?dl=1", "sha256": pin},)
    )
    files = resolve_inputs(spec)
    assert files[-1] == InputFile(
        name="https://h.org/x/part.jsonl.zst?dl=1",
        format="jsonl",
        url="https://h.org/x/part.jsonl.zst?dl=1",
        sha256=pin,
    )
    with pytest.raises(CorpusError, match=r"corpora\.c\.remote\[0\]\.sha256"):
        resolve_inputs(files_spec("f.md", remote=({"url": "https://h/x.txt", "sha256": "ab"},)))
    with pytest.raises(CorpusError, match=r"corpora\.c\.remote\[0\]\.url"):
        resolve_inputs(files_spec("f.md", remote=({"url": "ftp://h/x.txt", "sha256": pin},)))
    # An explicit format reads any extension.
    (cwd / "g.dat").write_bytes(b"")
    assert resolve_inputs(files_spec("g.dat", format="jsonl"))[0].format == "jsonl"


def test_resolve_inputs_errors(cwd):
    (cwd / "a.txt").write_text("x")
    (cwd / "notes.doc").write_text("x")
    with pytest.raises(CorpusError, match=r"corpora\.c\.paths.*'missing\.txt'"):
        resolve_inputs(files_spec("a.txt", "missing.txt"))
    with pytest.raises(CorpusError, match=r"corpora\.c\.paths.*'none/\*\.jsonl'"):
        resolve_inputs(files_spec("none/*.jsonl"))
    with pytest.raises(CorpusError, match=r"notes\.doc: unsupported file type"):
        resolve_inputs(files_spec("*"))
    for name in ("x.jsonl.zst.gz", "x.gz"):
        (cwd / name).write_bytes(b"")
        with pytest.raises(CorpusError, match=name.replace(".", r"\.") + ": unsupported"):
            resolve_inputs(files_spec(name))
    (cwd / "x.parquet.gz").write_bytes(b"")
    with pytest.raises(CorpusError, match=r"x\.parquet\.gz: a compressed \.parquet"):
        resolve_inputs(files_spec("x.parquet.gz"))
    (cwd / "pages.arc.gz").write_bytes(b"")
    with pytest.raises(CorpusError, match=r"pages\.arc\.gz: ARC archives \(convert them to WARC"):
        resolve_inputs(files_spec("pages.arc.gz"))
    with pytest.raises(CorpusError, match=r"corpora\.c\.include/exclude"):
        resolve_inputs(files_spec("a.txt", exclude=("*.txt",)))
    (cwd / "empty_dir").mkdir()
    with pytest.raises(CorpusError, match="directory 'empty_dir' holds no file"):
        resolve_inputs(files_spec("empty_dir"))


def test_plan_map_tasks_groups_consecutive_files_by_size():
    def f(name, size):
        return InputFile(name, "text", name, size=size)

    files = [f("a", 40), f("b", 50), f("c", 20), f("d", 200), f("e", 10), f("f", 10)]
    remote = InputFile("https://h/x.txt", "text", url="https://h/x.txt", sha256="0" * 64)
    tasks = plan_map_tasks([*files, remote, f("g", 1)], task_bytes=100)
    assert [[x.name for x in t] for t in tasks] == [
        ["a", "b"],
        ["c"],
        ["d"],
        ["e", "f"],
        ["https://h/x.txt"],
        ["g"],
    ]
    assert plan_map_tasks(files, task_bytes=10**9) == [files]


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
    """Every invariant the manifest promises, checked against the files."""
    assert m == json.loads((out / "manifest.json").read_text())
    assert set(m["removed"]) == set(REMOVAL_REASONS) == set(m["removed_bytes"])
    assert m["documents_in"] == m["documents_out"] + sum(m["removed"].values())
    assert m["bytes_in"] == m["bytes_out"] + sum(m["removed_bytes"].values()) + m["bytes_modified"]
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
    assert sum(m["bytes"].values()) == m["bytes_out"]
    report = list(csv.DictReader((out / "filter_report.csv").open()))
    by_reason = {r["reason"]: r for r in report}
    assert int(by_reason["in"]["documents"]) == m["documents_in"]
    assert int(by_reason["out"]["bytes"]) == m["bytes_out"]
    for reason in REMOVAL_REASONS:
        assert int(by_reason[reason]["documents"]) == m["removed"][reason]
        assert int(by_reason[reason]["bytes"]) == m["removed_bytes"][reason]
    assert not list(out.rglob("*.tmp")) and not list(out.parent.glob(".*work*"))


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
    opts = DataOptions(row_group_bytes=2000)
    # texts[0] with CRLF instead of spaces is a different text; the NFD and BOM copies are not.
    m = prepare_corpus(spec, cwd / "out", num_shards=3, val_fraction=0.2, opts=opts)
    assert {k: v for k, v in m["removed"].items() if v} == {
        "empty": 1,
        "too_short": 1,
        "duplicate": 3,  # NFD copy, BOM copy, the .txt copy
        "invalid_json": 1,
        "missing_text_field": 1,
    }
    assert m["removed_bytes"]["too_short"] == 4 and m["removed_bytes"]["empty"] == 5
    assert m["removed_bytes"]["invalid_json"] == len(b"{not json\n")
    # Cleaning removed one byte per CRLF of the kept texts[0] variant.
    assert m["bytes_modified"] == random_texts(300, seed=1)[0].count(" ")
    assert m["documents_in"] == 203 + 104 + 1 and m["documents_out"] == 301
    assert m["input_files"] == 3 and m["source"] == "files" and m["python_version"] is None
    assert m["examples"]["too_short"] == [{"source": "d/a.jsonl:202", "text": "tiny"}]
    # Dedup examples come shard by shard: the same set every run.
    duplicates = {e["source"] for e in m["examples"]["duplicate"]}
    assert duplicates == {"d/b.jsonl.zst:102", "d/b.jsonl.zst:103", "d/c.txt"}
    check_manifest(cwd / "out", m, 3)
    rows = read_rows(cwd / "out")
    assert rows.height == 301 and rows["id"].n_unique() == 301
    assert rows.filter(pl.col("source") == "d/c.txt").height == 0  # a duplicate, read last
    assert pa.types.is_large_string(pq.read_schema(cwd / "out/val/part-00000.parquet")[2].type)
    dataset = ds.dataset(cwd / "out", format="parquet", exclude_invalid_files=True)
    assert dataset.count_rows() == 301
    assert 40 <= m["documents"]["val"] <= 80  # Binomial(301, 0.2): mean 60
    # Row groups are capped in text bytes, and rows keep input order inside a shard.
    for s in m["shards"]:
        pf = pq.ParquetFile(cwd / "out" / s["path"])
        for i in range(pf.num_row_groups):
            texts = pf.read_row_group(i).column("text").to_pylist()
            assert sum(len(t.encode()) for t in texts[:-1]) < 2000
        assert s["rows"] == 0 or pf.num_row_groups >= s["bytes"] // 2200
        sources = pf.read().column("source").to_pylist()
        key = [(x.split(":")[0], int(x.split(":")[1])) for x in sources]
        assert key == sorted(key)


def test_outputs_do_not_depend_on_map_grouping_or_rerun(cwd):
    texts = random_texts(300, seed=2)
    for i in range(6):
        write_jsonl(cwd / f"in/{i}.jsonl", [{"text": t} for t in texts[i * 60 : (i + 1) * 60]])
    spec = files_spec("in/*.jsonl")
    one_task = prepare_corpus(spec, cwd / "o1", 3, 0.3)
    # Every file its own map task, small map buffers (many row groups per shard).
    many = DataOptions(map_task_bytes=1, map_buffer_bytes=500)
    many_tasks = prepare_corpus(spec, cwd / "o2", 3, 0.3, opts=many)
    again = prepare_corpus(spec, cwd / "o3", 3, 0.3)
    files = sorted(p.relative_to(cwd / "o1") for p in (cwd / "o1").rglob("*") if p.is_file())
    assert len(files) == 8  # 6 shards, the manifest, the filter report
    for rel in files:
        data = (cwd / "o1" / rel).read_bytes()
        assert (cwd / "o2" / rel).read_bytes() == data == (cwd / "o3" / rel).read_bytes()
    assert one_task == many_tasks == again
    assert one_task["documents_out"] == len(set(texts))


def test_reversed_input_gives_same_partition(cwd):
    texts = random_texts(200, seed=3)
    write_jsonl(cwd / "a.jsonl", [{"text": t} for t in texts])
    write_jsonl(cwd / "z.jsonl.gz", [{"text": t} for t in reversed(texts)], "gz")
    m1 = prepare_corpus(files_spec("a.jsonl"), cwd / "o1", 2, 0.3)
    m3 = prepare_corpus(files_spec("z.jsonl.gz"), cwd / "o3", 2, 0.3)
    assert m3["content_sha256"] != m1["content_sha256"]
    for s1, s3 in zip(m1["shards"], m3["shards"], strict=True):
        ids1 = pq.read_table(cwd / "o1" / s1["path"]).column("id").to_pylist()
        ids3 = pq.read_table(cwd / "o3" / s3["path"]).column("id").to_pylist()
        assert ids3 == ids1[::-1] and (s1["rows"], s1["bytes"]) == (s3["rows"], s3["bytes"])


def test_max_shard_bytes_names_num_shards(cwd):
    write_jsonl(cwd / "a.jsonl", [{"text": t} for t in random_texts(100, seed=4)])
    opts = DataOptions(max_shard_bytes=500)
    with pytest.raises(CorpusError, match=r"data\.max_shard_bytes=500.*raise data\.num_shards"):
        prepare_corpus(files_spec("a.jsonl"), cwd / "out", 2, 0.3, opts=opts)
    assert not (cwd / "out").exists() or not list((cwd / "out").rglob("*.parquet"))


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
    assert [p for p in cwd.rglob("*") if p.is_file()] == [cwd / "a.jsonl"]
    # A held-out corpus is scored on all of it: an empty split is fine there.
    m = prepare_corpus(files_spec("a.jsonl"), cwd / "out", 2, 0.0, require_splits=())
    assert m["documents"] == {"train": 20, "val": 0}


def test_failure_keeps_previous_outputs(cwd):
    write_jsonl(cwd / "a.jsonl", [{"text": t} for t in random_texts(50, seed=5)])
    prepare_corpus(files_spec("a.jsonl"), cwd / "out", 2, 0.3)
    before = {p: p.read_bytes() for p in (cwd / "out").rglob("*") if p.is_file()}
    (cwd / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "x"}\n' * 100)[:-30])  # truncated
    with pytest.raises(CorpusError, match=r"b\.jsonl\.gz: cannot read after \d+ documents"):
        prepare_corpus(files_spec("*.jsonl*"), cwd / "out", 2, 0.3)
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
    write_jsonl(cwd / "b.jsonl", [{"body": "a"}, {"body": "b"}])
    with pytest.raises(CorpusError, match=r"'missing_text_field': 2.*corpora\.c\.text_field"):
        prepare_corpus(files_spec("b.jsonl"), cwd / "out", 1, 0.5)


# ----------------------------------------------------------------------------- stdlib


def test_resolve_inputs_python_stdlib():
    spec = corpus_spec_from_config("std", {"source": "python-stdlib"})
    files = resolve_inputs(spec)
    assert len(files) > 100
    names = [f.name for f in files]
    assert names[-1] == "pydoc_data.topics" and files[-1].format == "pydoc-topics"
    for name in ("os.py", "json/__init__.py", "asyncio/events.py", "encodings/utf_8.py"):
        assert name in names, name
    assert names[:-1] == sorted(set(names[:-1]))
    for name in names[:-1]:
        parts = name.split("/")
        assert "test" not in parts and "tests" not in parts and "site-packages" not in parts
        assert "idlelib" not in parts and "pydoc_data" not in parts
    assert "encodings/cp1252.py" not in names
    assert all(Path(f.path).is_file() and f.size >= 0 for f in files[:-1])


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
    # Code keeps its indentation: the default cleaning does not collapse whitespace.
    text = read_rows(tmp_path / "out").filter(pl.col("source") == "argparse.py")["text"][0]
    assert "\n        " in text
    assert text == normalize((_stdlib() / "argparse.py").read_text(encoding="utf-8"))


def _stdlib() -> Path:
    import sysconfig

    return Path(sysconfig.get_paths()["stdlib"])


def test_python_stdlib_topics_are_documents():
    # Only os.py: the pseudo-path "pydoc_data.topics" is matched by none of these patterns.
    exclude = (*DEFAULT_STDLIB_EXCLUDE, "[!op]*", "o[!s]*", "p*.py")
    out, counts = docs(CorpusSpec("std", "python-stdlib", exclude=exclude))
    assert [s for s, _ in out if not s.startswith("pydoc_data.topics:")] == ["os.py"]
    from pydoc_data.topics import topics

    assert len(out) == 1 + len(topics) and dict(out)["pydoc_data.topics:assert"] == topics["assert"]
    assert counts == Counter()


def test_include_selects_a_slice_of_the_stdlib():
    spec = corpus_spec_from_config("lib", {"source": "python-stdlib", "include": ["json/*.py"]})
    files = resolve_inputs(spec)
    names = sorted(f.name for f in files)
    assert "json/decoder.py" in names and "json/__init__.py" in names
    assert all(n.startswith("json/") for n in names)
    out, _ = docs(spec)
    assert len(out) == len(files)  # the pydoc topics are not included
    with pytest.raises(CorpusError, match=r"corpora\.lib\.include"):
        corpus_spec_from_config("lib", {"source": "python-stdlib", "include": 3})


def test_published_shard_is_a_copy_so_touching_it_leaves_the_input_alone(tmp_path):
    # Snakemake touches each output of a job in turn; an output sharing its inode with an
    # input (a hard link) would make that input newer than the outputs touched before it.
    from lmscaling.data import _place

    src, dst = tmp_path / "reduce.parquet", tmp_path / "out" / "part-00000.parquet"
    src.write_bytes(b"shard bytes")
    os.utime(src, ns=(10**18, 10**18))
    _place(src, dst)
    assert dst.read_bytes() == b"shard bytes" and dst.stat().st_ino != src.stat().st_ino
    dst.touch()
    assert src.stat().st_mtime_ns == 10**18
