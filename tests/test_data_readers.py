"""Tests for lmscaling.readers: every input format, and bad input handled by policy.

Each bad input is read through the whole stage (lmscaling.data.prepare_corpus): it is either
skipped and counted with its reason, or rejected with a CorpusError naming the file; the
manifest always balances (documents in = documents out + counted removals).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from lmscaling.data import CorpusError, CorpusSpec, iter_documents, prepare_corpus
from lmscaling.readers import ReadOptions, Tally, sniff_encoding

# Invalid UTF-8 (Kuhn's UTF-8 stress test, sections 3.1, 4.1 and 5.1).
OVERLONG = b"\xc0\xaf"  # "/" in two bytes
LONE_CONTINUATION = b"\x80"
SURROGATE_HALF = b"\xed\xa0\x80"  # U+D800 encoded as if it were a scalar value


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def spec(*paths: str, **kw) -> CorpusSpec:
    return CorpusSpec(name="c", source="files", paths=paths, **kw)


def docs(s: CorpusSpec) -> tuple[list[tuple[str, str]], Counter]:
    """Documents of ``s`` and the removals and notes counted while reading."""
    tally = Tally()
    out = list(iter_documents(s, tally))
    return out, +(tally.documents + tally.notes)


def jsonl(records: list) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def filler(root: Path, n: int = 40) -> int:
    """A file of ``n`` distinct documents, so that both splits of a small corpus get some."""
    (root / "filler.jsonl").write_bytes(jsonl([{"text": f"filler document {i}"} for i in range(n)]))
    return n


def balanced(m: dict) -> bool:
    return m["documents_in"] == m["documents_out"] + sum(m["removed"].values())


# ----------------------------------------------------------------------------- formats


def test_text_units(cwd):
    body = "first line\r\nsecond\u2028same line\n\n  \nthird block\nstill third\n"
    (cwd / "a.txt").write_text(body, newline="")
    assert docs(spec("a.txt"))[0] == [("a.txt", body)]
    lines, _ = docs(spec("a.txt", text_unit="line"))
    assert lines == [
        ("a.txt:1", "first line"),
        ("a.txt:2", "second\u2028same line"),  # U+2028 is text, not a line break
        ("a.txt:3", ""),
        ("a.txt:4", "  "),
        ("a.txt:5", "third block"),
        ("a.txt:6", "still third"),
    ]
    blocks, _ = docs(spec("a.txt", text_unit="paragraph"))
    assert blocks == [
        ("a.txt:1", "first line\r\nsecond\u2028same line"),
        ("a.txt:5", "third block\nstill third"),
    ]
    m = prepare_corpus(spec("a.txt", text_unit="line"), cwd / "out", 1, 0.5)
    assert m["removed"]["empty"] == 2 and m["documents_out"] == 4 and balanced(m)


@pytest.mark.parametrize(
    ("name", "compress"),
    [
        ("x.jsonl", lambda b: b),
        ("x.jsonl.gz", lambda b: gzip.compress(b, mtime=0)),
        ("x.jsonl.bz2", bz2.compress),
        ("x.jsonl.xz", lzma.compress),
        ("x.ndjson.zst", lambda b: zstandard.compress(b[:40]) + zstandard.compress(b[40:])),
        ("x.json.gz", lambda b: gzip.compress(b, mtime=0)),  # JSON lines in a .json.gz
        ("looks-plain.jsonl", lambda b: gzip.compress(b, mtime=0)),  # misleading extension
    ],
)
def test_jsonl_compressions(cwd, name, compress):
    records = [{"text": f"doc {i}\u2028with a line separator", "meta": {"n": i}} for i in range(9)]
    (cwd / name).write_bytes(compress(jsonl(records)))
    out, counts = docs(spec(name))
    assert out == [(f"{name}:{i + 1}", f"doc {i}\u2028with a line separator") for i in range(9)]
    assert counts == Counter()


def test_json_array_of_records_or_strings(cwd):
    (cwd / "r.json").write_text(json.dumps([{"body": "one"}, {"other": 1}, {"body": "two"}]))
    (cwd / "s.json").write_text(json.dumps(["alpha", "beta"], indent=2))
    out, counts = docs(spec("r.json", text_field="body"))
    assert out == [("r.json:0", "one"), ("r.json:2", "two")]
    assert counts == Counter(missing_text_field=1)
    assert docs(spec("s.json"))[0] == [("s.json:0", "alpha"), ("s.json:1", "beta")]


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
    (cwd / "x.json").write_bytes(b"\n".join(lines))  # JSON lines in .json; no final newline
    out, counts = docs(spec("x.json"))
    assert out == [
        ("x.json:1", "first, after a BOM"),
        ("x.json:7", "bad \ufffd byte"),
        ("x.json:8", "lone \ufffd surrogate"),
        ("x.json:9", "pair \U0001f600 emoji"),
    ]
    assert counts == Counter(invalid_json=1, missing_text_field=3, invalid_utf8_replaced=2)


def test_parquet_polars_large_string_beside_pyarrow_string(cwd):
    pq.write_table(
        pa.table({"text": pa.array(["arrow a", None, "arrow b"], pa.string())}), "a.parquet"
    )
    pl.DataFrame({"text": ["polars a", "polars b"], "n": [1, 2]}).write_parquet("b.parquet")
    assert pq.read_schema("a.parquet").field("text").type == pa.string()
    assert pq.read_schema("b.parquet").field("text").type == pa.large_string()
    out, counts = docs(spec("*.parquet"))
    assert out == [
        ("a.parquet:0", "arrow a"),
        ("a.parquet:2", "arrow b"),
        ("b.parquet:0", "polars a"),
        ("b.parquet:1", "polars b"),
    ]
    assert counts == Counter(missing_text_field=1)
    m = prepare_corpus(spec("*.parquet"), cwd / "out", 1, 0.5)
    assert m["documents_out"] == 4 and balanced(m)
    assert (
        pq.read_schema(cwd / "out/train/part-00000.parquet").field("text").type == pa.large_string()
    )


def test_parquet_errors_name_the_file_and_column(cwd):
    pq.write_table(pa.table({"content": ["a"], "id": [1]}), "x.parquet")
    with pytest.raises(CorpusError, match=r"x\.parquet.*corpora\.c\.text_field.*'content', 'id'"):
        docs(spec("x.parquet"))
    pq.write_table(pa.table({"text": [1, 2]}), "n.parquet")
    with pytest.raises(CorpusError, match=r"n\.parquet: column 'text' has type int64"):
        docs(spec("n.parquet"))


def test_parquet_with_invalid_utf8(cwd):
    raw = [b"ok", b"bad " + LONE_CONTINUATION]
    offsets = pa.array([0, 2, 2 + len(raw[1])], pa.int32()).buffers()[1]
    bad = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"".join(raw))])
    pq.write_table(pa.table({"text": bad}), "u.parquet")
    out, counts = docs(spec("u.parquet"))
    assert out == [("u.parquet:0", "ok"), ("u.parquet:1", "bad \ufffd")]
    assert counts == Counter(invalid_utf8_replaced=1)
    out, counts = docs(spec("u.parquet", read=ReadOptions(invalid_utf8="drop")))
    assert out == [("u.parquet:0", "ok")] and counts == Counter(invalid_utf8=1)


def test_csv_and_tsv(cwd):
    (cwd / "a.csv").write_text('id,text\n1,"multi\nline, quoted"\n2,plain\n3\n', newline="")
    (cwd / "b.tsv.gz").write_bytes(gzip.compress(b"text\tlabel\ntab separated\t0\n", mtime=0))
    out, counts = docs(spec("a.csv", "b.tsv.gz"))
    assert out == [
        ("a.csv:0", "multi\nline, quoted"),
        ("a.csv:1", "plain"),
        ("b.tsv.gz:0", "tab separated"),
    ]
    assert counts == Counter(missing_text_field=1)  # the row without a text column
    (cwd / "c.csv").write_text("id,body\n1,x\n")
    with pytest.raises(CorpusError, match=r"c\.csv: no column 'text'.*\['id', 'body'\]"):
        docs(spec("c.csv"))


# ----------------------------------------------------------------------------- bad input


def test_empty_files_of_every_format(cwd):
    for name in ("a.txt", "b.jsonl", "c.json", "d.csv", "e.jsonl.gz"):
        (cwd / name).write_bytes(gzip.compress(b"", mtime=0) if name.endswith(".gz") else b"")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), "f.parquet")
    (cwd / "g.txt").write_text("the only document")
    out, counts = docs(spec("*"))
    assert out == [("g.txt", "the only document")]
    assert counts == Counter(empty_file=6)
    n = filler(cwd)
    m = prepare_corpus(spec("*"), cwd / "out", 1, 0.5)
    assert m["removed"]["empty_file"] == 6 and m["documents_in"] == 7 + n and balanced(m)


def test_100k_character_single_line(cwd):
    line = "word " * 20_000  # 100,000 characters, no newline
    (cwd / "long.txt").write_text(line)
    (cwd / "long.jsonl").write_text(json.dumps({"text": line}))
    (cwd / "long.csv").write_text("text\n" + line + "\n")
    out, _ = docs(spec("long.*", text_unit="line"))
    assert [len(t) for _, t in out] == [100_000] * 3  # csv, jsonl, txt
    n = filler(cwd)
    m = prepare_corpus(spec("long.*", "filler.jsonl"), cwd / "out", 1, 0.5)
    assert m["documents_out"] == 1 + n and m["removed"]["duplicate"] == 2 and balanced(m)
    assert max(pl.read_parquet("out/*/*.parquet")["text"].str.len_chars()) == 100_000
    capped = prepare_corpus(spec("long.txt", "filler.jsonl", max_chars=99_999), cwd / "o2", 1, 0.5)
    assert capped["removed"]["too_long"] == 1 and balanced(capped)


def test_binary_file_is_skipped_and_counted(cwd):
    (cwd / "image.txt").write_bytes(bytes(range(256)) * 40)
    (cwd / "blob.jsonl").write_bytes(b'{"text": "x"}\n\x00\x01\x02\x00' * 10)
    (cwd / "ok.txt").write_text("a real document")
    out, counts = docs(spec("*"))
    assert out == [("ok.txt", "a real document")] and counts == Counter(binary=2)
    filler(cwd)
    m = prepare_corpus(spec("*"), cwd / "out", 1, 0.5)
    assert m["removed"]["binary"] == 2 and m["removed_bytes"]["binary"] == 10240 + 180
    assert m["examples"]["binary"][0]["source"] == "blob.jsonl" and balanced(m)


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [
        ("utf-16-le", b"\xff\xfe"),
        ("utf-16-be", b"\xfe\xff"),
        ("utf-16-le", b""),
        ("utf-32-le", b"\xff\xfe\x00\x00"),
    ],
)
def test_utf16_transcoded_skipped_or_rejected(cwd, encoding, bom):
    text = "Grüße aus Köln\nzweite Zeile 日本\n"
    (cwd / "u.txt").write_bytes(bom + text.encode(encoding))
    (cwd / "u.jsonl").write_bytes(
        bom + jsonl([{"text": "ein Datensatz ✓"}]).decode().encode(encoding)
    )
    out, counts = docs(spec("u.txt", "u.jsonl"))
    assert out == [("u.jsonl:1", "ein Datensatz ✓"), ("u.txt", text)]
    assert counts == Counter(utf16_transcoded=2)
    out, counts = docs(spec("u.txt", read=ReadOptions(utf16="skip")))
    assert out == [] and counts == Counter(utf16=1)
    with pytest.raises(CorpusError, match=r"u\.txt: utf-(16|32).* text; set utf16: transcode"):
        docs(spec("u.txt", read=ReadOptions(utf16="error")))


def test_sniff_encoding():
    assert sniff_encoding(b"plain") == "utf-8"
    assert sniff_encoding(b"\xef\xbb\xbfx") == "utf-8-sig"
    assert sniff_encoding("abc def".encode("utf-16-le")) == "utf-16-le"
    assert sniff_encoding("abc def".encode("utf-16-be")) == "utf-16-be"
    assert sniff_encoding(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR") == "binary"
    assert sniff_encoding(bytes(range(128, 256)) * 4) == "binary"
    # A stray NUL or bad byte in real text is a flaw of the text, not a binary file.
    assert sniff_encoding(b"a section about U+0000: \x00 " + b"text " * 100) == "utf-8"
    assert sniff_encoding("caf\u00e9 ".encode() * 50 + b"\xff") == "utf-8"


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_truncated_compressed_file(cwd, kind):
    data = jsonl([{"text": f"document number {i}"} for i in range(20_000)])
    packed = gzip.compress(data, mtime=0) if kind == "gz" else zstandard.compress(data)
    (cwd / f"t.jsonl.{kind}").write_bytes(packed[: len(packed) * 2 // 3])
    with pytest.raises(CorpusError, match=rf"t\.jsonl\.{kind}: cannot read after \d+ documents"):
        prepare_corpus(spec(f"t.jsonl.{kind}"), cwd / "out", 1, 0.5)
    skip = spec(f"t.jsonl.{kind}", read=ReadOptions(read_errors="skip"))
    out, counts = docs(skip)
    assert counts == Counter(unreadable=1) and len(out) > 1000
    assert out == [(f"t.jsonl.{kind}:{i + 1}", f"document number {i}") for i in range(len(out))]
    m = prepare_corpus(skip, cwd / "out", 1, 0.5)
    assert m["removed"]["unreadable"] == 1 and balanced(m)
    assert m["documents_out"] == len(out) and m["examples"]["unreadable"][0]["text"]


@pytest.mark.parametrize("bad", [OVERLONG, LONE_CONTINUATION, SURROGATE_HALF])
def test_invalid_utf8_replace_or_drop(cwd, bad):
    (cwd / "a.txt").write_bytes(b"before " + bad + b" after")
    (cwd / "b.jsonl").write_bytes(b'{"text": "json ' + bad + b' text"}\n{"text": "clean"}\n')
    (cwd / "c.csv").write_bytes(b"text\ncsv " + bad + b" cell\nfine\n")
    out, counts = docs(spec("*"))
    assert [t for _, t in out] == [
        "before " + "\ufffd" * len(bad) + " after",
        "json " + "\ufffd" * len(bad) + " text",
        "clean",
        "csv " + "\ufffd" * len(bad) + " cell",
        "fine",
    ]
    assert counts == Counter(invalid_utf8_replaced=3)
    dropping = spec("*", read=ReadOptions(invalid_utf8="drop"))
    out, counts = docs(dropping)
    assert [t for _, t in out] == ["clean", "fine"] and counts == Counter(invalid_utf8=3)
    m = prepare_corpus(dropping, cwd / "out", 1, 0.5)
    assert m["removed"]["invalid_utf8"] == 3 and m["documents_out"] == 2 and balanced(m)
    read = len(b"before  after") + len(b'{"text": "json  text"}\n') + len(b"csv  cell")
    assert m["removed_bytes"]["invalid_utf8"] == read + 3 * len(bad)


def test_records_without_the_text_field(cwd):
    (cwd / "a.jsonl").write_bytes(jsonl([{"text": "kept one"}, {"title": "none"}, {"text": None}]))
    n = filler(cwd)
    m = prepare_corpus(spec("*.jsonl"), cwd / "out", 1, 0.5)
    assert m["removed"]["missing_text_field"] == 2 and m["documents_out"] == 1 + n and balanced(m)
    assert m["examples"]["missing_text_field"][0] == {
        "source": "a.jsonl:2",
        "text": '{"title": "none"}',
    }


def test_unreadable_file_is_named(cwd):
    (cwd / "x.jsonl.gz").write_bytes(b"\x1f\x8bnot gzip at all")
    with pytest.raises(CorpusError, match=r"x\.jsonl\.gz: cannot read after 0 documents"):
        docs(spec("x.jsonl.gz"))
    (cwd / "y.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(CorpusError, match=r"y\.parquet: cannot read"):
        docs(spec("y.parquet"))


def test_remote_pin_mismatch_names_the_url(cwd):
    from lmscaling.data import InputFile, map_task

    (cwd / "fetched.jsonl").write_bytes(jsonl([{"text": "x"}]))
    f = InputFile(
        "https://h.org/a.jsonl", "jsonl", "fetched.jsonl", "https://h.org/a.jsonl", "0" * 64
    )
    with pytest.raises(CorpusError, match=r"https://h\.org/a\.jsonl: sha256 .* pins 0{64}"):
        map_task(spec("fetched.jsonl"), [f], cwd / "m.parquet", cwd / "m.json", 1)
    assert not Path("m.parquet").exists() and not Path("m.json").exists()
