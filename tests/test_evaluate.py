"""Tests for lmscaling.evaluate and lmscaling.points: every target scored once, exact oracle
values for any batch size, window and stride, the BOS policy, UTF-8 byte counts through the real
tokenizer path, checkpoints, the points table and the evaluation sets of the DAG."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn as nn
import yaml
from conftest import write_shard
from hypothesis import given, settings
from hypothesis import strategies as st

from lmscaling import tokenizer as tok
from lmscaling.config import ConfigError
from lmscaling.evaluate import EvalError, evaluate, evaluate_points, strided_windows
from lmscaling.io import write_json
from lmscaling.model import GPT, GPTConfig, save_checkpoint
from lmscaling.points import (
    POINT_COLUMNS,
    PointsError,
    check_eval_config,
    eval_sets,
    points_table,
    training_corpora,
)

REPO = Path(__file__).resolve().parents[1]
V = 37


class UniformOracle(nn.Module):
    """All-zero logits: every target costs exactly ln V nats. Records each window length."""

    def __init__(self, vocab_size: int = V, context_length: int = 16) -> None:
        super().__init__()
        self.config = GPTConfig(vocab_size, context_length, n_layer=1, d_model=8, n_head=1)
        self.lengths: list[int] = []
        self.positions = 0

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        assert idx.shape[1] <= self.config.context_length
        self.lengths.append(idx.shape[1])
        self.positions += idx.numel()
        return torch.zeros(*idx.shape, self.config.vocab_size)  # (B, T, V)


class BigramOracle(UniformOracle):
    """Logits depend on the current token only: a fixed table row per input token."""

    def __init__(self, context_length: int = 16) -> None:
        super().__init__(V, context_length)
        self.table = torch.randn(V, V, generator=torch.Generator().manual_seed(0))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        super().forward(idx)
        return self.table[idx]  # (B, T, V)


def stream(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, n).astype(np.uint16)


def tiny_gpt(seed: int = 0, context_length: int = 16) -> GPT:
    torch.manual_seed(seed)
    return GPT(
        GPTConfig(vocab_size=V, context_length=context_length, n_layer=2, d_model=32, n_head=2)
    )


# ---------------------------------------------------------------------------------------------
# Windows


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 200),
    window=st.integers(1, 40),
    stride_frac=st.floats(0.0, 1.0),
)
def test_strided_windows_score_each_target_once_with_most_context(n, window, stride_frac):
    stride = max(1, round(stride_frac * window))
    starts, new = strided_windows(n, window, stride)
    L = min(window, n)
    assert new[0] == L and new.sum() == n and (new >= 1).all() and (new <= max(L, stride)).all()
    assert starts[0] == 0 and (starts >= 0).all() and (starts + L <= n).all()  # no padding
    scored, context = [], []
    for s, k in zip(starts, new, strict=True):
        targets = range(s + L - k + 1, s + L + 1)  # stream positions of the new targets
        scored.extend(targets)
        context.extend(p - s for p in targets)  # tokens of context each one sees
    assert scored == list(range(1, n + 1))  # every target once, in order
    # after the first window, every target sees at least L - stride + 1 tokens
    assert min(context[L:], default=L) >= L - stride + 1
    # and the most the stride allows: no window could start earlier without exceeding L
    assert all(s == max(0, e - L) for s, e in zip(starts, np.cumsum(new), strict=True))


def test_strided_windows_examples():
    starts, new = strided_windows(10, 4, 4)  # non-overlapping; last window right-aligned
    assert starts.tolist() == [0, 4, 6] and new.tolist() == [4, 4, 2]
    starts, new = strided_windows(10, 4, 2)
    assert starts.tolist() == [0, 2, 4, 6] and new.tolist() == [4, 2, 2, 2]
    starts, new = strided_windows(3, 8, 2)  # shorter than a window: one window of 3
    assert starts.tolist() == [0] and new.tolist() == [3]
    with pytest.raises(ValueError, match="stride 5"):
        strided_windows(10, 4, 5)
    with pytest.raises(ValueError, match="stride 0"):
        strided_windows(10, 4, 0)


# ---------------------------------------------------------------------------------------------
# Oracles: exact values for any batch size, window and stride


@pytest.mark.parametrize("n", [1, 16, 17, 161])
@pytest.mark.parametrize("batch_size", [1, 7, 64])
@pytest.mark.parametrize("context_length,stride", [(1, 1), (5, 5), (5, 2), (16, 16), (16, 1)])
@pytest.mark.parametrize("bos", ["eot", "none"])
def test_uniform_oracle_exact(n, batch_size, context_length, stride, bos):
    model = UniformOracle()
    if bos == "none" and n == 1:  # the only token is context: nothing to score
        with pytest.raises(ValueError, match="no target"):
            evaluate(model, stream(n), 4, eot_id=0, bos=bos, device="cpu")
        return
    n_bytes = 3 * n + 1
    out = evaluate(
        model,
        stream(n),
        n_bytes=n_bytes,
        eot_id=0,
        batch_size=batch_size,
        context_length=context_length,
        stride=stride,
        bos=bos,
        device="cpu",
    )
    targets = n if bos == "eot" else n - 1
    assert out["tokens"] == targets
    assert out["bytes"] == n_bytes
    assert out["perplexity"] == pytest.approx(V, rel=1e-6)
    assert out["loss"] == pytest.approx(math.log(V), rel=1e-6)
    assert out["nll_sum"] == pytest.approx(targets * math.log(V), rel=1e-6)
    assert out["bpb"] == pytest.approx(targets * math.log2(V) / n_bytes, rel=1e-6)
    assert (out["context_length"], out["stride"], out["bos"]) == (context_length, stride, bos)
    # every window is full length (nothing padded) and only the strided windows are run
    L = min(context_length, targets)
    assert set(model.lengths) == {L}
    assert model.positions == out["windows"] * L
    expected_windows = 1 + math.ceil(max(0, targets - L) / stride)
    assert out["windows"] == expected_windows


def _bigram_expected(model: BigramOracle, tokens: np.ndarray, eot: int, bos: str) -> float:
    full = torch.from_numpy(np.concatenate([[eot] if bos == "eot" else [], tokens]).astype(int))
    logp = torch.log_softmax(model.table.double(), dim=-1)  # (V, V): row = current token
    return -float(logp[full[:-1], full[1:]].sum())


@pytest.mark.parametrize("context_length,stride", [(1, 1), (4, 4), (4, 3), (16, 16), (16, 5)])
@pytest.mark.parametrize("batch_size", [1, 2, 7])
@pytest.mark.parametrize("bos", ["eot", "none"])
def test_bigram_oracle_scores_each_pair_once(context_length, stride, batch_size, bos):
    """Target i is predicted from token i-1 (the first from eot_id, or not at all)."""
    model = BigramOracle()
    eot, tokens = 3, stream(53, seed=1)
    expected = _bigram_expected(model, tokens, eot, bos)
    targets = 53 if bos == "eot" else 52
    out = evaluate(
        model,
        tokens,
        n_bytes=100,
        eot_id=eot,
        batch_size=batch_size,
        context_length=context_length,
        stride=stride,
        bos=bos,
        device="cpu",
    )
    assert out["tokens"] == targets
    assert out["nll_sum"] == pytest.approx(expected, rel=1e-6)
    assert out["loss"] == pytest.approx(expected / targets, rel=1e-6)
    assert out["bpb"] == pytest.approx(expected / (math.log(2) * 100), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# A real GPT: the exact contexts of the scheme, batch invariance


def _reference_nll(model: GPT, tokens: np.ndarray, eot: int, T: int, S: int, bos: str) -> float:
    """One forward pass per target over exactly the context the scheme gives it."""
    full = np.concatenate([[eot], tokens]) if bos == "eot" else tokens.astype(np.int64)
    n = len(full) - 1
    L = min(T, n)
    ends = [L + k * S for k in range((max(0, n - L) + S - 1) // S + 1)]
    ends = [min(e, n) for e in ends]
    total = 0.0
    with torch.no_grad():
        for p in range(1, n + 1):
            end = next(e for e in ends if e >= p)  # the window that scores target p
            start = end - L
            ctx = torch.from_numpy(full[start:p].astype(np.int64))[None]  # (1, p - start)
            logp = torch.log_softmax(model(ctx)[0, -1].double(), dim=-1)
            total -= float(logp[int(full[p])])
    return total


@pytest.mark.parametrize(
    "T,S,bos", [(16, 16, "eot"), (16, 5, "eot"), (8, 3, "none"), (5, 1, "eot")]
)
def test_gpt_matches_per_target_reference(T, S, bos):
    model = tiny_gpt(seed=1)
    tokens = stream(33, seed=3)
    out = evaluate(
        model, tokens, 90, eot_id=0, batch_size=4, context_length=T, stride=S, bos=bos, device="cpu"
    )
    expected = _reference_nll(model, tokens, 0, T, S, bos)
    assert out["nll_sum"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("T,S", [(16, 16), (16, 5), (7, 3)])
def test_gpt_result_independent_of_batch_size(T, S):
    model = tiny_gpt()
    tokens = stream(123, seed=2)  # 123 = 7 full windows of 16 + a tail of 11
    results = [
        evaluate(
            model, tokens, 500, eot_id=0, batch_size=b, context_length=T, stride=S, device="cpu"
        )
        for b in (1, 5, 64)
    ]
    for r in results[1:]:
        assert r["nll_sum"] == pytest.approx(results[0]["nll_sum"], rel=1e-6)
        assert r["tokens"] == 123
    assert not model.training


def test_smaller_stride_gives_more_context_and_defaults_are_non_overlapping():
    model = tiny_gpt()
    tokens = stream(100, seed=4)
    default = evaluate(model, tokens, 100, eot_id=0, device="cpu")
    explicit = evaluate(model, tokens, 100, eot_id=0, context_length=16, stride=16, device="cpu")
    assert default["nll_sum"] == explicit["nll_sum"]
    assert (default["context_length"], default["stride"]) == (16, 16)
    strided = evaluate(model, tokens, 100, eot_id=0, stride=4, device="cpu")
    assert strided["tokens"] == default["tokens"] == 100
    assert strided["nll_sum"] != pytest.approx(default["nll_sum"], rel=1e-9)


def test_evaluate_rejects_bad_input():
    model = UniformOracle()
    with pytest.raises(ValueError, match="non-empty"):
        evaluate(model, np.zeros(0, dtype=np.uint16), 10, eot_id=0, device="cpu")
    with pytest.raises(ValueError, match="n_bytes"):
        evaluate(model, stream(10), 0, eot_id=0, device="cpu")
    with pytest.raises(ValueError, match="context_length 17"):
        evaluate(model, stream(10), 10, eot_id=0, context_length=17, device="cpu")
    with pytest.raises(ValueError, match="stride 9"):
        evaluate(model, stream(10), 10, eot_id=0, context_length=8, stride=9, device="cpu")
    with pytest.raises(ValueError, match="bos 'bos'"):
        evaluate(model, stream(10), 10, eot_id=0, bos="bos", device="cpu")
    with pytest.raises(ValueError, match="no target"):
        evaluate(model, stream(1), 10, eot_id=0, bos="none", device="cpu")
    with pytest.raises(ValueError, match="vocab_size=37"):
        evaluate(model, np.array([1, 37], dtype=np.uint16), 10, eot_id=0, device="cpu")
    with pytest.raises(ValueError, match="eot_id=99"):
        evaluate(model, stream(10), 10, eot_id=99, device="cpu")


# ---------------------------------------------------------------------------------------------
# Bytes: UTF-8 bytes of the original text, through the real tokenizer path

MULTIBYTE = [
    "naïve café — crème brûlée, 数据科学 and Ωmega 🙂🙂 " * 3,
    "日本語のテキストです。漢字とかなの混ざった文。" * 2,
    "emoji 🎉🚀✨ and accents: àéîõü ÀÉÎÕÜ ß ø å",
    "plain ascii line\nwith a newline and a\ttab",
]


def test_bytes_are_utf8_of_original_text_through_tokenizer(tmp_path):
    train = write_shard(tmp_path / "train.parquet", MULTIBYTE * 5)
    val = write_shard(tmp_path / "val.parquet", MULTIBYTE)
    spec = tok.TokenizerSpec("t", vocab_size=300, min_frequency=2)
    tokenizer = tok.train_tokenizer(spec, [train], tmp_path / "tokenizer.json")
    tok.tokenize_shard(
        tmp_path / "tokenizer.json", val, tmp_path / "val.bin", tmp_path / "val.json"
    )
    from lmscaling.evaluate import load_eval_set

    tokens, totals = load_eval_set([tmp_path / "val.bin"])
    utf8 = sum(len(t.encode("utf-8")) for t in MULTIBYTE)
    chars = sum(len(t) for t in MULTIBYTE)
    per_token = sum(len(tokenizer.decode([int(i)]).encode("utf-8")) for i in tokens)
    assert totals["bytes"] == utf8
    assert utf8 != chars  # the text really is multi-byte
    assert per_token != utf8  # split characters decode to U+FFFD: per-token decodes differ
    assert totals["docs"] == len(MULTIBYTE) and len(tokens) == totals["tokens"]

    vocab = tokenizer.get_vocab_size()
    model = UniformOracle(vocab_size=vocab, context_length=32)
    for batch_size, T, S in [(1, 32, 32), (5, 7, 3), (64, 32, 1)]:
        out = evaluate(
            model,
            tokens,
            n_bytes=totals["bytes"],
            eot_id=totals["eot_id"],
            batch_size=batch_size,
            context_length=T,
            stride=S,
            device="cpu",
        )
        assert out["tokens"] == len(tokens)
        assert out["perplexity"] == pytest.approx(vocab, rel=1e-6)
        assert out["bpb"] == pytest.approx(len(tokens) * math.log2(vocab) / utf8, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Checkpoints of one model, the per-model file and the points table


def _write_set(path: Path, tokens: np.ndarray, n_bytes: int, docs: int) -> Path:
    tokens.astype("<u2").tofile(path)
    meta = {"tokens": len(tokens), "bytes": n_bytes, "docs": docs, "dtype": "uint16"}
    write_json(path.with_suffix(".json"), {**meta, "vocab_size": V, "eot_id": 0, "sha256": ""})
    return path


def _save(path: Path, model: GPT, D: int, fraction: float | None = None, **extra) -> Path:
    counts = model.param_counts()
    summary = {**counts, "D": D, "C": 6.0 * counts["N"] * D, "step": D // 64, **extra}
    if fraction is not None:
        summary["fraction"] = fraction
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, extra={"summary": summary})
    return path


@pytest.fixture
def model_dir(tmp_path):
    """A model with a checkpoint at half its budget (the agreed layout), and two eval sets."""
    half, full = tiny_gpt(seed=5), tiny_gpt(seed=6)
    ckpts = {
        "frac-0.5": _save(tmp_path / "m/checkpoints/frac-0.5.pt", half, 3200, 0.5),
        "final": _save(tmp_path / "m/model.pt", full, 6400),
    }
    sets = {
        "a/val": [
            _write_set(tmp_path / "a0.bin", stream(70, 7), 200, 3),
            _write_set(tmp_path / "a1.bin", stream(30, 8), 90, 1),
        ],
        "b/all": [_write_set(tmp_path / "b0.bin", stream(41, 9), 150, 2)],
    }
    return ckpts, sets, {"frac-0.5": half, "final": full}


def test_evaluate_points_every_checkpoint_on_every_set(model_dir, tmp_path):
    ckpts, sets, models = model_dir
    seen = []
    result = evaluate_points(
        "tok", "L2-D32", ckpts, sets, batch_size=3, stride=8, device="cpu", on_point=seen.append
    )
    points = result["points"]
    assert len(points) == len(seen) == 4
    assert [(p["checkpoint"], p["eval_set"]) for p in points] == [
        ("frac-0.5", "a/val"),
        ("frac-0.5", "b/all"),
        ("final", "a/val"),
        ("final", "b/all"),
    ]
    a_tokens = np.concatenate([stream(70, 7), stream(30, 8)])
    for p in points:
        assert list(p) == POINT_COLUMNS
        model = models[p["checkpoint"]]
        tokens, n_bytes = (a_tokens, 290) if p["eval_set"] == "a/val" else (stream(41, 9), 150)
        direct = evaluate(model, tokens, n_bytes, eot_id=0, stride=8, device="cpu")
        assert p["nll_sum"] == pytest.approx(direct["nll_sum"], rel=1e-6)
        assert p["bpb"] == pytest.approx(direct["bpb"], rel=1e-6)
        assert (p["tokens"], p["bytes"]) == (len(tokens), n_bytes)
        assert p["docs"] == (4 if p["eval_set"] == "a/val" else 2)
        assert p["final"] == (p["checkpoint"] == "final")
        assert p["D"] == (6400 if p["final"] else 3200)
        assert p["fraction"] == (1.0 if p["final"] else 0.5)
        assert p["C"] == pytest.approx(6 * p["N"] * p["D"])
        assert (p["n_layer"], p["d_model"], p["n_head"], p["vocab_size"]) == (2, 32, 2, V)
        assert (p["context_length"], p["stride"], p["bos"]) == (16, 8, "eot")
    assert result["eval"] == {"batch_size": 3, "context_length": 16, "stride": 8, "bos": "eot"}
    assert result["eval_sets"]["a/val"] == {"tokens": 100, "bytes": 290, "docs": 4, "shards": 2}

    # the tidy table of two models' files
    other = {
        **result,
        "model": "L1-D8",
        "points": [{**p, "model": "L1-D8", "N": 5} for p in points],
    }
    write_json(tmp_path / "one.json", result)
    write_json(tmp_path / "two.json", other)
    table = points_table([tmp_path / "one.json", tmp_path / "two.json"])
    assert table.columns == POINT_COLUMNS
    assert table.height == 8
    assert table.schema["final"] == pl.Boolean and table.schema["D"] == pl.Int64
    assert table.schema["bpb"] == pl.Float64 and table.schema["eval_set"] == pl.Utf8
    first = table.row(0, named=True)
    assert (first["eval_set"], first["model"], first["checkpoint"]) == (
        "a/val",
        "L1-D8",
        "frac-0.5",
    )
    assert table.filter(pl.col("final")).height == 4
    assert table["loss"].to_list()[2] == pytest.approx(points[0]["loss"])


def test_points_carry_the_models_isoflop_budget_and_precision(model_dir, tmp_path):
    _, sets, models = model_dir
    # the final summary holds the budget and precision; a fraction checkpoint's does not
    ckpts = {
        "frac-0.5": _save(tmp_path / "c/frac-0.5.pt", models["frac-0.5"], 3200, 0.5),
        "final": _save(
            tmp_path / "c/model.pt", models["final"], 6400, compute_budget=3.0e9, precision="bf16"
        ),
    }
    result = evaluate_points("tok", "L2-D32-C3e9", ckpts, sets, device="cpu")
    assert [p["budget"] for p in result["points"]] == [3.0e9] * 4
    assert [p["precision"] for p in result["points"]] == ["bf16"] * 4
    assert result["points"][-1]["C"] != 3.0e9  # C = 6ND of the steps run, not the label
    # an evaluation written before the columns existed reads as nulls
    old = {
        **result,
        "points": [
            {k: v for k, v in p.items() if k not in ("budget", "precision")}
            for p in result["points"]
        ],
    }
    write_json(tmp_path / "old.json", old)
    write_json(tmp_path / "new.json", result)
    table = points_table([tmp_path / "old.json", tmp_path / "new.json"])
    assert table.schema["budget"] == pl.Float64 and table.schema["precision"] == pl.Utf8
    assert sorted(table["budget"].to_list(), key=str) == [3.0e9] * 4 + [None] * 4
    assert table["precision"].drop_nulls().to_list() == ["bf16"] * 4
    assert table["precision"].null_count() == 4


def test_a_model_no_better_than_uniform_is_warned_about(model_dir, tmp_path, caplog):
    _, sets, models = model_dir
    flat = models["final"]
    with torch.no_grad():
        flat.lm_head.weight.zero_()  # uniform logits (tied: the embedding too)
    ckpts = {"final": _save(tmp_path / "u/model.pt", flat, 6400)}
    with caplog.at_level("WARNING", logger="lmscaling"):
        result = evaluate_points("tok", "L2-D32", ckpts, sets, device="cpu")
    assert result["points"][0]["loss"] == pytest.approx(math.log(V), rel=1e-6)
    warned = [
        r.getMessage() for r in caplog.records if "no better than a uniform" in r.getMessage()
    ]
    assert len(warned) == 2 and warned[0].startswith("tok/L2-D32 final on a/val: loss")


def test_evaluate_points_errors(model_dir, tmp_path):
    ckpts, sets, models = model_dir
    save_checkpoint(tmp_path / "bare.pt", models["final"], extra={"summary": {"N": 1}})
    with pytest.raises(EvalError, match=r"bare\.pt.*lacks \['N_total'"):
        evaluate_points("t", "m", {"final": tmp_path / "bare.pt"}, sets, device="cpu")
    empty = _write_set(tmp_path / "empty.bin", np.zeros(0, dtype=np.uint16), 0, 0)
    with pytest.raises(EvalError, match="empty"):
        evaluate_points("t", "m", ckpts, {"x/val": [empty]}, device="cpu")
    write_json(tmp_path / "bad.json", {"points": [{"model": "m"}]})
    with pytest.raises(PointsError, match=r"bad\.json: points\[0\] lacks"):
        points_table([tmp_path / "bad.json"])


# ---------------------------------------------------------------------------------------------
# Evaluation sets from the config, and the DAG built from them


def _config(heldout=None, **eval_opts):
    return {
        "corpora": {"code": {}, "prose": {}, "extra": {}},
        "models": {"context_length": 64},
        "eval": {"batch_size": 8, "heldout_corpora": heldout or [], **eval_opts},
    }


def test_eval_sets_and_training_corpora():
    cfg = _config(["extra"])
    assert training_corpora(cfg) == ["code", "prose"]
    sets = eval_sets(cfg)
    assert [s.name for s in sets] == ["code/val", "prose/val", "extra/all"]
    assert sets[2].corpus == "extra" and sets[2].splits == ("train", "val")
    assert sets[0].splits == ("val",)
    assert [s.name for s in eval_sets(_config())] == ["code/val", "prose/val", "extra/val"]
    check_eval_config(_config(["extra"], context_length=32, stride=8, bos="none"))


@pytest.mark.parametrize(
    "cfg,match",
    [
        (_config(["nope"]), "eval.heldout_corpora: 'nope' is not a corpus"),
        (_config(["code", "code"]), "listed twice"),
        (_config(["code", "prose", "extra"]), "every corpus is held out"),
        (_config(context_length=65), "eval.context_length: 65 exceeds"),
        (_config(context_length=32, stride=33), "eval.stride: 33 exceeds"),
        (_config(stride=65), "eval.stride: 65 exceeds"),
        (_config(bos="bos"), "eval.bos"),
    ],
)
def test_check_eval_config_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        check_eval_config(cfg)


def _dry_run_inputs(tmp_path: Path, config: dict) -> dict[str, list[str]]:
    """``{rule: [input of each job, joined]}`` from a dry run of the workflow."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--cores", "1"]
    cmd += ["--directory", str(tmp_path), "--configfile", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    jobs: dict[str, list[str]] = {}
    rule = None
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("rule ") and line.endswith(":"):
            rule = line[5:-1]
        elif rule and line.startswith("    input: "):
            jobs.setdefault(rule, []).append(line[len("    input: ") :])
            rule = None
    return jobs


def test_dag_never_trains_on_heldout_corpora(tmp_path):
    config = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    stdlib = config["corpora"]["stdlib"]
    config["corpora"] = {
        "stdlib": stdlib,
        "more": {"source": "python-stdlib", "include": ["html/*.py"]},
    }
    config["eval"]["heldout_corpora"] = ["more"]
    jobs = _dry_run_inputs(tmp_path, config)
    for rule in ("train_tokenizer", "train_model"):
        assert jobs[rule] and all("/more/" not in inputs for inputs in jobs[rule]), rule
        assert all("/stdlib/train/" in inputs for inputs in jobs[rule])
    assert len(jobs["tokenize"]) == 2 * 2 * 2  # corpora x splits x shards
    fractions = config["train"].get("checkpoint_fractions", [])
    assert len(jobs["evaluate"]) == len(config["models"]["grid"])
    for inputs in jobs["evaluate"]:
        assert "tokens/bpe-512/stdlib/val/part-00000.bin" in inputs
        assert "stdlib/train/" not in inputs
        for split in ("train", "val"):
            assert f"tokens/bpe-512/more/{split}/part-00001.bin" in inputs
        assert "/model.pt" in inputs
        assert all(f"/checkpoints/frac-{format(f, 'g')}.pt" in inputs for f in fractions)
