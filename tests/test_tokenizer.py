"""lmscaling.tokenizer: specs, training sample, training, token shards, manifest."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_texts, write_shard

from lmscaling import tokenizer as T


def test_spec_from_config_and_dtype():
    spec = T.tokenizer_spec_from_config("bpe-300", {"type": "bpe", "vocab_size": 300})
    assert spec.vocab_size == 300 and spec.dtype == np.dtype("<u2") and spec.type == "bpe"
    uni = T.tokenizer_spec_from_config(
        "u", {"type": "unigram", "vocab_size": 400, "bos": True, "pad": True}
    )
    assert uni.type == "unigram" and uni.special_tokens == [T.EOT, T.BOS, T.PAD]
    assert T.TokenizerSpec("big", vocab_size=70_000).dtype == np.dtype("<u4")
    assert T.token_dtype(65_536) == np.dtype("<u2") and T.token_dtype(65_537) == np.dtype("<u4")
    with pytest.raises(T.TokenizerError, match=r"tokenizers.x: unknown key"):
        T.tokenizer_spec_from_config("x", {"vocab_size": 300, "vocab": 3})
    with pytest.raises(T.TokenizerError, match=r"tokenizers.x.type"):
        T.tokenizer_spec_from_config("x", {"vocab_size": 300, "type": "wordpiece"})
    with pytest.raises(T.TokenizerError, match=r"tokenizers.x.vocab_size is required"):
        T.tokenizer_spec_from_config("x", {"type": "bpe"})
    with pytest.raises(T.TokenizerError, match="vocab_size = 100"):
        T.TokenizerSpec("x", vocab_size=100)
    # 256 byte symbols + 3 special tokens do not fit in 258
    with pytest.raises(T.TokenizerError, match="at least 259"):
        T.TokenizerSpec("x", vocab_size=258, bos=True, pad=True)


def test_set_threads_sets_the_pool_size(monkeypatch):
    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    T.set_threads(3)
    assert os.environ["RAYON_NUM_THREADS"] == "3"
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
    with pytest.raises(T.TokenizerError, match="threads"):
        T.set_threads(0)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
@pytest.mark.parametrize("threads", [1, 3])
def test_encoder_pool_has_the_rule_threads(threads):
    """set_threads(n) before the first encode: the library's pool starts exactly n threads."""
    code = (
        "import os\n"
        "from lmscaling import tokenizer as T\n"
        f"T.set_threads({threads})\n"
        "from tokenizers import Tokenizer, models, pre_tokenizers\n"
        "tok = Tokenizer(models.BPE())\n"
        "tok.pre_tokenizer = pre_tokenizers.ByteLevel()\n"
        "before = len(os.listdir('/proc/self/task'))\n"
        "tok.encode_batch_fast(['some text'] * 2000)\n"
        "print(len(os.listdir('/proc/self/task')) - before)\n"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("RAYON_NUM_THREADS", "RAYON_RS_NUM_CPUS")
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == threads


def test_training_sample_is_deterministic_uniform_and_train_only(tmp_path):
    texts = make_texts(300, seed=3)
    a = [
        write_shard(tmp_path / "a" / "train" / "part-00000.parquet", texts[:150]),
        write_shard(tmp_path / "a" / "train" / "part-00001.parquet", texts[150:]),
    ]
    # the same documents in other shards and another order: the same sample
    b = [write_shard(tmp_path / "b" / "train" / "part-00000.parquet", texts[::-1])]
    total = sum(len(t.encode()) for t in texts)
    budget = total // 4
    sample_a = list(T.sample_train_texts(a, budget))
    sample_b = list(T.sample_train_texts(b, budget))
    assert sorted(sample_a) == sorted(sample_b)
    assert sample_a == [t for t in texts if t in set(sample_a)]  # shard and row order
    used = sum(len(t.encode()) for t in sample_a)
    longest = max(len(t.encode()) for t in texts)
    assert budget <= used < budget + longest
    # the sample is spread over the corpus, not a prefix of it
    positions = [texts.index(t) for t in sample_a]
    assert min(positions) < 60 and max(positions) > 240
    # the lowest ranks are taken: every document left out ranks above every one taken
    top = max(T._doc_key(t) for t in sample_a)
    assert all(T._doc_key(t) > top for t in texts if t not in sample_a)
    assert list(T.sample_train_texts(a, 0)) == texts
    assert list(T.sample_train_texts(a, 10 * total)) == texts
    val = write_shard(tmp_path / "c" / "val" / "part-00000.parquet", texts[:3])
    with pytest.raises(T.TokenizerError, match="train split only"):
        list(T.sample_train_texts([val], 0))


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_train_special_ids_round_trip_and_info(tmp_path, train_shards, kind):
    spec = T.TokenizerSpec(f"{kind}-300", vocab_size=300, type=kind, bos=True, pad=True)
    tok = T.train_tokenizer(
        spec, train_shards, tmp_path / "tok" / "tokenizer.json", tmp_path / "info.json"
    )
    info = json.loads((tmp_path / "info.json").read_text())
    assert [tok.token_to_id(t) for t in (T.EOT, T.BOS, T.PAD)] == [0, 1, 2]
    assert info["special_tokens"] == {T.EOT: 0, T.BOS: 1, T.PAD: 2}
    assert info["type"] == kind and info["docs"] == 400 and info["tokenizer"] == f"{kind}-300"
    assert info["bytes"] == sum(len(t.encode()) for t in make_texts(400, seed=1))
    assert info["vocab_size_trained"] == tok.get_vocab_size() <= 300
    assert info["seconds_per_mb"] == pytest.approx(info["seconds"] / (info["bytes"] / 1e6))
    loaded = T.load_tokenizer(tmp_path / "tok" / "tokenizer.json")
    # every byte symbol is in the vocabulary, so any text can be encoded
    vocab = loaded.get_vocab()
    assert all(
        symbol in vocab for symbol in __import__("tokenizers").pre_tokenizers.ByteLevel.alphabet()
    )
    for s in ["def f(x):\n\treturn x  # ok", "数据 🙂 naïve\n", "  leading", "\u2028|x"]:
        ids = loaded.encode(s, add_special_tokens=False).ids
        assert loaded.decode(ids) == s
        assert not {0, 1, 2} & set(ids)  # special ids never appear inside text


def test_bpe_vocab_filled_and_budget_limits_training_text(tmp_path, train_shards):
    tok = T.train_tokenizer(T.TokenizerSpec("a", 300), train_shards, tmp_path / "a.json")
    assert tok.get_vocab_size() == 300
    spec = T.TokenizerSpec("b", 2000, train_bytes=200)
    small = T.train_tokenizer(spec, train_shards, tmp_path / "b.json", tmp_path / "info.json")
    info = json.loads((tmp_path / "info.json").read_text())
    full = T.train_tokenizer(T.TokenizerSpec("c", 2000), train_shards, tmp_path / "c.json")
    # fewer training bytes can fill fewer merges
    assert 200 <= info["bytes"] < 600 and info["docs"] < 10
    assert small.get_vocab_size() < full.get_vocab_size()


def test_vocab_larger_than_corpus_can_fill_finishes_with_a_warning(tmp_path, caplog):
    shard = write_shard(tmp_path / "train" / "part-00000.parquet", ["abab abab abab"] * 3)
    for kind in ("bpe", "unigram"):
        spec = T.TokenizerSpec(f"{kind}-big", 50_000, type=kind)
        tok = T.train_tokenizer(spec, [shard], tmp_path / kind / "t.json", tmp_path / "i.json")
        info = json.loads((tmp_path / "i.json").read_text())
        assert 257 <= info["vocab_size_trained"] < 300
        assert f"filled only {info['vocab_size_trained']} of the 50000" in caplog.text
        assert f"tokenizers.{kind}-big.vocab_size" in caplog.text
        assert tok.decode(tok.encode("abab zzz").ids) == "abab zzz"


def test_empty_train_split_is_a_clear_error(tmp_path):
    empty = write_shard(tmp_path / "train" / "part-00000.parquet", [])
    for kind in ("bpe", "unigram"):
        with pytest.raises(T.TokenizerError, match="train split is empty"):
            T.train_tokenizer(
                T.TokenizerSpec("x", 300, type=kind), [empty], tmp_path / "tokenizer.json"
            )
        assert not (tmp_path / "tokenizer.json").exists()


def test_load_refuses_a_foreign_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models

    Tokenizer(models.BPE(vocab={"a": 0}, merges=[])).save(str(tmp_path / "t.json"))
    with pytest.raises(T.TokenizerError, match="t.json.*not token 0"):
        T.load_tokenizer(tmp_path / "t.json")


@pytest.mark.parametrize("bos", [False, True])
def test_tokenize_shard_layout_and_counts(tmp_path, train_shards, bos):
    tok_path = tmp_path / "tokenizer.json"
    tok = T.train_tokenizer(T.TokenizerSpec("bpe", 500, bos=bos), train_shards, tok_path)
    texts = make_texts(50, seed=7) + ["spells <|endoftext|> and <|bos|> inside"]
    shard = write_shard(tmp_path / "val" / "part-00000.parquet", texts)
    meta = T.tokenize_shard(tok_path, shard, tmp_path / "t.bin", tmp_path / "t.json", batch_docs=7)
    prefix = [1] if bos else []
    expected = []
    for text in texts:
        expected += prefix + tok.encode(text, add_special_tokens=False).ids + [0]
    arr = np.fromfile(tmp_path / "t.bin", dtype="<u2")
    assert arr.tolist() == expected
    assert meta["tokens"] == len(expected)
    assert meta["text_tokens"] == len(expected) - len(texts) * (1 + bos)
    assert meta["docs"] == 51
    assert meta["bytes"] == sum(len(t.encode("utf-8")) for t in texts)
    assert meta["dtype"] == "uint16" and meta["eot_id"] == 0
    assert meta["bos_id"] == (1 if bos else None)
    assert json.loads((tmp_path / "t.json").read_text()) == meta
    # every document decodes back to its text, special-token spellings included
    docs = np.split(arr, np.flatnonzero(arr == 0) + 1)[:-1]
    assert len(docs) == 51
    assert [tok.decode(d[len(prefix) : -1].tolist()) for d in docs] == texts

    mapped = T.open_token_shard(tmp_path / "t.bin")
    assert isinstance(mapped, np.memmap) and mapped.tolist() == expected
    tokens, totals = T.read_token_shards([tmp_path / "t.bin", tmp_path / "t.bin"])
    assert tokens.dtype == np.int64 and tokens.size == 2 * len(expected)
    assert totals == {
        "tokens": 2 * len(expected),
        "bytes": 2 * meta["bytes"],
        "docs": 102,
        "eot_id": 0,
    }


def test_uint32_shards_for_large_vocabularies(tmp_path, monkeypatch, train_shards):
    tok_path = tmp_path / "tokenizer.json"
    T.train_tokenizer(T.TokenizerSpec("bpe", 300), train_shards, tok_path)
    monkeypatch.setattr(T, "token_dtype", lambda vocab: np.dtype("<u4"))
    meta = T.tokenize_shard(tok_path, train_shards[0], tmp_path / "t.bin", tmp_path / "t.json")
    assert meta["dtype"] == "uint32"
    assert (tmp_path / "t.bin").stat().st_size == 4 * meta["tokens"]
    tokens, _ = T.read_token_shards([tmp_path / "t.bin"])
    assert tokens.max() < 300 and tokens[-1] == 0


def test_empty_shard_gives_an_empty_array(tmp_path, train_shards):
    tok_path = tmp_path / "tokenizer.json"
    T.train_tokenizer(T.TokenizerSpec("bpe", 300), train_shards, tok_path)
    empty = write_shard(tmp_path / "val" / "part-00000.parquet", [])
    meta = T.tokenize_shard(tok_path, empty, tmp_path / "t.bin", tmp_path / "t.json")
    assert meta["tokens"] == meta["docs"] == meta["bytes"] == 0
    assert T.open_token_shard(tmp_path / "t.bin").size == 0


def test_truncated_token_shard_is_detected(tmp_path, train_shards):
    tok_path = tmp_path / "tokenizer.json"
    T.train_tokenizer(T.TokenizerSpec("bpe", 300), train_shards, tok_path)
    T.tokenize_shard(tok_path, train_shards[0], tmp_path / "t.bin", tmp_path / "t.json")
    data = (tmp_path / "t.bin").read_bytes()
    (tmp_path / "t.bin").write_bytes(data[:-4])
    with pytest.raises(T.TokenizerError, match="sidecar says"):
        T.read_token_shards([tmp_path / "t.bin"])


def _tokenize_corpus(tmp_path, tok_path, root):
    """Token shards of one corpus 'c' (train: 2 shards, val: 1) under ``root``."""
    texts = {
        ("train", "00000"): make_texts(40, seed=11),
        ("train", "00001"): make_texts(40, seed=12),
        ("val", "00000"): make_texts(30, seed=13),
    }
    bins = []
    for (split, shard), docs in texts.items():
        parquet = write_shard(tmp_path / "data" / split / f"part-{shard}.parquet", docs)
        out = root / "c" / split / f"part-{shard}"
        T.tokenize_shard(tok_path, parquet, out.with_suffix(".bin"), out.with_suffix(".json"))
        bins.append(out.with_suffix(".bin"))
    return bins, texts


def test_manifest_statistics_and_checksums(tmp_path, train_shards):
    tok_path = tmp_path / "tokenizer.json"
    tok = T.train_tokenizer(T.TokenizerSpec("bpe", 400, bos=True), train_shards, tok_path)
    root = tmp_path / "tokens" / "bpe"
    bins, texts = _tokenize_corpus(tmp_path, tok_path, root)
    manifest = T.write_manifest("bpe", tok_path, bins, root / "manifest.json", chunk_tokens=100)
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert manifest["special_tokens"] == {T.EOT: 0, T.BOS: 1}
    assert [s["path"] for s in manifest["shards"]] == [
        "c/train/part-00000.bin",
        "c/train/part-00001.bin",
        "c/val/part-00000.bin",
    ]
    val_ids = [i for t in texts["val", "00000"] for i in tok.encode(t).ids]
    val = manifest["splits"]["val"]
    assert val["docs"] == 30 and val["text_tokens"] == len(val_ids)
    assert val["tokens"] == len(val_ids) + 2 * 30
    assert val["bytes"] == sum(len(t.encode()) for t in texts["val", "00000"])
    assert val["bytes_per_token"] == pytest.approx(val["bytes"] / len(val_ids))
    assert val["vocab_used"] == len(set(val_ids))
    vocab = tok.get_vocab_size()  # the training text fills fewer than 400 entries
    assert manifest["vocab_size"] == vocab and manifest["dtype"] == "uint16"
    assert val["vocab_used_fraction"] == pytest.approx(len(set(val_ids)) / (vocab - 2))
    assert manifest["splits"]["train"]["docs"] == 80

    # a changed byte is caught by the checksum
    data = bytearray(bins[2].read_bytes())
    data[0] ^= 1
    bins[2].write_bytes(bytes(data))
    with pytest.raises(T.TokenizerError, match="part-00000.bin: sha256"):
        T.write_manifest("bpe", tok_path, bins, root / "manifest2.json")
    # shards of another tokenizer are refused
    other = tmp_path / "other.json"
    T.train_tokenizer(T.TokenizerSpec("bpe", 300), train_shards, other)
    with pytest.raises(T.TokenizerError, match="another tokenizer"):
        T.write_manifest("bpe", other, bins[:1], root / "manifest3.json")


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_long_line_without_spaces_trains_and_encodes_exactly(tmp_path, kind):
    """A line of 10^6 characters without a space: trained on, encoded, decoded back exactly.

    Runs of 256 non-space characters are cut apart before the byte-level split, so the line
    costs what 4,000 ordinary words cost (peak memory: benchmarks/tokenize_speed.py).
    """
    rng = np.random.default_rng(0)
    line = "".join(np.array(list("abcdefghijklmnopqrstuvwxyz"))[rng.integers(0, 26, 10**6)])
    train = write_shard(
        tmp_path / "train" / "part-00000.parquet", make_texts(100, seed=2) + [line[:20_000]]
    )
    tok_path = tmp_path / "tokenizer.json"
    tok = T.train_tokenizer(T.TokenizerSpec(kind, 400, type=kind), [train], tok_path)
    shard = write_shard(tmp_path / "val" / "part-00000.parquet", ["short doc", line])
    meta = T.tokenize_shard(tok_path, shard, tmp_path / "t.bin", tmp_path / "t.json")
    assert meta["docs"] == 2 and meta["bytes"] == 10**6 + 9
    arr = T.open_token_shard(tmp_path / "t.bin")
    ends = np.flatnonzero(arr == 0)
    assert ends.size == 2 and ends[-1] == arr.size - 1
    assert tok.decode(arr[ends[0] + 1 : -1].tolist()) == line


def test_huge_documents_are_cut_for_training_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "MAX_TRAIN_DOC_CHARS", 1000)
    texts = make_texts(50, seed=4) + ["é" * 5000]
    shard = write_shard(tmp_path / "train" / "part-00000.parquet", texts)
    T.train_tokenizer(T.TokenizerSpec("b", 300), [shard], tmp_path / "t.json", tmp_path / "i.json")
    info = json.loads((tmp_path / "i.json").read_text())
    assert info["truncated_docs"] == 1 and info["docs"] == 51
    assert info["bytes"] == sum(len(t.encode()) for t in texts[:50]) + 2 * 1000
