"""Tokenizer training and token shards (stages ``train_tokenizer`` and ``tokenize``).

A tokenizer is a byte-level BPE model from the Hugging Face ``tokenizers`` library, trained on the
train split only (never on val, so held-out scores stay held out). Token shards are flat
little-endian arrays (``uint16`` when the vocabulary fits, else ``uint32``) in which every document
is followed by the end-of-text token; a JSON sidecar records the token, UTF-8 byte and document
counts that bits-per-byte needs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lmscaling.io import atomic_path, read_json, sha256_file, write_json

log = logging.getLogger(__name__)

EOT = "<|endoftext|>"
"""End-of-text special token; id 0 in every tokenizer trained here."""


class TokenizerError(ValueError):
    """Bad tokenizer config or input; the message names the key or file."""


@dataclass(frozen=True)
class TokenizerSpec:
    """One tokenizer of the experiment (``config["tokenizers"][name]``).

    Attributes:
        name: stable id used in output paths, e.g. ``bpe-2048``.
        vocab_size: total vocabulary including special tokens; 256 + number of merges + specials.
        train_bytes: UTF-8 bytes of train text fed to the trainer (a deterministic prefix of the
            train shards, in shard and row order); 0 means all of it.
        min_frequency: merges below this pair count are not learned.
    """

    name: str
    vocab_size: int
    train_bytes: int = 0
    min_frequency: int = 2

    def __post_init__(self) -> None:
        if self.vocab_size < 257 or self.vocab_size > 2**32:
            raise TokenizerError(
                f"tokenizers.{self.name}.vocab_size = {self.vocab_size}: a byte-level BPE needs at "
                "least 257 entries (256 bytes + end-of-text)"
            )

    @property
    def dtype(self) -> np.dtype:
        """Smallest unsigned dtype that holds every token id."""
        return np.dtype("<u2") if self.vocab_size <= 2**16 else np.dtype("<u4")


def tokenizer_spec_from_config(name: str, cfg: dict) -> TokenizerSpec:
    """Build a :class:`TokenizerSpec` from ``config["tokenizers"][name]``.

    Raises:
        TokenizerError: an unknown key or an unsupported ``type``, naming
            ``tokenizers.<name>.<key>``.
    """
    known = {"type", "vocab_size", "train_bytes", "min_frequency"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise TokenizerError(f"tokenizers.{name}: unknown key(s) {unknown}; known: {sorted(known)}")
    if cfg.get("type", "bpe") != "bpe":
        raise TokenizerError(f"tokenizers.{name}.type = {cfg['type']!r}: only 'bpe' is supported")
    return TokenizerSpec(
        name=name,
        vocab_size=int(cfg["vocab_size"]),
        train_bytes=int(cfg.get("train_bytes", 0)),
        min_frequency=int(cfg.get("min_frequency", 2)),
    )


def iter_texts(parquet_paths: Sequence[str | Path], batch_rows: int = 1024) -> Iterator[str]:
    """Stream the ``text`` column of Parquet shards in file and row order (bounded memory)."""
    for path in parquet_paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=["text"]):
            yield from batch.column(0).to_pylist()


def _take_bytes(texts: Iterator[str], budget: int) -> Iterator[str]:
    """Yield texts until ``budget`` UTF-8 bytes have been yielded (0 = no limit)."""
    used = 0
    for text in texts:
        if budget and used >= budget:
            return
        used += len(text.encode("utf-8"))
        yield text


def train_tokenizer(spec: TokenizerSpec, train_shards: Sequence[str | Path], out_path: str | Path):
    """Train a byte-level BPE tokenizer on train shards and save ``tokenizer.json`` atomically.

    The end-of-text token ``<|endoftext|>`` gets id 0. Byte-level pre-tokenization without a
    prefix space and a byte-level decoder make ``decode(encode(s)) == s`` for any string.

    Args:
        spec: vocabulary size and byte budget.
        train_shards: Parquet shards with a ``text`` column (train split only).
        out_path: destination ``tokenizer.json``.

    Returns:
        The trained ``tokenizers.Tokenizer``.

    Raises:
        TokenizerError: when the shards hold no text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=spec.min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    seen = {"docs": 0, "bytes": 0}

    def counted(texts: Iterator[str]) -> Iterator[str]:
        for text in texts:
            seen["docs"] += 1
            seen["bytes"] += len(text.encode("utf-8"))
            yield text

    tok.train_from_iterator(
        counted(_take_bytes(iter_texts(train_shards), spec.train_bytes)), trainer
    )
    if seen["docs"] == 0:
        raise TokenizerError(
            f"tokenizer '{spec.name}': the train split is empty ({len(train_shards)} shard(s)); "
            "nothing to train on"
        )
    if tok.token_to_id(EOT) != 0:
        raise TokenizerError(f"tokenizer '{spec.name}': {EOT} did not get id 0")
    if tok.get_vocab_size() < spec.vocab_size:
        log.warning(
            "tokenizer '%s': the training text filled only %d of %d vocabulary entries",
            spec.name,
            tok.get_vocab_size(),
            spec.vocab_size,
        )
    with atomic_path(out_path) as tmp:
        tok.save(str(tmp))
    log.info(
        "tokenizer '%s': vocab %d trained on %d documents, %.1f MB",
        spec.name,
        tok.get_vocab_size(),
        seen["docs"],
        seen["bytes"] / 1e6,
    )
    return tok


