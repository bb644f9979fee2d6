"""Tests for lmscaling.evaluate: each token scored once, exact oracle values, batch independence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from lmscaling.evaluate import evaluate
from lmscaling.model import GPT, GPTConfig

V = 37


class UniformOracle(nn.Module):
    """All-zero logits: every token costs exactly ln V nats. Counts the targets it is shown."""

    def __init__(self, vocab_size: int = V, context_length: int = 16) -> None:
        super().__init__()
        self.config = GPTConfig(vocab_size, context_length, n_layer=1, d_model=8, n_head=1)
        self.positions = 0

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        assert idx.shape[1] <= self.config.context_length
        self.positions += idx.numel()
        return torch.zeros(*idx.shape, self.config.vocab_size)  # (B, T, V)


class BigramOracle(UniformOracle):
    """Logits depend on the current token only: log-probs are a fixed table row per input token."""

    def __init__(self, context_length: int = 16) -> None:
        super().__init__(V, context_length)
        self.table = torch.randn(V, V, generator=torch.Generator().manual_seed(0))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        super().forward(idx)
        return self.table[idx]  # (B, T, V)


def stream(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, n).astype(np.uint16)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 100, 161])
@pytest.mark.parametrize("batch_size", [1, 3, 32])
@pytest.mark.parametrize("context_length", [1, 5, 16])
def test_uniform_oracle_exact(n, batch_size, context_length):
    model = UniformOracle()
    tokens = stream(n)
    n_bytes = 3 * n + 1
    out = evaluate(
        model,
        tokens,
        n_bytes=n_bytes,
        eot_id=0,
        batch_size=batch_size,
        context_length=context_length,
        device="cpu",
    )
    assert out["tokens"] == n
    assert model.positions == n  # every target scored once, nothing padded
    assert out["perplexity"] == pytest.approx(V, rel=1e-9)
    assert out["loss"] == pytest.approx(math.log(V), rel=1e-12)
    assert out["nll_sum"] == pytest.approx(n * math.log(V), rel=1e-12)
    assert out["bpb"] == pytest.approx(n * math.log2(V) / n_bytes, rel=1e-9)
    assert out["bytes"] == n_bytes


@pytest.mark.parametrize("context_length", [1, 4, 16])
@pytest.mark.parametrize("batch_size", [1, 2, 7])
def test_bigram_oracle_scores_each_pair_once(context_length, batch_size):
    """The i-th target is predicted from token i-1; the first from the leading eot_id."""
    model = BigramOracle()
    eot = 3
    tokens = stream(53, seed=1)
    prev = np.concatenate([[eot], tokens[:-1]]).astype(np.int64)
    logp = torch.log_softmax(model.table.double(), dim=-1)
    expected = -float(logp[torch.from_numpy(prev), torch.from_numpy(tokens.astype(np.int64))].sum())
    out = evaluate(
        model,
        tokens,
        n_bytes=100,
        eot_id=eot,
        batch_size=batch_size,
        context_length=context_length,
        device="cpu",
    )
    assert out["nll_sum"] == pytest.approx(expected, rel=1e-6)
    assert out["loss"] == pytest.approx(expected / 53, rel=1e-6)
    assert out["bpb"] == pytest.approx(expected / (math.log(2) * 100), rel=1e-6)


def test_gpt_result_independent_of_batch_size():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V, context_length=16, n_layer=2, d_model=32, n_head=2))
    tokens = stream(203, seed=2)  # 203 = 12 full windows of 16 + a tail of 11
    results = [
        evaluate(model, tokens, 500, eot_id=0, batch_size=b, device="cpu") for b in (1, 4, 13, 64)
    ]
    for r in results[1:]:
        assert r["nll_sum"] == pytest.approx(results[0]["nll_sum"], rel=1e-6)
        assert r["tokens"] == 203
    assert not model.training


def test_evaluate_rejects_bad_input():
    model = UniformOracle()
    with pytest.raises(ValueError, match="non-empty"):
        evaluate(model, np.zeros(0, dtype=np.uint16), 10, eot_id=0, device="cpu")
    with pytest.raises(ValueError, match="n_bytes"):
        evaluate(model, stream(10), 0, eot_id=0, device="cpu")
    with pytest.raises(ValueError, match="context_length 17"):
        evaluate(model, stream(10), 10, eot_id=0, context_length=17, device="cpu")
    with pytest.raises(ValueError, match="vocab_size=37"):
        evaluate(model, np.array([1, 37], dtype=np.uint16), 10, eot_id=0, device="cpu")
    with pytest.raises(ValueError, match="eot_id=99"):
        evaluate(model, stream(10), 10, eot_id=99, device="cpu")
