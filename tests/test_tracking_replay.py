"""Tracking records, offline mode, replay, reruns and killed runs (real SQLite stores)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from lmscaling import records, replay, tracking
from lmscaling.io import read_json
from lmscaling.records import RecordError, RecordWriter, read_invocation, read_record


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated SQLite store; copying it is much faster than migrating a new one."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def new_store(empty_db: Path, tmp_path: Path) -> Callable[[str], str]:
    """``new_store(name)``: URI of a fresh store under ``tmp_path/name/results/mlflow``."""

    def make(name: str) -> str:
        db = tmp_path / name / "results" / "mlflow" / "mlflow.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty_db, db)
        return f"sqlite:///{db}"

    return make


# ------------------------------------------------------------------------ records


def _start(record_id: str = "a" * 32, start_time: int = 1000) -> dict[str, Any]:
    return {
        "event": "start",
        "format": records.RECORD_FORMAT,
        "record_id": record_id,
        "role": "child",
        "run_name": "train/x",
        "start_time": start_time,
        "tags": {},
        "experiment_name": "e",
        "workdir": "..",
    }


def test_record_roundtrip_torn_and_bad_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "inv" / "r.jsonl"
    writer = RecordWriter.create(path, _start())
    assert writer.append({"event": "metrics", "metrics": [["loss", 2.5, 7, 3]]})
    assert writer.append({"event": "end", "status": "FAILED", "end_time": 9})
    with pytest.raises(FileExistsError):
        RecordWriter.create(path, _start())
    with pytest.raises(ValueError, match="unknown record event 'oops'"):
        writer.append({"event": "oops"})
    with pytest.raises(ValueError):
        writer.append({"event": "metrics", "metrics": [["loss", float("nan"), 1, 1]]})
    rec = read_record(path)
    assert rec.record_id == "a" * 32 and rec.run_name == "train/x" and rec.start_time == 1000
    assert rec.events == [
        {"event": "metrics", "metrics": [["loss", 2.5, 7, 3]]},
        {"event": "end", "status": "FAILED", "end_time": 9},
    ]
    assert rec.status == "FAILED"
    assert rec.resolve("results/a.txt") == (tmp_path / "results" / "a.txt").resolve()
    assert rec.resolve("/abs/a.txt") == Path("/abs/a.txt")

    # A job killed mid-write leaves a torn last line: skipped, everything before it kept.
    with open(path, "a") as fh:
        fh.write('{"event":"metrics","metr')
    with caplog.at_level(logging.WARNING, logger="lmscaling.records"):
        torn = read_record(path)
    assert torn.torn_lines == 1 and len(torn.events) == 2
    assert "r.jsonl:4: torn last line" in caplog.text

    # A bad line anywhere else is an error naming the file and line.
    with open(path, "a") as fh:
        fh.write('"\n{"event":"end","status":"KILLED","end_time":10}\n')
    with pytest.raises(RecordError, match=r"r\.jsonl:4: not a tracking record event"):
        read_record(path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"event":"end","status":"KILLED","end_time":10}\n')
    with pytest.raises(RecordError, match=r"bad\.jsonl:1: a tracking record must start"):
        read_record(bad)
    bad.write_text('{"event":"start","format":99}\n')
    with pytest.raises(RecordError, match="record format 99, expected 1"):
        read_record(bad)


def test_record_sync_bookkeeping(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    writer = RecordWriter.create(path, _start())
    writer.append({"event": "run", "tracking_uri": "A", "run_id": "r1"})
    assert read_record(path).run_id_for("A") == "r1"
    assert read_record(path).run_id_for("B") is None
    assert read_record(path).synced_run("A") is None  # "run" alone is not "synced"
    writer.append({"event": "synced", "tracking_uri": "A", "run_id": "r1"})
    assert read_record(path).synced_run("A") == "r1"
    assert read_record(path).status == "RUNNING"
    writer.append({"event": "end", "status": "KILLED", "end_time": 5})  # content after sync
    assert read_record(path).synced_run("A") is None
    writer.append({"event": "synced", "tracking_uri": "B", "run_id": "r2"})
    assert read_record(path).synced_run("A") is None
    assert read_record(path).synced_run("B") == "r2"


def test_record_names_ids_and_digests(tmp_path: Path) -> None:
    assert records.record_filename("tokenize/bpe/x y/00001", "0123456789abcdef") == (
        "tokenize_bpe_x_y_00001.01234567.jsonl"
    )
    assert records.record_filename("///", "0123456789") == "run.01234567.jsonl"
    first = records.new_invocation_id(0)
    assert first.startswith("19700101T000000-") and len(first) == 24
    assert records.new_invocation_id(1e9) > first
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("abc")
    (d / "sub" / "b.txt").write_text("def")
    sha_abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert records.path_digest(d / "a.txt") == sha_abc
    digest = records.path_digest(d)
    (d / "sub" / "b.txt").rename(d / "sub" / "c.txt")
    assert records.path_digest(d) != digest  # a rename changes a tree's digest
    with pytest.raises(FileNotFoundError):
        records.path_digest(tmp_path / "absent")


def test_dataset_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    tokens = tmp_path / "results" / "tokens"
    tokens.mkdir(parents=True)
    (tokens / "part-0.bin").write_bytes(b"abc")
    (tokens / "part-1.bin").write_bytes(b"def")
    files = [tokens / "part-0.bin", tokens / "part-1.bin"]
    ds = tracking.dataset_from_files(files, "bpe/train")
    # sha256 of "sha256(abc)\nsha256(def)\n": the files' own digests, in reading order
    full = "de7ad4a6c2f0daea4b2e717eba13e90728ecb1f46840b4450916325b95905ea1"
    assert ds["name"] == "bpe/train" and ds["source_type"] == "local"
    assert ds["digest"] == full[:32]
    assert json.loads(ds["profile"]) == {"bytes": 6, "files": 2, "sha256": full}
    assert json.loads(ds["source"]) == {"uri": "results/tokens"}
    assert tracking.dataset_from_files(files[::-1], "x")["digest"] != ds["digest"]
    with pytest.raises(ValueError, match="no files"):
        tracking.dataset_from_files([], "empty")


# ------------------------------------------------------------------------ one small "workflow"


def _workflow(results: Path, uri: str, mode: str = "online") -> dict[str, Any]:
    """Parent + three jobs, as the workflow would run them: a failed attempt and its retry
    (metrics, dataset, artifact), then an evaluation; the parent ends with an artifact."""
    pj = results / "mlflow" / "parent.json"
    info = tracking.start_parent(
        uri,
        "equiv",
        pj,
        params={"train": {"lr": 0.01}},
        tags={"lmscaling.config_hash": "c"},
        run_name="workflow",
        mode=mode,
    )
    data = results / "tokens.bin"
    data.write_bytes(bytes(range(64)))
    for attempt in (1, 2):
        tags = tracking.job_tags("train_model", {"model": "L1-D16"}, attempt)
        expect = pytest.raises(RuntimeError) if attempt == 1 else contextlib.nullcontext()
        with expect:
            with tracking.child_run(pj, "train/L1-D16", tags, {"n_layer": 1}) as run:
                run.log_metric_history(
                    [{"step": s, "loss": 5.0 - s, "mfu": None} for s in range(4)]
                )
                if attempt == 1:
                    raise RuntimeError("diverged")
                run.log_dataset([data], "bpe/train")
                summary = results / "summary.json"
                summary.write_text('{"N": 100}')
                run.log_artifact(summary)
                run.log_metrics({"N": 100, "D": 4000, "C": 2.4e6})
    tags = tracking.job_tags("evaluate", {"model": "L1-D16"}, 1)
    with tracking.child_run(pj, "evaluate/L1-D16", tags) as run:
        run.log_metrics({"loss": 1.5, "perplexity": 4.48, "bpb": 0.9, "N": 100}, step=4000)
    fit = results / "fit.json"
    fit.write_text('{"b": -0.1}')
    tracking.finish_parent(pj, "FINISHED", artifacts=[fit])
    return info


def _snapshot(uri: str, same_execution: bool) -> list[dict[str, Any]]:
    """Everything a user sees of the experiment "equiv", with store-specific run ids replaced
    by the runs' positions. ``same_execution=False`` also drops what differs between two
    executions of the same jobs: timestamps, record ids, the workspace."""
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("equiv")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    runs = sorted(runs, key=lambda r: (r.info.start_time, r.data.tags[tracking.TAG_RECORD]))
    position = {r.info.run_id: i for i, r in enumerate(runs)}
    position.update({r.data.tags[tracking.TAG_RECORD]: i for i, r in enumerate(runs)})
    out = []
    for r in runs:
        tags = {k: v for k, v in r.data.tags.items() if k != "mlflow.source.git.commit"}
        for key in ("mlflow.parentRunId", tracking.TAG_RECORD, tracking.TAG_REPLACED_BY):
            if key in tags:
                tags[key] = position[tags[key]]
        if not same_execution:
            tags.pop(tracking.TAG_WORKSPACE)
        history = {
            key: sorted(
                (m.step, m.value, m.timestamp if same_execution else 0)
                for m in client.get_metric_history(r.info.run_id, key)
            )
            for key in r.data.metrics
        }
        artifacts = {}
        for f in client.list_artifacts(r.info.run_id):
            local = client.download_artifacts(r.info.run_id, f.path)
            artifacts[f.path] = hashlib.sha256(Path(local).read_bytes()).hexdigest()
        inputs = [(d.dataset.name, d.dataset.digest) for d in r.inputs.dataset_inputs]
        times = (r.info.start_time, r.info.end_time) if same_execution else None
        out.append(
            {
                "name": r.info.run_name,
                "status": r.info.status,
                "times": times,
                "params": r.data.params,
                "tags": tags,
                "metrics": history,
                "artifacts": artifacts,
                "inputs": inputs,
            }
        )
    return out


def test_online_offline_and_replay_give_the_same_mlflow_content(
    tmp_path: Path, new_store: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    online = new_store("online")
    _workflow(Path("online/results"), online)
    direct = _snapshot(online, same_execution=True)
    assert [(s["name"], s["status"]) for s in direct] == [
        ("workflow", "FINISHED"),
        ("train/L1-D16", "FAILED"),
        ("train/L1-D16", "FINISHED"),
        ("evaluate/L1-D16", "FINISHED"),
    ]
    parent, failed, train, evaluate = direct
    assert parent["tags"]["lmscaling.role"] == "parent"
    assert "mlflow.parentRunId" not in parent["tags"]
    assert parent["params"] == {"train.lr": "0.01"} and list(parent["artifacts"]) == ["fit.json"]
    assert all(s["tags"]["mlflow.parentRunId"] == 0 for s in direct[1:])
    # the failed attempt is marked as replaced by its retry; the retry is the current run
    assert failed["tags"][tracking.TAG_CURRENT] == "false"
    assert failed["tags"][tracking.TAG_REPLACED_BY] == 2
    assert train["tags"][tracking.TAG_CURRENT] == "true"
    assert tracking.TAG_REPLACED_BY not in train["tags"]
    assert [(s, v) for s, v, _ in train["metrics"]["loss"]] == [(s, 5.0 - s) for s in range(4)]
    assert "mfu" not in train["metrics"]  # None: not measured
    digest = tracking.dataset_from_files(["online/results/tokens.bin"], "bpe/train")["digest"]
    assert train["inputs"] == [("bpe/train", digest)]
    assert list(train["artifacts"]) == ["summary.json"]
    assert evaluate["metrics"]["loss"][0][:2] == (4000, 1.5)

    # The same records replayed into a fresh store: identical, timestamps included.
    fresh = new_store("fresh")
    counts = replay.replay("online/results/mlflow/records", fresh)
    assert counts["runs_created"] == 4 and counts["invocations"] == 1
    assert _snapshot(fresh, same_execution=True) == direct
    # Replaying again changes nothing.
    counts = replay.replay("online/results/mlflow/records", fresh)
    assert counts["runs_continued"] == 4 and counts["artifacts_exists"] == 2
    assert _snapshot(fresh, same_execution=True) == direct

    # The same jobs run offline (records only), replayed when the parent finishes.
    offline = new_store("offline")
    info = _workflow(Path("offline/results"), offline, mode="offline")
    assert info["mode"] == "offline" and info["parent_run_id"] is None
    assert _snapshot(offline, same_execution=False) == _snapshot(online, same_execution=False)


def _store_runs(uri: str, experiment: str) -> list[Any]:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


# ------------------------------------------------------------------------ reruns, kills


def test_rerun_marks_the_run_it_replaces(tmp_path: Path, new_store: Callable[[str], str]) -> None:
    uri = new_store("s")
    pj = tmp_path / "mlflow" / "parent.json"
    info = tracking.start_parent(uri, "reruns", pj)
    tags = tracking.job_tags("train_model", {"model": "L1"}, 1)
    other = tracking.job_tags("train_model", {"model": "L2"}, 1)
    orphan_cm = tracking.child_run(pj, "train/L1", tags)
    orphan = orphan_cm.__enter__()  # a job killed with SIGKILL: never exits its run
    with tracking.child_run(pj, "train/L2", other) as unrelated:
        pass
    with tracking.child_run(pj, "train/L1", {**tags, "lmscaling.attempt": "2"}) as retry:
        pass
    client = MlflowClient(tracking_uri=uri)
    old, new = client.get_run(orphan.run_id), client.get_run(retry.run_id)
    assert old.info.status == "KILLED"
    assert old.info.end_time == new.info.start_time
    assert old.data.tags[tracking.TAG_CURRENT] == "false"
    assert old.data.tags[tracking.TAG_REPLACED_BY] == new.data.tags[tracking.TAG_RECORD]
    assert new.info.status == "FINISHED" and new.data.tags[tracking.TAG_CURRENT] == "true"
    kept = client.get_run(unrelated.run_id)
    assert kept.data.tags[tracking.TAG_CURRENT] == "true" and kept.info.status == "FINISHED"
    current = client.search_runs([info["experiment_id"]], f"tags.`{tracking.TAG_CURRENT}` = 'true'")
    assert sorted(r.info.run_name for r in current) == ["train/L1", "train/L2"]


def test_runs_of_jobs_left_out_of_the_config_stop_being_current(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    uri = new_store("s")
    pj = tmp_path / "mlflow" / "parent.json"

    def invocation(models: list[str], status: str = "FINISHED", grid=None) -> dict:
        """Run the jobs of ``models``; the config's grid is ``grid`` (default: ``models``)."""
        info = tracking.start_parent(uri, "retire", pj)
        for m in models:
            with tracking.child_run(pj, f"train/{m}", tracking.job_tags("train_model", w(m), 1)):
                pass
        keep = {"train_model": [tracking.job_key("train_model", w(m)) for m in grid or models]}
        tracking.finish_parent(pj, status, keep_jobs=keep)
        return info

    def w(model: str) -> dict:
        return {"tokenizer": "bpe", "model": model}

    def current(store: str) -> list[str]:
        client = MlflowClient(tracking_uri=store)
        exp = client.get_experiment_by_name("retire")
        runs = client.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_CURRENT}` = 'true'")
        return sorted(r.info.run_name for r in runs)

    invocation(["L1", "L2"])
    assert current(uri) == ["train/L1", "train/L2"]
    invocation(["L3"], status="FAILED")  # a failed invocation retires nothing
    assert current(uri) == ["train/L1", "train/L2", "train/L3"]
    third = invocation(["L1"])  # L2 and L3 left the grid
    assert current(uri) == ["train/L1"]
    client = MlflowClient(tracking_uri=uri)
    retired = [r for r in _store_runs(uri, "retire") if r.info.run_name == "train/L2"]
    assert retired[0].data.tags[tracking.TAG_RETIRED_BY] == third["invocation"]
    assert client.get_run(retired[0].info.run_id).info.status == "FINISHED"
    # back to a grid with L2: its outputs are current, so its job does not rerun, and its
    # retired run is current again
    invocation(["L1"], grid=["L1", "L2"])
    assert current(uri) == ["train/L1", "train/L2"]
    back = client.get_run(retired[0].info.run_id).data.tags
    assert back[tracking.TAG_CURRENT] == "true" and tracking.TAG_RETIRED_BY not in back
    fresh = new_store("fresh")  # the records give the same in a new store
    replay.replay(pj.parent / "records", fresh)
    assert current(fresh) == ["train/L1", "train/L2"]


def test_killed_invocation_is_marked_by_the_next(
    tmp_path: Path, new_store: Callable[[str], str]
) -> None:
    uri = new_store("s")
    pj = tmp_path / "mlflow" / "parent.json"
    first = tracking.start_parent(uri, "killed", pj)
    stuck_cm = tracking.child_run(pj, "train/L1")  # the workflow is killed meanwhile:
    stuck = stuck_cm.__enter__()  # the run is never exited
    second = tracking.start_parent(uri, "killed", pj)
    assert second["workspace"] == first["workspace"]
    client = MlflowClient(tracking_uri=uri)
    for run_id in (first["parent_run_id"], stuck.run_id):
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert second["invocation"] in run.data.tags[tracking.TAG_END_REASON]
    assert client.get_run(second["parent_run_id"]).info.status == "RUNNING"
    parent_rec, (child_rec,) = read_invocation(pj.parent / first["records"])
    assert parent_rec.status == "KILLED" and child_rec.status == "KILLED"
    # The records say so too: a replay elsewhere gives the same statuses.
    fresh = new_store("fresh")
    replay.replay(pj.parent / "records", fresh)
    statuses = sorted(
        (r.info.run_name.split()[0], r.info.status) for r in _store_runs(fresh, "killed")
    )
    assert statuses == [("train/L1", "KILLED"), ("workflow", "KILLED"), ("workflow", "RUNNING")]


_SIGTERM_JOB = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lmscaling.tracking import child_run

    with child_run(sys.argv[1], "long-job") as run:
        run.log_metrics({"loss": 1.0}, step=0)
        Path(sys.argv[2]).write_text(run.run_id)
        time.sleep(60)
    """
)


def test_sigterm_ends_the_child_run_killed(tmp_path: Path, new_store: Callable[[str], str]) -> None:
    uri = new_store("s")
    pj = tmp_path / "mlflow" / "parent.json"
    tracking.start_parent(uri, "sigterm", pj)
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _SIGTERM_JOB, str(pj), str(ready)])
    deadline = time.time() + 120
    while not ready.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ready.exists(), "the job did not start"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    run = MlflowClient(tracking_uri=uri).get_run(ready.read_text())
    assert run.info.status == "KILLED" and run.data.metrics["loss"] == 1.0


# ------------------------------------------------------------------------ unreachable store


def test_unreachable_store_not_required_runs_offline(
    tmp_path: Path,
    new_store: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    dead = "http://127.0.0.1:9"
    pj = Path("results/mlflow/parent.json")
    with pytest.raises(tracking.TrackingError, match=r"127\.0\.0\.1:9"):
        tracking.start_parent(dead, "exp", pj, mode="offline")  # required: checked up front
    assert not pj.exists()
    with caplog.at_level(logging.WARNING, logger="lmscaling.tracking"):
        info = tracking.start_parent(dead, "exp", pj, required=False, params={"seed": 1})
    assert info["mode"] == "offline" and "127.0.0.1:9" in info["offline_reason"]
    assert "continuing OFFLINE" in caplog.text
    out = Path("results/model.txt")
    with tracking.child_run(pj, "train/L1", tracking.job_tags("train_model", {}, 1)) as run:
        run.log_metrics({"loss": 2.0}, step=1)
        out.write_text("weights")
        run.log_artifact(out)
    assert run.run_id is None and run.record_path is not None and out.read_text() == "weights"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lmscaling.tracking"):
        assert tracking.finish_parent(pj, "FINISHED") == {"pending": 1}
    assert "replay them later with `python -m lmscaling.replay`" in caplog.text
    parent_rec, (child_rec,) = read_invocation(pj.parent / info["records"])
    assert parent_rec.status == "FINISHED" and child_rec.status == "FINISHED"

    # Later, from a machine that reaches a store: the command line replays everything.
    uri = new_store("later")
    code = replay.main([str(pj.parent / "records"), "--tracking-uri", uri])
    assert code == 0
    runs = _store_runs(uri, "exp")
    assert [(r.info.run_name, r.info.status) for r in runs][1:] == [("train/L1", "FINISHED")]
    assert runs[1].data.metrics == {"loss": 2.0} and runs[0].data.params == {"seed": "1"}
    assert runs[1].data.tags["mlflow.parentRunId"] == runs[0].info.run_id
    assert replay.main([str(tmp_path / "nothing"), "--tracking-uri", uri]) == 1


def test_replay_skips_changed_and_missing_artifacts(
    tmp_path: Path,
    new_store: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    pj = Path("results/mlflow/parent.json")
    tracking.start_parent("http://127.0.0.1:9", "art", pj, mode="offline", required=False)
    a, b = Path("results/a.txt"), Path("results/b.txt")
    a.write_text("a1")
    b.write_text("b1")
    with tracking.child_run(pj, "job") as run:
        run.log_artifact(a)
        run.log_artifact(b)
    a.write_text("a2")  # rewritten by a later run
    b.unlink()
    with caplog.at_level(logging.WARNING, logger="lmscaling.tracking"):
        counts = replay.replay("results/mlflow/records", new_store("s"))
    assert counts["artifacts_changed"] == 1 and counts["artifacts_missing"] == 1
    assert "a.txt changed since it was recorded" in caplog.text and "b.txt is gone" in caplog.text


# ------------------------------------------------------------------------ models, attach, off


def test_log_model_when_asked(
    tmp_path: Path, new_store: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pytorch
    import torch

    from lmscaling.model import GPT, GPTConfig, save_checkpoint

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, context_length=8, n_layer=1, d_model=8, n_head=2))
    ckpt = Path("results/model.pt")
    save_checkpoint(ckpt, model)
    uri = new_store("s")
    pj = Path("results/mlflow/parent.json")
    for log_models in (False, True):
        tracking.start_parent(uri, "models", pj, log_models=log_models)
        with tracking.child_run(pj, f"train/{log_models}") as run:
            run.log_model(ckpt)
        kinds = [e["event"] for e in read_record(run.record_path).events]
        assert ("model" in kinds) == log_models
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("models")
    (logged,) = client.search_logged_models([exp.experiment_id])
    assert logged.source_run_id == run.run_id and logged.name == "model"
    loaded = mlflow.pytorch.load_model(logged.artifact_location)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    fresh = new_store("fresh")
    assert replay.replay("results/mlflow/records", fresh)["models_logged"] == 1
    assert replay.replay("results/mlflow/records", fresh)["models_exists"] == 1


def test_attach_and_disabled(
    tmp_path: Path, new_store: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = new_store("s")
    pj = Path("results/mlflow/parent.json")
    info = tracking.start_parent(uri, "attach", pj)
    tracking.finish_parent(pj, "FINISHED")
    report = Path("results/report.html")
    report.write_text("<html></html>")
    assert replay.main(["--attach", str(report), "--parent", str(pj)]) == 0
    client = MlflowClient(tracking_uri=uri)
    assert [f.path for f in client.list_artifacts(info["parent_run_id"])] == ["report.html"]
    assert client.get_run(info["parent_run_id"]).info.status == "FINISHED"
    with pytest.raises(FileNotFoundError, match="absent.html"):
        tracking.attach_to_parent(pj, ["absent.html"])

    tracking.disable_parent(pj)
    assert read_json(pj) == {"mode": "disabled"}
    with tracking.child_run(pj, "job") as run:
        run.log_metrics({"loss": 1.0})
    assert run.run_id is None and run.record_path is None
    assert tracking.finish_parent(pj, "FINISHED") == {}
    assert len(os.listdir(pj.parent / "records")) == 1  # nothing recorded while disabled
