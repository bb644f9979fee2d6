"""MLflow tracking: one parent run per workflow invocation, one child run per job.

Layout in MLflow:

* one experiment per config ``experiment_name``;
* one PARENT run per workflow invocation, created by the workflow's main process before any
  job starts (:func:`start_parent`); its ids go to a small JSON file (``parent.json``) that
  jobs read at run time (never ``MLFLOW_RUN_ID``, which would make every job write into it);
* one CHILD run per job (:func:`child_run`), linked to the parent by ``mlflow.parentRunId``
  and tagged with its rule, wildcards, attempt, git commit and config hash (:func:`job_tags`);
* at the end the main process marks the parent FINISHED or FAILED (:func:`finish_parent`).

Records first. Every run is written to an append-only *record* under ``results/mlflow/records``
(:mod:`lmscaling.records`) before anything is sent to MLflow, and MLflow is fed from those same
events. Modes (``parent.json`` ``mode``):

* ``online``: jobs send each event to the store as they go (live loss curves in the UI);
* ``offline``: jobs only write records (cluster nodes that cannot reach a server); the main
  process replays them into the store when the workflow ends (:mod:`lmscaling.replay`);
* ``disabled``: nothing is recorded.

Because the online path and the replay apply the same events with the same timestamps through
the same function (:func:`apply_event`), the same results give the same MLflow content in every
mode. A tracking failure inside a job is a warning, never a job failure: the record keeps the
run, and :func:`finish_parent` replays whatever did not reach the store.

Reruns. Job runs carry ``lmscaling.job_key`` (hash of rule + wildcards). Whenever a run with a
key is created, the runs with the same key (same results directory, ``lmscaling.workspace``)
are ordered by start time: each gets ``lmscaling.current=false`` and ``lmscaling.replaced_by``
(the record id of the next one); one still RUNNING becomes KILLED. The newest run has
``lmscaling.current=true``, so ``tags.lmscaling.current = 'true'`` shows one run per job. A
parent (and its children) left RUNNING by a killed invocation is marked KILLED when the next
invocation starts.

Every call goes through an :class:`mlflow.tracking.MlflowClient` built with an explicit
tracking URI, never through MLflow's process-global "active run".

Default store: the SQLite file ``<results_dir>/mlflow/mlflow.db``, with artifacts beside it in
``<results_dir>/mlflow/artifacts``. Several job processes may write to that one file at once;
MLflow sets a 20 s SQLite busy timeout per session, and writes that still fail with
"database is locked" are retried with exponential backoff (:func:`_retry_locked`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import numbers
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

# MLflow decides at import time whether to start its usage-telemetry client, so the opt-out
# must be in the environment first. A user who wants telemetry can set the variable to false.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import requests  # noqa: E402
from mlflow.entities import (  # noqa: E402
    Dataset,
    DatasetInput,
    InputTag,
    Metric,
    Param,
    RunTag,
)
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from lmscaling.io import CorruptFileError, read_json, sha256_file, write_json  # noqa: E402
from lmscaling.records import (  # noqa: E402
    PARENT_RECORD,
    RECORD_FORMAT,
    Record,
    RecordError,
    RecordWriter,
    new_invocation_id,
    new_record_id,
    path_digest,
    portable_path,
    read_invocation,
    record_filename,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

# MLflow limits (mlflow/utils/validation.py).
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_KEY_LENGTH = 250
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_DATASET_DIGEST_LENGTH = 36

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
MODES = ("online", "offline")
PARENT_KEYS = (
    "mode",
    "tracking_uri",
    "experiment_id",
    "experiment_name",
    "parent_run_id",
    "invocation",
    "records",
    "workspace",
    "required",
    "log_models",
)

# Tags the workflow sets (besides the job_tags of each job).
TAG_ROLE = "lmscaling.role"
TAG_RECORD = "lmscaling.record_id"
TAG_WORKSPACE = "lmscaling.workspace"
TAG_JOB_KEY = "lmscaling.job_key"
TAG_CURRENT = "lmscaling.current"
TAG_REPLACED_BY = "lmscaling.replaced_by"
TAG_RETIRED_BY = "lmscaling.retired_by"
TAG_END_REASON = "lmscaling.end_reason"

# Errors a tracking call can raise when the store misbehaves (server gone, disk full, ...).
_TRACKING_ERRORS = (MlflowException, requests.RequestException, OSError)

# In the main process (start, finish, replay): no HTTP retries, short timeout (seconds).
_FAIL_FAST_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}

_LOCK_RETRIES = 6  # attempts in all; backoff 0.25, 0.5, 1, 2, 4 s (+ jitter) between them
_HEX = re.compile(r"[0-9a-f]+")


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be reached or refused an operation."""


# --------------------------------------------------------------------------------------------
# Small helpers


