"""Rule evaluate: held-out loss, perplexity and bits-per-byte of one model (lmscaling.evaluate)."""

import torch

from lmscaling import tokenizer, tracking
from lmscaling.evaluate import evaluate
from lmscaling.io import read_json, write_json
from lmscaling.jobs import configure_logging, guard
from lmscaling.model import load_checkpoint

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
with guard(smk.rule):
    torch.set_num_threads(smk.threads)
    model, _ = load_checkpoint(smk.input.checkpoint)
    summary = read_json(smk.input.summary)
    tokens, totals = tokenizer.read_token_shards(smk.input.tokens)
    scores = evaluate(
        model,
        tokens,
        n_bytes=totals["bytes"],
        eot_id=totals["eot_id"],
        batch_size=smk.params.batch_size,
        device=smk.params.device,
    )
    w = smk.wildcards
    result = {
        "model": w.model,
        "tokenizer": w.tokenizer,
        "eval_set": "val",
        "eval_docs": totals["docs"],
        **{k: summary[k] for k in ("N", "N_total", "N_embedding", "D", "C", "train_loss")},
        "n_layer": summary["model"]["n_layer"],
        "d_model": summary["model"]["d_model"],
        "n_head": summary["model"]["n_head"],
        **scores,
    }
    write_json(smk.output[0], result)
    tags = tracking.job_tags(smk.rule, dict(w), smk.resources.attempt, smk.config)
    with tracking.child_run(smk.params.parent, f"evaluate/{w.tokenizer}/{w.model}", tags) as run:
        run.log_params({"model_id": w.model, "tokenizer": w.tokenizer, "eval_set": "val"})
        run.log_metrics({k: v for k, v in result.items() if isinstance(v, (int, float))})
        run.log_artifact(smk.output[0])
