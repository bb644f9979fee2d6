"""Train one GPT for a token budget D: resumable, multi-GPU ready, with FLOP and MFU accounting.

Batches. One optimizer step consumes ``batch_size`` windows of ``context_length + 1`` tokens
(inputs = window[:-1], targets = window[1:]), i.e. ``batch_size * context_length`` training tokens,
summed over every GPU (rank) and micro-batch. The window starts of step ``s`` are drawn uniformly
over all windows, or by corpus with the probabilities of ``mixture`` then uniformly within the
corpus (:class:`TokenStream`), from ``np.random.default_rng((seed, s))``, so the data position
of a step depends on ``(seed, s)`` only: a resumed run, or one split over micro-batches
(gradient accumulation) or ranks, sees exactly the batches of an uninterrupted single-process
run. Micro-batch ``m`` of rank ``r`` takes rows ``[(m * world + r) * micro, ...)`` of the
step's batch. Windows never cross a shard boundary.

Optimisation. AdamW (Loshchilov & Hutter 2019; fused kernel where available) with weight decay
on weight matrices only, global gradient-norm clipping, a linear warmup then either cosine decay
(Loshchilov & Hutter 2017) or warmup-stable-decay (WSD: constant, then a linear decay over the
last ``decay_fraction`` of the steps; Hägele et al. 2024). With ``precision`` bf16 (by default
on GPUs and CPUs with bfloat16 arithmetic, :func:`resolve_precision`) the forward pass runs
under bf16 autocast, the weights, gradients and optimizer state staying float32; on CUDA the
float32 matmuls left use TF32. ``compile=True`` tries ``torch.compile`` and falls back to eager
execution with a logged warning when it cannot compile.

Reliability. With a ``state_dir``, every ``resume_every`` steps rank 0 writes
``state_dir/resume.pt`` atomically (model, optimizer, step, losses so far, torch/numpy/python RNG
states); a rerun with the same settings continues from it and ends with the same weights and loss
as an uninterrupted run (bit for bit on CPU). Model checkpoints at ``checkpoint_fractions`` of the
budget are written to ``state_dir/frac-{f}.pt``. All files load with ``torch.load(weights_only=
True)``. The caller moves the fraction checkpoints to their final place and removes the state
directory (:func:`clear_state`) once its outputs are written.

Multi-GPU. Under ``torchrun`` (``WORLD_SIZE > 1``, see :mod:`lmscaling.distributed`) the model is
wrapped in DistributedDataParallel (NCCL on CUDA, gloo on CPU); gradients are synchronised on the
last micro-batch of a step only.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from lmscaling.config import checkpoint_name, checkpoint_steps, optimizer_steps
from lmscaling.io import atomic_path, read_json
from lmscaling.jobs import CONSOLE
from lmscaling.model import GPT, GPTConfig, model_id, save_checkpoint
from lmscaling.progress import LiveLine

log = logging.getLogger("lmscaling.train")

SCHEDULES = ("cosine", "wsd")
PRECISIONS = ("auto", "bf16", "fp32")
RESUME_FILE = "resume.pt"
RESUME_VERSION = 1

# Dense bf16 tensor-core peak FLOP/s (no sparsity) from the vendors' data sheets, matched as a
# substring of torch.cuda.get_device_name(), most specific first. MFU = achieved model FLOP/s /
# peak (Chowdhery et al. 2022, PaLM, app. B).
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("GB200", 2.5e15),
    ("B200", 2.25e15),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("A6000", 155e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)


class TrainError(ValueError):
    """Bad training input: settings out of range, an unusable device, token shards that are
    missing, truncated, too short for one window or hold ids outside the vocabulary."""


class ResumeError(ValueError):
    """A resume file cannot be read or was written by an incompatible version."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings for one training run.

    Attributes:
        tokens: D, training tokens to see; rounded up to whole optimizer steps.
        batch_size: sequences per optimizer step, over all ranks and micro-batches.
        micro_batch_size: sequences per forward pass on one rank; 0 = ``batch_size / world``
            (no gradient accumulation). ``batch_size`` must be a multiple of
            ``micro_batch_size * world``; the quotient is the number of accumulation steps.
        lr: peak learning rate; ``min_lr_ratio * lr`` is the final one.
        schedule: ``"cosine"`` or ``"wsd"`` (warmup-stable-decay).
        warmup_fraction: fraction of the steps spent in linear warmup.
        decay_fraction: WSD only, fraction of the steps in the final linear decay.
        weight_decay, beta1, beta2: AdamW hyper-parameters.
        grad_clip: maximum global gradient L2 norm.
        seed: seeds the initial weights and the batch sampler.
        log_every: steps between progress rows.
        threads: CPU threads for torch (0 leaves torch's default).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``;
            under torchrun each rank uses ``cuda:LOCAL_RANK``.
        precision: ``"bf16"`` (autocast to bfloat16), ``"fp32"`` or ``"auto"``
            (:func:`resolve_precision`).
        compile: try ``torch.compile`` (eager fallback with a warning).
        resume_every: steps between resume checkpoints (0 = none); needs a ``state_dir``.
        checkpoint_fractions: fractions of the steps in (0, 1) after which a model checkpoint is
            written; needs a ``state_dir``.
        mixture: sampling probability of each group of token arrays (one group per training
            corpus, ``lmscaling.data.mixture_probabilities``), in the order of the groups given
            to :func:`train`; empty: one pool, every window equally likely.

    Raises:
        ValueError: naming the key whose value is out of range.
    """

    tokens: int
    batch_size: int = 32
    micro_batch_size: int = 0
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"
    warmup_fraction: float = 0.05
    decay_fraction: float = 0.2
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 1337
    log_every: int = 10
    threads: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    resume_every: int = 0
    checkpoint_fractions: tuple[float, ...] = field(default=())
    mixture: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("tokens", "batch_size", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise TrainError(f"{name} must be a positive integer, got {value!r}")
        object.__setattr__(self, "checkpoint_fractions", tuple(self.checkpoint_fractions))
        object.__setattr__(self, "mixture", tuple(float(p) for p in self.mixture))
        fractions = self.checkpoint_fractions
        checks = {
            "micro_batch_size": isinstance(self.micro_batch_size, int)
            and self.micro_batch_size >= 0,
            "lr": self.lr > 0,
            "min_lr_ratio": 0 <= self.min_lr_ratio <= 1,
            "schedule": self.schedule in SCHEDULES,
            "precision": self.precision in PRECISIONS,
            "warmup_fraction": 0 <= self.warmup_fraction < 1,
            "decay_fraction": 0 <= self.decay_fraction <= 1,
            "weight_decay": self.weight_decay >= 0,
            "beta1": 0 <= self.beta1 < 1,
            "beta2": 0 <= self.beta2 < 1,
            "grad_clip": self.grad_clip > 0,
            "threads": isinstance(self.threads, int) and self.threads >= 0,
            "resume_every": isinstance(self.resume_every, int) and self.resume_every >= 0,
            "checkpoint_fractions": all(0 < f < 1 for f in fractions)
            and len(set(fractions)) == len(fractions),
            "mixture": all(p > 0 for p in self.mixture)
            and (not self.mixture or math.isclose(sum(self.mixture), 1.0, abs_tol=1e-9)),
        }
        if self.schedule == "wsd" and self.warmup_fraction + self.decay_fraction > 1:
            checks["decay_fraction"] = False  # warmup and decay overlap
        for name, ok in checks.items():
            if not ok:
                raise TrainError(f"{name} is out of range: {getattr(self, name)!r}")

    def steps(self, context_length: int) -> int:
        """Optimizer steps: ``ceil(tokens / (batch_size * context_length))``; the run sees
        ``D = steps * batch_size * context_length`` tokens."""
        return optimizer_steps(self.tokens, self.batch_size, context_length)


def select_device(pref: str, local_rank: int = 0) -> torch.device:
    """Resolve a device preference: ``"auto"`` -> CUDA if available, else CPU.

    ``local_rank`` picks the GPU of a torchrun worker for ``"auto"`` and ``"cuda"``.

    Raises:
        ValueError: for an unknown device string, or a CUDA device when CUDA is unavailable.
    """
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(pref)
    except RuntimeError as exc:
        raise TrainError(f"device {pref!r} is not a valid torch device: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"device {pref!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX512-BF16: Intel Xeon from Cooper Lake and
    Sapphire Rapids on, AMD Zen 4 and later), so that bf16 matrix products outrun float32 ones.
    Elsewhere PyTorch emulates them, more slowly than float32."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private: may move
    return bool(probe and probe())


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"`` for a ``precision`` setting on ``device``.

    ``"auto"`` is bf16 on a GPU with bf16 tensor cores (compute capability 8.0, Ampere, and
    later) and on a CPU with :func:`cpu_has_bf16`, else fp32. Measured in ``make demo`` on a
    2-core Zen 4 machine, bf16 autocast trains the five models 1.3-1.6x faster than float32,
    and their held-out losses differ from float32's by -0.2% to +0.2% (seed to seed, float32's
    own spread is about 1%).
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        native = torch.cuda.get_device_capability(device) >= (8, 0)
    else:
        native = cpu_has_bf16()
    return "bf16" if native else "fp32"


def device_peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of a CUDA device from :data:`PEAK_BF16_FLOPS`; None if unknown."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16_FLOPS:
        if key in name:
            return peak
    return None


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning rate for the 0-based optimizer ``step`` of ``total_steps``.

    Linear warmup over ``W = ceil(warmup_fraction * total_steps)`` steps (``lr * (step + 1) /
    W``), then

    - ``"cosine"``: cosine decay from ``lr`` at step ``W`` to ``lr * min_lr_ratio`` at the last
      step (Loshchilov & Hutter 2017, SGDR eq. 5);
    - ``"wsd"``: ``lr`` until the last ``K = ceil(decay_fraction * total_steps)`` steps, then a
      linear decay reaching ``lr * min_lr_ratio`` at the last step (Hägele et al. 2024, sec. 3).

    Raises:
        ValueError: when ``step`` is not in ``[0, total_steps)``.
    """
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} is outside [0, {total_steps})")
    warmup = math.ceil(cfg.warmup_fraction * total_steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    min_lr = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "wsd":
        decay = min(math.ceil(cfg.decay_fraction * total_steps), total_steps - warmup)
        start = total_steps - decay  # first decay step
        if step < start:
            return cfg.lr
        progress = (step - start + 1) / decay  # 1/K ... 1
        return cfg.lr + progress * (min_lr - cfg.lr)
    progress = (step - warmup) / max(1, total_steps - 1 - warmup)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - min_lr)


