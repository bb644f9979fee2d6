# lmscaling: a language-model scaling-law experiment, from raw text to fitted power laws.
#
# Output paths (everything under results/, which is git-ignored):
#   results/data/{corpus}/{split}/part-{shard}.parquet + manifest.json     prepare_corpus
#   results/tokenizers/{tokenizer}/tokenizer.json                         train_tokenizer
#   results/tokens/{tokenizer}/{corpus}/{split}/part-{shard}.bin + .json  tokenize
#   results/tokens/{tokenizer}/manifest.json (checksums, bytes/token)      tokenizer_stats
#   results/models/{tokenizer}/{model}/model.pt, metrics.csv, summary.json train_model
#   results/eval/{tokenizer}/{model}.json, results/eval/points.parquet    evaluate, collect_points
#   results/fit/scaling_law.json, .png, .svg                              fit_scaling_law
#   results/mlflow/ (SQLite store, parent.json), results/logs/, results/benchmarks/
#
# The default experiment is config/config.yaml; `--configfile FILE` replaces it (no merge).

import os

from snakemake.utils import min_version

min_version("9.0")


if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/tracking.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/fit.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),
        tokenizer_manifests(),
