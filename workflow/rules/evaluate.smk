# Held-out loss, perplexity and bits-per-byte per model, then one tidy table of all points.


rule evaluate:
    input:
        checkpoint="results/models/{tokenizer}/{model}/model.pt",
        summary="results/models/{tokenizer}/{model}/summary.json",
        tokens=lambda w: token_shards(w.tokenizer, "val"),
    output:
        "results/eval/{tokenizer}/{model}.json",
    log:
        "results/logs/evaluate/{tokenizer}/{model}.log",
    benchmark:
        "results/benchmarks/evaluate/{tokenizer}/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["train"]["threads"]
    resources:
        attempt=job_attempt,
    params:
        batch_size=config["eval"]["batch_size"],
        device=config["train"]["device"],
        parent=PARENT_JSON,
    script:
        "../scripts/evaluate_model.py"


rule collect_points:
    input:
        model_outputs(),
    output:
        parquet="results/eval/points.parquet",
        csv="results/eval/points.csv",
    log:
        "results/logs/collect_points/collect_points.log",
    localrule: True
    conda:
        "../../envs/fit.yaml"
    resources:
        attempt=job_attempt,
    params:
        parent=PARENT_JSON,
    script:
        "../scripts/collect_points.py"