def token_groups(
    files: Sequence[tuple[str, str]], corpora: Sequence[str]
) -> list[list[tuple[str, str]]]:
    """Token shard files ``(path, dtype)`` grouped as :func:`train` takes them.

    With several training ``corpora`` (a mixture, ``TrainConfig.mixture`` in the same order):
    one group per corpus, the corpus read from the path ``.../{corpus}/{split}/part-N.bin``.
    With one: a single group of every file.

    Raises:
        TrainError: a file under none of ``corpora``, or a corpus without files.
    """
    if len(corpora) <= 1:
        return [list(files)]
    groups: dict[str, list[tuple[str, str]]] = {corpus: [] for corpus in corpora}
    for path, dtype in files:
        corpus = Path(path).parts[-3]
        if corpus not in groups:
            raise TrainError(f"{path}: not a shard of the training corpora {list(corpora)}")
        groups[corpus].append((path, dtype))
    empty = [corpus for corpus, group in groups.items() if not group]
    if empty:
        raise TrainError(f"training corpora without token shards: {empty}")
    return list(groups.values())


MAX_EPOCHS_WARN = 4.0  # repeated data helps about as much as new up to ~4 epochs
# (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models", sec. 5)


def mixture_report(
    groups: Sequence[Sequence[np.ndarray]],
    corpora: Sequence[str],
    probs: Sequence[float],
    window: int,
    tokens: int,
) -> dict[str, dict[str, float]]:
    """Per training corpus: its sampling probability, the tokens training can sample (those of
    shards holding at least one ``window``), the tokens of shorter shards, never sampled, and
    the epochs a run of ``tokens`` training tokens makes over the sampled ones (``D p /
    tokens``). Logs a warning for a corpus with shards too short to sample, and for one seen
    more than :data:`MAX_EPOCHS_WARN` times.

    ``groups[i]`` holds the token arrays of ``corpora[i]``, drawn with ``probs[i]``.

    Raises:
        TrainError: naming a corpus none of whose shards holds one window of ``window`` tokens.
    """
    report = {}
    remedy = "fewer, longer shards (data.num_shards) or a shorter models.context_length"
    for corpus, group, p in zip(corpora, groups, probs, strict=True):
        lengths = [len(a) for a in group]
        usable = sum(n for n in lengths if n >= window)
        if not usable:
            raise TrainError(
                f"corpus {corpus!r}: too few tokens to train: no shard holds context_length + 1 "
                f"= {window} tokens (shard lengths {lengths}); add text, or use {remedy}"
            )
        short = [n for n in lengths if n < window]
        if short:
            log.warning(
                "corpus %r: %d of %d token shards (%d tokens, %.1f%% of the corpus) are shorter "
                "than context_length + 1 = %d tokens and are never sampled; use %s",
                corpus,
                len(short),
                len(lengths),
                sum(short),
                100 * sum(short) / sum(lengths),
                window,
                remedy,
            )
        epochs = tokens * p / usable
        if epochs > MAX_EPOCHS_WARN:
            log.warning(
                "corpus %r: %.1f epochs over its %d tokens (probability %.3g); beyond about %g "
                "epochs repeated data is worth less than new data",
                corpus,
                epochs,
                usable,
                p,
                MAX_EPOCHS_WARN,
            )
        report[corpus] = {
            "probability": p,
            "tokens": usable,
            "tokens_unsampled": sum(short),
            "epochs": epochs,
        }
    return report


