"""Parametric laws with an irreducible loss, fitted the Chinchilla way (Hoffmann et al. 2022).

Two laws share one fitter:

* the saturating power law ``L(X) = E + A · X^(−α)`` for one axis X (N, D or C);
* the Chinchilla law ``L(N, D) = E + A / N^α + B / D^β`` (Hoffmann et al. 2022, eq. 2).

Both are ``L = E + Σ_j A_j · X_j^(−α_j)`` and are fitted as in Hoffmann et al. 2022, appendix
D.2 ("Approach 3"): with ``a_j = ln A_j`` and ``e = ln E`` the prediction in log space is

    ln L̂ = LSE(a_1 − α_1 ln X_1, …, a_k − α_k ln X_k, e)          (LSE = log-sum-exp)

and the objective is the Huber loss (δ = 1e-3) of ``ln L̂ − ln L`` SUMMED over points, minimized
with L-BFGS from every point of the paper's initialization grid (α_j ∈ {0, 0.5, …, 2},
e ∈ {−1, −0.5, …, 1}, a_j ∈ {0, 5, …, 25}); the start with the lowest objective wins. The
objective and its analytic gradient are vectorized over many parameter vectors at once, so the
whole grid and every bootstrap refit run as one batch (:mod:`lmscaling.lbfgs`); the winner is
polished with scipy's L-BFGS-B.

Compute-optimal allocation for the Chinchilla law (Hoffmann et al. 2022, eq. 4) at C = 6ND:

    N_opt(C) = G · (C/6)^(β/(α+β)),   D_opt(C) = G^(−1) · (C/6)^(α/(α+β)),
    G = (α A / (β B))^(1/(α+β)).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lmscaling.fit import FitError
from lmscaling.lbfgs import minimize_batch

HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, appendix D.2
GRID_EXPONENT = (0.0, 0.5, 1.0, 1.5, 2.0)
GRID_LOG_E = (-1.0, -0.5, 0.0, 0.5, 1.0)
GRID_LOG_COEF = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
# Box for ln A_j, α_j and ln E. An exponent at 0 or ln E at its floor (E ≈ 2e-9) means the data
# do not resolve that term; the fit reports it as a bound hit.
BOUNDS_LOG_COEF = (-30.0, 100.0)
BOUNDS_EXPONENT = (0.0, 5.0)
BOUNDS_LOG_E = (-20.0, 5.0)
# Flat objective: other starts within FLAT_RTOL of the best objective whose exponents differ by
# more than FLAT_EXPONENT (absolute) or whose E differs by more than FLAT_E (relative).
FLAT_RTOL = 0.01
FLAT_EXPONENT = 0.1
FLAT_E = 0.1
# Poorly determined: a bootstrap interval of an exponent wider than WIDE_EXPONENT, or of E wider
# than WIDE_E relative to E.
WIDE_EXPONENT = 0.1
WIDE_E = 0.2


class ParametricFitError(FitError):
    """The points cannot be fitted by the parametric law (shape, count or values)."""


def huber_lse_objective(
    theta: np.ndarray,
    log_x: np.ndarray,
    log_loss: np.ndarray,
    delta: float = HUBER_DELTA,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Summed Huber loss of ``ln L̂ − ln L`` and its gradient, for many parameter vectors.

    Args:
        theta: (s, 2k+1) rows ``[a_1..a_k, α_1..α_k, e]`` (ln A_j, exponents, ln E).
        log_x: (n, k) ``ln X_j`` of each point.
        log_loss: (n,) ``ln L`` (loss in nats/token).
        delta: Huber threshold on the log-loss residual.
        weights: (s, n) point weights per row of ``theta`` (bootstrap counts), or None for 1.

    Returns:
        ``f`` (s,) and ``grad`` (s, 2k+1).
    """
    k = log_x.shape[1]
    log_e = theta[:, 2 * k, None]  # (s, 1)
    # One (s, n) array per term: reductions over a length-k axis are slow in numpy.
    z = [theta[:, j, None] - theta[:, k + j, None] * log_x[:, j] for j in range(k)]
    top = log_e
    for zj in z:
        top = np.maximum(top, zj)  # (s, n)
    terms = [np.exp(zj - top) for zj in z]
    ez = np.exp(log_e - top)
    total = ez + sum(terms)
    resid = top + np.log(total) - log_loss  # ln L̂ − ln L, (s, n)
    h = np.clip(resid, -delta, delta)  # Huber derivative
    loss = h * (resid - 0.5 * h)  # Huber: r²/2 inside ±δ, δ(|r| − δ/2) outside
    if weights is not None:
        h *= weights
        loss *= weights
    h /= total  # d LSE / d z_j = exp(z_j − top) / total
    grad = np.empty_like(theta)
    for j, tj in enumerate(terms):
        hz = h * tj
        grad[:, j] = hz.sum(axis=1)
        grad[:, k + j] = -(hz @ log_x[:, j])
    grad[:, 2 * k] = np.sum(h * ez, axis=1)
    return loss.sum(axis=1), grad


