"""The default config, its schema and the cross-field checks."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from lmscaling.config import (
    ConfigError,
    check_config,
    checkpoint_warnings,
    fit_plan_warnings,
    model_grid,
    rounding_warnings,
    sorted_keys,
    token_budget,
    training_flop,
)
from lmscaling.model import GPTConfig, flops_per_token

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
CONFIGS = [REPO / "config" / "config.yaml", *sorted((REPO / "tests" / "configs").glob("*.yaml"))]


def load(path=REPO / "config" / "config.yaml"):
    return yaml.safe_load(Path(path).read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    config = load(path)
    validate(config, SCHEMA)
    check_config(config)


def test_default_grid_spans_more_than_a_decade():
    config = load()
    validate(config, SCHEMA)
    shapes = model_grid(config)
    ids = [s.id for s in shapes]
    assert ids == ["L1-D32", "L2-D32", "L2-D48", "L3-D64", "L4-D80"]
    n = [s.n_params_approx for s in shapes]
    assert n == sorted(n)
    assert n[-1] / n[0] >= 10**1.3


def test_schema_fills_defaults_and_rejects_unknown_keys():
    config = load()
    del config["train"]["lr"]
    validate(config, SCHEMA)
    assert config["train"]["lr"] == 0.003
    bad = load()
    bad["train"]["learning_rate"] = 1.0
    with pytest.raises(WorkflowError, match="learning_rate"):
        validate(bad, SCHEMA)
    bad = load()
    bad["data"]["val_fraction"] = 1.5
    with pytest.raises(WorkflowError):
        validate(bad, SCHEMA)
    config = load()
    del config["train"]["precision"]
    validate(config, SCHEMA)
    assert config["train"]["precision"] == "auto"
    bad = load()
    bad["train"]["precision"] = "fp16"
    with pytest.raises(WorkflowError, match="fp16"):
        validate(bad, SCHEMA)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda c: c["models"]["grid"].append({"n_layer": 1, "d_model": 30, "n_head": 4}),
            r"models.grid\[5\]: d_model \(30\) is not divisible by n_head \(4\)",
        ),
        (
            lambda c: c["models"]["grid"].append({"n_layer": 1, "d_model": 30, "n_head": 2}),
            "head dimension",
        ),
        (
            lambda c: c["models"]["grid"].append({"n_layer": 1, "d_model": 32, "n_head": 4}),
            r"models.grid\[5\]: model id L1-D32 repeats models.grid\[0\]",
        ),
        (lambda c: c["train"].update(tokens_per_parameter=20), "exactly one token budget"),
        (lambda c: c["train"].update(tokens=None), "exactly one token budget"),
        (
            lambda c: c["corpora"].update({"../evil": {"source": "files", "paths": ["x"]}}),
            r"corpora.../evil",
        ),
        (lambda c: c["tokenizers"].update({"a b": {"vocab_size": 300}}), "tokenizers.a b"),
        (
            lambda c: c["train"].update(tokens=100),
            r"train.tokens: model L1-D32 gets D = 100 tokens, less than one optimizer step "
            r"\(batch_size 32 x models.context_length 128 = 4096 tokens\)",
        ),
        (
            lambda c: c["train"].update(tokens=None, compute=[1e7, 1e9]),
            r"train.compute: model L1-D32-C1e7 gets D = 135 tokens",
        ),
        (
            lambda c: c["train"].update(
                lr={"power_law": {"value": 1e300, "N_ref": 1, "exponent": 10}}
            ),
            r"train.lr.power_law: gives inf at N = 12384; the value must be a finite number "
            r"above 0 \(model L1-D32\)",
        ),
        (
            lambda c: c["train"].update(
                batch_size={"power_law": {"value": 1e300, "N_ref": 1e-300, "exponent": 2}}
            ),
            r"train.batch_size.power_law: gives inf",
        ),
        (
            lambda c: c["train"].update(schedule="wsd", warmup_fraction=0.9, decay_fraction=0.9),
            r"train.decay_fraction: warmup \(0.9\) and decay \(0.9\) of the WSD schedule",
        ),
        (
            lambda c: c["models"].update(
                grid=None, ladder={"depths": [2, 4], "aspect_ratio": 30, "head_dim": 15}
            ),
            r"models.ladder.head_dim: head dimension d_model/n_head = 15 must be even",
        ),
        (
            lambda c: c["train"].update(tokens=None, compute=[1.0e9, 1.0001e9]),
            r"train.compute: budgets 1e\+09 and 1.0001e\+09 both give model id L1-D32-C1e9",
        ),
    ],
)
def test_cross_field_errors_name_the_key(edit, message):
    config = copy.deepcopy(load())
    edit(config)
    with pytest.raises(ConfigError, match=message):
        check_config(config)


def test_fit_plan_warnings_when_no_axis_can_be_fitted():
    config = load()
    validate(config, SCHEMA)
    assert fit_plan_warnings(config) == []  # the demo: N and C vary, D is fixed
    config["fit"]["axes"] = ["D"]
    (warning,) = fit_plan_warnings(config)
    assert "fit.axes ['D']: every model of the grid has the same D (5 model(s))" in warning
    config["train"].update(tokens=None, tokens_per_parameter=20)
    assert fit_plan_warnings(config) == []  # D = 20 N now varies with N
    one = copy.deepcopy(config)
    one["models"]["grid"] = one["models"]["grid"][:1]
    one["fit"]["axes"] = ["N", "D", "C"]
    assert "same N, D, C (1 model(s))" in fit_plan_warnings(one)[0]
    iso = copy.deepcopy(config)  # one IsoFLOP budget: N and D vary, C does not
    iso["train"].update(tokens_per_parameter=None, compute=[1e13])
    assert fit_plan_warnings(iso) == []
    iso["fit"]["axes"] = ["C"]
    assert "same C (5 model(s))" in fit_plan_warnings(iso)[0]
    iso["train"]["compute"] = [1e13, 1e14]
    assert fit_plan_warnings(iso) == []


def test_checkpoint_fractions_that_collapse_are_warned_about():
    config = load()
    validate(config, SCHEMA)
    config["train"]["checkpoint_fractions"] = [0.1, 0.2, 0.9]
    assert checkpoint_warnings(config) == []  # the demo's D: hundreds of steps
    config["train"]["tokens"] = 4 * 32 * 128  # 4 steps of 32 x 128 tokens
    (warning,) = checkpoint_warnings(config)
    assert warning == (
        "train.checkpoint_fractions: model L1-D32 trains only 4 optimizer steps: frac-0.1 "
        "falls on the step of the next fraction; frac-0.9 on the last step (the final model); "
        "frac-0.2 after step 1, at 0.25 of D; these checkpoints repeat a point or miss their "
        "fraction (5 model(s) so)"
    )
    config["train"]["checkpoint_fractions"] = [0.25, 0.5]
    assert checkpoint_warnings(config) == []
    # frac-0.01 of 4 steps: after step 1, at a quarter of D
    config["train"]["checkpoint_fractions"] = [0.01, 0.5]
    (warning,) = checkpoint_warnings(config)
    assert "frac-0.01 after step 1, at 0.25 of D" in warning and "frac-0.5" not in warning


def test_budgets_overshot_by_step_rounding_are_warned_about():
    config = load()
    validate(config, SCHEMA)
    assert rounding_warnings(config) == []  # 489 steps: 0.15% above 2M tokens
    # D = N / 2: L1-D32 needs 1.51 steps of 32 x 128 tokens (takes 2), L2-D32 3.02 (takes 4)
    config["train"].update(tokens=None, tokens_per_parameter=0.5)
    (warning,) = rounding_warnings(config)
    assert warning.startswith(
        "train.tokens_per_parameter: 2 model(s) train on more than 10% above their token "
        "budget, rounded up to whole optimizer steps of 4096 tokens"
    )
    assert "worst: L2-D32, D = 16384 for a budget of 12368 (1.32x" in warning
    config["train"]["tokens_per_parameter"] = 20  # 61+ steps each: within 10%
    assert rounding_warnings(config) == []


def test_sorted_keys_sorts_every_mapping_and_keeps_lists():
    value = {"b": 1, "a": {"d": [{"z": 1, "y": 2}, 3], "c": None}}
    out = sorted_keys(value)
    assert out == value and list(out) == ["a", "b"] and list(out["a"]) == ["c", "d"]
    assert list(out["a"]["d"][0]) == ["y", "z"] and out["a"]["d"][1] == 3
    assert repr(sorted_keys({"y": 1, "x": 2})) == repr(sorted_keys({"x": 2, "y": 1}))


def test_token_budget_rules():
    assert token_budget({"tokens": 1000}, 50) == 1000
    assert token_budget({"tokens": None, "tokens_per_parameter": 20}, 50) == 1000


def test_training_flop_is_exact_flops_per_token_times_d():
    grid = [{"n_layer": 1, "d_model": 32, "n_head": 2}, {"n_layer": 4, "d_model": 80, "n_head": 5}]
    config = {
        "models": {"context_length": 64, "mlp_ratio": 4, "grid": grid},
        "train": {"tokens": None, "tokens_per_parameter": 20, "compute": None},
    }
    costs = {}
    for shape in model_grid(config):
        model = GPTConfig(2048, 64, shape.n_layer, shape.d_model, shape.n_head)
        d = token_budget(config["train"], shape.n_params())
        costs[shape.id] = training_flop(shape, config, vocab_size=2048)
        assert costs[shape.id] == pytest.approx(flops_per_token(model)["exact"] * d, rel=1e-12)
    assert costs["L4-D80"] > 50 * costs["L1-D32"]  # so the larger model is scheduled first
