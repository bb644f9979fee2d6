"""Tests for web pages (lmscaling.web: HTML files, WARC archives) and language identification.

The WARC archives are written byte by byte here (WARC/1.1 records with CRLF headers), so each
broken case is exactly what the test says it is.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
import zstandard
from fastwarc.stream_io import Lz4Writer
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from lmscaling.data import (
    REMOVAL_REASONS,
    CorpusError,
    CorpusSpec,
    corpus_spec_from_config,
    iter_documents,
    prepare_corpus,
    resolve_inputs,
)
from lmscaling.filters import LanguageFilter
from lmscaling.readers import ExtractOptions, ReadOptions, Tally, file_format
from lmscaling.web import decode_page, extract_text

ARTICLE = (
    "Rivers of Europe\n\n"
    "The Danube flows through ten countries before it reaches the Black Sea.\n\n"
    "Its basin drains a fifth of the continent, and many cities grew along its banks."
)
PAGE = """<!DOCTYPE html>
<html><head><title>Rivers</title><style>p { color: red }</style>
<script>var tracker = "boilerplate script";</script></head>
<body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/about">About us</a></li></ul></nav>
<header><div class="menu">Menu Login Sign up</div></header>
<main><article><h1>Rivers of Europe</h1>
<p>The Danube flows through ten countries before it reaches the Black Sea.</p>
<p>Its basin drains a fifth of the continent, and many cities grew along its banks.</p>
</article></main>
<footer><p>Copyright 2024 Example Corp. All rights reserved.</p></footer>
</body></html>
"""
LATIN1_TEXT = "Crème brûlée in a café: a naïve façade of Zürich."
LATIN1_PAGE = (
    f'<html><head><meta charset="iso-8859-1"></head><body><p>{LATIN1_TEXT}</p></body></html>'
).encode("latin-1")
# The start of a PNG image: NUL bytes in 4% of the bytes, in no UTF-16 pattern.
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\x00\x00\x01\x00\x08\x06\x00\x00"
    b"\x00\x1f\x15\xc4\x89" + bytes(range(256))
)
# Real sentences: the same news item in six languages.
SENTENCES = {
    "en": "The committee will publish its final report on the state of public libraries next "
    "spring, after two years of hearings.",
    "de": "Der Ausschuss wird seinen Abschlussbericht über den Zustand der öffentlichen "
    "Bibliotheken im nächsten Frühjahr veröffentlichen.",
    "fr": "Le comité publiera son rapport final sur l'état des bibliothèques publiques au "
    "printemps prochain, après deux ans d'auditions.",
    "es": "El comité publicará su informe final sobre el estado de las bibliotecas públicas la "
    "próxima primavera, tras dos años de audiencias.",
    "ja": "委員会は二年間の公聴会を経て、来年の春に公立図書館の"
    "現状に関する最終報告書を公表する予定です。",
    "ru": "Комитет опубликует свой окончательный доклад о состоянии публичных библиотек "
    "следующей весной после двух лет слушаний.",
}


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def spec(*paths: str, **kw) -> CorpusSpec:
    return CorpusSpec(name="c", source="files", paths=paths, **kw)


def docs(s: CorpusSpec) -> tuple[list[tuple[str, str]], Counter, Tally]:
    """Documents of ``s``, the removals and notes counted while reading, and the tally."""
    tally = Tally()
    out = list(iter_documents(s, tally))
    return out, +(tally.documents + tally.notes), tally


def balanced(m: dict) -> bool:
    return (
        m["documents_in"] == m["documents_out"] + sum(m["removed"].values())
        and m["bytes_in"] == m["bytes_out"] + sum(m["removed_bytes"].values()) + m["bytes_modified"]
    )


# ----------------------------------------------------------------------------- WARC writing


def warc_record(kind: str, block: bytes, uri: str | None, number: int) -> bytes:
    """One WARC/1.1 record: header block, ``block``, and the two CRLFs that end a record."""
    lines = [
        "WARC/1.1",
        f"WARC-Type: {kind}",
        f"WARC-Record-ID: <urn:uuid:00000000-0000-4000-8000-{number:012d}>",
        "WARC-Date: 2024-04-25T16:24:44Z",
    ]
    if uri is not None:
        lines.append(f"WARC-Target-URI: {uri}")
    content_type = "application/warc-fields" if kind == "warcinfo" else "application/http"
    lines += [f"Content-Type: {content_type}", f"Content-Length: {len(block)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + block + b"\r\n\r\n"


def http(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    return head.encode() + body


def chunked(data: bytes, size: int = 7) -> bytes:
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


HTML = "Content-Type: text/html; charset=utf-8"
# (WARC type, target URI, HTTP block): every case of the module docstring once.
RECORDS = [
    ("warcinfo", None, b"software: lmscaling tests\r\nformat: WARC File Format 1.1\r\n"),
    ("request", "https://a.example/rivers", b"GET /rivers HTTP/1.1\r\nHost: a.example\r\n\r\n"),
    ("response", "https://a.example/rivers", http(PAGE.encode(), HTML)),
    ("response", "https://b.example/cafe", http(LATIN1_PAGE, "Content-Type: text/html")),
    (
        "response",
        "https://c.example/paper.pdf",
        http(b"%PDF-1.4 ...", "Content-Type: application/pdf"),
    ),
    ("response", "https://d.example/gone", http(b"<p>Not here.</p>", HTML, status="404 Not Found")),
    (
        "response",
        "https://e.example/packed",
        http(
            chunked(gzip.compress(b"<p>Sent gzip-compressed and chunked.</p>", mtime=0)),
            HTML,
            "Content-Encoding: gzip",
            "Transfer-Encoding: chunked",
        ),
    ),
    (
        "response",
        "https://f.example/bad-gzip",
        http(b"\x1f\x8bnot gzip", HTML, "Content-Encoding: gzip"),
    ),
    ("response", "https://g.example/binary", http(PNG, HTML)),
    ("response", "https://h.example/script", http(b"<html><script>run()</script></html>", HTML)),
    ("response", None, http(b"<p>A page without its address.</p>", HTML)),
    ("response", "https://i.example/no-http", b"this is no HTTP response\r\n"),
    (
        "response",
        "https://j.example/header-wins",
        # The HTTP charset outranks a wrong <meta> charset (HTML standard, encoding sniffing).
        http('<meta charset="iso-8859-1"><p>Grüße aus München.</p>'.encode(), HTML),
    ),
    ("response", "https://k.example/untyped", http(b"<!DOCTYPE html><p>No Content-Type.</p>")),
    ("metadata", "https://a.example/rivers", b"fetchTimeMs: 12\r\n"),
]
EXPECTED_DOCS = [
    ("https://a.example/rivers", ARTICLE),
    ("https://b.example/cafe", LATIN1_TEXT),
    ("https://e.example/packed", "Sent gzip-compressed and chunked."),
    ("https://j.example/header-wins", "Grüße aus München."),
    ("https://k.example/untyped", "No Content-Type."),
]
EXPECTED_COUNTS = Counter(
    not_html=1,
    http_status=1,
    undecodable=2,  # the corrupt gzip coding and the binary body
    no_text=1,
    broken_record=2,  # no WARC-Target-URI; no HTTP status line
    warc_warcinfo_records=1,
    warc_request_records=1,
    warc_metadata_records=1,
)


def warc_records(records=RECORDS) -> list[bytes]:
    return [warc_record(k, block, uri, i) for i, (k, uri, block) in enumerate(records)]


def write_warc(path, compression: str = "", records=RECORDS) -> None:
    """Write the records plain, gzip per record ("gz") or whole ("gz-whole"), bz2, xz, zst, lz4."""
    parts = warc_records(records)
    data = b"".join(parts)
    if compression == "gz":
        path.write_bytes(b"".join(gzip.compress(p, mtime=0) for p in parts))
    elif compression == "gz-whole":
        path.write_bytes(gzip.compress(data, mtime=0))
    elif compression == "bz2":
        path.write_bytes(bz2.compress(data))
    elif compression == "xz":
        path.write_bytes(lzma.compress(data))
    elif compression == "zst":
        path.write_bytes(zstandard.compress(data))
    elif compression == "lz4":
        writer = Lz4Writer(str(path))
        writer.write(data)
        writer.close()
    else:
        path.write_bytes(data)


# ----------------------------------------------------------------------------- WARC


@pytest.mark.parametrize(
    "compression, name",
    [
        ("", "pages.warc"),
        ("gz", "pages.warc.gz"),
        ("gz-whole", "pages.warc.gz"),
        ("bz2", "pages.warc.bz2"),
        ("xz", "pages.warc.xz"),
        ("zst", "pages.warc.zst"),
        ("lz4", "pages.warc.lz4"),
    ],
)
def test_warc_pages_extracted_and_every_skip_counted(cwd, compression, name):
    write_warc(cwd / name, compression)
    assert resolve_inputs(spec(name))[0].format == "warc"
    out, counts, tally = docs(spec(name))
    assert out == EXPECTED_DOCS
    assert counts == EXPECTED_COUNTS
    assert tally.examples["not_html"] == [
        {"source": "https://c.example/paper.pdf", "text": "application/pdf"}
    ]
    assert tally.examples["http_status"][0]["text"] == "HTTP/1.1 404 Not Found"
    assert [e["source"] for e in tally.examples["broken_record"]] == [
        f"{name}:11",  # the record number, when there is no address
        "https://i.example/no-http",
    ]


def test_main_content_removes_boilerplate_and_options_reach_the_extractor(cwd):
    assert extract_text(PAGE) == ARTICLE
    whole = extract_text(PAGE, ExtractOptions(main_content=False))
    for boilerplate in ("Home", "About us", "Menu Login", "Copyright 2024"):
        assert boilerplate not in ARTICLE and boilerplate in whole
    assert "tracker" not in whole and "color" not in whole  # never script or style
    write_warc(cwd / "p.warc.gz", "gz")
    cfg = {"source": "files", "paths": ["p.warc.gz"], "extract": {"main_content": False}}
    out, _, _ = docs(corpus_spec_from_config("c", cfg))
    assert out[0] == ("https://a.example/rivers", whole)
    cfg["extract"] = {"content_types": ["text/html", "application/pdf"]}
    out, counts, _ = docs(corpus_spec_from_config("c", cfg))
    assert ("https://c.example/paper.pdf", "%PDF-1.4 ...") in out and "not_html" not in counts


def test_decode_page_precedence():
    # <meta> charset; WHATWG maps the iso-8859-1 label to windows-1252.
    assert decode_page(LATIN1_PAGE) == (LATIN1_PAGE.decode("cp1252"), "cp1252", True)
    # HTTP charset over <meta>; a wrong label on UTF-8 text falls back to UTF-8.
    utf8 = '<meta charset="iso-8859-1"><p>Grüße</p>'.encode()
    assert decode_page(utf8, "utf-8")[0].endswith("Grüße</p>")
    assert decode_page(utf8, '"UTF-8"')[1] == "utf-8"  # quoted and upper case
    russian = "<p>Привет, мир: страница в кодировке Windows-1251.</p>".encode("cp1251")
    assert decode_page(russian, "windows-1251")[0] == russian.decode("cp1251")
    # A byte-order mark outranks everything; UTF-16 text is not binary.
    assert decode_page(b"\xef\xbb\xbf<p>bom</p>", "iso-8859-1") == ("<p>bom</p>", "utf-8-sig", True)
    assert decode_page("<p>sixteen</p>".encode("utf-16"))[0] == "<p>sixteen</p>"
    assert decode_page(PNG) is None
    # Bytes invalid in the encoding and in UTF-8: replaced, and said so.
    text, encoding, clean = decode_page(b"<p>caf\xe9 \x81</p>", "windows-1252")
    assert (text, encoding, clean) == ("<p>caf\xe9 \ufffd</p>", "cp1252", False)


def test_invalid_bytes_replaced_or_dropped(cwd):
    body = b"<p>caf\xe9 with an undefined byte \x81 in it.</p>"
    page = http(body, "Content-Type: text/html; charset=windows-1252")
    write_warc(cwd / "w.warc", records=[("response", "https://x.example/", page)])
    out, counts, _ = docs(spec("w.warc"))
    assert out == [("https://x.example/", "caf\xe9 with an undefined byte \ufffd in it.")]
    assert counts == Counter(invalid_bytes_replaced=1)
    out, counts, _ = docs(spec("w.warc", read=ReadOptions(invalid_utf8="drop")))
    assert out == [] and counts == Counter(undecodable=1)


def test_warc_through_the_stage_balances(cwd):
    write_warc(cwd / "pages.warc.gz", "gz")
    filler = [{"text": f"Filler document number {i} for both splits."} for i in range(30)]
    (cwd / "filler.jsonl").write_text("".join(json.dumps(r) + "\n" for r in filler))
    m = prepare_corpus(spec("pages.warc.gz", "filler.jsonl"), cwd / "out", 2, 0.3)
    assert balanced(m) and set(m["removed"]) == set(REMOVAL_REASONS)
    assert m["documents_in"] == len(EXPECTED_DOCS) + 30 + 7
    assert m["documents_out"] == len(EXPECTED_DOCS) + 30
    removed = {r: n for r, n in m["removed"].items() if n}
    assert removed == {k: v for k, v in EXPECTED_COUNTS.items() if not k.startswith("warc_")}
    assert m["removed_bytes"]["not_html"] == len(b"%PDF-1.4 ...")
    assert m["notes"]["warc_request_records"] == 1
    assert m["settings"]["read"]["extract"]["main_content"] is True
    kept = {}
    for s in m["shards"]:
        table = pq.read_table(cwd / "out" / s["path"])
        kept.update(zip(table["source"].to_pylist(), table["text"].to_pylist(), strict=True))
    assert {u: kept[u] for u, _ in EXPECTED_DOCS} == dict(EXPECTED_DOCS)


@pytest.mark.parametrize("compression", ["gz", "zst", "lz4"])
def test_truncated_compressed_warc_follows_read_errors(cwd, compression):
    pages = [
        (
            "response",
            f"https://t.example/{i}",
            http(f"<p>Page number {i} of the archive.</p>".encode(), HTML),
        )
        for i in range(400)
    ]
    name = f"t.warc.{compression}"
    write_warc(cwd / name, compression, records=pages)
    data = (cwd / name).read_bytes()
    (cwd / name).write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CorpusError, match=rf"t\.warc\.{compression}: cannot read after \d+ doc"):
        docs(spec(name))
    out, counts, _ = docs(spec(name, read=ReadOptions(read_errors="skip")))
    assert counts == Counter(unreadable=1) and len(out) < 400
    assert out == [
        (f"https://t.example/{i}", f"Page number {i} of the archive.") for i in range(len(out))
    ]
    if compression == "gz":  # one gzip member per record: the pages before the damage are kept
        assert len(out) > 100
        m = prepare_corpus(spec(name, read=ReadOptions(read_errors="skip")), cwd / "out", 1, 0.5)
        assert m["removed"]["unreadable"] == 1 and m["documents_out"] == len(out) and balanced(m)


def test_truncated_plain_warc_names_the_record(cwd):
    write_warc(cwd / "t.warc")
    data = (cwd / "t.warc").read_bytes()
    cut = data.index(b"No Content-Type.")
    (cwd / "t.warc").write_bytes(data[:cut])
    with pytest.raises(
        CorpusError,
        match=r"t\.warc: cannot read after 4 documents \(EOFError: WARC record 14 holds \d+ "
        r"bytes, its header declares Content-Length \d+ \(truncated file\)",
    ):
        docs(spec("t.warc"))
    out, counts, _ = docs(spec("t.warc", read=ReadOptions(read_errors="skip")))
    assert out == EXPECTED_DOCS[:4] and counts["unreadable"] == 1


def test_invalid_warc_header_and_empty_files(cwd):
    parts = warc_records()
    (cwd / "junk.warc").write_bytes(parts[2] + b"not a WARC record at all\r\n\r\n" + parts[3])
    with pytest.raises(CorpusError, match=r"junk\.warc: cannot read after 1 documents"):
        docs(spec("junk.warc"))
    (cwd / "empty.warc").write_bytes(b"")
    (cwd / "empty.warc.gz").write_bytes(gzip.compress(b"", mtime=0))
    (cwd / "empty.html").write_bytes(b"")
    out, counts, _ = docs(spec("empty.*"))
    assert out == [] and counts == Counter(empty_file=3)


# ----------------------------------------------------------------------------- HTML files


def test_html_files(cwd):
    (cwd / "rivers.html").write_text(PAGE)
    (cwd / "cafe.htm.gz").write_bytes(gzip.compress(LATIN1_PAGE, mtime=0))
    (cwd / "script.xhtml").write_text("<html><body><script>only()</script></body></html>")
    (cwd / "binary.html").write_bytes(PNG)
    out, counts, tally = docs(spec("*"))
    assert out == [("cafe.htm.gz", LATIN1_TEXT), ("rivers.html", ARTICLE)]
    assert counts == Counter(undecodable=1, no_text=1)
    assert tally.examples["undecodable"][0]["source"] == "binary.html"
    # format: html reads any extension as one page.
    (cwd / "page.txt").write_text(PAGE)
    assert docs(spec("page.txt", format="html"))[0] == [("page.txt", ARTICLE)]


def test_file_formats_by_extension():
    assert [file_format(n) for n in ("a.html", "a.HTM", "a.xhtml.zst", "a.warc", "a.warc.lz4")] == [
        "html",
        "html",
        "html",
        "warc",
        "warc",
    ]
    with pytest.raises(CorpusError, match=r"a\.arc\.gz: ARC archives \(convert them to WARC\)"):
        file_format("a.arc.gz")
    with pytest.raises(CorpusError, match=r"a\.jsonl\.lz4: unsupported file type"):
        file_format("a.jsonl.lz4")


def test_extract_config_is_checked():
    base = {"source": "files", "paths": ["x.warc"]}
    s = corpus_spec_from_config("c", {**base, "extract": {"links": True}})
    assert s.read.extract == ExtractOptions(links=True)
    assert corpus_spec_from_config("c", base).read.extract == ExtractOptions()
    with pytest.raises(CorpusError, match=r"corpora\.c\.extract\.main: unknown key"):
        corpus_spec_from_config("c", {**base, "extract": {"main": False}})
    with pytest.raises(CorpusError, match=r"corpora\.c\.extract\.links: expected true or false"):
        corpus_spec_from_config("c", {**base, "extract": {"links": "yes"}})
    with pytest.raises(CorpusError, match=r"corpora\.c\.extract: expected a mapping"):
        corpus_spec_from_config("c", {**base, "extract": True})


# ----------------------------------------------------------------------------- language


def test_language_of_real_sentences():
    detector = LanguageFilter(keep=("en", "de"), min_probability=0.5)
    for code, sentence in SENTENCES.items():
        language, probability = detector.identify(sentence)
        assert language == code and probability > 0.9, (code, language, probability)
        assert detector(sentence) == (code, None if code in ("en", "de") else "language")
    strict = LanguageFilter(keep=("es",), min_probability=0.99)
    assert strict(SENTENCES["es"]) == ("es", "language")  # right language, below the threshold
    assert LanguageFilter(keep=("es",), min_probability=0.9)(SENTENCES["es"]) == ("es", None)


def test_language_filter_through_the_stage(cwd):
    english = [
        f"This is English sentence number {i} about the weather in the garden today."
        for i in range(30)
    ]
    records = [{"text": t} for t in [*SENTENCES.values(), *english]]
    (cwd / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = {"source": "files", "paths": ["mixed.jsonl"], "language": {"keep": ["en", "de"]}}
    s = corpus_spec_from_config("c", cfg)
    assert s.language == LanguageFilter(keep=("en", "de"), min_probability=0.5)
    m = prepare_corpus(s, cwd / "out", 1, 0.3)
    assert balanced(m)
    assert m["removed"]["language"] == 4 and m["documents_out"] == 2 + 30
    assert m["removed_bytes"]["language"] == sum(
        len(SENTENCES[c].encode()) for c in ("fr", "es", "ja", "ru")
    )
    assert {k: v for k, v in m["notes"].items() if k.startswith("language_")} == {
        "language_kept.de": 1,
        "language_kept.en": 31,
        "language_removed.es": 1,
        "language_removed.fr": 1,
        "language_removed.ja": 1,
        "language_removed.ru": 1,
    }
    assert m["examples"]["language"][0] == {"source": "mixed.jsonl:3", "text": SENTENCES["fr"]}
    assert m["settings"]["language"] == {"keep": ["en", "de"], "min_probability": 0.5}
    report = (cwd / "out" / "filter_report.csv").read_text().splitlines()
    assert any(line.startswith("language,4,") for line in report)
    # Off by default: every document is kept.
    off = prepare_corpus(spec("mixed.jsonl"), cwd / "off", 1, 0.3)
    assert off["removed"]["language"] == 0 and off["documents_out"] == 36
    assert off["settings"]["language"] is None


def test_language_config_is_checked(cwd):
    base = {"source": "files", "paths": ["mixed.jsonl"]}
    assert corpus_spec_from_config("c", {**base, "language": True}).language == LanguageFilter()
    assert corpus_spec_from_config("c", {**base, "language": False}).language is None
    with pytest.raises(CorpusError, match=r"corpora\.c\.language\.keep: expected a list of ISO"):
        corpus_spec_from_config("c", {**base, "language": {"keep": ["English"]}})
    with pytest.raises(CorpusError, match=r"corpora\.c\.language\.min_probability: must be in"):
        corpus_spec_from_config("c", {**base, "language": {"min_probability": 2}})
    with pytest.raises(CorpusError, match=r"corpora\.c\.language\.threshold: unknown key"):
        corpus_spec_from_config("c", {**base, "language": {"threshold": 0.5}})
    # A well-formed code the model does not know is named when the model is loaded.
    (cwd / "mixed.jsonl").write_text(json.dumps({"text": SENTENCES["en"]}) + "\n")
    s = corpus_spec_from_config("c", {**base, "language": {"keep": ["xx"]}})
    with pytest.raises(CorpusError, match=r"corpora\.c\.language\.keep: \['xx'\] not among"):
        prepare_corpus(s, cwd / "out", 1, 0.5)


def test_schema_accepts_the_web_and_language_keys_with_the_library_defaults():
    root = Path(__file__).resolve().parents[1]
    schema = str(root / "workflow" / "schemas" / "config.schema.yaml")
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    config["corpora"]["web"] = {
        "source": "files",
        "paths": ["crawl/*.warc.gz"],
        "format": "warc",
        "extract": {},
        "language": {"keep": ["en", "de"], "min_probability": 0.6},
    }
    validate(config, schema)
    web = config["corpora"]["web"]
    s = corpus_spec_from_config("web", web)
    assert s.read.extract == ExtractOptions()  # the schema's defaults are the library's
    assert s.language == LanguageFilter(keep=("en", "de"), min_probability=0.6)
    for bad, word in (
        ({"extract": {"boilerplate": True}}, "boilerplate"),
        ({"language": "en"}, "en"),
    ):
        config["corpora"]["web"] = {"source": "files", "paths": ["x.html"], **bad}
        with pytest.raises(WorkflowError, match=word):
            validate(config, schema)


@pytest.mark.e2e
def test_warc_corpus_through_the_snakemake_jobs(tmp_path):
    from conftest import TINY_CONFIG, run_snakemake

    english = [
        f"<p>Report {i}: the council met on day {i} and agreed to repair the old bridge.</p>"
        for i in range(20)
    ]
    records = [
        ("request", "https://r.example/0", b"GET /0 HTTP/1.1\r\n\r\n"),
        *(
            ("response", f"https://r.example/{i}", http(page.encode(), HTML))
            for i, page in enumerate(english)
        ),
        ("response", "https://r.example/de", http(f"<p>{SENTENCES['de']}</p>".encode(), HTML)),
        ("response", "https://r.example/pdf", http(PNG, "Content-Type: image/png")),
    ]
    write_warc(tmp_path / "crawl.warc.gz", "gz", records=records)
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["corpora"] = {
        "crawl": {
            "source": "files",
            "paths": [str(tmp_path / "crawl.warc.gz")],
            "language": {"keep": ["en"]},
        }
    }
    cfg["eval"]["heldout_corpora"] = []
    cfg["data"].update({"val_fraction": 0.3, "num_shards": 1})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    workdir = tmp_path / "w"
    run_snakemake(workdir, "results/data/crawl/manifest.json", config=config)
    m = json.loads((workdir / "results/data/crawl/manifest.json").read_text())
    assert m["documents_in"] == 22 and m["documents_out"] == 20
    assert {r: n for r, n in m["removed"].items() if n} == {"language": 1, "not_html": 1}
    assert m["notes"]["language_removed.de"] == 1 and m["notes"]["warc_request_records"] == 1
    sources = []
    for s in m["shards"]:
        sources += pq.read_table(workdir / "results/data/crawl" / s["path"])["source"].to_pylist()
    assert sorted(sources) == sorted(f"https://r.example/{i}" for i in range(20))
