"""Rule prepare_map: a group of raw input files -> cleaned documents partitioned by shard."""

import logging

from lmscaling import data
from lmscaling.jobs import configure_logging, guard

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
with guard(smk.rule):
    corpus = smk.wildcards.corpus
    spec = data.corpus_spec_from_config(corpus, smk.params.corpus)
    opts = data.data_options_from_config(smk.params.data)
    files = [data.InputFile.from_dict(d) for d in smk.params.files]
    # Remote files arrive as local copies fetched by Snakemake storage, in the same order.
    files = data.bind_local_paths(files, list(smk.input))
    stats = data.map_task(
        spec,
        files,
        smk.output.parquet,
        smk.output.stats,
        opts.num_shards,
        opts.map_buffer_bytes,
        opts.report_examples,
    )
    logging.getLogger("lmscaling").info(
        "%s task %s: %d files, %d documents read, %d kept",
        corpus,
        smk.wildcards.task,
        len(files),
        stats["documents_read"],
        stats["documents_kept"],
    )
