# Helpers shared by the rule files (config validation, names, paths, input functions).
# Rule files hold rules only.

import glob
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import yaml

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The package under src/ holds every stage's logic; jobs (local, conda or cluster) import it
# from the checkout, so a conda env needs only the third-party packages: `script:` jobs through
# sys.path (Snakemake hands this process's sys.path to each script), processes they start
# (torchrun workers) through PYTHONPATH, which the profiles keep inside conda environments
# (conda-not-block-search-path-envvars) and SLURM passes on to jobs (sbatch --export=ALL).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p)
)

from lmscaling.config import (
    MODEL_ID_RE,
    ConfigError,
    check_config,
    checkpoint_name,
    checkpoint_warnings,
    fit_plan_warnings,
    model_grid,
    rounding_warnings,
    sorted_keys,
    train_settings,
    training_flop,
)
from lmscaling.data import (
    CorpusError,
    corpus_spec_from_config,
    data_options_from_config,
    mixture_probabilities,
    plan_map_tasks,
    resolve_inputs,
    shard_names,
)
from lmscaling.points import check_eval_config, eval_sets, training_corpora
from lmscaling.schema import check_unique_keys, validate_schema

try:
    # A key given twice in a config file (YAML keeps the last one, silently).
    for path in workflow.configfiles:
        check_unique_keys(path)
    # Every violation on one line naming its key; then Snakemake's check fills the defaults.
    validate_schema(
        config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"
    )
    validate(config, workflow.source_path("../schemas/config.schema.yaml"))
    check_config(config)
    # Snakemake compares params by repr, which follows key order: with every mapping's keys
    # sorted, a config written in another order (a tool's yaml.dump) reruns nothing. The
    # order of corpora and tokenizers is kept (it orders the training mixture and the jobs).
    for section in list(config):
        if section in ("corpora", "tokenizers"):
            for name in config[section]:
                config[section][name] = sorted_keys(config[section][name])
        else:
            config[section] = sorted_keys(config[section])
    for warning in (
        fit_plan_warnings(config)
        + checkpoint_warnings(config)
        + rounding_warnings(config)
    ):
        logger.warning(f"Config: {warning}")
    # Snakemake lowers a job's resources to the run's limit without a word: a DDP job would
    # train on fewer GPUs than train.gpus.
    GPU_LIMIT = workflow.global_resources.get("gpu")
    GPU_LIMIT = getattr(GPU_LIMIT, "value", GPU_LIMIT)  # a Resource in Snakemake 9
    if (
        config["train"]["device"] != "cpu"
        and GPU_LIMIT is not None
        and GPU_LIMIT < config["train"]["gpus"]
    ):
        logger.warning(
            f"Config: train.gpus is {config['train']['gpus']}, but this run lets only "
            f"{GPU_LIMIT} GPU(s) be in use at once (--resources gpu=N, or `resources: gpu:` "
            f"of the profile): each training job gets {GPU_LIMIT}"
        )
    MODELS = {shape.id: shape for shape in model_grid(config)}
    CORPORA = {
        name: corpus_spec_from_config(name, c) for name, c in config["corpora"].items()
    }
    # Missing files and empty globs stop the workflow here, before any job.
    CORPUS_INPUTS = {name: resolve_inputs(spec) for name, spec in CORPORA.items()}
    for name, files in CORPUS_INPUTS.items():
        for f in files:
            key, where = ("remote", f.url) if f.url else ("paths", f.path)
            if "{" in where or "}" in where:
                raise ConfigError(
                    f"corpora.{name}.{key}: {where}: Snakemake reads braces in an input path "
                    "as wildcards; rename it, or link it under a name without braces"
                )
    # Input files grouped into map jobs (fixed at parse time; outputs do not depend on it).
    DATA_OPTIONS = data_options_from_config(config["data"])
    CORPUS_TASKS = {
        name: plan_map_tasks(files, DATA_OPTIONS.map_task_bytes)
        for name, files in CORPUS_INPUTS.items()
    }
    check_eval_config(config)
    # Held-out corpora (eval.heldout_corpora) are prepared and tokenized, never trained on.
    TRAIN_CORPORA = training_corpora(config)
    EVAL_SETS = eval_sets(config)
    # Sampling probability of each training corpus (corpora.<name>.weight, normalized).
    MIXTURE = mixture_probabilities({c: config["corpora"][c] for c in TRAIN_CORPORA})
except (ConfigError, CorpusError) as err:
    raise WorkflowError(f"Invalid configuration: {err}") from None

