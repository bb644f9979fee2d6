"""Exact and near-duplicate detection, designed for a partitioned (map → reduce) pipeline.

Exact duplicates (Lee et al. 2022, "Deduplicating Training Data Makes Language Models Better"):
a document's key is the sha256 of its cleaned UTF-8 text. The shard a document goes to is a
function of that digest (:func:`shard_from_digest`), so all copies of a text land in the same
shard and each shard's reducer removes them with a local set: exact dedup is global without a
global set in memory.

Near duplicates (MinHash, Broder 1997; LSH banding, Leskovec et al., "Mining of Massive
Datasets", ch. 3.4): near duplicates have different digests, so they land in different shards.
Each document's MinHash signature (datasketch, word n-gram shingles) is cut into ``b`` bands of
``r`` rows; ``b`` and ``r`` are datasketch's choice for the threshold (minimizing false
positive and false negative probability). The map jobs store only the ``b`` 64-bit band hashes
next to each document. One job per corpus (:func:`near_duplicate_drops`) then reads just the
digests and band hashes of every document (8·b + 40 bytes each), finds documents that share a
band hash (one sort per band), joins them into clusters (union-find) and keeps the earliest
document of each cluster in input order; the shard reducers remove the others. As in
datatrove and text-dedup, candidates are not re-verified by an exact Jaccard computation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


def digest(text: str) -> bytes:
    """sha256 of the UTF-8 text (32 bytes): the document id and its exact-dedup key."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def split_from_digest(d: bytes, val_fraction: float) -> str:
    """``"val"`` when u < val_fraction else ``"train"``; u = top 53 bits of ``d[:8]`` / 2**53."""
    u = (int.from_bytes(d[:8], "big") >> 11) / 2.0**53
    return "val" if u < val_fraction else "train"


def shard_from_digest(d: bytes, num_shards: int) -> int:
    """Shard index: bytes 8..16 of the digest, big-endian, modulo ``num_shards``."""
    return int.from_bytes(d[8:16], "big") % num_shards


@dataclass(frozen=True)
class NearDupOptions:
    """MinHash LSH near-duplicate removal (``corpora.<name>.dedup.near``).

    Attributes:
        threshold: estimated Jaccard similarity of shingle sets above which two documents are
            near duplicates (the LSH S-curve's design point).
        shingle_size: words per shingle (lowercased, whitespace-split words).
        num_perm: MinHash permutations (signature length).
        seed: permutation seed (fixed so results are reproducible).
    """

    threshold: float = 0.8
    shingle_size: int = 5
    num_perm: int = 128
    seed: int = 1


class MinHasher:
    """Band hashes of documents for LSH (see the module docstring).

    Attributes:
        bands: b, the number of bands (hash values per document).
        rows: r, signature rows per band (b·r ≤ num_perm).
    """

    def __init__(self, opts: NearDupOptions) -> None:
        if not 0.0 < opts.threshold < 1.0:
            raise ValueError(f"dedup.near.threshold: must be in (0, 1), got {opts.threshold}")
        if opts.shingle_size < 1 or opts.num_perm < 2:
            raise ValueError("dedup.near: shingle_size must be >= 1 and num_perm >= 2")
        # Imported here: datasketch pulls in scipy (about a second), needed only when enabled.
        from datasketch import MinHash, MinHashLSH

        self.opts = opts
        self._minhash = MinHash
        lsh = MinHashLSH(threshold=opts.threshold, num_perm=opts.num_perm)
        self.bands, self.rows = lsh.b, lsh.r
        seed_hash = MinHash(num_perm=opts.num_perm, seed=opts.seed)
        self._permutations = seed_hash.permutations
        self._scheme = seed_hash.scheme

    def band_hashes(self, text: str) -> list[int]:
        """``bands`` unsigned 64-bit hashes of the MinHash signature of ``text``'s shingles.

        A document shorter than ``shingle_size`` words has the one shingle of all its words;
        an empty one hashes the empty shingle.
        """
        words = text.lower().split()
        n = self.opts.shingle_size
        shingles = {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}
        m = self._minhash(
            num_perm=self.opts.num_perm, permutations=self._permutations, scheme=self._scheme
        )
        m.update_batch([s.encode("utf-8") for s in sorted(shingles)])
        values = np.asarray(m.hashvalues, dtype="<u8")
        out = []
        for b in range(self.bands):
            band = values[b * self.rows : (b + 1) * self.rows].tobytes()
            out.append(int.from_bytes(hashlib.blake2b(band, digest_size=8).digest(), "little"))
        return out


def near_duplicate_clusters(band_matrix: np.ndarray) -> np.ndarray:
    """Cluster of every document: the row index of the earliest document of its cluster.

    Args:
        band_matrix: (n_documents, bands) uint64 band hashes, rows in input order, one row per
            distinct document (exact duplicates already collapsed to their first copy).

    Returns:
        (n_documents,) int64 ``roots``: documents linked by a shared band hash in any band,
        transitively, form a cluster; ``roots[i]`` is its earliest row. Rows with
        ``roots[i] != i`` are the near duplicates to drop.
    """
    n = band_matrix.shape[0]
    parent = list(range(n))

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:  # path compression
            parent[i], i = root, parent[i]
        return root

    for b in range(band_matrix.shape[1]):
        column = band_matrix[:, b]
        order = np.argsort(column, kind="stable")
        ordered = column[order]
        for k in np.flatnonzero(ordered[1:] == ordered[:-1]).tolist():
            a, c = find(int(order[k])), find(int(order[k + 1]))
            if a != c:  # rows order[k] and order[k + 1] share this band hash
                parent[max(a, c)] = min(a, c)  # the root stays the earliest row of a cluster
    return np.array([find(i) for i in range(n)], dtype=np.int64)
