"""End-to-end: the whole Snakemake DAG on the tiny config, then its outputs and MLflow store."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import run_snakemake

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"

pytestmark = pytest.mark.e2e


def snakemake(workdir: Path, *args: str, config: Path = TINY, check: bool = True):
    """Run the workflow in ``workdir`` with ``config``; returns the CompletedProcess."""
    return run_snakemake(workdir, *args, config=config, check=check, timeout=900)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    first = snakemake(workdir)
    return workdir, first


def test_fit_content(tiny_run):
    workdir, _ = tiny_run
    result = json.loads((workdir / "results/fit/scaling_law.json").read_text())
    groups = {g["eval_set"]: g for g in result["groups"]}
    assert set(groups) == {"stdlib/val", "urllib/all"}  # a training corpus, a held-out one
    group = groups["stdlib/val"]
    assert group["tokenizer"] == "bpe-512"
    assert group["n_points"] == 3
    law_n = group["fits"]["N"]
    assert law_n["n"] == 3
    assert law_n["b"] < 0, law_n
    assert "D" not in group["fits"]  # fixed token budget: D takes one value
    assert {p["model"] for p in result["points"]} == {"L1-D16", "L2-D32", "L2-D64"}
    for p in result["points"]:
        for key in ("loss", "perplexity", "bpb", "N", "D", "C"):
            assert math.isfinite(p[key]) and p[key] > 0, (key, p)
        assert p["perplexity"] == pytest.approx(math.exp(p["loss"]), rel=1e-9)
        assert p["C"] == pytest.approx(6 * p["N"] * p["D"])
        # the tiny models have learned something: below a uniform guess over 512 tokens
        assert p["loss"] < math.log(512)
    png = workdir / "results/fit/scaling_law.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_fit_checks_skips_and_report(tiny_run):
    workdir, _ = tiny_run
    result = json.loads((workdir / "results/fit/scaling_law.json").read_text())
    group = {g["eval_set"]: g for g in result["groups"]}["stdlib/val"]
    # one D for every model: Chinchilla and IsoFLOP are skipped with a reason, not an error
    assert "D takes a single value" in group["chinchilla"]["skipped"]
    assert "skipped" in group["isoflop"]
    # extrapolation check: the largest model, predicted by the law fitted to the other two
    (check,) = [r for r in group["extrapolation"] if r["key"] == "L_N"]
    (held,) = check["held_out"]
    assert held["model"] == "L2-D64" and check["n_fit"] == 2
    largest = max(result["points"], key=lambda p: (p["eval_set"] == "stdlib/val", p["N"]))
    assert held["actual"] == pytest.approx(largest["loss"])
    assert held["rel_error"] == pytest.approx((held["predicted"] - held["actual"]) / held["actual"])
    for name in ("residuals", "isoflop"):
        assert (workdir / f"results/fit/{name}.png").read_bytes()[:4] == b"\x89PNG"
    proc = snakemake(workdir, "--report", "results/report.html")
    html = (workdir / "results/report.html").read_text()
    assert "Report created" in proc.stderr + proc.stdout
    for caption in ("Extrapolation check", "IsoFLOP curves", "Residuals ln L"):
        assert caption in html


def test_data_and_token_outputs_agree(tiny_run):
    workdir, _ = tiny_run
    manifest = json.loads((workdir / "results/data/stdlib/manifest.json").read_text())
    assert manifest["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert manifest["documents_in"] == manifest["documents_out"] + sum(manifest["removed"].values())
    docs = 0
    for split in ("train", "val"):
        for shard in ("00000", "00001"):
            meta = json.loads(
                (workdir / f"results/tokens/bpe-512/stdlib/{split}/part-{shard}.json").read_text()
            )
            docs += meta["docs"]
    assert docs == manifest["documents_out"]


def test_points_table(tiny_run):
    """One row per model x checkpoint x eval set; every set scored whole by every row."""
    import polars as pl

    workdir, _ = tiny_run
    config = yaml.safe_load(TINY.read_text())
    table = pl.read_parquet(workdir / "results/eval/points.parquet")
    assert pl.read_csv(workdir / "results/eval/points.csv").columns == table.columns
    agreed = "tokenizer model checkpoint final eval_set n_layer d_model n_head N N_total"
    agreed += " N_embedding D C loss perplexity bpb tokens bytes context_length stride bos"
    assert set(agreed.split()) <= set(table.columns)
    checkpoints = 1 + len(config["train"]["checkpoint_fractions"])
    assert table.height == 3 * checkpoints * 2
    for eval_set, corpus, splits in [
        ("stdlib/val", "stdlib", ["val"]),
        ("urllib/all", "urllib", ["train", "val"]),
    ]:
        rows = table.filter(pl.col("eval_set") == eval_set)
        sidecars = [
            json.loads(p.read_text())
            for split in splits
            for p in (workdir / f"results/tokens/bpe-512/{corpus}/{split}").glob("part-*.json")
        ]
        assert rows["bytes"].unique().to_list() == [sum(m["bytes"] for m in sidecars)]
        assert rows["tokens"].unique().to_list() == [sum(m["tokens"] for m in sidecars)]
    for p in table.iter_rows(named=True):
        assert p["bpb"] == pytest.approx(p["nll_sum"] / (math.log(2) * p["bytes"]), rel=1e-12)
        assert p["perplexity"] == pytest.approx(math.exp(p["loss"]), rel=1e-12)
        assert p["C"] == pytest.approx(6 * p["N"] * p["D"])
        assert (p["context_length"], p["stride"], p["bos"]) == (64, 64, "eot")
    final = table.filter(pl.col("final"))
    assert final.height == 6 and set(final["checkpoint"]) == {"final"}
    half = table.filter(pl.col("checkpoint") == "frac-0.5")
    assert half.height == 6 and (half["D"] < final["D"].max()).all()
    # every point records its model's precision as resolved at training time
    for model in table["model"].unique():
        summary = json.loads((workdir / f"results/models/bpe-512/{model}/summary.json").read_text())
        rows = table.filter(pl.col("model") == model)
        assert rows["precision"].to_list() == [summary["precision"]] * rows.height
        assert summary["precision"] in ("bf16", "fp32")


def test_rerun_schedules_nothing(tiny_run):
    workdir, _ = tiny_run
    dry = snakemake(workdir, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_defaults_spelled_out_and_settings_that_do_not_act_rerun_nothing(tiny_run, tmp_path):
    workdir, _ = tiny_run
    config = yaml.safe_load(TINY.read_text())
    assert config["train"]["device"] == "cpu" and "schedule" not in config["train"]  # cosine
    context = config["models"]["context_length"]
    config["eval"].update(context_length=context, stride=context)
    config["train"].update(decay_fraction=0.5, gpus=2)
    path = tmp_path / "spelled-out.yaml"
    path.write_text(yaml.safe_dump(config))
    dry = snakemake(workdir, "-n", config=path)
    assert "Nothing to be done" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]
    config["eval"]["stride"] = context // 2  # a real change: every evaluation reruns
    path.write_text(yaml.safe_dump(config))
    planned = snakemake(workdir, "-n", config=path).stdout
    assert len(re.findall(r"^rule evaluate:", planned, re.M)) == 3, planned[-3000:]


def test_a_held_out_corpus_turned_training_corpus_is_checked_again(tiny_run, tmp_path):
    """Its preparation reruns (a training corpus needs both splits), the other corpus's not."""
    workdir, _ = tiny_run
    config = yaml.safe_load(TINY.read_text())
    assert config["eval"]["heldout_corpora"] == ["urllib"]
    config["eval"]["heldout_corpora"] = []
    path = tmp_path / "no-heldout.yaml"
    path.write_text(yaml.safe_dump(config))
    dry = snakemake(workdir, "-n", config=path)
    prepared = re.findall(
        r"^rule (prepare_\w+):\n(?:    .*\n)*?    wildcards: corpus=([^,\s]+)", dry.stdout, re.M
    )
    assert ("prepare_corpus", "urllib") in prepared, prepared
    assert {corpus for _, corpus in prepared} == {"urllib"}, prepared


