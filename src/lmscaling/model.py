"""A small GPT language model (nanoGPT-style) with scaling-law bookkeeping.

Architecture: token embedding (+ learned position embedding when ``position="learned"``) ->
``n_layer`` pre-norm Transformer blocks -> final norm -> LM head (tied to the embedding by
default). Each block is

    x = x + Attention(Norm(x))     causal self-attention through scaled_dot_product_attention
                                   (flash / memory-efficient kernels on GPU), rotary positions
                                   (Su et al. 2021) by default
    x = x + MLP(Norm(x))           Linear(d, r*d) -> GELU -> Linear(r*d, d)

where Norm is RMSNorm (Zhang & Sennrich 2019, default) or LayerNorm without bias, and no layer
has a bias. Shapes use B = batch, T = sequence length, C = d_model, H = n_head,
hd = head_dim = C // H, V = vocab_size.

Training on CPU (one thread, gradients enabled, eager mode) takes fast paths that compute the same
functions, to float32 rounding, in fewer passes over memory: RMSNorm with a hand-derived
backward pass (:class:`RMSNorm`), the rotary embedding as one complex multiplication
(:class:`CausalSelfAttention`) and, for ``model(idx, targets, return_logits=False)``, the LM head
fused with the cross-entropy chunk by chunk (:func:`linear_cross_entropy`). CUDA and
``torch.compile`` run the plain expressions; so does everything when ``CPU_FAST_PATHS`` is False.
Under CPU autocast to bfloat16 (any thread count) attention runs on :func:`cpu_bf16_attention`
instead of PyTorch's fused kernel (bf16 products over the causal blocks of the scores only), and
the fused loss runs its matrix products in bf16.

Parameter convention (Kaplan et al. 2020, sec. 2.1): ``N`` counts the non-embedding
parameters, i.e. every trainable parameter except the token-embedding matrix, the learned
position embedding (when used) and, when it is untied, the LM-head (unembedding) matrix. With
``r = mlp_ratio`` and ``L = n_layer``::

    N = L * ((4 + 2 r) * d_model**2 + 2 * d_model) + d_model

    4 d^2     attention: fused q,k,v projection (3 d^2) + output projection (d^2)
    2 r d^2   MLP: up (r d^2) + down (r d^2)
    2 d       the two norm gains of a block
    + d       the final norm gain

so for the default ``r = 4``, ``N = 12 L d^2 + (2 L + 1) d`` (Kaplan et al. 2020, eq. 2.1 gives
``12 L d^2`` when norms are ignored).
"""

from __future__ import annotations

import itertools
import math
import os
import pickle
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmscaling.config import non_embedding_params, training_flops_per_token
from lmscaling.io import atomic_path

ROPE_BASE = 10000.0  # rotary frequency base (Su et al. 2021, RoFormer, eq. 15)
INIT_STD = 0.02  # GPT-2 initialisation (Radford et al. 2019)
NORM_EPS = 1e-6
NORMS = ("rmsnorm", "layernorm")
POSITIONS = ("rope", "learned")


class CheckpointError(ValueError):
    """A checkpoint file is missing fields or does not match its stored configuration."""


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a GPT model.

    Attributes:
        vocab_size, context_length, n_layer, d_model, n_head, mlp_ratio: sizes (V, T, L, d, H, r).
        tie_embeddings: share the token-embedding matrix with the LM head (Press & Wolf 2017).
        norm: ``"rmsnorm"`` or ``"layernorm"`` (bias-free LayerNorm).
        position: ``"rope"`` (rotary, Su et al. 2021) or ``"learned"`` (GPT-2 absolute positions).

    Raises:
        ValueError: naming the offending field when a size is not positive, ``d_model`` is not
            divisible by ``n_head``, the head dimension is odd with rotary embeddings (they rotate
            pairs), or ``norm`` / ``position`` is unknown.
    """

    vocab_size: int
    context_length: int
    n_layer: int
    d_model: int
    n_head: int
    mlp_ratio: int = 4
    tie_embeddings: bool = True
    norm: str = "rmsnorm"
    position: str = "rope"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "n_layer", "d_model", "n_head", "mlp_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"tie_embeddings must be a bool, got {self.tie_embeddings!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model ({self.d_model}) is not divisible by n_head ({self.n_head})")
        if self.position == "rope" and self.head_dim % 2 != 0:
            raise ValueError(
                f"head_dim = d_model // n_head ({self.head_dim}) must be even for rotary "
                f"position embeddings (d_model={self.d_model}, n_head={self.n_head})"
            )

    @property
    def head_dim(self) -> int:
        """Per-head width ``d_model // n_head``."""
        return self.d_model // self.n_head


