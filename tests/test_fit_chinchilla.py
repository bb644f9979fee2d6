"""Chinchilla (Approach 3) and saturating fits, the batched L-BFGS, compute-optimal allocation."""

import math

import numpy as np
import pytest
from scipy.optimize import approx_fprime, minimize, minimize_scalar

from lmscaling.chinchilla import (
    ChinchillaFit,
    ParametricFitError,
    SaturatingPowerLawFit,
    huber_lse_objective,
)
from lmscaling.lbfgs import minimize_batch

TRUE = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.36}


def law(n, d, p=TRUE):
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def grid_points(noise=0.0, seed=0):
    """Model sizes 1e7..1e9 crossed with 20..2000 tokens per parameter: N and D vary apart."""
    rng = np.random.default_rng(seed)
    n = np.repeat(np.geomspace(1e7, 1e9, 6), 5)
    d = n * np.tile(np.geomspace(20, 2000, 5), 6)
    loss = law(n, d) * np.exp(rng.normal(0, noise, n.size))
    return np.column_stack([n, d]), loss


def test_objective_value_and_gradient_match_definitions():
    x, loss = grid_points(0.01)
    log_x, log_loss = np.log(x), np.log(loss)
    theta = np.array([[5.0, 7.0, 0.3, 0.4, 0.4], [6.5, 8.0, 0.35, 0.35, 0.6]])
    weights = np.random.default_rng(0).integers(0, 3, size=(2, loss.size)).astype(float)
    f, g = huber_lse_objective(theta, log_x, log_loss, 1e-3, weights)
    for row in range(2):
        t = theta[row]
        pred = np.log(np.exp(t[0] - t[2] * log_x[:, 0]) + np.exp(t[1] - t[3] * log_x[:, 1]))
        pred = np.logaddexp(pred, t[4])
        r = pred - log_loss
        huber = np.where(np.abs(r) <= 1e-3, 0.5 * r**2, 1e-3 * (np.abs(r) - 0.5e-3))
        assert f[row] == pytest.approx(np.sum(weights[row] * huber), rel=1e-12)

        def f1(v, row=row):
            return huber_lse_objective(v[None], log_x, log_loss, 1e-3, weights[row : row + 1])[0][0]

        np.testing.assert_allclose(g[row], approx_fprime(t, f1, 1e-7), rtol=1e-4, atol=1e-8)


def test_batched_lbfgs_matches_scipy_on_bounded_rosenbrock():
    def fun(x, rows):
        a, b = x[:, 0], x[:, 1]
        f = (1 - a) ** 2 + 100 * (b - a**2) ** 2
        g = np.column_stack([-2 * (1 - a) - 400 * a * (b - a**2), 200 * (b - a**2)])
        return f, g

    starts = np.array([[-1.2, 1.0], [2.0, 2.0], [0.0, 0.0], [1.5, -0.5]])
    lower, upper = np.array([-2.0, -2.0]), np.array([2.0, 0.8])  # optimum (1, 1) cut off
    res = minimize_batch(fun, starts, lower, upper, ftol=1e-15, gtol=1e-9)
    # the bounded optimum lies on b = 0.8
    ref = minimize_scalar(lambda a: fun(np.array([[a, 0.8]]), None)[0][0], bounds=(0, 2))
    assert res.converged.all()
    for x in res.x:
        np.testing.assert_allclose(x, [ref.x, 0.8], atol=1e-4)
    # scipy's L-BFGS-B with tight tolerances agrees
    sp = minimize(
        lambda v: tuple(a[0] for a in fun(v[None], None)),
        starts[0],
        jac=True,
        method="L-BFGS-B",
        bounds=[(-2, 2), (-2, 0.8)],
        options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 10000},
    )
    np.testing.assert_allclose(sp.x, res.x[0], atol=1e-4)


def test_exact_chinchilla_law_is_recovered_with_diagnostics():
    x, loss = grid_points()
    fit = ChinchillaFit().fit(x, loss)
    p = fit.params()
    for key, value in TRUE.items():
        assert p[key] == pytest.approx(value, rel=2e-3), key
    assert fit.objective < 1e-9
    assert fit.n_starts == 4500 and len(fit.start) == 5
    assert fit.bounds_hit == [] and not fit.flat["flat"]
    assert fit.warnings == []
    np.testing.assert_allclose(fit.predict(x), loss, rtol=1e-4)


