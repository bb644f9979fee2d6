"""Corpus preparation speed and memory: lmscaling against datatrove and the I/O floor.

On one generated web-like JSON Lines corpus (English-like prose with navigation lines, cookie
notices, bullet lists, repeated lines and exact duplicates), measured in this one run:

- floor: a bare ``polars.read_ndjson`` of the input and ``write_parquet`` (zstd) of its text:
  the least any preparation must spend on I/O;
- ours-default: ``lmscaling.data.prepare_corpus`` with the default cleaning (BOM, mojibake
  repair, line endings, control characters, NFC), exact dedup and sharding, as the demo runs;
- ours-filters: the same plus Gopher repetition, Gopher quality and C4 (mojibake repair off,
  as the peer does none);
- datatrove: Hugging Face datatrove's ``JsonlReader`` -> ``GopherRepetitionFilter`` ->
  ``GopherQualityFilter`` -> ``C4QualityFilter`` (the C4 paper's 3 sentences / 5 words per
  line) -> ``ParquetWriter``, one task, with the same whitespace word split and sentence
  counting as ours (its defaults need spaCy/NLTK models);

and prints input MB/s for each with the ratios ours-filters / datatrove (goal >= 2),
ours-default / floor (the stage as configured by default; goal >= 0.4) and ours-filters / floor
(what the opt-in Gopher and C4 rules cost; no goal). Each figure is the median of
``--rounds`` alternating rounds, so background load affects all alike. Then peak RSS of a fresh
process running ours-filters with near-dup on at 1x and 8x the corpus size (goal: 8x / 1x <=
1.5).

Usage: python benchmarks/prepare_speed.py [--mb 16] [--rounds 3] [--skip-rss]
Needs: datatrove (pip install datatrove) for the peer; the rest runs without it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("POLARS_MAX_THREADS", "1")  # one core for every contender

import polars as pl  # noqa: E402

from lmscaling.argtypes import positive_float, positive_int
from lmscaling.data import DataOptions, corpus_spec_from_config, prepare_corpus  # noqa: E402

WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "river mountain village morning people history language garden evening winter travel "
    "market school friend letter music ancient government country system number company "
    "research development information community education national process important"
).split()
BOILERPLATE = [
    "Home | About | Contact | Blog",
    "This website uses cookies to improve your experience.",
    "Please enable JavaScript to view the comments.",
    "Share this: Facebook Twitter Email",
    "Read more...",
]
FILTERS = {"gopher_repetition": True, "gopher_quality": True, "c4": True}
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")


def make_document(rng: random.Random) -> str:
    """One web page: boilerplate lines around paragraphs of prose, sometimes a list."""
    lines = rng.sample(BOILERPLATE, rng.randint(0, 3))
    for _ in range(rng.randint(2, 12)):
        sentences = []
        for _ in range(rng.randint(1, 6)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 22))]
            sentences.append(" ".join(words).capitalize() + rng.choice(".....!?"))
        lines.append(" ".join(sentences))
        if rng.random() < 0.15:
            lines += [
                f"- {rng.choice(WORDS)} {rng.choice(WORDS)}" for _ in range(rng.randint(3, 8))
            ]
        if rng.random() < 0.05:
            lines += [lines[-1]] * rng.randint(2, 6)  # repeated lines
    return "\n".join(lines)


def make_corpus(folder: Path, megabytes: float, seed: int = 0) -> int:
    """Write ``megabytes`` of JSON Lines (four files, about 3% exact duplicates)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    target = int(megabytes * 1e6)
    files = [open(folder / f"part-{i}.jsonl", "w", encoding="utf-8") for i in range(4)]
    written = 0
    recent: list[str] = []
    while written < target:
        text = rng.choice(recent) if recent and rng.random() < 0.03 else make_document(rng)
        recent = (recent + [text])[-100:]
        line = json.dumps({"text": text, "id": f"doc-{written}"}) + "\n"
        files[written % 4].write(line)
        written += len(line.encode())
    for f in files:
        f.close()
    return written


def floor(src: Path, out: Path) -> None:
    """Bare polars read of the input and Parquet write of its text column."""
    out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(sorted(src.glob("*.jsonl"))):
        df = pl.read_ndjson(path).select("text")
        df.write_parquet(out / f"part-{i}.parquet", compression="zstd")


def ours(src: Path, out: Path, filters: bool, near: bool = False) -> dict:
    cfg: dict = {"source": "files", "paths": [str(src)]}
    if filters:
        cfg["quality"] = FILTERS
        cfg["clean"] = {"fix_mojibake": False}
    if near:
        cfg["dedup"] = {"near": True}
    spec = corpus_spec_from_config("bench", cfg)
    return prepare_corpus(spec, out, num_shards=4, val_fraction=0.05, opts=DataOptions())


