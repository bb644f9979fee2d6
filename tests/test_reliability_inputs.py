"""Hostile input (issue 10): bad configs, dangerous names and paths, untrusted files, and a
corpus larger than memory, a full disk and an unwritable results/.

Every bad config must stop the workflow at parse time, before any job, with a message naming
the key; names with dots, dashes and digits must never make a rule ambiguous; no config or
corpus string may reach a shell; checkpoints load without unpickling code; data preparation
runs in bounded memory; a full or read-only disk gives a clear error and leaves only complete
files. The memory test runs the data stage under a cgroup memory limit smaller than the corpus
(skipped when no memory cgroup can be created); ``LMSCALING_BIG=1`` makes its corpus 2.4 GB
instead of 800 MB. The disk tests mount a tmpfs (skipped when mounting is not permitted).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import REPO, TINY_CONFIG, run_snakemake
from snakemake.utils import validate

from lmscaling.config import ConfigError, ModelShape, check_config
from lmscaling.model import (
    GPT,
    CheckpointError,
    GPTConfig,
    count_parameters,
    load_checkpoint,
    save_checkpoint,
)
from lmscaling.points import check_eval_config
from lmscaling.schema import validate_schema
from lmscaling.train import ResumeError, load_resume

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
HOSTILE = 'it\'s "q" $(touch pwned); `touch pwned2` & x'
"""A directory name with spaces, both quotes, a command substitution, backticks, ';' and '&'."""


def tiny() -> dict:
    return yaml.safe_load(TINY_CONFIG.read_text())


def parse_time_checks(config: dict) -> None:
    """The checks workflow/rules/common.smk runs on the config before building any job."""
    validate_schema(config, SCHEMA)
    validate(config, str(SCHEMA))  # fills the defaults, as the workflow does
    check_config(config)
    check_eval_config(config)


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def no_pwned(*roots: Path) -> None:
    for root in roots:
        hits = [str(p) for p in root.rglob("pwned*")] if root.exists() else []
        assert not hits, f"a shell ran a config string: {hits}"


# ----------------------------------------------------------------------------- config


def _set(path: str, value):
    """An edit setting the dotted ``path`` (e.g. "models.grid.0.n_head") to ``value``."""

    def edit(c):
        *parents, last = path.split(".")
        for p in parents:
            c = c[int(p)] if isinstance(c, list) else c[p]
        if isinstance(c, list):
            c[int(last)] = value
        else:
            c[last] = value

    return edit


def _del(path: str):
    def edit(c):
        *parents, last = path.split(".")
        for p in parents:
            c = c[p]
        del c[last]

    return edit


def _ladder(c, **ladder):
    """Replace the explicit grid by a depth ladder."""
    del c["models"]["grid"]
    c["models"]["ladder"] = ladder


SCHEMA_VIOLATIONS = {
    # wrong type
    "type-int-string": (_set("data.num_shards", "2"), "data.num_shards: '2' is not of type"),
    "type-bool-int": (_set("seed", True), "seed: True is not of type 'integer'"),
    "type-float-int": (_set("models.grid.0.n_layer", 1.5), "models.grid[0].n_layer: 1.5 is not"),
    "type-lr": (_set("train.lr", "fast"), "train.lr: 'fast' is not valid under any"),
    "type-paths": (
        lambda c: c["corpora"].update(w={"source": "files", "paths": "a.txt"}),
        "corpora.w.paths: 'a.txt' is not of type 'array'",
    ),
    "type-bool": (_set("mlflow.enabled", "yes"), "mlflow.enabled: 'yes' is not of type"),
    "type-section": (_set("fit", None), "fit: None is not of type 'object'"),
    # out of range
    "range-val-fraction": (_set("data.val_fraction", 1.5), "data.val_fraction: 1.5 is greater"),
    "range-shards": (_set("data.num_shards", 0), "data.num_shards: 0 is less than"),
    "range-vocab": (_set("tokenizers.bpe-512.vocab_size", 100), "tokenizers.bpe-512.vocab_size"),
    "range-context": (_set("models.context_length", 1), "models.context_length: 1 is less"),
    "range-confidence": (_set("fit.confidence", 1.0), "fit.confidence: 1.0 is greater than or"),
    "range-beta2": (_set("train.beta2", 1.0), "train.beta2: 1.0 is greater than or equal"),
    "range-fraction": (_set("train.checkpoint_fractions", [1.5]), "train.checkpoint_fractions[0]"),
    "range-ladder-repeat": (
        lambda c: _ladder(c, depths=[2, 2], aspect_ratio=16, head_dim=16),
        "models.ladder.depths: [2, 2] has non-unique elements",
    ),
    # enums
    "enum-schedule": (_set("train.schedule", "linear"), "train.schedule: 'linear' is not one of"),
    "enum-norm": (_set("models.norm", "batchnorm"), "models.norm: 'batchnorm' is not one of"),
    "enum-source": (_set("corpora.stdlib.source", "web"), "corpora.stdlib.source: 'web' is not"),
    "enum-bos": (_set("eval.bos", "bos"), "eval.bos: 'bos' is not one of"),
    "enum-axes": (_set("fit.axes", ["X"]), "fit.axes[0]: 'X' is not one of"),
    "enum-mode": (_set("mlflow.mode", "sometimes"), "mlflow.mode: 'sometimes' is not one of"),
    # non-finite numbers (a NaN passes every JSON-schema range check)
    "nan-lr": (_set("train.lr", float("nan")), "train.lr: nan is not a finite number"),
    "inf-tokens": (_set("train.tokens", float("inf")), "train.tokens: inf is not a finite"),
    # missing required keys
    "missing-vocab": (_del("tokenizers.bpe-512.vocab_size"), "tokenizers.bpe-512.vocab_size: re"),
    "missing-shards": (_del("data.num_shards"), "data.num_shards: required key is missing"),
}

UNKNOWN_KEYS = {
    "top": (lambda c: c.update(seeed=1), "seeed"),
    "corpora.<name>": (_set("corpora.stdlib.min_chr", 5), "corpora.stdlib.min_chr"),
    "corpora.<name>.clean": (_set("corpora.stdlib.clean", {"nfkc": True}), ".clean.nfkc"),
    "corpora.<name>.quality": (_set("corpora.stdlib.quality", {"c5": True}), ".quality.c5"),
    "corpora.<name>.dedup.near": (
        _set("corpora.stdlib.dedup", {"near": {"threshhold": 0.8}}),
        "corpora.stdlib.dedup.near.threshhold",
    ),
    "corpora.<name>.remote[0]": (
        _set("corpora.stdlib.remote", [{"url": "https://x.org/a.txt", "sha256": "0" * 64, "x": 1}]),
        "corpora.stdlib.remote[0].x",
    ),
    "tokenizers.<name>": (_set("tokenizers.bpe-512.vocab", 512), "tokenizers.bpe-512.vocab"),
    "models": (_set("models.layers", 2), "models.layers"),
    "models.grid[i]": (_set("models.grid.1.heads", 2), "models.grid[1].heads"),
    "train": (_set("train.learning_rate", 0.1), "train.learning_rate"),
    "train.lr.power_law": (
        _set("train.lr", {"power_law": {"value": 1e-3, "N_ref": 1e5, "exponent": -0.2, "k": 1}}),
        "train.lr.power_law.k",
    ),
    "eval": (_set("eval.strides", 8), "eval.strides"),
    "fit": (_set("fit.bootstraps", 10), "fit.bootstraps"),
    "mlflow": (_set("mlflow.uri", "x"), "mlflow.uri"),
    "data": (_set("data.shards", 3), "data.shards"),
}


def parse_time_error(edit) -> str:
    """The ConfigError message of the parse-time checks on the tiny config changed by ``edit``."""
    config = tiny()
    edit(config)
    with pytest.raises(ConfigError) as err:
        parse_time_checks(config)
    return str(err.value)


@pytest.mark.parametrize("case", list(SCHEMA_VIOLATIONS))
def test_schema_violation_names_the_key(case):
    edit, message = SCHEMA_VIOLATIONS[case]
    assert message in parse_time_error(edit)


@pytest.mark.parametrize("level", list(UNKNOWN_KEYS))
def test_unknown_key_at_every_level_names_it(level):
    edit, key = UNKNOWN_KEYS[level]
    assert f"{key}: unknown key (allowed: " in parse_time_error(edit)


def test_every_violation_is_reported_on_its_own_line():
    config = tiny()
    config["train"]["learning_rate"] = 0.1
    config["data"]["val_fraction"] = 2
    config["models"]["grid"][0]["n_head"] = "one"
    with pytest.raises(ConfigError) as err:
        validate_schema(config, SCHEMA)
    lines = str(err.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "data.val_fraction",
        "models.grid[0].n_head",
        "train.learning_rate",
    ]


def test_a_key_given_twice_names_the_file_and_line(tmp_path):
    from lmscaling.schema import check_unique_keys

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  tokens: 120000\n  lr: 0.004\n  tokens: 5000\nseed: 1\n")
    with pytest.raises(ConfigError) as err:
        check_unique_keys(path)
    assert str(err.value) == (
        f"{path}:4: key 'tokens' repeats the key of line 2 in the same mapping (YAML would keep "
        "only the last)"
    )
    path.write_text("a: {tokens: 1}\nb: {tokens: 1}\nc: &x {k: 1}\nd:\n  <<: *x\n  k: 2\n")
    check_unique_keys(path)  # the same key in two mappings, a merge key: fine
    path.write_text("z:\n  ? [1, 2]\n  : a\n  b: 1\n")
    check_unique_keys(path)  # a complex key is the schema's to refuse


def test_a_number_yaml_reads_as_text_gets_its_spelling():
    """PyYAML (YAML 1.1) reads 1e9 and 2e4 as strings: the message says how to write them."""
    config = tiny()
    edits = yaml.safe_load("tokens: 2e4\ncompute: [1e19, 3.25e9]\nlr: 3e-3")
    config["train"].update(edits, tokens_per_parameter=None)
    assert edits["tokens"] == "2e4" and edits["lr"] == "3e-3"
    with pytest.raises(ConfigError) as err:
        validate_schema(config, SCHEMA)
    message = str(err.value)
    assert (
        "train.tokens: '2e4' is not of type 'integer', 'null' (YAML reads 2e4 as text, not "
        "a number: write 20000)" in message
    )
    assert (
        "train.compute[0]: '1e19' is not of type 'number' (YAML reads 1e19 as text, not a "
        "number: write 1.0e+19)" in message
    )
    assert "write 3.25e+09)" in message and "write 3.0e-03)" in message
    assert yaml.safe_load("[20000, 1.0e+19, 3.25e+09, 3.0e-03]") == [20000, 1e19, 3.25e9, 3e-3]


def test_integral_floats_become_ints_before_any_job():
    """JSON Schema counts 2.0 as an integer; the jobs' own checks (and range()) do not. Such a
    float where an integer is wanted reaches the jobs as an int, whatever form the key takes."""
    config = tiny()
    config["seed"] = 1337.0
    config["models"]["context_length"] = 64.0
    config["models"]["mlp_ratio"] = 4.0
    config["models"]["grid"][0]["n_layer"] = 1.0
    config["train"].update(
        tokens=1.2e5, batch_size=16.0, log_every=5.0, resume_every=20.0, micro_batch_size=8.0
    )
    config["eval"]["batch_size"] = 32.0
    parse_time_checks(config)
    values = [
        config["seed"],
        config["models"]["context_length"],
        config["models"]["mlp_ratio"],
        config["models"]["grid"][0]["n_layer"],
        *(config["train"][k] for k in ("tokens", "batch_size", "log_every", "resume_every")),
        config["train"]["micro_batch_size"],
        config["eval"]["batch_size"],
    ]
    assert values == [1337, 64, 4, 1, 120000, 16, 5, 20, 8, 32]
    assert all(type(v) is int for v in values)
    assert type(config["train"]["lr"]) is float  # a number key keeps its float


def test_a_fractional_value_of_an_integer_key_is_refused():
    config = tiny()
    config["train"]["log_every"] = 2.5
    config["train"]["batch_size"] = 16.5
    with pytest.raises(ConfigError) as err:
        validate_schema(config, SCHEMA)
    lines = str(err.value).splitlines()
    assert lines[0].startswith("train.batch_size: 16.5 is not valid under any of the given")
    assert lines[1] == "train.log_every: 2.5 is not of type 'integer'"


def test_a_scale_rule_needs_exactly_one_form():
    config = tiny()
    config["train"]["lr"] = {}
    config["train"]["batch_size"] = {
        "table": [{"max_N": None, "value": 16}],
        "power_law": {"value": 16, "N_ref": 1e5, "exponent": 0.5},
    }
    with pytest.raises(ConfigError) as err:
        validate_schema(config, SCHEMA)
    assert str(err.value).splitlines() == [
        "train.batch_size: needs exactly one of the keys power_law, table",
        "train.lr: needs exactly one of the keys power_law, table",
    ]


def test_a_quoted_number_and_a_yaml_boolean_get_their_hints():
    config = tiny()
    config["train"]["tokens_per_parameter"] = "20"
    config["train"]["tokens"] = None
    config["train"].update(yaml.safe_load("precision: off\ndevice: no"))
    with pytest.raises(ConfigError) as err:
        validate_schema(config, SCHEMA)
    boolean = " (YAML reads an unquoted yes, no, on or off as a boolean: write text in quotes)"
    assert str(err.value).splitlines() == [
        "train.device: False is not of type 'string'" + boolean,
        "train.precision: False is not one of ['auto', 'bf16', 'fp32']" + boolean,
        "train.tokens_per_parameter: '20' is not of type 'number', 'null' (a number in quotes "
        "is text: write 20 without them)",
    ]


GRID = [{"n_layer": 1, "d_model": 16, "n_head": 1}]
IMPOSSIBLE = {
    "d_model-not-divisible": (
        lambda c: c["models"]["grid"].append({"n_layer": 1, "d_model": 30, "n_head": 4}),
        "models.grid[3]: d_model (30) is not divisible by n_head (4)",
    ),
    "odd-head-dim-rope": (
        lambda c: c["models"]["grid"].append({"n_layer": 1, "d_model": 30, "n_head": 2}),
        "models.grid[3]: head dimension d_model/n_head = 15 must be even",
    ),
    "ladder-head-dim": (
        lambda c: _ladder(c, depths=[1, 3], aspect_ratio=16, head_dim=32),
        "models.ladder.depths[0]: d_model = 1 x aspect_ratio 16 = 16 is not a multiple",
    ),
    "grid-and-ladder": (
        _set("models.ladder", {"depths": [1], "aspect_ratio": 16, "head_dim": 16}),
        "models: give exactly one of models.grid",
    ),
    "duplicate-shape": (
        lambda c: c["models"]["grid"].append(dict(c["models"]["grid"][1])),
        "models.grid[3]: model id L2-D32 repeats models.grid[1]",
    ),
    "duplicate-id-other-heads": (
        lambda c: c["models"]["grid"].append({"n_layer": 2, "d_model": 64, "n_head": 2}),
        "models.grid[3]: model id L2-D64 repeats models.grid[2]",
    ),
    "duplicate-compute-tag": (
        lambda c: c["train"].update(tokens=None, compute=[1e15, 1.0001e15]),
        "train.compute: budgets 1e+15 and 1.0001e+15 both give model id L1-D16-C1e15",
    ),
    "compute-below-one-token": (
        lambda c: c["train"].update(tokens=None, compute=[1000.0]),
        "train.compute: token budget at N = 3120 is 0 (< 1 token) (model L1-D16-C1e3)",
    ),
    "vocab-too-small-for-specials": (
        _set("tokenizers.bpe-512", {"vocab_size": 258, "bos": True, "pad": True}),
        "tokenizers.bpe-512.vocab_size: 258 is below 259",
    ),
    "vocab-beyond-uint32": (
        _set("tokenizers.bpe-512.vocab_size", 2**32 + 1),
        "tokenizers.bpe-512.vocab_size: ids must fit uint32",
    ),
    "eval-context-above-model": (
        _set("eval.context_length", 65),
        "eval.context_length: 65 exceeds the models' context length 64",
    ),
    "eval-stride-above-context": (
        _set("eval.stride", 65),
        "eval.stride: 65 exceeds the evaluation context length 64",
    ),
    "micro-batch-not-dividing": (
        _set("train.micro_batch_size", 5),
        "train.micro_batch_size: 5 does not divide the batch size 16 of model L1-D16",
    ),
    # DDP: each of train.gpus ranks runs micro-batches of the batch (caught before any job,
    # not when the training job starts)
    "micro-batch-times-gpus-not-dividing": (
        lambda c: c["train"].update(device="auto", gpus=4, micro_batch_size=8),
        "train.micro_batch_size: 8 x train.gpus 4 does not divide the batch size 16 of model "
        "L1-D16",
    ),
    "gpus-not-dividing": (
        lambda c: c["train"].update(device="cuda", gpus=3),
        "train.gpus: 3 does not divide the batch size 16 of model L1-D16",
    ),
    "checkpoint-names-collide": (
        _set("train.checkpoint_fractions", [0.5, 0.50000001]),
        "train.checkpoint_fractions: must be numbers in (0, 1) with distinct checkpoint names",
    ),
    "two-budget-rules": (
        _set("train.tokens_per_parameter", 20),
        "train: give exactly one token budget rule",
    ),
}


@pytest.mark.parametrize("case", list(IMPOSSIBLE))
def test_impossible_config_names_the_key(case):
    edit, message = IMPOSSIBLE[case]
    assert message in parse_time_error(edit)


def test_odd_head_dim_is_fine_with_learned_positions_and_limits_are_inclusive():
    config = tiny()
    config["models"]["position"] = "learned"
    config["models"]["grid"].append({"n_layer": 1, "d_model": 30, "n_head": 2})
    config["tokenizers"]["bpe-512"].update(vocab_size=259, bos=True, pad=True)
    config["eval"].update(context_length=64, stride=64)
    config["train"]["micro_batch_size"] = 8
    parse_time_checks(config)


def test_parse_time_parameter_count_matches_the_model():
    for n_layer, d_model, n_head, ratio in [(1, 16, 1, 4), (3, 64, 4, 4), (2, 48, 3, 3)]:
        cfg = GPTConfig(300, 32, n_layer, d_model, n_head, mlp_ratio=ratio)
        expected = count_parameters(cfg)["N"]
        assert ModelShape(n_layer, d_model, n_head).n_params(ratio) == expected
        assert GPT(cfg).param_counts()["N"] == expected


def dry_run(tmp_path: Path, config: dict, *targets: str) -> subprocess.CompletedProcess:
    work = tmp_path / "work"
    path = write_config(tmp_path / "config.yaml", config)
    return run_snakemake(work, "-n", *targets, config=path, check=False)


DRY_RUN_REJECTIONS = {
    "schema-type": (_set("train.lr", "fast"), "train.lr: 'fast' is not valid under any"),
    "unknown-nested": (_set("corpora.stdlib.min_chr", 5), "corpora.stdlib.min_chr: unknown key"),
    "grid": (
        lambda c: c["models"]["grid"].append({"n_layer": 1, "d_model": 30, "n_head": 4}),
        "models.grid[3]: d_model (30) is not divisible by n_head (4)",
    ),
    "duplicate-id": (
        lambda c: c["models"]["grid"].append(dict(c["models"]["grid"][0])),
        "models.grid[3]: model id L1-D16 repeats models.grid[0]",
    ),
    "reserved-tokenizer": (
        lambda c: c["tokenizers"].update({"points.parquet": {"vocab_size": 300}}),
        "tokenizers.points.parquet: the name 'points.parquet' is reserved",
    ),
    "shell-corpus-name": (
        lambda c: c["corpora"].update({"$(touch pwned); x": c["corpora"]["urllib"]}),
        "corpora.$(touch pwned); x: name '$(touch pwned); x' must match",
    ),
    "escaping-tokenizer": (
        lambda c: c["tokenizers"].update({"../../x": {"vocab_size": 300}}),
        "tokenizers.../../x: name '../../x' must match",
    ),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(DRY_RUN_REJECTIONS))
def test_workflow_rejects_bad_config_before_any_job(tmp_path, case):
    edit, message = DRY_RUN_REJECTIONS[case]
    config = tiny()
    edit(config)
    work = tmp_path / "work"
    path = write_config(tmp_path / "config.yaml", config)
    proc = run_snakemake(work, config=path, check=False)  # a real run, not a dry one
    assert proc.returncode != 0
    assert f"Invalid configuration: {message}" in proc.stderr
    assert "Failed validating" not in proc.stderr  # one line, not a dump of the schema
    assert not (work / "results").exists()
    assert "rule prepare_map" not in proc.stderr + proc.stdout
    no_pwned(tmp_path, REPO)


# ----------------------------------------------------------------------------- names


BAD_NAMES = [
    "my corpus",
    "it's",
    'a"b',
    "$(touch pwned)",
    "`id`",
    "a;b",
    "a&b",
    "a|b",
    "../evil",
    "a/b",
    "..",
    "a..b",
    ".hidden",
    "-rf",
    "a\nb",
    "ab\n",
    "naïve",
    "",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_dangerous_names_are_rejected_naming_the_key(name):
    config = tiny()
    config["corpora"][name] = config["corpora"].pop("stdlib")
    with pytest.raises(ConfigError, match=re.escape(f"corpora.{name}: name {name!r}")):
        parse_time_checks(config)
    config = tiny()
    config["tokenizers"][name] = config["tokenizers"].pop("bpe-512")
    with pytest.raises(ConfigError, match=re.escape(f"tokenizers.{name}: name {name!r}")):
        parse_time_checks(config)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(experiment_name="../x"), "experiment_name: name '../x' must match"),
        (
            _set("eval.heldout_corpora", ["../urllib"]),
            "eval.heldout_corpora: '../urllib' is not a corpus",
        ),
        (
            lambda c: c["corpora"].update({"manifest.json": c["corpora"].pop("urllib")}),
            "corpora.manifest.json: the name 'manifest.json' is reserved",
        ),
        (
            lambda c: c["tokenizers"].update({"points.csv": {"vocab_size": 300}}),
            "tokenizers.points.csv: the name 'points.csv' is reserved",
        ),
        (
            lambda c: c["corpora"].update({"STDLIB": c["corpora"]["urllib"]}),
            "corpora.STDLIB: differs from corpora.stdlib only in letter case",
        ),
    ],
)
def test_names_that_would_escape_or_collide_are_rejected(edit, message):
    config = tiny()
    edit(config)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_time_checks(config)


def planned_outputs(text: str) -> dict[str, set[str]]:
    """{rule: outputs} of the jobs a ``snakemake -n`` run lists."""
    jobs: dict[str, set[str]] = {}
    rule = None
    for line in text.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            rule = m.group(1)
            jobs.setdefault(rule, set())
        elif (m := re.match(r"^\s+output: (.*)$", line)) and rule:
            jobs[rule].update(m.group(1).split(", "))
    return jobs


@pytest.mark.e2e
def test_names_with_dots_dashes_and_digits_plan_the_right_jobs(tmp_path):
    config = tiny()
    config["corpora"] = {
        "v1.5": config["corpora"]["stdlib"],
        "v1.5-x_2": config["corpora"]["urllib"],
    }
    config["eval"]["heldout_corpora"] = ["v1.5-x_2"]
    config["tokenizers"] = {"bpe-2k": {"vocab_size": 300}, "bpe-2k.v2": {"vocab_size": 320}}
    config["models"]["grid"] = [
        {"n_layer": 4, "d_model": 128, "n_head": 4},
        {"n_layer": 1, "d_model": 16, "n_head": 1},
    ]
    proc = dry_run(tmp_path, config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    assert "Ambiguous" not in text
    jobs = planned_outputs(text)
    toks, models, corpora = ["bpe-2k", "bpe-2k.v2"], ["L4-D128", "L1-D16"], ["v1.5", "v1.5-x_2"]
    assert jobs["train_model"] == {
        f"results/models/{t}/{m}/{f}"
        for t in toks
        for m in models
        for f in ("model.pt", "metrics.csv", "summary.json", "checkpoints/frac-0.5.pt")
    }
    assert jobs["evaluate"] == {f"results/eval/{t}/{m}.json" for t in toks for m in models}
    assert {p for p in jobs["prepare_corpus"] if p.endswith("manifest.json")} == {
        f"results/data/{c}/manifest.json" for c in corpora
    }
    assert jobs["tokenize"] == {
        f"results/tokens/{t}/{c}/{s}/part-{n}.{e}"
        for t in toks
        for c in corpora
        for s in ("train", "val")
        for n in ("00000", "00001")
        for e in ("bin", "json")
    }
    assert jobs["train_tokenizer"] == {
        f"results/tokenizers/{t}/{f}" for t in toks for f in ("tokenizer.json", "train_info.json")
    }
    assert not (tmp_path / "work" / "results").exists()


# ----------------------------------------------------------------------------- trust


def _python_sources() -> list[Path]:
    files = sorted((REPO / "src").rglob("*.py")) + sorted((REPO / "workflow").rglob("*.py"))
    return [f for f in files if "egg-info" not in str(f)]


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_every_torch_load_is_weights_only():
    loads = []
    for path in _python_sources():
        for node, name in _calls(ast.parse(path.read_text(), str(path))):
            if name == "torch.load":
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value
                loads.append((path.name, node.lineno, ok))
            assert name not in ("pickle.load", "pickle.loads", "torch.jit.load"), (path, name)
            for k in node.keywords:
                if k.arg == "allow_pickle":
                    assert not (isinstance(k.value, ast.Constant) and k.value.value), path
    assert len(loads) >= 2  # model checkpoints and resume files
    assert all(ok for *_, ok in loads), loads


class _Payload:
    """Unpickling this creates a file: what a booby-trapped checkpoint would do."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    target = tmp_path / "pwned"
    model = GPT(GPTConfig(300, 16, 1, 16, 1))
    good = tmp_path / "good.pt"
    save_checkpoint(good, model, extra={"summary": {"N": 1}})
    assert load_checkpoint(good)[1] == {"summary": {"N": 1}}
    payload = torch.load(good, weights_only=True)
    payload["extra"] = {"summary": _Payload(str(target))}
    evil = tmp_path / "evil.pt"
    torch.save(payload, evil)
    with pytest.raises(CheckpointError, match="evil.pt: cannot read .*Weights only load failed"):
        load_checkpoint(evil)
    for size in (0, 100, 5000):  # truncated copies: one error naming the file
        cut = tmp_path / f"cut{size}.pt"
        cut.write_bytes(good.read_bytes()[:size])
        with pytest.raises(CheckpointError, match=f"cut{size}.pt: cannot read the checkpoint"):
            load_checkpoint(cut)
    for text in (b"hello", b"version https://git-lfs.github.com/spec/v1\n", b"<html>"):
        other = tmp_path / "other.pt"
        other.write_bytes(text)
        with pytest.raises(CheckpointError, match="not a torch checkpoint, it starts with b'"):
            load_checkpoint(other)
    with pytest.raises(CheckpointError, match="absent.pt: cannot read the checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    torch.save({"version": 1, "model": _Payload(str(target))}, tmp_path / "resume.pt")
    with pytest.raises(ResumeError, match="cannot read resume state"):
        load_resume(tmp_path / "resume.pt")
    assert not target.exists()


def test_no_config_string_reaches_a_shell():
    rule_files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    for path in rule_files:
        text = path.read_text()
        assert not re.search(r"^\s*shell:", text, re.M), f"{path.name} has a shell: directive"
        assert "shell(" not in text and "os.system" not in text, path.name
    runners = {"subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call"}
    runners |= {"subprocess.check_output"}
    seen = 0
    for path in _python_sources():
        for node, name in _calls(ast.parse(path.read_text(), str(path))):
            assert name not in ("os.system", "os.popen", "subprocess.getoutput"), (path, name)
            assert name not in ("subprocess.getstatusoutput", "os.execl", "os.execlp"), path
            if name in runners:
                seen += 1
                shell = [k for k in node.keywords if k.arg == "shell"]
                assert not shell, f"{path.name}:{node.lineno} passes shell="
                argv = node.args[0]
                # An argument vector (a list, or a name bound to one), never a command string.
                assert isinstance(argv, ast.List | ast.Name), f"{path.name}:{node.lineno}"
    assert seen >= 3  # git rev-parse, torchrun, the GPU-claim runner


@pytest.mark.e2e
def test_yaml_config_cannot_run_code(tmp_path):
    text = TINY_CONFIG.read_text().replace(
        "seed: 1\n", f'seed: !!python/object/apply:os.system ["touch {tmp_path}/pwned"]\n'
    )
    assert "python/object" in text
    (tmp_path / "c.yaml").write_text(text)
    proc = run_snakemake(tmp_path / "work", "-n", config=tmp_path / "c.yaml", check=False)
    assert proc.returncode != 0
    assert "Config file is not valid JSON or YAML" in proc.stdout + proc.stderr
    no_pwned(tmp_path, REPO)


def files_config(paths: list[str], **data) -> dict:
    """A one-corpus config ("web": plain-text paragraphs), for the data stage only."""
    return {
        "experiment_name": "hostile",
        "corpora": {
            "web": {"source": "files", "paths": paths, "text_unit": "paragraph", "min_chars": 10}
        },
        "data": {"val_fraction": 0.25, "num_shards": 2, **data},
        "tokenizers": {"bpe": {"vocab_size": 300}},
        "models": {"context_length": 16, "grid": GRID},
        "train": {"tokens": 1000},
        "eval": {},
        "fit": {},
        "mlflow": {"enabled": False},
    }


@pytest.mark.e2e
def test_input_path_with_braces_is_rejected_naming_the_key(tmp_path):
    folder = tmp_path / "in{x}"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha beta gamma delta epsilon zeta\n\n" * 20)
    proc = dry_run(tmp_path, files_config([str(folder / "*.txt")]))
    assert proc.returncode != 0
    message = f"corpora.web.paths: {folder / 'a.txt'}: Snakemake reads braces in an input path"
    output = proc.stdout + proc.stderr  # Snakemake prints parse errors on stdout
    assert f"Invalid configuration: {message}" in output
    assert "WildcardError" not in output
    remote = files_config([])
    del remote["corpora"]["web"]["paths"]
    remote["corpora"]["web"]["remote"] = [
        {"url": "https://example.org/{part}.txt", "sha256": "0" * 64}
    ]
    (tmp_path / "remote").mkdir()
    proc = dry_run(tmp_path / "remote", remote)
    output = proc.stdout + proc.stderr
    assert "Invalid configuration: corpora.web.remote: https://example.org/{part}.txt:" in output


@pytest.mark.e2e
def test_hostile_input_path_is_prepared_end_to_end(tmp_path):
    folder = tmp_path / "in" / HOSTILE
    folder.mkdir(parents=True)
    source = folder / "a b;$(touch pwned).txt"
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(words, 30)) + f" {i}" for i in range(200)]
    source.write_text("\n\n".join(docs))
    config = write_config(tmp_path / "c.yaml", files_config([str(source)]))
    work = tmp_path / "work"
    run_snakemake(work, "results/data/web/manifest.json", config=config)
    manifest = json.loads((work / "results/data/web/manifest.json").read_text())
    assert manifest["documents_in"] == manifest["documents_out"] == 200
    assert sum(manifest["documents"].values()) == 200
    rows = []
    for split in ("train", "val"):
        for part in sorted((work / "results/data/web" / split).glob("part-*.parquet")):
            rows += pq.read_table(part).to_pylist()
    assert sorted(r["text"] for r in rows) == sorted(docs)
    assert {r["source"].rsplit(":", 1)[0] for r in rows} == {str(source)}
    no_pwned(tmp_path, REPO, Path.cwd())


