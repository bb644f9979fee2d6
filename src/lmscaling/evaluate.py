"""Held-out loss, perplexity and bits-per-byte of a language model, exact and comparable.

Scoring scheme. An evaluation set is a token stream (documents each followed by the end-of-text
token, as written by :func:`lmscaling.tokenizer.tokenize_shard`). With the BOS policy ``"eot"``
the stream is ``[eot] + tokens`` and every token is a target (the leading end-of-text token is
the context of the first document, as every later document follows one); with ``"none"`` the
stream is ``tokens`` and its first token is context only. Targets are the stream positions
``1 .. n`` and each is scored exactly once:

- windows are ``L = min(context_length, n)`` inputs long; window ``k`` covers stream positions
  ``s_k .. s_k + L`` and ends at target ``e_k = s_k + L``;
- the first window starts at 0 and scores all its ``L`` targets; window ``k >= 1`` ends at
  ``e_k = min(L + k * stride, n)`` and scores only its last ``e_k - e_{k-1}`` targets, the ones
  no earlier window scored; the last window is aligned to the end of the stream, so it too is
  ``L`` long and nothing is padded;
- so every target after the first window sees at least ``L - stride + 1`` tokens of context.
  ``stride == context_length`` (the default) gives non-overlapping windows; a smaller stride buys
  context with compute (``context_length / stride`` forward tokens per target). This is the
  strided evaluation of Hugging Face's "Perplexity of fixed-length models" guide, made exact:
  no target is scored twice or skipped, and the last window keeps its full context.

The result depends on the model, the stream, ``context_length``, ``stride`` and ``bos`` only;
the batch size changes the speed, not the result (equal to float32 rounding of the logits,
< 1e-6 relative). Per-token log-softmax is taken in float32 (the precision of the logits), sums
in float64.

Bits-per-byte normalises the summed loss by the UTF-8 size of the original text, which makes
models with different tokenizers comparable (Gao et al. 2020, "The Pile", sec. 5; nanochat)::

    loss = sum NLL / tokens             (nats/token)
    perplexity = exp(loss)
    bpb = sum NLL / (ln 2 * bytes)      (bits/byte)

Evaluation sets (``eval_set`` names): ``<corpus>/val`` is the val split of a training corpus;
``<corpus>/all`` is a held-out corpus (``eval.heldout_corpora``) in full, both of its hash
splits, since no tokenizer or model ever trains on it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lmscaling.model import GPT, load_checkpoint
from lmscaling.points import BOS_POLICIES, POINT_COLUMNS
from lmscaling.tokenizer import read_token_shards
from lmscaling.train import keep_freed_memory_in_heap, select_device

log = logging.getLogger("lmscaling.evaluate")

FINAL = "final"
"""Checkpoint name of the fully trained model (``model.pt``)."""

_SUMMARY_KEYS = ("N", "N_total", "N_embedding", "D", "C")


class EvalError(ValueError):
    """Bad evaluation input (a checkpoint without its training summary, an empty set); the
    message names the file."""


def strided_windows(n_targets: int, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows that score targets ``1 .. n_targets`` of a stream exactly once (module docstring).

    Args:
        n_targets: targets in the stream (stream length - 1), >= 1.
        window: inputs per window; the windows are ``L = min(window, n_targets)`` long.
        stride: targets between consecutive window ends, ``1 <= stride <= window``.

    Returns:
        ``(starts, new)``, int64 arrays of shape ``(num_windows,)``: window ``k`` feeds stream
        positions ``starts[k] .. starts[k] + L - 1`` and scores its last ``new[k]`` targets
        (``new[0] == L``, ``new.sum() == n_targets``).

    Raises:
        ValueError: for ``n_targets < 1``, ``window < 1`` or a stride outside ``[1, window]``.
    """
    if n_targets < 1 or window < 1:
        raise ValueError(f"need n_targets >= 1 and window >= 1, got {n_targets}, {window}")
    if not 1 <= stride <= window:
        raise ValueError(f"stride {stride} is outside [1, window={window}]")
    L = min(window, n_targets)
    ends = np.append(np.arange(L, n_targets, stride, dtype=np.int64), n_targets)  # last target
    new = np.diff(ends, prepend=0)
    return ends - L, new