SPLITS = ["train", "val"]
SHARDS = shard_names(config["data"]["num_shards"])
TOKENIZERS = list(config["tokenizers"])
RESULTS = "results"
if os.path.lexists(RESULTS) and not os.path.isdir(RESULTS):
    raise WorkflowError(
        f"{RESULTS}: exists but is not a directory; every output goes under it"
    )
PARENT_JSON = f"{RESULTS}/mlflow/parent.json"
GPU_LOCKS = f"{RESULTS}/.gpu-locks"  # one lock file per GPU in use (lmscaling.gpus)


wildcard_constraints:
    corpus="[A-Za-z0-9][A-Za-z0-9._-]*",
    tokenizer="[A-Za-z0-9][A-Za-z0-9._-]*",
    split="train|val",
    shard="[0-9]{5}",
    task="[0-9]{5}",
    model=MODEL_ID_RE,


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


def token_shards(tokenizer, split, corpora=None):
    """Token arrays of the training corpora (or of `corpora`) for one tokenizer and split(s)."""
    return expand(
        "{results}/tokens/{tokenizer}/{corpus}/{split}/part-{shard}.bin",
        results=RESULTS,
        tokenizer=tokenizer,
        corpus=TRAIN_CORPORA if corpora is None else corpora,
        split=split,
        shard=SHARDS,
    )


def train_parquet_shards(wildcards):
    """Train-split Parquet shards of the training corpora (never val, never held-out corpora)."""
    return [p for corpus in TRAIN_CORPORA for p in corpus_shards(corpus, "train")]


def _raw_input(f):
    """A local input path, or a remote one through Snakemake's HTTP storage plugin."""
    return storage.http(f.url) if f.url else f.path


with open(workflow.source_path("../schemas/config.schema.yaml")) as fh:
    SCHEMA = yaml.safe_load(fh)


def _nested_defaults():
    """{section: {key: default}} of the corpus options given as mappings (clean, quality,
    dedup, extract), from the config schema."""
    options = SCHEMA["properties"]["corpora"]["additionalProperties"]["properties"]
    return {
        section: {
            k: v["default"]
            for k, v in options[section]["properties"].items()
            if "default" in v
        }
        for section in ("clean", "quality", "dedup", "extract")
    }


NESTED_DEFAULTS = _nested_defaults()


def corpus_config(wildcards):
    """A corpus's config without `weight` (a param of the data jobs).

    The weight matters to training only (train_model's `mixture` param): changing it reruns
    the training and what follows, not the preparation, tokenizer and tokenizing. In the
    mappings (clean, quality, dedup, extract) a value equal to its default is left out, and a
    mapping left empty with it: writing out a default (`clean: {nfc: true}`) reruns nothing.
    """
    out = {}
    for k, v in config["corpora"][wildcards.corpus].items():
        if k == "weight":
            continue
        if k in NESTED_DEFAULTS and isinstance(v, dict):
            defaults = NESTED_DEFAULTS[k]
            v = {
                kk: vv
                for kk, vv in v.items()
                if kk not in defaults or vv != defaults[kk]
            }
            if not v:
                continue
        out[k] = v
    return out


def corpus_publish_config(wildcards):
    """corpus_config, plus `heldout: true` for a held-out corpus (a param of prepare_corpus).

    A held-out corpus is scored on all of it, so either split may be empty; a training corpus
    needs both. A change of role reruns the check (and only that, for training corpora the
    param is unchanged).
    """
    out = corpus_config(wildcards)
    if wildcards.corpus in config["eval"].get("heldout_corpora", []):
        out["heldout"] = True
    return out


def corpus_tasks(corpus):
    """Map task ids of one corpus: "00000", "00001", ..."""
    return [f"{i:05d}" for i in range(len(CORPUS_TASKS[corpus]))]


def corpus_task_files(wildcards):
    """Input files of one map task, as dicts (lmscaling.data.InputFile.to_dict)."""
    return [f.to_dict() for f in CORPUS_TASKS[wildcards.corpus][int(wildcards.task)]]


def corpus_task_inputs(wildcards):
    """Files one map task reads: local paths, remote ones fetched by Snakemake HTTP storage.

    Editing a local input reruns its map job; a remote one is checked against its sha256 pin.
    """
    task = CORPUS_TASKS[wildcards.corpus][int(wildcards.task)]
    return [_raw_input(f) for f in task if f.path or f.url]


def corpus_map_outputs(wildcards):
    """Map outputs (Parquet) of one corpus, in task order."""
    return expand(
        "{results}/prepare/{corpus}/map/{task}.parquet",
        results=RESULTS,
        corpus=wildcards.corpus,
        task=corpus_tasks(wildcards.corpus),
    )


def corpus_map_stats(wildcards):
    """Map statistics (JSON) of one corpus, in task order."""
    return [p[: -len(".parquet")] + ".json" for p in corpus_map_outputs(wildcards)]


