"""Speed of the tokenizer stages on the default corpus, as ratios measured in one run.

1. Prepares the default experiment's corpus (``corpora`` and ``data`` of config/config.yaml:
   the Python standard library) with ``lmscaling.data`` into a temporary folder.
2. Trains one tokenizer per type (``bpe``, ``unigram``) on ``--train-bytes`` of the train split
   and prints the training time per MB of text.
3. Tokenize stage: ``tokenize_shard`` over every Parquet shard (train and val), reading the
   shards and writing token files and sidecars, against its peer, bare ``encode_batch`` on the
   same texts already in memory (one call over all of them). Prints tokens/s of each and the
   ratio stage / bare (goal >= 0.85); also the ratio to ``encode_batch_fast``, which the stage
   uses (no character offsets). The two are timed alternately ``--repeats`` times and the best
   time of each is kept, so a busy machine slows both alike.
4. Bad input: a 10^6-character line without a space (random letters) added to 100 train
   documents, trained on (vocabulary 2048) and tokenized, each in a fresh process; prints the
   wall time and peak RSS against the same process on the 100 documents alone.

Usage: python benchmarks/tokenize_speed.py [--threads 2] [--vocab-size 2048]
       [--train-bytes 4000000] [--repeats 3] [--skip-bad-input | --skip-speed]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from lmscaling import tokenizer as T
from lmscaling.argtypes import count, positive_int
from lmscaling.data import corpus_spec_from_config, data_options_from_config, prepare_corpus
from lmscaling.io import read_json

REPO = Path(__file__).resolve().parents[1]
LINE_CHARS = 10**6


def prepare_default_corpus(out_dir: Path) -> dict[str, list[Path]]:
    """Prepare the first corpus of config/config.yaml; return its Parquet shards by split."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    name, cfg = next(iter(config["corpora"].items()))
    opts = data_options_from_config(config["data"])
    prepare_corpus(
        corpus_spec_from_config(name, cfg), out_dir, opts.num_shards, opts.val_fraction, opts
    )
    return {split: sorted((out_dir / split).glob("part-*.parquet")) for split in ("train", "val")}


