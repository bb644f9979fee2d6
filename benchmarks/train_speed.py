"""Training throughput on CPU: lmscaling's GPT against Hugging Face ``GPT2LMHeadModel``.

For each shape (vocab 2048, context 128, batch 32, head_dim 16: the default demo ladder plus one
wider model) it measures, in this one process and alternately, the steady-state training tokens/s
of

- ours: ``lmscaling.train.train`` (the training loop the workflow runs, eager mode), and
- the peer: ``transformers.GPT2LMHeadModel`` of the same n_layer, d_model, n_head, context and
  vocabulary (tied embeddings, dropout off), trained by the same minimal loop: same batch of
  windows, mean cross-entropy, fused AdamW, gradient clipping,

and prints N (non-embedding parameters, Kaplan et al. 2020), both rates (medians over
``--rounds``) and their ratio (goal: ours / peer >= 1.3): the median over the rounds of the
ratio of the two runs of a round, made back to back with the side going first alternating, so
background load affects both sides alike. The first ``--warmup`` steps of every run are not
timed.

Precision: ``--precision`` sets ours (default ``auto``, as in the workflow: bf16 on a CPU with
bfloat16 instructions, else fp32), ``--peer-precision`` the peer's (default: the same), so the
like-for-like ratio is the default; ``--peer-precision fp32`` compares with the peer as it
trains by default. bf16 is autocast on both sides (the peer's forward pass under
``torch.autocast``, its loss on float32 logits, as the Hugging Face Trainer's ``bf16=True``
does). The peer's attention is its fastest on CPU in its precision: SDPA (its default) in fp32,
its ``eager`` matmul attention in bf16, where PyTorch's fused CPU kernel is 3-5x slower than in
fp32 at head_dim 16 (``--peer-attention`` overrides).

What differs, by design of the two models (not of the measurement): ours has RMSNorm, rotary
positions, exact GELU and no biases; GPT-2 has LayerNorm, learned positions, tanh-GELU and
biases (so its parameter count is slightly larger). Ours decays weight matrices only, the
peer's AdamW all parameters. In its training step ours fuses the LM head with the
cross-entropy (``lmscaling.model.linear_cross_entropy``) and runs RMSNorm with a hand-written
backward pass (``lmscaling.model.RMSNorm``): the model's own CPU training paths. The peer runs
its forward pass and ``F.cross_entropy`` on the logits, the usual way to train it.

With ``--breakdown`` it also profiles one more run of each side (``torch.profiler``) and prints
the share of its CPU time spent in matrix products (``aten::mm``, ``addmm``, ``bmm``,
``baddbmm`` and their in-place forms) and in the attention kernels
(``scaled_dot_product_attention`` and its backward), work of about the same size on both sides,
and the ceiling: the ratio ours would reach if everything else it does took no time
(peer step time / ours' matmul and attention time). Where that ceiling is near 1.3, the goal
cannot be met by trimming the rest. The profiler's own cost per op counts as the rest, and ours
runs more (smaller) ops, so the printed ceiling is if anything too high. In bf16 both sides'
attention is matrix products and a softmax (ours: ``lmscaling.model.cpu_bf16_attention``, over
the causal blocks of the scores only, so a quarter less of both), the softmax counting as the
rest.

Usage: python benchmarks/train_speed.py [--steps 40] [--warmup 10] [--rounds 3] [--threads 1]
       [--clock wall|cpu] [--precision auto|bf16|fp32] [--peer-precision auto|bf16|fp32]
       [--peer-attention sdpa|eager] [--breakdown]
Needs: pip install 'lmscaling[bench]' (transformers).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from lmscaling.argtypes import add_step_timing_options
from lmscaling.model import GPTConfig, count_parameters, model_id
from lmscaling.train import (
    PRECISIONS,
    TrainConfig,
    keep_freed_memory_in_heap,
    resolve_precision,
    train,
)

SHAPES = [(1, 32), (2, 32), (2, 48), (3, 64), (4, 80), (4, 128)]  # (n_layer, d_model)
VOCAB, CONTEXT, BATCH, HEAD_DIM = 2048, 128, 32, 16
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}  # seconds
MATMUL_OPS = (
    "aten::mm",
    "aten::addmm",
    "aten::addmm_",
    "aten::bmm",
    "aten::baddbmm",
    "aten::baddbmm_",
)


class Timing(NamedTuple):
    """One measured run: the model shape, the token stream, ``steps`` timed after ``warmup``
    untimed ones, and the ``clock`` (seconds)."""

    cfg: GPTConfig
    tokens: np.ndarray
    steps: int
    warmup: int
    clock: Callable[[], float]


def ours_rate(timing: Timing, precision: str) -> float:
    """Steady-state tokens/s of ``lmscaling.train.train`` (steps after ``warmup``) in
    ``precision`` (``"bf16"`` or ``"fp32"``)."""
    cfg, tokens, steps, warmup, clock = timing
    train_cfg = TrainConfig(
        tokens=(warmup + steps) * BATCH * CONTEXT,
        batch_size=BATCH,
        log_every=warmup,
        device="cpu",
        precision=precision,
    )
    marks: list[tuple[int, float]] = []  # (tokens seen, clock) at every progress row
    train(cfg, train_cfg, tokens, on_log=lambda step, row: marks.append((row["tokens"], clock())))
    (first_tokens, first_t), (last_tokens, last_t) = marks[0], marks[-1]  # first: warm-up end
    return (last_tokens - first_tokens) / (last_t - first_t)


def hf_rate(timing: Timing, precision: str, attention: str) -> float:
    """Steady-state tokens/s of ``GPT2LMHeadModel`` of the same shape in an equivalent loop, in
    ``precision`` with the ``attention`` implementation (``"sdpa"`` or ``"eager"``)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg, tokens, steps, warmup, clock = timing

    torch.manual_seed(0)
    hf_cfg = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.context_length,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
        bos_token_id=0,  # GPT-2's 50256 is outside this vocabulary; unused here
        eos_token_id=0,
        attn_implementation=attention,
    )
    model = GPT2LMHeadModel(hf_cfg)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1, fused=True)
    offsets = np.arange(CONTEXT + 1)
    rng = np.random.default_rng(0)
    t0 = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            t0 = clock()
        starts = rng.integers(0, len(tokens) - CONTEXT, size=BATCH)
        windows = torch.from_numpy(tokens[starts[:, None] + offsets].astype(np.int64))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(input_ids=windows[:, :-1]).logits  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), windows[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * BATCH * CONTEXT / (clock() - t0)


def kernel_share(run: Callable[[], object]) -> float:
    """Fraction of the CPU time of ``run()`` spent in matrix products and attention kernels.

    Sums the self CPU time of the ``MATMUL_OPS`` and of every op whose name contains
    ``scaled_dot_product`` (the fused attention kernels, forward and backward), over the
    total self CPU time of all ops recorded by ``torch.profiler``.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    total = kernels = 0.0
    for event in prof.key_averages():
        total += event.self_cpu_time_total
        if event.key in MATMUL_OPS or "scaled_dot_product" in event.key:
            kernels += event.self_cpu_time_total
    return kernels / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_timing_options(parser, steps=40, warmup=10, rounds=3, threads=1)  # workflow: 1
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time, which ignores the time other "
        "processes hold the core (for --threads 1 on a shared machine)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also profile each side once and print its matmul + attention share and the "
        "ceiling of the ratio (see the module docstring)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="ours' precision; auto: the workflow's (bf16 on a CPU with bf16 instructions, "
        "else fp32)",
    )
    parser.add_argument(
        "--peer-precision", choices=PRECISIONS, help="the peer's precision (default: ours)"
    )
    parser.add_argument(
        "--peer-attention",
        choices=("sdpa", "eager"),
        help="the peer's attention implementation (default: its fastest on CPU in the "
        "peer's precision: sdpa in fp32, eager in bf16)",
    )
    args = parser.parse_args()
    try:
        import transformers
    except ImportError:
        parser.error("needs the peer: pip install -e '.[bench]' (transformers)")
    if args.warmup < 1 or args.steps < args.warmup or args.steps % args.warmup:
        parser.error("--steps must be a positive multiple of --warmup")
    torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision, torch.device("cpu"))
    peer_precision = resolve_precision(args.peer_precision or precision, torch.device("cpu"))
    attention = args.peer_attention or ("eager" if peer_precision == "bf16" else "sdpa")
    keep_freed_memory_in_heap()  # process-wide: the peer benefits from it too
    tokens = np.random.default_rng(0).integers(0, VOCAB, size=1_000_000).astype(np.uint16)
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} threads, batch {BATCH}, context {CONTEXT}, vocab {VOCAB}, "
        f"{args.clock} clock, median of {args.rounds} rounds; ours {precision}, peer "
        f"{peer_precision} with {attention} attention"
    )
    print(f"{'model':>8} {'N':>9} {'ours tok/s':>11} {'HF tok/s':>10} {'ratio':>6}")
    clock, ratios = CLOCKS[args.clock], []
    for n_layer, d_model in SHAPES:
        cfg = GPTConfig(VOCAB, CONTEXT, n_layer, d_model, n_head=d_model // HEAD_DIM)
        timing = Timing(cfg, tokens, args.steps, args.warmup, clock)
        run_ours = partial(ours_rate, timing, precision)
        run_peer = partial(hf_rate, timing, peer_precision, attention)
        ours, peer = [], []
        for i in range(args.rounds):  # back to back, the side that goes first alternating
            for side in ("ours", "peer") if i % 2 == 0 else ("peer", "ours"):
                if side == "ours":
                    ours.append(run_ours())
                else:
                    peer.append(run_peer())
        # The ratio of each round's pair, measured back to back, is steadier than the ratio
        # of the two medians when the background load drifts.
        ratio = statistics.median(a / b for a, b in zip(ours, peer, strict=True))
        ratios.append(ratio)
        print(
            f"{model_id(n_layer, d_model):>8} {count_parameters(cfg)['N']:>9,} "
            f"{statistics.median(ours):>11,.0f} {statistics.median(peer):>10,.0f} {ratio:>5.2f}x"
        )
        if args.breakdown:
            share_ours, share_peer = kernel_share(run_ours), kernel_share(run_peer)
            # peer step time / ours' matmul + attention time, from the unprofiled medians
            ceiling = statistics.median(ours) / statistics.median(peer) / share_ours
            print(
                f"{'':>8} matmul + attention: ours {share_ours:.0%}, peer {share_peer:.0%} "
                f"of CPU time; ceiling of the ratio {ceiling:.2f}x"
            )
    print(f"geometric mean ratio: {statistics.geometric_mean(ratios):.2f}x (goal >= 1.3x)")


if __name__ == "__main__":
    main()
