# Held-out loss, perplexity and bits-per-byte of every checkpoint of a model on every evaluation
# set ("<corpus>/val" per training corpus, "<corpus>/all" per held-out corpus), then one tidy
# table of all points.


rule evaluate:
    input:
        checkpoints=model_checkpoint_files,
        tokens=eval_token_shards,
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
        gpu=0 if config["train"]["device"] == "cpu" else 1,
        attempt=job_attempt,
    params:
        checkpoints=lambda w: model_checkpoints(w.tokenizer, w.model),
        sets=lambda w: eval_set_shards(w.tokenizer),
        eval=eval_params(),
        device=config["train"]["device"],
        parent=PARENT_JSON,
        gpu_locks=GPU_LOCKS,
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
