"""Tests for lmscaling.model: config validation, parameter/FLOP accounting, forward, checkpoints."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

import lmscaling.model as model_mod
from lmscaling.model import (
    GPT,
    CheckpointError,
    GPTConfig,
    RMSNorm,
    apply_rotary,
    count_parameters,
    cpu_bf16_attention,
    linear_cross_entropy,
    load_checkpoint,
    model_id,
    rotary_tables,
    save_checkpoint,
)


def tiny(**overrides) -> GPTConfig:
    kwargs = dict(vocab_size=50, context_length=16, n_layer=2, d_model=32, n_head=2)
    kwargs.update(overrides)
    return GPTConfig(**kwargs)


# --- config -----------------------------------------------------------------------------------


def test_config_rejects_indivisible_heads_naming_fields():
    with pytest.raises(ValueError, match=r"d_model \(100\) is not divisible by n_head \(3\)"):
        tiny(d_model=100, n_head=3)


def test_config_rejects_odd_head_dim():
    with pytest.raises(ValueError, match="head_dim"):
        tiny(d_model=24, n_head=8)  # head_dim 3


@pytest.mark.parametrize("field", ["vocab_size", "context_length", "n_layer", "d_model", "n_head"])
def test_config_rejects_non_positive_sizes(field):
    with pytest.raises(ValueError, match=field):
        tiny(**{field: 0})


def test_model_id():
    assert model_id(4, 128) == "L4-D128"
    assert model_id(1, 32) == "L1-D32"


# --- parameter and FLOP accounting ------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize(
    "shape",
    [
        (1, 32, 2, 4, "rmsnorm", "rope"),
        (2, 64, 4, 4, "layernorm", "rope"),
        (3, 48, 3, 2, "rmsnorm", "learned"),
        (2, 16, 1, 3, "layernorm", "learned"),
    ],
)  # (n_layer, d_model, n_head, mlp_ratio, norm, position)
def test_count_parameters_matches_module(shape, tie):
    n_layer, d_model, n_head, mlp_ratio, norm, position = shape
    cfg = tiny(
        n_layer=n_layer,
        d_model=d_model,
        n_head=n_head,
        mlp_ratio=mlp_ratio,
        tie_embeddings=tie,
        norm=norm,
        position=position,
    )
    model = GPT(cfg)
    counts = model.param_counts()
    assert counts == count_parameters(cfg)
    # Independent count: every unique parameter except the embedding / unembedding matrices.
    named = dict(model.named_parameters())  # shared (tied) tensors appear once
    embeddings = ("wte.weight", "lm_head.weight", "wpe.weight")
    non_embedding = sum(p.numel() for k, p in named.items() if k not in embeddings)
    assert counts["N"] == non_embedding
    assert counts["N_total"] == sum(p.numel() for p in named.values())
    learned = cfg.context_length * d_model if position == "learned" else 0
    assert counts["N_embedding"] == cfg.vocab_size * d_model * (1 if tie else 2) + learned
    # Without tying, the same architecture has its own V x d head matrix.
    untied = GPT(GPTConfig(**{**asdict(cfg), "tie_embeddings": False})).param_counts()
    assert counts["N_total_untied"] == untied["N_total"] == untied["N_total_untied"]
    assert counts["N"] == untied["N"]


def test_param_counts_l2_d64_formula():
    cfg = GPTConfig(vocab_size=2048, context_length=128, n_layer=2, d_model=64, n_head=4)
    counts = GPT(cfg).param_counts()
    # 12 L d^2 (Kaplan et al. 2020) + 2 RMSNorm gains per block + the final RMSNorm gain.
    assert counts["N"] == 12 * 2 * 64**2 + (2 * 2 + 1) * 64 == 98_624
    assert counts["N_embedding"] == 2048 * 64
    assert counts["N_total"] == 98_624 + 2048 * 64
    untied = GPT(GPTConfig(2048, 128, 2, 64, 4, tie_embeddings=False)).param_counts()
    assert untied["N"] == 98_624
    assert untied["N_total"] == 98_624 + 2 * 2048 * 64
    assert counts["N_total_untied"] == untied["N_total_untied"] == 98_624 + 2 * 2048 * 64


def test_flops_per_token():
    cfg = GPTConfig(vocab_size=2048, context_length=128, n_layer=2, d_model=64, n_head=4)
    flops = GPT(cfg).flops_per_token()
    n = 98_624
    assert flops["6N"] == 6 * n
    assert flops["6N_attention"] == 6 * n + 6 * 2 * 128 * 64
    assert flops["exact"] == 6 * n + 6 * 2 * 128 * 64 + 6 * 2048 * 64


# --- forward ----------------------------------------------------------------------------------


def test_forward_shapes_and_loss_value():
    torch.manual_seed(0)
    cfg = tiny()
    model = GPT(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, 16))
    targets = torch.randint(0, cfg.vocab_size, (3, 16))
    logits = model(idx)
    assert logits.shape == (3, 16, cfg.vocab_size) and logits.dtype == torch.float32
    logits2, loss = model(idx, targets)
    torch.testing.assert_close(logits2, logits)
    expected = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), targets.reshape(-1))
    assert loss.shape == () and loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # Small initial weights give near-uniform predictions: loss close to ln V nats/token.
    assert abs(loss.item() - math.log(cfg.vocab_size)) < 0.1
    assert model(idx[:, :5]).shape == (3, 5, cfg.vocab_size)  # shorter sequences are fine


@pytest.mark.parametrize(("norm", "position"), [("layernorm", "rope"), ("rmsnorm", "learned")])
def test_architecture_options(norm, position):
    torch.manual_seed(0)
    cfg = tiny(norm=norm, position=position)
    model = GPT(cfg).eval()
    norm_type = torch.nn.LayerNorm if norm == "layernorm" else torch.nn.RMSNorm
    assert isinstance(model.norm_f, norm_type) and isinstance(model.blocks[0].norm_mlp, norm_type)
    assert (model.wpe is not None) == (position == "learned")
    idx = torch.tensor([[1, 2, 3, 4]])
    logits = model(idx)
    assert logits.shape == (1, 4, 50) and torch.isfinite(logits).all()
    # Order still matters (through the learned positions or the rotation).
    assert (logits[0, -1] - model(torch.tensor([[3, 2, 1, 4]]))[0, -1]).abs().max() > 1e-4
    changed = idx.clone()
    changed[0, 3] = 7
    torch.testing.assert_close(model(changed)[0, :3], logits[0, :3])  # still causal


def test_config_rejects_unknown_options_and_allows_odd_heads_without_rope():
    with pytest.raises(ValueError, match="norm must be one of"):
        tiny(norm="batchnorm")
    with pytest.raises(ValueError, match="position must be one of"):
        tiny(position="alibi")
    assert tiny(d_model=24, n_head=8, position="learned").head_dim == 3


def test_forward_rejects_too_long_sequence():
    model = GPT(tiny())
    with pytest.raises(ValueError, match="exceeds context_length 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_causality_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    idx = torch.randint(0, 50, (2, 16))
    changed = idx.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 50
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=1e-6)
    assert (a[:, 10:] - b[:, 10:]).abs().max() > 1e-4  # the change is visible from position 10 on


def test_rotary_positions_matter():
    """Without learned positions, order information comes from the rotary embedding."""
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    idx = torch.tensor([[1, 2, 3, 4]])
    # The last position sees the same multiset of tokens in a different order.
    a = model(idx)[0, -1]
    b = model(torch.tensor([[3, 2, 1, 4]]))[0, -1]
    assert (a - b).abs().max() > 1e-4


def test_rotary_dot_product_depends_only_on_offset():
    cos, sin = rotary_tables(32, 8)  # (32, 1, 8)
    q = torch.randn(1, 1, 1, 8).expand(1, 32, 1, 8)  # same vector at every position
    k = torch.randn(1, 1, 1, 8).expand(1, 32, 1, 8)
    rq, rk = apply_rotary(q, cos, sin)[0, :, 0], apply_rotary(k, cos, sin)[0, :, 0]  # (32, 8)
    torch.testing.assert_close(rq.norm(dim=-1), q[0, :, 0].norm(dim=-1))  # a rotation
    torch.testing.assert_close(rq[5] @ rk[2], rq[20] @ rk[17], rtol=1e-5, atol=1e-5)
    assert abs(float(rq[5] @ rk[2] - rq[5] @ rk[3])) > 1e-4


def test_rotary_matches_pairwise_rotation():
    cos, sin = rotary_tables(16, 8)  # (16, 1, 8)
    x = torch.randn(2, 16, 3, 8)
    angles = torch.arange(16.0)[:, None] * 10000.0 ** (-torch.arange(0, 8, 2) / 8)  # (16, 4)
    c, s = angles.cos()[:, None, :], angles.sin()[:, None, :]  # (16, 1, 4)
    x1, x2 = x[..., :4], x[..., 4:]
    expected = torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)  # pairs (i, i + 4)
    torch.testing.assert_close(apply_rotary(x, cos, sin), expected)


# --- CPU training fast paths ------------------------------------------------------------------


@pytest.mark.parametrize("vocab", [50, 1000])  # one chunk; several chunks and a ragged last one
def test_linear_cross_entropy_matches_unfused(vocab):
    torch.manual_seed(0)
    h = torch.randn(300, 12, requires_grad=True)
    weight = (0.5 * torch.randn(vocab, 12)).requires_grad_()
    targets = torch.randint(0, vocab, (300,))
    expected = F.cross_entropy(F.linear(h, weight), targets)
    grads = torch.autograd.grad(2.5 * expected, (h, weight))
    loss = linear_cross_entropy(h, weight, targets)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    for got, want in zip(torch.autograd.grad(2.5 * loss, (h, weight)), grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_linear_cross_entropy_under_cpu_bf16_autocast_runs_bf16_matmuls():
    torch.manual_seed(0)
    h = torch.randn(300, 16, requires_grad=True)
    weight = (0.5 * torch.randn(1000, 16)).requires_grad_()
    targets = torch.randint(0, 1000, (300,))
    expected = F.cross_entropy(F.linear(h, weight), targets)
    want = torch.autograd.grad(expected, (h, weight))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(h, weight, targets)
        reference = F.cross_entropy(F.linear(h, weight).float(), targets)  # autocast's logits
    assert loss.dtype == torch.float32 and loss != expected  # bf16 logits: not float32's value
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)  # the same rounding
    assert loss.item() == pytest.approx(expected.item(), rel=1e-2)
    got = torch.autograd.grad(loss, (h, weight))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, rtol=0, atol=2e-2 * w.abs().max().item())


@pytest.mark.parametrize(
    "T", [1, 15, 16, model_mod.EXPLICIT_ATTENTION_MAX_T + 8]
)  # query blocks of 0-1, 7-8 and 8 rows; the float32 path beyond the explicit one
def test_cpu_bf16_attention_matches_sdpa(T):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, T, 8, requires_grad=True) for _ in range(3))
    upstream = torch.randn(2, 3, T, 8)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    want = torch.autograd.grad(expected, (q, k, v), upstream)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as in training
        y = cpu_bf16_attention(q, k, v)
    assert y.dtype == torch.bfloat16 and y.shape == expected.shape
    if T > model_mod.EXPLICIT_ATTENTION_MAX_T:  # float32 attention, only its output rounded
        assert torch.equal(y, expected.detach().bfloat16())
    torch.testing.assert_close(y.float(), expected, rtol=0, atol=3e-2)
    for g, w in zip(torch.autograd.grad(y, (q, k, v), upstream), want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=5e-2 * w.abs().max().item())
    # causal: the last key and value reach the last position only
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[:, :, -1], v2[:, :, -1] = 9.0, -9.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y2 = cpu_bf16_attention(q, k2, v2)
    assert torch.equal(y2[:, :, :-1], y[:, :, :-1].detach())
    assert not torch.equal(y2[:, :, -1], y[:, :, -1].detach())


def test_query_blocks_cover_every_position_once():
    assert model_mod._query_blocks(5, 2) == [(0, 2), (2, 5)]
    assert model_mod._query_blocks(1, 2) == [(0, 1)]  # no empty block
    assert model_mod._query_blocks(128, 4) == [(0, 32), (32, 64), (64, 96), (96, 128)]


def test_causal_blocks_skip_only_masked_scores(monkeypatch):
    """Query blocks compute what the whole causal square computes: the same outputs and
    dq exactly (each from one product per block); dk and dv to bf16 rounding of the sums
    over blocks."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 40, 8, requires_grad=True) for _ in range(3))
    upstream = torch.randn(2, 3, 40, 8)
    results = {}
    for blocks in (1, 2, 3):
        monkeypatch.setattr(model_mod, "ATTENTION_QUERY_BLOCKS", blocks)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = cpu_bf16_attention(q, k, v)
        results[blocks] = (y, torch.autograd.grad(y, (q, k, v), upstream))
    y1, (dq1, dk1, dv1) = results[1]
    for blocks in (2, 3):
        y, (dq, dk, dv) = results[blocks]
        assert torch.equal(y, y1) and torch.equal(dq, dq1)
        for got, want in ((dk, dk1), (dv, dv1)):
            assert not torch.equal(got, want)  # keys seen by several blocks: one sum each
            torch.testing.assert_close(got, want, rtol=0, atol=2e-2 * want.abs().max().item())


