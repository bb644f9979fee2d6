# Helpers shared by every rule file: config validation, names, paths and input functions.
# Rule files hold rules only.

import os
import sys
import time
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The package under src/ holds every stage's logic; jobs (local, conda or cluster) import it
# from the checkout through PYTHONPATH, so a conda env needs only the third-party packages.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p
)

from lmscaling.config import ConfigError, check_config, model_grid
from lmscaling.data import (
    CorpusError,
    corpus_spec_from_config,
    resolve_inputs,
    shard_names,
)

validate(config, workflow.source_path("../schemas/config.schema.yaml"))
try:
    check_config(config)
    MODELS = {shape.id: shape for shape in model_grid(config)}
    CORPORA = {
        name: corpus_spec_from_config(name, c) for name, c in config["corpora"].items()
    }
    # Missing files and empty globs stop the workflow here, before any job.
    CORPUS_INPUTS = {name: resolve_inputs(spec) for name, spec in CORPORA.items()}
except (ConfigError, CorpusError) as err:
    raise WorkflowError(f"Invalid configuration: {err}") from None

SPLITS = ["train", "val"]
SHARDS = shard_names(config["data"]["num_shards"])
TOKENIZERS = list(config["tokenizers"])
RESULTS = "results"
PARENT_JSON = f"{RESULTS}/mlflow/parent.json"


wildcard_constraints:
    corpus="[A-Za-z0-9][A-Za-z0-9._-]*",
    tokenizer="[A-Za-z0-9][A-Za-z0-9._-]*",
    split="train|val",
    shard="[0-9]{5}",
    model="L[0-9]+-D[0-9]+",


def job_attempt(wildcards, attempt):
    """The attempt number, exposed to job scripts as resources.attempt (MLflow tag)."""
    return attempt


def corpus_shards(corpus, split=None):
    """Parquet shards of one corpus, for one split or both."""
    splits = SPLITS if split is None else [split]
    return expand(
        "{results}/data/{corpus}/{split}/part-{shard}.parquet",
        results=RESULTS,
        corpus=corpus,
        split=splits,
        shard=SHARDS,
    )


def token_shards(tokenizer, split):
    """Token arrays of every corpus for one tokenizer and split."""
    return expand(
        "{results}/tokens/{tokenizer}/{corpus}/{split}/part-{shard}.bin",
        results=RESULTS,
        tokenizer=tokenizer,
        corpus=list(CORPORA),
        split=split,
        shard=SHARDS,
    )


def train_parquet_shards(wildcards):
    """Train-split Parquet shards of every corpus (tokenizers never see val)."""
    return [p for corpus in CORPORA for p in corpus_shards(corpus, "train")]


def corpus_raw_inputs(wildcards):
    """Raw input files of one corpus (so editing an input reruns its preparation)."""
    return [str(p) for p in CORPUS_INPUTS[wildcards.corpus]]


def model_outputs():
    """Evaluation files of every tokenizer × model."""
    return expand(
        "{results}/eval/{tokenizer}/{model}.json",
        results=RESULTS,
        tokenizer=TOKENIZERS,
        model=list(MODELS),
    )


def get_final_outputs():
    """Targets of `rule all`: the fit and its plots."""
    return [
        f"{RESULTS}/fit/scaling_law.json",
        f"{RESULTS}/fit/scaling_law.png",
        f"{RESULTS}/fit/scaling_law.svg",
    ]


def tracking_enabled():
    return bool(config["mlflow"]["enabled"])


def start_parent_run():
    """Create this invocation's MLflow parent run (main process, before any job).

    Runs from `onstart`, which Snakemake calls only when jobs are about to run, so a dry run or a
    run with nothing to do creates no run, and each invocation that runs jobs gets one parent.
    """
    if not tracking_enabled():
        return
    from lmscaling import tracking

    uri = tracking.resolve_tracking_uri(RESULTS, config["mlflow"]["tracking_uri"])
    try:
        info = tracking.start_parent(
            uri,
            config["experiment_name"],
            PARENT_JSON,
            params=config,
            run_name=f"workflow {time.strftime('%Y-%m-%d %H:%M:%S')}",
            tags={"lmscaling.config_hash": tracking.config_hash(config)},
        )
    except tracking.TrackingError as err:
        raise WorkflowError(f"MLflow tracking: {err}") from None
    logger.info(f"MLflow: parent run {info['parent_run_id']} in {uri}")


def finish_parent_run(status):
    """End the parent run (onsuccess/onerror) and attach the fit and its plots."""
    if not tracking_enabled() or not os.path.exists(PARENT_JSON):
        return
    from lmscaling import tracking

    artifacts = [f for f in get_final_outputs() if os.path.exists(f)]
    artifacts += [f"{RESULTS}/eval/points.csv"]
    tracking.finish_parent(
        PARENT_JSON, status, artifacts=[f for f in artifacts if os.path.exists(f)]
    )
