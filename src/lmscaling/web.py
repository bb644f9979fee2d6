"""Web pages to text: HTML files and WARC archives, through Resiliparse and FastWARC.

A page becomes one document. Its bytes are decoded (:func:`decode_page`: byte-order mark, then
the HTTP charset, then the ``<meta>`` charset, then detection), and Resiliparse's
``extract_plain_text`` keeps the text a reader sees: by default the main content only, without
navigation, headers, footers, scripts and styles (:class:`lmscaling.readers.ExtractOptions`).

WARC archives (ISO 28500, WARC/1.0 and 1.1; plain or gzip, zstd, lz4, bzip2, xz compressed,
whole-file or per record) are read with FastWARC. Each ``response`` record is one candidate
page, and its ``WARC-Target-URI`` is the document's source id; records of other types
(warcinfo, request, metadata, revisit, ...) hold no page and are counted in the notes as
``warc_<type>_records``.

Removed pages are counted with their reason (bytes: the HTTP payload as stored), never dropped
silently:

- ``not_html``: a response whose ``Content-Type`` is not one of ``extract.content_types`` (or,
  without one, whose first bytes are not HTML);
- ``http_status``: a response whose status is not 2xx (redirects, errors);
- ``broken_record``: a response record without ``WARC-Target-URI``, or whose HTTP header block
  does not parse;
- ``undecodable``: binary data, an unknown or corrupt ``Content-Encoding`` or chunked
  ``Transfer-Encoding``, bytes invalid in the page's encoding under ``invalid_utf8: drop``, or
  HTML the parser rejects;
- ``no_text``: extraction leaves only whitespace (a script-only page, or one that is all
  boilerplate).

A damaged archive (a record cut short by a truncated file, an invalid WARC header block, a
corrupt compressed stream) raises OSError or EOFError, which
:func:`lmscaling.readers.read_file` handles by the ``read_errors`` policy, as for any truncated
compressed file.
"""

from __future__ import annotations

import codecs
import gzip
import io
import zlib
from collections.abc import Iterator

import zstandard
from fastwarc.stream_io import BrotliReader, ChunkedReader
from fastwarc.warc import ArchiveIterator, WarcRecordType
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import detect_encoding, detect_mime, map_encoding_to_html5
from resiliparse.parse.html import HTMLParserException

from lmscaling.readers import (
    ExtractOptions,
    InputFile,
    ReadOptions,
    Tally,
    open_decompressed,
    sniff_encoding,
)

_SNIFF_BYTES = 1 << 16
_UNICODE = ("utf-8-sig", "utf-16", "utf-32", "utf-16-le", "utf-16-be")
_DECODE_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError, ValueError)


def decode_page(body: bytes, charset: str | None = None) -> tuple[str, str, bool] | None:
    """Text of a page's bytes: ``(text, encoding, clean)``, or None for binary data.

    The encoding is, in this order (the precedence of the HTML standard's encoding sniffing):
    a UTF-8/16/32 byte-order mark or the NUL-byte pattern of UTF-16 text; ``charset`` (the
    HTTP ``Content-Type`` parameter) when it names an encoding of the WHATWG Encoding
    Standard; the ``<meta>`` charset in the first 1024 bytes; detection by uchardet. Labels
    are mapped as that standard says (``iso-8859-1`` decodes as ``windows-1252``). When the
    bytes are invalid in that encoding but valid UTF-8 (a wrong label), they are UTF-8;
    otherwise invalid bytes become U+FFFD and ``clean`` is False. Binary data: NUL bytes in
    more than 1% of the first 64 KiB, outside UTF-16/32.
    """
    head = body[:_SNIFF_BYTES]
    encoding = sniff_encoding(head)
    if encoding not in _UNICODE:
        if head.count(0) > len(head) // 100:
            return None
        label = charset.strip().strip("\"'") if charset else ""
        mapped = map_encoding_to_html5(label, fallback_utf8=False) if label else None
        encoding = mapped or detect_encoding(body, from_html_meta=True)
    try:
        codecs.lookup(encoding)
    except LookupError:  # a name this Python has no codec for
        encoding = "utf-8"
    try:
        return body.decode(encoding), encoding, True
    except UnicodeDecodeError:
        pass
    try:
        return body.decode("utf-8"), "utf-8", True
    except UnicodeDecodeError:
        return body.decode(encoding, errors="replace"), encoding, False


def extract_text(html: str, opts: ExtractOptions | None = None) -> str:
    """Plain text of an HTML page with Resiliparse's ``extract_plain_text`` and ``opts``.

    Raises:
        HTMLParserException: when the parser rejects the page.
    """
    opts = ExtractOptions() if opts is None else opts
    return extract_plain_text(
        html,
        preserve_formatting=opts.preserve_formatting,
        main_content=opts.main_content,
        list_bullets=opts.list_bullets,
        alt_texts=opts.alt_texts,
        links=opts.links,
        form_fields=opts.form_fields,
        noscript=opts.noscript,
        comments=opts.comments,
    )