def model_id(n_layer: int, d_model: int) -> str:
    """Short model name used in file names and logs, e.g. ``model_id(4, 128) == "L4-D128"``."""
    return f"L{n_layer}-D{d_model}"


def rotary_tables(context_length: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and signed sine tables for rotary embeddings, each ``(context_length, 1, head_dim)``.

    Angle for position ``t`` and pair ``i`` is ``theta = t * ROPE_BASE**(-2 i / head_dim)``
    (Su et al. 2021, RoFormer, eq. 15). Pair ``i`` is ``(x[i], x[i + hd/2])``; the tables hold
    ``cos = [cos theta, cos theta]`` and ``sin = [-sin theta, sin theta]`` over the two halves, so
    that :func:`apply_rotary` is one multiply-add. The singleton axis broadcasts over heads.
    """
    inv_freq = ROPE_BASE ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(context_length, dtype=torch.float64), inv_freq)
    cos, sin = angles.cos().float(), angles.sin().float()  # (T, hd/2)
    return torch.cat((cos, cos), 1)[:, None, :], torch.cat((-sin, sin), 1)[:, None, :]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each feature pair ``(x[..., i], x[..., i + hd/2])`` by its position's angle.

    ``x`` is ``(B, T, heads, hd)``; ``cos``/``sin`` are ``(T, 1, hd)`` from :func:`rotary_tables`.
    Returns the same shape: ``x * cos + [x2, x1] * sin`` with ``x1, x2`` the two halves of ``x``,
    i.e. ``(x1 cos - x2 sin, x2 cos + x1 sin)`` (the "rotate-half" pairing of GPT-NeoX; equivalent
    to RoFormer up to a fixed permutation).
    """
    x1, x2 = x.chunk(2, dim=-1)  # (B, T, heads, hd/2) each
    rotated = torch.addcmul(x * cos, torch.cat((x2, x1), dim=-1), sin)  # float32 tables
    return rotated.type_as(x)  # back to bf16 under autocast


CPU_FAST_PATHS = True  # False runs the plain expressions everywhere (e.g. to compare the two)


def cpu_training(x: torch.Tensor) -> bool:
    """Whether ``x`` takes the CPU training fast paths (:class:`RMSNorm`, the complex rotary in
    :class:`CausalSelfAttention`, the fused loss): on CPU, with gradients enabled, in eager mode
    (``torch.compile`` fuses the plain expressions), with one intra-op thread (the workflow's
    ``train.threads: 1`` per job), unless :data:`CPU_FAST_PATHS` is False.

    One thread only: measured on 2 cores (``benchmarks/train_speed.py``), the fast paths train
    1.08-1.42x faster than the plain ones with one thread, but 0.69-1.07x as fast with two, where
    the plain path's large matrix products split across threads and the small chunked ones do not.
    """
    return (
        CPU_FAST_PATHS
        and x.device.type == "cpu"
        and torch.get_num_threads() == 1
        and torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
    )


def cpu_bf16_autocast() -> bool:
    """Whether CPU autocast to bfloat16 is on (the training loop's ``precision: bf16`` on CPU)."""
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


EXPLICIT_ATTENTION_MAX_T = 128  # longest sequence for which cpu_bf16_attention multiplies out
ATTENTION_QUERY_BLOCKS = 2  # query blocks of _CausalAttentionBf16 (1 = the whole square)


def _query_blocks(T: int, blocks: int) -> list[tuple[int, int]]:
    """``blocks`` near-equal ``[lo, hi)`` ranges of the ``T`` query positions, none empty."""
    edges = [T * i // blocks for i in range(blocks + 1)]
    return [(lo, hi) for lo, hi in itertools.pairwise(edges) if hi > lo]


def _first_order_only(function: str) -> None:
    """Refuse a double backward pass (``create_graph=True``) through ``function``, a hand-written
    backward pass whose saved tensors are not part of a graph: its second derivatives would be
    silently missing.

    Raises:
        RuntimeError: naming ``function`` when gradient recording is on (the autograd engine
            turns it on inside a backward pass only for ``create_graph=True``).
    """
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"{function} has a first-order backward pass only; double backward "
            "(create_graph=True) is not supported; for higher derivatives train in float32 with "
            "lmscaling.model.CPU_FAST_PATHS = False"
        )


class _CausalAttentionBf16(torch.autograd.Function):
    """Causal attention in bf16 matrix products, skipping the keys a query block cannot see.

    Queries are split into :data:`ATTENTION_QUERY_BLOCKS` blocks; block ``[lo, hi)`` scores
    keys ``[0, hi)`` only, since later keys are masked for all its queries. With 2 blocks a
    quarter of the ``T x T`` scores, of their softmax and of the six products over them (two
    forward, four backward) is never computed. For ``q``, ``k``, ``v`` as ``(BH, T, hd)``
    bf16 and ``s = 1 / sqrt(hd)``, each block computes (Vaswani et al. 2017, eq. 1) ``P =
    softmax(s q k^T + mask)`` and ``y = P v``; the backward pass, for upstream ``dy``: ``dP =
    dy v^T``, ``dS = P * (dP - rowsum(dP * P))`` (the softmax gradient), ``dq = s dS k``,
    ``dk += s dS^T q``, ``dv += P^T dy``. Keys seen by several blocks accumulate ``dk`` and
    ``dv`` in bf16, one rounding per block (measured against float64: relative error 5.6e-3
    for dk and 4.4e-3 for dv, against 5.4e-3 and 4.2e-3 with one block).
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, H, T, hd = q.shape
        q, k, v = (t.to(torch.bfloat16).reshape(B * H, T, hd) for t in (q, k, v))
        mask = torch.full((T, T), float("-inf"), dtype=torch.bfloat16, device=q.device).triu(1)
        y = torch.empty_like(q)  # (B H, T, hd)
        probs = []
        for lo, hi in _query_blocks(T, ATTENTION_QUERY_BLOCKS):
            scores = torch.baddbmm(
                mask[lo:hi, :hi], q[:, lo:hi], k[:, :hi].transpose(1, 2), alpha=hd**-0.5
            )  # (B H, hi - lo, hi)
            probs.append(scores.softmax(-1))
            torch.bmm(probs[-1], v[:, :hi], out=y[:, lo:hi])
        ctx.save_for_backward(q, k, v, *probs)
        return y.view(B, H, T, hd)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _first_order_only("bf16 attention on CPU")
        q, k, v, *probs = ctx.saved_tensors
        BH, T, hd = q.shape
        shape, scale = grad_y.shape, hd**-0.5
        grad_y = grad_y.to(torch.bfloat16).reshape(BH, T, hd)
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for (lo, hi), p in zip(_query_blocks(T, ATTENTION_QUERY_BLOCKS), probs, strict=True):
            g = grad_y[:, lo:hi]  # (B H, hi - lo, hd)
            grad_v[:, :hi].baddbmm_(p.transpose(1, 2), g)
            grad_s = torch._softmax_backward_data(
                torch.bmm(g, v[:, :hi].transpose(1, 2)), p, -1, torch.bfloat16
            )  # (B H, hi - lo, hi)
            torch.baddbmm(
                grad_q[:, lo:hi], grad_s, k[:, :hi], beta=0, alpha=scale, out=grad_q[:, lo:hi]
            )
            grad_k[:, :hi].baddbmm_(grad_s.transpose(1, 2), q[:, lo:hi], alpha=scale)
        return grad_q.view(shape), grad_k.view(shape), grad_v.view(shape)


def cpu_bf16_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention ``softmax(q k^T / sqrt(hd) + mask) v`` (Vaswani et al. 2017, eq. 1) for
    bf16 training on CPU, where PyTorch's fused CPU kernel is slow in bfloat16.

    ``q``, ``k``, ``v`` are ``(B, H, T, hd)`` float32 or bfloat16; returns ``(B, H, T, hd)``
    bfloat16. Up to :data:`EXPLICIT_ATTENTION_MAX_T` positions it runs bf16 matrix products
    and a softmax over the causal blocks (:class:`_CausalAttentionBf16`), keeping the
    probabilities, about ``0.75 (B H) T^2`` of them, for the backward pass; beyond that it
    runs ``scaled_dot_product_attention`` in float32, whose memory does not grow with ``T^2``
    (autocast is turned off around it). Measured forward + backward on one Zen 4 core (heads
    of ``hd = 16``, 4096 positions in all): at ``T = 128`` the fused kernel takes 80 ms in
    bf16 and 23 ms in float32, the products over the whole square 17 ms; at ``T = 256`` and
    512, 68 and 102 ms in bf16 against 42 and 82 ms here; at ``T = 1024`` both about 115 ms.
    """
    if q.shape[2] > EXPLICIT_ATTENTION_MAX_T:
        with torch.autocast("cpu", enabled=False):  # autocast would run it in bf16 again
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
        return y.to(torch.bfloat16)
    return _CausalAttentionBf16.apply(q, k, v)


class _RMSNormFunction(torch.autograd.Function):
    """RMSNorm with a hand-derived backward pass.

    Forward (Zhang & Sennrich 2019, eq. 4): ``r = 1 / sqrt(mean(x^2) + eps)`` per row,
    ``x_hat = x r``, ``y = x_hat g``. Backward, for upstream gradient ``dy``: ``dg = sum over
    rows of dy x_hat`` and ``dx = r (dy g - x_hat mean(dy g x_hat))`` (the last axis' mean).
    Computed in float32; ``y`` is written in ``dtype``: bfloat16 under CPU autocast, where the
    next matrix product would round it so anyway (one pass over memory fewer each way).
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(
        ctx, x: torch.Tensor, weight: torch.Tensor, eps: float, dtype: torch.dtype
    ) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # (..., 1) sqrt(sum x^2)
        rstd = norm.square_().div_(x.shape[-1]).add_(eps).rsqrt_()  # (..., 1)
        x_hat = x * rstd
        ctx.save_for_backward(x_hat, rstd, weight)
        return torch.mul(x_hat, weight, out=torch.empty_like(x, dtype=dtype))

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        _first_order_only("RMSNorm on the CPU training path")
        x_hat, rstd, weight = ctx.saved_tensors
        grad_weight = (grad_y * x_hat).flatten(0, -2).sum(0)  # (C,) float32
        grad_x = grad_y * weight  # dL/dx_hat, float32
        mean = (grad_x * x_hat).mean(-1, keepdim=True)  # (..., 1)
        return grad_x.addcmul_(x_hat, mean, value=-1.0).mul_(rstd), grad_weight, None, None


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` over the last axis, with a fused backward pass when training on CPU.

    Same parameters and outputs (to float32 rounding) as ``nn.RMSNorm``; on the CPU training
    path (:func:`cpu_training`) it runs :class:`_RMSNormFunction`, whose backward pass takes
    fewer passes over the activations than the autograd graph of the composite ``nn.RMSNorm``
    (forward + backward in 20-30% less time at ``d_model`` 32-128), and whose output is
    bfloat16 under CPU autocast to bfloat16.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu_training(x) and self.weight is not None:
            dtype = torch.bfloat16 if cpu_bf16_autocast() else x.dtype
            eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps  # as nn.RMSNorm
            return _RMSNormFunction.apply(x, self.weight, eps, dtype)
        return super().forward(x)


def make_norm(cfg: GPTConfig) -> nn.Module:
    """The configured normalisation over the last axis: RMSNorm or bias-free LayerNorm."""
    if cfg.norm == "layernorm":
        return nn.LayerNorm(cfg.d_model, eps=NORM_EPS, bias=False)
    return RMSNorm(cfg.d_model, eps=NORM_EPS)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, with rotary position embeddings unless learned ones.

    On the CPU training path (:func:`cpu_training`) the rotation is one complex multiplication
    (RoFormer's complex form, Su et al. 2021, sec. 3.2): the q and k rows of the projection
    are read in pair order ``(0, hd/2, 1, hd/2 + 1, ...)`` within each head, so every rotary
    pair ``(x[i], x[i + hd/2])`` is one complex number. Permuting the features of q and k alike
    leaves every attention score, hence the function, unchanged (to float32 rounding).
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.rotary = cfg.position == "rope"
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.proj.is_residual_output = True
        rows = None
        if self.rotary:
            half, d = cfg.head_dim // 2, cfg.d_model
            pair = torch.stack((torch.arange(half), torch.arange(half) + half), dim=1).flatten()
            heads = [h * cfg.head_dim + pair for h in range(2 * cfg.n_head)]  # q and k heads
            rows = torch.cat([*heads, torch.arange(2 * d, 3 * d)])  # v rows unchanged
        self.register_buffer("pair_rows", rows, persistent=False)  # (3C,)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape  # (B, T, C)
        H, hd = self.n_head, C // self.n_head
        if self.rotary and cpu_training(x):
            qk, v = F.linear(x, self.qkv.weight[self.pair_rows]).split([2 * C, C], dim=2)
            pairs = torch.view_as_complex(qk.view(B, T, 2 * H, hd // 2, 2))  # (B, T, 2H, hd/2)
            turn = torch.complex(cos[..., hd // 2 :], sin[..., hd // 2 :])  # (T, 2H, hd/2)
            qk = torch.view_as_real(pairs * turn).flatten(3)  # (B, T, 2H, hd) in pair order
        else:
            qk, v = self.qkv(x).split([2 * C, C], dim=2)  # (B, T, 2C), (B, T, C)
            qk = qk.view(B, T, 2 * H, hd)
            if self.rotary:
                qk = apply_rotary(qk, cos, sin)  # q and k rotated in one pass
        q, k = (t.transpose(1, 2) for t in qk.split(H, dim=2))  # (B, H, T, hd) each
        v = v.view(B, T, H, hd).transpose(1, 2)  # (B, H, T, hd)
        if x.device.type == "cpu" and cpu_bf16_autocast():
            y = cpu_bf16_attention(q, k, v)  # (B, H, T, hd)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(y)  # (B, T, C)


class MLP(nn.Module):
    """Position-wise feed-forward network ``Linear -> GELU -> Linear`` of width ``r * d``."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False)
        self.down = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False)
        self.down.is_residual_output = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))  # (B, T, C) -> (B, T, r*C) -> (B, T, C)


