"""Training throughput of the default demo model shapes on CPU.

For each shape (vocab 2048, context 128, batch 32, head_dim 16) runs ``lmscaling.train.train`` on
a random token stream and prints N (non-embedding parameters), the 6N training FLOP per token
(Kaplan et al. 2020, eq. 2.1) and the steady-state tokens/s (the first logged interval, which
includes one-time warm-up, is dropped).

Usage: python benchmarks/train_speed.py [--steps 40] [--threads 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from lmscaling.model import GPTConfig, model_id
from lmscaling.train import TrainConfig, train

SHAPES = [(1, 32), (2, 32), (2, 48), (3, 64), (4, 80)]  # (n_layer, d_model)
VOCAB, CONTEXT, BATCH = 2048, 128, 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per shape")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first logged interval is dropped)")
    torch.set_num_threads(args.threads)
    tokens = np.random.default_rng(0).integers(0, VOCAB, size=1_000_000).astype(np.uint16)
    log_every = max(1, args.steps // 4)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, "
        f"context {CONTEXT}, vocab {VOCAB}"
    )
    print(f"{'model':>8} {'N':>9} {'N_total':>9} {'6N/token':>10} {'tok/s':>9} {'step ms':>8}")
    for n_layer, d_model in SHAPES:
        model_cfg = GPTConfig(VOCAB, CONTEXT, n_layer, d_model, n_head=d_model // 16)
        cfg = TrainConfig(
            tokens=args.steps * BATCH * CONTEXT,
            batch_size=BATCH,
            log_every=log_every,
            device="cpu",
            threads=args.threads,
        )
        _, summary, metrics = train(model_cfg, cfg, tokens)
        first, last = metrics[0], metrics[-1]  # drop the first interval (warm-up)
        rate = (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])
        print(
            f"{model_id(n_layer, d_model):>8} {summary['N']:>9,} {summary['N_total']:>9,} "
            f"{summary['flops_per_token']['6N']:>10,.0f} {rate:>9,.0f} "
            f"{1e3 * BATCH * CONTEXT / rate:>8.1f}"
        )


if __name__ == "__main__":
    main()
