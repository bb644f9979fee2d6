# Scaling-law fits of held-out loss (power laws, saturating laws, Chinchilla, IsoFLOP), with
# bootstrap intervals, an extrapolation check and figures for the Snakemake report.


rule fit_scaling_law:
    input:
        "results/eval/points.parquet",
    output:
        json=report(
            "results/fit/scaling_law.json",
            caption="../report/fit_json.rst",
            category="Scaling laws",
            labels={"figure": "all fits (JSON)"},
        ),
        png=report(
            "results/fit/scaling_law.png",
            caption="../report/scaling_law.rst",
            category="Scaling laws",
            labels={"figure": "loss against N, D, C"},
        ),
        svg="results/fit/scaling_law.svg",
        residuals_png=report(
            "results/fit/residuals.png",
            caption="../report/residuals.rst",
            category="Scaling laws",
            labels={"figure": "residuals"},
        ),
        residuals_svg="results/fit/residuals.svg",
        isoflop_png=report(
            "results/fit/isoflop.png",
            caption="../report/isoflop.rst",
            category="Scaling laws",
            labels={"figure": "IsoFLOP and compute-optimal N"},
        ),
        isoflop_svg="results/fit/isoflop.svg",
    log:
        "results/logs/fit_scaling_law/fit_scaling_law.log",
    benchmark:
        "results/benchmarks/fit_scaling_law/fit_scaling_law.tsv"
    localrule: True
    conda:
        "../../envs/fit.yaml"
    threads: 1
    resources:
        attempt=job_attempt,
    params:
        fit=config["fit"],
        seed=config["seed"],
        parent=PARENT_JSON,
    script:
        "../scripts/fit_scaling_law.py"
