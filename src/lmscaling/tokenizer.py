"""Tokenizers and token shards (stages ``train_tokenizer``, ``tokenize`` and ``tokenizer_stats``).

An experiment has one or more tokenizers, by name (``config["tokenizers"]``); every model is
trained once per tokenizer, and bits-per-byte keeps their losses comparable. Two kinds come from
the Hugging Face ``tokenizers`` library:

* ``bpe``: byte-level BPE (Radford et al. 2019, GPT-2; Sennrich et al. 2016);
* ``unigram``: a Unigram language model (Kudo 2018) over the same byte-level alphabet.

Both see text through the same pre-tokenizer: runs of 256 non-space characters are cut apart
(so a megabyte-long line costs what many ordinary words cost, in time and memory), then the
GPT-2 byte-level split maps every UTF-8 byte to one of 256 visible symbols. All 256 symbols are in
every vocabulary and the byte-level decoder maps them back, so ``decode(encode(s)) == s`` for
every string, including text that spells a special token (:func:`load_tokenizer` turns on
``encode_special_tokens``, so ``"<|endoftext|>"`` inside a document is encoded as text).

Special tokens come first: end-of-text ``<|endoftext|>`` is id 0; the optional
beginning-of-sequence ``<|bos|>`` and padding ``<|pad|>`` tokens follow, in that order.

A tokenizer is trained on the train split only (never on val, so held-out scores stay held out),
on a byte budget drawn deterministically from it (:func:`sample_train_texts`).

Token shards are flat little-endian arrays (``uint16`` when the vocabulary fits, else
``uint32``, memory-mappable with ``numpy.memmap``): ``[BOS] doc_1 EOT [BOS] doc_2 EOT ...``.
A JSON sidecar records the token, UTF-8 byte and document counts that bits-per-byte needs, and
a per-tokenizer manifest (:func:`write_manifest`) gathers every shard's counts and sha256 with
the tokenizer's statistics (bytes per token on val, fraction of the vocabulary used).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lmscaling.io import atomic_path, read_json, sha256_file, write_json

log = logging.getLogger(__name__)

EOT = "<|endoftext|>"
"""End-of-text special token; id 0 in every tokenizer trained here."""
BOS = "<|bos|>"
"""Optional beginning-of-sequence token (``bos: true``); id 1 when present."""
PAD = "<|pad|>"
"""Optional padding token (``pad: true``); never written to token shards."""

TYPES = ("bpe", "unigram")
MAX_RUN_CHARS = 256
"""Longest run of non-space characters kept as one pre-token; longer runs are cut apart."""
UNIGRAM_MAX_PIECE = 16
"""Longest Unigram piece, in byte-level symbols (the ``tokenizers`` default)."""
MAX_TRAIN_DOC_CHARS = 100_000
"""A document longer than this feeds only its first this-many characters to the trainer.

