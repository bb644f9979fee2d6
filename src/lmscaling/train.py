"""Train one GPT on a token stream for a fixed token budget D.

One optimizer step sees ``batch_size`` windows of ``context_length + 1`` tokens drawn uniformly
at random from the stream (inputs = window[:-1], targets = window[1:]), so a step consumes
``batch_size * context_length`` training tokens. The learning rate follows linear warmup then
cosine decay; the optimizer is AdamW (Loshchilov & Hutter 2019) with weight decay on weight
matrices only, as in nanoGPT and Kaplan et al. 2020 (sec. 2.2, cosine schedule).
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lmscaling.model import GPT, GPTConfig, model_id

log = logging.getLogger("lmscaling.train")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings for one training run.

    Attributes:
        tokens: D, training tokens to see; rounded up to whole optimizer steps.
        batch_size: sequences per optimizer step.
        lr: peak learning rate; ``min_lr_ratio * lr`` is the final one.
        warmup_fraction: fraction of the steps spent in linear warmup.
        weight_decay, beta1, beta2: AdamW hyper-parameters.
        grad_clip: maximum global gradient L2 norm.
        seed: seeds the initial weights and the batch sampler.
        log_every: steps between progress rows.
        threads: CPU threads for torch (0 leaves torch's default).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...

    Raises:
        ValueError: naming the key whose value is out of range.
    """

    tokens: int
    batch_size: int = 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_fraction: float = 0.05
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 1337
    log_every: int = 10
    threads: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("tokens", "batch_size", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        checks = {
            "lr": self.lr > 0,
            "min_lr_ratio": 0 <= self.min_lr_ratio <= 1,
            "warmup_fraction": 0 <= self.warmup_fraction < 1,
            "weight_decay": self.weight_decay >= 0,
            "beta1": 0 <= self.beta1 < 1,
            "beta2": 0 <= self.beta2 < 1,
            "grad_clip": self.grad_clip > 0,
            "threads": isinstance(self.threads, int) and self.threads >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name} is out of range: {getattr(self, name)!r}")


def select_device(pref: str) -> torch.device:
    """Resolve a device preference: ``"auto"`` -> CUDA if available, else CPU.

    Raises:
        ValueError: for an unknown device string, or a CUDA device when CUDA is unavailable.
    """
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(pref)
    except RuntimeError as exc:
        raise ValueError(f"device {pref!r} is not a valid torch device: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {pref!r} requested but CUDA is not available")
    return device


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning rate for the 0-based optimizer ``step`` of ``total_steps``.

    Linear warmup over ``W = ceil(warmup_fraction * total_steps)`` steps
    (``lr * (step + 1) / W``), then cosine decay from ``lr`` at step ``W`` to
    ``lr * min_lr_ratio`` at the last step (Loshchilov & Hutter 2017, SGDR eq. 5).

    Raises:
        ValueError: when ``step`` is not in ``[0, total_steps)``.
    """
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} is outside [0, {total_steps})")
    warmup = math.ceil(cfg.warmup_fraction * total_steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    min_lr = cfg.lr * cfg.min_lr_ratio
    progress = (step - warmup) / max(1, total_steps - 1 - warmup)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - min_lr)


def load_tokens(paths: Sequence[str | os.PathLike[str]], dtype) -> np.ndarray:
    """Concatenate token shards (flat little-endian ``uint16``/``uint32`` files) into one 1-D array.

    A single shard is returned as a read-only memmap (no copy); several are copied into memory.

    Raises:
        ValueError: when ``paths`` is empty, ``dtype`` is not uint16/uint32, or a file's size is
            not a whole number of tokens (naming the file).
    """
    dt = np.dtype(dtype).newbyteorder("<")
    if dt.kind != "u" or dt.itemsize not in (2, 4):
        raise ValueError(f"token dtype must be uint16 or uint32, got {np.dtype(dtype)}")
    if not paths:
        raise ValueError("no token shard paths given")
    shards = []
    for path in paths:
        size = os.path.getsize(path)
        if size % dt.itemsize:
            raise ValueError(f"{path}: size {size} bytes is not a multiple of {dt.itemsize}")
        if size:
            shards.append(np.memmap(path, dtype=dt, mode="r"))
    if not shards:
        return np.zeros(0, dtype=dt)
    return shards[0] if len(shards) == 1 else np.concatenate(shards)


def _optimizer(model: GPT, cfg: TrainConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]  # weight matrices and the embedding
    no_decay = [p for p in params if p.dim() < 2]  # RMSNorm gains
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel exists for CPU and CUDA and is the fastest on both.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


def keep_freed_memory_in_heap() -> bool:
    """Stop glibc from handing large freed blocks back to the operating system.

    By default glibc serves large blocks (e.g. a 32 MiB ``(32, 128, 2048)`` float32 logits
    tensor) with ``mmap`` and unmaps them when freed, and trims the top of its heap, so every CPU
    training step page-faults fresh zeroed memory for the same activations; for small models that
    costs as much as the arithmetic (about 2x the step time at L1-D32). Raising
    ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` (``mallopt(3)``) keeps the blocks in the heap
    for reuse. Process-wide; returns whether it took effect (False off glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    limit = 1 << 30  # 1 GiB
    return bool(mallopt(m_mmap_threshold, limit)) and bool(mallopt(m_trim_threshold, limit))


def _format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s"


def train(
    model_cfg: GPTConfig,
    cfg: TrainConfig,
    tokens: np.ndarray,
    on_log: Callable[[int, dict], None] | None = None,
    name: str = "",
) -> tuple[GPT, dict, list[dict]]:
    """Train a fresh ``GPT(model_cfg)`` on ``tokens`` for ``cfg.tokens`` tokens.

    ``total_steps = ceil(cfg.tokens / (batch_size * context_length))``. On CUDA the forward pass
    runs under bf16 autocast with TF32 matmuls. Every ``log_every`` steps and at the last step a
    row ``{"step", "tokens", "loss" (mean train loss since the previous row, nats/token), "lr",
    "tokens_per_s", "elapsed_s"}`` is appended to the metrics, passed to ``on_log(step, row)``
    and logged as one line on the ``lmscaling.train`` logger.

    Args:
        model_cfg: model shape.
        cfg: optimisation settings.
        tokens: 1-D integer token stream (e.g. from :func:`load_tokens`).
        on_log: optional callback receiving each metrics row.
        name: model name for messages (default ``model_id(n_layer, d_model)``).

    Returns:
        ``(model on CPU in eval mode, summary, metrics)``; ``summary`` holds ``steps``, ``D``
        (tokens seen = steps * batch_size * context_length), ``train_loss`` (last logged),
        ``train_time_s``, ``tokens_per_s``, ``device``, ``N``, ``N_embedding``, ``N_total``,
        ``C = 6 N D`` FLOP (Kaplan et al. 2020, eq. 2.1) and ``flops_per_token``.

    Raises:
        ValueError: when the stream is shorter than ``context_length + 1`` tokens or holds a
            token id outside ``[0, vocab_size)``.
        FloatingPointError: naming the model and step when the training loss is not finite.
    """
    name = name or model_id(model_cfg.n_layer, model_cfg.d_model)
    T, B = model_cfg.context_length, cfg.batch_size
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or len(tokens) < T + 1:
        raise ValueError(
            f"{name}: too few tokens to train: need a 1-D stream of at least context_length + 1 "
            f"= {T + 1} tokens, got shape {tokens.shape}"
        )
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= model_cfg.vocab_size:
        raise ValueError(
            f"{name}: token ids span [{lo}, {hi}], outside [0, vocab_size={model_cfg.vocab_size})"
        )

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = select_device(cfg.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.set_float32_matmul_precision("high")  # TF32 for the float32 matmuls left
    else:
        keep_freed_memory_in_heap()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    model = GPT(model_cfg).to(device)
    model.train()
    optimizer = _optimizer(model, cfg)
    tokens_per_step = B * T
    total_steps = math.ceil(cfg.tokens / tokens_per_step)
    offsets = np.arange(T + 1)  # (T+1,)
    step_losses = torch.zeros(total_steps, device=device)  # read back only at log steps

    metrics: list[dict] = []
    last_logged = 0
    t_start = t_last = time.perf_counter()
    for step in range(total_steps):
        lr = lr_at(step, total_steps, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = rng.integers(0, len(tokens) - T, size=B)  # window start positions
        windows = torch.from_numpy(tokens[starts[:, None] + offsets].astype(np.int64))  # (B, T+1)
        if cuda:
            windows = windows.pin_memory().to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
            _, loss = model(windows[:, :-1], windows[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_losses[step] = loss.detach()

        done = step + 1
        if done % cfg.log_every and done != total_steps:
            continue
        recent = step_losses[last_logged:done].cpu()  # synchronises with the device
        finite = torch.isfinite(recent)
        if not bool(finite.all()):
            bad = last_logged + int((~finite).nonzero()[0]) + 1
            raise FloatingPointError(
                f"{name}: non-finite training loss at step {bad}/{total_steps} "
                f"(lr {lr_at(bad - 1, total_steps, cfg):.3g})"
            )
        now = time.perf_counter()
        interval_tokens = (done - last_logged) * tokens_per_step
        rate = interval_tokens / max(now - t_last, 1e-9)
        row = {
            "step": done,
            "tokens": done * tokens_per_step,
            "loss": float(recent.double().mean()),
            "lr": lr,
            "tokens_per_s": rate,
            "elapsed_s": now - t_start,
        }
        metrics.append(row)
        eta = (total_steps - done) * tokens_per_step / rate
        log.info(
            "%s step %d/%d | loss %.3f | lr %.1e | %.1fk tok/s | ETA %s",
            name,
            done,
            total_steps,
            row["loss"],
            lr,
            rate / 1e3,
            _format_duration(eta),
        )
        if on_log is not None:
            on_log(done, row)
        last_logged, t_last = done, now

    train_time = time.perf_counter() - t_start
    model = model.cpu().eval()
    counts = model.param_counts()
    d_seen = total_steps * tokens_per_step
    summary = {
        "steps": total_steps,
        "D": d_seen,
        "train_loss": metrics[-1]["loss"],
        "train_time_s": train_time,
        "tokens_per_s": d_seen / max(train_time, 1e-9),
        "device": str(device),
        **counts,
        "C": 6.0 * counts["N"] * d_seen,
        "flops_per_token": model.flops_per_token(),
    }
    return model, summary, metrics