# ----------------------------------------------------------------------------- resources


def generate_corpus(path: Path, megabytes: int) -> tuple[int, int]:
    """Distinct ~2.7 kB plain-text documents separated by blank lines; (documents, text bytes)."""
    rng = np.random.default_rng(0)
    words = np.array(
        "the of and to in is that for it as with was on be by at this are from "
        "code loss model data token scaling law compute parameter".split()
    )
    pool = [" ".join(row) for row in words[rng.integers(0, len(words), size=(250, 600))]]
    target, written, docs, text_bytes = megabytes * 10**6, 0, 0, 0
    with open(path, "w") as fh:
        while written < target:
            block = [f"doc {docs + i}: {p}" for i, p in enumerate(pool)]
            text = "".join(d + "\n\n" for d in block)
            fh.write(text)
            docs += len(block)
            written += len(text)
            text_bytes += sum(len(d) for d in block)
    return docs, text_bytes


@contextlib.contextmanager
def memory_cgroup(limit: int):
    """A new memory cgroup (v2, else v1) limited to ``limit`` bytes; skips when not possible.

    Yields ``(procs file, peak anonymous bytes so far, OOM kills so far)``, the last two as
    functions; a thread samples the group's anonymous memory (page cache excluded) every 20 ms.
    """
    name = f"lmscaling-test-{os.getpid()}"
    v2, v1 = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/memory")
    if "memory" in _read(v2 / "cgroup.controllers").split():
        group, kind, anon_key = v2 / name, 2, "anon"
        with contextlib.suppress(OSError):
            (v2 / "cgroup.subtree_control").write_text("+memory")
    elif (v1 / "memory.limit_in_bytes").exists():
        group, kind, anon_key = v1 / name, 1, "total_rss"
    else:
        pytest.skip("no memory cgroup controller")
    try:
        group.mkdir()
    except OSError as err:
        pytest.skip(f"cannot create a memory cgroup: {err}")
    stop = threading.Event()
    try:
        try:
            if kind == 2:
                (group / "memory.max").write_text(str(limit))
                with contextlib.suppress(OSError):
                    (group / "memory.swap.max").write_text("0")
            else:
                (group / "memory.limit_in_bytes").write_text(str(limit))
                with contextlib.suppress(OSError):  # absent without swap accounting
                    (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
        except OSError as err:
            pytest.skip(f"cannot limit the memory cgroup: {err}")
        peak = [0]

        def stat(file: str) -> dict[str, int]:
            pairs = (line.split() for line in _read(group / file).splitlines())
            return {k: int(v) for k, v in pairs}

        def sample():
            while not stop.wait(0.02):
                peak[0] = max(peak[0], stat("memory.stat").get(anon_key, 0))

        def oom_kills() -> int:
            return stat("memory.events" if kind == 2 else "memory.oom_control").get("oom_kill", 0)

        threading.Thread(target=sample, daemon=True).start()
        yield group / "cgroup.procs", lambda: peak[0], oom_kills
    finally:
        stop.set()
        for _ in range(50):  # processes leave the group a moment after they exit
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@pytest.mark.e2e
def test_corpus_larger_than_memory_is_prepared_under_a_hard_limit(tmp_path):
    limit = 512 * 2**20
    megabytes = 2400 if os.environ.get("LMSCALING_BIG") == "1" else 800
    corpus = tmp_path / "corpus.txt"
    try:
        docs, text_bytes = generate_corpus(corpus, megabytes)
        assert corpus.stat().st_size > 1.4 * limit
        config = write_config(tmp_path / "c.yaml", files_config([str(corpus)], val_fraction=0.05))
        work = tmp_path / "work"
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
        cmd += ["--directory", str(work), "--configfile", str(config), "--cores", "1"]
        cmd += ["results/data/web/manifest.json"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        with memory_cgroup(limit) as (procs, peak, oom_kills):

            def join_group():
                procs.write_text(str(os.getpid()))

            started = time.monotonic()
            proc = subprocess.run(
                cmd, preexec_fn=join_group, env=env, capture_output=True, text=True, timeout=900
            )
            seconds = time.monotonic() - started
            peak_anon, kills = peak(), oom_kills()
        print(
            f"corpus {corpus.stat().st_size / 1e6:.0f} MB, {docs} documents; memory limit "
            f"{limit / 2**20:.0f} MiB (snakemake and its jobs); peak anonymous memory "
            f"{peak_anon / 2**20:.0f} MiB; OOM kills {kills}; {seconds:.1f} s"
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert kills == 0
        assert 0 < peak_anon <= limit < corpus.stat().st_size
        manifest = json.loads((work / "results/data/web/manifest.json").read_text())
        assert manifest["documents_in"] == sum(manifest["documents"].values()) == docs
        assert manifest["bytes_in"] == text_bytes == sum(manifest["bytes"].values())
        rows = sum(
            pq.read_metadata(p).num_rows for p in (work / "results/data/web").rglob("*.parquet")
        )
        assert rows == docs
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)  # gigabytes; do not keep them around


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *options: str):
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join([f"size={size}", *options])
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def assert_only_complete_files(results: Path) -> int:
    """Every file under ``results`` is whole: Parquet footers and data read, JSON parses, no
    temporary file left. Returns the number of data files checked."""
    checked = 0
    for path in results.rglob("*"):
        if not path.is_file():
            continue
        assert not path.name.endswith(".tmp"), f"temporary file left: {path}"
        if path.suffix == ".parquet":
            pq.read_table(path)
            checked += 1
        elif path.suffix == ".json":
            json.loads(path.read_text())
            checked += 1
    return checked


@pytest.mark.e2e
@pytest.mark.parametrize("size, stage", [("4m", "prepare_map"), ("31m", "prepare_reduce")])
def test_full_disk_fails_clearly_and_leaves_only_complete_files(tmp_path, size, stage):
    corpus = tmp_path / "corpus.txt"
    docs, _ = generate_corpus(corpus, 30)
    config = write_config(tmp_path / "c.yaml", files_config([str(corpus)]))
    target = "results/data/web/manifest.json"
    with tmpfs(tmp_path / "disk", size) as work:
        proc = run_snakemake(work, target, config=config, cores=1, check=False)
        assert proc.returncode != 0
        assert f"ERROR [{stage}]: no space left on the device writing " in proc.stderr
        assert f"Error in rule {stage}:" in proc.stderr
        assert not (work / target).exists()
        assert_only_complete_files(work / "results")
        if stage == "prepare_map":
            return
        # Space freed: the rerun completes from the complete files that were kept.
        subprocess.run(["mount", "-o", "remount,size=200m", str(work)], check=True)
        run_snakemake(work, target, config=config, cores=1)
        manifest = json.loads((work / target).read_text())
        assert manifest["documents_in"] == sum(manifest["documents"].values()) == docs
        assert assert_only_complete_files(work / "results") >= 8


@pytest.mark.e2e
def test_unwritable_results_stops_before_any_job(tmp_path):
    corpus = tmp_path / "corpus.txt"
    generate_corpus(corpus, 1)
    config = write_config(tmp_path / "c.yaml", files_config([str(corpus)]))
    target = "results/data/web/manifest.json"
    # results/ is a file
    work = tmp_path / "file"
    work.mkdir()
    (work / "results").write_text("not a directory\n")
    proc = run_snakemake(work, target, config=config, cores=1, check=False)
    assert proc.returncode != 0
    assert "results: exists but is not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr and "rule prepare_map" not in proc.stderr
    assert (work / "results").read_text() == "not a directory\n"
    # results/ is a read-only file system: a dry run works, a real run stops before any job
    with tmpfs(tmp_path / "ro" / "results", "1m", "ro") as results:
        work = results.parent
        proc = run_snakemake(work, "-n", target, config=config, cores=1, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        proc = run_snakemake(work, target, config=config, cores=1, check=False)
        assert proc.returncode != 0
        assert "results/ is not writable (Read-only file system): no job was started" in (
            proc.stderr
        )
        assert "rule prepare_map:" not in proc.stderr + proc.stdout
        assert list(results.iterdir()) == []