def load_token_groups(groups: Sequence[Sequence[tuple[str, str]]]) -> list[list[np.ndarray]]:
    """:func:`load_tokens` of every ``(path, dtype)`` of every group of :func:`token_groups`."""
    return [[s for path, dtype in group for s in load_tokens([path], dtype)] for group in groups]


def load_tokens(paths: Sequence[str | os.PathLike[str]], dtype) -> list[np.ndarray]:
    """Open token shards (flat little-endian ``uint16``/``uint32`` files) as read-only memmaps.

    Nothing is read into memory: :func:`train` samples windows from the list directly, so a
    corpus of billions of tokens costs no RAM. Empty shards are left out. A shard with a JSON
    sidecar beside it (``part-N.json``, :func:`lmscaling.tokenizer.tokenize_shard`) must hold
    exactly the sidecar's ``tokens``, so a truncated or replaced file is never trained on.

    Raises:
        ValueError: when ``paths`` is empty, ``dtype`` is not uint16/uint32, or a file's size is
            not a whole number of tokens or disagrees with its sidecar (naming the file).
    """
    dt = np.dtype(dtype).newbyteorder("<")
    if dt.kind != "u" or dt.itemsize not in (2, 4):
        raise TrainError(f"token dtype must be uint16 or uint32, got {np.dtype(dtype)}")
    if not paths:
        raise TrainError("no token shard paths given")
    shards = []
    for path in paths:
        size = os.path.getsize(path)
        if size % dt.itemsize:
            raise TrainError(f"{path}: size {size} bytes is not a multiple of {dt.itemsize}")
        sidecar = Path(path).with_suffix(".json")
        tokens = read_json(sidecar)["tokens"] if sidecar.exists() else size // dt.itemsize
        if size != tokens * dt.itemsize:
            raise TrainError(
                f"{path}: holds {size // dt.itemsize} tokens, its sidecar {sidecar.name} says "
                f"{tokens} (truncated or replaced; delete it and rerun)"
            )
        if size:
            shards.append(np.memmap(path, dtype=dt, mode="r"))
    return shards


