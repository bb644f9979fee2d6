"""Replay tracking records into an MLflow store.

Jobs write every run to a record under ``results/mlflow/records`` (:mod:`lmscaling.records`).
This module feeds records to a store: at the end of an offline invocation (from
:func:`lmscaling.tracking.finish_parent`), to catch up after a tracking failure, or by hand,
e.g. after copying ``results/`` from a cluster to a machine that can reach the server::

    python -m lmscaling.replay                                   # results/mlflow/records
    python -m lmscaling.replay path/to/records --tracking-uri http://mlflow.example:5000
    python -m lmscaling.replay --attach results/report.html      # add a file to the last parent

Replaying is idempotent. Each run carries its record id (tag ``lmscaling.record_id``); a record
whose run already exists in the store continues that run: metrics, params and tags logged
again with the same timestamps change nothing, artifacts already there are not copied again.
Events go through :func:`lmscaling.tracking.apply_event`, the function live jobs use, so a
replayed run has the same names, tags, params, metric histories (steps, values, timestamps),
datasets, artifacts, statuses and start/end times as a run logged live.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from lmscaling import tracking
from lmscaling.records import (
    Record,
    RecordError,
    RecordWriter,
    invocation_dirs,
    read_invocation,
)

logger = logging.getLogger(__name__)


def _coalesce(events: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The events, with each run of consecutive ``metrics`` events merged into one."""
    pending: list[list[Any]] = []
    for event in events:
        if event["event"] == "metrics":
            pending.extend(event["metrics"])
            continue
        if pending:
            yield {"event": "metrics", "metrics": pending}
            pending = []
        yield event
    if pending:
        yield {"event": "metrics", "metrics": pending}


def apply_record(
    client: MlflowClient,
    experiment_id: str,
    record: Record,
    parent_run_id: str | None = None,
) -> tuple[str, Counter[str]]:
    """Bring one record into the store: create its run (or continue it) and apply its events.

    Returns:
        ``(run id, counts)``; counts: ``runs_created`` or ``runs_continued``, ``metrics``, and
        per artifact/model outcome ``artifacts_logged``, ``artifacts_exists``,
        ``artifacts_missing``, ``artifacts_changed`` (``models_...`` likewise).

    Raises:
        MlflowException, requests.RequestException, OSError: the store failed.
    """
    counts: Counter[str] = Counter()
    run_id = tracking._find_run(client, experiment_id, record.record_id)
    if run_id is None:
        run_id = tracking._create_run(client, experiment_id, record.start, parent_run_id)
        counts["runs_created"] += 1
    else:
        counts["runs_continued"] += 1
    for event in _coalesce(record.events):
        outcome = tracking.apply_event(client, run_id, event, record, replay=True)
        if event["event"] == "metrics":
            counts["metrics"] += len(event["metrics"])
        elif event["event"] in ("artifact", "model"):
            counts[f"{event['event']}s_{outcome}"] += 1
    return run_id, counts


def replay_invocation(
    inv_dir: str | os.PathLike[str],
    tracking_uri: str,
    experiment_name: str | None = None,
    only_unsynced: bool = False,
) -> dict[str, int]:
    """Replay one invocation's records: its parent run, then its jobs' runs, oldest first.

    ``experiment_name`` defaults to the one in the parent's record. With ``only_unsynced``,
    records already fully in this store (a ``synced`` event for ``tracking_uri``) are skipped;
    the others are applied (continuing their run when it exists). Each record that reaches the
    store gets a ``synced`` event.

    Returns:
        Counts: ``runs_created``, ``runs_continued``, ``runs_skipped``, ``metrics``,
        ``artifacts_logged``/``_exists``/``_missing``/``_changed``, ``models_...``.

    Raises:
        RecordError: a record is malformed.
        tracking.TrackingError: the experiment is deleted.
        MlflowException, requests.RequestException, OSError: the store failed.
    """
    parent, children = read_invocation(inv_dir)
    client = MlflowClient(tracking_uri=tracking_uri)
    name = experiment_name or parent.start["experiment_name"]
    experiment_id = tracking._get_or_create_experiment(client, name, tracking_uri)
    counts: Counter[str] = Counter()
    parent_run_id = None
    for record in [parent, *children]:
        synced = record.synced_run(tracking_uri) if only_unsynced else None
        if synced is not None:
            counts["runs_skipped"] += 1
            run_id = synced
        else:
            run_id, c = apply_record(client, experiment_id, record, parent_run_id)
            counts.update(c)
            RecordWriter(record.path).append(
                {"event": "synced", "tracking_uri": tracking_uri, "run_id": run_id}
            )
        if record is parent:
            parent_run_id = run_id
    return dict(counts)


def replay(
    records_root: str | os.PathLike[str],
    tracking_uri: str,
    experiment_name: str | None = None,
    only_unsynced: bool = False,
) -> dict[str, int]:
    """Replay every invocation under ``records_root`` in chronological order.

    Returns:
        Counts summed over invocations (see :func:`replay_invocation`), plus ``invocations``.

    Raises:
        RecordError: ``records_root`` holds no invocation, or a record is malformed.
        As :func:`replay_invocation`.
    """
    dirs = invocation_dirs(records_root)
    if not dirs:
        raise RecordError(f"{records_root}: no tracking records (no */parent.jsonl)")
    total: Counter[str] = Counter()
    for d in dirs:
        total.update(replay_invocation(d, tracking_uri, experiment_name, only_unsynced))
        total["invocations"] += 1
    return dict(total)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: replay records, or attach files to the last invocation's parent run."""
    ap = argparse.ArgumentParser(
        prog="python -m lmscaling.replay",
        description="Replay lmscaling tracking records into an MLflow store (idempotent).",
    )
    ap.add_argument(
        "records",
        nargs="?",
        default="results/mlflow/records",
        help="records directory (default: %(default)s)",
    )
    ap.add_argument(
        "--tracking-uri",
        help="store to fill (default: MLFLOW_TRACKING_URI, else the SQLite store "
        "<results>/mlflow/mlflow.db beside the records)",
    )
    ap.add_argument("--experiment", help="experiment name (default: the one recorded)")
    ap.add_argument(
        "--attach",
        nargs="+",
        metavar="FILE",
        help="instead of replaying: attach FILEs (e.g. the Snakemake report) to the last "
        "invocation's parent run",
    )
    ap.add_argument(
        "--parent",
        default="results/mlflow/parent.json",
        help="with --attach: the parent-run file (default: %(default)s)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.attach:
            counts = tracking.attach_to_parent(args.parent, args.attach)
        else:
            root = Path(args.records)
            uri = args.tracking_uri or tracking.resolve_tracking_uri(root.parent.parent)
            with tracking._fail_fast_http():
                counts = replay(root, uri, args.experiment)
            print(f"replayed into {uri}")
    except (ValueError, OSError, tracking.TrackingError, *tracking._TRACKING_ERRORS) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
