# One training job per tokenizer × grid point. The resume state (resume.pt and the staged
# fraction checkpoints) lives in results/models/{tokenizer}/{model}/resume/, which is not a
# declared output: Snakemake deletes the outputs of a failed job, and this directory must survive
# so that a rerun continues where the killed job stopped. The job removes it once its outputs
# are written.


rule train_model:
    input:
        tokens=lambda w: token_shards(w.tokenizer, "train"),
        tokenizer="results/tokenizers/{tokenizer}/tokenizer.json",
    output:
        checkpoint="results/models/{tokenizer}/{model}/model.pt",
        metrics="results/models/{tokenizer}/{model}/metrics.csv",
        summary="results/models/{tokenizer}/{model}/summary.json",
        fractions=expand(
            "results/models/{{tokenizer}}/{{model}}/checkpoints/{name}.pt",
            name=checkpoint_names(),
        ),
    log:
        "results/logs/train_model/{tokenizer}/{model}.log",
    benchmark:
        "results/benchmarks/train_model/{tokenizer}/{model}.tsv"
    priority: train_priority
    conda:
        "../../envs/torch.yaml"
    threads: config["train"]["threads"]
    resources:
        # train.gpus: more than one trains with DDP (a profile's set-resources may override it).
        gpu=0 if config["train"]["device"] == "cpu" else config["train"]["gpus"],
        attempt=job_attempt,
    params:
        shape=lambda w: MODELS[w.model],
        # a dict, recorded by Snakemake (the dataclass above is not): editing it reruns
        grid_point=model_shape,
        models={
            k: v for k, v in config["models"].items() if k not in ("grid", "ladder")
        },
        # the rules by size as resolved for this model (an edit elsewhere in a table reruns
        # nothing here), and the rest of train (see train_params)
        settings=model_settings,
        train=train_params(),
        seed=config["seed"],
        # sampling probability of each training corpus (corpora.<name>.weight)
        mixture=MIXTURE,
        state_dir=lambda w: f"results/models/{w.tokenizer}/{w.model}/resume",
        parent=PARENT_JSON,
        gpu_locks=GPU_LOCKS,
    script:
        "../scripts/train_model.py"
