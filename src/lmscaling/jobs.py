"""Shared plumbing for the workflow's thin job scripts: logging and clear failures.

Each ``workflow/scripts/<rule>.py`` configures logging with :func:`configure_logging` and runs
its body inside :func:`guard`, so a known bad-input error ends the job with one line naming the
file or key, not a traceback; anything unexpected still shows its traceback in the job log.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONSOLE = "console"  # log record attribute: extra={CONSOLE: False} keeps it off stderr


def configure_logging(log_path: str | Path | None = None, level: int = logging.INFO) -> None:
    """Log to ``log_path`` (the rule's ``log:`` file) and to stderr; replaces earlier handlers.

    A record logged with ``extra={CONSOLE: False}`` goes to the log file only: the training
    progress rows while a live progress line shows them on the terminal (lmscaling.train).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.addFilter(lambda record: getattr(record, CONSOLE, True))
    handlers: list[logging.Handler] = [console]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("alembic", "urllib3", "matplotlib", "PIL", "fontTools"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def known_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or config: reported as one line, without a traceback.

    Each job runs in its own (possibly conda) environment, so a stage module whose third-party
    imports are absent there is skipped: its errors cannot occur in that job anyway.
    """
    import importlib

    found: list[type[BaseException]] = [FloatingPointError]
    for module, name in (
        ("lmscaling.config", "ConfigError"),
        ("lmscaling.data", "CorpusError"),
        ("lmscaling.tokenizer", "TokenizerError"),
        ("lmscaling.fit", "FitError"),
        ("lmscaling.tracking", "TrackingError"),
        ("lmscaling.points", "PointsError"),
        ("lmscaling.evaluate", "EvalError"),
        ("lmscaling.model", "CheckpointError"),
        ("lmscaling.train", "TrainError"),
        ("lmscaling.io", "CorruptFileError"),
        ("lmscaling.gpus", "GPUClaimError"),
        ("lmscaling.distributed", "LayoutError"),
        ("lmscaling.distributed", "LaunchError"),
    ):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except ImportError:
            continue
    return tuple(found)


# Storage errors a user fixes outside the workflow (free space, permissions), then reruns.
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
}


def _storage_message(err: OSError) -> str | None:
    """One line for a full or unwritable disk, naming the file when the error carries it."""
    reason = STORAGE_ERRNOS.get(err.errno)
    if reason is None:
        return None
    where = f" writing {err.filename}" if err.filename else ""
    return (
        f"{reason}{where}: no partial output is kept (files are written under a temporary "
        "name and renamed when complete); make room or fix the permissions, then rerun"
    )


@contextlib.contextmanager
def guard(rule: str) -> Iterator[None]:
    """Run a job body; turn a known error into ``ERROR [rule]: message`` and exit status 1.

    An interruption (KeyboardInterrupt) becomes ``ERROR [rule]: interrupted``, status 130.

    Known errors are the stage errors of :func:`known_errors` and storage errors (a full disk,
    a quota, a read-only or forbidden path: :data:`STORAGE_ERRNOS`). Any other error propagates
    with its traceback, which is also written to the job's log file.
    """
    try:
        yield
    except known_errors() as err:
        _fail(rule, str(err))
    except OSError as err:
        message = _storage_message(err)
        if message is None:
            _log_traceback(rule)
            raise
        _fail(rule, message)
    except Exception:
        _log_traceback(rule)
        raise
    except KeyboardInterrupt:  # Ctrl-C, or Snakemake stopping its jobs
        _fail(rule, "interrupted", status=130)


def _log_traceback(rule: str) -> None:
    """Write the traceback of the error being handled to the job's log file(s).

    Python prints it to stderr when it propagates; this puts it in the rule's ``log:`` file
    too, beside the job's progress lines.
    """
    record = logging.getLogger("lmscaling").makeRecord(
        "lmscaling", logging.ERROR, __file__, 0, "[%s] unexpected error", (rule,), sys.exc_info()
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _fail(rule: str, message: str, status: int = 1) -> NoReturn:
    print(f"ERROR [{rule}]: {message}", file=sys.stderr)
    logging.raiseExceptions = False  # the job log may sit on the full disk: no second report
    # to the log file: stderr has the line above already
    logging.getLogger("lmscaling").error("[%s] %s", rule, message, extra={CONSOLE: False})
    raise SystemExit(status) from None
