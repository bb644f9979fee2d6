"""Rule collect_points: one tidy table of every evaluation (Parquet + CSV)."""

import polars as pl

from lmscaling import tracking
from lmscaling.io import atomic_path, read_json
from lmscaling.jobs import configure_logging, guard

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
with guard(smk.rule):
    table = pl.DataFrame([read_json(p) for p in smk.input]).sort(["tokenizer", "eval_set", "N"])
    with atomic_path(smk.output.parquet) as tmp:
        table.write_parquet(tmp)
    with atomic_path(smk.output.csv) as tmp:
        table.write_csv(tmp)
    tags = tracking.job_tags(smk.rule, {}, smk.resources.attempt, smk.config)
    with tracking.child_run(smk.params.parent, "collect_points", tags) as run:
        run.log_metrics({"points": table.height})
        run.log_artifact(smk.output.csv)