@torch.inference_mode()
def evaluate(
    model: GPT,
    tokens: np.ndarray,
    n_bytes: int,
    eot_id: int,
    batch_size: int = 32,
    context_length: int | None = None,
    stride: int | None = None,
    bos: str = "eot",
    device: str = "auto",
) -> dict:
    """Score every target of ``tokens`` exactly once (see the module docstring).

    The model is moved to ``device`` and put in eval mode; no gradients are kept
    (``torch.inference_mode``) and logits stay float32 (no autocast).

    Args:
        model: a :class:`~lmscaling.model.GPT` (anything with ``.config.context_length``,
            ``.config.vocab_size`` and ``model(idx (B, T)) -> logits (B, T, V)``).
        tokens: 1-D token ids of the held-out text, documents each followed by ``eot_id``.
        n_bytes: UTF-8 bytes of the original text those tokens encode (the token sidecars'
            ``bytes``), not characters and not per-token decodes.
        eot_id: end-of-text token id, prepended as the first context token when ``bos="eot"``.
        batch_size: windows per forward pass; memory ~ 8 * batch_size * T * V bytes (float32
            logits and their log-softmax).
        context_length: window length T (default and maximum: the model's context length).
        stride: targets newly scored per window (default T: non-overlapping windows).
        bos: ``"eot"`` or ``"none"`` (:data:`BOS_POLICIES`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``... (see :func:`lmscaling.train.select_device`).

    Returns:
        ``{"loss": nll_sum / tokens (nats/token), "perplexity": exp(loss),
        "bpb": nll_sum / (ln 2 * n_bytes) (bits per UTF-8 byte), "nll_sum": nats,
        "tokens": scored targets (len(tokens), or len(tokens) - 1 for bos="none"),
        "bytes": n_bytes, "context_length": T, "stride", "bos", "windows": forward windows}``.

    Raises:
        ValueError: for no target to score, ``n_bytes <= 0``, ``batch_size < 1``, a context
            length outside ``[1, model context_length]``, a stride outside ``[1, T]``, an unknown
            ``bos``, or a token id outside ``[0, vocab_size)``.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or len(tokens) == 0:
        raise ValueError(f"evaluation tokens must be a non-empty 1-D array, got {tokens.shape}")
    if n_bytes <= 0:
        raise ValueError(f"n_bytes must be positive, got {n_bytes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if bos not in BOS_POLICIES:
        raise ValueError(f"bos {bos!r} is not one of {list(BOS_POLICIES)}")
    cfg = model.config
    T = cfg.context_length if context_length is None else context_length
    if not 1 <= T <= cfg.context_length:
        raise ValueError(f"context_length {T} is outside [1, {cfg.context_length}]")
    S = T if stride is None else stride
    if not 1 <= S <= T:
        raise ValueError(f"stride {S} is outside [1, context_length={T}]")
    lo, hi = int(min(tokens.min(), eot_id)), int(max(tokens.max(), eot_id))
    if lo < 0 or hi >= cfg.vocab_size:
        raise ValueError(
            f"token ids (and eot_id={eot_id}) span [{lo}, {hi}], "
            f"outside [0, vocab_size={cfg.vocab_size})"
        )
    head = [eot_id] if bos == "eot" else []
    stream = np.concatenate([np.array(head, dtype=np.int64), tokens.astype(np.int64)])
    n_targets = len(stream) - 1
    if n_targets < 1:
        raise ValueError(f"bos={bos!r} leaves no target to score in {len(tokens)} token(s)")

    dev = select_device(device)
    if dev.type == "cpu":
        keep_freed_memory_in_heap()  # reuse the logits buffers instead of page-faulting them
    model.to(dev).eval()
    starts, new = strided_windows(n_targets, T, S)
    L = min(T, n_targets)
    offsets = np.arange(L + 1)  # (L+1,)
    column = np.arange(L)  # (L,) target index inside a window

    nll_sum, scored = 0.0, 0
    for i in range(0, len(starts), batch_size):
        s, k = starts[i : i + batch_size], new[i : i + batch_size]  # (b,), (b,)
        windows = torch.from_numpy(stream[s[:, None] + offsets]).to(dev)  # (b, L+1)
        logits = model(windows[:, :-1])  # (b, L, V)
        targets = windows[:, 1:]  # (b, L)
        keep = column[None, :] >= L - k[:, None]  # (b, L): the targets new in each window
        if keep.all():
            logits, targets = logits.flatten(0, 1), targets.flatten()  # (b*L, V), (b*L,)
        else:
            mask = torch.from_numpy(keep).to(dev)
            logits, targets = logits[mask], targets[mask]  # (m, V), (m,)
        nll = F.cross_entropy(logits.float(), targets, reduction="none")  # (m,) nats
        nll_sum += float(nll.double().sum())
        scored += targets.numel()

    if scored != n_targets:  # strided_windows guarantees this
        raise AssertionError(f"scored {scored} targets of {n_targets}")
    loss = nll_sum / scored
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "bpb": nll_sum / (math.log(2) * n_bytes),
        "nll_sum": nll_sum,
        "tokens": scored,
        "bytes": int(n_bytes),
        "context_length": T,
        "stride": S,
        "bos": bos,
        "windows": len(starts),
    }


def load_eval_set(bin_paths: Sequence[str | os.PathLike[str]]) -> tuple[np.ndarray, dict]:
    """Token stream and totals of one evaluation set (its token shards with their sidecars).

    Returns:
        ``(tokens (n,) int64, {"tokens", "bytes" (UTF-8 bytes of the original text), "docs",
        "eot_id"})`` (see :func:`lmscaling.tokenizer.read_token_shards`).

    Raises:
        EvalError: naming the shards when the set holds no token.
    """
    tokens, totals = read_token_shards(bin_paths)
    if len(tokens) == 0 or totals["bytes"] <= 0:
        raise EvalError(f"evaluation set is empty: {[str(p) for p in bin_paths]}")
    return tokens, totals


def _checkpoint_summary(path: str | os.PathLike[str], extra: dict) -> dict:
    summary = extra.get("summary")
    missing = [k for k in _SUMMARY_KEYS if not isinstance(summary, dict) or k not in summary]
    if missing:
        raise EvalError(f"{path}: the checkpoint's training summary lacks {missing}")
    return summary


def evaluate_points(
    tokenizer: str,
    model_id: str,
    checkpoints: Mapping[str, str | os.PathLike[str]],
    sets: Mapping[str, Sequence[str | os.PathLike[str]]],
    batch_size: int = 32,
    context_length: int | None = None,
    stride: int | None = None,
    bos: str = "eot",
    device: str = "auto",
    on_point: Callable[[dict], None] | None = None,
) -> dict:
    """Evaluate every checkpoint of one model on every evaluation set.

    Args:
        tokenizer, model_id: names recorded in each point.
        checkpoints: ``{name: path}`` of files written by :func:`lmscaling.model.save_checkpoint`
            with ``extra["summary"]`` holding N, N_total, N_embedding, D (tokens seen), C and,
            in the final model's, ``compute_budget`` and ``precision`` (every point's
            ``budget`` and ``precision``);
            ``"final"`` is the fully trained model, others are e.g. ``"frac-0.5"`` (with
            ``fraction`` and ``step`` in their summary).
        sets: ``{eval_set name: token shard paths}``; each set is read once.
        batch_size, context_length, stride, bos, device: passed to :func:`evaluate`.
        on_point: called with each point as soon as it is computed.

    Returns:
        ``{"tokenizer", "model", "eval": {"batch_size", "context_length", "stride", "bos"},
        "eval_sets": {name: {"tokens", "bytes", "docs", "shards"}}, "points": [...]}`` where
        ``points`` holds one row per (checkpoint, set) with the columns
        :data:`lmscaling.points.POINT_COLUMNS`, sorted by D (the final model last), then set.

    Raises:
        EvalError: no checkpoint or set, a checkpoint without its training summary, or an
            empty set.
        lmscaling.model.CheckpointError: an unreadable checkpoint.
    """
    if not checkpoints or not sets:
        raise EvalError(f"{tokenizer}/{model_id}: nothing to evaluate ({checkpoints=}, {sets=})")
    data = {name: load_eval_set(paths) for name, paths in sets.items()}
    points, budget, precision = [], None, None
    # the final model first: its summary holds the model's IsoFLOP budget (None outside
    # train.compute) and training precision, which every point of the model records
    for name, path in sorted(checkpoints.items(), key=lambda item: item[0] != FINAL):
        model, extra = load_checkpoint(path)
        summary = _checkpoint_summary(path, extra)
        if name == FINAL:
            budget, precision = summary.get("compute_budget"), summary.get("precision")
        cfg = model.config
        for set_name, (tokens, totals) in data.items():
            t0 = time.perf_counter()
            scores = evaluate(
                model,
                tokens,
                n_bytes=totals["bytes"],
                eot_id=totals["eot_id"],
                batch_size=batch_size,
                context_length=context_length,
                stride=stride,
                bos=bos,
                device=device,
            )
            seconds = time.perf_counter() - t0
            values = {
                "tokenizer": tokenizer,
                "model": model_id,
                "checkpoint": name,
                "final": name == FINAL,
                "fraction": float(summary.get("fraction", 1.0)) if name != FINAL else 1.0,
                "step": int(summary.get("step", summary.get("steps", 0))),
                "eval_set": set_name,
                "n_layer": cfg.n_layer,
                "d_model": cfg.d_model,
                "n_head": cfg.n_head,
                "vocab_size": cfg.vocab_size,
                **{k: summary[k] for k in _SUMMARY_KEYS},
                "budget": budget,
                "precision": precision,
                **{k: scores[k] for k in ("loss", "perplexity", "bpb", "nll_sum", "tokens")},
                "bytes": scores["bytes"],
                "docs": totals["docs"],
                "context_length": scores["context_length"],
                "stride": scores["stride"],
                "bos": scores["bos"],
            }
            point = {c: values[c] for c in POINT_COLUMNS}
            if point["loss"] >= math.log(cfg.vocab_size) * (1 - 1e-6):  # float32 rounding
                log.warning(
                    "%s/%s %s on %s: loss %.4f nats/token is no better than a uniform guess "
                    "over the %d-token vocabulary (ln V = %.4f): did training diverge?",
                    tokenizer,
                    model_id,
                    name,
                    set_name,
                    point["loss"],
                    cfg.vocab_size,
                    math.log(cfg.vocab_size),
                )
            log.info(
                "%s/%s %s on %s: loss %.4f | ppl %.2f | bpb %.4f | %d tokens in %.1fs",
                tokenizer,
                model_id,
                name,
                set_name,
                point["loss"],
                point["perplexity"],
                point["bpb"],
                point["tokens"],
                seconds,
            )
            if on_point is not None:
                on_point(point)
            points.append(point)
    points.sort(key=lambda p: (p["final"], p["D"], p["eval_set"]))
    return {
        "tokenizer": tokenizer,
        "model": model_id,
        "eval": {
            "batch_size": batch_size,
            "context_length": points[0]["context_length"],
            "stride": points[0]["stride"],
            "bos": bos,
        },
        "eval_sets": {
            name: {
                "tokens": totals["tokens"],
                "bytes": totals["bytes"],
                "docs": totals["docs"],
                "shards": len(sets[name]),
            }
            for name, (_, totals) in data.items()
        },
        "points": points,
    }
