"""Tracking records: one append-only journal per MLflow run, kept under ``results/``.

Every run the workflow tracks (the parent run of an invocation and one child run per job) is
first written to a *record*: a JSON Lines file with one event per line, in the order the job
produced them. MLflow is then fed from those same events, either live (online mode) or later by
:mod:`lmscaling.replay` (offline mode, or to catch up after a tracking failure). Because both
paths apply the same events, the same results give the same MLflow content in every mode.

Layout (``<mlflow dir>`` is ``results/mlflow``)::

    <mlflow dir>/records/<invocation id>/parent.jsonl             the invocation's parent run
    <mlflow dir>/records/<invocation id>/<run name>.<id8>.jsonl   one per job (child run)

Invocation ids start with the UTC start time (``20250101T120000-1a2b3c4d``), so sorting the
directory names sorts invocations chronologically.

Events (each a JSON object with an ``event`` key):

=========  ===================================================================================
start      first line: ``format``, ``record_id``, ``role`` (parent/child), ``run_name``,
           ``start_time`` (ms since the epoch), ``tags``, ``experiment_name``, ``workdir`` (the
           job's working directory relative to the record's directory)
params     ``params``: flattened ``{key: str value}``
tags       ``tags``: ``{key: str value}``
metrics    ``metrics``: ``[[key, value, timestamp ms, step], ...]``
dataset    ``dataset``: MLflow dataset fields (name, digest, source_type, source, profile),
           ``context`` (e.g. "training")
artifact   ``path`` (relative to ``workdir`` unless absolute), ``artifact_path``, ``sha256``
model      ``path`` of a model checkpoint, ``name``, ``sha256``
run        ``tracking_uri``, ``run_id``: the MLflow run that mirrors this record in that store
end        ``status`` (FINISHED, FAILED, KILLED), ``end_time`` (ms), optional ``reason``
synced     ``tracking_uri``, ``run_id``: every earlier event has reached that store
=========  ===================================================================================

A record is appended to, never rewritten: each event is one ``write`` of one line, so a job
killed mid-write leaves at most a torn last line, which :func:`read_record` skips with a
warning. Everything before it is intact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmscaling.io import sha256_file

logger = logging.getLogger(__name__)

RECORD_FORMAT = 1
PARENT_RECORD = "parent.jsonl"
EVENTS = (
    "start",
    "params",
    "tags",
    "metrics",
    "dataset",
    "artifact",
    "model",
    "run",
    "retire",
    "end",
    "synced",
)
# Events that only say where a record is mirrored; they carry no run content.
BOOKKEEPING = ("run", "synced")


class RecordError(ValueError):
    """A tracking record is malformed; the message names the file and line."""


def new_record_id() -> str:
    """A fresh random record id (32 hex digits)."""
    return uuid.uuid4().hex


def new_invocation_id(now: float | None = None) -> str:
    """Id of one workflow invocation: UTC start time + 8 random hex digits.

    Example: ``20250101T120000-1a2b3c4d``. Ids sort in start order (to the second).
    """
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


def record_filename(run_name: str, record_id: str) -> str:
    """File name of a child record: the run name made file-safe, then the id's first 8 digits."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_name).strip("._")[:80] or "run"
    return f"{safe}.{record_id[:8]}.jsonl"


