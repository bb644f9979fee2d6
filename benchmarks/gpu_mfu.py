"""Training MFU at the largest size of the GPU preset: tokens/s, MFU and peak memory.

Runs ``lmscaling.train.train`` (bf16 autocast, TF32, fused AdamW, ``torch.compile`` unless
``--no-compile``) for ``--steps`` optimizer steps of the largest model of
``config/presets/gpu.yaml`` (L20-D1280, context 1024, vocabulary 32768) on random tokens, and
prints the steady-state training tokens/s (the first ``--warmup`` steps, which include
compilation, are not timed), the MFU = tokens/s x FLOP per token / device peak (FLOP per token:
``GPT.flops_per_token()["exact"]`` = 6N + attention + LM head, Kaplan et al. 2020; peak: dense
bf16 from ``lmscaling.train.PEAK_BF16_FLOPS``) and the peak GPU memory. Goal on a Hopper GPU
(H100/H200): MFU >= 45%.

Several micro-batch sizes (``--micro-batch 32 48 64``) are measured one after the other in
the same process, each with a fresh model and a fresh compilation (so no run is compiled for a
dynamic batch size), and printed as one table: the size to write into the preset's
``train.micro_batch_size`` is the fastest one whose peak memory fits the cluster's GPUs.

``--tiny`` runs a small model on whatever device is there (e.g. a CPU, where MFU is not
defined) to check that the script works; without it, the script stops at once where there is
no CUDA device.

Measured on H200s (torch 2.11, CUDA 13.0) at micro-batch 32 (the preset's): 44.3-45.5% MFU
(158-163k tokens/s) in three runs on two machines, 39.3 GiB; 43.5% and 22.6 GiB at 16; 32.7% in
eager mode at 16. The attention term counts causal attention's work (half of the T x T scores);
the convention of PaLM (Chowdhery et al. 2022, app. B), which counts all of them, gives 6% more.

Usage: python benchmarks/gpu_mfu.py [--steps 300] [--warmup 50] [--micro-batch N [N ...]]
       [--no-compile] [--tiny]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
import yaml

from lmscaling.argtypes import positive_int
from lmscaling.config import model_grid
from lmscaling.model import GPTConfig, count_parameters
from lmscaling.train import TrainConfig, device_peak_flops, select_device, train

PRESET = Path(__file__).resolve().parents[1] / "config" / "presets" / "gpu.yaml"


def largest_preset_model() -> tuple[GPTConfig, int]:
    """The largest grid point of the GPU preset (by non-embedding parameters) and the preset's
    ``train.micro_batch_size`` (sequences per forward pass)."""
    config = yaml.safe_load(PRESET.read_text())
    vocab = next(iter(config["tokenizers"].values()))["vocab_size"]
    context = config["models"]["context_length"]
    shapes = [GPTConfig(vocab, context, s.n_layer, s.d_model, s.n_head) for s in model_grid(config)]
    largest = max(shapes, key=lambda c: count_parameters(c)["N"])
    return largest, config["train"]["micro_batch_size"]


def measure(
    model_cfg: GPTConfig, batch: int, args: argparse.Namespace, device: torch.device
) -> dict:
    """Train ``model_cfg`` at micro-batch ``batch`` for ``args.steps`` steps on random tokens.

    Returns ``{"batch", "rate"`` (steady-state tokens/s after ``args.warmup`` steps), ``"flops"``
    (FLOP per token, ``exact``), ``"summary"`` (``train()``'s summary)``}``.
    """
    cfg = TrainConfig(
        tokens=args.steps * batch * model_cfg.context_length,
        batch_size=batch,
        lr=3e-4,
        warmup_fraction=0.1,
        log_every=args.warmup,
        device=str(device),
        compile=not args.no_compile,
    )
    tokens = np.random.default_rng(0).integers(0, model_cfg.vocab_size, 10_000_000)
    tokens = tokens.astype(np.uint16 if model_cfg.vocab_size <= 2**16 else np.uint32)
    _, summary, metrics = train(model_cfg, cfg, tokens, name=f"mfu-{batch}")
    first, last = metrics[0], metrics[-1]  # first row: end of the untimed steps
    rate = (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])
    return {
        "batch": batch,
        "rate": rate,
        "flops": summary["flops_per_token"]["exact"],
        "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=positive_int, default=300, help="optimizer steps (all)")
    parser.add_argument("--warmup", type=positive_int, default=50, help="untimed first steps")
    parser.add_argument(
        "--micro-batch",
        type=positive_int,
        nargs="+",
        help="sequences per step, one run each (default: the preset's train.micro_batch_size; "
        "16 with --tiny)",
    )
    parser.add_argument("--no-compile", action="store_true", help="eager mode")
    parser.add_argument("--tiny", action="store_true", help="small model, any device")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps <= args.warmup or args.steps % args.warmup:
        parser.error("--steps must be a multiple of --warmup, and larger")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    device = select_device("auto")
    if device.type != "cuda" and not args.tiny:
        parser.error(
            f"no CUDA device here ({device.type}): the preset's largest model needs a GPU; "
            "--tiny checks the script on this machine"
        )
    if args.tiny:
        model_cfg = GPTConfig(vocab_size=512, context_length=64, n_layer=2, d_model=64, n_head=2)
        batches = args.micro_batch or [16]
    else:
        model_cfg, preset_micro = largest_preset_model()
        batches = args.micro_batch or [preset_micro]
    runs = []
    for batch in batches:
        torch._dynamo.reset()  # compile each size afresh, not for a dynamic batch dimension
        if device.type == "cuda":
            torch.cuda.empty_cache()
        runs.append(measure(model_cfg, batch, args, device))

    summary = runs[0]["summary"]
    peak = device_peak_flops(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"model L{model_cfg.n_layer}-D{model_cfg.d_model}: N {summary['N']:,} "
        f"(total {summary['N_total']:,}), context {model_cfg.context_length}; "
        f"FLOP/token {runs[0]['flops']:,.0f} (6N = {summary['flops_per_token']['6N']:,.0f})"
    )
    print(f"device {name}, torch {torch.__version__}, compiled {summary['compiled']}")
    peak_note = f"MFU: % of {peak / 1e12:,.0f} TFLOP/s" if peak else "MFU n/a: no known peak"
    header = f"{'micro-batch':>11} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>6} {'memory':>9}"
    print(f"{header} {'loss':>6}  ({peak_note})")
    for run in runs:
        achieved = run["rate"] * run["flops"]
        mfu = f"{100 * achieved / peak:.1f}%" if peak else "n/a"
        memory = run["summary"]["peak_memory_gb"]
        memory = f"{memory:.1f} GiB" if memory is not None else "n/a"
        print(
            f"{run['batch']:>11} {run['rate']:>10,.0f} {achieved / 1e12:>8,.1f} {mfu:>6} "
            f"{memory:>9} {run['summary']['train_loss']:>6.3f}"
        )
    print("loss: final training loss in nats/token (random tokens: about ln V)")


if __name__ == "__main__":
    main()
