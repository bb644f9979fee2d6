"""Held-out loss, perplexity and bits-per-byte of a language model.

Every token of the evaluation stream is scored exactly once as a next-token target. The stream
is ``[eot_id] + tokens`` (the leading end-of-text token is the context of the first document)
cut into windows of ``context_length + 1`` tokens; consecutive windows share one token, the last
target of one window being the first input of the next, so window ``i`` scores targets
``i*T .. i*T + T - 1`` with up to ``T`` tokens of context. The last window may be shorter; it is
run on its own, so nothing is padded.

Bits-per-byte normalises the summed loss by the UTF-8 size of the scored text, which makes models
with different tokenizers comparable (Gao et al. 2020, "The Pile", sec. 5; nanochat):
``bpb = sum NLL / (ln 2 * n_bytes)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from lmscaling.model import GPT
from lmscaling.train import select_device


def _window_batches(n: int, context_length: int, batch_size: int) -> Iterator[np.ndarray]:
    """Index arrays into the ``n + 1``-token stream, one ``(b, t + 1)`` array per forward pass.

    Full windows (``t = T``) start at ``0, T, 2T, ...`` and are grouped ``batch_size`` at a time;
    the remaining ``n % T`` targets form one last ``(1, n % T + 1)`` window.
    """
    T = context_length
    n_full = n // T
    offsets = np.arange(T + 1)  # (T+1,)
    for i in range(0, n_full, batch_size):
        yield np.arange(i, min(i + batch_size, n_full))[:, None] * T + offsets  # (b, T+1)
    if n % T:
        yield np.arange(n_full * T, n + 1)[None, :]  # (1, n % T + 1)


@torch.inference_mode()
def evaluate(
    model: GPT,
    tokens: np.ndarray,
    n_bytes: int,
    eot_id: int,
    batch_size: int = 32,
    context_length: int | None = None,
    device: str = "auto",
) -> dict:
    """Score every token of ``tokens`` once as a next-token target (see the module docstring).

    The model is moved to ``device`` and put in eval mode; logits are taken in float32 and the
    negative log-likelihood is computed and summed in float64, so the result does not depend on
    ``batch_size`` beyond float32 matmul rounding.

    Args:
        model: a :class:`~lmscaling.model.GPT` (anything with ``.config.context_length``,
            ``.config.vocab_size`` and ``model(idx) -> logits (B, T, V)``).
        tokens: 1-D token ids of the held-out text, documents each followed by ``eot_id``.
        n_bytes: UTF-8 bytes of the text those tokens encode.
        eot_id: end-of-text token id, prepended as the first context token.
        batch_size: windows per forward pass (memory ~ 12 * batch_size * T * V bytes for the
            float32 logits and their float64 copy).
        context_length: window length T (default and maximum: the model's context length).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``... (see :func:`lmscaling.train.select_device`).

    Returns:
        ``{"loss": nll_sum / tokens (nats/token), "perplexity": exp(loss),
        "bpb": nll_sum / (ln 2 * n_bytes) (bits per UTF-8 byte), "nll_sum": nats,
        "tokens": scored targets (== len(tokens)), "bytes": n_bytes}``.

    Raises:
        ValueError: for empty ``tokens``, ``n_bytes <= 0``, ``batch_size < 1``, a context length
            outside ``[1, model context_length]``, or a token id outside ``[0, vocab_size)``.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or len(tokens) == 0:
        raise ValueError(f"evaluation tokens must be a non-empty 1-D array, got {tokens.shape}")
    if n_bytes <= 0:
        raise ValueError(f"n_bytes must be positive, got {n_bytes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    cfg = model.config
    T = cfg.context_length if context_length is None else context_length
    if not 1 <= T <= cfg.context_length:
        raise ValueError(f"context_length {T} is outside [1, {cfg.context_length}]")
    lo, hi = int(min(tokens.min(), eot_id)), int(max(tokens.max(), eot_id))
    if lo < 0 or hi >= cfg.vocab_size:
        raise ValueError(
            f"token ids (and eot_id={eot_id}) span [{lo}, {hi}], "
            f"outside [0, vocab_size={cfg.vocab_size})"
        )

    dev = select_device(device)
    model.to(dev).eval()
    stream = np.concatenate([np.array([eot_id], dtype=np.int64), tokens.astype(np.int64)])

    nll_sum = 0.0
    scored = 0
    for index in _window_batches(len(tokens), T, batch_size):
        windows = torch.from_numpy(stream[index]).to(dev)  # (b, t+1)
        logits = model(windows[:, :-1])  # (b, t, V)
        targets = windows[:, 1:]  # (b, t)
        nll = F.cross_entropy(
            logits.double().flatten(0, 1), targets.flatten(), reduction="sum"
        )  # float64 nats
        nll_sum += float(nll)
        scored += targets.numel()

    if scored != len(tokens):  # the windowing above guarantees this
        raise AssertionError(f"scored {scored} targets for {len(tokens)} tokens")
    loss = nll_sum / scored
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "bpb": nll_sum / (math.log(2) * n_bytes),
        "nll_sum": nll_sum,
        "tokens": scored,
        "bytes": n_bytes,
    }