class TokenStream:
    """Sampling of fixed-length windows from one or more 1-D token arrays, in mixture groups.

    A window lies inside one array. Without ``probs`` every valid start position of every array
    is equally likely, as if the arrays were concatenated without windows across the seams.
    With ``probs`` (one probability per group, ``groups[i]`` the group of ``arrays[i]``) a
    window comes from group ``g`` with probability ``probs[g]``, uniformly within the group,
    whatever the groups' sizes: the training mixture that ``lmscaling.data.mixture_probabilities``
    defines from the corpus weights.

    Raises:
        ValueError: when no array, or no array of some group, holds a full window.
    """

    def __init__(
        self,
        arrays: Sequence[np.ndarray],
        window: int,
        groups: Sequence[int] | None = None,
        probs: Sequence[float] | None = None,
    ) -> None:
        groups = [0] * len(arrays) if groups is None else list(groups)
        lengths = [len(a) for a in arrays]
        # arrays ordered by group, so that each group's starts are one contiguous range
        kept = sorted((g, i) for i, g in enumerate(groups) if lengths[i] >= window)
        if not kept:
            raise TrainError(
                f"too few tokens to train: need a shard of at least context_length + 1 = "
                f"{window} tokens, got shard lengths {lengths}"
            )
        self.arrays = [arrays[i] for _, i in kept]
        self.window = window
        self.counts = np.array([len(a) - window + 1 for a in self.arrays])  # valid starts
        self.ends = np.cumsum(self.counts)
        self.offsets = np.arange(window)
        self.probs = None if probs is None else np.asarray(probs, dtype=float)
        if self.probs is not None:
            kept_groups = np.array([g for g, _ in kept])
            sizes = np.array([self.counts[kept_groups == g].sum() for g in range(len(probs))])
            if (sizes == 0).any():
                short = [g for g in range(len(probs)) if sizes[g] == 0]
                raise TrainError(
                    f"too few tokens to train: group(s) {short} of the mixture have no shard of "
                    f"context_length + 1 = {window} tokens"
                )
            self.group_sizes = sizes  # valid starts per group
            self.group_lo = np.cumsum(sizes) - sizes  # first global start of each group

    @property
    def n_starts(self) -> int:
        """Number of distinct windows."""
        return int(self.ends[-1])

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` global start indices drawn from ``rng`` (see the class docstring)."""
        if self.probs is None:
            return rng.integers(0, self.n_starts, size=size)
        group = rng.choice(len(self.probs), size=size, p=self.probs)
        return self.group_lo[group] + rng.integers(0, self.group_sizes[group])

    def gather(self, starts: np.ndarray) -> np.ndarray:
        """Windows ``(len(starts), window)`` as int64 for global start indices in ``[0, n)``."""
        which = np.searchsorted(self.ends, starts, side="right")
        local = starts - (self.ends[which] - self.counts[which])
        out = np.empty((len(starts), self.window), dtype=np.int64)
        for i in np.unique(which):
            rows = which == i
            out[rows] = self.arrays[i][local[rows, None] + self.offsets]
        return out


def _optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]  # weight matrices and embeddings
    no_decay = [p for p in params if p.dim() < 2]  # norm gains
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel exists for CPU and CUDA and is the fastest on both.
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


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


def _live_figures(row: dict) -> list[str]:
    """The figures of a progress row on the live line: loss, tokens/s and MFU where known."""
    figures = [f"loss {row['loss']:.3f}", f"{row['tokens_per_s'] / 1e3:.1f}k tok/s"]
    if row["mfu"] is not None:
        figures.append(f"MFU {100 * row['mfu']:.1f}%")
    return figures


def _fingerprint(
    model_cfg: GPTConfig, cfg: TrainConfig, n_windows: int, data: str, precision: str
) -> dict:
    """What a resume file must match: every setting that changes the result, the precision as
    resolved on this machine, and the data (``data``: :func:`_data_digest` of the token
    arrays)."""
    ignore = {"log_every", "threads", "device", "compile", "resume_every", "micro_batch_size"}
    train = {k: v for k, v in asdict(cfg).items() if k not in ignore}
    train["precision"] = precision
    train["checkpoint_fractions"] = list(cfg.checkpoint_fractions)
    return {"model": asdict(model_cfg), "train": train, "windows": n_windows, "data": data}


def _fingerprint_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``"key: old -> new"`` for every entry where two :func:`_fingerprint` dicts differ, nested
    keys dotted (``"train.precision: 'bf16' -> 'fp32'"``); a changed data digest reads
    ``"data: other token shards"``."""
    changes = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _fingerprint_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(
                f"{key}: other token shards" if key == "data" else f"{prefix}{key}: {a!r} -> {b!r}"
            )
    return changes


def _data_digest(arrays: Sequence[np.ndarray]) -> str:
    """sha256 over the token arrays, in order: a shard opened by :func:`load_tokens` counts by
    the sha256 its sidecar records (checked against the file's size there), anything else by
    its bytes. A resume file written for other data (a corpus edited, a tokenizer retrained)
    then no longer matches, even when the number of windows happens to be the same."""
    digest = hashlib.sha256()
    for a in arrays:
        sidecar = (
            Path(a.filename).with_suffix(".json")
            if isinstance(a, np.memmap)
            and a.filename
            and a.offset == 0
            and a.nbytes == os.path.getsize(a.filename)
            else None
        )
        recorded = read_json(sidecar).get("sha256") if sidecar and sidecar.exists() else None
        if recorded:
            digest.update(f"{a.dtype.str}:{recorded}".encode())
        else:
            data = np.ascontiguousarray(a)
            digest.update(f"{data.dtype.str}:".encode())
            digest.update(data.view(np.uint8).reshape(-1))
    return digest.hexdigest()


def _rng_states() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": random.getstate(),
    }


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    random.setstate(states["python"])


def load_resume(path: str | os.PathLike[str]) -> dict:
    """Read a resume file written by :func:`train` (``torch.load(weights_only=True)``).

    Every tensor is loaded on the CPU, whatever device wrote it: the RNG states must be CPU
    ByteTensors (``torch.set_rng_state`` and ``torch.cuda.set_rng_state_all`` refuse others), and
    ``load_state_dict`` copies the model and optimizer states to their parameters' device.

    Raises:
        ResumeError: naming ``path`` when it is unreadable or of another format version.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: the caller starts afresh
        raise ResumeError(f"{path}: cannot read resume state: {exc}") from exc
    if not isinstance(state, dict) or state.get("version") != RESUME_VERSION:
        raise ResumeError(f"{path}: not a version-{RESUME_VERSION} lmscaling resume file")
    return state


def clear_state(state_dir: str | os.PathLike[str]) -> None:
    """Remove a run's state directory (resume file and staged checkpoints), if present."""
    shutil.rmtree(state_dir, ignore_errors=True)


def _compile_or_eager(model: torch.nn.Module, example: torch.Tensor, autocast) -> torch.nn.Module:
    """``torch.compile(model)`` if a forward and backward pass on ``example`` compile, else
    ``model`` itself, with a logged warning (e.g. no C++ compiler, unsupported platform)."""
    try:
        compiled = torch.compile(model)
        with autocast():
            _, loss = compiled(example[:, :-1], example[:, 1:], return_logits=False)
        loss.backward()
    except Exception as exc:  # any compiler failure: eager mode computes the same thing
        log.warning("torch.compile failed, training in eager mode: %s", str(exc).splitlines()[0])
        compiled = model
    for p in model.parameters():
        p.grad = None
    return compiled


def train(
    model_cfg: GPTConfig,
    cfg: TrainConfig,
    tokens: np.ndarray | Sequence[np.ndarray],
    on_log: Callable[[int, dict], None] | None = None,
    name: str = "",
    state_dir: str | os.PathLike[str] | None = None,
) -> tuple[GPT, dict, list[dict]]:
    """Train a fresh ``GPT(model_cfg)`` on ``tokens`` for ``cfg.tokens`` tokens (or resume one).

    ``total_steps = ceil(cfg.tokens / (batch_size * context_length))``. Every ``log_every``
    steps and at the last step a row ``{"step", "tokens", "loss"`` (mean train loss since the
    previous row over all ranks, nats/token), ``"lr", "tokens_per_s"`` (all ranks),
    ``"mfu"`` (None off known GPUs), ``"elapsed_s"}`` is appended to the metrics, passed to
    ``on_log(step, row)`` on rank 0 and logged as one progress line with the ETA. When stderr
    is a terminal, rank 0 shows the live line of :class:`lmscaling.progress.LiveLine` there
    instead (step, the last row's loss, tokens/s and MFU, ETA), and the progress lines go to
    the log file only.

    Args:
        model_cfg: model shape.
        cfg: optimisation settings.
        tokens: a 1-D integer token stream or a list of them (e.g. from :func:`load_tokens`);
            with ``cfg.mixture``, one such list per mixture group (training corpus).
        on_log: optional callback receiving each metrics row (rank 0 only).
        name: model name for messages (default ``model_id(n_layer, d_model)``).
        state_dir: directory for the resume file and the fraction checkpoints; a valid
            ``resume.pt`` there with the same settings is resumed from. A stale one (other
            settings, unreadable) is ignored with a warning and overwritten.

    Returns:
        ``(model on CPU in eval mode, summary, metrics)``; ``summary`` holds ``steps``, ``D``
        (tokens seen = steps * batch_size * context_length), ``train_loss`` (last logged),
        ``train_time_s`` and ``tokens_per_s`` (this process's share of the run), ``device``,
        ``precision`` (as resolved), ``world_size``, ``grad_accum_steps``, ``compiled``,
        ``resumed_from_step``, ``N``, ``N_embedding``, ``N_total``, ``N_total_untied``,
        ``C = 6 N D`` FLOP (Kaplan et al. 2020, eq. 2.1), ``flops_per_token``, ``mfu``,
        ``peak_memory_gb`` (CUDA) and ``checkpoints`` (``{"frac-0.5": {"fraction", "step",
        "D", "path"}}``).

    Raises:
        ValueError: when no shard holds ``context_length + 1`` tokens, a token id is outside
            ``[0, vocab_size)``, the batch does not split into micro-batches and ranks, or
            checkpoints are asked for without a ``state_dir``.
        FloatingPointError: naming the model and step when the training loss is not finite.
    """
    name = name or model_id(model_cfg.n_layer, model_cfg.d_model)
    T = model_cfg.context_length
    groups = None
    if cfg.mixture:
        if (
            isinstance(tokens, np.ndarray)
            or len(tokens) != len(cfg.mixture)
            or any(isinstance(group, np.ndarray) for group in tokens)
        ):
            raise TrainError(
                f"{name}: a mixture of {len(cfg.mixture)} groups needs one list of token "
                "arrays per group"
            )
        given = [a for group in tokens for a in group]
        groups = [g for g, group in enumerate(tokens) for _ in group]
    else:
        given = [tokens] if isinstance(tokens, np.ndarray) else list(tokens)
    data_digest = _data_digest(given)
    arrays = [np.asarray(a) for a in given]
    if any(a.ndim != 1 for a in arrays):
        raise TrainError(f"{name}: token streams must be 1-D, got {[a.shape for a in arrays]}")
    try:
        stream = TokenStream(arrays, T + 1, groups, cfg.mixture or None)
    except ValueError as exc:
        raise TrainError(f"{name}: {exc}") from None
    for a in stream.arrays:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= model_cfg.vocab_size:
            raise TrainError(
                f"{name}: token ids span [{lo}, {hi}], outside [0, "
                f"vocab_size={model_cfg.vocab_size})"
            )
    if (cfg.resume_every or cfg.checkpoint_fractions) and state_dir is None:
        raise TrainError(f"{name}: resume_every and checkpoint_fractions need a state_dir")

    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    micro = cfg.micro_batch_size or cfg.batch_size // world
    if micro < 1 or cfg.batch_size % (micro * world):
        raise TrainError(
            f"{name}: batch_size {cfg.batch_size} is not a multiple of micro_batch_size "
            f"{micro} x world size {world}"
        )
    accum = cfg.batch_size // (micro * world)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = select_device(cfg.device, int(os.environ.get("LOCAL_RANK", 0)))
    cuda = device.type == "cuda"
    precision = resolve_precision(cfg.precision, device)
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for the float32 matmuls left
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    else:
        keep_freed_memory_in_heap()

    torch.manual_seed(cfg.seed)
    raw = GPT(model_cfg).to(device)
    raw.train()
    optimizer = _optimizer(raw, cfg, device)
    tokens_per_step = cfg.batch_size * T
    total_steps = cfg.steps(T)
    frac_steps = checkpoint_steps(cfg.checkpoint_fractions, total_steps)
    step_losses = torch.zeros(total_steps, device=device)  # read back only at log steps
    counts = raw.param_counts()
    flops = raw.flops_per_token()
    peak = device_peak_flops(device)

    metrics: list[dict] = []
    start_step, elapsed_before = 0, 0.0
    fingerprint = _fingerprint(model_cfg, cfg, stream.n_starts, data_digest, precision)
    resume_path = Path(state_dir) / RESUME_FILE if state_dir is not None else None
    if resume_path is not None and resume_path.exists():
        try:
            state = load_resume(resume_path)
            if state["fingerprint"] != fingerprint:
                changes = "; ".join(_fingerprint_changes(state["fingerprint"], fingerprint))
                raise ResumeError(f"{resume_path}: written for other settings ({changes})")
        except ResumeError as exc:
            log.warning("%s: not resuming, starting afresh: %s", name, exc)
        else:
            raw.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_step, elapsed_before = state["step"], state["elapsed_s"]
            metrics = state["metrics"]
            step_losses[:start_step] = state["step_losses"].to(device)
            _set_rng_states(state["rng"])
            log.info("%s: resuming from step %d/%d", name, start_step, total_steps)

    bf16 = precision == "bf16"

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)

    def batch(step: int, m: int) -> torch.Tensor:
        starts = stream.sample(np.random.default_rng((cfg.seed, step)), cfg.batch_size)
        lo = (m * world + rank) * micro
        windows = torch.from_numpy(stream.gather(starts[lo : lo + micro]))  # (micro, T+1)
        if cuda:
            windows = windows.pin_memory().to(device, non_blocking=True)
        return windows

    model: torch.nn.Module = raw
    compiled = False
    if cfg.compile:
        model = _compile_or_eager(raw, batch(start_step % total_steps, 0), autocast)
        compiled = model is not raw
    if distributed:
        ids = [device.index] if cuda else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def save_resume(done: int, elapsed: float) -> None:
        state = {
            "version": RESUME_VERSION,
            "fingerprint": fingerprint,
            "step": done,
            "model": raw.state_dict(),
            "optimizer": optimizer.state_dict(),
            "metrics": metrics,
            "step_losses": step_losses[:done].cpu(),
            "elapsed_s": elapsed,
            "rng": _rng_states(),
        }
        with atomic_path(resume_path) as tmp:
            torch.save(state, tmp)

    def fraction_summary(fraction: float, done: int) -> dict:
        d_seen = done * tokens_per_step
        return {
            "model_id": name,
            "fraction": fraction,
            "step": done,
            "D": d_seen,
            **counts,
            "C": 6.0 * counts["N"] * d_seen,
            # mean loss of the last log_every steps (this rank's micro-batches), nats/token
            "train_loss": float(step_losses[max(0, done - cfg.log_every) : done].mean()),
        }

    checkpoints = {}
    for fraction, at in frac_steps.items():
        path = Path(state_dir) / f"{checkpoint_name(fraction)}.pt" if state_dir else None
        checkpoints[checkpoint_name(fraction)] = {
            "fraction": fraction,
            "step": at,
            "D": at * tokens_per_step,
            "path": str(path),
        }

    last_logged = metrics[-1]["step"] if metrics else 0
    timed_from = start_step  # first step of the current speed interval run by this process
    t_start = t_last = time.perf_counter()
    # On a terminal, rank 0 shows one live line (lmscaling.progress), starting from the last
    # row's figures when resumed; its progress rows then go to the log file only (``CONSOLE``,
    # see jobs.configure_logging).
    figures = _live_figures(metrics[-1]) if metrics else []
    with LiveLine(name, total_steps, start_step, figures, enabled=rank == 0) as live:
        for step in range(start_step, total_steps):
            lr = lr_at(step, total_steps, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for m in range(accum):
                windows = batch(step, m)
                sync = not distributed or m == accum - 1
                with contextlib.nullcontext() if sync else model.no_sync(), autocast():
                    _, loss = model(windows[:, :-1], windows[:, 1:], return_logits=False)
                (loss / accum).backward()
                loss_sum += loss.detach()
            torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip, foreach=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step_losses[step] = loss_sum / accum
            done = step + 1
            live.step()

            if done % cfg.log_every == 0 or done == total_steps:
                recent = step_losses[last_logged:done].clone()
                if distributed:
                    dist.all_reduce(recent)  # sum over ranks (gloo has no average)
                    recent /= world
                recent = recent.cpu()  # synchronises with the device
                finite = torch.isfinite(recent)
                if not bool(finite.all()):
                    bad = last_logged + int((~finite).nonzero()[0]) + 1
                    raise FloatingPointError(
                        f"{name}: non-finite training loss at step {bad}/{total_steps} "
                        f"(lr {lr_at(bad - 1, total_steps, cfg):.3g})"
                    )
                now = time.perf_counter()
                rate = (done - timed_from) * tokens_per_step / max(now - t_last, 1e-9)
                mfu = rate * flops["exact"] / (peak * world) if peak else None
                row = {
                    "step": done,
                    "tokens": done * tokens_per_step,
                    "loss": float(recent.double().mean()),
                    "lr": lr,
                    "tokens_per_s": rate,
                    "mfu": mfu,
                    "elapsed_s": elapsed_before + now - t_start,
                }
                metrics.append(row)
                if rank == 0:
                    eta = (total_steps - done) * tokens_per_step / rate
                    figures = _live_figures(row)  # loss, tokens/s, MFU
                    live.show(figures)
                    log.info(
                        "%s step %d/%d | %s | lr %.1e | %s | ETA %s",
                        name,
                        done,
                        total_steps,
                        figures[0],
                        lr,
                        " | ".join(figures[1:]),
                        tqdm.format_interval(eta),
                        extra={CONSOLE: not live.enabled},
                    )
                    if on_log is not None:
                        on_log(done, row)
                last_logged, timed_from, t_last = done, done, now

            if rank == 0:
                for fraction, at in frac_steps.items():
                    if at == done:
                        save_checkpoint(
                            checkpoints[checkpoint_name(fraction)]["path"],
                            raw,
                            extra={"summary": fraction_summary(fraction, done)},
                        )
                if cfg.resume_every and done % cfg.resume_every == 0 and done < total_steps:
                    save_resume(done, elapsed_before + time.perf_counter() - t_start)

    # each step's loss is checked above, but the last update comes after the last loss
    if not all(bool(torch.isfinite(p).all()) for p in raw.parameters()):
        raise FloatingPointError(
            f"{name}: non-finite weights after the last optimizer step {total_steps} "
            f"(lr {lr_at(total_steps - 1, total_steps, cfg):.3g})"
        )
    train_time = time.perf_counter() - t_start
    d_seen = total_steps * tokens_per_step
    steps_run = total_steps - start_step
    rate = steps_run * tokens_per_step / max(train_time, 1e-9)
    summary = {
        "steps": total_steps,
        "D": d_seen,
        "train_loss": metrics[-1]["loss"],
        "train_time_s": train_time,
        "tokens_per_s": rate,
        "device": str(device),
        "precision": precision,
        "world_size": world,
        "grad_accum_steps": accum,
        "compiled": compiled,
        "resumed_from_step": start_step,
        **counts,
        "C": 6.0 * counts["N"] * d_seen,
        "flops_per_token": flops,
        "mfu": rate * flops["exact"] / (peak * world) if peak else None,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
        "checkpoints": checkpoints,
    }
    return raw.cpu().eval(), summary, metrics
