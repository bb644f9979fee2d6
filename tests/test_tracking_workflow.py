"""End-to-end tracking: the tiny workflow against a real `mlflow server`, and against a dead one.

The workflow runs on tests/configs/tiny.yaml without its held-out corpus (fewer jobs; the
tracking paths are the same). Runs and values are checked through the server's REST API.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import run_snakemake
from mlflow.tracking import MlflowClient

from lmscaling import tracking
from lmscaling.records import invocation_dirs, read_invocation

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp: Path, **mlflow: Any) -> Path:
    config = yaml.safe_load(TINY.read_text())
    held_out = config.get("eval", {}).get("heldout_corpora") or []
    for name in held_out:
        config["corpora"].pop(name)
    if held_out:
        config["eval"]["heldout_corpora"] = []
    config["mlflow"].update(mlflow)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _snakemake(workdir: Path, config: Path, tracking_uri: str, *args: str):
    env = {"MLFLOW_TRACKING_URI": tracking_uri}
    return run_snakemake(workdir, *args, config=config, check=False, env=env)


def _rest(base: str, endpoint: str, body: dict[str, Any] | None = None, **query: Any) -> Any:
    url = f"{base}/api/2.0/mlflow/{endpoint}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=30) as r:
        return json.loads(r.read())


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _metrics(run: dict[str, Any]) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def _params(run: dict[str, Any]) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def _final_points(workdir: Path) -> list[dict[str, str]]:
    with open(workdir / "results" / "eval" / "points.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r for r in rows if r.get("final", "true").lower() == "true"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on a free loopback port (SQLite backend, proxied artifacts)."""
    d = tmp_path_factory.mktemp("server")
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}"]
    cmd += ["--artifacts-destination", str(d / "artifacts"), "--workers", "1"]
    log = open(d / "server.log", "w")  # noqa: SIM115 (closed below)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    # Own session: the server starts uvicorn children; the whole group is stopped at the end.
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(d / 'server.log').read_text()}")
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_tiny_workflow_against_a_tracking_server(server: str, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    proc = _snakemake(workdir, _config(tmp_path), server)
    assert proc.returncode == 0, proc.stderr[-6000:]

    exp = _rest(server, "experiments/get-by-name", experiment_name="lmscaling-tiny")
    exp_id = exp["experiment"]["experiment_id"]
    runs = _rest(server, "runs/search", {"experiment_ids": [exp_id], "max_results": 1000})["runs"]
    parents = [r for r in runs if _tags(r).get("lmscaling.role") == "parent"]
    children = [r for r in runs if _tags(r).get("lmscaling.role") == "child"]
    assert len(parents) == 1 and len(runs) == 1 + len(children)
    parent = parents[0]
    parent_id = parent["info"]["run_id"]
    assert parent["info"]["status"] == "FINISHED"
    assert _params(parent)["train.tokens"] == "120000"  # the whole config, flattened

    # One child per job run (each job wrote one record), all linked, tagged and finished.
    (inv_dir,) = invocation_dirs(workdir / "results" / "mlflow" / "records")
    _, child_records = read_invocation(inv_dir)
    assert len(children) == len(child_records) >= 10
    rules = {_tags(r)["lmscaling.rule"] for r in children}
    expected = {"prepare_corpus", "train_tokenizer", "tokenize", "train_model", "evaluate"}
    assert expected | {"collect_points", "fit_scaling_law"} <= rules
    for r in children:
        tags = _tags(r)
        assert r["info"]["status"] == "FINISHED"
        assert tags["mlflow.parentRunId"] == parent_id
        assert tags["lmscaling.attempt"] == "1" and tags["lmscaling.current"] == "true"
        assert tags["lmscaling.config_hash"] == _tags(parent)["lmscaling.config_hash"]
        assert json.loads(tags["lmscaling.wildcards"]) is not None

    by_name = {r["info"]["run_name"]: r for r in children}
    models = ["L1-D16", "L2-D32", "L2-D64"]
    tokens = sorted((workdir / "results/tokens/bpe-512/stdlib/train").glob("part-*.bin"))
    digest = tracking.dataset_from_files(tokens, "bpe-512/train")["digest"]
    for model in models:
        train = by_name[f"train/bpe-512/{model}"]
        summary = json.loads((workdir / f"results/models/bpe-512/{model}/summary.json").read_text())
        metrics = _metrics(train)
        for key in ("N", "N_total", "N_embedding", "D", "C"):
            assert metrics[key] == pytest.approx(summary[key]), key
        history = _rest(
            server, "metrics/get-history", run_id=train["info"]["run_id"], metric_key="loss"
        )["metrics"]
        steps = sorted(m["step"] for m in history)
        assert len(steps) >= 5 and steps == sorted(set(steps))
        (dataset,) = train["inputs"]["dataset_inputs"]
        assert dataset["dataset"]["name"] == "bpe-512/train"
        assert dataset["dataset"]["digest"] == digest

    # The comparison run per model: N (each convention), D, C and the held-out loss,
    # perplexity and bits-per-byte, under the same names in every evaluate run.
    points = _final_points(workdir)
    assert {p["model"] for p in points} == set(models)
    for p in points:
        metrics = _metrics(by_name[f"evaluate/bpe-512/{p['model']}"])
        for key in ("N", "N_total", "N_embedding", "D", "C"):
            assert metrics[key] == pytest.approx(float(p[key])), key
        for key in ("loss", "perplexity", "bpb"):
            assert metrics[f"{p['eval_set']}.{key}"] == pytest.approx(float(p[key])), key

    def artifacts(run: dict[str, Any]) -> set[str]:
        listing = _rest(server, "artifacts/list", run_id=run["info"]["run_id"])
        return {f["path"] for f in listing.get("files", [])}

    assert {"scaling_law.json", "scaling_law.png", "points.csv"} <= artifacts(parent)
    assert "manifest.json" in artifacts(by_name["prepare_corpus/stdlib"])
    assert "tokenizer.json" in artifacts(by_name["train_tokenizer/bpe-512"])
    assert {"scaling_law.json", "scaling_law.svg"} <= artifacts(by_name["fit_scaling_law"])
    query = urllib.parse.urlencode({"path": "scaling_law.json", "run_uuid": parent_id})
    with urllib.request.urlopen(f"{server}/get-artifact?{query}", timeout=30) as r:
        assert r.read() == (workdir / "results/fit/scaling_law.json").read_bytes()

    # The same records replayed into a fresh SQLite store give the same runs and values.
    fresh = f"sqlite:///{tmp_path / 'replayed.db'}"
    code = subprocess.run(
        [sys.executable, "-m", "lmscaling.replay", "--tracking-uri", fresh],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert code.returncode == 0, code.stderr[-3000:]
    client = MlflowClient(tracking_uri=fresh)
    replayed = client.search_runs(
        [client.get_experiment_by_name("lmscaling-tiny").experiment_id], max_results=1000
    )

    def view(run_name: str, status: str, start: int, end: int, params, metrics, tags) -> tuple:
        tags = {k: v for k, v in tags.items() if k != "mlflow.parentRunId"}
        return (run_name, status, start, end, params, metrics, tags)

    served = sorted(
        view(
            r["info"]["run_name"],
            r["info"]["status"],
            int(r["info"]["start_time"]),
            int(r["info"]["end_time"]),
            _params(r),
            _metrics(r),
            _tags(r),
        )
        for r in runs
    )
    again = sorted(
        view(
            r.info.run_name,
            r.info.status,
            r.info.start_time,
            r.info.end_time,
            r.data.params,
            r.data.metrics,
            r.data.tags,
        )
        for r in replayed
    )
    assert again == served


def test_unreachable_server_fails_fast_or_runs_offline(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there

    # Required (the default): a clear message before any job.
    strict = tmp_path / "strict"
    proc = _snakemake(strict, _config(tmp_path), dead)
    assert proc.returncode != 0
    assert "MLflow tracking: cannot start the MLflow parent run" in proc.stderr
    assert dead in proc.stderr and "mlflow.required: false" in proc.stderr
    assert not (strict / "results" / "data").exists()

    # Not required: the workflow runs offline, every output is there, the records wait.
    work = tmp_path / "work"
    proc = _snakemake(work, _config(tmp_path, required=False), dead)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert "continuing OFFLINE" in proc.stderr and "python -m lmscaling.replay" in proc.stderr
    fit = json.loads((work / "results/fit/scaling_law.json").read_text())
    assert fit["groups"]
    info = json.loads((work / "results/mlflow/parent.json").read_text())
    assert info["mode"] == "offline" and info["parent_run_id"] is None
    (inv_dir,) = invocation_dirs(work / "results/mlflow/records")
    parent_rec, child_recs = read_invocation(inv_dir)
    assert parent_rec.status == "FINISHED"
    assert len(child_recs) >= 10 and all(r.status == "FINISHED" for r in child_recs)
    assert not (work / "results/mlflow/mlflow.db").exists()  # nothing reached any store

    # Replay into a fresh store once one is reachable: every run and value arrives.
    db = tmp_path / "later" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    code = subprocess.run(
        [sys.executable, "-m", "lmscaling.replay", "results/mlflow/records"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
    )
    assert code.returncode == 0, code.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("lmscaling-tiny")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert len(runs) == 1 + len(child_recs)
    assert all(r.info.status == "FINISHED" for r in runs)
    by_name = {r.info.run_name: r for r in runs}
    for p in _final_points(work):
        metrics = by_name[f"evaluate/bpe-512/{p['model']}"].data.metrics
        assert metrics[f"{p['eval_set']}.loss"] == pytest.approx(float(p["loss"]))
        assert metrics["N"] == pytest.approx(float(p["N"]))
    train = by_name["train/bpe-512/L2-D64"]
    assert len(client.get_metric_history(train.info.run_id, "loss")) >= 5