def test_a_size_rule_edit_reruns_only_the_models_it_changes(tiny_run, tmp_path):
    """train.lr as a table that keeps L1-D16's rate (0.004) and changes the others'."""
    workdir, _ = tiny_run
    config = yaml.safe_load(TINY.read_text())
    assert config["train"]["lr"] == 0.004
    config["train"]["lr"] = {
        "table": [{"max_N": 5000, "value": 0.004}, {"max_N": None, "value": 0.002}]
    }
    path = tmp_path / "lr-table.yaml"
    path.write_text(yaml.safe_dump(config))
    dry = snakemake(workdir, "-n", config=path)
    planned = re.findall(
        r"^rule train_model:\n(?:    .*\n)*?    wildcards: .*model=(\S+)", dry.stdout, re.M
    )
    assert sorted(planned) == ["L2-D32", "L2-D64"], (planned, re.findall(r"reason: .*", dry.stdout))


def test_mlflow_store(tiny_run):
    from mlflow.tracking import MlflowClient

    workdir, _ = tiny_run
    uri = f"sqlite:///{workdir / 'results/mlflow/mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("lmscaling-tiny")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("lmscaling.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("lmscaling.role") == "child"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    # 2 prepare_corpus + 1 train_tokenizer + 8 tokenize + 1 tokenizer_stats + 3 train
    # + 3 evaluate + collect + fit
    assert len(children) == 20
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert all(r.info.status == "FINISHED" for r in children)
    rules = sorted(r.data.tags["lmscaling.rule"] for r in children)
    assert rules.count("train_model") == 3 and rules.count("tokenize") == 8
    train = [r for r in children if r.data.tags["lmscaling.rule"] == "train_model"]
    for run in train:
        history = client.get_metric_history(run.info.run_id, "loss")
        assert len(history) >= 5
        assert run.data.metrics["N"] > 0
    evaluate = [r for r in children if r.data.tags["lmscaling.rule"] == "evaluate"]
    for run in evaluate:  # loss against tokens seen, one step per checkpoint
        history = client.get_metric_history(run.info.run_id, "urllib/all.loss")
        steps = sorted(m.step for m in history)
        assert len(steps) == 2 and steps[0] < steps[1]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "scaling_law.png" in artifacts


