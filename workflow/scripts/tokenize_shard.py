"""Rule tokenize: one Parquet shard -> flat token array + sidecar (lmscaling.tokenizer)."""

import logging

from lmscaling import tokenizer, tracking
from lmscaling.jobs import configure_logging, guard

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
with guard(smk.rule):
    meta = tokenizer.tokenize_shard(
        smk.input.tokenizer, smk.input.shard, smk.output.bin, smk.output.meta
    )
    logging.getLogger("lmscaling").info(
        "%d docs, %d tokens, %d bytes (%.2f bytes/token)",
        meta["docs"],
        meta["tokens"],
        meta["bytes"],
        meta["bytes"] / max(meta["tokens"], 1),
    )
    w = smk.wildcards
    tags = tracking.job_tags(smk.rule, dict(w), smk.resources.attempt, smk.config)
    name = f"tokenize/{w.tokenizer}/{w.corpus}/{w.split}/{w.shard}"
    with tracking.child_run(smk.params.parent, name, tags) as run:
        run.log_metrics({k: meta[k] for k in ("docs", "tokens", "bytes")})
        run.log_artifact(smk.output.meta)