def _fmt_interval(pair) -> str:
    return f"[{pair[0]:.3g}, {pair[1]:.3g}]"


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    ok = samples[np.isfinite(samples)]
    if ok.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.percentile(ok, [50 * (1 - confidence), 50 * (1 + confidence)])
    return (float(lo), float(hi))


@dataclass
class LogSumExpLaw:
    """``L = E + Σ_j A_j X_j^(−α_j)`` fitted by the Huber/LSE recipe of Hoffmann et al. 2022.

    Subclasses fix the axes (``x_names``). After :meth:`fit`: ``theta`` (the best parameters
    ``[ln A_j.., α_j.., ln E]``), ``objective``, ``start`` (the grid point that won),
    ``n_starts``, ``n_converged``, ``bounds_hit`` (parameter names at a bound), ``flat``
    (alternative near-optimal fits, see :meth:`fit`), ``residuals`` (ln L − ln L̂ per point) and
    ``warnings``; after :meth:`bootstrap`: ``samples`` (B, 2k+1) and the interval methods.
    """

    x_names: tuple[str, ...] = ()
    delta: float = HUBER_DELTA
    confidence: float = 0.95
    theta: np.ndarray | None = None
    objective: float = math.nan
    start: list[float] = field(default_factory=list)
    n_starts: int = 0
    n_converged: int = 0
    n: int = 0
    bounds_hit: list[str] = field(default_factory=list)
    flat: dict = field(default_factory=dict)
    residuals: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    samples: np.ndarray | None = None
    n_resamples_failed: int = 0
    _log_x: np.ndarray | None = field(default=None, repr=False)
    _log_loss: np.ndarray | None = field(default=None, repr=False)
    _optima: np.ndarray | None = field(default=None, repr=False)

    # ---- names and parameters -------------------------------------------------------------
    @property
    def k(self) -> int:
        """Number of power-law terms."""
        return len(self.x_names)

    @property
    def coef_names(self) -> list[str]:
        """Names of the coefficients A_j: ``A`` (and ``B`` for the second term)."""
        return ["A", "B", "C_coef"][: self.k]

    @property
    def exponent_names(self) -> list[str]:
        """Names of the exponents α_j: ``alpha`` (and ``beta``)."""
        return ["alpha", "beta", "gamma"][: self.k]

    @property
    def label(self) -> str:
        """The fitted form, e.g. ``L(N) = E + A/N^alpha``: the prefix of its messages, which
        keeps them apart from those of the plain power law ``L(N)``."""
        terms = " + ".join(
            f"{c}/{x}^{e}"
            for c, x, e in zip(self.coef_names, self.x_names, self.exponent_names, strict=True)
        )
        return f"L({', '.join(self.x_names)}) = E + {terms}"

    @property
    def theta_names(self) -> list[str]:
        """Names of the entries of ``theta``: ``[ln A.., α.., ln E]``."""
        return [f"log_{c}" for c in self.coef_names] + self.exponent_names + ["log_E"]

    def grid(self) -> np.ndarray:
        """The initialization grid of Hoffmann et al. 2022 (D.2), rows like ``theta``."""
        axes = [GRID_LOG_COEF] * self.k + [GRID_EXPONENT] * self.k + [GRID_LOG_E]
        return np.array(list(itertools.product(*axes)), dtype=float)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of ``theta``."""
        pairs = [BOUNDS_LOG_COEF] * self.k + [BOUNDS_EXPONENT] * self.k + [BOUNDS_LOG_E]
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])

    def params(self, theta: np.ndarray | None = None) -> dict[str, np.ndarray | float]:
        """``{"E", "A", ("B",) "alpha", ("beta",)}`` from ``theta`` (p,) or (B, p)."""
        t = self.theta if theta is None else np.asarray(theta, dtype=float)
        if t is None:
            raise ParametricFitError("call fit() first")
        out = {"E": np.exp(t[..., 2 * self.k])}
        for j, name in enumerate(self.coef_names):
            out[name] = np.exp(t[..., j])
        for j, name in enumerate(self.exponent_names):
            out[name] = t[..., self.k + j]
        if t.ndim == 1:
            return {key: float(v) for key, v in out.items()}
        return out

    # ---- data -------------------------------------------------------------------------------
    def _check(self, x: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=float)
        if x.ndim == 1 and self.k == 1:
            x = x[:, None]
        loss = np.asarray(loss, dtype=float)
        label = self.label
        if x.ndim != 2 or x.shape[1] != self.k or loss.shape != (x.shape[0],):
            raise ParametricFitError(
                f"{label}: x must be (n, {self.k}) and loss (n,), got {x.shape} and {loss.shape}"
            )
        bad = ~(np.isfinite(x).all(axis=1) & np.isfinite(loss) & (x > 0).all(axis=1))
        bad |= ~(loss > 0)
        if bad.any():
            raise ParametricFitError(
                f"{label}: {int(bad.sum())} point(s) with a non-finite or non-positive value"
            )
        return np.log(x), np.log(loss)

    def _objective(self, weights: np.ndarray | None = None):
        log_x, log_loss = self._log_x, self._log_loss

        def fun(theta: np.ndarray, rows: np.ndarray):
            w = None if weights is None else weights[rows]
            return huber_lse_objective(theta, log_x, log_loss, self.delta, w)

        return fun

    # ---- fitting ----------------------------------------------------------------------------
    def fit(self, x: Sequence | np.ndarray, loss: Sequence[float]) -> LogSumExpLaw:
        """Fit from the full initialization grid; returns ``self``.

        Args:
            x: (n, k) positive values of the axes ``x_names`` (a 1-D array when k = 1).
            loss: (n,) positive losses, nats/token.

        Diagnostics set here: ``objective`` (summed Huber loss at the optimum), ``start`` (the
        grid point that won), ``n_converged`` of ``n_starts``, ``bounds_hit``, ``flat`` and
        ``warnings``: fewer points than parameters (fitted anyway, underdetermined), a flat
        objective (another start within 1% of the best objective with an exponent more than
        0.1 away or E more than 10% away), parameters at a bound.

        Raises:
            ParametricFitError: wrong shapes, or a non-finite or non-positive value.
        """
        from scipy.optimize import minimize

        self._log_x, self._log_loss = self._check(x, loss)
        self.n = int(self._log_loss.size)
        self.warnings = []
        n_params = 2 * self.k + 1
        label = self.label
        if self.n < n_params:
            self.warnings.append(
                f"{label}: fewer points ({self.n}) than parameters ({n_params}): the fit is "
                "underdetermined"
            )
        elif self.n == n_params:
            self.warnings.append(
                f"{label}: as many points as parameters ({n_params}): an exact fit, no residual "
                "degrees of freedom"
            )
        grid = self.grid()
        lower, upper = self.bounds()
        fun = self._objective()
        batch = minimize_batch(fun, grid, lower, upper)
        best = int(np.nanargmin(batch.fun))
        polished = minimize(
            lambda t: tuple(a[0] for a in fun(t[None], np.zeros(1, dtype=int))),
            batch.x[best],
            jac=True,
            method="L-BFGS-B",
            bounds=list(zip(lower, upper, strict=True)),
        )
        theta = polished.x if polished.fun <= batch.fun[best] else batch.x[best]
        self.theta = np.asarray(theta, dtype=float)
        self.objective = float(min(polished.fun, batch.fun[best]))
        self.start = [float(v) for v in grid[best]]
        self.n_starts = int(grid.shape[0])
        self.n_converged = int(batch.converged.sum())
        order = np.argsort(batch.fun)
        self._optima = batch.x[order]
        self.bounds_hit = [
            name
            for name, v, lo, hi in zip(self.theta_names, self.theta, lower, upper, strict=True)
            if min(v - lo, hi - v) <= 1e-6 * max(1.0, abs(lo), abs(hi))
        ]
        if self.bounds_hit:
            self.warnings.append(
                f"{label}: parameter(s) at a bound: {', '.join(self.bounds_hit)} "
                "(the data do not resolve that term)"
            )
        self.flat = self._flatness(batch.x, batch.fun)
        if self.flat["flat"]:
            self.warnings.append(
                f"{label}: flat objective: {self.flat['n_near']} starts end within "
                f"{FLAT_RTOL:.0%} of the best objective, spanning "
                + ", ".join(
                    f"{name} {_fmt_interval(span)}"
                    for name, span in zip(
                        self.exponent_names, self.flat["exponent_range"], strict=True
                    )
                )
                + f", E {_fmt_interval(self.flat['E_range'])}"
            )
        pred = self.predict_log(self._log_x)
        self.residuals = [float(r) for r in self._log_loss - pred]
        return self

    def _flatness(self, xs: np.ndarray, fs: np.ndarray) -> dict:
        """Near-optimal grid endpoints and the spread of their exponents and E."""
        near = np.isfinite(fs) & (fs <= self.objective * (1 + FLAT_RTOL) + 1e-15)
        near_x = np.vstack([xs[near], self.theta[None]])
        expo = near_x[:, self.k : 2 * self.k]
        big_e = np.exp(near_x[:, 2 * self.k])
        e_best = math.exp(self.theta[2 * self.k])
        exp_spread = float(np.max(expo.max(axis=0) - expo.min(axis=0)))
        e_spread = float((big_e.max() - big_e.min()) / e_best)
        return {
            "flat": exp_spread > FLAT_EXPONENT or e_spread > FLAT_E,
            "rtol": FLAT_RTOL,
            "n_near": int(near.sum()),
            "exponent_range": [
                [round(float(lo), 4), round(float(hi), 4)]
                for lo, hi in zip(expo.min(axis=0), expo.max(axis=0), strict=True)
            ],
            "E_range": [round(float(big_e.min()), 4), round(float(big_e.max()), 4)],
        }

    # ---- prediction -------------------------------------------------------------------------
    def predict_log(self, log_x: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """``ln L̂`` at ``log_x`` (n, k) for ``theta`` (p,) → (n,) or (B, p) → (B, n)."""
        t = self.theta if theta is None else np.asarray(theta, dtype=float)
        if t is None:
            raise ParametricFitError("call fit() first")
        t2 = np.atleast_2d(t)
        k = self.k
        z = t2[:, None, :k] - t2[:, None, k : 2 * k] * log_x[None]  # (B, n, k)
        z = np.concatenate(
            [z, np.broadcast_to(t2[:, None, 2 * k : 2 * k + 1], z[..., :1].shape)], 2
        )
        top = z.max(axis=2)
        out = top + np.log(np.exp(z - top[..., None]).sum(axis=2))
        return out[0] if t.ndim == 1 else out

    def _as_log_x(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self.k == 1:
            x = x.reshape(-1, 1)
        return np.log(np.atleast_2d(x))

    def predict(self, x) -> np.ndarray:
        """Loss (nats/token) at ``x``: (n, k) array, or (n,) when k = 1."""
        return np.exp(self.predict_log(self._as_log_x(x)))

    def band(self, x, kind: str = "confidence") -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap ``confidence``-level band at ``x`` (nats/token); needs :meth:`bootstrap`.

        ``kind="confidence"``: percentiles of the refitted laws' predictions (uncertainty of the
        mean). ``kind="prediction"``: each refit's prediction times ``exp`` of a residual drawn
        from the full-data fit, so it also covers the scatter of single points.
        """
        if self.samples is None:
            raise ParametricFitError("call bootstrap() first")
        log_pred = self.predict_log(self._as_log_x(x), self.samples)  # (B, n)
        if kind == "prediction":
            rng = np.random.default_rng(0)
            log_pred = log_pred + rng.choice(np.asarray(self.residuals), size=log_pred.shape)
        elif kind != "confidence":
            raise ValueError(f"kind must be 'confidence' or 'prediction', got {kind!r}")
        q = [50 * (1 - self.confidence), 50 * (1 + self.confidence)]
        lo, hi = np.nanpercentile(np.exp(log_pred), q, axis=0)
        return lo, hi

    # ---- bootstrap --------------------------------------------------------------------------
    def bootstrap(self, n_resamples: int = 1000, seed: int = 0, n_grid_starts: int = 4):
        """Refit on ``n_resamples`` resamples of the points (drawn with replacement).

        Each refit starts from the full-data optimum and from the ``n_grid_starts`` best
        distinct endpoints of the full-data grid (so a resample whose optimum lies in another
        basin can reach it); the best of those is kept. All refits run as one batch. Stopping
        rules are tighter than scipy's defaults (absolute objective gain 1e-13, projected
        gradient 1e-8) because a warm start sits where scipy's defaults would stop at once.
        Sets ``samples`` (B, 2k+1); returns ``self``.
        """
        if self.theta is None:
            raise ParametricFitError("call fit() first")
        if n_resamples < 1:
            return self
        rng = np.random.default_rng(seed)
        n = self.n
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(float)
        starts = [self.theta]
        for cand in self._optima:
            if len(starts) > n_grid_starts:
                break
            if all(np.max(np.abs(cand - s)) > 0.05 for s in starts):
                starts.append(cand)
        starts = np.array(starts)
        n_s = starts.shape[0]
        weights = np.repeat(counts, n_s, axis=0)
        lower, upper = self.bounds()
        result = minimize_batch(
            self._objective(weights),
            np.tile(starts, (n_resamples, 1)),
            lower,
            upper,
            ftol=1e-13,
            gtol=1e-8,
        )
        fun = np.where(np.isfinite(result.fun), result.fun, np.inf).reshape(n_resamples, n_s)
        xs = result.x.reshape(n_resamples, n_s, -1)
        best = fun.argmin(axis=1)
        self.samples = xs[np.arange(n_resamples), best]
        ok = np.isfinite(fun[np.arange(n_resamples), best])
        self.n_resamples_failed = int((~ok).sum())
        self.samples[~ok] = np.nan
        self._warn_wide()
        return self

    def _warn_wide(self) -> None:
        """Warn when the bootstrap leaves an exponent or E poorly determined."""
        label = self.label
        iv = self.intervals()
        e = math.exp(self.theta[2 * self.k])
        wide = [
            f"{name} {_fmt_interval(iv[name])}"
            for name in self.exponent_names
            if iv[name][1] - iv[name][0] > WIDE_EXPONENT
        ]
        if iv["E"][1] - iv["E"][0] > WIDE_E * e:
            wide.append(f"E {_fmt_interval(iv['E'])}")
        if wide:
            self.warnings.append(
                f"{label}: poorly determined, {self.confidence:.0%} bootstrap interval of "
                + ", ".join(wide)
            )

    def derived(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Parameters and derived quantities for ``theta`` (B, p): name → (B,) arrays."""
        return dict(self.params(np.atleast_2d(theta)))

    def intervals(self) -> dict[str, list[float]]:
        """Bootstrap percentile interval of every quantity of :meth:`derived`."""
        if self.samples is None:
            return {}
        return {
            name: list(_percentiles(v, self.confidence))
            for name, v in self.derived(self.samples).items()
        }

    # ---- serialization ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready parameters, diagnostics, bootstrap intervals and samples."""
        if self.theta is None:
            raise ParametricFitError("call fit() first")
        values = {k: float(v[0]) for k, v in self.derived(self.theta[None]).items()}
        return {
            "x": list(self.x_names),
            "form": self.form,
            "params": self.params(),
            "derived": values,
            "theta": [float(v) for v in self.theta],
            "theta_names": self.theta_names,
            "objective": self.objective,
            "loss_function": f"sum of Huber(delta={self.delta:g}) of ln L_hat - ln L",
            "start": self.start,
            "n_starts": self.n_starts,
            "n_converged": self.n_converged,
            "bounds_hit": self.bounds_hit,
            "flat_objective": self.flat,
            "n": self.n,
            "confidence": self.confidence,
            "intervals": self.intervals(),
            "bootstrap": {
                "n_resamples": 0 if self.samples is None else int(self.samples.shape[0]),
                "n_failed": self.n_resamples_failed,
                "theta_samples": None if self.samples is None else self.samples.tolist(),
            },
            "residuals": self.residuals,
            "warnings": self.warnings,
        }

    @classmethod
    def from_dict(cls, d: dict, **kwargs) -> LogSumExpLaw:
        """Rebuild a fitted law (for prediction) from :meth:`to_dict` output."""
        law = cls(**kwargs)
        law.theta = np.asarray(d["theta"], dtype=float)
        law.objective = d.get("objective", math.nan)
        law.confidence = d.get("confidence", law.confidence)
        law.residuals = list(d.get("residuals", []))
        samples = (d.get("bootstrap") or {}).get("theta_samples")
        if samples:
            law.samples = np.array(
                [[math.nan if v is None else v for v in row] for row in samples], dtype=float
            )
        return law

    @property
    def form(self) -> str:
        terms = " + ".join(
            f"{c}/{x}^{e}"
            for c, x, e in zip(self.coef_names, self.x_names, self.exponent_names, strict=True)
        )
        return f"L = E + {terms}"


class SaturatingPowerLawFit(LogSumExpLaw):
    """``L(X) = E + A · X^(−α)``: a power law with an irreducible loss E, for one axis X.

    Fitted like the Chinchilla law (Huber on ln L, LSE form, grid of Hoffmann et al. 2022
    restricted to one term: 150 starts). ``x`` is a 1-D array of N, D or C.
    """

    def __init__(self, x_name: str = "N", **kwargs) -> None:
        super().__init__(x_names=(x_name,), **kwargs)


class ChinchillaFit(LogSumExpLaw):
    """``L(N, D) = E + A/N^α + B/D^β`` (Hoffmann et al. 2022, eq. 2; Approach 3).

    ``x`` is (n, 2): non-embedding parameters N and training tokens D per point. ``budgets``
    (FLOP) are the compute budgets at which :meth:`derived` (and so the bootstrap intervals)
    reports the compute-optimal allocation.
    """

    def __init__(self, budgets: Sequence[float] = (), **kwargs) -> None:
        super().__init__(x_names=("N", "D"), **kwargs)
        self.budgets = [float(b) for b in budgets]

    @classmethod
    def from_dict(cls, d: dict, **kwargs) -> ChinchillaFit:
        kwargs.setdefault("budgets", [b["C"] for b in d.get("compute_optimal", [])])
        return super().from_dict(d, **kwargs)

    def allocation(self, budget, theta: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Compute-optimal N, D, tokens per parameter and loss at FLOP budget(s) C.

        Hoffmann et al. 2022, eq. 4: ``N_opt = G (C/6)^a``, ``D_opt = G^-1 (C/6)^b`` with
        ``a = β/(α+β)``, ``b = α/(α+β)``, ``G = (αA/(βB))^(1/(α+β))``. ``theta`` (p,) or
        (B, p); ``budget`` a scalar or array broadcastable against the samples.

        Returns:
            ``{"N_opt", "D_opt", "tokens_per_parameter", "L_opt"}`` (parameters, tokens,
            tokens/parameter, nats/token).
        """
        p = self.params(self.theta if theta is None else theta)
        alpha, beta = np.asarray(p["alpha"]), np.asarray(p["beta"])
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            g = (alpha * p["A"] / (beta * p["B"])) ** (1 / (alpha + beta))
            c6 = np.asarray(budget, dtype=float) / 6.0
            n_opt = g * c6 ** (beta / (alpha + beta))
            d_opt = c6 ** (alpha / (alpha + beta)) / g
            l_opt = p["E"] + p["A"] / n_opt**alpha + p["B"] / d_opt**beta
            ratio = d_opt / n_opt  # nan where a degenerate bootstrap sample overflowed
        return {"N_opt": n_opt, "D_opt": d_opt, "tokens_per_parameter": ratio, "L_opt": l_opt}

    def derived(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Parameters, ``G``, the exponents ``a`` (N_opt ∝ C^a) and ``b`` (D_opt ∝ C^b), and
        the allocation at each of ``budgets`` (keys ``N_opt@C``, …)."""
        t = np.atleast_2d(theta)
        out = dict(self.params(t))
        alpha, beta = out["alpha"], out["beta"]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out["G"] = (alpha * out["A"] / (beta * out["B"])) ** (1 / (alpha + beta))
            out["a"] = beta / (alpha + beta)
            out["b"] = alpha / (alpha + beta)
        for c in self.budgets:
            for name, v in self.allocation(c, t).items():
                out[f"{name}@{c:.3g}"] = v
        return out

    def compute_optimal(self) -> list[dict]:
        """Allocation at each budget with its bootstrap interval (when bootstrapped)."""
        rows = []
        intervals = self.intervals()
        for c in self.budgets:
            row = {"C": c}
            for name, v in self.allocation(c).items():
                row[name] = float(v)
                key = f"{name}@{c:.3g}"
                if key in intervals:
                    row[f"{name}_ci"] = intervals[key]
            rows.append(row)
        return rows

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["compute_optimal"] = self.compute_optimal()
        d["form"] = "L = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, eq. 2)"
        return d
