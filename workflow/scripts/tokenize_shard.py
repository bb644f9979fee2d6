"""Rule tokenize: one Parquet shard -> flat token array + sidecar (lmscaling.tokenizer)."""

import logging

from lmscaling import tokenizer, tracking
from lmscaling.jobs import configure_logging, guard

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
with guard(smk.rule):
    tokenizer.set_threads(smk.threads)  # before the first encode: sizes the thread pool
    meta = tokenizer.tokenize_shard(
        smk.input.tokenizer, smk.input.shard, smk.output.bin, smk.output.meta
    )
    logging.getLogger("lmscaling").info(
        "%d docs, %d tokens, %d bytes (%.2f bytes/token) on %d thread(s)",
        meta["docs"],
        meta["tokens"],
        meta["bytes"],
        meta["bytes"] / max(meta["text_tokens"], 1),
        smk.threads,
    )
    w = smk.wildcards
    tags = tracking.job_tags(smk.rule, dict(w), smk.resources.attempt, smk.config)
    name = f"tokenize/{w.tokenizer}/{w.corpus}/{w.split}/{w.shard}"
    with tracking.child_run(smk.params.parent, name, tags) as run:
        run.log_metrics({k: meta[k] for k in ("docs", "tokens", "text_tokens", "bytes")})
        run.log_artifact(smk.output.meta)
