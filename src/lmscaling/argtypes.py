"""``argparse`` types of the command-line tools: a bad value is a usage error naming the option.

Used by ``lmscaling`` (:mod:`lmscaling.cli`) and the scripts in ``benchmarks/``.
"""

from __future__ import annotations

import argparse
import math


def _integer(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} must be {minimum} or more")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (steps, rounds, threads, resamples)."""
    return _integer(text, 1)


def count(text: str) -> int:
    """An integer >= 0 (0 turns the thing off, e.g. ``--bootstrap 0``)."""
    return _integer(text, 0)


MAX_RESAMPLES = 100_000  # fit.bootstrap's maximum in the config schema; memory grows with it


def resamples(text: str) -> int:
    """A bootstrap resample count in [0, :data:`MAX_RESAMPLES`] (0 = no bootstrap)."""
    n = count(text)
    if n > MAX_RESAMPLES:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {MAX_RESAMPLES:,} resamples")
    return n


def positive_float(text: str) -> float:
    """A finite number > 0 (a size, N, D, a FLOP budget)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def level(text: str) -> float:
    """A confidence level in (0, 1)."""
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a level in (0, 1), e.g. 0.95")
    return value


def add_step_timing_options(
    parser: argparse.ArgumentParser, steps: int, warmup: int, rounds: int, threads: int
) -> None:
    """The options of the benchmarks that time steps of two sides in alternating runs:
    ``--steps`` (timed), ``--warmup`` (untimed first steps), ``--rounds`` (runs per side) and
    ``--threads`` (torch CPU threads), with these defaults."""
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=steps,
        help="timed steps per run (a multiple of --warmup)",
    )
    parser.add_argument(
        "--warmup", type=positive_int, default=warmup, help="untimed steps before them"
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=rounds, help="alternating runs per side"
    )
    parser.add_argument("--threads", type=positive_int, default=threads, help="torch CPU threads")