def load_tokenizer(path: str | Path):
    """Load a ``tokenizer.json`` written by :func:`train_tokenizer`."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def tokenize_shard(
    tokenizer_path: str | Path,
    parquet_path: str | Path,
    bin_path: str | Path,
    json_path: str | Path,
    batch_docs: int = 512,
) -> dict:
    """Encode one Parquet shard into a flat token array plus a JSON sidecar.

    Layout of ``bin_path``: ``doc_1 tokens, EOT, doc_2 tokens, EOT, ...`` as little-endian
    ``uint16`` (vocab ≤ 65,536) or ``uint32``. Documents are encoded in batches with the library's
    own thread pool (``encode_batch``) and appended to the file, so memory is bounded by one batch.

    Returns:
        The sidecar dict ``{"tokens", "bytes" (UTF-8 bytes of the encoded documents), "docs",
        "dtype", "vocab_size", "eot_id", "sha256"}``, also written to ``json_path``.

    Raises:
        TokenizerError: when the vocabulary does not fit the chosen dtype.
    """
    tok = load_tokenizer(tokenizer_path)
    vocab = tok.get_vocab_size()
    eot_id = tok.token_to_id(EOT)
    if eot_id is None:
        raise TokenizerError(f"{tokenizer_path}: no {EOT} token")
    dtype = np.dtype("<u2") if vocab <= 2**16 else np.dtype("<u4")
    counts = {"tokens": 0, "bytes": 0, "docs": 0}
    with atomic_path(bin_path) as tmp, open(tmp, "wb") as fh:
        batch: list[str] = []

        def flush() -> None:
            if not batch:
                return
            encodings = tok.encode_batch(batch, add_special_tokens=False)
            pieces = []
            for enc in encodings:
                pieces.append(np.asarray(enc.ids, dtype=np.int64))
                pieces.append(np.array([eot_id], dtype=np.int64))
            arr = np.concatenate(pieces).astype(dtype)
            fh.write(arr.tobytes())
            counts["tokens"] += int(arr.size)
            counts["bytes"] += sum(len(t.encode("utf-8")) for t in batch)
            counts["docs"] += len(batch)
            batch.clear()

        for text in iter_texts([parquet_path]):
            batch.append(text)
            if len(batch) >= batch_docs:
                flush()
        flush()
        fh.flush()
    meta = {
        **counts,
        "dtype": dtype.name,
        "vocab_size": vocab,
        "eot_id": eot_id,
        "sha256": sha256_file(bin_path),
    }
    write_json(json_path, meta)
    return meta


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
        path = Path(path)
        meta = read_json(path.with_suffix(".json"))
        arr = np.fromfile(path, dtype=np.dtype(meta["dtype"]).newbyteorder("<"))
        if arr.size != meta["tokens"]:
            raise TokenizerError(
                f"{path}: holds {arr.size} tokens, its sidecar says {meta['tokens']}"
            )
        arrays.append(arr.astype(np.int64))
        for key in totals:
            totals[key] += int(meta[key])
        eot_ids.add(int(meta["eot_id"]))
    if len(eot_ids) > 1:
        raise TokenizerError(f"token shards disagree on the end-of-text id: {sorted(eot_ids)}")
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return tokens, {**totals, "eot_id": eot_ids.pop() if eot_ids else 0}
