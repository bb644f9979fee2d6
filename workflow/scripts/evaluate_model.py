"""Rule evaluate: every checkpoint of one model on every evaluation set (lmscaling.evaluate)."""

import torch

from lmscaling import tracking
from lmscaling.evaluate import evaluate_points
from lmscaling.gpus import claim_gpus
from lmscaling.io import write_json
from lmscaling.jobs import configure_logging, guard

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
gpus = int(getattr(smk.resources, "gpu", 0) or 0)
with guard(smk.rule), claim_gpus(gpus, smk.params.gpu_locks):  # before CUDA is touched
    torch.set_num_threads(smk.threads)
    w, opts = smk.wildcards, smk.params.eval
    tags = tracking.job_tags(smk.rule, dict(w), smk.resources.attempt, smk.config)
    params = {
        "model_id": w.model,
        "tokenizer": w.tokenizer,
        "eval": opts,
        "eval_sets": list(smk.params.sets),
        "checkpoints": list(smk.params.checkpoints),
    }
    name = f"evaluate/{w.tokenizer}/{w.model}"
    with tracking.child_run(smk.params.parent, name, tags, params) as run:

        def log_point(point):
            """Loss, perplexity and bpb per set against tokens seen (MLflow step = D)."""
            keys = ("loss", "perplexity", "bpb")
            run.log_metrics({f"{point['eval_set']}.{k}": point[k] for k in keys}, step=point["D"])

        result = evaluate_points(
            w.tokenizer,
            w.model,
            smk.params.checkpoints,
            smk.params.sets,
            batch_size=opts["batch_size"],
            context_length=opts.get("context_length"),
            stride=opts.get("stride"),
            bos=opts.get("bos", "eot"),
            device=smk.params.device,
            on_point=log_point,
        )
        write_json(smk.output[0], result)
        final = next(p for p in result["points"] if p["final"])
        run.log_metrics({k: final[k] for k in ("N", "N_total", "N_embedding", "D", "C")})
        for set_name, counts in result["eval_sets"].items():
            run.log_metrics({f"{set_name}.{k}": v for k, v in counts.items()})
        run.log_artifact(smk.output[0])