def datatrove_run(src: Path, out: Path, logs: Path) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Whitespace(WordTokenizer):
        """Whitespace words and punctuation-ended sentences, as lmscaling.filters counts them."""

        def word_tokenize(self, text):
            return text.split()

        def sent_tokenize(self, text):
            return [text[a:b] for a, b in self.span_tokenize(text)]

        def span_tokenize(self, text):
            ends = [m.end() for m in _SENTENCE_END.finditer(text)] or [len(text)]
            return list(zip([0, *ends[:-1]], ends, strict=True))

    ws = Whitespace()
    LocalPipelineExecutor(
        pipeline=[
            JsonlReader(str(src), glob_pattern="*.jsonl"),
            GopherRepetitionFilter(language=ws),
            GopherQualityFilter(language=ws),
            C4QualityFilter(language=ws, min_num_sentences=3, min_words_per_line=5),
            ParquetWriter(str(out), compression="zstd"),
        ],
        tasks=1,
        workers=1,
        logging_dir=str(logs),
    ).run()


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn(*args)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


RSS_CHILD = """
import resource, sys
sys.path.insert(0, {bench!r})
from prepare_speed import ours
from pathlib import Path
m = ours(Path({src!r}), Path({out!r}), filters=True, near=True)
print(m["documents_in"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss(src: Path, out: Path) -> tuple[int, float]:
    """(documents, peak RSS in MiB) of a fresh process preparing ``src``."""
    code = RSS_CHILD.format(bench=str(Path(__file__).parent), src=str(src), out=str(out))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    docs, kib = result.stdout.split()
    return int(docs), int(kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=positive_float, default=16.0, help="corpus size at 1x, MB")
    parser.add_argument("--rounds", type=positive_int, default=3, help="timed runs per side")
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    try:
        import datatrove  # noqa: F401

        have_peer = True
    except ImportError:
        have_peer = False
        print("datatrove is not installed: the peer is skipped (pip install datatrove)")

    with tempfile.TemporaryDirectory(prefix="prepare-speed-") as tmp:
        tmp = Path(tmp)
        nbytes = make_corpus(tmp / "in", args.mb)
        mb = nbytes / 1e6
        names = ["floor", "ours-default", "ours-filters"] + (["datatrove"] if have_peer else [])
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        kept = {}
        for r in range(args.rounds):
            for name in names:
                out = tmp / f"out-{name}-{r}"
                if name == "floor":
                    times[name].append(timed(floor, tmp / "in", out))
                elif name == "datatrove":
                    times[name].append(timed(datatrove_run, tmp / "in", out, tmp / f"logs-{r}"))
                else:
                    filters = name == "ours-filters"
                    times[name].append(timed(ours, tmp / "in", out, filters))
                    m = json.loads((out / "manifest.json").read_text())
                    kept[name] = (m["documents_in"], m["documents_out"])
                shutil.rmtree(out, ignore_errors=True)
        # CPU seconds of this process are the headline: every contender runs on one core in
        # this process, and CPU time does not count waiting for other programs on the machine.
        cpu = {n: mb / statistics.median(c for _, c in t) for n, t in times.items()}
        wall = {n: mb / statistics.median(w for w, _ in t) for n, t in times.items()}
        print(f"input: {mb:.1f} MB of JSON Lines; median of {args.rounds} rounds; one core each")
        print(f"  {'':13s} {'MB/CPU-s':>9s} {'MB/s wall':>10s}")
        for name in names:
            extra = f"  documents in/out {kept[name]}" if name in kept else ""
            print(f"  {name:13s} {cpu[name]:9.2f} {wall[name]:10.2f}{extra}")

        def ratio(a: str, b: str, goal: str) -> None:
            print(f"{a} / {b}: {cpu[a] / cpu[b]:.2f}x CPU, {wall[a] / wall[b]:.2f}x wall ({goal})")

        if have_peer:
            ratio("ours-filters", "datatrove", "goal >= 2")
        ratio("ours-default", "floor", "goal >= 0.4")
        ratio("ours-filters", "floor", "the opt-in quality filters' cost, no goal")

        if not args.skip_rss:
            make_corpus(tmp / "in8", args.mb * 8, seed=1)
            d1, rss1 = peak_rss(tmp / "in", tmp / "rss1")
            d8, rss8 = peak_rss(tmp / "in8", tmp / "rss8")
            print(
                f"peak RSS, filters + exact + near dedup: 1x ({d1} docs) {rss1:.0f} MiB, "
                f"8x ({d8} docs) {rss8:.0f} MiB: growth {rss8 / rss1:.2f}x (goal <= 1.5)"
            )


if __name__ == "__main__":
    main()
