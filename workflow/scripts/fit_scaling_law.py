"""Rule fit_scaling_law: power laws of loss against N, D and C, with plots (lmscaling.fit)."""

import polars as pl

from lmscaling import fit, tracking
from lmscaling.io import write_json
from lmscaling.jobs import configure_logging, guard

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
with guard(smk.rule):
    points = pl.read_parquet(smk.input[0]).to_dicts()
    opts = smk.params.fit
    result = fit.fit_scaling_laws(points, confidence=opts["confidence"], axes=opts["axes"])
    write_json(smk.output.json, result)
    fit.plot_scaling_laws(result, smk.output.png, smk.output.svg)
    tags = tracking.job_tags(smk.rule, {}, smk.resources.attempt, smk.config)
    with tracking.child_run(smk.params.parent, "fit_scaling_law", tags, params=opts) as run:
        for group in result["groups"]:
            prefix = f"{group['tokenizer']}.{group['eval_set']}"
            for axis, law in group["fits"].items():
                run.log_metrics(
                    {f"{prefix}.L_{axis}.{k}": law[k] for k in ("a", "b", "alpha", "r2")}
                )
        for path in smk.output:
            run.log_artifact(path)
