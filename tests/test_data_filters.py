"""Tests for lmscaling.filters (cleaning, Gopher, C4) and lmscaling.dedup (exact, MinHash LSH)."""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmscaling.data import CorpusSpec, corpus_spec_from_config, prepare_corpus, shard_of
from lmscaling.dedup import MinHasher, NearDupOptions, near_duplicate_clusters
from lmscaling.filters import (
    C4Filter,
    CleanOptions,
    GopherQuality,
    GopherRepetition,
    QualityOptions,
    clean_text,
)

WORDS = (
    "the of and to in that with have be river mountain village morning people history "
    "language garden evening winter travel market school friend letter music ancient"
).split()


def prose(n_sentences: int, seed: int = 0, words_per_sentence: int = 12) -> str:
    """Plain English-like prose: sentences of common words, one per line."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_sentences):
        words = [rng.choice(WORDS) for _ in range(words_per_sentence)]
        lines.append(" ".join(words).capitalize() + ".")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- cleaning


def test_each_cleaning_step_is_switchable():
    raw = "\ufeffvoil\u00c3\u00a0 le travail\r\nx\x07y  \t z\n\n\n\ncafe\u0301"
    everything = CleanOptions(collapse_whitespace=True)
    assert clean_text(raw, everything) == ("voilà le travail\nxy z\n\ncafé", True)
    assert clean_text(raw, CleanOptions()) == ("voilà le travail\nxy  \t z\n\n\n\ncafé", True)
    off = CleanOptions(
        strip_bom=False,
        fix_mojibake=False,
        unify_line_endings=False,
        remove_control_chars=False,
        nfc=False,
    )
    assert clean_text(raw, off) == (raw, False)
    assert clean_text(raw, CleanOptions(fix_mojibake=False))[0].startswith("voil\u00c3\u00a0 ")
    # Control characters removed keep \n and \t; NEL (U+0085) is a C1 control.
    assert clean_text("a\x85b\x9fc\td", CleanOptions(fix_mojibake=False))[0] == "abc\td"


def test_mojibake_repair_leaves_correct_text_alone():
    assert clean_text("He's Justin\u00e2\x9d\u00a4")[0] == "He's Justin❤"
    for good in ("Grüße, Ελληνικά «¨»", "L’épisode 8", "┌─┐ box", "plain ascii"):
        assert clean_text(good) == (good, False)


@given(st.text())
def test_cleaning_without_mojibake_repair_is_idempotent(text):
    opts = CleanOptions(fix_mojibake=False, collapse_whitespace=True)
    once, _ = clean_text(text, opts)
    assert clean_text(once, opts)[0] == once
    assert unicodedata.is_normalized("NFC", once) and "\r" not in once


def test_collapse_whitespace_keeps_single_newlines_and_paragraphs():
    opts = CleanOptions(collapse_whitespace=True, fix_mojibake=False)
    assert clean_text("a  b\u00a0\u00a0c \n\n\n\nd\t\te", opts)[0] == "a b c\n\nd e"


# ----------------------------------------------------------------------------- Gopher


def test_gopher_quality_passes_prose_and_names_each_rule():
    g = GopherQuality()
    good = prose(10)
    assert g(good) is None
    assert g("The river and the village.") == "gopher_word_count"  # < 50 words
    assert g(" ".join(["the", "of", "and"] * 30)) == "gopher_mean_word_length"  # mean 2.3
    assert g(good + " #tag" * 20) == "gopher_symbol_ratio"
    assert g(good + " ..." * 15) == "gopher_symbol_ratio"
    bullets = "\n".join("- " + line for line in good.split("\n"))
    assert g(bullets) == "gopher_bullet_lines"
    trailing = "\n".join(line + " …" for line in good.split("\n"))
    assert g(trailing) == "gopher_ellipsis_lines"
    numbers = good + " " + " ".join(str(i) for i in range(60))
    assert g(numbers) == "gopher_alpha_words"
    no_stop = " ".join(["river", "mountain", "village", "garden"] * 20)
    assert g(no_stop) == "gopher_stop_words"
    assert GopherQuality(min_words=3, min_stop_words=0)("The river and the village.") is None


def test_gopher_repetition_names_each_rule():
    g = GopherRepetition()
    assert g(prose(12, seed=1)) is None
    line = "The morning market of the village."
    paragraphs = "\n\n".join([prose(2, seed=3)] * 2 + [prose(2, seed=4)] * 2)
    assert g(paragraphs) == "gopher_dup_para_frac"
    lines = "\n".join([line] * 5 + prose(6, seed=5).split("\n"))
    assert g(lines) == "gopher_dup_line_frac"
    top = "market day " * 30 + prose(6, seed=6).replace("\n", " ")
    assert g(top) == "gopher_top_ngram"
    repeated = " ".join(prose(4, seed=7).split()[:20])
    dup = prose(6, seed=8).replace("\n", " ") + (" " + repeated) * 3
    assert g(dup) in {"gopher_dup_ngram", "gopher_top_ngram"}
    assert GopherRepetition(top_ngrams=(), dup_ngrams=((5, 0.15),))(dup) == "gopher_dup_ngram"


def test_gopher_agrees_with_datatrove():
    """Same keep/drop decision as Hugging Face datatrove's Gopher filters on varied documents
    (both with whitespace words); skipped where datatrove is not installed."""
    pytest.importorskip("datatrove")
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Whitespace(WordTokenizer):
        def word_tokenize(self, text):
            return text.split()

        def sent_tokenize(self, text):
            return [text]

        def span_tokenize(self, text):
            return [(0, len(text))]

    theirs = [
        GopherRepetitionFilter(language=Whitespace()),
        GopherQualityFilter(language=Whitespace()),
    ]
    ours = QualityOptions(gopher_repetition=GopherRepetition(), gopher_quality=GopherQuality())
    rng = random.Random(0)
    docs = []
    for i in range(150):
        text = prose(rng.randint(2, 14), seed=i, words_per_sentence=rng.randint(3, 14))
        kind = i % 5
        if kind == 1:
            text += "\n" + "\n".join(["Click here for more."] * rng.randint(1, 6))
        elif kind == 2:
            text = "\n".join("- " + s for s in text.split("\n"))
        elif kind == 3:
            text += " #" * rng.randint(0, 30)
        elif kind == 4:
            text = text.replace(".", "...")
        docs.append(text)
    decisions = []
    for text in docs:
        mine = ours(text)[1] is None
        other = all(f.filter(Document(text=text, id="x")) is True for f in theirs)
        decisions.append((mine, other))
    assert all(m == o for m, o in decisions)
    assert 20 < sum(m for m, _ in decisions) < 130  # both outcomes are exercised


# ----------------------------------------------------------------------------- C4


def test_c4_removes_lines_and_documents_by_the_papers_rules():
    c4 = C4Filter()
    body = prose(4, seed=9)
    text = "\n".join(
        [
            "Home | About | Contact",  # no terminal punctuation
            body,
            "Please enable JavaScript to view the comments powered by Disqus.",
            "This site uses cookies to improve your experience, see our policy.",
            "Too short.",  # fewer than 5 words
            "Wikipedia says the river is very long indeed.[1][citation needed]",
            "And then it went on and on...",  # ends with an ellipsis
        ]
    )
    kept, reason, removed = c4(text)
    assert reason is None and removed == 5
    assert kept == body + "\nWikipedia says the river is very long indeed."
    assert c4(body + "\nLorem ipsum dolor sit amet, consectetur.")[1] == "c4_lorem_ipsum"
    assert c4(body + "\nThe function is def f(): { return 1 } in code.")[1] == "c4_curly_bracket"
    assert c4(prose(2, seed=10))[1] == "c4_too_few_sentences"  # fewer than 3 sentences
    assert C4Filter(min_sentences=2)(prose(2, seed=10))[1] is None


def test_quality_filters_in_the_pipeline(tmp_path):
    records = [
        {"text": prose(8, seed=1)},
        {"text": prose(6, seed=40) + "\nIn code the literal {x: 1} maps a key to a value."},
        {"text": prose(8, seed=2) + "\nLorem ipsum dolor sit amet, consectetur adipiscing."},
        {"text": "Buy now! Buy now! Buy now!\n" * 20},
    ] + [{"text": prose(8, seed=s)} for s in range(3, 30)]
    path = tmp_path / "web.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = {
        "source": "files",
        "paths": [str(path)],
        "quality": {"gopher_repetition": True, "c4": True},
    }
    m = prepare_corpus(corpus_spec_from_config("web", cfg), tmp_path / "out", 1, 0.3)
    removed = {k: v for k, v in m["removed"].items() if v}
    assert removed == {"c4_curly_bracket": 1, "c4_lorem_ipsum": 1, "gopher_dup_line_frac": 1}
    assert m["documents_out"] == 28
    assert m["settings"]["quality"]["c4"]["min_words_per_line"] == 5
    assert m["settings"]["quality"]["gopher_quality"] is None
    # The same corpus with the defaults: nothing is filtered on quality.
    plain = corpus_spec_from_config("web", {"source": "files", "paths": [str(path)]})
    assert prepare_corpus(plain, tmp_path / "o2", 1, 0.3)["documents_out"] == 31


# ----------------------------------------------------------------------------- near duplicates


def test_near_duplicate_clusters_keep_the_earliest():
    m = np.array([[1, 10], [2, 20], [3, 10], [4, 40], [2, 50], [6, 50]], dtype=np.uint64)
    # rows 0 and 2 share band 1; rows 1, 4 share band 0 and 4, 5 share band 1: {1, 4, 5}
    assert near_duplicate_clusters(m).tolist() == [0, 1, 0, 3, 1, 1]
    assert near_duplicate_clusters(np.zeros((0, 3), np.uint64)).tolist() == []


def test_minhash_bands_find_near_duplicates():
    h = MinHasher(NearDupOptions(threshold=0.8))
    assert h.bands * h.rows <= 128 and h.bands > 1
    base = prose(20, seed=11)
    words = base.split()
    words[17] = "zebra"
    near = " ".join(words)
    other = prose(20, seed=12)
    b0, b1, b2 = h.band_hashes(base), h.band_hashes(near), h.band_hashes(other)
    assert len(b0) == h.bands and all(0 <= v < 2**64 for v in b0)
    assert b0 == MinHasher(NearDupOptions(threshold=0.8)).band_hashes(base)  # deterministic
    assert len(set(b0) & set(b1)) >= 1
    assert not set(b0) & set(b2)


def test_near_dedup_across_shards_in_the_pipeline(tmp_path):
    docs = [prose(20, seed=s) for s in range(40)]
    variants = []
    for s in (3, 7, 11):
        words = docs[s].split()
        words[5] = "zebra"
        variants.append(" ".join(words))
    records = [{"text": t} for t in docs + variants + [docs[0]]]
    path = tmp_path / "web.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert {shard_of(docs[s], 4) for s in (3, 7, 11)} != {shard_of(v, 4) for v in variants}
    cfg = {"source": "files", "paths": [str(path)], "dedup": {"near": True}}
    m = prepare_corpus(corpus_spec_from_config("web", cfg), tmp_path / "out", 4, 0.3)
    assert m["removed"]["near_duplicate"] == 3 and m["removed"]["duplicate"] == 1
    assert m["documents_out"] == 40
    kept = set()
    for s in m["shards"]:
        kept |= set(pq.read_table(tmp_path / "out" / s["path"]).column("text").to_pylist())
    assert kept == set(docs)  # the earlier copy of each cluster is kept
    assert sorted(e["source"].split(":")[1] for e in m["examples"]["near_duplicate"]) == [
        "41",
        "42",
        "43",
    ]


def test_default_stdlib_spec_keeps_python_source(tmp_path):
    spec = corpus_spec_from_config("std", {"source": "python-stdlib", "include": ["json/*.py"]})
    assert spec.quality.reasons == () and spec.near_dedup is None
    assert not spec.clean.collapse_whitespace
    m = prepare_corpus(spec, tmp_path / "out", 1, 0.5)
    quality = [r for r in m["removed"] if r.startswith(("gopher", "c4"))]
    assert quality and all(m["removed"][r] == 0 for r in quality)
    # The papers' web filters would delete most of this code; that is why they are opt-in.
    web = QualityOptions(GopherRepetition(), GopherQuality(), C4Filter())
    texts = [
        t
        for s in m["shards"]
        for t in pq.read_table(tmp_path / "out" / s["path"])["text"].to_pylist()
    ]
    assert sum(web(t)[1] is not None for t in texts) > 0.5 * len(texts)
    assert isinstance(CorpusSpec("x", "python-stdlib").quality, QualityOptions)
    assert Path(tmp_path / "out" / "filter_report.csv").is_file()
