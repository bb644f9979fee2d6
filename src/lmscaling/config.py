"""Experiment configuration: checks that the JSON schema cannot express.

``workflow/schemas/config.schema.yaml`` validates types, ranges and unknown keys at parse time.
This module adds the cross-field rules (a head count that divides the width, unique model ids,
one token-budget rule, names that are safe in paths) so a bad config stops before any job, with
one message naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
"""Corpus and tokenizer names: letters, digits, '.', '_' and '-', not starting with a separator.

Names become path components and wildcard values, so '/', '..' and shell metacharacters are
refused here rather than escaped later.
"""


class ConfigError(ValueError):
    """Invalid experiment configuration; the message names the offending key."""


@dataclass(frozen=True)
class ModelShape:
    """One grid point: a GPT decoder shape with its stable id ``L{n_layer}-D{d_model}``."""

    n_layer: int
    d_model: int
    n_head: int

    @property
    def id(self) -> str:
        return f"L{self.n_layer}-D{self.d_model}"

    @property
    def n_params_approx(self) -> int:
        """12·n_layer·d_model², the non-embedding count of Kaplan et al. 2020 (eq. 2.1)."""
        return 12 * self.n_layer * self.d_model**2


def check_name(name: str, key: str) -> str:
    """Return ``name`` if it is safe as a path component and wildcard value.

    Raises:
        ConfigError: naming ``key`` when it is not.
    """
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise ConfigError(
            f"{key}: name {name!r} must match {NAME_RE.pattern} (letters, digits, '.', '_', '-')"
        )
    return name


def model_grid(config: dict) -> list[ModelShape]:
    """The model grid of ``config["models"]["grid"]``, checked.

    Raises:
        ConfigError: a head count that does not divide ``d_model``, an odd head dimension (rotary
            embeddings rotate pairs), or two entries with the same id.
    """
    shapes, seen = [], {}
    for i, entry in enumerate(config["models"]["grid"]):
        key = f"models.grid[{i}]"
        shape = ModelShape(int(entry["n_layer"]), int(entry["d_model"]), int(entry["n_head"]))
        if shape.d_model % shape.n_head:
            raise ConfigError(
                f"{key}: d_model ({shape.d_model}) is not divisible by n_head ({shape.n_head})"
            )
        if (shape.d_model // shape.n_head) % 2:
            raise ConfigError(
                f"{key}: head dimension d_model/n_head = {shape.d_model // shape.n_head} must be "
                "even (rotary position embeddings)"
            )
        if shape.id in seen:
            raise ConfigError(f"{key}: model id {shape.id} repeats {seen[shape.id]}")
        seen[shape.id] = key
        shapes.append(shape)
    return shapes


def check_config(config: dict) -> None:
    """Cross-field checks on a schema-valid config.

    Raises:
        ConfigError: naming the key, for unsafe names, a bad grid, a missing or double token budget,
            or a vocabulary whose ids do not fit the token dtype.
    """
    for name in config["corpora"]:
        check_name(name, f"corpora.{name}")
    for name, spec in config["tokenizers"].items():
        check_name(name, f"tokenizers.{name}")
        if spec["vocab_size"] > 2**32:
            raise ConfigError(f"tokenizers.{name}.vocab_size: ids must fit uint32")
    check_name(config["experiment_name"], "experiment_name")
    model_grid(config)
    train = config["train"]
    rules = [k for k in ("tokens", "tokens_per_parameter") if train.get(k) is not None]
    if len(rules) != 1:
        raise ConfigError(
            "train: give exactly one token budget rule, train.tokens (fixed D) or "
            f"train.tokens_per_parameter (D = r·N); got {rules or 'none'}"
        )


def token_budget(train: dict, n_params: int) -> int:
    """Training tokens D for a model of ``n_params`` non-embedding parameters.

    ``train.tokens`` fixes D for every model; ``train.tokens_per_parameter`` gives D = r·N
    (r ≈ 20 is compute-optimal per Hoffmann et al. 2022, Table 3).
    """
    if train.get("tokens") is not None:
        return int(train["tokens"])
    return int(round(float(train["tokens_per_parameter"]) * n_params))