def _page_text(
    body: bytes, charset: str | None, source: str, opts: ReadOptions, tally: Tally
) -> str | None:
    """Decoded and extracted text of one page, or None when removed (and counted)."""
    decoded = decode_page(body, charset)
    if decoded is None:
        tally.remove("undecodable", source, "binary data (NUL bytes)", len(body))
        return None
    html, encoding, clean = decoded
    if not clean:
        if opts.invalid_utf8 == "drop":
            tally.remove("undecodable", source, f"bytes invalid in {encoding}", len(body))
            return None
        tally.note("invalid_bytes_replaced")
    try:
        text = extract_text(html, opts.extract)
    except HTMLParserException as exc:
        tally.remove("undecodable", source, f"HTML parser: {exc}", len(body))
        return None
    if not text.strip():
        tally.remove("no_text", source, html, len(body))
        return None
    return text


def read_html(f: InputFile, opts: ReadOptions, tally: Tally) -> Iterator[tuple[str, str]]:
    """The extracted text of one HTML file (optionally compressed): ``(name, text)`` or nothing.

    Counted: ``empty_file``, ``undecodable``, ``no_text`` (see the module docstring).

    Raises:
        OSError, EOFError: a corrupt or truncated compressed file.
    """
    with open_decompressed(f.path) as fh:
        body = fh.read()
    if not body:
        tally.remove("empty_file", f.name, "", 0)
        return
    text = _page_text(body, None, f.name, opts, tally)
    if text is not None:
        yield f.name, text


def _http_decode(payload: bytes, headers) -> bytes:
    """``payload`` without its chunked ``Transfer-Encoding`` and its ``Content-Encoding``\\s.

    Raises:
        ValueError: an unknown content coding; OSError, EOFError, zlib.error, ZstdError: a
            corrupt or truncated one.
    """
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        payload = ChunkedReader(io.BytesIO(payload)).read()
    codings = [c.strip().lower() for c in (headers.get("Content-Encoding") or "").split(",")]
    for coding in reversed([c for c in codings if c and c != "identity"]):
        if coding in ("gzip", "x-gzip"):
            payload = gzip.decompress(payload)
        elif coding == "deflate":  # zlib-wrapped as the RFC says, or raw as some servers send
            try:
                payload = zlib.decompress(payload)
            except zlib.error:
                payload = zlib.decompress(payload, -zlib.MAX_WBITS)
        elif coding == "br":
            payload = BrotliReader(io.BytesIO(payload)).read()
        elif coding == "zstd":
            obj = zstandard.ZstdDecompressor().decompressobj()
            payload = obj.decompress(payload)
            if not obj.eof:
                raise EOFError("zstd stream ends inside a frame")
        else:
            raise ValueError(f"unknown Content-Encoding {coding!r}")
    return payload


def read_warc(f: InputFile, opts: ReadOptions, tally: Tally) -> Iterator[tuple[str, str]]:
    """Stream ``(target_uri, text)`` for every HTML response of one WARC file, in file order.

    Counted (see the module docstring): ``empty_file`` (no record at all), ``not_html``,
    ``http_status``, ``broken_record`` (source ``name:record``, 1-based over all records, when
    the record has no target URI), ``undecodable``, ``no_text``; notes
    ``warc_<type>_records`` and ``invalid_bytes_replaced``.

    Raises:
        OSError, EOFError: a damaged archive: an invalid WARC header block, a corrupt
            compressed stream, or a record whose block is shorter than its declared
            Content-Length (a truncated file), naming the record.
    """
    allowed = tuple(t.lower() for t in opts.extract.content_types)
    number = 0
    # gzip, zstd, bzip2 and xz are decompressed by lmscaling.readers, whose readers raise
    # EOFError on a truncated stream (FastWARC's own gzip reader stops silently there); lz4
    # frames pass through and FastWARC decompresses them.
    with open_decompressed(f.path) as fh:
        for number, record in enumerate(ArchiveIterator(fh, parse_http=False), start=1):
            declared = (record.headers.get("Content-Length") or "").strip()
            record.freeze()  # reads the block: content_length is now the bytes present
            if not declared.isdigit() or int(declared) != record.content_length:
                raise EOFError(
                    f"WARC record {number} holds {record.content_length} bytes, its header "
                    f"declares Content-Length {declared or 'none'} (truncated file)"
                )
            if record.record_type != WarcRecordType.response:
                tally.note(f"warc_{record.record_type}_records")
                continue
            uri = (record.headers.get("WARC-Target-URI") or "").strip().strip("<>")
            source = uri or f"{f.name}:{number}"
            record.parse_http()
            payload = record.reader.read()
            http = record.http_headers
            if not uri or http is None or http.status_code is None:
                why = "no WARC-Target-URI" if not uri else "HTTP header block does not parse"
                tally.remove("broken_record", source, why, len(payload))
                continue
            if not 200 <= http.status_code < 300:
                tally.remove("http_status", source, http.status_line or "", len(payload))
                continue
            declared = (record.http_content_type or "").lower()
            if declared and declared not in allowed:
                tally.remove("not_html", source, declared, len(payload))
                continue
            try:
                body = _http_decode(payload, http)
            except _DECODE_ERRORS as exc:
                tally.remove("undecodable", source, f"{type(exc).__name__}: {exc}", len(payload))
                continue
            if not declared and detect_mime(body[:_SNIFF_BYTES]) not in allowed:
                tally.remove("not_html", source, "no Content-Type, not HTML", len(payload))
                continue
            text = _page_text(body, record.http_charset, source, opts, tally)
            if text is not None:
                yield uri, text
    if number == 0:
        tally.remove("empty_file", f.name, "", 0)
