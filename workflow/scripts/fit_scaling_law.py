"""Rule fit_scaling_law: every scaling-law fit, its figures and MLflow metrics (lmscaling.fit)."""

import polars as pl

from lmscaling import fit, tracking
from lmscaling.io import write_json
from lmscaling.jobs import configure_logging, guard

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
with guard(smk.rule):
    points = pl.read_parquet(smk.input[0]).to_dicts()
    settings = fit.FitSettings.from_config(smk.params.fit, seed=smk.params.seed)
    result = fit.fit_scaling_laws(points, settings=settings, source=smk.input[0])
    write_json(smk.output.json, result)
    fit.plot_scaling_laws(result, smk.output.png, smk.output.svg)
    fit.plot_residuals(result, smk.output.residuals_png, smk.output.residuals_svg)
    fit.plot_isoflop(result, smk.output.isoflop_png, smk.output.isoflop_svg)
    tags = tracking.job_tags(smk.rule, {}, smk.resources.attempt, smk.config)
    with tracking.child_run(
        smk.params.parent, "fit_scaling_law", tags, params=smk.params.fit
    ) as run:
        run.log_metrics(fit.summary_metrics(result))
        for path in smk.output:
            run.log_artifact(path)