def write_text_shard(path: Path, texts: list[str]) -> Path:
    """A Parquet shard with the corpus stage's columns (id, source, text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = [str(i) for i in range(len(texts))]
    table = pa.table({"id": ids, "source": ["bench"] * len(texts), "text": texts})
    pq.write_table(table, path)
    return path


def time_stage(tok_path: Path, shards: list[Path], out_dir: Path) -> tuple[float, int]:
    """Seconds and text tokens of the tokenize stage over ``shards`` (read, encode, write)."""
    start = time.perf_counter()
    text_tokens = 0
    for i, shard in enumerate(shards):
        meta = T.tokenize_shard(tok_path, shard, out_dir / f"{i}.bin", out_dir / f"{i}.json")
        text_tokens += meta["text_tokens"]
    return time.perf_counter() - start, text_tokens


def time_bare(tok, texts: list[str], fast: bool) -> tuple[float, int]:
    """Seconds of one ``encode_batch`` (or ``encode_batch_fast``) call over ``texts``."""
    encode = tok.encode_batch_fast if fast else tok.encode_batch
    start = time.perf_counter()
    encodings = encode(texts, add_special_tokens=False)
    seconds = time.perf_counter() - start
    return seconds, sum(len(e.ids) for e in encodings)


def _child(task: str, kind: str, tmp: str, with_line: bool, threads: int, queue) -> None:
    """One bad-input measurement in a fresh process: wall seconds and peak RSS (MiB)."""
    T.set_threads(threads)
    tmp_path = Path(tmp)
    train = sorted((tmp_path / "corpus" / "train").glob("part-*.parquet"))
    docs = [text for _, text in zip(range(100), T.iter_texts(train), strict=False)]
    if with_line:
        rng = np.random.default_rng(0)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        docs.append("".join(letters[rng.integers(0, 26, LINE_CHARS)]))
    shard = write_text_shard(tmp_path / task / kind / str(with_line) / "train" / "p.parquet", docs)
    start = time.perf_counter()
    if task == "train":
        spec = T.TokenizerSpec(kind, 2048, type=kind)
        T.train_tokenizer(spec, [shard], shard.parent / "tokenizer.json")
    else:
        tok_path = tmp_path / f"{kind}.json"
        T.tokenize_shard(tok_path, shard, shard.with_suffix(".bin"), shard.with_suffix(".json"))
    seconds = time.perf_counter() - start
    queue.put((seconds, peak_rss_mib()))


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (Linux ``VmHWM``; else ``ru_maxrss``).

    ``ru_maxrss`` survives ``exec`` on Linux, so a spawned child would report its parent's peak;
    ``VmHWM`` belongs to the new address space.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_child(*args) -> tuple[float, float]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=positive_int, default=2, help="encoder/trainer threads")
    parser.add_argument("--vocab-size", type=positive_int, default=2048)
    parser.add_argument("--train-bytes", type=count, default=4_000_000, help="0 = all")
    parser.add_argument(
        "--repeats", type=positive_int, default=3, help="timings of each; best kept"
    )
    parser.add_argument("--skip-bad-input", action="store_true")
    parser.add_argument("--skip-speed", action="store_true", help="train, then bad input only")
    args = parser.parse_args()
    T.set_threads(args.threads)  # before the library's first parallel call

    with tempfile.TemporaryDirectory(prefix="tokenize-speed-") as tmp:
        tmp_path = Path(tmp)
        start = time.perf_counter()
        shards = prepare_default_corpus(tmp_path / "corpus")
        all_shards = shards["train"] + shards["val"]
        texts = list(T.iter_texts(all_shards))
        mb = sum(len(t.encode()) for t in texts) / 1e6
        print(
            f"corpus: {len(texts)} documents, {mb:.1f} MB in {len(all_shards)} shards "
            f"(prepared in {time.perf_counter() - start:.0f} s); {args.threads} threads"
        )
        print(
            f"{'tokenizer':>9} {'train s/MB':>10} {'stage tok/s':>12} {'bare tok/s':>11} "
            f"{'fast tok/s':>11} {'stage/bare':>10} {'stage/fast':>10}"
        )
        for kind in T.TYPES:
            spec = T.TokenizerSpec(kind, args.vocab_size, type=kind, train_bytes=args.train_bytes)
            tok_path = tmp_path / f"{kind}.json"
            T.train_tokenizer(spec, shards["train"], tok_path, tmp_path / f"{kind}-info.json")
            info = read_json(tmp_path / f"{kind}-info.json")
            tok = T.load_tokenizer(tok_path)
            if args.skip_speed:
                print(f"{kind:>9} {info['seconds_per_mb']:>10.2f}")
                continue
            best = {"stage": np.inf, "bare": np.inf, "fast": np.inf}
            counts = {}
            for _ in range(args.repeats):
                seconds, counts["stage"] = time_stage(tok_path, all_shards, tmp_path)
                best["stage"] = min(best["stage"], seconds)
                for peer, fast in (("bare", False), ("fast", True)):
                    seconds, counts[peer] = time_bare(tok, texts, fast)
                    best[peer] = min(best[peer], seconds)
            assert counts["stage"] == counts["bare"] == counts["fast"], counts
            rate = {k: counts[k] / best[k] for k in best}
            print(
                f"{kind:>9} {info['seconds_per_mb']:>10.2f} {rate['stage']:>12,.0f} "
                f"{rate['bare']:>11,.0f} {rate['fast']:>11,.0f} "
                f"{rate['stage'] / rate['bare']:>10.2f} {rate['stage'] / rate['fast']:>10.2f}"
            )

        if args.skip_bad_input:
            return
        print(f"\nbad input: one line of {LINE_CHARS:,} random letters, no space")
        print(f"{'tokenizer':>9} {'step':>8} {'with line':>16} {'without':>16}")
        for kind in T.TYPES:
            for task in ("tokenize", "train"):
                cells = []
                for with_line in (True, False):
                    seconds, rss = measure_child(task, kind, tmp, with_line, args.threads)
                    cells.append(f"{seconds:6.1f} s {rss:5.0f} MiB")
                print(f"{kind:>9} {task:>8} {cells[0]:>16} {cells[1]:>16}")


if __name__ == "__main__":
    main()
