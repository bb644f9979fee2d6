"""Power-law fits of held-out loss against scale (stage ``fit_scaling_law``).

The fit of record is the log-log ordinary least squares of Kaplan et al. 2020 (eq. 1.1-1.3):

    L(X) = a · X^b      ⇔      ln L = ln a + b · ln X

for X in {N (non-embedding parameters), D (training tokens), C (training FLOP, 6·N·D)}, with the
exponent b < 0 when loss falls with scale. Kaplan write L = (X_c / X)^α_X, i.e. α_X = −b and
X_c = a^(1/α_X). statsmodels gives the t-based confidence intervals of ln a and b, R² in log space,
and the confidence band of the mean prediction. A robust variant (``robust=True``) fits the same
line by Huber M-estimation (statsmodels RLM), so one bad point cannot tilt the exponent.

:func:`fit_scaling_laws` runs every analysis on a table of evaluation points, per (tokenizer,
eval set): the OLS and robust power laws per axis, the saturating law ``L = E + A·X^(−α)``
(:mod:`lmscaling.chinchilla`), the Chinchilla law ``L(N, D)`` with its compute-optimal
allocation, the IsoFLOP analysis (:mod:`lmscaling.isoflop`), bootstrap intervals and an
extrapolation check (refit without the largest scale(s), predict them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

AXES = {
    "N": "non-embedding parameters N",
    "D": "training tokens D",
    "C": "training compute C = 6ND (FLOP)",
}


def group_label(group: dict) -> str:
    """A fit group's name in printed output and plots: "bpe-2048 stdlib/val", or "all points"
    for a table without tokenizer / eval_set columns (their value in the JSON is then "-")."""
    name = " ".join(v for v in (group["tokenizer"], group["eval_set"]) if v != "-")
    return name or "all points"


class FitError(ValueError):
    """The points cannot be fitted (too few, non-positive or non-finite values)."""


@dataclass
class PowerLawFit:
    """``L = a · X^b`` fitted by OLS on ``ln L = ln a + b ln X`` (Kaplan et al. 2020, eq. 1.1-1.3).

    Call :meth:`fit` with positive, finite ``x`` (shape ``(n,)``, units of the axis: parameters,
    tokens or FLOP) and ``loss`` (shape ``(n,)``, nats/token); then :meth:`predict` and
    :meth:`band` evaluate the law. Attributes after fitting: ``a``, ``b`` and their
    ``confidence``-level intervals ``a_ci``, ``b_ci``; ``r2`` (log space); ``residuals``
    (ln L − fitted ln L); ``n``; ``warnings`` (human-readable diagnostics).
    """

    x_name: str
    confidence: float = 0.95
    robust: bool = False
    a: float = math.nan
    b: float = math.nan
    a_ci: tuple[float, float] = (math.nan, math.nan)
    b_ci: tuple[float, float] = (math.nan, math.nan)
    r2: float = math.nan
    n: int = 0
    residuals: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cov: list[list[float]] = field(default_factory=list)
    df_resid: float = math.nan
    boot_ci: dict = field(default_factory=dict)
    n_resamples: int = 0
    n_resamples_failed: int = 0
    _result: object = field(default=None, repr=False)
    _data: tuple | None = field(default=None, repr=False)

    def fit(self, x: Sequence[float], loss: Sequence[float]) -> PowerLawFit:
        """Fit the law; returns ``self``.

        Raises:
            FitError: fewer than 2 points, or any x or loss that is not finite and positive.
        """
        import statsmodels.api as sm

        x_arr, y_arr = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)
        if x_arr.shape != y_arr.shape or x_arr.ndim != 1:
            raise FitError(f"L({self.x_name}): x and loss must be 1-D of equal length")
        if x_arr.size < 2:
            raise FitError(f"L({self.x_name}): need at least 2 points, got {x_arr.size}")
        bad = ~(np.isfinite(x_arr) & np.isfinite(y_arr) & (x_arr > 0) & (y_arr > 0))
        if bad.any():
            raise FitError(
                f"L({self.x_name}): {int(bad.sum())} point(s) with a non-finite or "
                "non-positive value"
            )
        self.n = int(x_arr.size)
        self.warnings = []
        if n_distinct(x_arr) < 2:
            raise FitError(f"L({self.x_name}): every point has the same {self.x_name}")
        exog = sm.add_constant(np.log(x_arr))
        if self.robust:
            if self.n < 3:
                raise FitError(f"L({self.x_name}) robust: need at least 3 points, got {self.n}")
            result = sm.RLM(np.log(y_arr), exog, M=sm.robust.norms.HuberT()).fit()
        else:
            result = sm.OLS(np.log(y_arr), exog).fit()
        self._result = result
        self._data = (x_arr, y_arr)
        (ln_a, b) = result.params
        if not abs(ln_a) < math.log(np.finfo(float).max):
            raise FitError(
                f"L({self.x_name}): the fit's coefficient a = exp({ln_a:.4g}) is out of float "
                f"range (exponent b = {b:.4g}): {self.x_name} varies by a fraction of only "
                f"{x_arr.max() / x_arr.min() - 1:.3g} (max/min - 1), too little for a power law"
            )
        # two points leave no residual degrees of freedom: intervals are NaN, not an error
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            self.cov = np.asarray(result.cov_params()).tolist()
            self.df_resid = float(result.df_resid)
            ci = result.conf_int(alpha=1 - self.confidence)
            self.a, self.b = float(math.exp(ln_a)), float(b)
            self.a_ci = (float(np.exp(ci[0][0])), float(np.exp(ci[0][1])))
            self.b_ci = (float(ci[1][0]), float(ci[1][1]))
            if self.robust:
                self.r2 = math.nan
            else:
                self.r2 = float(result.rsquared) if self.n > 2 else 1.0
        self.residuals = [float(r) for r in result.resid]
        if self.n < 3:
            self.warnings.append(
                f"only {self.n} points: no degrees of freedom left for confidence intervals"
            )
        span = _decades(x_arr)
        if span < 1.0:
            self.warnings.append(f"points span only {span:.2f} decades of {self.x_name}")
        if self.b >= 0:
            self.warnings.append(
                f"exponent b = {self.b:.3f} ≥ 0: loss does not fall with {self.x_name}"
            )
        return self

    def predict(self, x: Sequence[float] | float) -> np.ndarray:
        """Loss in nats/token at ``x``: ``a · x^b``; shape of ``x``."""
        return self.a * np.power(np.asarray(x, dtype=float), self.b)

    def band(self, x: Sequence[float], kind: str = "confidence") -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper ``confidence``-level band at ``x`` (nats/token).

        ``kind="confidence"``: band of the mean prediction; ``"prediction"``: also covers the
        scatter of a new point (OLS only). Computed in log space from the parameter covariance
        (t quantiles with the residual degrees of freedom for OLS, normal for the robust fit)
        and exponentiated, so the band is asymmetric in linear units. Works on a fit rebuilt
        by :meth:`from_dict` too.

        Raises:
            FitError: not fitted, no degrees of freedom left, or ``kind`` unknown.
        """
        from scipy import stats

        if not self.cov:
            raise FitError(f"L({self.x_name}): call fit() first")
        if kind not in ("confidence", "prediction"):
            raise FitError(f"kind must be 'confidence' or 'prediction', got {kind!r}")
        if not self.df_resid > 0:
            raise FitError(f"L({self.x_name}): no degrees of freedom left for a band")
        ln_x = np.log(np.asarray(x, dtype=float))
        cov = np.asarray(self.cov)
        var = cov[0, 0] + 2 * cov[0, 1] * ln_x + cov[1, 1] * ln_x**2
        if kind == "prediction":
            if self.robust:
                raise FitError("prediction bands are given for the OLS fit only")
            resid = np.asarray(self.residuals)
            var = var + float(resid @ resid) / self.df_resid
        q = 0.5 + self.confidence / 2
        crit = stats.norm.ppf(q) if self.robust else stats.t.ppf(q, self.df_resid)
        mid = math.log(self.a) + self.b * ln_x
        half = crit * np.sqrt(var)
        return np.exp(mid - half), np.exp(mid + half)

    def bootstrap(self, n_resamples: int = 1000, seed: int = 0) -> PowerLawFit:
        """Percentile intervals of ``a``, ``b`` and ``alpha`` from refits on resampled points.

        Resamples (with replacement) whose points all share one x cannot be fitted; they are
        counted in ``n_resamples_failed``. The refits are ordinary least squares on log-log,
        computed in closed form for all resamples at once (the robust fit is not
        bootstrapped). Sets ``boot_ci``; returns ``self``.
        """
        if self._data is None:
            raise FitError(f"L({self.x_name}): call fit() first")
        if n_resamples < 1:
            return self
        lx, ly = (np.log(v) for v in self._data)
        rng = np.random.default_rng(seed)
        w = rng.multinomial(self.n, np.full(self.n, 1 / self.n), size=n_resamples) / self.n
        mx, my = w @ lx, w @ ly
        sxx = w @ lx**2 - mx**2
        sxy = w @ (lx * ly) - mx * my
        ok = sxx > 1e-12 * max(1.0, float(np.abs(lx).max()) ** 2)
        b = sxy[ok] / sxx[ok]
        a = np.exp(my[ok] - b * mx[ok])
        self.n_resamples, self.n_resamples_failed = n_resamples, int((~ok).sum())
        q = [50 * (1 - self.confidence), 50 * (1 + self.confidence)]
        if ok.any():
            self.boot_ci = {
                name: [float(v) for v in np.percentile(vals, q)]
                for name, vals in (("a", a), ("b", b), ("alpha", -b))
            }
        return self

    def to_dict(self) -> dict:
        """JSON-ready parameters and diagnostics, with Kaplan's α = −b and X_c = a^(1/α)."""
        alpha = -self.b
        ln_x_c = math.log(self.a) / alpha if alpha > 0 else math.inf
        tiny, huge = np.finfo(float).tiny, np.finfo(float).max
        x_c = math.exp(ln_x_c) if math.log(tiny) < ln_x_c < math.log(huge) else None
        return {
            "x": self.x_name,
            "form": f"L = a * {self.x_name}^b",
            "method": "robust (Huber RLM) on ln L" if self.robust else "OLS on ln L",
            "a": self.a,
            "b": self.b,
            "a_ci": list(self.a_ci),
            "b_ci": list(self.b_ci),
            "alpha": alpha,
            "x_c": x_c if x_c is not None and math.isfinite(x_c) else None,
            "confidence": self.confidence,
            "r2": None if self.robust else self.r2,
            "n": self.n,
            "residuals": self.residuals,
            "cov_log": self.cov,
            "df_resid": self.df_resid,
            "bootstrap": {
                "n_resamples": self.n_resamples,
                "n_failed": self.n_resamples_failed,
                "intervals": self.boot_ci,
            },
            "warnings": self.warnings,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PowerLawFit:
        """Rebuild a fitted law (for :meth:`predict` and :meth:`band`) from :meth:`to_dict`."""
        law = cls(d["x"], confidence=d.get("confidence", 0.95))
        law.robust = str(d.get("method", "")).startswith("robust")
        law.a, law.b, law.n = d["a"], d["b"], d.get("n", 0)
        law.cov = d.get("cov_log") or []
        law.df_resid = d.get("df_resid") if d.get("df_resid") is not None else math.nan
        law.residuals = list(d.get("residuals", []))
        return law


def _clean(obj):
    """Replace NaN/inf by None and numpy scalars by Python ones, so the result is strict JSON."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj


@dataclass
class FitSettings:
    """Options of :func:`fit_scaling_laws` (the ``fit:`` section of the config).

    ``confidence``: level of every interval and band. ``axes``: which of N, D, C get the
    single-axis laws. ``bootstrap``: resamples per fit (0 = none). ``holdout``: how many of the
    largest scales the extrapolation check leaves out (0 = no check). ``budgets``: FLOP budgets
    for the compute-optimal allocation (None = the decade above the largest C and the next two).
    ``seed``: seed of the resampling. ``isoflop_tolerance``: relative spread of C within one
    IsoFLOP budget.
    """

    confidence: float = 0.95
    axes: Sequence[str] = ("N", "D", "C")
    bootstrap: int = 1000
    holdout: int = 1
    budgets: Sequence[float] | None = None
    seed: int = 0
    isoflop_tolerance: float = 0.25

    @classmethod
    def from_config(cls, fit_config: dict, seed: int = 0) -> FitSettings:
        """Settings from the config's ``fit:`` mapping (absent keys take the defaults)."""
        keys = ("confidence", "axes", "bootstrap", "holdout", "budgets", "isoflop_tolerance")
        return cls(seed=seed, **{k: fit_config[k] for k in keys if k in fit_config})


NEEDED = ("tokenizer", "eval_set", "loss", "N", "D", "C")


def n_distinct(values: np.ndarray, rtol: float = 1e-9) -> int:
    """Number of distinct positive values, two values within a relative ``rtol`` counting as
    one: a C derived as 6ND differs from its budget in the last bits, which is not a spread
    a power law can be fitted to."""
    return int(np.unique(np.round(np.log(np.asarray(values, dtype=float)) / rtol)).size)


def select_points(points: list[dict], source: str = "points") -> list[dict]:
    """The rows to fit: those with ``final`` true (all rows when there is no ``final`` column).

    Raises:
        FitError: no rows, a row lacking one of tokenizer, eval_set, loss, N, D, C, or one of
            loss, N, D, C (and ``budget`` where given) not a finite positive number (the row is
            named by its index in ``source``).
    """
    if not points:
        raise FitError(f"{source}: no evaluation points to fit")
    for i, row in enumerate(points):
        missing = [k for k in NEEDED if row.get(k) is None]
        if missing:
            raise FitError(f"{source}: row {i + 1} has no value in column(s) {missing}")
        for key in ("loss", "N", "D", "C", "budget"):
            value = row.get(key)
            if key == "budget" and value is None:
                continue  # optional: the IsoFLOP budget label
            if not (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value > 0
            ):
                raise FitError(
                    f"{source}: row {i + 1} has {key} = {value!r}; need a finite positive number"
                )
    rows = [p for p in points if p.get("final", True) in (True, 1, "true", "True")]
    if not rows:
        raise FitError(f"{source}: no row has final == true")
    return rows


def drop_highest_loss(points: list[dict], k: int, source: str = "points") -> list[dict]:
    """The fitted rows (:func:`select_points`) without the ``k`` highest-loss ones of each
    (tokenizer, eval set) group, e.g. ``k = 5`` for the refit of Chinchilla's Approach 3 by
    Besiroglu et al. 2024 (``tests/test_fit_epoch.py``).

    Raises:
        FitError: as :func:`select_points`, or a group with ``k`` points or fewer.
    """
    rows = select_points(points, source)
    out = []
    for key in sorted({(p["tokenizer"], p["eval_set"]) for p in rows}):
        group = [p for p in rows if (p["tokenizer"], p["eval_set"]) == key]
        group.sort(key=lambda p: p["loss"])
        if len(group) <= k:
            raise FitError(
                f"{source}: cannot drop the {k} highest-loss points of group {key[0]}/{key[1]}, "
                f"which has {len(group)}"
            )
        out += group[: len(group) - k]
    return out


def _decades(values: np.ndarray) -> float:
    """Decades spanned by positive ``values``: log10(max) - log10(min) (max/min can overflow)."""
    return math.log10(values.max()) - math.log10(values.min())


def _span_warning(name: str, values: np.ndarray) -> list[str]:
    span = _decades(values)
    return [f"{name}: points span only {span:.2f} decades"] if span < 1.0 else []


def _default_budgets(c_max: float) -> list[float]:
    top = 10.0 ** math.ceil(math.log10(c_max))
    return [top, 10 * top, 100 * top]


def _holdout_mask(scale: np.ndarray, k: int) -> np.ndarray:
    """True for the points whose ``scale`` is among the ``k`` largest distinct values."""
    distinct = np.unique(scale)
    if k < 1 or distinct.size <= k:
        return np.zeros(scale.shape, dtype=bool)
    return scale >= distinct[-k]


def _heldout_rows(rows: list[dict], mask: np.ndarray, predicted, lo=None, hi=None) -> list[dict]:
    out = []
    for i in np.flatnonzero(mask):
        row = {k: rows[i].get(k) for k in ("model", "checkpoint", "N", "D", "C")}
        pred = float(np.asarray(predicted)[i])
        row.update(actual=rows[i]["loss"], predicted=pred)
        row["rel_error"] = (pred - rows[i]["loss"]) / rows[i]["loss"]
        if lo is not None:
            row["predicted_ci"] = [float(lo[i]), float(hi[i])]
        out.append(row)
    return out


def _extrapolation_record(key, name, scale_name, mask, held, n_fit) -> dict:
    errors = [abs(h["rel_error"]) for h in held]
    return {
        "key": key,
        "fit": name,
        "scale": scale_name,
        "n_fit": n_fit,
        "n_held_out": int(mask.sum()),
        "held_out": held,
        "mean_abs_rel_error": float(np.mean(errors)) if errors else None,
    }


def _precision_warning(rows: list[dict]) -> list[str]:
    """A warning when the rows' models were trained in more than one precision.

    ``train.precision: auto`` resolves per machine (bf16 where the hardware has it, else
    fp32), so one experiment spread over unlike nodes can mix both; losses then differ by
    numerics as well as by scale. Precisions compare without case or surrounding spaces; rows
    without one (tables from elsewhere, evaluations written before the column existed) are not
    counted, and rows without a model name count as "unnamed".
    """
    models: dict[str, set[str]] = {}
    for row in rows:
        precision = str(row.get("precision") or "").strip().lower()
        if precision not in ("", "nan", "none", "null"):
            models.setdefault(precision, set()).add(str(row.get("model") or "unnamed"))
    if len(models) < 2:
        return []
    mix = "; ".join(f"{p}: {', '.join(sorted(m))}" for p, m in sorted(models.items()))
    return [
        f"models trained in different precisions ({mix}): their losses differ by numerics as "
        "well as by scale; set train.precision to bf16 or fp32 to train them alike"
    ]


def _fit_group(rows: list[dict], settings: FitSettings, label: str) -> dict:
    """Every analysis on one (tokenizer, eval set) group of points."""
    from lmscaling.chinchilla import ChinchillaFit, SaturatingPowerLawFit
    from lmscaling.isoflop import IsoFLOPError, IsoFLOPFit, group_budgets

    conf, seed = settings.confidence, settings.seed
    loss = np.array([float(p["loss"]) for p in rows])
    cols = {a: np.array([float(p[a]) for p in rows]) for a in ("N", "D", "C")}
    budget_col = [p.get("budget") for p in rows]
    budget = None if any(b is None for b in budget_col) else np.array(budget_col, dtype=float)
    # Runs of one IsoFLOP budget differ in C only by the rounding of their step counts: a
    # power law in C across them would fit that rounding, not a trend.
    one_budget = (
        n_distinct(
            group_budgets(cols["C"], settings.isoflop_tolerance) if budget is None else budget
        )
        < 2
    )
    group: dict = {"fits": {}, "saturating": {}, "warnings": [], "extrapolation": []}
    warn = group["warnings"]
    warn.extend(_precision_warning(rows))

    def skip(what: str, reason: str) -> dict:
        warn.append(f"{what} not fitted: {reason}")
        return {"skipped": reason}

    for axis in settings.axes:
        x = cols[axis]
        if n_distinct(x) < 2:
            warn.append(f"{axis} takes a single value: L({axis}) not fitted")
            continue
        if axis == "C" and one_budget:
            warn.append(
                "every point is at one compute budget (C within a factor 1 + "
                f"fit.isoflop_tolerance = {1 + settings.isoflop_tolerance:g} of each other): "
                "L(C) not fitted"
            )
            continue
        try:
            ols = PowerLawFit(axis, conf).fit(x, loss).bootstrap(settings.bootstrap, seed)
        except FitError as err:
            warn.append(f"{err}: not fitted")
            continue
        entry = ols.to_dict()
        if ols.n >= 3:
            entry["robust"] = PowerLawFit(axis, conf, robust=True).fit(x, loss).to_dict()
        group["fits"][axis] = entry
        warn.extend(f"L({axis}): {w}" for w in ols.warnings)
        mask = _holdout_mask(x, settings.holdout)
        if mask.any() and n_distinct(x[~mask]) >= 2:
            part = PowerLawFit(axis, conf).fit(x[~mask], loss[~mask])
            band = part.band(x) if part.df_resid > 0 else (None, None)
            held = _heldout_rows(rows, mask, part.predict(x), *band)
            group["extrapolation"].append(
                _extrapolation_record(f"L_{axis}", f"L({axis}) power law", axis, mask, held, part.n)
            )
        elif settings.holdout >= 1:
            warn.append(
                f"L({axis}) extrapolation check skipped: holding out the {settings.holdout} "
                f"largest {axis} leaves fewer than 2 values of {axis} to fit"
            )
        if ols.n < 3:
            group["saturating"][axis] = skip(
                f"L({axis}) = E + A/{axis}^alpha", f"fewer points ({ols.n}) than parameters (3)"
            )
            continue
        sat = SaturatingPowerLawFit(axis, confidence=conf).fit(x, loss)
        sat.bootstrap(settings.bootstrap, seed)
        group["saturating"][axis] = sat.to_dict()
        warn.extend(sat.warnings + _span_warning(f"L({axis}) = E + A/{axis}^alpha", x))
        if mask.any() and (~mask).sum() >= 3:
            part = SaturatingPowerLawFit(axis, confidence=conf).fit(x[~mask], loss[~mask])
            held = _heldout_rows(rows, mask, part.predict(x))
            group["extrapolation"].append(
                _extrapolation_record(
                    f"sat_{axis}", f"L({axis}) = E + A/{axis}^alpha", axis, mask, held, part.n
                )
            )
        elif mask.any():
            warn.append(
                f"L({axis}) = E + A/{axis}^alpha: extrapolation check skipped: "
                f"{(~mask).sum()} points (< 3) left without the largest"
            )

    n_, d_, c_ = cols["N"], cols["D"], cols["C"]
    budgets = list(settings.budgets) if settings.budgets else _default_budgets(float(c_.max()))
    name = "Chinchilla L(N, D)"
    if n_distinct(d_) < 2 or n_distinct(n_) < 2:
        fixed = "D" if n_distinct(d_) < 2 else "N"
        group["chinchilla"] = skip(
            name, f"{fixed} takes a single value; L(N, D) needs both to vary"
        )
    elif len(rows) < 5:
        group["chinchilla"] = skip(name, f"fewer points ({len(rows)}) than parameters (5)")
    else:
        nd = np.column_stack([n_, d_])
        chin = ChinchillaFit(budgets=budgets, confidence=conf).fit(nd, loss)
        chin.bootstrap(settings.bootstrap, seed)
        group["chinchilla"] = chin.to_dict()
        warn.extend(chin.warnings)
        warn.extend(_span_warning("Chinchilla N", n_) + _span_warning("Chinchilla D", d_))
        mask = _holdout_mask(n_, settings.holdout)
        if mask.any() and (~mask).sum() >= 5 and n_distinct(d_[~mask]) >= 2:
            part = ChinchillaFit(confidence=conf).fit(nd[~mask], loss[~mask])
            held = _heldout_rows(rows, mask, part.predict(nd))
            group["extrapolation"].append(
                _extrapolation_record("chinchilla", name, "N", mask, held, part.n)
            )
        elif mask.any():
            warn.append(
                f"{name} extrapolation check skipped: {(~mask).sum()} points (< 5) or one D left "
                "without the largest N"
            )

    name = "IsoFLOP (Approach 2)"
    if budget is None and not IsoFLOPFit.applicable(n_, c_, settings.isoflop_tolerance):
        group["isoflop"] = skip(name, "fewer than 2 compute budgets with 3+ model sizes each")
    else:
        try:
            iso = IsoFLOPFit(conf, settings.isoflop_tolerance).fit(n_, c_, loss, budget)
        except IsoFLOPError as err:
            group["isoflop"] = skip(name, str(err))
        else:
            iso.bootstrap(settings.bootstrap, seed)
            group["isoflop"] = iso.to_dict()
            warn.extend(iso.warnings)
            group["extrapolation"].extend(_isoflop_extrapolation(iso, settings))
    for w in warn:
        log.warning("%s: %s", label, w)
    return group


def _isoflop_extrapolation(iso, settings: FitSettings) -> list[dict]:
    """Refit N_opt(C) without the largest budget(s); compare with their parabola minima."""
    used = [b for b in iso.budgets if b["used"]]
    k = settings.holdout
    if k < 1 or len(used) - k < 2:
        return []
    c = np.array([b["C"] for b in used])
    n_opt = np.array([b["N_opt"] for b in used])
    slope, ln_k = np.polyfit(np.log(c[:-k]), np.log(n_opt[:-k]), 1)
    held = []
    for b in used[-k:]:
        pred = math.exp(ln_k) * b["C"] ** slope
        held.append(
            {
                "C": b["C"],
                "actual_N_opt": b["N_opt"],
                "predicted_N_opt": pred,
                "rel_error": (pred - b["N_opt"]) / b["N_opt"],
            }
        )
    return [
        {
            "key": "isoflop",
            "fit": "IsoFLOP N_opt(C)",
            "scale": "C",
            "n_fit": len(used) - k,
            "n_held_out": k,
            "held_out": held,
            "mean_abs_rel_error": float(np.mean([abs(h["rel_error"]) for h in held])),
        }
    ]


def fit_scaling_laws(
    points: list[dict],
    confidence: float = 0.95,
    axes: Sequence[str] = ("N", "D", "C"),
    settings: FitSettings | None = None,
    source: str = "points",
) -> dict:
    """Fit every scaling law per tokenizer and evaluation set.

    Args:
        points: rows of the evaluation table, each with ``tokenizer``, ``eval_set``, ``loss``
            (nats/token), ``N`` (non-embedding parameters), ``D`` (tokens), ``C`` (FLOP),
            optionally ``model``, ``checkpoint``, ``final`` (only final rows are fitted) and
            ``budget`` (IsoFLOP budget label, FLOP).
        confidence, axes: shortcuts for the same fields of ``settings`` (used when it is None).
        settings: every option (:class:`FitSettings`).
        source: name of the table, for error messages.

    Returns:
        Strict JSON (no NaN): ``{"confidence", "settings", "groups": [{"tokenizer",
        "eval_set", "n_points", "fits": {axis: OLS power law with its robust variant and
        bootstrap}, "saturating": {axis: ...}, "chinchilla", "isoflop", "extrapolation":
        [...], "warnings"}], "points": the fitted rows}``. An analysis the data cannot support
        (e.g. Chinchilla when every model saw the same D) is ``{"skipped": reason}`` and its
        reason is in ``warnings``.

    Raises:
        FitError: no points, or a row lacking a needed column.
    """
    if settings is None:
        settings = FitSettings(confidence=confidence, axes=tuple(axes))
    rows = select_points(points, source)
    groups = []
    for key in sorted({(p["tokenizer"], p["eval_set"]) for p in rows}):
        grows = [p for p in rows if (p["tokenizer"], p["eval_set"]) == key]
        group = {"tokenizer": key[0], "eval_set": key[1], "n_points": len(grows)}
        group.update(_fit_group(grows, settings, f"{key[0]}/{key[1]}"))
        groups.append(group)
    settings_out = {
        "confidence": settings.confidence,
        "axes": list(settings.axes),
        "bootstrap": settings.bootstrap,
        "holdout": settings.holdout,
        "budgets": None if settings.budgets is None else list(settings.budgets),
        "seed": settings.seed,
        "isoflop_tolerance": settings.isoflop_tolerance,
    }
    return _clean(
        {
            "confidence": settings.confidence,
            "settings": settings_out,
            "groups": groups,
            "points": rows,
        }
    )


def read_points(
    path: str | Path,
    columns: dict[str, str] | None = None,
    defaults: dict[str, str] | None = None,
) -> list[dict]:
    """Rows of a points table (``.csv`` or ``.parquet``) ready for :func:`fit_scaling_laws`.

    ``columns`` maps field names to table columns (``{"N": "Model Size"}``; one column may
    feed several fields). Missing
    ``tokenizer``/``eval_set`` columns take ``defaults`` (or ``"-"``). When D is missing it is
    derived as C / (6N), when C is missing as 6ND (Kaplan et al. 2020, eq. 2.1). An optional
    ``budget`` column labels each row's IsoFLOP compute budget (FLOP). Names (tokenizer,
    eval_set, model) are read as text.

    Raises:
        FitError: no such file, unknown format, an unreadable (empty, truncated) table, a named
            column absent, loss/N and one of D, C missing, or one of them or budget not
            numeric.
    """
    import polars as pl

    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise FitError(f"{path}: unknown table format (use .csv or .parquet)")
    if not path.is_file():
        raise FitError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    columns = columns or {}
    # names stay text in a CSV even when they read as numbers ("007", "512")
    names = {"tokenizer", "eval_set", "model"}
    names |= {src for dst, src in columns.items() if dst in names}
    try:
        # read from an open file: polars would expand a path with * ? [ ] as a glob
        with open(path, "rb") as fh:
            if path.suffix == ".parquet":
                table = pl.read_parquet(fh)
            else:
                table = pl.read_csv(
                    fh, infer_schema_length=10000, schema_overrides=dict.fromkeys(names, pl.Utf8)
                )
    except pl.exceptions.PolarsError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FitError(f"{path}: not a readable {path.suffix[1:]} table: {first}") from None
    absent = [src for src in columns.values() if src not in table.columns]
    if absent:
        raise FitError(f"{path}: no column(s) {absent}; columns are {table.columns}")
    table = table.with_columns(pl.col(src).alias(dst) for dst, src in columns.items())
    for key in ("tokenizer", "eval_set"):
        if key not in table.columns:
            table = table.with_columns(pl.lit((defaults or {}).get(key, "-")).alias(key))
        table = table.with_columns(pl.col(key).cast(pl.Utf8))  # a name, even when it reads 512
    have = set(table.columns)
    missing = [k for k in ("loss", "N") if k not in have]
    if missing or not ({"D", "C"} & have):
        raise FitError(
            f"{path}: needs columns loss, N and D or C (missing {missing or ['D/C']}); "
            f"columns are {table.columns}"
        )
    for col in ("loss", "N", "D", "C", "budget"):
        if col in have:
            try:
                table = table.with_columns(pl.col(col).cast(pl.Float64))
            except pl.exceptions.PolarsError:
                raise FitError(f"{path}: column {col!r} is not numeric") from None
    if "D" not in have:
        table = table.with_columns((pl.col("C") / (6 * pl.col("N"))).alias("D"))
    if "C" not in have:
        table = table.with_columns((6 * pl.col("N") * pl.col("D")).alias("C"))
    return table.to_dicts()


def plot_scaling_laws(result: dict, png_path: str | Path, svg_path: str | Path) -> None:
    """Main figure: loss against each fitted axis; see :func:`lmscaling.fit_plots.plot_main`."""
    from lmscaling.fit_plots import plot_main

    plot_main(result, png_path, svg_path)


def plot_residuals(result: dict, png_path: str | Path, svg_path: str | Path) -> None:
    """Residuals of every fit; see :func:`lmscaling.fit_plots.plot_residuals`."""
    from lmscaling import fit_plots

    fit_plots.plot_residuals(result, png_path, svg_path)


def plot_isoflop(result: dict, png_path: str | Path, svg_path: str | Path) -> None:
    """IsoFLOP curves and compute-optimal N; see :func:`lmscaling.fit_plots.plot_isoflop`."""
    from lmscaling import fit_plots

    fit_plots.plot_isoflop(result, png_path, svg_path)


def summary_metrics(result: dict) -> dict[str, float]:
    """Headline numbers of a :func:`fit_scaling_laws` result as flat MLflow metrics.

    Keys ``{tokenizer}.{eval_set}.<fit>.<quantity>``: the OLS ``a``, ``b``, ``alpha``, ``r2``
    per axis (``L_N.b``), the saturating law's ``E``, ``A``, ``alpha`` (``sat_N.E``), the
    Chinchilla ``E``, ``A``, ``B``, ``alpha``, ``beta``, ``a`` and ``objective``, the IsoFLOP
    exponent ``a``, and each extrapolation check's mean absolute relative error
    (``extrapolation.L_N.abs_rel_error``). Values that are None are left out.
    """
    out: dict[str, float] = {}
    for g in result["groups"]:
        prefix = f"{g['tokenizer']}.{g['eval_set']}"
        for axis, law in g["fits"].items():
            for k in ("a", "b", "alpha", "r2"):
                out[f"{prefix}.L_{axis}.{k}"] = law.get(k)
        for axis, law in g.get("saturating", {}).items():
            for k, v in law.get("params", {}).items():
                out[f"{prefix}.sat_{axis}.{k}"] = v
        chin = g.get("chinchilla", {})
        if "params" in chin:
            for k, v in chin["params"].items():
                out[f"{prefix}.chinchilla.{k}"] = v
            out[f"{prefix}.chinchilla.a"] = chin["derived"].get("a")
            out[f"{prefix}.chinchilla.objective"] = chin.get("objective")
        iso = g.get("isoflop", {})
        if "a" in iso:
            out[f"{prefix}.isoflop.a"] = iso["a"]
        for rec in g.get("extrapolation", []):
            out[f"{prefix}.extrapolation.{rec['key']}.abs_rel_error"] = rec["mean_abs_rel_error"]
    return {k: float(v) for k, v in out.items() if v is not None}