def resolve_tracking_uri(results_dir: str | os.PathLike[str], configured: str | None = None) -> str:
    """Return the tracking URI to use.

    Precedence: the ``MLFLOW_TRACKING_URI`` environment variable, then ``configured`` (the
    config value), then the default SQLite store ``<results_dir>/mlflow/mlflow.db`` as an
    absolute ``sqlite:////abs/path/mlflow.db`` URI (absolute, so jobs running in another
    working directory reach the same file). Empty strings count as unset.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    if configured and configured.strip():
        return configured.strip()
    db = Path(results_dir).resolve() / "mlflow" / "mlflow.db"
    return "sqlite:///" + db.as_posix()


def config_hash(config: Mapping[str, Any]) -> str:
    """First 12 hex digits of the sha256 of ``config`` as canonical JSON.

    Canonical JSON: keys sorted, no whitespace, non-JSON values (e.g. paths) as ``str``. Two
    configs that differ only in key order have the same hash.
    """
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def git_commit(repo_dir: str | os.PathLike[str] = ".") -> str | None:
    """``git rev-parse HEAD`` in ``repo_dir``, or None (no git, not a repo, no commit yet).

    Never raises.
    """
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo_dir,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = proc.stdout.strip()
    if proc.returncode != 0 or not commit or any(c not in "0123456789abcdef" for c in commit):
        return None
    return commit


def _truncate(value: str, limit: int, key: str) -> str:
    if len(value) <= limit:
        return value
    logger.warning("MLflow value of %r truncated from %d to %d characters", key, len(value), limit)
    return value[:limit]


def _check_key(key: str) -> str:
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"MLflow key longer than {MAX_KEY_LENGTH} characters: {key[:80]!r}...")
    return key


def flatten_params(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested mapping into MLflow params ``{"a.b.c": "value"}``.

    Nested mappings become dotted keys (an empty mapping becomes the value ``"{}"``, so no key
    silently disappears); lists and tuples become JSON strings; other values become ``str``.
    Values longer than MLflow's 6000-character limit are truncated with a warning.

    Raises:
        ValueError: a flattened key is longer than MLflow's 250-character limit.
    """
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten_params(v, key))
            continue
        if isinstance(v, Mapping):
            text = "{}"
        elif isinstance(v, list | tuple):
            text = json.dumps(v, sort_keys=True, default=str)
        else:
            text = str(v)
        out[_check_key(key)] = _truncate(text, MAX_PARAM_VAL_LENGTH, key)
    return out


def _str_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {_check_key(str(k)): _truncate(str(v), MAX_TAG_VAL_LENGTH, k) for k, v in tags.items()}


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _is_locked(exc: BaseException) -> bool:
    return "database is locked" in str(exc) or "database table is locked" in str(exc)


