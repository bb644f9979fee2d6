"""IsoFLOP analysis (Hoffmann et al. 2022, "Approach 2").

Models of several sizes N are trained at each of several compute budgets C. Per budget, the loss
is fitted by a parabola in ln N,

    L ≈ c₂ (ln N)² + c₁ ln N + c₀,       ln N_opt(C) = −c₁ / (2 c₂)

and the minima are fitted by power laws N_opt = k_N · C^a and D_opt = C / (6 N_opt) = k_D · C^b
(OLS on log-log, so b = 1 − a). Hoffmann et al. report a = 0.49 (Table 2).

Budgets come from a ``budget`` column when the table has one; otherwise points are grouped by C:
sorted by C, a point joins the current group while its C is within a factor ``1 + tolerance`` of
the group's smallest C (runs meant for one budget differ in C by rounding of the step count).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lmscaling.fit import FitError


def _split(idx: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """``idx`` split by budget label (in label order)."""
    return [idx[labels[idx] == b] for b in np.unique(labels[idx])]


class IsoFLOPError(FitError):
    """The points do not form an IsoFLOP grid that can be analysed."""


def group_budgets(c: Sequence[float], tolerance: float = 0.25) -> np.ndarray:
    """Budget label (the geometric mean C of its group, FLOP) for each point; shape of ``c``."""
    c_arr = np.asarray(c, dtype=float)
    order = np.argsort(c_arr)
    labels = np.empty_like(c_arr)
    start = 0
    for i in range(1, order.size + 1):
        if i == order.size or c_arr[order[i]] > c_arr[order[start]] * (1 + tolerance):
            members = order[start:i]
            labels[members] = math.exp(float(np.mean(np.log(c_arr[members]))))
            start = i
    return labels


@dataclass
class IsoFLOPFit:
    """IsoFLOP parabolas and the power laws of their minima; :meth:`fit`, :meth:`predict`.

    After :meth:`fit`: ``budgets`` (one dict per budget: ``C``, ``N``, ``loss``, parabola
    ``coef`` [c₂, c₁, c₀] in ln N, ``N_opt``, ``D_opt``, ``L_opt``, ``used``, ``warning``),
    ``a``, ``k_N`` and their intervals (``a_ci``, from OLS t intervals; needs 3 used budgets),
    ``b`` = 1 − a, ``n_used``, ``warnings``. After :meth:`bootstrap`: ``samples`` (B, 2), the
    refitted ``(a, ln k_N)`` of each successful resample, and their percentile intervals.
    """

    confidence: float = 0.95
    tolerance: float = 0.25
    budgets: list[dict] = field(default_factory=list)
    a: float = math.nan
    k_N: float = math.nan
    a_ci: tuple[float, float] = (math.nan, math.nan)
    n_used: int = 0
    warnings: list[str] = field(default_factory=list)
    a_boot_ci: tuple[float, float] = (math.nan, math.nan)
    k_N_boot_ci: tuple[float, float] = (math.nan, math.nan)
    n_resamples: int = 0
    n_resamples_failed: int = 0
    samples: np.ndarray | None = field(default=None, repr=False)
    _data: tuple | None = field(default=None, repr=False)

    @staticmethod
    def applicable(n: Sequence[float], c: Sequence[float], tolerance: float = 0.25) -> bool:
        """True when at least 2 budgets have 3 or more distinct N each."""
        labels = group_budgets(c, tolerance)
        n_arr = np.asarray(n, dtype=float)
        sizes = [len(np.unique(n_arr[labels == b])) for b in np.unique(labels)]
        return sum(s >= 3 for s in sizes) >= 2

    def fit(
        self,
        n: Sequence[float],
        c: Sequence[float],
        loss: Sequence[float],
        budget: Sequence[float] | None = None,
    ) -> IsoFLOPFit:
        """Fit parabolas per budget and the power law of their minima; returns ``self``.

        Args:
            n: (m,) non-embedding parameters; c: (m,) training FLOP; loss: (m,) nats/token.
            budget: (m,) budget label per point, or None to group ``c`` (module docstring).

        A budget with fewer than 3 distinct N, a parabola that opens downward, or a minimum
        outside the sampled N is kept in ``budgets`` but not used, with a warning.

        Raises:
            IsoFLOPError: fewer than 2 usable budgets, or non-positive/non-finite values.
        """
        n_arr, c_arr, y = (np.asarray(v, dtype=float) for v in (n, c, loss))
        if not (n_arr.shape == c_arr.shape == y.shape) or n_arr.ndim != 1:
            raise IsoFLOPError("IsoFLOP: n, c and loss must be 1-D of equal length")
        ok = np.isfinite(n_arr) & np.isfinite(c_arr) & np.isfinite(y) & (n_arr > 0) & (c_arr > 0)
        if not ok.all():
            raise IsoFLOPError(f"IsoFLOP: {int((~ok).sum())} point(s) non-finite or non-positive")
        labels = (
            group_budgets(c_arr, self.tolerance)
            if budget is None
            else np.asarray(budget, dtype=float)
        )
        self.budgets, self.warnings = [], []
        for label in np.unique(labels):
            sel = labels == label
            row = self._parabola(float(label), n_arr[sel], y[sel])
            if row["warning"]:
                self.warnings.append(row["warning"])
            self.budgets.append(row)
        used = [b for b in self.budgets if b["used"]]
        self.n_used = len(used)
        if self.n_used < 2:
            raise IsoFLOPError(
                f"IsoFLOP: {self.n_used} usable budget(s); need 2 budgets with 3+ sizes each "
                "and a loss minimum inside the sampled sizes"
            )
        self._fit_power_law(np.array([b["C"] for b in used]), np.array([b["N_opt"] for b in used]))
        self._data = (n_arr, c_arr, y, labels)
        return self

    def bootstrap(self, n_resamples: int = 1000, seed: int = 0) -> IsoFLOPFit:
        """Percentile intervals of ``a`` and ``k_N`` from refits on resampled points.

        Points are resampled with replacement within each budget (each budget keeps its size);
        a resample whose analysis fails (fewer than 2 usable budgets) is counted in
        ``n_resamples_failed``. Sets ``samples`` (B, 2) = ``(a, ln k_N)`` per successful
        resample, ``a_boot_ci`` and ``k_N_boot_ci``; returns ``self``.
        """
        if self._data is None:
            raise IsoFLOPError("IsoFLOP: call fit() first")
        n_arr, c_arr, y, labels = self._data
        rng = np.random.default_rng(seed)
        groups = [np.flatnonzero(labels == b) for b in np.unique(labels)]
        pairs = []
        failed = 0
        for _ in range(n_resamples):
            idx = np.concatenate([rng.choice(g, size=g.size) for g in groups])
            rows = [
                self._parabola(float(labels[g[0]]), n_arr[g], y[g]) for g in _split(idx, labels)
            ]
            used = [r for r in rows if r["used"]]
            if len(used) < 2:
                failed += 1
                continue
            a, ln_k = np.polyfit(
                np.log([r["C"] for r in used]), np.log([r["N_opt"] for r in used]), 1
            )
            pairs.append((a, ln_k))
        self.n_resamples, self.n_resamples_failed = n_resamples, failed
        self.samples = np.array(pairs, dtype=float).reshape(-1, 2)
        if pairs:
            q = self._quantiles()
            self.a_boot_ci = tuple(float(v) for v in np.percentile(self.samples[:, 0], q))
            self.k_N_boot_ci = tuple(float(v) for v in np.exp(np.percentile(self.samples[:, 1], q)))
        return self

    def _quantiles(self) -> list[float]:
        return [50 * (1 - self.confidence), 50 * (1 + self.confidence)]

    def allocation_intervals(self, c) -> dict[str, np.ndarray]:
        """Bootstrap percentile intervals of the allocation at FLOP ``c`` (shape (m,)).

        Each resample's ``(a, k_N)`` gives ``N_opt = k_N C^a``, ``D_opt = C / (6 N_opt)`` and
        ``D_opt / N_opt``; the intervals are their percentiles at ``confidence`` (jointly
        resampled exponent and coefficient, not the product of marginal intervals).

        Returns:
            ``{"N_opt", "D_opt", "tokens_per_parameter"}``, each (2, m): lower and upper bounds.

        Raises:
            IsoFLOPError: when there are no bootstrap samples (``bootstrap`` not run, or every
                resample failed).
        """
        if self.samples is None or len(self.samples) == 0:
            raise IsoFLOPError("IsoFLOP: no bootstrap samples to give intervals")
        c_arr = np.atleast_1d(np.asarray(c, dtype=float))
        a, ln_k = self.samples[:, :1], self.samples[:, 1:]  # (B, 1)
        n_opt = np.exp(ln_k + a * np.log(c_arr))  # (B, m)
        d_opt = c_arr / (6 * n_opt)
        q = self._quantiles()
        return {
            name: np.percentile(v, q, axis=0)
            for name, v in (
                ("N_opt", n_opt),
                ("D_opt", d_opt),
                ("tokens_per_parameter", d_opt / n_opt),
            )
        }

    @staticmethod
    def _parabola(c: float, n: np.ndarray, y: np.ndarray) -> dict:
        row = {"C": c, "N": n.tolist(), "loss": y.tolist(), "coef": None, "used": False}
        row.update({"N_opt": None, "D_opt": None, "L_opt": None, "warning": None})
        if len(np.unique(n)) < 3:
            row["warning"] = f"budget C={c:.3g}: {len(np.unique(n))} distinct N (< 3), not used"
            return row
        ln_n = np.log(n)
        c2, c1, c0 = np.polyfit(ln_n, y, 2)
        row["coef"] = [float(c2), float(c1), float(c0)]
        if c2 <= 0:
            row["warning"] = f"budget C={c:.3g}: parabola opens downward, not used"
            return row
        vertex = -c1 / (2 * c2)
        if not ln_n.min() <= vertex <= ln_n.max():
            row["warning"] = (
                f"budget C={c:.3g}: loss minimum outside the sampled N "
                f"({math.exp(vertex):.3g} vs {n.min():.3g}-{n.max():.3g}), not used"
            )
            return row
        n_opt = math.exp(vertex)
        row.update(
            used=True,
            N_opt=n_opt,
            D_opt=c / (6 * n_opt),
            L_opt=float(c0 + c1 * vertex + c2 * vertex**2),
        )
        return row

    def _fit_power_law(self, c: np.ndarray, n_opt: np.ndarray) -> None:
        """OLS of ln N_opt on ln C with t intervals (statsmodels) when 3+ budgets are used."""
        import statsmodels.api as sm

        if len(c) >= 3:
            res = sm.OLS(np.log(n_opt), sm.add_constant(np.log(c))).fit()
            (ln_k, a), ci = res.params, res.conf_int(alpha=1 - self.confidence)
            self.a_ci = (float(ci[1][0]), float(ci[1][1]))
        else:
            a, ln_k = np.polyfit(np.log(c), np.log(n_opt), 1)
            self.a_ci = (math.nan, math.nan)
            self.warnings.append("IsoFLOP: 2 budgets: exponent exact, no interval")
        self.a, self.k_N = float(a), float(math.exp(ln_k))

    @property
    def b(self) -> float:
        """Exponent of D_opt ∝ C^b (b = 1 − a, from D_opt = C / (6 N_opt))."""
        return 1.0 - self.a

    def predict(self, c) -> tuple[np.ndarray, np.ndarray]:
        """Compute-optimal ``N_opt`` (parameters) and ``D_opt`` (tokens) at FLOP ``c``."""
        c_arr = np.asarray(c, dtype=float)
        n_opt = self.k_N * c_arr**self.a
        return n_opt, c_arr / (6 * n_opt)

    def to_dict(self) -> dict:
        """JSON-ready result."""
        return {
            "form": "N_opt = k_N * C^a, D_opt = C / (6 N_opt) (Hoffmann et al. 2022, Approach 2)",
            "a": self.a,
            "a_ci": list(self.a_ci),
            "b": self.b,
            "b_ci": [1 - self.a_ci[1], 1 - self.a_ci[0]],
            "k_N": self.k_N,
            "confidence": self.confidence,
            "bootstrap": {
                "n_resamples": self.n_resamples,
                "n_failed": self.n_resamples_failed,
                "a_ci": list(self.a_boot_ci),
                "b_ci": [1 - self.a_boot_ci[1], 1 - self.a_boot_ci[0]],
                "k_N_ci": list(self.k_N_boot_ci),
                # (a, ln k_N) of each successful resample: intervals of any derived quantity
                "samples": None if self.samples is None else self.samples.tolist(),
            },
            "n_budgets_used": self.n_used,
            "budgets": self.budgets,
            "warnings": self.warnings,
        }

    @classmethod
    def from_dict(cls, d: dict) -> IsoFLOPFit:
        """Rebuild a fitted analysis (for prediction) from :meth:`to_dict` output."""
        fit = cls(confidence=d.get("confidence", 0.95))
        fit.a, fit.k_N = d["a"], d["k_N"]
        fit.a_ci = tuple(math.nan if v is None else v for v in d.get("a_ci", [None, None]))
        fit.budgets = d.get("budgets", [])
        samples = (d.get("bootstrap") or {}).get("samples")
        if samples:
            fit.samples = np.array(samples, dtype=float).reshape(-1, 2)
        return fit
