"""Power-law fits of held-out loss against scale (stage ``fit_scaling_law``).

The fit of record is the log-log ordinary least squares of Kaplan et al. 2020 (eq. 1.1-1.3):

    L(X) = a · X^b      ⇔      ln L = ln a + b · ln X

for X in {N (non-embedding parameters), D (training tokens), C (training FLOP, 6·N·D)}, with the
exponent b < 0 when loss falls with scale. Kaplan write L = (X_c / X)^α_X, i.e. α_X = −b and
X_c = a^(1/α_X). statsmodels gives the t-based confidence intervals of ln a and b, R² in log space,
and the confidence band of the mean prediction.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmscaling.io import atomic_path

log = logging.getLogger(__name__)

AXES = {
    "N": "non-embedding parameters N",
    "D": "training tokens D",
    "C": "training compute C = 6ND (FLOP)",
}


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
    a: float = math.nan
    b: float = math.nan
    a_ci: tuple[float, float] = (math.nan, math.nan)
    b_ci: tuple[float, float] = (math.nan, math.nan)
    r2: float = math.nan
    n: int = 0
    residuals: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _result: object = field(default=None, repr=False)

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
        if len(np.unique(x_arr)) < 2:
            raise FitError(f"L({self.x_name}): every point has the same {self.x_name}")
        exog = sm.add_constant(np.log(x_arr))
        result = sm.OLS(np.log(y_arr), exog).fit()
        self._result = result
        (ln_a, b) = result.params
        ci = result.conf_int(alpha=1 - self.confidence)
        self.a, self.b = float(math.exp(ln_a)), float(b)
        self.a_ci = (float(math.exp(ci[0][0])), float(math.exp(ci[0][1])))
        self.b_ci = (float(ci[1][0]), float(ci[1][1]))
        self.r2 = float(result.rsquared) if self.n > 2 else 1.0
        self.residuals = [float(r) for r in result.resid]
        if self.n < 3:
            self.warnings.append(
                f"only {self.n} points: no degrees of freedom left for confidence intervals"
            )
        span = math.log10(x_arr.max() / x_arr.min())
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

    def band(self, x: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper ``confidence``-level band of the mean prediction at ``x`` (nats/token).

        Computed in log space from the OLS covariance (statsmodels ``get_prediction``) and
        exponentiated, so the band is asymmetric in linear units.
        """
        import statsmodels.api as sm

        if self._result is None:
            raise FitError(f"L({self.x_name}): call fit() first")
        exog = sm.add_constant(np.log(np.asarray(x, dtype=float)), has_constant="add")
        frame = self._result.get_prediction(exog).conf_int(alpha=1 - self.confidence)
        return np.exp(frame[:, 0]), np.exp(frame[:, 1])

    def to_dict(self) -> dict:
        """JSON-ready parameters and diagnostics, with Kaplan's α = −b and X_c = a^(1/α)."""
        alpha = -self.b
        x_c = self.a ** (1 / alpha) if alpha > 0 else None
        return {
            "x": self.x_name,
            "form": f"L = a * {self.x_name}^b",
            "a": self.a,
            "b": self.b,
            "a_ci": list(self.a_ci),
            "b_ci": list(self.b_ci),
            "alpha": alpha,
            "x_c": x_c if x_c is not None and math.isfinite(x_c) else None,
            "confidence": self.confidence,
            "r2": self.r2,
            "n": self.n,
            "residuals": self.residuals,
            "warnings": self.warnings,
        }


