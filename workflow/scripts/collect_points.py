"""Rule collect_points: one tidy table of every evaluation point (Parquet + CSV)."""

from lmscaling import tracking
from lmscaling.io import atomic_path
from lmscaling.jobs import configure_logging, guard
from lmscaling.points import points_table

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
with guard(smk.rule):
    table = points_table(smk.input)
    with atomic_path(smk.output.parquet) as tmp:
        table.write_parquet(tmp)
    with atomic_path(smk.output.csv) as tmp:
        table.write_csv(tmp)
    tags = tracking.job_tags(smk.rule, {}, smk.resources.attempt, smk.config)
    with tracking.child_run(smk.params.parent, "collect_points", tags) as run:
        run.log_metrics(
            {
                "points": table.height,
                "final_points": int(table["final"].sum()),
                "eval_sets": table["eval_set"].n_unique(),
            }
        )
        run.log_artifact(smk.output.parquet)
        run.log_artifact(smk.output.csv)
