"""Batched L-BFGS: many small, independent bounded minimizations advanced together.

A scaling-law fit starts L-BFGS from every point of an initialization grid (Hoffmann et al.
2022, appendix D.2: 4,500 starts) and a bootstrap refits the law a thousand times. Each problem
has 3-5 parameters and a few hundred points, so one problem at a time spends its time in Python
overhead. Here all problems take their steps in lock-step: one call of the objective evaluates
every active problem at once (numpy over a leading batch axis), and a problem leaves the batch as
soon as it has converged.

The method is limited-memory BFGS (Nocedal & Wright 2006, algorithm 7.4, the two-loop recursion)
with a backtracking Armijo line search, box bounds handled by projection (a step is clipped to
the box; a direction component that pushes out of the box at an active bound is dropped). The
stopping rules are those of scipy's L-BFGS-B with its defaults (``factr = 1e7``, ``pgtol =
1e-5``): stop when ``(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol`` or when the largest
projected-gradient component is ``<= gtol``. Note the ``1`` in that denominator: an objective
of order 1e-3 (a sum of Huber terms) stops on an absolute reduction of about 2e-9.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

FTOL = 1e7 * np.finfo(float).eps  # scipy L-BFGS-B default: factr * machine epsilon
GTOL = 1e-5  # scipy L-BFGS-B default pgtol

# fun(x, rows) -> (f, g): x (s, p) parameters of the problems ``rows`` (s,), f (s,), g (s, p)
BatchObjective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class BatchResult:
    """Outcome of :func:`minimize_batch` for S problems with p parameters.

    ``x`` (S, p) final parameters, ``fun`` (S,) objectives there, ``nit`` (S,) iterations,
    ``converged`` (S,) True where a stopping rule was met (False: iteration limit, or a line
    search that found no decrease, which happens at the limit of floating-point precision).
    """

    x: np.ndarray
    fun: np.ndarray
    nit: np.ndarray
    converged: np.ndarray


def _projected_gradient(x: np.ndarray, g: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Gradient with the components that point out of the box at an active bound zeroed."""
    pg = g.copy()
    pg[(x <= lo) & (g > 0)] = 0.0
    pg[(x >= hi) & (g < 0)] = 0.0
    return pg


def _two_loop(g, s_hist, y_hist, rho, n_hist):
    """L-BFGS two-loop recursion (Nocedal & Wright alg. 7.4): returns H·g, shape (s, p).

    History arrays are (s, m, p) with the newest pair last; a problem with ``n_hist`` = k pairs
    uses the last k slots.
    """
    m = s_hist.shape[1]
    valid = np.arange(m)[None, :] >= (m - n_hist)[:, None]
    q = g.copy()
    alpha = np.zeros(valid.shape)
    for j in range(m - 1, -1, -1):
        alpha[:, j] = np.where(valid[:, j], rho[:, j] * np.sum(s_hist[:, j] * q, axis=1), 0.0)
        q -= alpha[:, j, None] * y_hist[:, j]
    sy = np.sum(s_hist[:, -1] * y_hist[:, -1], axis=1)
    yy = np.sum(y_hist[:, -1] ** 2, axis=1)
    gamma = np.where(n_hist > 0, sy / np.where(yy > 0, yy, 1.0), 1.0)
    r = gamma[:, None] * q
    for j in range(m):
        beta = np.where(valid[:, j], rho[:, j] * np.sum(y_hist[:, j] * r, axis=1), 0.0)
        r += s_hist[:, j] * (alpha[:, j] - beta)[:, None]
    return r