def _clean(obj):
    """Replace NaN/inf by None so the result is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def fit_scaling_laws(
    points: list[dict], confidence: float = 0.95, axes: Sequence[str] = ("N", "D", "C")
) -> dict:
    """Fit ``L = a·X^b`` per tokenizer and evaluation set for each axis that varies.

    Args:
        points: rows of the evaluation table, each with ``tokenizer``, ``eval_set``, ``model``,
            ``loss`` (nats/token) and the axes ``N``, ``D``, ``C``.
        confidence: level of the parameter intervals and bands.
        axes: which of ``N``, ``D``, ``C`` to fit; an axis with a single distinct value in a
            group is skipped with a warning (e.g. ``D`` when every model saw the same tokens).

    Returns:
        ``{"confidence", "groups": [{"tokenizer", "eval_set", "n_points", "fits": {axis: ...},
        "warnings"}], "points": points}`` (strict JSON: no NaN).

    Raises:
        FitError: when ``points`` is empty or a row lacks a needed column.
    """
    if not points:
        raise FitError("no evaluation points to fit")
    needed = {"tokenizer", "eval_set", "loss", *axes}
    for i, row in enumerate(points):
        missing = needed - set(row)
        if missing:
            raise FitError(f"evaluation point {i} lacks column(s) {sorted(missing)}")
    groups = []
    for key in sorted({(p["tokenizer"], p["eval_set"]) for p in points}):
        rows = [p for p in points if (p["tokenizer"], p["eval_set"]) == key]
        group = {"tokenizer": key[0], "eval_set": key[1], "n_points": len(rows), "fits": {}}
        group["warnings"] = []
        for axis in axes:
            xs = [float(p[axis]) for p in rows]
            if len(set(xs)) < 2:
                group["warnings"].append(f"{axis} takes a single value: L({axis}) not fitted")
                continue
            fitted = PowerLawFit(axis, confidence).fit(xs, [float(p["loss"]) for p in rows])
            group["fits"][axis] = fitted.to_dict()
            for warning in fitted.warnings:
                log.warning("%s/%s L(%s): %s", key[0], key[1], axis, warning)
        groups.append(group)
    return _clean({"confidence": confidence, "groups": groups, "points": points})


def plot_scaling_laws(result: dict, png_path: str | Path, svg_path: str | Path) -> None:
    """Log-log plots of loss against each fitted axis: points, fitted line, confidence band.

    One panel per axis in ``result`` (N, D, C order), one colour per (tokenizer, eval set) group.
    Both files are written atomically.
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_present = [a for a in AXES if any(a in g["fits"] for g in result["groups"])]
    if not axes_present:
        raise FitError("nothing to plot: no axis was fitted")
    fig, axs = plt.subplots(1, len(axes_present), figsize=(5.2 * len(axes_present), 4.2))
    axs = np.atleast_1d(axs)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, axis in zip(axs, axes_present, strict=True):
        for i, group in enumerate(result["groups"]):
            fit = group["fits"].get(axis)
            if fit is None:
                continue
            rows = [
                p
                for p in result["points"]
                if (p["tokenizer"], p["eval_set"]) == (group["tokenizer"], group["eval_set"])
            ]
            x = np.array([float(p[axis]) for p in rows])
            y = np.array([float(p["loss"]) for p in rows])
            color = colors[i % len(colors)]
            label = f"{group['tokenizer']} / {group['eval_set']}"
            ax.scatter(x, y, color=color, zorder=3, label=label)
            law = PowerLawFit(axis, result["confidence"]).fit(x, y)
            grid = np.geomspace(x.min() / 1.5, x.max() * 1.5, 100)
            ax.plot(
                grid,
                law.predict(grid),
                color=color,
                label=f"L = {law.a:.3g}·{axis}^{law.b:.3f}  (R² = {law.r2:.3f})",
            )
            if law.n > 2:
                lo, hi = law.band(grid)
                ax.fill_between(grid, lo, hi, color=color, alpha=0.2, linewidth=0)
            for p, xi, yi in zip(rows, x, y, strict=True):
                ax.annotate(
                    p.get("model", ""),
                    (xi, yi),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel(AXES[axis])
        ax.set_ylabel("held-out loss (nats/token)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(f"L({axis}), {int(result['confidence'] * 100)}% confidence band")
    fig.tight_layout()
    for path, fmt in ((png_path, "png"), (svg_path, "svg")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=130)
    plt.close(fig)
