# Power-law fits of held-out loss against N, D and C, with plots.


rule fit_scaling_law:
    input:
        "results/eval/points.parquet",
    output:
        json="results/fit/scaling_law.json",
        png=report(
            "results/fit/scaling_law.png",
            caption="../report/scaling_law.rst",
            category="Scaling laws",
        ),
        svg="results/fit/scaling_law.svg",
    log:
        "results/logs/fit_scaling_law/fit_scaling_law.log",
    localrule: True
    conda:
        "../../envs/fit.yaml"
    resources:
        attempt=job_attempt,
    params:
        fit=config["fit"],
        parent=PARENT_JSON,
    script:
        "../scripts/fit_scaling_law.py"
