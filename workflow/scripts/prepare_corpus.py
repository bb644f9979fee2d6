"""Rule prepare_corpus: raw corpus -> cleaned Parquet shards + manifest (lmscaling.data)."""

from pathlib import Path

from lmscaling import data, tracking
from lmscaling.jobs import configure_logging, guard

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
with guard(smk.rule):
    corpus = smk.wildcards.corpus
    spec = data.corpus_spec_from_config(corpus, smk.params.corpus)
    manifest = data.prepare_corpus(
        spec,
        Path(smk.output.manifest).parent,
        num_shards=smk.params.num_shards,
        val_fraction=smk.params.val_fraction,
    )
    tags = tracking.job_tags(smk.rule, dict(smk.wildcards), smk.resources.attempt, smk.config)
    with tracking.child_run(smk.params.parent, f"prepare_corpus/{corpus}", tags) as run:
        run.log_params({"corpus": smk.params.corpus, "data": smk.config["data"]})
        metrics = {
            "documents_in": manifest["documents_in"],
            "documents_out": manifest["documents_out"],
            **{f"removed.{k}": v for k, v in manifest["removed"].items()},
            **{f"bytes.{k}": v for k, v in manifest["bytes"].items()},
            **{f"documents.{k}": v for k, v in manifest["documents"].items()},
        }
        run.log_metrics(metrics)
        run.log_artifact(smk.output.manifest)