class Block(nn.Module):
    """Pre-norm Transformer block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.norm_attn = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.norm_mlp = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_attn(x), cos, sin)  # (B, T, C)
        return x + self.mlp(self.norm_mlp(x))  # (B, T, C)


LOSS_CHUNK_LOGITS = 1 << 18  # logits per chunk of the fused loss: 1 MiB of float32, cache-sized


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``h @ weight.T``, its gradients computed chunk by chunk in forward.

    For rows ``h (N, C)``, ``weight (V, C)`` and targets ``y (N,)``: with ``P = softmax(h W^T)``
    and ``Y`` the one-hot targets, ``loss = mean_n -log P[n, y_n]`` and ``dloss/d(h W^T) =
    (P - Y) / N`` (the softmax cross-entropy gradient), so ``dloss/dh = (P - Y) W / N`` and
    ``dloss/dW = (P - Y)^T h / N``. Rows are processed in chunks of ``LOSS_CHUNK_LOGITS / V``,
    each ``(rows, V)`` block of logits living only in cache: the ``(N, V)`` logits, their
    log-softmax and its gradient are never written to memory, the same arithmetic as
    ``F.cross_entropy(F.linear(h, weight), y)`` in one pass instead of five.

    With ``bf16`` the three matrix products take bfloat16 operands, as under autocast: the
    logits are rounded to bf16, the softmax, the loss and the accumulated ``dloss/dW`` stay
    float32.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(
        ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, bf16: bool
    ) -> torch.Tensor:
        n, vocab = h.shape[0], weight.shape[0]
        rows = max(1, LOSS_CHUNK_LOGITS // vocab)
        h_mm, w_mm = (h.bfloat16(), weight.bfloat16()) if bf16 else (h, weight)
        y = targets[:, None]  # (N, 1)
        p_y = h.new_empty(n, 1)  # P[n, y_n]
        minus_one = h.new_full((rows, 1), -1.0)
        grad_h = torch.empty_like(h_mm)  # (N, C): (P - Y) W
        grad_wt = h.new_zeros(h.shape[1], vocab)  # (C, V): h^T (P - Y), the faster layout
        for lo in range(0, n, rows):
            hi = min(n, lo + rows)
            h_c, y_c = h_mm[lo:hi], y[lo:hi]  # (c, C), (c, 1)
            probs = torch.softmax(torch.mm(h_c, w_mm.t()), dim=1, dtype=torch.float32)  # (c, V)
            torch.gather(probs, 1, y_c, out=p_y[lo:hi])
            probs.scatter_add_(1, y_c, minus_one[: hi - lo])  # P - Y
            if bf16:
                probs = probs.bfloat16()
                grad_wt.add_(torch.mm(h_c.t(), probs))
            else:
                grad_wt.addmm_(h_c.t(), probs)
            torch.mm(probs, w_mm, out=grad_h[lo:hi])
        nll = p_y.log_().neg_().squeeze(1)  # (N,) nats
        far = nll > 69.0  # P[n, y_n] < 1e-30 may have underflowed: exact log-sum-exp instead
        if far.any():
            logits = h[far] @ weight.t()
            nll[far] = torch.logsumexp(logits, 1) - logits.gather(1, y[far]).squeeze(1)
        ctx.save_for_backward(grad_h, grad_wt)
        return nll.mean()

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        _first_order_only("the fused LM head and cross-entropy")
        grad_h, grad_wt = ctx.saved_tensors
        scale = grad_loss / grad_h.shape[0]  # d(mean)/d(row loss) times the upstream gradient
        return grad_h.float() * scale, grad_wt.t() * scale, None, None


def linear_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """``F.cross_entropy(F.linear(h, weight), targets)`` (mean, nats/token) without the logits.

    ``h`` is ``(N, C)`` float, ``weight`` ``(V, C)``, ``targets`` ``(N,)`` int64 in ``[0, V)``.
    Returns the scalar mean loss; its backward pass gives the same gradients as the unfused
    expression to float32 rounding (to bf16 rounding under CPU autocast to bfloat16, whose
    matrix products it then runs in bf16 too). The gradients are computed during the forward
    pass (see ``_LinearCrossEntropy``), so call it only when they are wanted. On one CPU core,
    for ``N = 4096, V = 2048``, forward + backward take 10-35% less time than the unfused
    expression (``C`` = 128 ... 32), and 40% less again in bf16 at ``C = 128``.
    """
    return _LinearCrossEntropy.apply(h, weight, targets, cpu_bf16_autocast())


class GPT(nn.Module):
    """Decoder-only Transformer language model.

    Initialisation is scaled with depth as in GPT-2 (Radford et al. 2019, sec. 2.3): every
    weight matrix ~ N(0, 0.02^2), the residual output projections (attention ``proj`` and MLP
    ``down``) ~ N(0, (0.02/sqrt(2L))^2) so the residual stream's variance does not grow with L,
    norm gains = 1.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.wpe = None
        if config.position == "learned":
            self.wpe = nn.Embedding(config.context_length, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_f = make_norm(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        # Repeated over the 2H query and key heads, so that the rotation runs over whole rows.
        cos, sin = rotary_tables(config.context_length, config.head_dim)
        cos, sin = cos.repeat(1, 2 * config.n_head, 1), sin.repeat(1, 2 * config.n_head, 1)
        self.register_buffer("rope_cos", cos, persistent=False)  # (context_length, 2H, hd)
        self.register_buffer("rope_sin", sin, persistent=False)  # (context_length, 2H, hd)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            std = INIT_STD
            if getattr(module, "is_residual_output", False):
                std = INIT_STD / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        return_logits: bool = True,
    ) -> torch.Tensor | tuple[torch.Tensor | None, torch.Tensor]:
        """Next-token logits, and the mean cross-entropy when ``targets`` are given.

        Args:
            idx: ``(B, T)`` int64 token ids, ``T <= context_length``.
            targets: optional ``(B, T)`` int64 next-token ids.
            return_logits: with ``targets``, False returns ``(None, loss)``: the training step,
                which on CPU with gradients enabled computes the loss with
                :func:`linear_cross_entropy` and never materialises the ``(B, T, V)`` logits.

        Returns:
            ``logits`` ``(B, T, V)`` float, or ``(logits or None, loss)`` where ``loss`` is the
            scalar mean cross-entropy in nats/token.

        Raises:
            ValueError: when ``T`` exceeds ``context_length``.
        """
        B, T = idx.shape  # (B, T)
        if T > self.config.context_length:
            raise ValueError(
                f"sequence length {T} exceeds context_length {self.config.context_length}"
            )
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, 2H, hd)
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe.weight[:T]  # (T, C) broadcast over the batch
        for block in self.blocks:
            x = block(x, cos, sin)  # (B, T, C)
        x = self.norm_f(x)  # (B, T, C)
        if targets is not None and not return_logits and cpu_training(x):
            return None, linear_cross_entropy(
                x.flatten(0, 1), self.lm_head.weight, targets.flatten()
            )
        logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        return (logits if return_logits else None), loss

    def param_counts(self) -> dict[str, int]:
        """Parameter counts, from the module's own tensors (see the module docstring).

        Returns:
            ``{"N"``: non-embedding parameters (Kaplan et al. 2020, sec. 2.1: excludes the token
            and position embeddings and, when untied, the unembedding matrix),
            ``"N_embedding"``: ``V d`` (``2 V d`` untied) plus ``T d`` for learned positions,
            ``"N_total"``: all unique trainable parameters (a tied matrix counted once),
            ``"N_total_untied"``: the total with the LM head counted as its own ``V d`` matrix,
            i.e. the same architecture without weight tying (equals ``N_total`` when untied)``}``.
        """
        total = sum(p.numel() for p in self.parameters() if p.requires_grad)
        n_embedding = _embedding_params(self.config)
        return _counts(total - n_embedding, self.config)

    def flops_per_token(self) -> dict[str, float]:
        """Training FLOP per token (forward + backward = 3x forward).

        Returns:
            ``{"6N": 6 N`` (Kaplan et al. 2020, eq. 2.1, ``C ~ 6 N``),
            ``"6N_attention": 6 N + 6 L n_ctx d`` (Kaplan et al. 2020, Table 1: forward attention
            term ``2 n_layer n_ctx d_attn``, x3 for the backward pass),
            ``"exact": 6N_attention + 6 V d`` (adds the LM-head matmul; the count MFU uses)}.
            The attention term counts the full ``T x T`` score matrix, as Kaplan et al. do.
        """
        return flops_per_token(self.config)


