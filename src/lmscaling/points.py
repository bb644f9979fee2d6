"""Evaluation sets, the BOS policy and the tidy table of evaluation points.

This module needs no torch: the workflow reads the evaluation sets from the config at parse time
(:func:`eval_sets`, :func:`training_corpora`), and the ``collect_points`` job builds the table
(:func:`points_table`) in the light fitting environment. Scoring itself is
:mod:`lmscaling.evaluate`.

Evaluation sets are named ``<corpus>/val`` (the val split of a training corpus) and
``<corpus>/all`` (a corpus listed in ``eval.heldout_corpora``, in full: it is prepared and
tokenized with every tokenizer like the others, but no tokenizer and no model trains on it, so
both of its hash splits are held out). The points table has one row per (tokenizer, model,
checkpoint, eval_set), gathered from the per-model files ``results/eval/{tokenizer}/{model}.json``
written by :func:`lmscaling.evaluate.evaluate_points`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lmscaling.config import ConfigError
from lmscaling.io import read_json

BOS_POLICIES = ("eot", "none")
"""``eot``: the end-of-text token is prepended as the first document's context, every token is
scored. ``none``: nothing is prepended, the first token is context only (``tokens - 1`` targets;
``bytes`` still counts the whole text)."""


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set: the token shards of ``corpus`` for ``splits``.

    Attributes:
        name: ``<corpus>/val`` (val split of a training corpus) or ``<corpus>/all`` (a held-out
            corpus, both splits).
        corpus: corpus name under ``config["corpora"]``.
        splits: ``("val",)`` or ``("train", "val")``.
    """

    name: str
    corpus: str
    splits: tuple[str, ...]


def training_corpora(config: Mapping) -> list[str]:
    """Corpora the tokenizers and models train on: every corpus not in ``eval.heldout_corpora``."""
    heldout = set(config["eval"].get("heldout_corpora") or ())
    return [name for name in config["corpora"] if name not in heldout]


def eval_sets(config: Mapping) -> list[EvalSet]:
    """The evaluation sets of ``config``: ``<c>/val`` per training corpus, then ``<h>/all`` per
    held-out corpus (``eval.heldout_corpora``), in config order.

    Raises:
        ConfigError: naming ``eval.heldout_corpora`` for an unknown or repeated corpus, or when
            every corpus is held out (nothing left to train on).
    """
    heldout = list(config["eval"].get("heldout_corpora") or ())
    key = "eval.heldout_corpora"
    for name in heldout:
        if name not in config["corpora"]:
            raise ConfigError(
                f"{key}: {name!r} is not a corpus; corpora: {list(config['corpora'])}"
            )
    if len(set(heldout)) != len(heldout):
        raise ConfigError(f"{key}: a corpus is listed twice: {heldout}")
    train = training_corpora(config)
    if not train:
        raise ConfigError(f"{key}: every corpus is held out; at least one must be trained on")
    return [EvalSet(f"{c}/val", c, ("val",)) for c in train] + [
        EvalSet(f"{c}/all", c, ("train", "val")) for c in config["corpora"] if c in heldout
    ]


def check_eval_config(config: Mapping) -> None:
    """Cross-field checks of the ``eval`` section (the schema checks types and ranges).

    Raises:
        ConfigError: naming the key, for a ``context_length`` above ``models.context_length``, a
            ``stride`` above the evaluation context length, or a bad ``heldout_corpora`` (see
            :func:`eval_sets`).
    """
    ev, model_ctx = config["eval"], config["models"]["context_length"]
    ctx = ev.get("context_length") or model_ctx
    if ctx > model_ctx:
        raise ConfigError(
            f"eval.context_length: {ctx} exceeds the models' context length {model_ctx}"
        )
    stride = ev.get("stride")
    if stride is not None and stride > ctx:
        raise ConfigError(
            f"eval.stride: {stride} exceeds the evaluation context length {ctx}; "
            "targets between windows would never be scored"
        )
    if ev.get("bos", "eot") not in BOS_POLICIES:
        raise ConfigError(f"eval.bos: {ev['bos']!r}; expected one of {list(BOS_POLICIES)}")
    eval_sets(config)


POINT_COLUMNS = [
    "tokenizer",
    "model",
    "checkpoint",
    "final",
    "fraction",
    "step",
    "eval_set",
    "n_layer",
    "d_model",
    "n_head",
    "vocab_size",
    "N",
    "N_total",
    "N_embedding",
    "D",
    "C",
    "budget",
    "precision",
    "loss",
    "perplexity",
    "bpb",
    "nll_sum",
    "tokens",
    "bytes",
    "docs",
    "context_length",
    "stride",
    "bos",
]
"""Columns of the points table, in order.

``checkpoint`` is ``"final"`` (the fully trained model, ``final`` True, ``fraction`` 1.0) or
``"frac-<f>"`` (an intermediate checkpoint at fraction ``f`` of the token budget). Units: N
(non-embedding), N_total, N_embedding in parameters (Kaplan et al. 2020, sec. 2.1); D in
training tokens seen at the checkpoint; C = 6·N·D in FLOP (Kaplan et al. 2020, eq. 2.1); budget
= the model's compute budget under ``train.compute`` (FLOP; null under the other rules), the
label that groups an IsoFLOP curve, since whole optimizer steps move C off it; precision = the
model's training precision as resolved (``"bf16"`` or ``"fp32"``, see
:func:`lmscaling.train.resolve_precision`; null where the training summary predates it); loss
in nats/token; perplexity = exp(loss); bpb in bits per UTF-8 byte; nll_sum in nats; tokens =
scored targets; bytes = UTF-8 bytes of the set's original text; docs = documents in the set;
context_length, stride (tokens) and bos record how the set was scored.
"""

_TEXT = ("tokenizer", "model", "checkpoint", "eval_set", "precision", "bos")
_FLOAT = ("fraction", "C", "budget", "loss", "perplexity", "bpb", "nll_sum")
_OPTIONAL = ("budget", "precision")  # absent from evaluations written before they existed


class PointsError(ValueError):
    """An evaluation file that does not hold complete points; the message names the file."""


def points_table(paths: Sequence[str | os.PathLike[str]]):
    """One ``polars.DataFrame`` of the points of every per-model evaluation JSON.

    Columns are :data:`POINT_COLUMNS` in that order (strings, ``final`` boolean, ``fraction``,
    ``C``, ``loss``, ``perplexity``, ``bpb``, ``nll_sum`` float64, the rest int64); rows are
    sorted by tokenizer, eval_set, N, D, so each model's checkpoints follow each other in order
    of tokens seen.

    Raises:
        PointsError: naming the file and point when a column is missing.
    """
    import polars as pl

    rows = []
    for path in paths:
        for i, point in enumerate(read_json(path)["points"]):
            missing = [c for c in POINT_COLUMNS if c not in point and c not in _OPTIONAL]
            if missing:
                raise PointsError(f"{path}: points[{i}] lacks column(s) {missing}")
            rows.append({c: point.get(c) for c in POINT_COLUMNS})
    schema = {
        c: pl.Utf8 if c in _TEXT else pl.Float64 if c in _FLOAT else pl.Int64 for c in POINT_COLUMNS
    }
    schema["final"] = pl.Boolean
    table = pl.DataFrame(rows, schema=schema)
    return table.sort(["tokenizer", "eval_set", "N", "D", "checkpoint"])
