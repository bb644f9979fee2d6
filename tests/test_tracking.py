"""Tests for lmscaling.tracking against a real SQLite MLflow store (one per module)."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.entities import Experiment
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lmscaling import tracking
from lmscaling.io import read_json
from lmscaling.records import read_record
from lmscaling.tracking import (
    ChildRun,
    TrackingError,
    child_run,
    config_hash,
    finish_parent,
    flatten_params,
    job_tags,
    resolve_tracking_uri,
    start_parent,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One SQLite store per module: migrations on a fresh DB take seconds."""
    results = tmp_path_factory.mktemp("results")
    return "sqlite:///" + (results / "mlflow" / "mlflow.db").as_posix(), results


@pytest.fixture
def parent(store: tuple[str, Path], tmp_path: Path) -> dict[str, str]:
    uri, _ = store
    return start_parent(uri, "unit", tmp_path / "parent.json", run_name="wf")


def _client(info: dict[str, str]) -> MlflowClient:
    return MlflowClient(tracking_uri=info["tracking_uri"])


# ------------------------------------------------------------------------ pure helpers


def test_resolve_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = resolve_tracking_uri(tmp_path / "results")
    assert default == "sqlite:///" + str((tmp_path / "results" / "mlflow" / "mlflow.db").resolve())
    assert default.startswith("sqlite:////")
    assert resolve_tracking_uri(tmp_path, "http://cfg:5000") == "http://cfg:5000"
    assert resolve_tracking_uri(tmp_path, "  ") == resolve_tracking_uri(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(tmp_path, "http://cfg:5000") == "http://env:5000"
    assert resolve_tracking_uri(tmp_path) == "http://env:5000"


def test_resolve_tracking_uri_relative_dir_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("res") == f"sqlite:///{tmp_path.resolve()}/res/mlflow/mlflow.db"


def test_flatten_params(caplog: pytest.LogCaptureFixture) -> None:
    nested = {
        "model": {"d_model": 64, "n_layer": 2, "opt": {"lr": 3e-4}},
        "scales": [1, 2.5, "x"],
        "flag": True,
        "none": None,
        "empty": {},
        "long": "y" * 7000,
    }
    with caplog.at_level(logging.WARNING, logger="lmscaling.tracking"):
        flat = flatten_params(nested)
    assert flat == {
        "model.d_model": "64",
        "model.n_layer": "2",
        "model.opt.lr": "0.0003",
        "scales": '[1, 2.5, "x"]',
        "flag": "True",
        "none": "None",
        "empty": "{}",
        "long": "y" * 6000,
    }
    assert "'long' truncated from 7000 to 6000" in caplog.text
    assert flatten_params({"a": 1}, prefix="cfg") == {"cfg.a": "1"}
    with pytest.raises(ValueError, match="longer than 250"):
        flatten_params({"k" * 251: 1})


def test_config_hash_is_canonical() -> None:
    a = {"b": 1, "a": {"y": [1, 2], "x": "s"}}
    b = {"a": {"x": "s", "y": [1, 2]}, "b": 1}
    assert config_hash(a) == config_hash(b)
    assert re.fullmatch(r"[0-9a-f]{12}", config_hash(a))
    assert config_hash(a) != config_hash({**a, "b": 2})
    # sha256 of '{"a":1}' starts with 015abd7f5cc5
    assert config_hash({"a": 1}) == "015abd7f5cc5"


def test_git_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert tracking.git_commit(tmp_path) is None  # not a repository
    assert tracking.git_commit(tmp_path / "absent") is None  # no such directory
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    env = ["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert tracking.git_commit(tmp_path) is None  # no commit yet
    subprocess.run(
        ["git", *env, "commit", "-q", "--allow-empty", "-m", "m"], cwd=tmp_path, check=True
    )
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert tracking.git_commit(tmp_path) == head


def test_job_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "git_commit", lambda repo_dir=".": "abc123")
    tags = job_tags("train", {"scale": "s2", "data": "d"}, 2, config={"x": 1})
    key = tracking.job_key("train", {"data": "d", "scale": "s2"})
    assert tags == {
        "lmscaling.rule": "train",
        "lmscaling.wildcards": '{"data": "d", "scale": "s2"}',
        "lmscaling.attempt": "2",
        "lmscaling.job_key": key,
        "mlflow.source.git.commit": "abc123",
        "lmscaling.config_hash": config_hash({"x": 1}),
    }
    # sha256 of '["train", {"data": "d", "scale": "s2"}]'; the attempt does not change it
    assert key == "fe580977228a8636"
    assert key == job_tags("train", {"scale": "s2", "data": "d"}, 1)["lmscaling.job_key"]
    assert key != tracking.job_key("train", {"data": "d", "scale": "s3"})
    monkeypatch.setattr(tracking, "git_commit", lambda repo_dir=".": None)
    assert job_tags("fit", {}, 1) == {
        "lmscaling.rule": "fit",
        "lmscaling.wildcards": "{}",
        "lmscaling.attempt": "1",
        "lmscaling.job_key": tracking.job_key("fit", {}),
    }


def test_retry_locked(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(tracking.time, "sleep", sleeps.append)
    calls = []

    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return x * 2

    assert tracking._retry_locked(flaky, 21) == 42
    assert len(calls) == 3 and len(sleeps) == 2 and sleeps[0] < sleeps[1]

    def broken() -> None:
        calls.append(0)
        raise MlflowException("no such run")

    calls.clear()
    with pytest.raises(MlflowException, match="no such run"):
        tracking._retry_locked(broken)
    assert len(calls) == 1  # other errors are not retried

    def always_locked() -> None:
        raise MlflowException("database is locked")

    with pytest.raises(MlflowException, match="locked"):
        tracking._retry_locked(always_locked)


# ------------------------------------------------------------------------ parent run


def test_start_and_finish_parent(store: tuple[str, Path], tmp_path: Path) -> None:
    uri, results = store
    out = tmp_path / "mlflow" / "parent.json"
    params = {"model": {"d_model": 64, "sizes": [1, 2]}, "seed": 7}
    info = start_parent(
        uri, "parent-exp", out, params=params, tags={"lmscaling.config_hash": "abc"}, run_name="wf"
    )
    assert read_json(out) == info
    assert set(info) == set(tracking.PARENT_KEYS)
    assert info["tracking_uri"] == uri and info["experiment_name"] == "parent-exp"
    assert info["mode"] == "online" and info["required"] and not info["log_models"]
    assert info["records"] == f"records/{info['invocation']}"
    assert (out.parent / info["records"] / "parent.jsonl").is_file()

    client = _client(info)
    exp = client.get_experiment(info["experiment_id"])
    assert exp.name == "parent-exp"
    assert exp.artifact_location == (results / "mlflow" / "artifacts").resolve().as_uri()
    run = client.get_run(info["parent_run_id"])
    assert run.info.status == "RUNNING"
    assert run.info.run_name == "wf"
    assert run.data.params == {"model.d_model": "64", "model.sizes": "[1, 2]", "seed": "7"}
    assert run.data.tags["lmscaling.role"] == "parent"
    assert run.data.tags["lmscaling.config_hash"] == "abc"
    assert run.data.tags["lmscaling.record_id"] == info["invocation"]
    assert (
        run.data.tags["lmscaling.workspace"]
        == read_json(out.parent / "workspace.json")["workspace"]
    )

    # A second invocation reuses the experiment.
    again = start_parent(uri, "parent-exp", tmp_path / "p2.json")
    assert again["experiment_id"] == info["experiment_id"]
    assert again["parent_run_id"] != info["parent_run_id"]

    report = tmp_path / "report.json"
    report.write_text('{"ok": true}')
    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "a.txt").write_text("a")
    counts = finish_parent(out, "FINISHED", artifacts=[report, figs, tmp_path / "missing.png"])
    assert counts["artifacts_logged"] == 2 and counts["runs_continued"] == 1
    run = client.get_run(info["parent_run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.end_time is not None
    paths = sorted(f.path for f in client.list_artifacts(info["parent_run_id"]))
    assert paths == ["figs", "report.json"]
    assert [f.path for f in client.list_artifacts(info["parent_run_id"], "figs")] == ["figs/a.txt"]

    finish_parent(tmp_path / "p2.json", "FAILED")
    assert client.get_run(again["parent_run_id"]).info.status == "FAILED"


def test_finish_parent_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        finish_parent(tmp_path / "parent.json", "DONE")
    with caplog.at_level(logging.WARNING, logger="lmscaling.tracking"):
        finish_parent(tmp_path / "parent.json", "FINISHED")  # missing file: no-op
    assert "tracking disabled" in caplog.text and "parent.json" in caplog.text
    bad = tmp_path / "bad.json"
    bad.write_text('{"tracking_uri": "sqlite:///x.db"}')
    with pytest.raises(ValueError, match="missing keys"):
        finish_parent(bad)


def test_start_parent_experiment_created_concurrently(
    store: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process creating the experiment between our lookup and create is tolerated."""
    uri, _ = store
    first = start_parent(uri, "raced", tmp_path / "a.json")
    real_get = MlflowClient.get_experiment_by_name
    lookups: list[str] = []

    def get_first_none(self: MlflowClient, name: str) -> Experiment | None:
        lookups.append(name)
        return None if len(lookups) == 1 else real_get(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", get_first_none)
    second = start_parent(uri, "raced", tmp_path / "b.json")
    assert len(lookups) == 2
    assert second["experiment_id"] == first["experiment_id"]


def test_start_parent_unreachable_server(tmp_path: Path) -> None:
    uri = "http://127.0.0.1:9"  # closed loopback port
    out = tmp_path / "parent.json"
    with pytest.raises(TrackingError, match=r"127\.0\.0\.1:9"):
        start_parent(uri, "exp", out)
    assert not out.exists()


def test_start_parent_bad_uri(tmp_path: Path) -> None:
    with pytest.raises(TrackingError, match="nosuchscheme://x"):
        start_parent("nosuchscheme://x", "exp", tmp_path / "parent.json")
    assert not (tmp_path / "parent.json").exists()


# ------------------------------------------------------------------------ child runs


def test_child_run_logs_and_finishes(parent: dict[str, str], tmp_path: Path) -> None:
    pj = tmp_path / "parent.json"
    out_dir = tmp_path / "ckpt"
    out_dir.mkdir()
    (out_dir / "model.pt").write_bytes(b"\x00" * 10)
    (out_dir / "sub").mkdir()
    (out_dir / "sub" / "log.txt").write_text("l")
    history = [
        {"step": s, "loss": 10.0 / (s + 1), "lr": 1e-3, "phase": "train"} for s in range(600)
    ]
    with child_run(pj, "train-s1", tags={"scale": "s1"}, params={"opt": {"lr": 1e-3}}) as run:
        run.log_metrics({"val_loss": 2.5, "val_bpb": 1.2}, step=600)
        run.log_metric_history(history)  # 1200 metrics: two log_batch calls
        run.set_tags({"extra": 3})
        run.log_artifact(out_dir)
        run.log_artifact(out_dir / "model.pt", artifact_path="final")
        run_id = run.run_id
        assert run.enabled

    client = _client(parent)
    r = client.get_run(run_id)
    assert r.info.status == "FINISHED"
    assert r.info.run_name == "train-s1"
    assert r.info.experiment_id == parent["experiment_id"]
    assert r.data.tags["mlflow.parentRunId"] == parent["parent_run_id"]
    assert r.data.tags["lmscaling.role"] == "child"
    assert r.data.tags["scale"] == "s1" and r.data.tags["extra"] == "3"
    assert r.data.params == {"opt.lr": "0.001"}
    assert r.data.metrics["val_loss"] == 2.5
    assert "phase" not in r.data.metrics  # non-numeric column not logged
    loss = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))
    assert loss == [(s, 10.0 / (s + 1)) for s in range(600)]
    assert len(client.get_metric_history(run_id, "lr")) == 600
    assert sorted(f.path for f in client.list_artifacts(run_id)) == ["ckpt", "final"]
    ckpt = sorted(f.path for f in client.list_artifacts(run_id, "ckpt"))
    assert ckpt == ["ckpt/model.pt", "ckpt/sub"]
    local = client.download_artifacts(run_id, "ckpt/sub/log.txt", str(tmp_path / "dl"))
    assert Path(local).read_text() == "l"


def test_child_metric_filters(
    parent: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [
        {"step": 0, "loss": 3.0, "val": None},
        {"step": 1, "loss": float("nan"), "val": 2.0},
        {"step": 2, "loss": 1.0},
    ]
    with caplog.at_level(logging.WARNING, logger="lmscaling.tracking"):
        with child_run(tmp_path / "parent.json", "filters") as run:
            run.log_metrics({"a": 1.0, "b": float("inf")}, step=3)
            run.log_metric_history(rows, keys=["loss", "val"])
            with pytest.raises(ValueError, match="'a'.*not a number"):
                run.log_metrics({"a": "high"})
            with pytest.raises(ValueError, match="row 0 has no 'it'"):
                run.log_metric_history(rows, step_key="it")
    client = _client(parent)
    assert sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, "loss")) == [
        (0, 3.0),
        (2, 1.0),
    ]
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "val")] == [(1, 2.0)]
    assert client.get_metric_history(run.run_id, "b") == []
    assert "metric 'b' at step 3 is inf" in caplog.text
    assert "metric 'loss' at step 1 is nan" in caplog.text


def test_child_failed_on_exception(parent: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="diverged"):
        with child_run(tmp_path / "parent.json", "boom") as run:
            run.log_metrics({"loss": 1.0}, step=0)
            raise RuntimeError("diverged")
    r = _client(parent).get_run(run.run_id)
    assert r.info.status == "FAILED"
    assert r.data.metrics["loss"] == 1.0
    with pytest.raises(KeyboardInterrupt):
        with child_run(tmp_path / "parent.json", "interrupted") as run:
            raise KeyboardInterrupt
    assert _client(parent).get_run(run.run_id).info.status == "KILLED"


def test_child_survives_tracking_failure(
    parent: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store failure mid-job is warned about once; the job and its outputs carry on."""
    out = tmp_path / "out.txt"
    with caplog.at_level(logging.WARNING, logger="lmscaling.tracking"):
        with child_run(tmp_path / "parent.json", "flaky") as run:
            run.log_metrics({"loss": 1.0}, step=0)

            def gone(*args: object, **kwargs: object) -> None:
                raise MlflowException("API request failed: connection refused")

            run._client.log_batch = gone  # type: ignore[union-attr,method-assign]
            run.log_metrics({"loss": 0.5}, step=1)
            run.log_metrics({"loss": 0.25}, step=2)
            run.set_tags({"x": 1})
            out.write_text("result")
    assert out.read_text() == "result"
    assert run.skipped_calls == 3 and not run.enabled  # 2 metrics, tags; then the end
    assert caplog.text.count("MLflow tracking failed") == 1
    client = _client(parent)
    assert client.get_run(run.run_id).info.status == "RUNNING"
    assert [m.value for m in client.get_metric_history(run.run_id, "loss")] == [1.0]
    # The record kept everything; the end of the workflow sends what the store missed.
    counts = finish_parent(tmp_path / "parent.json", "FINISHED")
    assert counts["runs_continued"] == 2  # the parent and this run; nothing created twice
    r = client.get_run(run.run_id)
    assert r.info.status == "FINISHED" and r.data.tags["x"] == "1"
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, "loss"))
    assert history == [(0, 1.0), (1, 0.5), (2, 0.25)]


def test_child_disabled_without_parent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for parent_json in (None, tmp_path / "missing.json"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lmscaling.tracking"):
            with child_run(parent_json, "job", tags={"a": 1}, params={"p": 1}) as run:
                run.log_params({"q": {"r": 2}})
                run.log_metrics({"loss": "not even a number"}, step=1)
                run.log_metric_history([{"no_step": 1}])
                run.set_tags({"t": 1})
                run.log_artifact(tmp_path / "nothing")
        assert "tracking disabled" in caplog.text
        assert run.run_id is None and not run.enabled
    with pytest.raises(KeyError):
        with child_run(None, "job"):
            raise KeyError("body errors still propagate")
    assert ChildRun().run_id is None


def test_child_disabled_when_store_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A server gone before the job starts: the job still runs, untracked, with a warning."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    pj = tmp_path / "parent.json"
    info = {"tracking_uri": "http://127.0.0.1:9", "experiment_id": "1", "mode": "online"}
    info.update(experiment_name="e", parent_run_id="abc", invocation="inv", records="rec")
    info.update(workspace="ab12", required=True, log_models=False)
    pj.write_text(json.dumps(info))
    ran = []
    with caplog.at_level(logging.WARNING, logger="lmscaling.tracking"):
        with child_run(pj, "job") as run:
            run.log_metrics({"loss": 1.0})
            ran.append(True)
    assert ran == [True] and run.run_id is None
    assert "cannot create child run job at http://127.0.0.1:9" in caplog.text
    # The job's record has every event, for the replay.
    (path,) = (tmp_path / "rec").glob("job.*.jsonl")
    record = read_record(path)
    assert record.status == "FINISHED" and record.run_id_for("http://127.0.0.1:9") is None
    assert [e["event"] for e in record.events] == ["metrics", "end"]
    assert record.events[0]["metrics"][0][:2] == ["loss", 1.0]


def test_child_bad_parent_file(tmp_path: Path) -> None:
    bad = tmp_path / "parent.json"
    bad.write_text(json.dumps({"tracking_uri": "sqlite:///x.db"}))
    with pytest.raises(ValueError, match="parent.json.*missing keys"):
        with child_run(bad, "job"):
            pass
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="parent.json.*invalid JSON"):
        with child_run(bad, "job"):
            pass


# ------------------------------------------------------------------------ concurrency

_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lmscaling.tracking import child_run

    parent_json, i, work = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    (work / f"ready{i}").touch()
    deadline = time.time() + 60
    while not (work / "go").exists() and time.time() < deadline:
        time.sleep(0.01)
    with child_run(parent_json, f"job{i}", tags={"job": i}, params={"i": i}) as run:
        for step in range(50):
            run.log_metrics({"loss": i + 1.0 / (step + 1)}, step=step)
        out = work / f"out{i}.txt"
        out.write_text(f"job {i}")
        run.log_artifact(out)
        if not run.enabled:
            sys.exit(f"job {i}: tracking failed")
    print("RUN_ID", run.run_id)
    """
)


def test_concurrent_children_share_sqlite(store: tuple[str, Path], tmp_path: Path) -> None:
    """8 processes write child runs to one SQLite store at the same moment."""
    uri, _ = store
    pj = tmp_path / "parent.json"
    info = start_parent(uri, "concurrent", pj)
    n = 8
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(pj), str(i), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    deadline = time.time() + 60
    while len(list(tmp_path.glob("ready*"))) < n and time.time() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    results = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "RUN_ID" in out

    finish_parent(pj, "FINISHED")
    client = _client(info)
    runs = client.search_runs(
        [info["experiment_id"]], f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}'"
    )
    assert len(runs) == n
    assert sorted(r.info.run_name for r in runs) == [f"job{i}" for i in range(n)]
    for r in runs:
        i = int(r.data.params["i"])
        assert r.info.status == "FINISHED"
        hist = sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "loss"))
        assert hist == [(s, i + 1.0 / (s + 1)) for s in range(50)]
        assert [f.path for f in client.list_artifacts(r.info.run_id)] == [f"out{i}.txt"]
        assert (tmp_path / f"out{i}.txt").read_text() == f"job {i}"
    assert client.get_run(info["parent_run_id"]).info.status == "FINISHED"
