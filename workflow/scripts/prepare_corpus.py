"""Rule prepare_corpus: check a corpus, publish its shards, manifest and filter report."""

from pathlib import Path

from lmscaling import data, tracking
from lmscaling.jobs import configure_logging, guard

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
with guard(smk.rule):
    corpus = smk.wildcards.corpus
    options = dict(smk.params.corpus)
    heldout = options.pop("heldout", False)  # scored on all of it: a split may be empty
    spec = data.corpus_spec_from_config(corpus, options)
    opts = data.data_options_from_config(smk.params.data)
    shards = data.shard_names(opts.num_shards)
    reduced = {}
    for split in data.SPLITS:
        for shard, path in zip(shards, smk.input[split], strict=True):
            reduced[split, shard] = path
    manifest = data.publish_corpus(
        spec,
        data.read_stats(smk.input.maps),
        data.read_stats(smk.input.reduces),
        reduced,
        Path(smk.output.manifest).parent,
        opts,
        report_csv=smk.output.report,
        require_splits=() if heldout else data.SPLITS,
    )
    tags = tracking.job_tags(smk.rule, dict(smk.wildcards), smk.resources.attempt, smk.config)
    with tracking.child_run(smk.params.parent, f"prepare_corpus/{corpus}", tags) as run:
        run.log_params({"corpus": smk.params.corpus, "data": smk.config["data"]})
        metrics = {
            "documents_in": manifest["documents_in"],
            "documents_out": manifest["documents_out"],
            "bytes_in": manifest["bytes_in"],
            "bytes_out": manifest["bytes_out"],
            "bytes_modified": manifest["bytes_modified"],
            **{f"removed.{k}": v for k, v in manifest["removed"].items()},
            **{f"removed_bytes.{k}": v for k, v in manifest["removed_bytes"].items()},
            **{f"bytes.{k}": v for k, v in manifest["bytes"].items()},
            **{f"documents.{k}": v for k, v in manifest["documents"].items()},
        }
        run.log_metrics(metrics)
        run.log_artifact(smk.output.manifest)
        run.log_artifact(smk.output.report)
