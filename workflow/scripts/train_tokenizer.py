"""Rule train_tokenizer: byte-level BPE on the train split (lmscaling.tokenizer)."""

from lmscaling import tokenizer, tracking
from lmscaling.jobs import configure_logging, guard

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
with guard(smk.rule):
    spec = tokenizer.tokenizer_spec_from_config(smk.wildcards.tokenizer, smk.params.spec)
    tok = tokenizer.train_tokenizer(spec, smk.input, smk.output[0])
    tags = tracking.job_tags(smk.rule, dict(smk.wildcards), smk.resources.attempt, smk.config)
    name = f"train_tokenizer/{spec.name}"
    with tracking.child_run(smk.params.parent, name, tags, params=smk.params.spec) as run:
        run.log_metrics({"vocab_size_trained": tok.get_vocab_size()})
        run.log_artifact(smk.output[0])
