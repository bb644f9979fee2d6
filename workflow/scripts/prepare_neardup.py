"""Rule prepare_neardup: MinHash LSH near-duplicate clusters over a whole corpus."""

import logging

from lmscaling import data
from lmscaling.jobs import configure_logging, guard

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
with guard(smk.rule):
    opts = data.data_options_from_config(smk.params.data)
    result = data.near_dup_task(list(smk.input), smk.output[0], opts.num_shards)
    logging.getLogger("lmscaling").info(
        "%s: %d distinct documents, %d near duplicates",
        smk.wildcards.corpus,
        result["documents"],
        result["drops"],
    )