One huge document (a base64 blob, a minified file) would otherwise fill a large part of the
byte budget with one text's substrings and make Unigram training take minutes; such documents
are counted (``truncated_docs``), and are still tokenized whole.
"""


class TokenizerError(ValueError):
    """Bad tokenizer config or input; the message names the key or file."""


@dataclass(frozen=True)
class TokenizerSpec:
    """One tokenizer of the experiment (``config["tokenizers"][name]``).

    Attributes:
        name: stable id used in output paths and as the ``tokenizer`` wildcard, e.g. ``bpe-2048``.
        vocab_size: total vocabulary including the special tokens: 256 byte symbols + learned
            pieces + specials. A corpus too small to fill it yields a smaller vocabulary (with
            a warning); the trained size is what models use.
        type: ``"bpe"`` (byte-level BPE) or ``"unigram"`` (Unigram LM over byte symbols).
        train_bytes: UTF-8 bytes of train text fed to the trainer, drawn by
            :func:`sample_train_texts`; 0 means the whole train split.
        min_frequency: BPE only: pairs seen fewer times are not merged.
        bos: add ``<|bos|>`` (id 1) and write it before every document in token shards.
        pad: add ``<|pad|>`` (for padded batches downstream; never written to token shards).
    """

    name: str
    vocab_size: int
    type: str = "bpe"
    train_bytes: int = 0
    min_frequency: int = 2
    bos: bool = False
    pad: bool = False

    def __post_init__(self) -> None:
        key = f"tokenizers.{self.name}"
        if self.type not in TYPES:
            raise TokenizerError(f"{key}.type = {self.type!r}: expected one of {list(TYPES)}")
        minimum = 256 + len(self.special_tokens)
        if self.vocab_size < minimum or self.vocab_size > 2**32:
            raise TokenizerError(
                f"{key}.vocab_size = {self.vocab_size}: a byte-level vocabulary needs at least "
                f"{minimum} entries (256 byte symbols + {len(self.special_tokens)} special) and "
                "at most 2**32"
            )
        if self.train_bytes < 0:
            raise TokenizerError(f"{key}.train_bytes = {self.train_bytes}: must be >= 0")
        if self.min_frequency < 1:
            raise TokenizerError(f"{key}.min_frequency = {self.min_frequency}: must be >= 1")

    @property
    def special_tokens(self) -> list[str]:
        """Special tokens in id order: ``[EOT, BOS?, PAD?]``."""
        return [EOT] + [BOS] * self.bos + [PAD] * self.pad

    @property
    def dtype(self) -> np.dtype:
        """Smallest unsigned dtype that holds every token id."""
        return token_dtype(self.vocab_size)


def token_dtype(vocab_size: int) -> np.dtype:
    """Little-endian ``uint16`` when ids ``0 .. vocab_size - 1`` fit, else ``uint32``."""
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def tokenizer_spec_from_config(name: str, cfg: dict) -> TokenizerSpec:
    """Build a :class:`TokenizerSpec` from ``config["tokenizers"][name]``.

    Raises:
        TokenizerError: an unknown key, an unsupported ``type`` or an out-of-range value,
            naming ``tokenizers.<name>.<key>``.
    """
    known = {"type", "vocab_size", "train_bytes", "min_frequency", "bos", "pad"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise TokenizerError(f"tokenizers.{name}: unknown key(s) {unknown}; known: {sorted(known)}")
    if "vocab_size" not in cfg:
        raise TokenizerError(f"tokenizers.{name}.vocab_size is required")
    return TokenizerSpec(
        name=name,
        vocab_size=int(cfg["vocab_size"]),
        type=str(cfg.get("type", "bpe")),
        train_bytes=int(cfg.get("train_bytes", 0)),
        min_frequency=int(cfg.get("min_frequency", 2)),
        bos=bool(cfg.get("bos", False)),
        pad=bool(cfg.get("pad", False)),
    )


def set_threads(threads: int) -> None:
    """Let the ``tokenizers`` library encode and train on ``threads`` threads.

    Sets ``RAYON_NUM_THREADS`` (size of the library's Rayon thread pool) and
    ``TOKENIZERS_PARALLELISM=true``. Takes effect only before the first parallel call of the
    process (the pool is created once), so call it before training or encoding.

    Raises:
        TokenizerError: when ``threads`` is not a positive integer.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise TokenizerError(f"threads = {threads!r}: expected a positive integer")
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"


# ----------------------------------------------------------------------------- reading text


def iter_texts(parquet_paths: Sequence[str | Path], batch_rows: int = 1024) -> Iterator[str]:
    """Stream the ``text`` column of Parquet shards in file and row order (bounded memory)."""
    for batch in iter_text_batches(parquet_paths, batch_rows):
        yield from batch[0]


def iter_text_batches(
    parquet_paths: Sequence[str | Path], batch_rows: int = 1024
) -> Iterator[tuple[list[str], int]]:
    """Stream ``(texts, utf8_bytes)`` batches of at most ``batch_rows`` documents.

    ``utf8_bytes`` is the summed UTF-8 length of the batch's texts, computed by Arrow without
    re-encoding. Memory holds one batch (plus the Parquet row group being read).

    Raises:
        TokenizerError: naming the file when it is not a whole Parquet file (e.g. truncated:
            its footer is missing).
    """
    for path in parquet_paths:
        try:
            shard = pq.ParquetFile(path)
        except pa.ArrowInvalid as err:
            raise TokenizerError(
                f"{path}: not a complete Parquet file ({err}); delete it and rerun the workflow"
            ) from None
        for batch in shard.iter_batches(batch_size=batch_rows, columns=["text"]):
            column = batch.column(0)
            nbytes = pc.sum(pc.binary_length(column)).as_py() or 0
            yield column.to_pylist(), int(nbytes)


def _doc_key(text: str) -> int:
    """64-bit hash of a document's text: its rank in the training sample (same on any machine)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def _check_train_only(train_shards: Sequence[str | Path]) -> None:
    for path in train_shards:
        if Path(path).parent.name == "val":
            raise TokenizerError(
                f"{path}: a tokenizer is trained on the train split only, not on val"
            )


def sample_train_texts(train_shards: Sequence[str | Path], budget: int) -> Iterator[str]:
    """Yield a deterministic sample of about ``budget`` UTF-8 bytes of train documents.

    Every document gets the rank ``blake2b-64(text)``; the sample is the documents of lowest
    rank whose bytes sum to at least ``budget`` (so at most one document over it). The sample is
    a uniform random draw over documents that depends on the texts only, not on their order,
    the shard count or the machine. ``budget == 0`` (or a budget at least the split's size)
    yields every document. Documents are yielded in shard and row order.

    Memory: 16 bytes per train document (rank and size), plus one Parquet batch.

    Raises:
        TokenizerError: a shard under a ``val`` directory (tokenizers never see val).
    """
    _check_train_only(train_shards)
    if budget == 0:
        yield from iter_texts(train_shards)
        return
    keys, sizes = [], []
    for text in iter_texts(train_shards):
        keys.append(_doc_key(text))
        sizes.append(len(text.encode("utf-8")))
    if sum(sizes) <= budget:
        yield from iter_texts(train_shards)
        return
    keys_arr = np.array(keys, dtype=np.uint64)
    order = np.argsort(keys_arr, kind="stable")
    cumulative = np.cumsum(np.array(sizes, dtype=np.int64)[order])
    last = int(np.searchsorted(cumulative, budget))  # first position where the sum >= budget
    threshold = int(keys_arr[order[last]])
    for text in iter_texts(train_shards):
        if _doc_key(text) <= threshold:
            yield text


# ----------------------------------------------------------------------------- training


def _new_tokenizer(spec: TokenizerSpec):
    """An untrained tokenizer (model, pre-tokenizer, decoder) and its trainer for ``spec``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if spec.type == "bpe":
        tok = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=spec.vocab_size,
            min_frequency=spec.min_frequency,
            special_tokens=spec.special_tokens,
            initial_alphabet=alphabet,
            show_progress=False,
        )
    else:
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=spec.vocab_size,
            special_tokens=spec.special_tokens,
            initial_alphabet=alphabet,
            max_piece_length=UNIGRAM_MAX_PIECE,
            show_progress=False,
        )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(rf"\S{{{MAX_RUN_CHARS}}}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok, trainer


def train_tokenizer(
    spec: TokenizerSpec,
    train_shards: Sequence[str | Path],
    out_path: str | Path,
    info_path: str | Path | None = None,
):
    """Train a tokenizer on train shards and save ``tokenizer.json`` atomically.

    Args:
        spec: type, vocabulary size, byte budget and special tokens.
        train_shards: Parquet shards with a ``text`` column (train split only).
        out_path: destination ``tokenizer.json``.
        info_path: where to write the training record as JSON (optional): ``{"tokenizer",
            "type", "vocab_size" (requested), "vocab_size_trained", "docs", "bytes" (UTF-8
            bytes trained on), "truncated_docs" (documents cut to
            :data:`MAX_TRAIN_DOC_CHARS`), "seconds", "seconds_per_mb" (training wall time per
            10^6 bytes), "threads" (``RAYON_NUM_THREADS``, or None), "special_tokens": {token:
            id}}``.

    Returns:
        The trained ``tokenizers.Tokenizer``, with ``encode_special_tokens`` on.

    Raises:
        TokenizerError: the train split is empty, a shard is from val, or the special tokens did
            not get ids 0, 1, ... (nothing is written then).
    """
    tok, trainer = _new_tokenizer(spec)
    seen = {"docs": 0, "bytes": 0, "truncated_docs": 0}

    def counted(texts: Iterator[str]) -> Iterator[str]:
        for text in texts:
            if len(text) > MAX_TRAIN_DOC_CHARS:
                text = text[:MAX_TRAIN_DOC_CHARS]
                seen["truncated_docs"] += 1
            seen["docs"] += 1
            seen["bytes"] += len(text.encode("utf-8"))
            yield text

    start = time.perf_counter()
    tok.train_from_iterator(counted(sample_train_texts(train_shards, spec.train_bytes)), trainer)
    seconds = time.perf_counter() - start
    if seen["docs"] == 0:
        raise TokenizerError(
            f"tokenizer '{spec.name}': the train split is empty ({len(train_shards)} shard(s)); "
            "nothing to train on"
        )
    specials = {t: tok.token_to_id(t) for t in spec.special_tokens}
    if list(specials.values()) != list(range(len(specials))):
        raise TokenizerError(f"tokenizer '{spec.name}': special tokens got ids {specials}")
    trained = tok.get_vocab_size()
    if trained < spec.vocab_size:
        log.warning(
            "tokenizer '%s': the training text (%d documents, %d bytes) filled only %d of the "
            "%d vocabulary entries of tokenizers.%s.vocab_size; models use %d",
            spec.name,
            seen["docs"],
            seen["bytes"],
            trained,
            spec.vocab_size,
            spec.name,
            trained,
        )
    with atomic_path(out_path) as tmp:
        tok.save(str(tmp))
    tok.encode_special_tokens = True
    info = {
        "tokenizer": spec.name,
        "type": spec.type,
        "vocab_size": spec.vocab_size,
        "vocab_size_trained": trained,
        "docs": seen["docs"],
        "bytes": seen["bytes"],
        "truncated_docs": seen["truncated_docs"],
        "seconds": seconds,
        "seconds_per_mb": seconds / max(seen["bytes"] / 1e6, 1e-12),
        "threads": int(os.environ["RAYON_NUM_THREADS"])
        if "RAYON_NUM_THREADS" in os.environ
        else None,
        "special_tokens": specials,
    }
    if info_path is not None:
        write_json(info_path, info)
    log.info(
        "tokenizer '%s' (%s): vocab %d trained on %d documents (%d cut to their first %d "
        "characters), %.2f MB in %.1f s",
        spec.name,
        spec.type,
        trained,
        seen["docs"],
        seen["truncated_docs"],
        MAX_TRAIN_DOC_CHARS,
        seen["bytes"] / 1e6,
        seconds,
    )
    return tok


def load_tokenizer(path: str | Path):
    """Load a ``tokenizer.json`` written by :func:`train_tokenizer`.

    ``encode_special_tokens`` is turned on (it is not stored in the file), so text that spells a
    special token is encoded as ordinary text and decodes back to itself.

    Raises:
        TokenizerError: the file has no ``<|endoftext|>`` token at id 0.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    if tok.token_to_id(EOT) != 0:
        raise TokenizerError(f"{path}: {EOT} is not token 0; not a tokenizer of this workflow")
    tok.encode_special_tokens = True
    return tok


# ----------------------------------------------------------------------------- token shards


def tokenize_shard(
    tokenizer_path: str | Path,
    parquet_path: str | Path,
    bin_path: str | Path,
    json_path: str | Path,
    batch_docs: int = 1024,
) -> dict:
    """Encode one Parquet shard into a flat token array plus a JSON sidecar.

    Layout of ``bin_path``: ``[BOS] doc_1 tokens, EOT, [BOS] doc_2 tokens, EOT, ...`` as
    little-endian ``uint16`` (vocab ≤ 65,536) or ``uint32``; BOS only when the tokenizer has
    one. Documents are read and encoded ``batch_docs`` at a time with the library's own thread
    pool (``encode_batch_fast``; threads: :func:`set_threads`) and appended to the file, so
    memory is bounded by one batch whatever the shard's size.

    Returns:
        The sidecar dict, also written to ``json_path``: ``tokens`` (all ids written),
        ``text_tokens`` (without BOS/EOT), ``bytes`` (UTF-8 bytes of the encoded documents),
        ``docs``, ``dtype``, ``vocab_size``, ``eot_id``, ``bos_id`` (None without BOS),
        ``sha256`` (of ``bin_path``) and ``tokenizer_sha256``.

    Raises:
        TokenizerError: when the tokenizer file is not one of this workflow's.
    """
    tok = load_tokenizer(tokenizer_path)
    vocab = tok.get_vocab_size()
    eot_id = tok.token_to_id(EOT)
    bos_id = tok.token_to_id(BOS)
    dtype = token_dtype(vocab)
    prefix = [] if bos_id is None else [bos_id]
    counts = {"tokens": 0, "bytes": 0, "docs": 0}
    with atomic_path(bin_path) as tmp, open(tmp, "wb") as fh:
        for texts, nbytes in iter_text_batches([parquet_path], batch_docs):
            ids: list[int] = []
            for enc in tok.encode_batch_fast(texts, add_special_tokens=False):
                ids += prefix
                ids += enc.ids
                ids.append(eot_id)
            np.array(ids, dtype=dtype).tofile(fh)
            counts["tokens"] += len(ids)
            counts["bytes"] += nbytes
            counts["docs"] += len(texts)
    meta = {
        **counts,
        "text_tokens": counts["tokens"] - counts["docs"] * (1 + len(prefix)),
        "dtype": dtype.name,
        "vocab_size": vocab,
        "eot_id": eot_id,
        "bos_id": bos_id,
        "sha256": sha256_file(bin_path),
        "tokenizer_sha256": sha256_file(tokenizer_path),
    }
    write_json(json_path, meta)
    return meta


def _read_sidecar(path: Path) -> dict:
    meta = read_json(path.with_suffix(".json"))
    size = path.stat().st_size
    itemsize = np.dtype(meta["dtype"]).itemsize
    if size != meta["tokens"] * itemsize:
        raise TokenizerError(
            f"{path}: holds {size // itemsize} tokens, its sidecar says {meta['tokens']}"
        )
    return meta


def open_token_shard(path: str | Path) -> np.memmap:
    """Memory-map one token shard (read-only) with the dtype of its sidecar.

    Raises:
        TokenizerError: when the file size disagrees with the sidecar's token count.
    """
    path = Path(path)
    meta = _read_sidecar(path)
    if meta["tokens"] == 0:
        return np.zeros(0, dtype=np.dtype(meta["dtype"]).newbyteorder("<"))
    return np.memmap(path, dtype=np.dtype(meta["dtype"]).newbyteorder("<"), mode="r")


def read_token_shards(bin_paths: Sequence[str | Path]) -> tuple[np.ndarray, dict]:
    """Concatenate token shards (with their sidecars beside them) into one 1-D array.

    Returns:
        ``(tokens, totals)`` where ``tokens`` is ``int64`` of shape ``(sum of tokens,)`` and
        ``totals`` holds summed ``tokens``, ``bytes``, ``docs`` and the common ``eot_id``.

    Raises:
        TokenizerError: when a shard's size disagrees with its sidecar, or shards disagree on the
            end-of-text id.
    """
    arrays, totals, eot_ids = [], {"tokens": 0, "bytes": 0, "docs": 0}, set()
    for path in bin_paths:
        meta = _read_sidecar(Path(path))
        arrays.append(np.asarray(open_token_shard(path), dtype=np.int64))
        for key in totals:
            totals[key] += int(meta[key])
        eot_ids.add(int(meta["eot_id"]))
    if len(eot_ids) > 1:
        raise TokenizerError(f"token shards disagree on the end-of-text id: {sorted(eot_ids)}")
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return tokens, {**totals, "eot_id": eot_ids.pop() if eot_ids else 0}


# ----------------------------------------------------------------------------- statistics

_SHARD_RE = re.compile(r"^part-(\d+)\.bin$")


def _shard_ids(path: Path) -> tuple[str, str, str]:
    """``(corpus, split, shard)`` of ``.../{corpus}/{split}/part-{shard}.bin``."""
    match = _SHARD_RE.match(path.name)
    if not match or path.parent.name not in ("train", "val"):
        raise TokenizerError(f"{path}: not a token shard path .../{{corpus}}/{{split}}/part-N.bin")
    return path.parent.parent.name, path.parent.name, match.group(1)


def write_manifest(
    name: str,
    tokenizer_path: str | Path,
    bin_paths: Sequence[str | Path],
    out_path: str | Path,
    chunk_tokens: int = 1 << 24,
) -> dict:
    """Check every token shard of one tokenizer and write its manifest with statistics.

    Each shard's sha256 is recomputed and compared with its sidecar, and its tokenizer checksum
    with ``tokenizer_path``. Per split, over every corpus: ``tokens``, ``text_tokens``,
    ``bytes``, ``docs``, ``bytes_per_token`` (UTF-8 bytes / text tokens, special tokens
    excluded: the tokenizer's compression), ``vocab_used`` (distinct ids among the text tokens)
    and ``vocab_used_fraction`` (``vocab_used / (vocab_size - specials)``). Ids are counted in
    chunks of ``chunk_tokens`` of the memory-mapped shards, so memory does not grow with them.

    Returns:
        The manifest, also written to ``out_path``: ``{"tokenizer", "tokenizer_sha256",
        "vocab_size", "special_tokens", "dtype", "splits": {split: stats}, "shards": [{corpus,
        split, shard, path (relative to the manifest's folder), tokens, text_tokens, bytes, docs,
        sha256}]}``.

    Raises:
        TokenizerError: a checksum mismatch, a size that disagrees with a sidecar, a shard made
            by another tokenizer, or a path that is not ``.../{corpus}/{split}/part-N.bin``.
    """
    tok = load_tokenizer(tokenizer_path)
    vocab = tok.get_vocab_size()
    specials = {t: tok.token_to_id(t) for t in (EOT, BOS, PAD) if tok.token_to_id(t) is not None}
    tok_sha = sha256_file(tokenizer_path)
    root = Path(out_path).parent
    keys = ("tokens", "text_tokens", "bytes", "docs")
    splits: dict[str, dict] = {}
    used: dict[str, np.ndarray] = {}
    shards = []
    for path in map(Path, bin_paths):
        corpus, split, shard = _shard_ids(path)
        meta = _read_sidecar(path)
        if meta["tokenizer_sha256"] != tok_sha:
            raise TokenizerError(f"{path}: made with another tokenizer than {tokenizer_path}")
        digest = sha256_file(path)
        if digest != meta["sha256"]:
            raise TokenizerError(f"{path}: sha256 {digest} differs from its sidecar's")
        arr = open_token_shard(path)
        seen = used.setdefault(split, np.zeros(vocab, dtype=np.int64))
        for start in range(0, arr.size, chunk_tokens):
            seen += np.bincount(arr[start : start + chunk_tokens], minlength=vocab)[:vocab]
        totals = splits.setdefault(split, dict.fromkeys(keys, 0))
        for key in keys:
            totals[key] += int(meta[key])
        try:
            rel = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = str(path)
        shards.append(
            {"corpus": corpus, "split": split, "shard": shard, "path": rel, "sha256": digest}
            | {key: int(meta[key]) for key in keys}
        )
    for split, totals in splits.items():
        counts = used[split].copy()
        counts[list(specials.values())] = 0
        totals["bytes_per_token"] = totals["bytes"] / max(totals["text_tokens"], 1)
        totals["vocab_used"] = int(np.count_nonzero(counts))
        totals["vocab_used_fraction"] = totals["vocab_used"] / (vocab - len(specials))
    manifest = {
        "tokenizer": name,
        "tokenizer_sha256": tok_sha,
        "vocab_size": vocab,
        "special_tokens": specials,
        "dtype": token_dtype(vocab).name,
        "splits": splits,
        "shards": shards,
    }
    write_json(out_path, manifest)
    return manifest
