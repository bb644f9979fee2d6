"""Exact round trip: decode(encode(s)) == s for every text the cleaning stage can emit.

The cleaning stage (:func:`lmscaling.data.normalize`) emits NFC text without control characters
except newline and tab. Both tokenizer types are checked on named hard cases and on arbitrary
Unicode (hypothesis), through the same calls the tokenize stage makes.
"""

import random

import numpy as np
import pytest
from conftest import make_texts, write_shard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmscaling import tokenizer as T
from lmscaling.data import normalize

MULTILINGUAL = [
    "Übergrößenträger straßenbahn naïve café façade",
    "数据科学 机器学习 漢字 ひらがな カタカナ 한국어 텍스트",
    "مرحبا بالعالم. שלום עולם. Привет, мир! Γειά σου κόσμε",
    "emoji 🙂👍🏽🇫🇷👩‍👩‍👧‍👦 and math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∑∫√",
]


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def tok(request, tmp_path_factory):
    """A trained tokenizer of each type, loaded as the tokenize stage loads it."""
    tmp = tmp_path_factory.mktemp(request.param)
    texts = make_texts(300, seed=5) + MULTILINGUAL * 20
    shard = write_shard(tmp / "train" / "part-00000.parquet", texts)
    spec = T.TokenizerSpec(request.param, 600, type=request.param, bos=True, pad=True)
    T.train_tokenizer(spec, [shard], tmp / "tokenizer.json")
    return T.load_tokenizer(tmp / "tokenizer.json")


def assert_round_trip(tok, text: str) -> None:
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert tok.decode(ids) == text
    assert not {0, 1, 2} & set(ids)  # no special id inside text
    # the batch encoder of the tokenize stage gives the same ids
    assert tok.encode_batch_fast([text], add_special_tokens=False)[0].ids == ids


rng = random.Random(0)
NAMED = {
    "emoji zwj family": "👩‍👩‍👧‍👦 👨🏽‍💻 🏳️‍🌈",
    "emoji flags and skin tones": "🇫🇷🇯🇵 👍🏻👍🏿 ✋🏽",
    "combining marks without precomposed form": "q\u0307\u0323 x\u0301\u0302 a\u20dd",
    "zalgo": "Z\u0351\u0300\u0352a\u0341\u0344\u0330l\u0310\u0358g\u0306o\u0300\u0334",
    "crlf": "line one\r\nline two\rline three\n",
    "nel and line/paragraph separators": "a\u0085b\u2028c\u2029d",
    "tabs and runs of spaces": "\tdef f():\n\t\treturn  1    +\t2   \n\n\n",
    "leading and trailing spaces": "   both sides   ",
    "cjk": "機械学習は データから 学ぶ。これは日本語の文です。中文句子。",
    "korean": "안녕하세요 세계",
    "rtl arabic and hebrew": "العربية من اليمين إلى اليسار، עברית גם כן.",
    "bidi controls": "abc \u202eevil\u202c \u200fRTL mark\u200e",
    "mixed scripts": "Pythonで機械学習 (ML) и нейросети — Ωmega=42€ 🐍",
    "zero width and bom inside": "zero\u200bwidth join\u200dnon\u200c \ufeffmid-bom",
    "private use and noncharacters": "\ue000\uf8ff \U000f0000 \ufdd0 \uffff",
    "replacement char": "bad byte \ufffd here",
    "spells special tokens": "<|endoftext|><|bos|><|pad|> <|endoftext|",
    "long run of letters": "a" * 5000,
    "long run of random letters": "".join(rng.choice("abcdefghij") for _ in range(20_000)),
    "long run of digits": "1234567890" * 300,
    "long run of cjk": "漢字仮名交じり文" * 500,
    "long run of emoji": "🙂" * 1000,
    "long base64-like line": "".join(
        rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        for _ in range(10_000)
    ),
    "only newlines": "\n\n\n",
    "single space": " ",
    "empty": "",
}


@pytest.mark.parametrize("name", list(NAMED))
def test_named_cases_round_trip_after_normalize(tok, name):
    text = normalize(NAMED[name])
    assert_round_trip(tok, text)


def test_normalize_output_on_the_named_line_breaks():
    # what the cleaning stage emits, and so what the tokenizers must reproduce
    assert normalize(NAMED["crlf"]) == "line one\nline two\nline three\n"
    assert normalize(NAMED["nel and line/paragraph separators"]) == "ab\u2028c\u2029d"
    assert normalize("e\u0301") == "\u00e9"


def test_round_trip_in_token_shards(tok, tmp_path):
    """Documents written by the tokenize stage decode back to exactly their text."""
    texts = [normalize(t) for t in NAMED.values() if normalize(t)]
    tok_path = tmp_path / "tokenizer.json"
    tok.save(str(tok_path))
    shard = write_shard(tmp_path / "val" / "part-00000.parquet", texts)
    meta = T.tokenize_shard(tok_path, shard, tmp_path / "t.bin", tmp_path / "t.json", batch_docs=4)
    arr = np.fromfile(tmp_path / "t.bin", dtype=meta["dtype"])
    docs = np.split(arr, np.flatnonzero(arr == meta["eot_id"]) + 1)[:-1]
    assert all(d[0] == meta["bos_id"] for d in docs)
    assert [tok.decode(d[1:-1].tolist()) for d in docs] == texts
    assert meta["bytes"] == sum(len(t.encode()) for t in texts)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=200))
def test_arbitrary_unicode_round_trips_after_normalize(tok, raw):
    assert_round_trip(tok, normalize(raw))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.sampled_from(["a", "é", " ", "\n", "\t", "\u0301", "\u200d", "👩", "漢", "ا", "<|"]),
        max_size=300,
    )
)
def test_adversarial_mixtures_round_trip(tok, pieces):
    assert_round_trip(tok, normalize("".join(pieces)))
