# One training job per tokenizer × grid point.


rule train_model:
    input:
        tokens=lambda w: token_shards(w.tokenizer, "train"),
        tokenizer="results/tokenizers/{tokenizer}/tokenizer.json",
    output:
        checkpoint="results/models/{tokenizer}/{model}/model.pt",
        metrics="results/models/{tokenizer}/{model}/metrics.csv",
        summary="results/models/{tokenizer}/{model}/summary.json",
    log:
        "results/logs/train_model/{tokenizer}/{model}.log",
    benchmark:
        "results/benchmarks/train_model/{tokenizer}/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["train"]["threads"]
    resources:
        gpu=0 if config["train"]["device"] == "cpu" else 1,
        attempt=job_attempt,
    params:
        shape=lambda w: MODELS[w.model],
        context_length=config["models"]["context_length"],
        train=config["train"],
        seed=config["seed"],
        parent=PARENT_JSON,
    script:
        "../scripts/train_model.py"
