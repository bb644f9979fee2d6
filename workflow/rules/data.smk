# Corpus preparation: raw files -> normalized, deduplicated, hash-split Parquet shards.


rule prepare_corpus:
    input:
        corpus_raw_inputs,
    output:
        shards=expand(
            "results/data/{{corpus}}/{split}/part-{shard}.parquet",
            split=SPLITS,
            shard=SHARDS,
        ),
        manifest="results/data/{corpus}/manifest.json",
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
        corpus=lambda w: config["corpora"][w.corpus],
        num_shards=config["data"]["num_shards"],
        val_fraction=config["data"]["val_fraction"],
        parent=PARENT_JSON,
    script:
        "../scripts/prepare_corpus.py"