def path_digest(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, or of a directory tree.

    A directory's digest hashes, in sorted order, each file's relative POSIX path and its own
    sha256, so it changes when any file is added, removed, renamed or edited.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    p = Path(path)
    if not p.is_dir():
        return sha256_file(p)
    digest = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        digest.update(f"{f.relative_to(p).as_posix()}\0{sha256_file(f)}\n".encode())
    return digest.hexdigest()


def portable_path(path: str | os.PathLike[str]) -> str:
    """``path`` as stored in a record: relative to the working directory when inside it.

    Relative paths stay valid when the whole results tree is moved or copied to another
    machine (e.g. from a cluster to a machine that can reach the tracking server).
    """
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.as_posix()


class RecordWriter:
    """Appends events to one record file.

    A failed write (disk full, read-only copy) is logged as a warning once and later writes are
    skipped: tracking never fails a job.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.failed = False

    @classmethod
    def create(cls, path: str | os.PathLike[str], start: Mapping[str, Any]) -> RecordWriter:
        """Create a new record whose first line is the ``start`` event.

        Raises:
            FileExistsError: a record already exists at ``path``.
            OSError: the directory cannot be created or written.
        """
        writer = cls(path)
        writer.path.parent.mkdir(parents=True, exist_ok=True)
        with open(writer.path, "x", encoding="utf-8") as fh:
            fh.write(_line(start))
        return writer

    def append(self, event: Mapping[str, Any]) -> bool:
        """Append one event as a single line; returns False when it was not written."""
        if self.failed:
            return False
        line = _line(event)
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError as exc:
            self.failed = True
            logger.warning(
                "cannot write tracking record %s: %s; later events skipped", self.path, exc
            )
            return False
        return True


def _line(event: Mapping[str, Any]) -> str:
    if event.get("event") not in EVENTS:
        raise ValueError(f"unknown record event {event.get('event')!r}")
    return json.dumps(event, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"


@dataclass
class Record:
    """A record read back: its ``start`` event and every later event, in order."""

    path: Path
    start: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    torn_lines: int = 0

    @property
    def record_id(self) -> str:
        return self.start["record_id"]

    @property
    def role(self) -> str:
        return self.start["role"]

    @property
    def run_name(self) -> str:
        return self.start["run_name"]

    @property
    def start_time(self) -> int:
        return int(self.start["start_time"])

    @property
    def status(self) -> str:
        """Status of the last ``end`` event, or RUNNING when there is none."""
        ends = [e for e in self.events if e["event"] == "end"]
        return ends[-1]["status"] if ends else "RUNNING"

    def run_id_for(self, tracking_uri: str) -> str | None:
        """Id of the run mirroring this record in the store at ``tracking_uri``, if known."""
        ids = [
            e["run_id"]
            for e in self.events
            if e["event"] in BOOKKEEPING and e["tracking_uri"] == tracking_uri
        ]
        return ids[-1] if ids else None

    def synced_run(self, tracking_uri: str) -> str | None:
        """Run id if every content event has reached the store at ``tracking_uri``, else None."""
        run_id = None
        for e in self.events:
            if e["event"] == "synced" and e["tracking_uri"] == tracking_uri:
                run_id = e["run_id"]
            elif e["event"] not in BOOKKEEPING:
                run_id = None
        return run_id

    def resolve(self, path: str) -> Path:
        """A path stored in this record, resolved against the job's working directory."""
        p = Path(path)
        if p.is_absolute():
            return p
        return (self.path.parent / self.start.get("workdir", ".") / p).resolve()


def read_record(path: str | os.PathLike[str]) -> Record:
    """Read a record file.

    A malformed *last* line without a trailing newline is a torn write from a killed job: it is
    skipped with a warning and counted in :attr:`Record.torn_lines`.

    Raises:
        RecordError: the first line is not a ``start`` event of a known format, or a line other
            than a torn last line is not a JSON event.
    """
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    events: list[dict[str, Any]] = []
    torn = 0
    for i, line in enumerate(lines, start=1):
        try:
            event = json.loads(line)
            if not isinstance(event, dict) or event.get("event") not in EVENTS:
                raise ValueError("not a record event")
        except ValueError as exc:
            if i == len(lines) and not text.endswith("\n"):
                logger.warning("%s:%d: torn last line skipped (job killed mid-write)", p, i)
                torn += 1
                continue
            raise RecordError(f"{p}:{i}: not a tracking record event: {exc}") from exc
        events.append(event)
    if not events or events[0]["event"] != "start":
        raise RecordError(f"{p}:1: a tracking record must start with a 'start' event")
    start = events[0]
    if start.get("format") != RECORD_FORMAT:
        raise RecordError(f"{p}:1: record format {start.get('format')!r}, expected {RECORD_FORMAT}")
    return Record(path=p, start=start, events=events[1:], torn_lines=torn)


def read_invocation(inv_dir: str | os.PathLike[str]) -> tuple[Record, list[Record]]:
    """The parent record of one invocation and its child records, oldest first.

    Children are ordered by (start time, record id), so the order is the same on every read.

    Raises:
        RecordError: ``inv_dir`` has no ``parent.jsonl`` or a record is malformed.
    """
    d = Path(inv_dir)
    parent_path = d / PARENT_RECORD
    if not parent_path.exists():
        raise RecordError(f"{d}: no {PARENT_RECORD}; not an invocation's records directory")
    parent = read_record(parent_path)
    children = [read_record(p) for p in sorted(d.glob("*.jsonl")) if p.name != PARENT_RECORD]
    children.sort(key=lambda r: (r.start_time, r.record_id))
    return parent, children


def invocation_dirs(records_root: str | os.PathLike[str]) -> list[Path]:
    """Invocation directories under ``records_root`` (those holding a parent record), in start
    order: by the parent's start time (milliseconds), then by name. The names sort by start
    only to the second, and a replay must apply invocations in the order they ran (a later
    one may retire runs of an earlier one)."""
    root = Path(records_root)
    if not root.is_dir():
        return []

    def start_time(d: Path) -> int:
        """Start of invocation ``d`` in ms since the epoch (its parent record's first line)."""
        with open(d / PARENT_RECORD, encoding="utf-8") as fh:
            try:
                return int(json.loads(fh.readline()).get("start_time", 0))
            except (ValueError, TypeError, AttributeError):
                return 0  # reading the record names the problem

    dirs = [d for d in root.iterdir() if (d / PARENT_RECORD).is_file()]
    return sorted(dirs, key=lambda d: (start_time(d), d.name))
