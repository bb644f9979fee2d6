"""Rule prepare_reduce: one shard of every map output -> deduplicated train and val files."""

from lmscaling import data
from lmscaling.jobs import configure_logging, guard

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
with guard(smk.rule):
    spec = data.corpus_spec_from_config(smk.wildcards.corpus, smk.params.corpus)
    opts = data.data_options_from_config(smk.params.data)
    data.reduce_shard(
        spec,
        list(smk.input.maps),
        smk.input.neardup[0] if smk.input.neardup else None,
        int(smk.wildcards.shard),
        opts.num_shards,
        opts.val_fraction,
        smk.output.train,
        smk.output.val,
        smk.output.stats,
        opts.row_group_bytes,
        opts.max_shard_bytes,
        opts.report_examples,
    )