def _embedding_params(cfg: GPTConfig) -> int:
    n = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
    if cfg.position == "learned":
        n += cfg.context_length * cfg.d_model
    return n


def _counts(n: int, cfg: GPTConfig) -> dict[str, int]:
    n_embedding = _embedding_params(cfg)
    head = cfg.vocab_size * cfg.d_model if cfg.tie_embeddings else 0
    return {
        "N": n,
        "N_embedding": n_embedding,
        "N_total": n + n_embedding,
        "N_total_untied": n + n_embedding + head,
    }


def count_parameters(cfg: GPTConfig) -> dict[str, int]:
    """Analytic ``GPT(cfg).param_counts()`` without allocating weights.

    ``N = L * ((4 + 2 r) d^2 + 2 d) + d`` (module docstring; Kaplan et al. 2020, sec. 2.1).
    """
    return _counts(non_embedding_params(cfg.n_layer, cfg.d_model, cfg.mlp_ratio), cfg)


def flops_per_token(cfg: GPTConfig) -> dict[str, float]:
    """Analytic ``GPT(cfg).flops_per_token()`` without allocating weights."""
    n = count_parameters(cfg)["N"]
    return training_flops_per_token(n, cfg.n_layer, cfg.context_length, cfg.d_model, cfg.vocab_size)


