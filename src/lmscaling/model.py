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

import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

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
    """Cosine and sine tables for rotary embeddings, each ``(context_length, 1, head_dim // 2)``.

    Angle for position ``t`` and pair ``i`` is ``t * ROPE_BASE**(-2 i / head_dim)``
    (Su et al. 2021, RoFormer, eq. 15). The singleton axis broadcasts over heads.
    """
    inv_freq = ROPE_BASE ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(context_length, dtype=torch.float64), inv_freq)
    return angles.cos().float()[:, None, :], angles.sin().float()[:, None, :]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each feature pair ``(x[..., i], x[..., i + hd/2])`` by its position's angle.

    ``x`` is ``(B, T, heads, hd)``; ``cos``/``sin`` are ``(T, 1, hd/2)``. Returns the same shape.
    (The "rotate-half" pairing of GPT-NeoX; equivalent to RoFormer up to a fixed permutation.)
    """
    x1, x2 = x.chunk(2, dim=-1)  # (B, T, heads, hd/2) each
    rotated = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # float32 tables
    return rotated.type_as(x)  # back to bf16 under autocast


def make_norm(cfg: GPTConfig) -> nn.Module:
    """The configured normalisation over the last axis: RMSNorm or bias-free LayerNorm."""
    if cfg.norm == "layernorm":
        return nn.LayerNorm(cfg.d_model, eps=NORM_EPS, bias=False)
    return nn.RMSNorm(cfg.d_model, eps=NORM_EPS)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, with rotary position embeddings unless learned ones."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.rotary = cfg.position == "rope"
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.proj.is_residual_output = True

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape  # (B, T, C)
        H, hd = self.n_head, C // self.n_head
        qk, v = self.qkv(x).split([2 * C, C], dim=2)  # (B, T, 2C), (B, T, C)
        qk = qk.view(B, T, 2 * H, hd)
        if self.rotary:
            qk = apply_rotary(qk, cos, sin)  # q and k rotated in one pass
        q, k = qk.transpose(1, 2).split(H, dim=1)  # (B, H, T, hd) each
        v = v.view(B, T, H, hd).transpose(1, 2)  # (B, H, T, hd)
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
        cos, sin = rotary_tables(config.context_length, config.head_dim)
        self.register_buffer("rope_cos", cos, persistent=False)  # (context_length, 1, hd/2)
        self.register_buffer("rope_sin", sin, persistent=False)  # (context_length, 1, hd/2)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            std = INIT_STD
            if getattr(module, "is_residual_output", False):
                std = INIT_STD / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits, and the mean cross-entropy when ``targets`` are given.

        Args:
            idx: ``(B, T)`` int64 token ids, ``T <= context_length``.
            targets: optional ``(B, T)`` int64 next-token ids.

        Returns:
            ``logits`` ``(B, T, V)`` float, or ``(logits, loss)`` where ``loss`` is the scalar mean
            cross-entropy in nats/token.

        Raises:
            ValueError: when ``T`` exceeds ``context_length``.
        """
        B, T = idx.shape  # (B, T)
        if T > self.config.context_length:
            raise ValueError(
                f"sequence length {T} exceeds context_length {self.config.context_length}"
            )
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, 1, hd/2)
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe.weight[:T]  # (T, C) broadcast over the batch
        for block in self.blocks:
            x = block(x, cos, sin)  # (B, T, C)
        logits = self.lm_head(self.norm_f(x))  # (B, T, V)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        return logits, loss

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
    d, r = cfg.d_model, cfg.mlp_ratio
    return _counts(cfg.n_layer * ((4 + 2 * r) * d * d + 2 * d) + d, cfg)


def flops_per_token(cfg: GPTConfig) -> dict[str, float]:
    """Analytic ``GPT(cfg).flops_per_token()`` without allocating weights."""
    n = count_parameters(cfg)["N"]
    attention = 6.0 * cfg.n_layer * cfg.context_length * cfg.d_model
    head = 6.0 * cfg.vocab_size * cfg.d_model
    return {"6N": 6.0 * n, "6N_attention": 6.0 * n + attention, "exact": 6.0 * n + attention + head}


def save_checkpoint(path: str | os.PathLike[str], model: GPT, extra: dict | None = None) -> None:
    """Write ``{"config", "state_dict", "extra"}`` to ``path`` atomically with ``torch.save``.

    ``extra`` must hold only plain Python values (numbers, strings, lists, dicts) so that the
    file loads with ``torch.load(weights_only=True)``.
    """
    payload = {
        "config": asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[GPT, dict]:
    """Load a checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``).

    Returns:
        ``(model in eval mode, extra)``; ``extra`` is ``{}`` when none was stored.

    Raises:
        CheckpointError: naming ``path`` when fields are missing or the weights do not match the
            stored configuration.
    """
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or not {"config", "state_dict"} <= payload.keys():
        raise CheckpointError(f"{path}: not a lmscaling checkpoint (needs 'config', 'state_dict')")
    try:
        model = GPT(GPTConfig(**payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    model.to(map_location)
    return model.eval(), payload.get("extra") or {}