def corpus_neardup_input(wildcards):
    """The near-duplicate list of one corpus when its dedup.near is on, else nothing."""
    if CORPORA[wildcards.corpus].near_dedup is None:
        return []
    return [f"{RESULTS}/prepare/{wildcards.corpus}/neardup.parquet"]


def eval_set_shards(tokenizer):
    """{eval set name: token shards} for one tokenizer: "<corpus>/val" per training corpus,
    "<corpus>/all" (both splits) per held-out corpus (lmscaling.points.eval_sets)."""
    return {
        s.name: token_shards(tokenizer, list(s.splits), [s.corpus]) for s in EVAL_SETS
    }


def eval_token_shards(wildcards):
    """Token shards of every evaluation set of one tokenizer (input of rule evaluate)."""
    return [p for paths in eval_set_shards(wildcards.tokenizer).values() for p in paths]


def model_checkpoints(tokenizer, model):
    """{checkpoint name: file} of one model: the intermediate checkpoints, then "final"."""
    base = f"{RESULTS}/models/{tokenizer}/{model}"
    files = {name: f"{base}/checkpoints/{name}.pt" for name in checkpoint_names()}
    return {**files, "final": f"{base}/model.pt"}


def model_shape(wildcards):
    """One grid point as a plain dict (a param of train_model).

    Snakemake records a job's params in its metadata only when they are plain values (numbers,
    strings, lists, dicts): a dataclass is left out. This dict makes an edit of a grid point
    that keeps its id (e.g. its n_head) rerun that model (rerun trigger "params").
    """
    return asdict(MODELS[wildcards.model])


# The train settings resolved per model by size (a param per model: model_settings), so
# editing one row of an lr table reruns only the models that row reaches.
SIZE_RULED = ("tokens", "tokens_per_parameter", "compute", "lr", "batch_size")


def model_settings(wildcards):
    """D (tokens), lr and batch size of one grid point (config.train_settings): a param of
    train_model."""
    shape = MODELS[wildcards.model]
    n = shape.n_params(config["models"].get("mlp_ratio", 4))
    return train_settings(config["train"], n, shape.compute)


def train_params():
    """config["train"] as the param of train_model: without the rules resolved per model
    (model_settings) and resume_every (how often a resume file is written changes no output).
    decay_fraction acts only under the wsd schedule and gpus only off the CPU; elsewhere they
    are given at their schema defaults, so editing them reruns nothing."""
    train = {
        k: v
        for k, v in config["train"].items()
        if k not in SIZE_RULED + ("resume_every",)
    }
    defaults = SCHEMA["properties"]["train"]["properties"]
    if train.get("schedule") != "wsd":
        train["decay_fraction"] = defaults["decay_fraction"]["default"]
    if train.get("device") == "cpu":
        train["gpus"] = defaults["gpus"]["default"]
    return train


def eval_params():
    """config["eval"] as the param of evaluate, with context_length and stride written out at
    their defaults (the models' context length; stride = context length) given as null, so
    spelling out a default reruns nothing."""
    opts = dict(config["eval"])
    context = opts.get("context_length") or config["models"]["context_length"]
    if opts.get("context_length") == config["models"]["context_length"]:
        opts["context_length"] = None
    if opts.get("stride") == context:
        opts["stride"] = None
    return opts


def train_priority(wildcards):
    """Costliest training first (log10 of its estimated FLOP): the largest model starts at once
    instead of last, when it would run alone while the other cores idle."""
    vocab = config["tokenizers"][wildcards.tokenizer]["vocab_size"]
    return math.log10(training_flop(MODELS[wildcards.model], config, vocab))


def model_checkpoint_files(wildcards):
    """Every checkpoint file of one model (input of rule evaluate)."""
    return list(model_checkpoints(wildcards.tokenizer, wildcards.model).values())


def checkpoint_names():
    """Names of the intermediate checkpoints of every model, e.g. ["frac-0.5"]."""
    return [checkpoint_name(f) for f in config["train"]["checkpoint_fractions"]]


def model_outputs():
    """Evaluation files of every tokenizer × model."""
    return expand(
        "{results}/eval/{tokenizer}/{model}.json",
        results=RESULTS,
        tokenizer=TOKENIZERS,
        model=list(MODELS),
    )


def tokenizer_manifests():
    """Manifest (checksums, counts, bytes/token, vocabulary use) of every tokenizer's shards."""
    return expand(
        "{results}/tokens/{tokenizer}/manifest.json",
        results=RESULTS,
        tokenizer=TOKENIZERS,
    )