def test_allocation_is_the_minimum_of_the_law_at_fixed_compute():
    fit = ChinchillaFit(budgets=[1e21])
    fit.theta = np.array(
        [math.log(TRUE["A"]), math.log(TRUE["B"]), TRUE["alpha"], TRUE["beta"], math.log(1.8)]
    )
    alloc = fit.allocation(1e21)
    # brute force: minimize L(N, C/(6N)) over ln N
    best = minimize_scalar(
        lambda ln_n: law(math.exp(ln_n), 1e21 / (6 * math.exp(ln_n))),
        bounds=(10, 35),
        method="bounded",
        options={"xatol": 1e-10},
    )
    assert float(alloc["N_opt"]) == pytest.approx(math.exp(best.x), rel=1e-4)
    assert 6 * alloc["N_opt"] * alloc["D_opt"] == pytest.approx(1e21)
    assert float(alloc["L_opt"]) == pytest.approx(best.fun, rel=1e-9)
    d = fit.derived(fit.theta[None])
    assert d["a"][0] == pytest.approx(0.36 / 0.70)
    assert d["tokens_per_parameter@1e+21"][0] == pytest.approx(alloc["D_opt"] / alloc["N_opt"])


def test_bootstrap_intervals_cover_truth_and_round_trip():
    x, loss = grid_points(noise=0.005, seed=3)
    fit = ChinchillaFit(budgets=[1e22]).fit(x, loss).bootstrap(200, seed=0)
    iv = fit.intervals()
    for key in ("E", "alpha", "beta"):
        assert iv[key][0] < TRUE[key] < iv[key][1], (key, iv[key])
    assert iv["N_opt@1e+22"][0] < fit.compute_optimal()[0]["N_opt"] < iv["N_opt@1e+22"][1]
    d = fit.to_dict()
    assert d["bootstrap"]["n_resamples"] == 200 and len(d["bootstrap"]["theta_samples"]) == 200
    back = ChinchillaFit.from_dict(d)
    assert back.budgets == [1e22]
    np.testing.assert_allclose(back.predict(x), fit.predict(x))
    lo, hi = back.band(x[:3])
    plo, phi = back.band(x[:3], kind="prediction")
    assert np.all(lo < fit.predict(x[:3])) and np.all(fit.predict(x[:3]) < hi)
    assert np.all(plo <= lo) and np.all(phi >= hi)


def test_flat_objective_when_n_and_d_are_confounded():
    # every model trained at 20 tokens per parameter: A/N^α and B/D^β cannot be told apart
    n = np.geomspace(1e7, 1e9, 12)
    d = 20 * n
    noise = np.exp(np.random.default_rng(0).normal(0, 0.002, n.size))
    fit = ChinchillaFit().fit(np.column_stack([n, d]), law(n, d) * noise)
    assert fit.flat["flat"]
    (flat,) = [w for w in fit.warnings if "flat objective" in w]
    # named by its law, each exponent's span by its name
    assert flat.startswith("L(N, D) = E + A/N^alpha + B/D^beta: flat objective")
    (a_lo, a_hi), (b_lo, b_hi) = fit.flat["exponent_range"]
    assert f"alpha [{a_lo:.3g}, {a_hi:.3g}], beta [{b_lo:.3g}, {b_hi:.3g}]" in flat


def test_saturating_law_bounds_and_too_few_points():
    x = np.geomspace(1e4, 1e7, 8)
    sat = SaturatingPowerLawFit("N").fit(x, 1.5 + 40 * x**-0.3)
    assert sat.params()["E"] == pytest.approx(1.5, rel=1e-3)
    assert sat.params()["alpha"] == pytest.approx(0.3, rel=1e-3)
    # a loss that does not change with N: the exponent sits at its lower bound (0)
    flat = SaturatingPowerLawFit("N").fit(x, np.full(x.size, 3.0))
    assert "alpha" in flat.bounds_hit and any("bound" in w for w in flat.warnings)
    two = SaturatingPowerLawFit("N").fit([1e4, 1e5], [3.0, 2.0])
    assert any("fewer points (2) than parameters (3)" in w for w in two.warnings)
    with pytest.raises(ParametricFitError, match="non-positive"):
        SaturatingPowerLawFit("N").fit([1e4, 1e5, 1e6], [3.0, 0.0, 2.0])
    with pytest.raises(ParametricFitError, match="call fit"):
        SaturatingPowerLawFit("N").predict([1.0])
