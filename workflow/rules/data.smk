# Corpus preparation, as separate jobs so that cores and cluster nodes share the work:
#   prepare_map (per group of input files) -> prepare_neardup (per corpus, when enabled)
#   -> prepare_reduce (per shard) -> prepare_corpus (per corpus: checks, publish, manifest).
# Map outputs are partitioned by the content hash of each document, so every copy of a text
# reaches the same reducer: deduplication is global. See lmscaling.data.


rule prepare_map:
    input:
        corpus_task_inputs,
    output:
        parquet=temp("results/prepare/{corpus}/map/{task}.parquet"),
        stats="results/prepare/{corpus}/map/{task}.json",
    log:
        "results/logs/prepare_map/{corpus}/{task}.log",
    benchmark:
        "results/benchmarks/prepare_map/{corpus}/{task}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    params:
        corpus=corpus_config,
        files=corpus_task_files,
        data=config["data"],
    script:
        "../scripts/prepare_map.py"


rule prepare_neardup:
    input:
        corpus_map_outputs,
    output:
        temp("results/prepare/{corpus}/neardup.parquet"),
    log:
        "results/logs/prepare_neardup/{corpus}.log",
    benchmark:
        "results/benchmarks/prepare_neardup/{corpus}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    params:
        data=config["data"],
    script:
        "../scripts/prepare_neardup.py"


rule prepare_reduce:
    input:
        maps=corpus_map_outputs,
        neardup=corpus_neardup_input,
    output:
        train=temp("results/prepare/{corpus}/reduce/train-{shard}.parquet"),
        val=temp("results/prepare/{corpus}/reduce/val-{shard}.parquet"),
        stats="results/prepare/{corpus}/reduce/{shard}.json",
    log:
        "results/logs/prepare_reduce/{corpus}/{shard}.log",
    benchmark:
        "results/benchmarks/prepare_reduce/{corpus}/{shard}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    params:
        corpus=corpus_config,
        data=config["data"],
    script:
        "../scripts/prepare_reduce.py"


rule prepare_corpus:
    input:
        maps=corpus_map_stats,
        reduces=expand("results/prepare/{{corpus}}/reduce/{shard}.json", shard=SHARDS),
        train=expand(
            "results/prepare/{{corpus}}/reduce/train-{shard}.parquet", shard=SHARDS
        ),
        val=expand(
            "results/prepare/{{corpus}}/reduce/val-{shard}.parquet", shard=SHARDS
        ),
    output:
        shards=expand(
            "results/data/{{corpus}}/{split}/part-{shard}.parquet",
            split=SPLITS,
            shard=SHARDS,
        ),
        manifest="results/data/{corpus}/manifest.json",
        report="results/data/{corpus}/filter_report.csv",
    log:
        "results/logs/prepare_corpus/{corpus}.log",
    benchmark:
        "results/benchmarks/prepare_corpus/{corpus}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        attempt=job_attempt,
    params:
        corpus=corpus_publish_config,
        data=config["data"],
        parent=PARENT_JSON,
    script:
        "../scripts/prepare_corpus.py"