def _write_config(tmp_path: Path, corpus: dict) -> Path:
    config = yaml.safe_load(TINY.read_text())
    config["corpora"] = {"bad": corpus}
    config["eval"]["heldout_corpora"] = []
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_missing_file_stops_before_any_job(tmp_path):
    config = _write_config(tmp_path, {"source": "files", "paths": ["nowhere/data.jsonl"]})
    proc = snakemake(tmp_path, config=config, check=False)
    assert proc.returncode != 0
    assert "nowhere/data.jsonl" in proc.stderr and "corpora.bad.paths" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_no_usable_document_and_wrong_field_stop_before_training(tmp_path):
    (tmp_path / "short.txt").write_text("tiny\n")
    config = _write_config(tmp_path, {"source": "files", "paths": ["short.txt"], "min_chars": 64})
    proc = snakemake(tmp_path, config=config, check=False)
    assert proc.returncode != 0
    assert "no usable document" in proc.stderr
    assert not (tmp_path / "results/models").exists()
    assert not list((tmp_path / "results").glob("data/bad/**/*.parquet"))

    (tmp_path / "docs.jsonl").write_text('{"body": "some text"}\n' * 3)
    config = _write_config(tmp_path, {"source": "files", "paths": ["docs.jsonl"]})
    proc = snakemake(tmp_path, config=config, check=False)
    assert proc.returncode != 0
    assert "corpora.bad.text_field" in proc.stderr
    assert not list((tmp_path / "results").glob("data/bad/**/*.parquet"))
