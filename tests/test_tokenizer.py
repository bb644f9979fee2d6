import numpy as np
import pytest
from conftest import make_texts, write_shard

from lmscaling import tokenizer as T


def test_spec_from_config_and_dtype():
    spec = T.tokenizer_spec_from_config("bpe-300", {"type": "bpe", "vocab_size": 300})
    assert spec.vocab_size == 300 and spec.dtype == np.dtype("<u2")
    assert T.TokenizerSpec("big", vocab_size=70_000).dtype == np.dtype("<u4")
    with pytest.raises(T.TokenizerError, match=r"tokenizers.x: unknown key"):
        T.tokenizer_spec_from_config("x", {"vocab_size": 300, "vocab": 3})
    with pytest.raises(T.TokenizerError, match=r"tokenizers.x.type"):
        T.tokenizer_spec_from_config("x", {"vocab_size": 300, "type": "wordpiece"})
    with pytest.raises(T.TokenizerError, match="vocab_size = 100"):
        T.TokenizerSpec("x", vocab_size=100)


def test_train_round_trip_and_eot(tmp_path, train_shards):
    spec = T.TokenizerSpec("bpe-300", vocab_size=300)
    tok = T.train_tokenizer(spec, train_shards, tmp_path / "tok" / "tokenizer.json")
    assert tok.get_vocab_size() == 300
    assert tok.token_to_id(T.EOT) == 0
    loaded = T.load_tokenizer(tmp_path / "tok" / "tokenizer.json")
    for s in ["def f(x):\n\treturn x  # ok", "数据 🙂 naïve\r\n", "  leading", "\u2028|\u0085"]:
        ids = loaded.encode(s, add_special_tokens=False).ids
        assert loaded.decode(ids) == s
        assert 0 not in ids  # the end-of-text id never appears inside text


def test_train_bytes_budget_limits_training_text(tmp_path, train_shards):
    small = T.train_tokenizer(
        T.TokenizerSpec("a", 2000, train_bytes=200), train_shards, tmp_path / "a.json"
    )
    full = T.train_tokenizer(T.TokenizerSpec("b", 2000), train_shards, tmp_path / "b.json")
    # fewer training bytes can fill fewer merges
    assert small.get_vocab_size() < full.get_vocab_size()


def test_empty_train_split_is_a_clear_error(tmp_path):
    empty = write_shard(tmp_path / "train" / "part-00000.parquet", [])
    with pytest.raises(T.TokenizerError, match="train split is empty"):
        T.train_tokenizer(T.TokenizerSpec("x", 300), [empty], tmp_path / "tokenizer.json")
    assert not (tmp_path / "tokenizer.json").exists()


def test_tokenize_shard_counts(tmp_path, train_shards):
    tok_path = tmp_path / "tokenizer.json"
    tok = T.train_tokenizer(T.TokenizerSpec("bpe", 500), train_shards, tok_path)
    texts = make_texts(50, seed=7)
    shard = write_shard(tmp_path / "val" / "part-00000.parquet", texts)
    meta = T.tokenize_shard(tok_path, shard, tmp_path / "t.bin", tmp_path / "t.json", batch_docs=7)
    expected = []
    for text in texts:
        expected += tok.encode(text, add_special_tokens=False).ids + [0]
    arr = np.fromfile(tmp_path / "t.bin", dtype="<u2")
    assert arr.tolist() == expected
    assert meta["tokens"] == len(expected)
    assert meta["docs"] == 50
    assert meta["bytes"] == sum(len(t.encode("utf-8")) for t in texts)
    assert meta["dtype"] == "uint16" and meta["eot_id"] == 0
    # decoding each document's tokens gives its text back
    docs = np.split(arr, np.flatnonzero(arr == 0) + 1)[:-1]
    assert [tok.decode(d[:-1].tolist()) for d in docs] == texts

    tokens, totals = T.read_token_shards([tmp_path / "t.bin", tmp_path / "t.bin"])
    assert tokens.dtype == np.int64 and tokens.size == 2 * len(expected)
    assert totals == {
        "tokens": 2 * len(expected),
        "bytes": 2 * meta["bytes"],
        "docs": 100,
        "eot_id": 0,
    }


def test_truncated_token_shard_is_detected(tmp_path, train_shards):
    tok_path = tmp_path / "tokenizer.json"
    T.train_tokenizer(T.TokenizerSpec("bpe", 300), train_shards, tok_path)
    T.tokenize_shard(tok_path, train_shards[0], tmp_path / "t.bin", tmp_path / "t.json")
    data = (tmp_path / "t.bin").read_bytes()
    (tmp_path / "t.bin").write_bytes(data[:-4])
    with pytest.raises(T.TokenizerError, match="sidecar says"):
        T.read_token_shards([tmp_path / "t.bin"])
