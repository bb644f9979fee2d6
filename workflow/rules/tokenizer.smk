# Tokenizers (train split only), token shards, and per-tokenizer statistics with checksums.
# Each tokenizer of config["tokenizers"] is one value of the {tokenizer} wildcard.


rule train_tokenizer:
    input:
        train_parquet_shards,
    output:
        tokenizer="results/tokenizers/{tokenizer}/tokenizer.json",
        info="results/tokenizers/{tokenizer}/train_info.json",
    log:
        "results/logs/train_tokenizer/{tokenizer}.log",
    benchmark:
        "results/benchmarks/train_tokenizer/{tokenizer}.tsv"
    conda:
        "../../envs/tokenizer.yaml"
    threads: 2
    resources:
        attempt=job_attempt,
    params:
        spec=lambda w: config["tokenizers"][w.tokenizer],
        parent=PARENT_JSON,
    script:
        "../scripts/train_tokenizer.py"


rule tokenize:
    input:
        tokenizer="results/tokenizers/{tokenizer}/tokenizer.json",
        shard="results/data/{corpus}/{split}/part-{shard}.parquet",
    output:
        bin="results/tokens/{tokenizer}/{corpus}/{split}/part-{shard}.bin",
        meta="results/tokens/{tokenizer}/{corpus}/{split}/part-{shard}.json",
    log:
        "results/logs/tokenize/{tokenizer}/{corpus}/{split}/part-{shard}.log",
    benchmark:
        "results/benchmarks/tokenize/{tokenizer}/{corpus}/{split}/part-{shard}.tsv"
    conda:
        "../../envs/tokenizer.yaml"
    # Threads of the tokenizers library's encoder pool (RAYON_NUM_THREADS).
    threads: 2
    resources:
        attempt=job_attempt,
    params:
        parent=PARENT_JSON,
    script:
        "../scripts/tokenize_shard.py"


rule tokenizer_stats:
    input:
        tokenizer="results/tokenizers/{tokenizer}/tokenizer.json",
        info="results/tokenizers/{tokenizer}/train_info.json",
        tokens=tokenized_shards,
    output:
        manifest="results/tokens/{tokenizer}/manifest.json",
    log:
        "results/logs/tokenizer_stats/{tokenizer}.log",
    conda:
        "../../envs/tokenizer.yaml"
    threads: 1
    resources:
        attempt=job_attempt,
    params:
        spec=lambda w: config["tokenizers"][w.tokenizer],
        parent=PARENT_JSON,
    script:
        "../scripts/tokenizer_stats.py"
