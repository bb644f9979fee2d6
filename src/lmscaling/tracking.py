"""MLflow tracking: one parent run per workflow invocation, one child run per job.

Layout in MLflow:

* one experiment per config ``experiment_name``;
* one PARENT run per workflow invocation, created by the workflow's main process before any
  job starts (:func:`start_parent`); its ids go to a small JSON file (``parent.json``);
* one CHILD run per job (:func:`child_run`), which reads ``parent.json`` at run time and links
  itself to the parent with the ``mlflow.parentRunId`` tag;
* at the end the main process marks the parent FINISHED or FAILED (:func:`finish_parent`).

Every call goes through an :class:`mlflow.tracking.MlflowClient` built with an explicit
tracking URI, never through MLflow's process-global "active run", so several jobs in one
process do not interfere.

Files under ``results/`` are the source of truth. Tracking only mirrors them: a tracking
failure inside a job is logged as a warning and never fails the job or touches its outputs.
Starting the parent, by contrast, fails fast with :class:`TrackingError`, so a wrong URI is
reported before any compute is spent.

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
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

# MLflow decides at import time whether to start its usage-telemetry client, so the opt-out
# must be in the environment first. A user who wants telemetry can set the variable to false.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import requests  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from lmscaling.io import read_json, write_json  # noqa: E402

logger = logging.getLogger(__name__)

T = TypeVar("T")

# MLflow limits (mlflow/utils/validation.py).
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_KEY_LENGTH = 250
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
PARENT_KEYS = ("tracking_uri", "experiment_id", "experiment_name", "parent_run_id")

# Errors a tracking call can raise when the store misbehaves (server gone, disk full, ...).
_TRACKING_ERRORS = (MlflowException, requests.RequestException, OSError)

# While starting/finishing the parent: no HTTP retries, short timeout (seconds).
_FAIL_FAST_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}

_LOCK_RETRIES = 6  # attempts in all; backoff 0.25, 0.5, 1, 2, 4 s (+ jitter) between them


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


# --------------------------------------------------------------------------------------------
# Parent run (workflow main process)


def start_parent(
    tracking_uri: str,
    experiment_name: str,
    out_path: str | os.PathLike[str],
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    run_name: str | None = None,
) -> dict[str, str]:
    """Create the workflow's parent run and write its ids to ``out_path``.

    Gets or creates the experiment ``experiment_name`` (for a SQLite store its artifacts go to
    ``<db dir>/artifacts``), creates a RUNNING run tagged ``lmscaling.role=parent`` and the git
    commit (``mlflow.source.git.commit``) plus ``tags`` (pass ``lmscaling.config_hash`` there),
    logs ``params`` flattened (:func:`flatten_params`), then writes atomically
    ``{"tracking_uri", "experiment_id", "experiment_name", "parent_run_id"}`` to ``out_path``.
    HTTP retries are off and the request timeout is 10 s during this call, so an unreachable
    server fails fast.

    Returns:
        The dict written to ``out_path``.

    Raises:
        TrackingError: the store at ``tracking_uri`` is unreachable, the URI is invalid, the
            experiment is deleted, or MLflow refused an operation. Nothing is written then.
    """
    run_tags: dict[str, Any] = {}
    commit = git_commit()
    if commit:
        run_tags["mlflow.source.git.commit"] = commit
    run_tags.update(tags or {})
    run_tags["lmscaling.role"] = "parent"
    flat = flatten_params(params or {})
    with _fail_fast_http():
        try:
            client = MlflowClient(tracking_uri=tracking_uri)
            experiment_id = _get_or_create_experiment(client, experiment_name, tracking_uri)
            run = _retry_locked(
                client.create_run, experiment_id, tags=_str_tags(run_tags), run_name=run_name
            )
        except TrackingError:
            raise
        except Exception as exc:  # any failure here means the store is unusable
            raise TrackingError(
                f"cannot start MLflow parent run at tracking URI {tracking_uri!r} "
                f"(experiment {experiment_name!r}): {exc}"
            ) from exc
        run_id = run.info.run_id
        try:
            _log_batches(client, run_id, params=[Param(k, v) for k, v in flat.items()])
        except Exception as exc:
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, "FAILED")
            raise TrackingError(
                f"cannot log params of parent run {run_id} at {tracking_uri!r}: {exc}"
            ) from exc
    info = {
        "tracking_uri": tracking_uri,
        "experiment_id": str(experiment_id),
        "experiment_name": experiment_name,
        "parent_run_id": run_id,
    }
    write_json(out_path, info)
    return info


def _read_parent(path: Path) -> dict[str, str]:
    try:
        info = read_json(path)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a parent-run file, invalid JSON: {exc}") from exc
    missing = [k for k in PARENT_KEYS if not isinstance(info, dict) or k not in info]
    if missing:
        raise ValueError(f"{path}: not a parent-run file, missing keys {missing}")
    return info


def finish_parent(
    parent_json: str | os.PathLike[str],
    status: str = "FINISHED",
    artifacts: Iterable[str | os.PathLike[str]] = (),
    artifact_path: str | None = None,
) -> None:
    """Log final ``artifacts`` to the parent run and set its status.

    Artifact paths that do not exist are skipped with a warning; a directory's contents go
    under ``artifact_path`` (default: the directory's name). If ``parent_json`` does not exist
    (tracking was never started) this logs a warning and does nothing.

    Raises:
        ValueError: ``status`` is not one of FINISHED, FAILED, KILLED, or ``parent_json`` is
            not a parent-run file.
        TrackingError: the parent run's status could not be set.
    """
    if status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
    path = Path(parent_json)
    if not path.exists():
        logger.warning("tracking disabled: parent run file %s not found; nothing to finish", path)
        return
    info = _read_parent(path)
    run_id = info["parent_run_id"]
    with _fail_fast_http():
        try:
            client = MlflowClient(tracking_uri=info["tracking_uri"])
        except Exception as exc:
            raise TrackingError(
                f"cannot open tracking URI {info['tracking_uri']!r}: {exc}"
            ) from exc
        for artifact in artifacts:
            a = Path(artifact)
            if not a.exists():
                logger.warning("artifact %s does not exist; not logged to parent run", a)
                continue
            try:
                _log_path(client, run_id, a, artifact_path)
            except _TRACKING_ERRORS as exc:
                logger.warning("could not log artifact %s to parent run %s: %s", a, run_id, exc)
        try:
            _retry_locked(client.set_terminated, run_id, status)
        except Exception as exc:
            raise TrackingError(
                f"cannot set status {status} on parent run {run_id} at "
                f"{info['tracking_uri']!r}: {exc}"
            ) from exc


# --------------------------------------------------------------------------------------------
# Child runs (one per job)


class ChildRun:
    """One job's MLflow run. Every logging method is best effort.

    A tracking failure (server gone, store error) is logged as a warning once; the run then
    stops calling MLflow (so a dead server costs one timeout, not one per step) and counts
    the calls it skipped in :attr:`skipped_calls`. The job and its files are never affected.

    A *disabled* run (``client`` or ``run_id`` None, used when tracking is off) accepts every
    call and does nothing.
    """

    def __init__(self, client: MlflowClient | None = None, run_id: str | None = None) -> None:
        self._client = client
        self._run_id = run_id
        self._broken = False
        self.skipped_calls = 0

    @property
    def run_id(self) -> str | None:
        """MLflow run id, or None for a disabled run."""
        return self._run_id

    @property
    def enabled(self) -> bool:
        """True when calls reach MLflow (not disabled and no tracking failure so far)."""
        return self._client is not None and self._run_id is not None and not self._broken

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self._client is None or self._run_id is None:
            return
        if self._broken:
            self.skipped_calls += 1
            return
        try:
            fn(*args, **kwargs)
        except _TRACKING_ERRORS as exc:
            self._broken = True
            logger.warning(
                "MLflow tracking failed in %s for run %s: %s. Job outputs are unaffected; "
                "further tracking calls for this run are skipped.",
                what,
                self._run_id,
                exc,
            )

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log ``params`` flattened by :func:`flatten_params`."""
        if self._client is None:
            return
        items = [Param(k, v) for k, v in flatten_params(params).items()]
        self._call("log_params", _log_batches, self._client, self._run_id, params=items)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values as ``str``, truncated to 8000 characters)."""
        if self._client is None:
            return
        items = [RunTag(k, v) for k, v in _str_tags(tags).items()]
        self._call("set_tags", _log_batches, self._client, self._run_id, tags=items)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log scalar metrics at ``step`` (default 0) in one batch.

        Non-finite values (NaN, inf) are skipped with a warning.

        Raises:
            ValueError: a value is not a number.
        """
        if self._client is None:
            return
        ts = _now_ms()
        items = []
        for key, value in metrics.items():
            x = _to_float(key, value)
            if math.isfinite(x):
                items.append(Metric(_check_key(key), x, ts, step or 0))
            else:
                logger.warning("metric %r at step %s is %s; not logged", key, step, x)
        self._call("log_metrics", _log_batches, self._client, self._run_id, metrics=items)

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
        if self._client is None:
            return
        ts = _now_ms()
        wanted = list(keys) if keys is not None else None
        items = []
        for i, row in enumerate(rows):
            if step_key not in row:
                raise ValueError(f"metric history row {i} has no {step_key!r} key: {dict(row)}")
            step = int(row[step_key])
            if wanted is None:
                names = [
                    k
                    for k, v in row.items()
                    if k != step_key and isinstance(v, numbers.Real) and not isinstance(v, bool)
                ]
            else:
                names = [k for k in wanted if row.get(k) is not None]
            for key in names:
                x = _to_float(key, row[key])
                if math.isfinite(x):
                    items.append(Metric(_check_key(key), x, ts, step))
                else:
                    logger.warning("metric %r at step %d is %s; not logged", key, step, x)
        self._call("log_metric_history", _log_batches, self._client, self._run_id, metrics=items)

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Copy a file, or a directory's contents, into the run's artifacts.

        A directory goes under ``artifact_path`` (default: the directory's name). A path that
        does not exist is skipped with a warning.
        """
        if self._client is None:
            return
        p = Path(path)
        if not p.exists():
            logger.warning("artifact %s does not exist; not logged to run %s", p, self._run_id)
            return
        self._call("log_artifact", _log_path, self._client, self._run_id, p, artifact_path)

    def _terminate(self, status: str) -> None:
        """Set the run's final status; a failure is logged, never raised."""
        if self._client is None or self._run_id is None:
            return
        if self.skipped_calls:
            logger.warning(
                "run %s: %d tracking calls skipped after a tracking failure",
                self._run_id,
                self.skipped_calls,
            )
        try:
            _retry_locked(self._client.set_terminated, self._run_id, status)
        except _TRACKING_ERRORS as exc:
            logger.warning("could not set status %s on run %s: %s", status, self._run_id, exc)


def _to_float(key: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metric {key!r}: value {value!r} is not a number") from exc


@contextlib.contextmanager
def child_run(
    parent_json: str | os.PathLike[str] | None,
    run_name: str,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Iterator[ChildRun]:
    """Open a job's child run under the workflow's parent run; close it on exit.

    Reads ``parent_json`` (written by :func:`start_parent`) and creates a run named
    ``run_name`` in the same experiment, tagged ``{"mlflow.parentRunId": parent id,
    "lmscaling.role": "child", **tags}``, and logs ``params`` flattened. On normal exit the run
    is marked FINISHED; on an exception FAILED (KILLED for KeyboardInterrupt) and the exception
    propagates.

    Tracking is disabled (a warning starting "tracking disabled:" is logged and a disabled
    :class:`ChildRun` yielded) when ``parent_json`` is None or missing, or when the child run
    cannot be created; the job itself always runs.

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
    all_tags = {"mlflow.parentRunId": info["parent_run_id"], "lmscaling.role": "child"}
    all_tags.update(tags or {})
    try:
        client = MlflowClient(tracking_uri=info["tracking_uri"])
        run = _retry_locked(
            client.create_run, info["experiment_id"], tags=_str_tags(all_tags), run_name=run_name
        )
    except _TRACKING_ERRORS as exc:
        logger.warning(
            "tracking disabled: cannot create child run %s at %s: %s",
            run_name,
            info["tracking_uri"],
            exc,
        )
        yield ChildRun()
        return
    child = ChildRun(client, run.info.run_id)
    if params:
        child.log_params(params)
    try:
        yield child
    except BaseException as exc:
        child._terminate("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    child._terminate("FINISHED")


def job_tags(
    rule: str, wildcards: Mapping[str, Any], attempt: int, config: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Standard tags for a workflow job's child run.

    ``wildcards`` may be a dict or any object with ``items()`` (e.g. Snakemake's wildcards).
    Returns ``lmscaling.rule``, ``lmscaling.wildcards`` (key-sorted JSON), ``lmscaling.attempt``,
    plus ``mlflow.source.git.commit`` when the working directory is a git checkout and
    ``lmscaling.config_hash`` (:func:`config_hash`) when ``config`` is given.
    """
    tags = {
        "lmscaling.rule": rule,
        "lmscaling.wildcards": json.dumps(dict(wildcards.items()), sort_keys=True, default=str),
        "lmscaling.attempt": str(attempt),
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if config is not None:
        tags["lmscaling.config_hash"] = config_hash(config)
    return tags