def test_hand_written_backward_passes_refuse_double_backward(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # the CPU training path
    torch.manual_seed(0)
    x = torch.randn(2, 8, 4, requires_grad=True)
    q, k, v = (torch.randn(1, 2, 8, 4, requires_grad=True) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attention = cpu_bf16_attention(q, k, v).float().sum()
    norm = RMSNorm(4)(x).sum()
    loss = linear_cross_entropy(x.view(-1, 4), torch.randn(5, 4), torch.randint(0, 5, (16,)))
    for out, inp, name in ((attention, q, "attention"), (norm, x, "RMSNorm"), (loss, x, "fused")):
        with pytest.raises(RuntimeError, match=f"{name}.*double backward"):
            torch.autograd.grad(out, inp, create_graph=True)


def test_model_under_cpu_bf16_autocast_is_close_to_float32():
    torch.manual_seed(0)
    model = GPT(tiny())
    idx, targets = torch.randint(0, 50, (3, 16)), torch.randint(0, 50, (3, 16))
    _, expected = model(idx, targets)
    calls = []
    original = model_mod.cpu_bf16_attention
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(model_mod, "cpu_bf16_attention", lambda *a: calls.append(1) or original(*a))
            _, loss = model(idx, targets, return_logits=False)
    assert len(calls) == 2  # one per block: the bf16 attention path ran
    assert loss.item() == pytest.approx(expected.item(), rel=1e-2) and loss != expected


def test_linear_cross_entropy_underflowing_target_probability_stays_exact():
    torch.manual_seed(0)
    h = (100 * torch.randn(10, 4)).requires_grad_()
    weight = 100 * torch.randn(30, 4)
    targets = torch.randint(0, 30, (10,))
    expected = F.cross_entropy(F.linear(h, weight), targets)
    assert expected.item() > 1000  # far beyond float32's smallest probability (~1e-38)
    loss = linear_cross_entropy(h, weight, targets)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_rmsnorm_matches_torch_forward_and_backward(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # the CPU training path
    torch.manual_seed(0)
    ours, reference = RMSNorm(24, eps=1e-6), torch.nn.RMSNorm(24, eps=1e-6)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        reference.weight.copy_(ours.weight)
    x = torch.randn(3, 5, 24, requires_grad=True)
    upstream = torch.randn(3, 5, 24)
    got = torch.autograd.grad(ours(x), (x, ours.weight), upstream)
    want = torch.autograd.grad(reference(x), (x, reference.weight), upstream)
    torch.testing.assert_close(ours(x), reference(x))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)  # torch's own kernel
    # under CPU autocast to bf16 the output is written in bf16, the float32 result rounded
    # once, and a bf16 upstream gradient gives what its float32 value gives
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ours(x)
    assert y.dtype == torch.bfloat16 and torch.equal(y, ours(x).bfloat16())
    got = torch.autograd.grad(y, (x, ours.weight), upstream.bfloat16())
    want = torch.autograd.grad(ours(x), (x, ours.weight), upstream.bfloat16().float())
    for a, b in zip(got, want, strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    # outside autocast the output keeps the input's dtype, as nn.RMSNorm's does
    half = RMSNorm(24, eps=1e-6).bfloat16()
    assert half(x.detach().bfloat16().requires_grad_()).dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("norm", "position"), [("rmsnorm", "rope"), ("layernorm", "learned"), ("rmsnorm", "learned")]
)
def test_cpu_training_paths_match_plain_path(monkeypatch, norm, position):
    """The training call (fused loss, RMSNorm backward, complex rotary) gives the plain
    expressions' loss and gradients."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the fast paths run with one thread only
    try:
        _compare_cpu_training_paths(monkeypatch, norm, position)
    finally:
        torch.set_num_threads(threads)


def _compare_cpu_training_paths(monkeypatch, norm, position):
    torch.manual_seed(0)
    model = GPT(tiny(norm=norm, position=position))
    idx, targets = torch.randint(0, 50, (3, 16)), torch.randint(0, 50, (3, 16))
    params = list(model.parameters())
    assert model_mod.cpu_training(params[0])  # the comparison below really takes both paths
    torch.set_num_threads(2)
    assert not model_mod.cpu_training(params[0])
    torch.set_num_threads(1)
    monkeypatch.setattr(model_mod, "CPU_FAST_PATHS", False)
    logits, loss = model(idx, targets)
    expected = torch.autograd.grad(loss, params)
    monkeypatch.setattr(model_mod, "CPU_FAST_PATHS", True)
    none, fused = model(idx, targets, return_logits=False)
    assert none is None and logits.shape == (3, 16, 50)
    torch.testing.assert_close(fused, loss, rtol=1e-6, atol=1e-6)
    for got, want in zip(torch.autograd.grad(fused, params), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model(idx), logits, rtol=1e-5, atol=1e-5)  # the rotary path
    with torch.no_grad():
        none, plain = model(idx, targets, return_logits=False)
    assert none is None and plain.item() == pytest.approx(loss.item(), rel=1e-6)


def test_init_scales():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=64, context_length=8, n_layer=8, d_model=256, n_head=4)
    model = GPT(cfg)
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    residual = 0.02 / math.sqrt(2 * 8)
    assert model.blocks[3].attn.proj.weight.std().item() == pytest.approx(residual, rel=0.05)
    assert model.blocks[3].mlp.down.weight.std().item() == pytest.approx(residual, rel=0.05)
    assert torch.equal(model.norm_f.weight, torch.ones(256))
    assert all(not isinstance(m, torch.nn.Linear) or m.bias is None for m in model.modules())
    assert model.lm_head.weight is model.wte.weight


# --- checkpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
def test_checkpoint_round_trip(tmp_path, tie):
    torch.manual_seed(0)
    cfg = tiny(tie_embeddings=tie)
    model = GPT(cfg)
    with torch.no_grad():  # move away from the initial weights
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "ckpt" / "model.pt"
    save_checkpoint(path, model, extra={"step": 7, "loss": 1.5, "name": "L2-D32"})
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary left behind

    raw = torch.load(path, weights_only=True)
    assert raw["config"] == asdict(cfg)

    loaded, extra = load_checkpoint(path)
    assert extra == {"step": 7, "loss": 1.5, "name": "L2-D32"}
    assert loaded.config == cfg and not loaded.training
    assert (loaded.lm_head.weight is loaded.wte.weight) == tie
    idx = torch.randint(0, cfg.vocab_size, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx), model.eval()(idx), rtol=0, atol=0)


def test_load_checkpoint_rejects_foreign_file(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(path)
    mismatch = tmp_path / "mismatch.pt"
    torch.save(
        {"config": asdict(tiny(d_model=64)), "state_dict": GPT(tiny()).state_dict()}, mismatch
    )
    with pytest.raises(CheckpointError, match="mismatch.pt"):
        load_checkpoint(mismatch)
