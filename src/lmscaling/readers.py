"""Raw corpus inputs: which files a corpus has, and how each format becomes documents.

A corpus names local files, globs, directories and pinned URLs; :func:`resolve_files` turns them
into a sorted list of :class:`InputFile` without reading any of them (cheap enough for workflow
parse time). :func:`read_file` streams ``(source_id, text)`` documents out of one file:

- compression is recognized by its magic bytes (gzip, zstd, bzip2, xz), so a ``.json.gz`` that
  holds JSON lines or a file with a misleading extension is still read;
- the decompressed head is sniffed for a UTF-8 BOM (dropped), UTF-16/32 (by BOM or by the
  NUL-byte pattern of ASCII text: transcoded, skipped or an error, by policy) and binary data
  (many NUL or undecodable bytes: the file is skipped and counted);
- text formats are split into records on ``\\n`` only, so U+2028/U+2029 (and U+0085) inside a
  record or a JSON string stay text;
- every record that does not become a document is counted in a :class:`Tally` with its reason,
  its bytes and an example; nothing is dropped silently.

Formats: plain text (one document per file, per line or per blank-line-separated block), JSON
Lines (``.jsonl``/``.ndjson``, and ``.json`` holding either JSON lines or one JSON array),
Parquet (``string`` or ``large_string`` column, read in record batches), CSV and TSV (a header
row names the columns), and web pages: HTML (one page per file) and WARC archives (one document
per HTML response), whose main text is extracted by :mod:`lmscaling.web`. ARC archives are
refused by name.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import glob
import gzip
import io
import json
import logging
import lzma
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

log = logging.getLogger(__name__)

FORMATS = ("auto", "text", "jsonl", "json", "parquet", "csv", "tsv", "html", "warc")
"""``format`` of a corpus: ``auto`` picks one per file from its extension."""

TEXT_UNITS = ("file", "line", "paragraph")
"""What one document is in a plain-text file: the whole file, one line, or one block of lines
separated by blank (whitespace-only) lines."""

READ_REASONS = (
    "empty_file",
    "binary",
    "utf16",
    "unreadable",
    "invalid_json",
    "missing_text_field",
    "invalid_utf8",
    "not_html",
    "http_status",
    "broken_record",
    "undecodable",
    "no_text",
)
"""Reasons a record is removed while reading (see :func:`read_file`; the last five are the web
formats', see :mod:`lmscaling.web`)."""

_EXTENSIONS = {
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".py": "text",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".warc": "warc",
}
_COMPRESSION_SUFFIXES = (".gz", ".zst", ".zstd", ".bz2", ".xz")
_REFUSED = {".arc": "ARC archives (convert them to WARC)"}
_SUPPORTED = (
    ".txt .text .md .py (plain text), .jsonl .ndjson .json (JSON lines or a JSON array), "
    ".parquet, .csv, .tsv, .html .htm .xhtml (one page per file), .warc; each but .parquet "
    "optionally .gz .zst .bz2 .xz (.warc also .lz4)"
)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_SNIFF_BYTES = 1 << 16
_PARQUET_BATCH_ROWS = 2048
_CSV_FIELD_LIMIT = 2**31 - 1


class CorpusError(ValueError):
    """Bad corpus input or config; the message names the file, line/record or config key."""


@dataclass(frozen=True)
class InputFile:
    """One input of a corpus.

    Attributes:
        name: how the file appears in source ids and messages: the path as configured (glob
            expanded), the path relative to the stdlib root, or the URL.
        format: one of :data:`FORMATS` except ``auto``, or ``pydoc-topics`` (the topic texts of
            ``pydoc_data.topics``, no file).
        path: local path to read ("" for a remote file until it is fetched).
        url: the remote address ("" for a local file).
        sha256: expected hex sha256 of the fetched bytes (remote files), checked before reading.
        size: bytes on disk (-1 when not known at resolve time).
    """

    name: str
    format: str
    path: str = ""
    url: str = ""
    sha256: str = ""
    size: int = -1

    def to_dict(self) -> dict:
        """Plain-dict form (for workflow params and JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> InputFile:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


@dataclass(frozen=True)
class ExtractOptions:
    """How web pages become text (keys of ``corpora.<name>.extract``; formats html and warc).

    The booleans are the options of Resiliparse's ``extract_plain_text``, with its defaults
    except ``main_content``.

    Attributes:
        main_content: keep only the main content: navigation, headers, footers, sidebars and
            other boilerplate blocks are removed by Resiliparse's heuristics.
        preserve_formatting: keep line breaks between blocks and paragraphs (the line and
            paragraph structure the Gopher and C4 filters read).
        list_bullets: prefix list items with a bullet.
        alt_texts: keep the alternative text of images.
        links: append link targets to link texts.
        form_fields: keep the text of form fields.
        noscript: keep the content of ``<noscript>`` elements.
        comments: keep comment sections (of blogs, forums) as main content.
        content_types: HTTP ``Content-Type`` values (without parameters) of WARC responses that
            are extracted; a response without one is extracted when its first bytes look like
            HTML.
    """

    main_content: bool = True
    preserve_formatting: bool = True
    list_bullets: bool = True
    alt_texts: bool = True
    links: bool = False
    form_fields: bool = False
    noscript: bool = False
    comments: bool = True
    content_types: tuple[str, ...] = ("text/html", "application/xhtml+xml")


@dataclass(frozen=True)
class ReadOptions:
    """How records are read from files (keys of ``corpora.<name>``).

    Attributes:
        text_field: JSON key / Parquet or CSV column holding the text.
        text_unit: one of :data:`TEXT_UNITS`, for plain-text files.
        invalid_utf8: ``replace`` (bad bytes become U+FFFD; the document is kept and counted in
            the notes) or ``drop`` (the document is removed, reason ``invalid_utf8``).
        utf16: ``transcode`` (UTF-16/32 files are decoded and read as text), ``skip`` (the file
            is removed as one document, reason ``utf16``) or ``error`` (:class:`CorpusError`).
        read_errors: ``error`` (a truncated or corrupt file raises :class:`CorpusError` naming
            the file and the last record read) or ``skip`` (documents read before the damage are
            kept, the rest of the file counts as one removal, reason ``unreadable``).
        strip_bom: drop a UTF-8 byte-order mark at the start of a file.
        extract: how web pages (formats html and warc) become text.
    """

    text_field: str = "text"
    text_unit: str = "file"
    invalid_utf8: str = "replace"
    utf16: str = "transcode"
    read_errors: str = "error"
    strip_bom: bool = True
    extract: ExtractOptions = field(default_factory=ExtractOptions)


@dataclass
class Tally:
    """Removals per reason (documents and UTF-8 bytes), free-form notes, and examples.

    ``examples[reason]`` keeps the first ``max_examples`` removals in input order: source id and
    the first ``example_chars`` characters of the text.
    """

    max_examples: int = 3
    example_chars: int = 200
    documents: Counter = field(default_factory=Counter)
    bytes: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)

    def remove(self, reason: str, source: str, text: str, nbytes: int) -> None:
        """Count one removed document of ``nbytes`` bytes."""
        self.documents[reason] += 1
        self.bytes[reason] += nbytes
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.max_examples:
            shown.append({"source": source, "text": text[: self.example_chars]})

    def note(self, key: str, n: int = 1) -> None:
        """Count something that changed a document without removing it."""
        self.notes[key] += n

    def to_dict(self) -> dict:
        """JSON form: ``{"removed": {reason: {"documents", "bytes"}}, "notes", "examples"}``."""
        return {
            "removed": {
                r: {"documents": self.documents[r], "bytes": self.bytes[r]}
                for r in sorted(self.documents)
            },
            "notes": dict(sorted(self.notes.items())),
            "examples": {r: self.examples[r] for r in sorted(self.examples)},
        }

    def merge(self, d: dict) -> None:
        """Add the counts of a :meth:`to_dict` result (examples kept up to ``max_examples``)."""
        for reason, c in d["removed"].items():
            self.documents[reason] += c["documents"]
            self.bytes[reason] += c["bytes"]
        self.notes.update(d["notes"])
        for reason, shown in d["examples"].items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(shown[: max(0, self.max_examples - len(mine))])


# ----------------------------------------------------------------------------- resolving


def file_format(name: str, configured: str = "auto") -> str:
    """The format of file ``name``: ``configured`` unless ``auto``, else from the extension.

    Compression suffixes (``.gz .zst .zstd .bz2 .xz``) are skipped first. Parquet must not be
    compressed from outside (it compresses its own pages).

    Raises:
        CorpusError: naming the file, for an unknown extension or a refused type (WARC/HTML).
    """
    lower = urlparse(name).path.lower() if "://" in name else name.lower()
    stem, suffix = os.path.splitext(lower)
    compressed = suffix in _COMPRESSION_SUFFIXES or (suffix == ".lz4" and stem.endswith(".warc"))
    if compressed:
        stem, suffix = os.path.splitext(stem)
    if configured != "auto":
        kind = configured
    elif suffix in _REFUSED:
        raise CorpusError(
            f"{name}: {_REFUSED[suffix]} are not read by prepare_corpus; supported: {_SUPPORTED}"
        )
    elif suffix not in _EXTENSIONS:
        raise CorpusError(f"{name}: unsupported file type; supported: {_SUPPORTED}")
    else:
        kind = _EXTENSIONS[suffix]
    if kind == "parquet" and compressed:
        raise CorpusError(f"{name}: a compressed .parquet cannot be read; decompress it")
    return kind


def resolve_files(
    key: str,
    paths: Sequence[str],
    remote: Sequence[dict],
    configured_format: str,
    selected,
) -> list[InputFile]:
    """The sorted, de-duplicated input files named by ``paths`` and ``remote``.

    Args:
        key: config key of the corpus (``corpora.<name>``), for messages.
        paths: files, glob patterns (``**`` recursive) or directories (every file below,
            hidden files and folders skipped).
        remote: ``[{"url": ..., "sha256": ...}]``; each becomes one input, never listed.
        configured_format: ``format`` of the corpus (:data:`FORMATS`).
        selected: predicate on the path as expanded (include/exclude globs).

    Returns:
        Local files sorted by POSIX path, then remote files in config order.

    Raises:
        CorpusError: a missing file, an empty glob or directory, an unsupported extension, a
            bad remote entry, or nothing left after include/exclude (naming the key).
    """
    found: dict[str, Path] = {}
    for entry in paths:
        if any(c in entry for c in "*?["):
            if "**" in entry:  # glob follows links to folders: a loop would never end
                loop = _link_loop(entry.split("**", 1)[0] or ".")
                if loop is not None:
                    raise CorpusError(
                        f"{key}.paths: pattern {entry!r}: {loop} links back to a folder "
                        "above it, so ** would never end; give the folder itself as the "
                        "path (read once), or remove the link"
                    )
            matches = [Path(p) for p in glob.glob(entry, recursive=True) if not os.path.isdir(p)]
            if not matches:
                raise CorpusError(f"{key}.paths: pattern {entry!r} matches no file")
        elif os.path.isdir(entry):
            matches = _walk(entry)
            if not matches:
                raise CorpusError(f"{key}.paths: directory {entry!r} holds no file")
        elif os.path.lexists(entry):
            matches = [Path(entry)]
        else:
            raise CorpusError(f"{key}.paths: file {entry!r} does not exist")
        for p in matches:
            found[p.as_posix()] = p
    files = []
    for name, p in sorted(found.items()):
        if not selected(name):
            continue
        if not p.is_file():  # a FIFO would block the reader; a broken link has no bytes
            kind = "a broken symbolic link" if not p.exists() else "not a regular file"
            raise CorpusError(
                f"{key}.paths: {name} is {kind}; remove it, or leave it out with {key}.exclude"
            )
        files.append(
            InputFile(
                name=name,
                format=file_format(name, configured_format),
                path=str(p),
                size=p.stat().st_size,
            )
        )
    for i, entry in enumerate(remote):
        where = f"{key}.remote[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"url", "sha256"}:
            raise CorpusError(f"{where}: expected a mapping with keys url and sha256")
        url, digest = entry["url"], entry["sha256"]
        if not isinstance(url, str) or urlparse(url).scheme not in ("http", "https"):
            raise CorpusError(f"{where}.url: expected an http:// or https:// URL, got {url!r}")
        if not isinstance(digest, str) or not re.fullmatch("[0-9a-f]{64}", digest):
            raise CorpusError(f"{where}.sha256: expected 64 lowercase hex digits")
        files.append(
            InputFile(name=url, format=file_format(url, configured_format), url=url, sha256=digest)
        )
    if not files:
        raise CorpusError(f"{key}.include/exclude: no input file is selected")
    return files


def _link_loop(base: str) -> Path | None:
    """A symbolic link below ``base`` (the folder part of a pattern) that points to a folder
    holding it, or None."""
    base = (os.path.dirname(base) if not os.path.isdir(base) else base) or "."
    seen = set()
    for dirpath, dirnames, _ in os.walk(base, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # reached again through another link: read once
            dirnames[:] = []
            continue
        seen.add(real)
        # the real folders on the way down from base, links resolved: a link to one of them
        # (or to a folder holding one) sends glob round in a circle
        path, above = Path(base), {os.path.realpath(base)}
        for part in Path(dirpath).relative_to(base).parts:
            path = path / part
            above.add(os.path.realpath(path))
        for d in dirnames:
            link = Path(dirpath, d)
            if link.is_symlink():
                target = os.path.realpath(link).rstrip(os.sep) + os.sep
                if any((a + os.sep).startswith(target) for a in above):
                    return link
    return None


def _walk(directory: str) -> list[Path]:
    """Every entry below ``directory`` that is not a directory, hidden ones left out; symbolic
    links to directories are followed, each directory read once (a link back up the tree
    would loop)."""
    out, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath, f) for f in filenames if not f.startswith(".")]
    return out


# ----------------------------------------------------------------------------- byte streams


class _ZstdReader(io.RawIOBase):
    """Decompressed bytes of a (multi-frame) zstd file; EOFError when the last frame is cut."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._in_frame = False
        self._pending = b""
        self._position = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        """Decompressed bytes returned so far (FastWARC asks a stream for its position)."""
        return self._position

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = self._fh.read(1 << 16)
            if not chunk:
                if self._in_frame:
                    raise EOFError("zstd stream ends inside a frame (truncated file)")
                return 0
            while chunk:
                self._pending += self._obj.decompress(chunk)
                self._in_frame = not self._obj.eof
                chunk = self._obj.unused_data if self._obj.eof else b""
                if self._obj.eof:
                    self._obj = self._dctx.decompressobj()
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self._position += n
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def open_decompressed(path: str) -> io.BufferedReader:
    """Open ``path`` for binary reading, decompressing gzip/zstd/bzip2/xz by magic bytes."""
    raw = open(path, "rb")
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        stream = gzip.GzipFile(fileobj=raw, mode="rb")
    elif magic.startswith(b"\x28\xb5\x2f\xfd"):
        stream = _ZstdReader(raw)
    elif magic.startswith(b"BZh"):
        stream = bz2.BZ2File(raw, "rb")
    elif magic.startswith(b"\xfd7zXZ\x00"):
        stream = lzma.LZMAFile(raw, "rb")
    else:
        return io.BufferedReader(raw, _SNIFF_BYTES)  # type: ignore[arg-type]
    reader = io.BufferedReader(stream, _SNIFF_BYTES)  # type: ignore[arg-type]
    if stream is not raw:
        # Closing the decompressor does not close a file object it was handed.
        reader.close = _closing_both(reader.close, raw.close)  # type: ignore[method-assign]
    return reader


def _closing_both(first, second):
    def close() -> None:
        try:
            first()
        finally:
            second()

    return close


def sniff_encoding(head: bytes) -> str:
    """Encoding of a text stream from its first bytes.

    Returns ``utf-8-sig`` (UTF-8 BOM), ``utf-32`` / ``utf-16`` (their BOMs), ``utf-16-le`` /
    ``utf-16-be`` (no BOM, but NUL bytes in every other position as ASCII text in UTF-16 has),
    ``binary`` (NUL bytes in more than 1% of the bytes, or more than 30% of the characters not
    decodable as UTF-8: not text) or ``utf-8`` (a stray NUL or bad byte is text with a flaw,
    handled by cleaning and the ``invalid_utf8`` policy).
    """
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "utf-32"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    half = len(head) // 2
    even, odd = head[0 : 2 * half : 2].count(0), head[1 : 2 * half : 2].count(0)
    if odd > 0.3 * half and even < 0.02 * half:
        return "utf-16-le"
    if even > 0.3 * half and odd < 0.02 * half:
        return "utf-16-be"
    if even + odd > len(head) // 100:
        return "binary"
    if head.isascii():
        return "utf-8"
    decoded = head.decode("utf-8", errors="replace")
    bad = decoded.count("\ufffd") - head.count("\ufffd".encode())
    return "binary" if bad > 0.3 * len(decoded) else "utf-8"


# ----------------------------------------------------------------------------- reading


def read_file(
    f: InputFile, opts: ReadOptions, tally: Tally, key: str = "corpora"
) -> Iterator[tuple[str, str]]:
    """Stream ``(source_id, text)`` for every document of one input file, in file order.

    Source ids: ``name`` for a whole-file document; ``name:line`` (1-based) for a line, a
    paragraph (its first line) or a JSON line; ``name:row`` (0-based) for Parquet rows, JSON
    array items and CSV records (0-based, header excluded); for web formats see
    :func:`lmscaling.web.read_html` and :func:`lmscaling.web.read_warc`. The text is decoded,
    not cleaned.

    Counted in ``tally`` (reason, bytes, example), never dropped silently: ``empty_file`` (no
    byte after decompression; one removal), ``binary`` (see :func:`sniff_encoding`: the file is
    one removal), ``utf16`` (policy ``skip``), ``invalid_json``, ``missing_text_field`` (a
    record without a string value), ``invalid_utf8`` (policy ``drop``), ``unreadable`` (policy
    ``skip``), and for web pages ``not_html``, ``http_status``, ``broken_record``,
    ``undecodable``, ``no_text``. Notes: ``invalid_utf8_replaced``, ``utf16_transcoded``.

    Raises:
        CorpusError: naming the file (and the last record read) for a truncated or corrupt file
            (a WARC record cut short included) under ``read_errors: error``, a UTF-16 file
            under ``utf16: error``, a Parquet/CSV file without the text column, or a
            non-string Parquet column.
    """
    done = 0
    try:
        if f.format == "pydoc-topics":
            from pydoc_data.topics import topics

            for topic in sorted(topics):
                yield f"{f.name}:{topic}", topics[topic]
            return
        if f.format == "parquet":
            for doc in _read_parquet(f, opts, tally, key):
                done += 1
                yield doc
            return
        if f.format in ("html", "warc"):
            # Imported here: parsing a config (the workflow driver) does not need the extractors.
            from lmscaling import web

            pages = (web.read_warc if f.format == "warc" else web.read_html)(f, opts, tally)
            for doc in pages:
                done += 1
                yield doc
            return
        with open_decompressed(f.path) as fh:
            lines = _text_lines(f, fh, opts, tally)
            if lines is None:
                return
            reader = {
                "text": _read_text,
                "jsonl": _read_jsonl,
                "json": _read_json,
                "csv": _read_csv,
                "tsv": _read_csv,
            }[f.format]
            for doc in reader(f, lines, opts, tally, key):
                done += 1
                yield doc
    except (OSError, EOFError, zstandard.ZstdError, lzma.LZMAError, pa.ArrowException) as exc:
        what = f"{type(exc).__name__}: {exc}"
        if opts.read_errors == "skip":
            log.warning(
                "%s: skipped the rest of the file after %d documents (%s)", f.name, done, what
            )
            tally.remove("unreadable", f.name, what, 0)
            return
        raise CorpusError(
            f"{f.name}: cannot read after {done} documents ({what}); set {key}.read_errors: "
            "skip to keep what was read and count the file as unreadable"
        ) from exc


def _text_lines(
    f: InputFile, fh: io.BufferedReader, opts: ReadOptions, tally: Tally
) -> Iterator[tuple[int, bytes]] | None:
    """``(line_number, UTF-8 bytes)`` of a decompressed text stream, or None when skipped."""
    head = fh.peek(_SNIFF_BYTES)[:_SNIFF_BYTES]
    if not head:
        tally.remove("empty_file", f.name, "", 0)
        return None
    encoding = sniff_encoding(head)
    if encoding == "binary":
        log.warning("%s: binary data (NUL bytes), skipped", f.name)
        tally.remove("binary", f.name, "", max(f.size, len(head)))
        return None
    if encoding.startswith("utf-16") or encoding == "utf-32":
        if opts.utf16 == "error":
            raise CorpusError(
                f"{f.name}: {encoding} text; set utf16: transcode (or skip) for this corpus"
            )
        if opts.utf16 == "skip":
            log.warning("%s: %s text, skipped (utf16: skip)", f.name, encoding)
            tally.remove("utf16", f.name, "", max(f.size, len(head)))
            return None
        tally.note("utf16_transcoded")
        text = io.TextIOWrapper(fh, encoding=encoding, errors="replace", newline="\n")
        return enumerate((line.encode("utf-8") for line in text), start=1)
    if encoding == "utf-8-sig" and opts.strip_bom:
        fh.read(3)
    return enumerate(fh, start=1)


def _decode(data: bytes, source: str, opts: ReadOptions, tally: Tally) -> str | None:
    """UTF-8 text of ``data`` under the ``invalid_utf8`` policy; None when dropped."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        if opts.invalid_utf8 == "drop":
            tally.remove("invalid_utf8", source, text, len(data))
            return None
        tally.note("invalid_utf8_replaced")
        return text


def _fix_surrogates(value: str, source: str, opts: ReadOptions, tally: Tally) -> str | None:
    """Lone surrogates (from ``\\udXXX`` JSON escapes or bad bytes) under the same policy."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")  # fails exactly on lone surrogates, at memory speed
        return value
    except UnicodeEncodeError:
        pass
    fixed = _SURROGATE_RE.sub("\ufffd", value)
    if opts.invalid_utf8 == "drop":
        try:  # the bytes as read: undecodable bytes are escaped as U+DC80..U+DCFF
            nbytes = len(value.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError:  # lone surrogates from JSON escapes
            nbytes = len(value.encode("utf-8", "surrogatepass"))
        tally.remove("invalid_utf8", source, fixed, nbytes)
        return None
    tally.note("invalid_utf8_replaced")
    return fixed


def _read_text(f, lines, opts, tally, key) -> Iterator[tuple[str, str]]:
    if opts.text_unit == "file":
        data = b"".join(line for _, line in lines)
        text = _decode(data, f.name, opts, tally)
        if text is not None:
            yield f.name, text
        return
    if opts.text_unit == "line":
        for lineno, line in lines:
            source = f"{f.name}:{lineno}"
            text = _decode(_strip_eol(line), source, opts, tally)
            if text is not None:
                yield source, text
        return
    block: list[bytes] = []
    start = 0
    for lineno, line in lines:
        if line.strip():
            if not block:
                start = lineno
            block.append(line)
            continue
        if block:
            source = f"{f.name}:{start}"
            text = _decode(b"".join(block).rstrip(b"\r\n"), source, opts, tally)
            if text is not None:
                yield source, text
            block = []
    if block:
        source = f"{f.name}:{start}"
        text = _decode(b"".join(block).rstrip(b"\r\n"), source, opts, tally)
        if text is not None:
            yield source, text


def _strip_eol(line: bytes) -> bytes:
    """``line`` without its ``\n`` or ``\r\n`` terminator."""
    if line.endswith(b"\n"):
        line = line[:-1]
    return line[:-1] if line.endswith(b"\r") else line


def _record_text(record, source, raw_len, opts, tally) -> str | None:
    value = record.get(opts.text_field) if isinstance(record, dict) else None
    if not isinstance(value, str):
        shown = json.dumps(record, ensure_ascii=False)[:200] if record is not None else ""
        tally.remove("missing_text_field", source, shown, raw_len)
        return None
    return _fix_surrogates(value, source, opts, tally)


def _read_jsonl(f, lines, opts, tally, key) -> Iterator[tuple[str, str]]:
    for lineno, raw in lines:
        if not raw.strip():
            continue
        source = f"{f.name}:{lineno}"
        line = _decode(raw, source, opts, tally)
        if line is None:
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            tally.remove("invalid_json", source, line, len(raw))
            continue
        text = _record_text(record, source, len(raw), opts, tally)
        if text is not None:
            yield source, text


def _read_json(f, lines, opts, tally, key) -> Iterator[tuple[str, str]]:
    """A ``.json`` file: one JSON array (read whole) when it starts with ``[``, else JSON lines."""
    first = next(lines, None)
    while first is not None and not first[1].strip():  # blank lines before the first value
        first = next(lines, None)
    if first is None:
        return
    if not first[1].lstrip().startswith(b"["):
        yield from _read_jsonl(f, _chain_first(first, lines), opts, tally, key)
        return
    data = first[1] + b"".join(line for _, line in lines)
    text = _decode(data, f.name, opts, tally)
    if text is None:
        return
    try:
        items = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        tally.remove("invalid_json", f.name, text, len(data))
        return
    for i, item in enumerate(items):
        source = f"{f.name}:{i}"
        if isinstance(item, str):  # an array of strings: each string is a document
            value = _fix_surrogates(item, source, opts, tally)
        else:
            value = _record_text(item, source, len(json.dumps(item).encode()), opts, tally)
        if value is not None:
            yield source, value


def _chain_first(first, rest):
    yield first
    yield from rest


def _read_csv(f, lines, opts, tally, key) -> Iterator[tuple[str, str]]:
    csv.field_size_limit(min(sys.maxsize, _CSV_FIELD_LIMIT))
    decoded = (line.decode("utf-8", errors="surrogateescape") for _, line in lines)
    reader = csv.reader(decoded, delimiter="\t" if f.format == "tsv" else ",")
    try:
        header = next(reader)
    except StopIteration:
        return
    if opts.text_field not in header:
        raise CorpusError(
            f"{f.name}: no column {opts.text_field!r} ({key}.text_field); header: {header[:20]}"
        )
    col = header.index(opts.text_field)
    try:
        for row, record in enumerate(reader):
            source = f"{f.name}:{row}"
            if col >= len(record):
                tally.remove("missing_text_field", source, ",".join(record)[:200], 0)
                continue
            value = _fix_surrogates(record[col], source, opts, tally)
            if value is not None:
                yield source, value
    except csv.Error as exc:
        raise OSError(f"CSV record {reader.line_num}: {exc}") from exc


def _read_parquet(f, opts, tally, key) -> Iterator[tuple[str, str]]:
    field_name = opts.text_field
    with contextlib.closing(pq.ParquetFile(f.path)) as pf:
        schema = pf.schema_arrow
        if field_name not in schema.names:
            raise CorpusError(
                f"{f.name}: no column {field_name!r} ({key}.text_field); columns: {schema.names}"
            )
        dtype = schema.field(field_name).type
        if not (pa.types.is_string(dtype) or pa.types.is_large_string(dtype)):
            raise CorpusError(
                f"{f.name}: column {field_name!r} has type {dtype}, expected string or "
                f"large_string ({key}.text_field)"
            )
        if pf.metadata.num_rows == 0:
            tally.remove("empty_file", f.name, "", 0)
            return
        row = 0
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[field_name]):
            column = batch.column(0)
            try:
                column.validate(full=True)  # UTF-8 check of the whole batch at once
                values = column.to_pylist()
                checked = True
            except pa.ArrowInvalid:
                values = column.cast(pa.large_binary()).to_pylist()
                checked = False
            for value in values:
                source = f"{f.name}:{row}"
                row += 1
                if value is None:
                    tally.remove("missing_text_field", source, "", 0)
                    continue
                text = value if checked else _decode(value, source, opts, tally)
                if text is not None:
                    yield source, text
