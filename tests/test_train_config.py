"""The grid, token-budget and per-scale optimisation rules of lmscaling.config, and the presets."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from lmscaling.config import (
    MODEL_ID_RE,
    ConfigError,
    ModelShape,
    check_config,
    checkpoint_name,
    compute_tag,
    model_grid,
    scale_rule,
    token_budget,
    train_settings,
)
from lmscaling.model import GPTConfig, count_parameters, flops_per_token

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")


def load(path: Path) -> dict:
    config = yaml.safe_load(path.read_text())
    validate(config, SCHEMA)  # fills the defaults
    return config


@pytest.fixture
def config() -> dict:
    return load(REPO / "config" / "config.yaml")


def test_compute_tags_and_ids():
    assert [compute_tag(c) for c in (1e15, 3.5e17, 1.234e13, 2e5)] == [
        "1e15",
        "3.5e17",
        "1.23e13",
        "2e5",
    ]
    assert ModelShape(4, 128, 2).id == "L4-D128"
    assert ModelShape(4, 128, 2, compute=3e15).id == "L4-D128-C3e15"
    assert re.fullmatch(MODEL_ID_RE, "L4-D128-C3.5e15") and re.fullmatch(MODEL_ID_RE, "L4-D128")
    assert not re.fullmatch(MODEL_ID_RE, "L4-D128-frac-0.5")
    assert [checkpoint_name(f) for f in (0.5, 0.25, 0.125)] == [
        "frac-0.5",
        "frac-0.25",
        "frac-0.125",
    ]


def test_depth_ladder(config):
    del config["models"]["grid"]
    config["models"]["ladder"] = {"depths": [2, 4, 6], "aspect_ratio": 64, "head_dim": 64}
    validate(config, SCHEMA)
    check_config(config)
    shapes = model_grid(config)
    assert [(s.n_layer, s.d_model, s.n_head) for s in shapes] == [
        (2, 128, 2),
        (4, 256, 4),
        (6, 384, 6),
    ]
    assert [s.id for s in shapes] == ["L2-D128", "L4-D256", "L6-D384"]
    config["models"]["ladder"]["head_dim"] = 100
    with pytest.raises(ConfigError, match=r"models.ladder.depths\[0\]: d_model = 2 x"):
        model_grid(config)
    config["models"]["grid"] = [{"n_layer": 1, "d_model": 32, "n_head": 2}]
    with pytest.raises(ConfigError, match="exactly one of models.grid"):
        model_grid(config)


def test_isoflop_grid_is_one_config_away(config):
    config["train"].update(tokens=None, compute=[1e12, 3e12])
    validate(config, SCHEMA)
    check_config(config)
    shapes = model_grid(config)
    ids = [s.id for s in shapes]
    assert len(ids) == len(set(ids)) == 10  # 5 shapes x 2 budgets, unique ids
    assert ids[:2] == ["L1-D32-C1e12", "L2-D32-C1e12"] and ids[-1] == "L4-D80-C3e12"
    for shape in shapes:
        n = count_parameters(GPTConfig(2048, 128, shape.n_layer, shape.d_model, shape.n_head))["N"]
        d = token_budget(config["train"], n, shape.compute)
        assert d == round(shape.compute / (6 * n))  # C = 6ND (Kaplan et al. 2020, eq. 2.1)
        assert 6 * n * d == pytest.approx(shape.compute, rel=1e-5)
    with pytest.raises(ConfigError, match="no compute budget"):
        token_budget(config["train"], 1000)


def test_budget_rules(config):
    assert token_budget({"tokens": 1000}, 50) == 1000
    assert token_budget({"tokens": None, "tokens_per_parameter": 20}, 50) == 1000
    config["train"].update(compute=[1e12])
    with pytest.raises(ConfigError, match=r"exactly one token budget rule.*'tokens', 'compute'"):
        check_config(config)


def test_scale_rules():
    assert scale_rule(0.003, 10**6, "train.lr") == 0.003
    table = {"table": [{"max_N": 1e5, "value": 0.01}, {"max_N": 1e7, "value": 0.003}]}
    table["table"].append({"max_N": None, "value": 0.001})
    assert [scale_rule(table, n, "train.lr") for n in (1e5, 1e5 + 1, 1e7, 1e9)] == [
        0.01,
        0.003,
        0.003,
        0.001,
    ]
    law = {"power_law": {"value": 0.004, "N_ref": 1e6, "exponent": -0.25}}
    assert scale_rule(law, 1e6, "train.lr") == pytest.approx(0.004)
    assert scale_rule(law, 16e6, "train.lr") == pytest.approx(0.002)  # 16^-0.25 = 1/2
    with pytest.raises(ConfigError, match=r"train.lr.table: the last row must have max_N: null"):
        scale_rule({"table": [{"max_N": 1e5, "value": 0.01}]}, 10, "train.lr")
    with pytest.raises(ConfigError, match="max_N must increase"):
        rows = [{"max_N": 1e5, "value": 1}, {"max_N": 1e3, "value": 2}, {"max_N": None, "value": 3}]
        scale_rule({"table": rows}, 1, "k")
    with pytest.raises(ConfigError, match="max_N must increase"):  # the second row never applies
        rows = [{"max_N": 1e5, "value": 1}, {"max_N": 1e5, "value": 2}, {"max_N": None, "value": 3}]
        scale_rule({"table": rows}, 1, "k")


def test_train_settings_resolve_per_size(config):
    train = copy.deepcopy(config["train"])
    train["lr"] = {"power_law": {"value": 0.004, "N_ref": 1e5, "exponent": -0.5}}
    train["batch_size"] = {"power_law": {"value": 32, "N_ref": 1e5, "exponent": 0.5}}
    small = train_settings(train, 10**5)
    big = train_settings(train, 10**7)
    assert small == {"tokens": 2_000_000, "lr": pytest.approx(0.004), "batch_size": 32}
    assert big["lr"] == pytest.approx(0.0004) and big["batch_size"] == 256  # 320 -> 2^8
    tiny_law = {"power_law": {"value": 0.75, "N_ref": 1e5, "exponent": 0.5}}
    assert train_settings({**train, "batch_size": tiny_law}, 10**5)["batch_size"] == 1
    with pytest.raises(ConfigError, match=r"0.075 sequences at N = 1000, fewer than one"):
        train_settings({**train, "batch_size": tiny_law}, 10**3)  # 0.075 -> 2^-4
    train["batch_size"] = {"table": [{"max_N": 1e6, "value": 16}, {"max_N": None, "value": 64}]}
    assert train_settings(train, 10**5)["batch_size"] == 16
    assert train_settings(train, 10**7)["batch_size"] == 64
    train.update(tokens=None, tokens_per_parameter=20)
    assert train_settings(train, 12345)["tokens"] == 246_900


def test_schema_accepts_rules_and_rejects_bad_ones(config):
    config["train"]["lr"] = {"power_law": {"value": 0.004, "N_ref": 1e5, "exponent": -0.5}}
    config["train"]["batch_size"] = {"table": [{"max_N": None, "value": 64}]}
    validate(config, SCHEMA)
    check_config(config)
    for bad in (
        {"lr": {"power_law": {"value": 0.004}}},
        {"lr": -1.0},
        {"schedule": "linear"},
        {"checkpoint_fractions": [1.5]},
    ):
        edited = copy.deepcopy(config)
        edited["train"].update(bad)
        with pytest.raises(WorkflowError):
            validate(edited, SCHEMA)
    config["train"]["checkpoint_fractions"] = [0.5, 0.5]
    with pytest.raises(ConfigError, match="checkpoint_fractions"):
        check_config(config)


def test_default_and_tiny_configs_checkpoints(config):
    assert config["train"]["checkpoint_fractions"] == []
    assert config["train"]["resume_every"] > 0
    tiny = load(REPO / "tests" / "configs" / "tiny.yaml")
    assert tiny["train"]["checkpoint_fractions"] == [0.5]


def test_gpu_preset_spans_10m_to_300m_at_20_tokens_per_parameter():
    config = load(REPO / "config" / "presets" / "gpu.yaml")
    check_config(config)
    models = config["models"]
    vocab = next(iter(config["tokenizers"].values()))["vocab_size"]
    n = []
    for shape in model_grid(config):
        cfg = GPTConfig(vocab, models["context_length"], shape.n_layer, shape.d_model, shape.n_head)
        n.append(count_parameters(cfg)["N"])
        assert flops_per_token(cfg)["exact"] > 6 * n[-1]
    assert n == sorted(n) and n[0] < 12e6 and n[-1] > 300e6
    assert config["train"]["tokens_per_parameter"] == 20
    assert config["train"]["device"] != "cpu" and config["train"]["compile"] is True
