"""Evaluation throughput as a ratio to training throughput of the same model and device.

For each model shape of the default demo (``config/config.yaml``: its grid, context length,
vocabulary, train and eval batch sizes) it measures, in this one process and alternately,

- training: the steady-state tokens/s of ``lmscaling.train.train`` (the loop the workflow runs;
  the first ``--warmup`` steps are not timed), and
- evaluation: the scored tokens/s of ``lmscaling.evaluate.evaluate`` on a random stream of as
  many tokens as the timed training steps saw (after one untimed warm-up call), with the
  config's eval window, stride and BOS policy,

and prints N (non-embedding parameters, Kaplan et al. 2020), both rates and their ratio.
Evaluation has no backward pass and no optimizer step (a training step is about 3x the forward
FLOP, Kaplan et al. 2020, eq. 2.1), so the goal is eval / train >= 2.5. Each figure is the best
of ``--rounds`` alternating runs (as ``timeit`` does), so background load affects both sides
alike and a loaded machine still shows its unloaded rates.

Usage: python benchmarks/eval_speed.py [--steps 10] [--warmup 5] [--rounds 5] [--threads 2]
       [--device cpu] [--config config/config.yaml]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from lmscaling.argtypes import add_step_timing_options
from lmscaling.config import model_grid
from lmscaling.evaluate import evaluate
from lmscaling.model import GPT, GPTConfig, count_parameters
from lmscaling.train import TrainConfig, keep_freed_memory_in_heap, select_device, train

REPO = Path(__file__).resolve().parents[1]


def train_rate(cfg: GPTConfig, batch: int, tokens: np.ndarray, args) -> float:
    """Steady-state training tokens/s (optimizer steps after the warm-up ones)."""
    train_cfg = TrainConfig(
        tokens=(args.warmup + args.steps) * batch * cfg.context_length,
        batch_size=batch,
        log_every=args.warmup,
        device=args.device,
    )
    _, _, metrics = train(cfg, train_cfg, tokens)
    first, last = metrics[0], metrics[-1]  # first row: end of the warm-up steps
    return (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])


def eval_rate(model: GPT, tokens: np.ndarray, opts: dict, device: str) -> float:
    """Scored tokens/s of one evaluation of ``tokens`` (after an untimed warm-up call)."""
    kwargs = {
        "eot_id": 0,
        "batch_size": opts["batch_size"],
        "context_length": opts.get("context_length"),
        "stride": opts.get("stride"),
        "bos": opts.get("bos", "eot"),
        "device": device,
    }
    evaluate(model, tokens[: 4 * model.config.context_length], 1, **kwargs)
    t0 = time.perf_counter()
    out = evaluate(model, tokens, len(tokens), **kwargs)
    return out["tokens"] / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_timing_options(parser, steps=10, warmup=5, rounds=5, threads=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument(
        "--config", default=str(REPO / "config" / "config.yaml"), help="workflow config"
    )
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < args.warmup or args.steps % args.warmup:
        parser.error("--steps must be a positive multiple of --warmup")

    if not Path(args.config).is_file():
        parser.error(f"--config {args.config}: no such file")
    try:
        device = select_device(args.device)
    except ValueError as err:
        parser.error(f"--device: {err}")
    config = yaml.safe_load(Path(args.config).read_text())
    vocab = next(iter(config["tokenizers"].values()))["vocab_size"]
    context = config["models"]["context_length"]
    batch, opts = config["train"]["batch_size"], config["eval"]
    shapes = {(s.n_layer, s.d_model, s.n_head): s.id for s in model_grid(config)}

    torch.set_num_threads(args.threads)
    if device.type == "cpu":
        keep_freed_memory_in_heap()  # process-wide: both sides benefit
    rng = np.random.default_rng(0)
    train_tokens = rng.integers(0, vocab, size=1_000_000).astype(np.uint16)
    eval_tokens = rng.integers(0, vocab, size=args.steps * batch * context).astype(np.uint16)
    print(
        f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, vocab {vocab}, "
        f"context {context}, train batch {batch}, eval batch {opts['batch_size']}, "
        f"eval stride {opts.get('stride') or context}, best of {args.rounds} rounds"
    )
    print(f"{'model':>8} {'N':>9} {'train tok/s':>12} {'eval tok/s':>11} {'ratio':>6}")
    ratios = []
    for (n_layer, d_model, n_head), name in shapes.items():
        cfg = GPTConfig(vocab, context, n_layer, d_model, n_head)
        torch.manual_seed(0)
        model = GPT(cfg)
        trains, evals = [], []
        for _ in range(args.rounds):
            trains.append(train_rate(cfg, batch, train_tokens, args))
            evals.append(eval_rate(model, eval_tokens, opts, str(device)))
        a, b = max(trains), max(evals)
        ratios.append(b / a)
        print(f"{name:>8} {count_parameters(cfg)['N']:>9,} {a:>12,.0f} {b:>11,.0f} {b / a:>5.2f}x")
    print(f"min ratio {min(ratios):.2f}x, geometric mean {statistics.geometric_mean(ratios):.2f}x")
    print("goal: eval / train >= 2.5x")


if __name__ == "__main__":
    main()