def _retry_locked(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn``; on a SQLite "database is locked" error retry with exponential backoff.

    Other errors, and the last locked error after all attempts, propagate unchanged.
    """
    for attempt in range(_LOCK_RETRIES):
        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            if not _is_locked(exc) or attempt == _LOCK_RETRIES - 1:
                raise
            delay = 0.25 * 2**attempt * (1 + random.random())
            logger.info("SQLite store locked; retrying in %.2f s", delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _fail_fast_http() -> Iterator[None]:
    """Temporarily disable MLflow's HTTP retries and shorten its request timeout."""
    saved = {k: os.environ.get(k) for k in _FAIL_FAST_ENV}
    os.environ.update(_FAIL_FAST_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _artifact_location(tracking_uri: str) -> str | None:
    """Artifact root for a new experiment: ``<db dir>/artifacts`` for SQLite, else server's."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db_path = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]).resolve()
    return (db_path.parent / "artifacts").as_uri()


def _get_or_create_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """Experiment id for ``name``, creating the experiment if needed (race-safe)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(
                name, artifact_location=_artifact_location(tracking_uri)
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)  # created by another process meanwhile
            if exp is None:
                raise
    if exp.lifecycle_stage != "active":
        raise TrackingError(
            f"MLflow experiment {name!r} at {tracking_uri} is deleted; restore it "
            "(`mlflow experiments restore`) or choose another experiment_name"
        )
    return exp.experiment_id


def _log_batches(
    client: MlflowClient,
    run_id: str,
    metrics: Iterable[Metric] = (),
    params: Iterable[Param] = (),
    tags: Iterable[RunTag] = (),
) -> None:
    """``client.log_batch`` within MLflow's per-request limits, retrying on SQLite locks."""
    for chunk in _chunks(list(params), MAX_PARAMS_TAGS_PER_BATCH):
        _retry_locked(client.log_batch, run_id, params=chunk, synchronous=True)
    for chunk in _chunks(list(tags), MAX_PARAMS_TAGS_PER_BATCH):
        _retry_locked(client.log_batch, run_id, tags=chunk, synchronous=True)
    for chunk in _chunks(list(metrics), MAX_METRICS_PER_BATCH):
        _retry_locked(client.log_batch, run_id, metrics=chunk, synchronous=True)


def _log_path(client: MlflowClient, run_id: str, path: Path, artifact_path: str | None) -> None:
    """Log one file, or a directory's contents under ``artifact_path`` (default: its name)."""
    if path.is_dir():
        dest = artifact_path if artifact_path is not None else path.name
        _retry_locked(client.log_artifacts, run_id, str(path), dest)
    else:
        _retry_locked(client.log_artifact, run_id, str(path), artifact_path)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _to_float(key: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metric {key!r}: value {value!r} is not a number") from exc


def _metric_rows(values: Mapping[str, Any], step: int, ts: int) -> list[list[Any]]:
    """``[[key, value, ts, step], ...]`` of the finite values; None means "not measured"."""
    rows = []
    for key, value in values.items():
        if value is None:
            continue
        x = _to_float(key, value)
        if math.isfinite(x):
            rows.append([_check_key(key), x, ts, step])
        else:
            logger.warning("metric %r at step %s is %s; not logged", key, step, x)
    return rows


def dataset_from_files(paths: Sequence[str | os.PathLike[str]], name: str) -> dict[str, str]:
    """MLflow dataset fields for a list of data files, with a content digest.

    ``digest``: the first 32 hex digits of the sha256 of the files' own sha256 digests, one per
    line, in the given order (the order the training reads them), so it changes when any byte
    of the data changes and not when the files are moved. ``source``: JSON ``{"uri": common
    directory}``; ``profile``: JSON ``{"files", "bytes", "sha256"}`` (the full digest).

    Raises:
        ValueError: ``paths`` is empty.
        FileNotFoundError: a file does not exist.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise ValueError(f"dataset {name!r}: no files given")
    full = hashlib.sha256("".join(f"{sha256_file(f)}\n" for f in files).encode()).hexdigest()
    common = os.path.commonpath([portable_path(f) for f in files])
    if len(files) == 1:
        common = os.path.dirname(common) or "."
    profile = {"files": len(files), "bytes": sum(f.stat().st_size for f in files), "sha256": full}
    return {
        "name": name,
        "digest": full[:32],
        "source_type": "local",
        "source": json.dumps({"uri": Path(common).as_posix()}, sort_keys=True),
        "profile": json.dumps(profile, sort_keys=True),
    }


# --------------------------------------------------------------------------------------------
# Applying record events to a store (shared by live jobs and the replay)


def _find_run(client: MlflowClient, experiment_id: str, record_id: str) -> str | None:
    """Id of the run created for record ``record_id`` in this experiment, if any."""
    if not re.fullmatch(r"[0-9A-Za-z-]+", record_id):
        raise ValueError(f"not a record id: {record_id!r}")
    runs = _retry_locked(
        client.search_runs, [experiment_id], f"tags.`{TAG_RECORD}` = '{record_id}'", max_results=2
    )
    return runs[0].info.run_id if runs else None


def _create_run(
    client: MlflowClient, experiment_id: str, start: Mapping[str, Any], parent_run_id: str | None
) -> str:
    """Create the run of a record's ``start`` event; link it with the runs it replaces."""
    tags = dict(start["tags"])
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    if TAG_JOB_KEY in tags:
        tags[TAG_CURRENT] = "true"
    run = _retry_locked(
        client.create_run,
        experiment_id,
        start_time=int(start["start_time"]),
        tags=tags,
        run_name=start["run_name"],
    )
    _link_replacements(client, experiment_id, tags)
    return run.info.run_id


def _link_replacements(client: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> None:
    """Mark every run of one job (same job key and workspace) but the newest as replaced.

    Runs are ordered by (start time, record id); each one but the last gets
    ``lmscaling.current=false`` and ``lmscaling.replaced_by=<next run's record id>``, and one
    still RUNNING becomes KILLED at the next one's start time. The result does not depend on
    the order in which the runs were created (live, or replayed later).
    """
    key, workspace = tags.get(TAG_JOB_KEY, ""), tags.get(TAG_WORKSPACE, "")
    if not (_HEX.fullmatch(key) and _HEX.fullmatch(workspace)):
        return
    runs = _retry_locked(
        client.search_runs,
        [experiment_id],
        f"tags.`{TAG_JOB_KEY}` = '{key}' and tags.`{TAG_WORKSPACE}` = '{workspace}'",
        max_results=1000,
    )
    runs = sorted(runs, key=lambda r: (r.info.start_time, r.data.tags.get(TAG_RECORD, "")))
    for prev, nxt in zip(runs, runs[1:], strict=False):
        want = {TAG_CURRENT: "false", TAG_REPLACED_BY: nxt.data.tags.get(TAG_RECORD, "")}
        if any(prev.data.tags.get(k) != v for k, v in want.items()):
            items = [RunTag(k, v) for k, v in want.items()]
            _log_batches(client, prev.info.run_id, tags=items)
        if prev.info.status == "RUNNING":
            _retry_locked(
                client.set_terminated, prev.info.run_id, "KILLED", end_time=nxt.info.start_time
            )


def _artifact_exists(client: MlflowClient, run_id: str, dest: str) -> bool:
    parent = os.path.dirname(dest) or None
    return any(f.path == dest for f in _retry_locked(client.list_artifacts, run_id, parent))


def _model_exists(client: MlflowClient, run_id: str, name: str) -> bool:
    experiment_id = _retry_locked(client.get_run, run_id).info.experiment_id
    models = _retry_locked(
        client.search_logged_models,
        [experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{name}'",
    )
    return len(models) > 0


def _log_model(client: MlflowClient, run_id: str, path: Path, name: str) -> None:
    """Log a :func:`lmscaling.model.save_checkpoint` file with ``mlflow.pytorch.log_model``.

    The model is pickled with the ``lmscaling`` package attached as code (``code_paths``), so
    ``mlflow.pytorch.load_model`` works without the package installed.
    """
    import mlflow
    import mlflow.pytorch
    import torch

    import lmscaling
    from lmscaling.model import load_checkpoint

    model, _ = load_checkpoint(path)
    # log_model finds the store and the experiment through process-wide settings: point them
    # at this run's for the call, then restore them.
    experiment_id = _retry_locked(client.get_run, run_id).info.experiment_id
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    previous_experiment = os.environ.get("MLFLOW_EXPERIMENT_ID")
    mlflow.set_tracking_uri(client.tracking_uri)
    os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
    try:
        mlflow.pytorch.log_model(
            model,
            name=name,
            run_id=run_id,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            code_paths=[str(Path(lmscaling.__file__).parent)],
            serialization_format="pickle",  # "pt2" would need an input example to trace
        )
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_experiment is None:
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        else:
            os.environ["MLFLOW_EXPERIMENT_ID"] = previous_experiment


def apply_event(
    client: MlflowClient,
    run_id: str,
    event: Mapping[str, Any],
    record: Record,
    replay: bool = False,
) -> str:
    """Apply one record event to the MLflow run ``run_id``.

    Live jobs and :mod:`lmscaling.replay` both go through this function, which is what makes
    their MLflow content the same. With ``replay=True`` an artifact or model is first checked:
    one already in the run is not logged again ("exists"), a file that is gone ("missing") or
    whose sha256 differs from the record's ("changed", a later rerun rewrote it) is skipped with
    a warning. Metrics, params and tags are idempotent in MLflow's SQL store: applying them twice
    with the same timestamps changes nothing.

    A model that ``mlflow.pytorch.log_model`` cannot log for a reason other than the store
    (e.g. a checkpoint that no longer loads) is a warning and "failed", not an error.

    Returns:
        "logged", "exists", "missing", "changed", "failed", or "noop" (bookkeeping events).

    Raises:
        MlflowException, requests.RequestException, OSError: the store failed.
    """
    kind = event["event"]
    if kind == "params":
        _log_batches(client, run_id, params=[Param(k, v) for k, v in event["params"].items()])
    elif kind == "tags":
        _log_batches(client, run_id, tags=[RunTag(k, v) for k, v in event["tags"].items()])
    elif kind == "metrics":
        _log_batches(client, run_id, metrics=[Metric(*m) for m in event["metrics"]])
    elif kind == "dataset":
        context = InputTag("mlflow.data.context", event["context"])
        inputs = [DatasetInput(Dataset(**event["dataset"]), tags=[context])]
        _retry_locked(client.log_inputs, run_id, datasets=inputs)
    elif kind in ("artifact", "model"):
        path = record.resolve(event["path"])
        if replay:
            if kind == "artifact":
                dest = event["artifact_path"] or ""
                if not path.is_dir():
                    dest = f"{dest}/{path.name}" if dest else path.name
                elif not dest:
                    dest = path.name
                if _artifact_exists(client, run_id, dest):
                    return "exists"
            elif _model_exists(client, run_id, event["name"]):
                return "exists"
            if not path.exists():
                logger.warning("%s: %s %s is gone; not logged", record.path, kind, path)
                return "missing"
            if path_digest(path) != event["sha256"]:
                logger.warning(
                    "%s: %s %s changed since it was recorded (rewritten by a later run); "
                    "not logged",
                    record.path,
                    kind,
                    path,
                )
                return "changed"
        if kind == "artifact":
            _log_path(client, run_id, path, event["artifact_path"])
        else:
            try:
                _log_model(client, run_id, path, event["name"])
            except _TRACKING_ERRORS:
                raise
            except Exception as exc:  # the model, not the store: the run goes on without it
                logger.warning("%s: could not log model %s: %s", record.path, path, exc)
                return "failed"
    elif kind == "retire":
        _retire(client, run_id, event)
    elif kind == "end":
        _retry_locked(
            client.set_terminated, run_id, event["status"], end_time=int(event["end_time"])
        )
    else:
        return "noop"
    return "logged"


def _retire(client: MlflowClient, parent_run_id: str, event: Mapping[str, Any]) -> None:
    """Mark as not current the runs of jobs the config no longer has (a parent's "retire").

    ``event["keep"]``: ``{rule: [job keys of the config's jobs]}``. Every run of such a rule in
    the parent's workspace that is current, started before ``event["time"]`` and whose job key
    is not kept gets ``lmscaling.current=false`` and ``lmscaling.retired_by=<parent record>``,
    so that ``tags.lmscaling.current = 'true'`` shows the models of the config that ran last.
    A retired run whose job is back in the config, and that no later run replaced (its outputs
    are the current ones, so the job did not rerun), is current again and loses its
    ``retired_by``.
    """
    parent = _retry_locked(client.get_run, parent_run_id)
    workspace = parent.data.tags.get(TAG_WORKSPACE, "")
    if not _HEX.fullmatch(workspace):
        return
    by = parent.data.tags.get(TAG_RECORD, parent_run_id)
    for rule, keys in event["keep"].items():
        if not re.fullmatch(r"\w+", rule):
            continue
        runs = _retry_locked(
            client.search_runs,
            [parent.info.experiment_id],
            f"tags.`lmscaling.rule` = '{rule}' and tags.`{TAG_WORKSPACE}` = '{workspace}'",
            max_results=50000,
        )
        for run in runs:
            t = run.data.tags
            if run.info.start_time >= event["time"]:
                continue
            kept = t.get(TAG_JOB_KEY) in keys
            if t.get(TAG_CURRENT) == "true" and not kept:
                tags = [RunTag(TAG_CURRENT, "false"), RunTag(TAG_RETIRED_BY, by)]
                _log_batches(client, run.info.run_id, tags=tags)
            elif kept and TAG_RETIRED_BY in t and TAG_REPLACED_BY not in t:
                _log_batches(client, run.info.run_id, tags=[RunTag(TAG_CURRENT, "true")])
                _retry_locked(client.delete_tag, run.info.run_id, TAG_RETIRED_BY)


# --------------------------------------------------------------------------------------------
# Parent run (workflow main process)


def _read_parent(path: Path) -> dict[str, Any]:
    try:
        info = read_json(path)
    except CorruptFileError as exc:
        raise ValueError(f"{path}: not a parent-run file, invalid JSON: {exc}") from exc
    if isinstance(info, dict) and info.get("mode") == "disabled":
        return info
    missing = [k for k in PARENT_KEYS if not isinstance(info, dict) or k not in info]
    if missing:
        raise ValueError(f"{path}: not a parent-run file, missing keys {missing}")
    if info["mode"] not in MODES:
        raise ValueError(f"{path}: mode must be one of {MODES} or 'disabled', got {info['mode']!r}")
    return info


def _records_dir(parent_json: Path, info: Mapping[str, Any]) -> Path:
    return parent_json.parent / info["records"]


def _workspace_id(mlflow_dir: Path) -> str:
    """Random id of one results directory (``workspace.json``), created on first use.

    Reruns replace only runs of the same workspace, so two results directories that share an
    experiment never mark each other's runs.
    """
    path = mlflow_dir / "workspace.json"
    if path.exists():
        workspace = read_json(path).get("workspace", "")
        if _HEX.fullmatch(workspace):
            return workspace
    workspace = new_record_id()
    write_json(path, {"workspace": workspace})
    return workspace


def _previous_parent(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return _read_parent(path)
    except ValueError as exc:
        logger.warning("ignoring the previous parent-run file: %s", exc)
        return None


def _close_stale(
    parent_json: Path,
    previous: Mapping[str, Any] | None,
    client: MlflowClient | None,
    tracking_uri: str,
    now: int,
    invocation: str,
) -> int:
    """Mark KILLED the runs a killed previous invocation left RUNNING; returns how many.

    The records get ``tags`` (``lmscaling.end_reason``) and ``end`` events; with ``client``,
    the same events go to the runs that mirror them in that store. Store errors are warnings.
    """
    if not previous or previous.get("mode") not in MODES:
        return 0
    inv_dir = _records_dir(parent_json, previous)
    if not inv_dir.is_dir():
        return 0
    try:
        parent, children = read_invocation(inv_dir)
    except (RecordError, OSError) as exc:
        logger.warning("cannot check the previous invocation's records: %s", exc)
        return 0
    reason = (
        f"still RUNNING when invocation {invocation} started: the workflow (or job) that ran "
        "it was killed before it could end the run"
    )
    events = [
        {"event": "tags", "tags": {TAG_END_REASON: reason}},
        {"event": "end", "status": "KILLED", "end_time": now},
    ]
    closed = 0
    for record in [parent, *children]:
        if record.status != "RUNNING":
            continue
        closed += 1
        writer = RecordWriter(record.path)
        for event in events:
            writer.append(event)
        run_id = record.run_id_for(tracking_uri) if client is not None else None
        if run_id is None:
            continue
        try:
            for event in events:
                apply_event(client, run_id, event, record)
        except _TRACKING_ERRORS as exc:
            logger.warning("could not mark run %s KILLED: %s", run_id, exc)
    if closed:
        logger.warning(
            "marked %d run(s) of the killed invocation %s KILLED", closed, previous["invocation"]
        )
    return closed


def start_parent(
    tracking_uri: str,
    experiment_name: str,
    out_path: str | os.PathLike[str],
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    mode: str = "online",
    required: bool = True,
    log_models: bool = False,
) -> dict[str, Any]:
    """Start the workflow's parent run and write its ids to ``out_path`` (``parent.json``).

    Writes the parent's record (``<out dir>/records/<invocation>/parent.jsonl``): tags
    ``lmscaling.role=parent``, the git commit (``mlflow.source.git.commit``) and ``tags``
    (pass ``lmscaling.config_hash`` there), and ``params`` flattened (:func:`flatten_params`).
    Runs that a killed previous invocation left RUNNING are marked KILLED first.

    ``mode="online"`` also creates the run in the store now (experiment created if needed; for
    a SQLite store its artifacts go to ``<db dir>/artifacts``). If that fails: with
    ``required`` a :class:`TrackingError`; without, a warning and the invocation continues in
    offline mode (``offline_reason`` says why). ``mode="offline"`` touches the store only to
    check, when ``required``, that the main process can reach it for the final replay.
    HTTP retries are off and the request timeout is 10 s here, so a dead server fails fast.

    Returns:
        The dict written to ``out_path``: ``mode`` (as used), ``tracking_uri``,
        ``experiment_name``, ``experiment_id`` and ``parent_run_id`` (None offline),
        ``invocation``, ``records`` (relative to ``out_path``'s directory), ``workspace``,
        ``required``, ``log_models``.

    Raises:
        ValueError: ``mode`` is not "online" or "offline".
        TrackingError: ``required`` and the store at ``tracking_uri`` is unreachable, the URI
            is invalid, the experiment is deleted, or MLflow refused an operation. Nothing is
            written then.
    """
    if mode not in MODES:
        raise ValueError(f"mlflow mode must be one of {MODES}, got {mode!r}")
    out = Path(out_path)
    mlflow_dir = out.parent
    now = _now_ms()
    invocation = new_invocation_id(now / 1000)
    run_tags: dict[str, Any] = {}
    commit = git_commit()
    if commit:
        run_tags["mlflow.source.git.commit"] = commit
    run_tags.update(tags or {})
    run_tags[TAG_ROLE] = "parent"
    run_tags[TAG_RECORD] = invocation
    flat = flatten_params(params or {})
    info: dict[str, Any] = {
        "mode": mode,
        "tracking_uri": tracking_uri,
        "experiment_name": experiment_name,
        "experiment_id": None,
        "parent_run_id": None,
        "invocation": invocation,
        "records": f"records/{invocation}",
        "required": bool(required),
        "log_models": bool(log_models),
    }
    mlflow_dir.mkdir(parents=True, exist_ok=True)
    info["workspace"] = _workspace_id(mlflow_dir)
    run_tags[TAG_WORKSPACE] = info["workspace"]
    start = {
        "event": "start",
        "format": RECORD_FORMAT,
        "record_id": invocation,
        "role": "parent",
        "run_name": run_name or f"workflow {invocation}",
        "start_time": now,
        "tags": _str_tags(run_tags),
        "experiment_name": experiment_name,
        "workdir": os.path.relpath(Path.cwd(), mlflow_dir / info["records"]),
    }
    params_event = {"event": "params", "params": flat}
    record = Record(mlflow_dir / info["records"] / PARENT_RECORD, start)
    client: MlflowClient | None = None
    with _fail_fast_http():
        try:
            if mode == "online" or required:
                client = MlflowClient(tracking_uri=tracking_uri)
                info["experiment_id"] = _get_or_create_experiment(
                    client, experiment_name, tracking_uri
                )
            if mode == "online":
                assert client is not None
                info["parent_run_id"] = _create_run(client, info["experiment_id"], start, None)
                apply_event(client, info["parent_run_id"], params_event, record)
        except Exception as exc:  # any failure here means the store is unusable
            if info["parent_run_id"] and client is not None:
                with contextlib.suppress(Exception):
                    client.set_terminated(info["parent_run_id"], "FAILED")
            message = (
                f"cannot start the MLflow parent run at tracking URI {tracking_uri!r} "
                f"(experiment {experiment_name!r}): {exc}"
            )
            if required:
                raise TrackingError(message) from exc
            logger.warning("%s; continuing OFFLINE: jobs only write records", message)
            client = None
            info.update(mode="offline", parent_run_id=None, offline_reason=message)
        previous = _previous_parent(out)
        _close_stale(
            out,
            previous,
            client if previous and previous.get("tracking_uri") == tracking_uri else None,
            tracking_uri,
            now,
            invocation,
        )
        writer = RecordWriter.create(record.path, start)
        writer.append(params_event)
        if info["parent_run_id"]:
            writer.append(
                {"event": "run", "tracking_uri": tracking_uri, "run_id": info["parent_run_id"]}
            )
    write_json(out, info)
    return info


def disable_parent(out_path: str | os.PathLike[str]) -> None:
    """Write a ``parent.json`` saying tracking is off, so jobs never reuse an older parent."""
    write_json(out_path, {"mode": "disabled"})


def _sync(parent_json: Path, info: Mapping[str, Any]) -> dict[str, int]:
    """Replay what of this invocation has not reached the store yet (see finish_parent)."""
    from lmscaling import replay  # replay builds on this module

    with _fail_fast_http():
        try:
            return replay.replay_invocation(
                _records_dir(parent_json, info), info["tracking_uri"], only_unsynced=True
            )
        except (TrackingError, RecordError, *_TRACKING_ERRORS) as exc:
            message = (
                f"could not bring invocation {info['invocation']} into the MLflow store at "
                f"{info['tracking_uri']!r}: {exc}. Its records are kept under "
                f"{_records_dir(parent_json, info)}; replay them later with "
                "`python -m lmscaling.replay`"
            )
            if info["required"]:
                raise TrackingError(message) from exc
            logger.warning("%s", message)
            return {"pending": 1}


def _artifact_event(path: Path, artifact_path: str | None) -> dict[str, Any]:
    return {
        "event": "artifact",
        "path": portable_path(path),
        "artifact_path": artifact_path,
        "sha256": path_digest(path),
    }


def finish_parent(
    parent_json: str | os.PathLike[str],
    status: str = "FINISHED",
    artifacts: Iterable[str | os.PathLike[str]] = (),
    artifact_path: str | None = None,
    keep_jobs: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, int]:
    """Attach final ``artifacts`` to the parent run, end it, and sync the invocation.

    With ``keep_jobs`` (``{rule: job keys of the config's jobs}``, see :func:`job_key`) and
    status FINISHED, the runs of those rules whose jobs the config no longer has stop being
    current (a ``retire`` event; :func:`_retire`).

    Appends the artifacts and an ``end`` event to the parent's record, then replays every
    record of this invocation that has not fully reached the store (:mod:`lmscaling.replay`):
    in online mode the parent's end and any job whose tracking failed; in offline mode
    everything. Artifact paths that do not exist are skipped with a warning; a directory's
    contents go under ``artifact_path`` (default: the directory's name). If ``parent_json``
    does not exist or says tracking is disabled, this does nothing.

    Returns:
        Replay counts (see :func:`lmscaling.replay.replay_invocation`); ``{"pending": 1}``
        when the store could not be reached and ``required`` is false.

    Raises:
        ValueError: ``status`` is not one of FINISHED, FAILED, KILLED, or ``parent_json`` is
            not a parent-run file.
        TrackingError: the store could not be brought up to date and tracking is ``required``
            (the records stay; :mod:`lmscaling.replay` can retry).
    """
    if status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
    path = Path(parent_json)
    if not path.exists():
        logger.warning("tracking disabled: parent run file %s not found; nothing to finish", path)
        return {}
    info = _read_parent(path)
    if info["mode"] == "disabled":
        return {}
    writer = RecordWriter(_records_dir(path, info) / PARENT_RECORD)
    for artifact in artifacts:
        a = Path(artifact)
        if not a.exists():
            logger.warning("artifact %s does not exist; not logged to parent run", a)
            continue
        writer.append(_artifact_event(a, artifact_path))
    if keep_jobs is not None and status == "FINISHED":
        keep = {rule: sorted(keys) for rule, keys in keep_jobs.items()}
        writer.append({"event": "retire", "keep": keep, "time": _now_ms()})
    writer.append({"event": "end", "status": status, "end_time": _now_ms()})
    return _sync(path, info)


def attach_to_parent(
    parent_json: str | os.PathLike[str],
    paths: Iterable[str | os.PathLike[str]],
    artifact_path: str | None = None,
) -> dict[str, int]:
    """Attach files (e.g. the Snakemake report) to the last invocation's parent run.

    For files made after the workflow ended, such as ``snakemake --report``'s output: they are
    appended to the parent's record and synced like :func:`finish_parent` does.

    Raises:
        FileNotFoundError: ``parent_json`` or one of ``paths`` does not exist.
        ValueError: ``parent_json`` is not a parent-run file or says tracking is disabled.
        TrackingError: as :func:`finish_parent`.
    """
    path = Path(parent_json)
    info = _read_parent(path)
    if info["mode"] == "disabled":
        raise ValueError(f"{path}: tracking was disabled for the last invocation")
    events = []
    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"cannot attach {p}: no such file")
        events.append(_artifact_event(Path(p), artifact_path))
    writer = RecordWriter(_records_dir(path, info) / PARENT_RECORD)
    for event in events:
        writer.append(event)
    return _sync(path, info)


# --------------------------------------------------------------------------------------------
# Child runs (one per job)


class ChildRun:
    """One job's run. Every call is written to the job's record, then sent to MLflow.

    Both are best effort. A store failure (server gone, store error) is logged as a warning
    once; the run then stops calling MLflow (so a dead server costs one timeout, not one per
    step) and counts the calls it skipped in :attr:`skipped_calls`; the record keeps every
    event for the replay. The job and its files are never affected.

    A *disabled* run (no record, no client: tracking off) accepts every call and does nothing.
    """

    def __init__(
        self,
        client: MlflowClient | None = None,
        run_id: str | None = None,
        record: RecordWriter | None = None,
        log_models: bool = False,
        record_view: Record | None = None,
    ) -> None:
        self._client = client
        self._run_id = run_id
        self._record = record
        self._view = record_view
        self._log_models = log_models
        self._broken = False
        self.skipped_calls = 0

    @property
    def run_id(self) -> str | None:
        """MLflow run id, or None when the run is not in a store (disabled, offline, failed)."""
        return self._run_id

    @property
    def enabled(self) -> bool:
        """True when calls reach MLflow (online, run created, no tracking failure so far)."""
        return self._client is not None and self._run_id is not None and not self._broken

    @property
    def record_path(self) -> Path | None:
        """The job's record file, or None when nothing is recorded."""
        return self._record.path if self._record is not None else None

    def _emit(self, event: dict[str, Any]) -> None:
        if self._record is not None:
            self._record.append(event)
        if self._client is None or self._run_id is None:
            return
        if self._broken:
            self.skipped_calls += 1
            return
        assert self._view is not None
        try:
            apply_event(self._client, self._run_id, event, self._view)
        except _TRACKING_ERRORS as exc:
            self._broken = True
            logger.warning(
                "MLflow tracking failed (%s) for run %s: %s. Job outputs are unaffected; the "
                "job's record keeps every event for the replay; further calls to the store "
                "are skipped.",
                event["event"],
                self._run_id,
                exc,
            )

    @property
    def _active(self) -> bool:
        return self._record is not None or self._client is not None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log ``params`` flattened by :func:`flatten_params`."""
        if self._active:
            self._emit({"event": "params", "params": flatten_params(params)})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values as ``str``, truncated to 8000 characters)."""
        if self._active:
            self._emit({"event": "tags", "tags": _str_tags(tags)})

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log scalar metrics at ``step`` (default 0) in one batch.

        None values (not measured at this step) are skipped; non-finite values (NaN, inf) are
        skipped with a warning.

        Raises:
            ValueError: a value is not a number.
        """
        if not self._active:
            return
        rows = _metric_rows(metrics, int(step or 0), _now_ms())
        if rows:
            self._emit({"event": "metrics", "metrics": rows})

    def log_metric_history(
        self,
        rows: Iterable[Mapping[str, Any]],
        step_key: str = "step",
        keys: Iterable[str] | None = None,
    ) -> None:
        """Log a whole metric history, e.g. a training log, in batches of <= 1000 metrics.

        Each row holds ``step_key`` (an integer step) and metric values. ``keys`` selects the
        metrics; by default every numeric (non-bool) value except ``step_key``. A selected key
        absent from a row, or None there, is not logged for that step (metrics measured only
        every k steps); a non-finite value is skipped with a warning.

        Raises:
            ValueError: a row has no ``step_key`` or a selected value is not a number.
        """
        if not self._active:
            return
        ts = _now_ms()
        wanted = list(keys) if keys is not None else None
        items: list[list[Any]] = []
        for i, row in enumerate(rows):
            if step_key not in row:
                raise ValueError(f"metric history row {i} has no {step_key!r} key: {dict(row)}")
            if wanted is None:
                values = {
                    k: v
                    for k, v in row.items()
                    if k != step_key and isinstance(v, numbers.Real) and not isinstance(v, bool)
                }
            else:
                values = {k: row.get(k) for k in wanted}
            items.extend(_metric_rows(values, int(row[step_key]), ts))
        if items:
            self._emit({"event": "metrics", "metrics": items})

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Copy a file, or a directory's contents, into the run's artifacts.

        A directory goes under ``artifact_path`` (default: the directory's name). A path that
        does not exist is skipped with a warning. The record keeps the path and its sha256.
        """
        if not self._active:
            return
        p = Path(path)
        if not p.exists():
            logger.warning("artifact %s does not exist; not logged to run %s", p, self._run_id)
            return
        self._emit(_artifact_event(p, artifact_path))

    def log_dataset(
        self,
        paths: Sequence[str | os.PathLike[str]],
        name: str,
        context: str = "training",
    ) -> None:
        """Log data files as an MLflow dataset input with a content digest.

        See :func:`dataset_from_files` for the digest, source and profile. ``context`` is the
        input's ``mlflow.data.context`` tag ("training", "evaluation", ...).

        Raises:
            ValueError: ``paths`` is empty.
            FileNotFoundError: a file does not exist.
        """
        if self._active:
            dataset = dataset_from_files(paths, name)
            self._emit({"event": "dataset", "dataset": dataset, "context": context})

    def log_model(self, checkpoint: str | os.PathLike[str], name: str = "model") -> None:
        """Log a checkpoint with ``mlflow.pytorch.log_model`` when the config asks for it.

        A no-op unless ``mlflow.log_models`` is true (off by default: models of a big grid
        fill the artifact store). ``checkpoint`` is a :func:`lmscaling.model.save_checkpoint`
        file; the MLflow model is named ``name`` and linked to this run.
        """
        if not self._active or not self._log_models:
            return
        p = Path(checkpoint)
        event = {"event": "model", "path": portable_path(p), "name": name, "sha256": path_digest(p)}
        self._emit(event)

    def _terminate(self, status: str) -> None:
        """End the run with ``status``; a tracking failure is logged, never raised."""
        if not self._active:
            return
        self._emit({"event": "end", "status": status, "end_time": _now_ms()})
        if self.skipped_calls:
            logger.warning(
                "run %s: %d tracking calls skipped after a tracking failure; the replay at the "
                "end of the workflow sends them",
                self._run_id,
                self.skipped_calls,
            )
        if self.enabled and self._record is not None:
            assert self._client is not None
            uri = self._client.tracking_uri
            self._record.append({"event": "synced", "tracking_uri": uri, "run_id": self._run_id})


class _Terminated(SystemExit):
    """Raised in a job's main thread on SIGTERM, so its child run ends KILLED."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM (cluster time limit, Snakemake shutdown) into :class:`_Terminated`.

    Only in the main thread, and only when SIGTERM still has its default action (a handler
    the job installed itself is left alone). The default action is restored afterwards.
    """
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise _Terminated(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def child_run(
    parent_json: str | os.PathLike[str] | None,
    run_name: str,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Iterator[ChildRun]:
    """Open a job's child run under the workflow's parent run; close it on exit.

    Reads ``parent_json`` (written by :func:`start_parent`), creates the job's record
    ``<records>/<run name>.<id8>.jsonl`` and, online, a run named ``run_name`` in the same
    experiment, tagged ``{"mlflow.parentRunId": parent id, "lmscaling.role": "child",
    "lmscaling.record_id", "lmscaling.workspace", **tags}``; it marks the runs this one
    replaces (same ``lmscaling.job_key``, see the module docstring), and logs ``params``
    flattened. On normal exit the run ends FINISHED; on an exception FAILED (KILLED for
    KeyboardInterrupt or SIGTERM) and the exception propagates.

    Tracking is disabled (a warning starting "tracking disabled:" is logged and a disabled
    :class:`ChildRun` yielded) when ``parent_json`` is None or missing or says so. When the
    store cannot be reached the job runs with its record only; the workflow's end replays it.

    Raises:
        ValueError: ``parent_json`` exists but is not a parent-run file.
    """
    if parent_json is None:
        logger.warning("tracking disabled: no parent run file given for %s", run_name)
        yield ChildRun()
        return
    path = Path(parent_json)
    if not path.exists():
        logger.warning("tracking disabled: parent run file %s not found (%s)", path, run_name)
        yield ChildRun()
        return
    info = _read_parent(path)
    if info["mode"] == "disabled":
        logger.info("tracking disabled by the config (%s)", run_name)
        yield ChildRun()
        return
    record_id = new_record_id()
    all_tags = {TAG_ROLE: "child", TAG_RECORD: record_id, TAG_WORKSPACE: info["workspace"]}
    all_tags.update(tags or {})
    records_dir = _records_dir(path, info)
    start = {
        "event": "start",
        "format": RECORD_FORMAT,
        "record_id": record_id,
        "role": "child",
        "run_name": run_name,
        "start_time": _now_ms(),
        "tags": _str_tags(all_tags),
        "experiment_name": info["experiment_name"],
        "workdir": os.path.relpath(Path.cwd(), records_dir),
    }
    record_path = records_dir / record_filename(run_name, record_id)
    try:
        writer: RecordWriter | None = RecordWriter.create(record_path, start)
    except OSError as exc:
        logger.warning("cannot write the tracking record %s: %s", record_path, exc)
        writer = None
    client, run_id = None, None
    if info["mode"] == "online":
        try:
            client = MlflowClient(tracking_uri=info["tracking_uri"])
            run_id = _create_run(client, info["experiment_id"], start, info["parent_run_id"])
        except _TRACKING_ERRORS as exc:
            logger.warning(
                "MLflow unreachable: cannot create child run %s at %s: %s. The job runs on; "
                "its record %s is replayed at the end of the workflow.",
                run_name,
                info["tracking_uri"],
                exc,
                record_path,
            )
            client = None
        if run_id is not None and writer is not None:
            writer.append({"event": "run", "tracking_uri": info["tracking_uri"], "run_id": run_id})
    view = Record(record_path, start)
    child = ChildRun(client, run_id, writer, bool(info["log_models"]), view)
    if params:
        child.log_params(params)
    with _sigterm_raises():
        try:
            yield child
        except BaseException as exc:
            killed = isinstance(exc, KeyboardInterrupt | _Terminated)
            child._terminate("KILLED" if killed else "FAILED")
            raise
        child._terminate("FINISHED")


def job_key(rule: str, wildcards: Mapping[str, Any]) -> str:
    """16 hex digits identifying one job (rule + wildcards) across reruns and attempts."""
    text = json.dumps([rule, dict(wildcards.items())], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def job_tags(
    rule: str, wildcards: Mapping[str, Any], attempt: int, config: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Standard tags for a workflow job's child run.

    ``wildcards`` may be a dict or any object with ``items()`` (e.g. Snakemake's wildcards).
    Returns ``lmscaling.rule``, ``lmscaling.wildcards`` (key-sorted JSON), ``lmscaling.attempt``,
    ``lmscaling.job_key`` (:func:`job_key`, used to mark replaced runs), plus
    ``mlflow.source.git.commit`` when the working directory is a git checkout and
    ``lmscaling.config_hash`` (:func:`config_hash`) when ``config`` is given.
    """
    wc = dict(wildcards.items())
    tags = {
        "lmscaling.rule": rule,
        "lmscaling.wildcards": json.dumps(wc, sort_keys=True, default=str),
        "lmscaling.attempt": str(attempt),
        TAG_JOB_KEY: job_key(rule, wc),
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if config is not None:
        tags["lmscaling.config_hash"] = config_hash(config)
    return tags