def save_checkpoint(path: str | os.PathLike[str], model: GPT, extra: dict | None = None) -> None:
    """Write ``{"config", "state_dict", "extra"}`` to ``path`` atomically with ``torch.save``.

    ``extra`` must hold only plain Python values (numbers, strings, lists, dicts) so that the
    file loads with ``torch.load(weights_only=True)``. Written through a file object, so the
    archive's inner folder is ``archive/``, not the temporary file's random name: equal
    contents give equal bytes.
    """
    payload = {
        "config": asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[GPT, dict]:
    """Load a checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``).

    Returns:
        ``(model in eval mode, extra)``; ``extra`` is ``{}`` when none was stored.

    Raises:
        CheckpointError: naming ``path`` when it cannot be read (missing, truncated, not a torch
            file, or a pickle that ``weights_only`` refuses), fields are missing or the weights
            do not match the stored configuration.
    """
    head, torch_file = b"", True
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
        # torch.save writes a zip archive; older torch a pickle (protocol byte 0x80)
        torch_file = not head or head.startswith((b"PK\x03\x04", b"\x80"))
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, EOFError, KeyError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if not torch_file:
            reason = f"not a torch checkpoint, it starts with {head!r}: a Git LFS pointer?"
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({reason}); remove it and rerun the job "
            "that writes it"
        ) from exc
    if not isinstance(payload, dict) or not {"config", "state_dict"} <= payload.keys():
        raise CheckpointError(f"{path}: not a lmscaling checkpoint (needs 'config', 'state_dict')")
    try:
        model = GPT(GPTConfig(**payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    model.to(map_location)
    return model.eval(), payload.get("extra") or {}