def tokenized_shards(wildcards):
    """Every token shard of one tokenizer: both splits of every corpus (rule tokenizer_stats)."""
    return token_shards(wildcards.tokenizer, SPLITS, list(CORPORA))


def get_final_outputs():
    """Targets of the default target (rule all), i.e. the fit (JSON) and its figures."""
    figures = ("scaling_law", "residuals", "isoflop")
    return [f"{RESULTS}/fit/scaling_law.json"] + [
        f"{RESULTS}/fit/{figure}.{ext}" for figure in figures for ext in ("png", "svg")
    ]


def check_results_writable():
    """Stop before the first job when results/ cannot be written (read-only, no permission).

    Called from `onstart`, so a dry run does not need results/ to be writable.
    """
    try:
        os.makedirs(RESULTS, exist_ok=True)
        with tempfile.TemporaryFile(dir=RESULTS):
            pass
    except OSError as err:
        raise WorkflowError(
            f"{RESULTS}/ is not writable ({err.strerror}): no job was started"
        ) from None


def remove_partial_files():
    """Delete what killed jobs left half-written beside the outputs of the jobs about to run.

    Writers (lmscaling.io.atomic_path) write ``.{name}.<random>.tmp`` beside an output and
    rename it into place, so a job killed mid-write (SIGKILL, power loss) leaves that file
    behind; no rule ever reads it. Called from `onstart`, once this invocation holds the locks
    of those outputs, so the temporary file of a job of another running invocation is never
    touched.
    """
    needrun = getattr(workflow.dag, "needrun_jobs", None)  # Snakemake's DAG, 9.x
    for job in needrun() if needrun else []:
        for output in job.output:
            folder, name = os.path.split(str(output))
            pattern = glob.escape(os.path.join(folder, f".{name}.")) + "*.tmp"
            for partial in glob.glob(pattern):
                logger.info(f"Removing {partial}, left by an interrupted job")
                os.remove(partial)


def tracking_enabled():
    """Whether this workflow tracks its runs in MLflow (config mlflow.enabled)."""
    return bool(config["mlflow"]["enabled"])


def start_parent_run():
    """Create this invocation's MLflow parent run (main process, before any job).

    Runs from `onstart`, which Snakemake calls only when jobs are about to run, so a dry run or a
    run with nothing to do creates no run, and each invocation that runs jobs gets one parent.
    Jobs find it through PARENT_JSON (a param of every rule), read when they start.
    """
    from lmscaling import tracking

    if not tracking_enabled():
        tracking.disable_parent(PARENT_JSON)  # jobs must not log into an older parent
        return
    opts = config["mlflow"]
    uri = tracking.resolve_tracking_uri(RESULTS, opts["tracking_uri"])
    try:
        info = tracking.start_parent(
            uri,
            config["experiment_name"],
            PARENT_JSON,
            params=config,
            run_name=f"workflow {time.strftime('%Y-%m-%d %H:%M:%S')}",
            tags={"lmscaling.config_hash": tracking.config_hash(config)},
            mode=opts["mode"],
            required=opts["required"],
            log_models=opts["log_models"],
        )
    except tracking.TrackingError as err:
        raise WorkflowError(
            f"MLflow tracking: {err}\nStart the server, fix mlflow.tracking_uri / "
            "MLFLOW_TRACKING_URI, or set mlflow.required: false to run offline and replay "
            "the records later (python -m lmscaling.replay)."
        ) from None
    if info["mode"] == "online":
        logger.info(f"MLflow: parent run {info['parent_run_id']} in {uri}")
    else:
        logger.info(
            f"MLflow: offline; records under {RESULTS}/mlflow/{info['records']}, "
            f"replayed into {uri} when the workflow ends"
        )


def finish_parent_run(status):
    """End the parent run (onsuccess/onerror) and attach the fit, its plots and the points table.

    Then every record of this invocation that is not in the store yet (offline: all of them)
    is replayed into it.
    """
    if not tracking_enabled() or not os.path.exists(PARENT_JSON):
        return
    from lmscaling import tracking

    artifacts = get_final_outputs() + [f"{RESULTS}/eval/points.csv"]
    # Runs of models (or tokenizers) no longer in the config stop being current.
    keep = {
        name: [
            tracking.job_key(name, {"tokenizer": t, "model": m})
            for t in TOKENIZERS
            for m in MODELS
        ]
        for name in ("train_model", "evaluate")
    }
    try:
        tracking.finish_parent(
            PARENT_JSON,
            status,
            artifacts=[f for f in artifacts if os.path.exists(f)],
            keep_jobs=keep,
        )
    except tracking.TrackingError as err:
        raise WorkflowError(
            f"MLflow tracking: {err}\nEvery output is complete; only tracking is missing."
        ) from None
