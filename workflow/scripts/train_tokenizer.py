"""Rule train_tokenizer: a BPE or Unigram tokenizer on the train split (lmscaling.tokenizer)."""

from lmscaling import tokenizer, tracking
from lmscaling.io import read_json
from lmscaling.jobs import configure_logging, guard

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
with guard(smk.rule):
    tokenizer.set_threads(smk.threads)
    spec = tokenizer.tokenizer_spec_from_config(smk.wildcards.tokenizer, smk.params.spec)
    tokenizer.train_tokenizer(spec, smk.input, smk.output.tokenizer, smk.output.info)
    info = read_json(smk.output.info)
    tags = tracking.job_tags(smk.rule, dict(smk.wildcards), smk.resources.attempt, smk.config)
    name = f"train_tokenizer/{spec.name}"
    with tracking.child_run(smk.params.parent, name, tags, params=smk.params.spec) as run:
        run.log_metrics(
            {k: info[k] for k in ("vocab_size_trained", "docs", "bytes", "seconds_per_mb")}
        )
        run.log_artifact(smk.output.tokenizer)
        run.log_artifact(smk.output.info)
