"""Rule tokenizer_stats: checksums, counts and statistics of one tokenizer's shards.

Writes results/tokens/{tokenizer}/manifest.json (lmscaling.tokenizer.write_manifest) and logs
bytes per token and the fraction of the vocabulary used, per split, to MLflow with the
tokenizer file as an artifact.
"""

import logging

from lmscaling import tokenizer, tracking
from lmscaling.io import read_json
from lmscaling.jobs import configure_logging, guard

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
with guard(smk.rule):
    name = smk.wildcards.tokenizer
    manifest = tokenizer.write_manifest(
        name, smk.input.tokenizer, smk.input.tokens, smk.output.manifest
    )
    metrics = {"vocab_size": manifest["vocab_size"]}
    for split, stats in manifest["splits"].items():
        logging.getLogger("lmscaling").info(
            "%s %s: %.3f bytes/token, %.1f%% of the vocabulary used",
            name,
            split,
            stats["bytes_per_token"],
            100 * stats["vocab_used_fraction"],
        )
        for key in ("tokens", "bytes", "docs", "bytes_per_token", "vocab_used_fraction"):
            metrics[f"{split}_{key}"] = stats[key]
    info = read_json(smk.input.info)
    metrics["train_seconds_per_mb"] = info["seconds_per_mb"]
    tags = tracking.job_tags(smk.rule, dict(smk.wildcards), smk.resources.attempt, smk.config)
    with tracking.child_run(
        smk.params.parent, f"tokenizer_stats/{name}", tags, params=smk.params.spec
    ) as run:
        run.log_metrics(metrics)
        for path in (smk.input.tokenizer, smk.input.info, smk.output.manifest):
            run.log_artifact(path)
