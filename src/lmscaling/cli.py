"""Command line: fit a points table, predict loss from a saved fit, plan a compute budget.

    lmscaling fit TABLE.csv|TABLE.parquet [-o DIR]      every fit, JSON + figures in DIR
    lmscaling show FIT.json                             the summary `fit` prints
    lmscaling predict FIT.json --N 1e9 --D 2e10         loss at (N, D) with intervals
    lmscaling plan FIT.json --budget 1e21 [1e22 ...]    compute-optimal N and D per budget

A table needs the columns ``loss`` (nats/token), ``N`` (non-embedding parameters) and ``D``
(tokens) or ``C`` (FLOP); ``--column N="Model Size"`` maps other names. The workflow's
``results/eval/points.parquet`` works as is. Exit status: 0 on success, 1 on bad input (one
line on stderr naming the file or column), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

import numpy as np

from lmscaling.argtypes import MAX_RESAMPLES, count, level, positive_float, resamples

FIELDS = ("N", "D", "C", "loss", "tokenizer", "eval_set", "model", "budget")


def _columns(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or field not in FIELDS:
            raise argparse.ArgumentTypeError(
                f"--column {pair!r}: use FIELD=COLUMN with FIELD one of {', '.join(FIELDS)}"
            )
        out[field] = column
    return out


def _label(group: dict) -> str:
    from lmscaling.fit import group_label

    return group_label(group)


def _groups(result: dict, args: argparse.Namespace) -> list[dict]:
    from lmscaling.fit import FitError

    groups = [
        g
        for g in result["groups"]
        if (args.tokenizer is None or g["tokenizer"] == args.tokenizer)
        and (args.eval_set is None or g["eval_set"] == args.eval_set)
    ]
    if not groups:
        names = [_label(g) for g in result["groups"]]
        raise FitError(f"no group matches --tokenizer/--eval-set; groups are {names}")
    return groups


def _read_fit(path: str) -> dict:
    from lmscaling.fit import FitError
    from lmscaling.io import CorruptFileError, read_json

    try:
        result = read_json(path)
    except FileNotFoundError:
        raise FitError(f"{path}: no such file") from None
    except CorruptFileError as err:
        raise FitError(f"{path}: not JSON: {err.__cause__}") from None
    if not isinstance(result, dict) or "groups" not in result:
        raise FitError(f"{path}: not a scaling-law fit (no 'groups'); use `lmscaling fit` first")
    groups = result["groups"]
    keys = {"tokenizer", "eval_set", "n_points", "fits", "warnings"}
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and keys <= g.keys() and isinstance(g["fits"], dict) for g in groups
    ):
        raise FitError(
            f"{path}: not a scaling-law fit (each of 'groups' needs {sorted(keys)}); "
            "use `lmscaling fit` to write one"
        )
    return result


def _json(value) -> str:
    """Strict JSON (``null`` for an overflowed or undefined number, never ``Infinity``)."""

    def strict(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: strict(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [strict(x) for x in v]
        return v

    return json.dumps(strict(value), indent=2, allow_nan=False)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.4g}"


def _ci(pair) -> str:
    if not pair:
        return "[-]"
    return f"[{_fmt(pair[0])}, {_fmt(pair[1])}]"


def cmd_fit(args: argparse.Namespace) -> int:
    """``lmscaling fit``: every fit of :func:`lmscaling.fit.fit_scaling_laws`, JSON + figures."""
    from lmscaling import fit
    from lmscaling.io import write_json

    # The summary printed below lists every fit warning under its group; without a handler,
    # logging's last-resort handler would print each one a second time.
    logging.getLogger(fit.__name__).addHandler(logging.NullHandler())
    points = fit.read_points(args.table, _columns(args.column))
    if args.drop_highest_loss:
        points = fit.drop_highest_loss(points, args.drop_highest_loss, args.table)
    settings = fit.FitSettings(
        confidence=args.confidence,
        axes=tuple(args.axes),
        bootstrap=args.bootstrap,
        holdout=args.holdout,
        budgets=args.budget,
        seed=args.seed,
    )
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise fit.FitError(f"-o {out}: exists and is not a directory")
    result = fit.fit_scaling_laws(points, settings=settings, source=str(args.table))
    write_json(out / "scaling_law.json", result)
    written, stale = [out / "scaling_law.json"], []
    for name, plot in (
        ("scaling_law", fit.plot_scaling_laws),
        ("residuals", fit.plot_residuals),
        ("isoflop", fit.plot_isoflop),
    ):
        files = [out / f"{name}.png", out / f"{name}.svg"]
        if not args.no_plots:
            plot(result, *files)
            written += files
            continue
        for path in files:  # an earlier fit's figures must not sit beside this JSON
            if path.exists():
                path.unlink()
                stale.append(path)
    _print_summary(result["groups"])
    print("wrote " + ", ".join(str(p) for p in written))
    if stale:
        print("removed the figures of an earlier fit: " + ", ".join(str(p) for p in stale))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """``lmscaling show``: the summary ``lmscaling fit`` prints, from a saved fit."""
    groups = _groups(_read_fit(args.fit), args)
    if args.json:
        print(_json({"groups": groups}))
    else:
        _print_summary(groups)
    return 0


def _print_summary(groups: list[dict]) -> None:
    """Per group: its points, each power law with the exponent's interval and R^2, the Chinchilla
    parameters with theirs, the extrapolation check and the warnings."""
    for g in groups:
        print(f"{_label(g)}: {g['n_points']} points")
        for axis, law in g["fits"].items():
            r2 = "" if law.get("r2") is None else f"  R^2 {law['r2']:.3f}"  # None: undefined
            law_text = f"L({axis}) = {_fmt(law['a'])} * {axis}^{_fmt(law['b'])}"
            print(f"  {law_text}  b {_ci(law['b_ci'])}{r2}")
        chin = g.get("chinchilla", {})
        if "params" in chin:
            p, iv = chin["params"], chin["intervals"]
            # the formula's order (a saved JSON has its keys sorted)
            names = [k for k in ("E", "A", "B", "alpha", "beta") if k in p]
            names += sorted(k for k in p if k not in names)
            print(
                "  Chinchilla: " + ", ".join(f"{k} = {_fmt(p[k])} {_ci(iv.get(k))}" for k in names)
            )
        for rec in g["extrapolation"]:
            print(f"  extrapolation {rec['fit']}: |rel. error| {_fmt(rec['mean_abs_rel_error'])}")
        for w in g["warnings"]:
            print(f"  warning: {w}")


def cmd_predict(args: argparse.Namespace) -> int:
    """``lmscaling predict``: loss at (N, D) from every law in a saved fit that can give it."""
    from lmscaling.chinchilla import ChinchillaFit
    from lmscaling.fit import PowerLawFit

    result = _read_fit(args.fit)
    n, d = args.N, args.D
    c = 6 * n * d if d is not None else None
    if c is not None and not math.isfinite(c):
        c = None  # 6ND beyond float range: no L(C) prediction
    rows = []
    for g in _groups(result, args):
        values = {"N": n, "D": d, "C": c}
        chin = g.get("chinchilla", {})
        if "theta" in chin and d is not None:
            law = ChinchillaFit.from_dict(chin)
            row = {"law": "chinchilla", "loss": float(law.predict([[n, d]])[0])}
            if law.samples is not None:
                row["confidence_interval"] = [float(v[0]) for v in law.band([[n, d]])]
                row["prediction_interval"] = [
                    float(v[0]) for v in law.band([[n, d]], kind="prediction")
                ]
            rows.append({"tokenizer": g["tokenizer"], "eval_set": g["eval_set"], **row})
        for axis, entry in g["fits"].items():
            if values[axis] is None:
                continue
            law = PowerLawFit.from_dict(entry)
            row = {"law": f"L({axis}) power law", "loss": float(law.predict(values[axis]))}
            if law.df_resid > 0:
                row["confidence_interval"] = [float(v[0]) for v in law.band([values[axis]])]
                row["prediction_interval"] = [
                    float(v[0]) for v in law.band([values[axis]], kind="prediction")
                ]
            rows.append({"tokenizer": g["tokenizer"], "eval_set": g["eval_set"], **row})
    if args.json:
        print(_json({"N": n, "D": d, "C": c, "predictions": rows}))
        return 0 if rows else 1
    conf = f"{100 * result.get('confidence', 0.95):g}"
    print(f"N = {n:.4g}, D = {_fmt(d)}, C = 6ND = {_fmt(c)}  (loss in nats/token)")
    for r in rows:
        print(
            f"{_label(r)} {r['law']}: {r['loss']:.4f}  "
            f"{conf}% CI {_ci(r.get('confidence_interval'))}  "
            f"PI {_ci(r.get('prediction_interval'))}"
        )
    if not rows:
        print("no law in this fit can predict at these values", file=sys.stderr)
        return 1
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """``lmscaling plan``: compute-optimal N and D for FLOP budgets, with bootstrap intervals."""
    from lmscaling.chinchilla import ChinchillaFit
    from lmscaling.fit import FitError
    from lmscaling.isoflop import IsoFLOPFit

    result = _read_fit(args.fit)
    budgets = np.asarray(args.budget, dtype=float)
    rows = []
    reasons = []
    for g in _groups(result, args):
        chin, iso = g.get("chinchilla", {}), g.get("isoflop", {})
        key = {"tokenizer": g["tokenizer"], "eval_set": g["eval_set"]}
        if "theta" in chin:
            law = ChinchillaFit.from_dict(chin)
            point = law.allocation(budgets)
            spread = None
            if law.samples is not None:
                spread = law.allocation(budgets, law.samples[:, None, :])
            q = [50 * (1 - law.confidence), 50 * (1 + law.confidence)]
            for i, c in enumerate(budgets):
                row = {**key, "method": "chinchilla", "C": float(c)}
                for name, v in point.items():
                    row[name] = float(v[i])
                    if spread is not None:
                        lo, hi = np.nanpercentile(spread[name][:, i], q)
                        row[f"{name}_ci"] = [float(lo), float(hi)]
                rows.append(row)
        else:
            reasons.append(f"{_label(g)} Chinchilla: {chin.get('skipped')}")
        if "a" in iso:
            fit = IsoFLOPFit.from_dict(iso)
            n_opt, d_opt = fit.predict(budgets)
            point = {"N_opt": n_opt, "D_opt": d_opt, "tokens_per_parameter": d_opt / n_opt}
            # from_dict keeps samples only when the fit has some
            bands = fit.allocation_intervals(budgets) if fit.samples is not None else {}
            for i, c in enumerate(budgets):
                row = {**key, "method": "isoflop", "C": float(c)}
                for name, v in point.items():
                    row[name] = float(v[i])
                    if name in bands:
                        row[f"{name}_ci"] = [float(bands[name][0, i]), float(bands[name][1, i])]
                rows.append(row)
    if not rows:
        raise FitError("no compute-optimal analysis in this fit: " + "; ".join(reasons))
    if args.json:
        print(_json({"plans": rows}))
        return 0
    for r in rows:
        print(
            f"{_label(r)} {r['method']} C = {r['C']:.3g} FLOP: "
            f"N_opt = {_fmt(r['N_opt'])} {_ci(r.get('N_opt_ci'))}, "
            f"D_opt = {_fmt(r['D_opt'])} {_ci(r.get('D_opt_ci'))}, "
            f"D/N = {_fmt(r['tokens_per_parameter'])} {_ci(r.get('tokens_per_parameter_ci'))}"
            + (f", L = {_fmt(r['L_opt'])} {_ci(r.get('L_opt_ci'))}" if "L_opt" in r else "")
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``lmscaling`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="lmscaling", description="Scaling-law fits of language-model loss."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="fit every scaling law to a points table")
    p.add_argument("table", help="points table (.csv or .parquet)")
    p.add_argument("-o", "--output", default="fit", help="output directory (default: fit)")
    p.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help='table column holding a field, e.g. --column N="Model Size" (repeatable)',
    )
    p.add_argument("--confidence", type=level, default=0.95, help="interval level in (0, 1)")
    p.add_argument("--axes", nargs="+", default=["N", "D", "C"], choices=["N", "D", "C"])
    p.add_argument(
        "--bootstrap",
        type=resamples,
        default=1000,
        help=f"bootstrap resamples, 0 (none) to {MAX_RESAMPLES:,}",
    )
    p.add_argument("--holdout", type=count, default=1, help="largest scales held out (0 = none)")
    p.add_argument("--budget", type=positive_float, nargs="+", help="FLOP budgets to plan for")
    p.add_argument(
        "--seed",
        type=count,
        default=0,
        help="bootstrap seed (default 0; the workflow uses the config's seed)",
    )
    p.add_argument(
        "--drop-highest-loss",
        type=count,
        default=0,
        metavar="K",
        help="leave out the K highest-loss fitted points of each group (tokenizer, eval set)",
    )
    p.add_argument(
        "--no-plots",
        action="store_true",
        help="write the JSON only (and remove figures of an earlier fit from the folder)",
    )
    p.set_defaults(func=cmd_fit)

    for name, helptext, func in (
        ("show", "the summary of a saved fit (laws, intervals, warnings)", cmd_show),
        ("predict", "loss at given N and D from a saved fit", cmd_predict),
        ("plan", "compute-optimal N and D for FLOP budgets from a saved fit", cmd_plan),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("fit", help="scaling_law.json written by `lmscaling fit` or the workflow")
        if name == "predict":
            p.add_argument(
                "--N", type=positive_float, required=True, help="non-embedding parameters"
            )
            p.add_argument("--D", type=positive_float, help="training tokens")
        elif name == "plan":
            p.add_argument("--budget", type=positive_float, nargs="+", required=True, help="FLOP")
        p.add_argument("--tokenizer", help="only this tokenizer's group")
        p.add_argument("--eval-set", help="only this evaluation set's group")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lmscaling`` command; returns the exit status."""
    from lmscaling.fit import FitError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"lmscaling {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, and keep Python from reporting the
        # failed flush of stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    except (FitError, OSError) as err:
        print(f"lmscaling {args.command}: error: {err}", file=sys.stderr)
        return 1
    except (KeyError, TypeError, IndexError) as err:
        if args.command == "fit":
            raise
        # a saved fit with the right top level but a damaged entry
        print(
            f"lmscaling {args.command}: error: {args.fit}: not a complete scaling-law fit "
            f"({type(err).__name__}: {err}); rewrite it with `lmscaling fit`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
