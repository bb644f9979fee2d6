"""Two tokenizers in one experiment (tests/configs/two_tokenizers.yaml), through the workflow."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import pytest
from conftest import run_snakemake

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests" / "configs" / "two_tokenizers.yaml"
TOKENIZERS = ("bpe-384", "unigram-384")


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, *args, config=CONFIG)


def test_dag_has_one_branch_per_tokenizer(tmp_path):
    proc = snakemake(tmp_path, "-n", "--quiet", "rules")
    counts = dict(
        (rule, int(n))
        for rule, n in re.findall(r"^(\w+)\s+(\d+)\s*$", proc.stdout + proc.stderr, re.M)
    )
    # 2 tokenizers x (2 splits x 2 shards) token files; 2 tokenizers x 3 models
    assert counts["train_tokenizer"] == 2 and counts["tokenizer_stats"] == 2
    assert counts["tokenize"] == 8
    assert counts["train_model"] == 6 and counts["evaluate"] == 6
    assert not (tmp_path / "results").exists()


@pytest.mark.e2e
def test_two_tokenizers_end_to_end(tmp_path):
    snakemake(tmp_path)
    check_outputs(tmp_path / "results")


def check_outputs(results: Path) -> None:

    # a fit per tokenizer
    fit = json.loads((results / "fit/scaling_law.json").read_text())
    assert sorted(g["tokenizer"] for g in fit["groups"]) == list(TOKENIZERS)
    for group in fit["groups"]:
        assert group["n_points"] == 3 and group["fits"]["N"]["n"] == 3

    # bits-per-byte: each tokenizer's NLL over the same UTF-8 bytes of the same val text
    points = [p for p in fit["points"] if p.get("final", True)]
    by_tok = {t: [p for p in points if p["tokenizer"] == t] for t in TOKENIZERS}
    assert all(len(rows) == 3 for rows in by_tok.values())
    manifests = {
        t: json.loads((results / f"tokens/{t}/manifest.json").read_text()) for t in TOKENIZERS
    }
    val_bytes = {m["splits"]["val"]["bytes"] for m in manifests.values()}
    assert len(val_bytes) == 1  # both tokenizers encoded the same val text
    for t, rows in by_tok.items():
        for p in rows:
            assert 0 < p["bpb"] < 8 and math.isfinite(p["loss"])
            # bpb = loss · tokens / (ln 2 · bytes): per-token losses differ, bytes do not
            assert p["bytes"] == manifests[t]["splits"]["val"]["bytes"]
            assert p["bpb"] == pytest.approx(p["loss"] * p["tokens"] / (math.log(2) * p["bytes"]))

    # per-tokenizer statistics and special tokens
    assert manifests["bpe-384"]["special_tokens"] == {"<|endoftext|>": 0}
    assert manifests["unigram-384"]["special_tokens"] == {
        "<|endoftext|>": 0,
        "<|bos|>": 1,
        "<|pad|>": 2,
    }
    for t, manifest in manifests.items():
        assert manifest["vocab_size"] == 384 and len(manifest["shards"]) == 4
        val = manifest["splits"]["val"]
        assert 1.2 < val["bytes_per_token"] < 4 and 0.2 < val["vocab_used_fraction"] <= 1
        info = json.loads((results / f"tokenizers/{t}/train_info.json").read_text())
        assert 300_000 <= info["bytes"] < 400_000 and info["seconds_per_mb"] > 0

    # MLflow: one tokenizer_stats child run per tokenizer, with the tokenizer file
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow/mlflow.db'}")
    exp = client.get_experiment_by_name("lmscaling-two-tokenizers")
    runs = client.search_runs([exp.experiment_id], "tags.`lmscaling.rule` = 'tokenizer_stats'")
    assert sorted(r.info.run_name for r in runs) == [f"tokenizer_stats/{t}" for t in TOKENIZERS]
    for run in runs:
        name = run.info.run_name.split("/", 1)[1]
        stats = manifests[name]["splits"]["val"]
        assert run.data.metrics["val_bytes_per_token"] == pytest.approx(stats["bytes_per_token"])
        assert run.data.metrics["val_vocab_used_fraction"] == pytest.approx(
            stats["vocab_used_fraction"]
        )
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"tokenizer.json", "manifest.json", "train_info.json"} <= artifacts