def minimize_batch(
    fun: BatchObjective,
    x0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    memory: int = 10,
    max_iter: int = 1000,
    ftol: float = FTOL,
    gtol: float = GTOL,
    max_linesearch: int = 40,
) -> BatchResult:
    """Minimize S independent problems from the starts ``x0`` (S, p) within ``[lower, upper]``.

    Args:
        fun: ``fun(x, rows)`` returns the objectives (s,) and gradients (s, p) of the problems
            whose indices (into the batch) are ``rows`` (s,), at their parameters ``x`` (s, p).
        x0: starting points (S, p); clipped into the box.
        lower, upper: bounds (p,); ``-inf``/``inf`` for none.
        memory: correction pairs kept per problem.
        max_iter: iteration limit per problem.
        ftol, gtol: scipy L-BFGS-B stopping tolerances (see the module docstring).
        max_linesearch: step halvings before a line search gives up.

    Returns:
        :class:`BatchResult`.
    """
    lo, hi = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    x = np.clip(np.array(x0, dtype=float), lo, hi)
    n_prob, p = x.shape
    f, g = fun(x, np.arange(n_prob))
    s_hist = np.zeros((n_prob, memory, p))
    y_hist = np.zeros((n_prob, memory, p))
    rho = np.zeros((n_prob, memory))
    n_hist = np.zeros(n_prob, dtype=int)
    nit = np.zeros(n_prob, dtype=int)
    converged = np.abs(_projected_gradient(x, g, lo, hi)).max(axis=1) <= gtol
    done = converged | ~np.isfinite(f)
    for _ in range(max_iter):
        act = np.flatnonzero(~done)
        if act.size == 0:
            break
        xa, fa, ga = x[act], f[act], g[act]
        d = -_two_loop(ga, s_hist[act], y_hist[act], rho[act], n_hist[act])
        blocked = ((xa <= lo) & (d < 0)) | ((xa >= hi) & (d > 0))
        d[blocked] = 0.0
        uphill = np.sum(ga * d, axis=1) >= 0
        if uphill.any():  # the quasi-Newton direction failed: restart from steepest descent
            d[uphill] = -_projected_gradient(xa[uphill], ga[uphill], lo, hi)
            n_hist[act[uphill]] = 0
        norm = np.linalg.norm(d, axis=1)
        step = np.where(n_hist[act] == 0, np.minimum(1.0, 1.0 / np.maximum(norm, 1e-300)), 1.0)
        x_new, f_new, g_new = xa.copy(), fa.copy(), ga.copy()
        accepted = np.zeros(act.size, dtype=bool)
        pending = np.flatnonzero(norm > 0)
        for _ in range(max_linesearch):
            xt = np.clip(xa[pending] + step[pending, None] * d[pending], lo, hi)
            ft, gt = fun(xt, act[pending])
            decrease = np.sum(ga[pending] * (xt - xa[pending]), axis=1)
            ok = np.isfinite(ft) & (ft <= fa[pending] + 1e-4 * decrease)
            took = pending[ok]
            x_new[took], f_new[took], g_new[took] = xt[ok], ft[ok], gt[ok]
            accepted[took] = True
            pending = pending[~ok]
            if pending.size == 0:
                break
            step[pending] *= 0.5
        done[act[~accepted]] = True  # no decrease left along the direction
        moved = act[accepted]
        s = x_new[accepted] - xa[accepted]
        y = g_new[accepted] - ga[accepted]
        sy = np.sum(s * y, axis=1)
        curved = sy > np.finfo(float).eps * np.sum(y * y, axis=1)
        upd = moved[curved]
        s_hist[upd] = np.roll(s_hist[upd], -1, axis=1)
        y_hist[upd] = np.roll(y_hist[upd], -1, axis=1)
        rho[upd] = np.roll(rho[upd], -1, axis=1)
        s_hist[upd, -1], y_hist[upd, -1], rho[upd, -1] = s[curved], y[curved], 1.0 / sy[curved]
        n_hist[upd] = np.minimum(n_hist[upd] + 1, memory)
        f_old = f[moved]
        x[moved], f[moved], g[moved] = x_new[accepted], f_new[accepted], g_new[accepted]
        nit[moved] += 1
        scale = np.maximum(np.maximum(np.abs(f_old), np.abs(f[moved])), 1.0)
        small_gain = (f_old - f[moved]) / scale <= ftol
        flat = np.abs(_projected_gradient(x[moved], g[moved], lo, hi)).max(axis=1) <= gtol
        stop = small_gain | flat
        converged[moved[stop]] = True
        done[moved[stop]] = True
    return BatchResult(x=x, fun=f, nit=nit, converged=converged)
