"""Training throughput on CPU: lmscaling's GPT against Hugging Face ``GPT2LMHeadModel``.

For each shape (vocab 2048, context 128, batch 32, head_dim 16: the default demo ladder plus one
wider model) it measures, in this one process and alternately, the steady-state training tokens/s
of

- ours: ``lmscaling.train.train`` (the training loop the workflow runs), and
- the peer: ``transformers.GPT2LMHeadModel`` of the same n_layer, d_model, n_head, context and
  vocabulary (tied embeddings, dropout off, its default attention), trained by the same minimal
  loop: same batch of windows, mean cross-entropy, fused AdamW, gradient clipping,

and prints N (non-embedding parameters, Kaplan et al. 2020), both rates and their ratio (goal:
ours / peer >= 1.3). The first ``--warmup`` steps of every run are not timed; each figure is the
median of ``--rounds`` alternating runs, so background load affects both sides alike.

Usage: python benchmarks/train_speed.py [--steps 40] [--warmup 10] [--rounds 3] [--threads 2]
Needs: pip install 'lmscaling[bench]' (transformers).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from lmscaling.model import GPTConfig, count_parameters, model_id
from lmscaling.train import TrainConfig, keep_freed_memory_in_heap, train

SHAPES = [(1, 32), (2, 32), (2, 48), (3, 64), (4, 80), (4, 128)]  # (n_layer, d_model)
VOCAB, CONTEXT, BATCH, HEAD_DIM = 2048, 128, 32, 16


def ours_rate(cfg: GPTConfig, tokens: np.ndarray, steps: int, warmup: int) -> float:
    """Steady-state tokens/s of ``lmscaling.train.train`` (steps after ``warmup``)."""
    train_cfg = TrainConfig(
        tokens=(warmup + steps) * BATCH * CONTEXT,
        batch_size=BATCH,
        log_every=warmup,
        device="cpu",
    )
    _, _, metrics = train(cfg, train_cfg, tokens)
    first, last = metrics[0], metrics[-1]  # first row: end of the warm-up steps
    return (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])


def hf_rate(cfg: GPTConfig, tokens: np.ndarray, steps: int, warmup: int) -> float:
    """Steady-state tokens/s of ``GPT2LMHeadModel`` of the same shape in an equivalent loop."""
    from transformers import GPT2Config, GPT2LMHeadModel

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
    )
    model = GPT2LMHeadModel(hf_cfg)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1, fused=True)
    offsets = np.arange(CONTEXT + 1)
    rng = np.random.default_rng(0)
    t0 = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            t0 = time.perf_counter()
        starts = rng.integers(0, len(tokens) - CONTEXT, size=BATCH)
        windows = torch.from_numpy(tokens[starts[:, None] + offsets].astype(np.int64))
        logits = model(input_ids=windows[:, :-1]).logits  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), windows[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * BATCH * CONTEXT / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per side")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < args.warmup or args.steps % args.warmup:
        parser.error("--steps must be a positive multiple of --warmup")
    import transformers

    torch.set_num_threads(args.threads)
    keep_freed_memory_in_heap()  # process-wide: the peer benefits from it too
    tokens = np.random.default_rng(0).integers(0, VOCAB, size=1_000_000).astype(np.uint16)
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} threads, batch {BATCH}, context {CONTEXT}, vocab {VOCAB}, "
        f"median of {args.rounds} rounds"
    )
    print(f"{'model':>8} {'N':>9} {'ours tok/s':>11} {'HF tok/s':>10} {'ratio':>6}")
    ratios = []
    for n_layer, d_model in SHAPES:
        cfg = GPTConfig(VOCAB, CONTEXT, n_layer, d_model, n_head=d_model // HEAD_DIM)
        ours, peer = [], []
        for _ in range(args.rounds):
            ours.append(ours_rate(cfg, tokens, args.steps, args.warmup))
            peer.append(hf_rate(cfg, tokens, args.steps, args.warmup))
        a, b = statistics.median(ours), statistics.median(peer)
        ratios.append(a / b)
        print(
            f"{model_id(n_layer, d_model):>8} {count_parameters(cfg)['N']:>9,} "
            f"{a:>11,.0f} {b:>10,.0f} {a / b:>5.2f}x"
        )
    print(f"geometric mean ratio: {statistics.geometric_mean(ratios):.2f}x (goal >= 1.3x)")


if __name__ == "__main__":
    main()
