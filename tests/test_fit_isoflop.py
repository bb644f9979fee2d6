"""IsoFLOP analysis (Hoffmann et al. 2022, Approach 2) on a generated IsoFLOP grid."""

import numpy as np
import pytest

from lmscaling.isoflop import IsoFLOPError, IsoFLOPFit, group_budgets

E, A, B, ALPHA, BETA = 1.8, 400.0, 2000.0, 0.34, 0.36
G = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
EXPONENT = BETA / (ALPHA + BETA)


def isoflop_grid(budgets=(1e17, 1e18, 1e19, 1e20), jitter=0.02, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        n_opt = G * (c / 6) ** EXPONENT
        for n in n_opt * np.geomspace(0.25, 4, 7):
            d = c / (6 * n)
            rows.append((n, c * (1 + rng.uniform(-jitter, jitter)), E + A / n**ALPHA + B / d**BETA))
    return (np.array(col) for col in zip(*rows, strict=True))


def test_group_budgets_within_tolerance():
    labels = group_budgets([1e18, 1.05e18, 0.98e18, 3e18, 3.1e18], tolerance=0.25)
    assert len(set(labels)) == 2
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4]


def test_exponent_recovered_and_bootstrap_interval():
    n, c, loss = isoflop_grid()
    assert IsoFLOPFit.applicable(n, c)
    fit = IsoFLOPFit().fit(n, c, loss).bootstrap(100, seed=0)
    assert fit.n_used == 4
    # the parabola in ln N only approximates the true valley: a within 0.02 of β/(α+β)
    assert fit.a == pytest.approx(EXPONENT, abs=0.02)
    assert fit.b == pytest.approx(1 - fit.a)
    assert fit.a_ci[0] < fit.a < fit.a_ci[1]
    assert fit.a_boot_ci[0] <= fit.a <= fit.a_boot_ci[1]
    n_opt, d_opt = fit.predict(1e21)
    assert 6 * n_opt * d_opt == pytest.approx(1e21)
    assert n_opt == pytest.approx(G * (1e21 / 6) ** EXPONENT, rel=0.15)
    back = IsoFLOPFit.from_dict(fit.to_dict())
    assert back.predict(1e21)[0] == pytest.approx(n_opt)


def test_allocation_intervals_from_joint_bootstrap_samples():
    n, c, loss = isoflop_grid(jitter=0.2, seed=3)
    fit = IsoFLOPFit().fit(n, c, loss).bootstrap(200, seed=1)
    assert fit.samples.shape == (200 - fit.n_resamples_failed, 2)
    a_s, ln_k = fit.samples.T
    assert fit.a_boot_ci == pytest.approx(tuple(np.percentile(a_s, [2.5, 97.5])))
    assert fit.k_N_boot_ci == pytest.approx(tuple(np.exp(np.percentile(ln_k, [2.5, 97.5]))))
    budgets = np.array([1e17, 1e21, 1e24])
    bands = IsoFLOPFit.from_dict(fit.to_dict()).allocation_intervals(budgets)  # via JSON
    n_opt, d_opt = fit.predict(budgets)
    for i, cb in enumerate(budgets):
        n_s = np.exp(ln_k + a_s * np.log(cb))
        assert bands["N_opt"][:, i] == pytest.approx(np.percentile(n_s, [2.5, 97.5]))
        assert bands["N_opt"][0, i] < n_opt[i] < bands["N_opt"][1, i]
        assert bands["D_opt"][0, i] < d_opt[i] < bands["D_opt"][1, i]
        ratio = bands["tokens_per_parameter"][:, i]
        assert ratio[0] < d_opt[i] / n_opt[i] < ratio[1]
    # extrapolating three decades past the largest budget widens the interval
    width = bands["N_opt"][1] / bands["N_opt"][0]
    assert width[2] > width[1] > 1
    with pytest.raises(IsoFLOPError, match="no bootstrap samples"):
        IsoFLOPFit().fit(n, c, loss).allocation_intervals(1e21)


def test_unusable_budgets_are_reported_and_too_few_raise():
    n, c, loss = isoflop_grid(budgets=(1e17, 1e18))
    # a third budget with two sizes only
    n = np.append(n, [1e8, 2e8])
    c = np.append(c, [1e21, 1e21])
    loss = np.append(loss, [2.5, 2.4])
    fit = IsoFLOPFit().fit(n, c, loss)
    assert fit.n_used == 2
    assert any("2 distinct N" in w for w in fit.warnings)
    assert any("no interval" in w for w in fit.warnings)
    with pytest.raises(IsoFLOPError, match="1 usable budget"):
        IsoFLOPFit().fit(n[:7], c[:7], loss[:7])
    # all sizes on one side of the minimum: the minimum is outside the sampled N
    n2, c2, loss2 = isoflop_grid(budgets=(1e17, 1e18, 1e19))
    far = np.array([i % 7 < 3 for i in range(n2.size)])
    fit = IsoFLOPFit().fit(n2, c2, np.where(far, loss2, loss2), budget=None)
    assert fit.n_used == 3
    with pytest.raises(IsoFLOPError, match="usable"):
        IsoFLOPFit().fit(n2[far], c2[far], loss2[far])


def test_budget_labels_group_runs_that_step_rounding_moved_off_their_budget():
    from lmscaling.fit import FitSettings, fit_scaling_laws

    n, c, loss = isoflop_grid(budgets=(1e17, 1e18, 1e19), jitter=0.0)
    label = c.copy()
    c = c.copy()
    smallest = [np.flatnonzero(label == b)[0] for b in np.unique(label)]
    c[smallest] *= 1.9  # one step rounded up: the smallest model of each curve at 1.9x its C
    rows = [
        {"tokenizer": "t", "eval_set": "v", "N": float(ni), "C": float(ci), "D": ci / (6 * ni)}
        | {"loss": float(li), "budget": float(bi)}
        for ni, ci, li, bi in zip(n, c, loss, label, strict=True)
    ]
    settings = FitSettings(axes=("N",), bootstrap=0, holdout=0)
    (with_labels,) = fit_scaling_laws(rows, settings=settings)["groups"]
    assert with_labels["isoflop"]["n_budgets_used"] == 3
    assert [b["C"] for b in with_labels["isoflop"]["budgets"]] == [1e17, 1e18, 1e19]
    assert with_labels["isoflop"]["a"] == pytest.approx(EXPONENT, abs=0.02)
    unlabelled = [{k: v for k, v in r.items() if k != "budget"} for r in rows]
    (by_c,) = fit_scaling_laws(unlabelled, settings=settings)["groups"]
    # grouped by C alone, each moved model becomes a curve of its own
    assert len(by_c["isoflop"]["budgets"]) == 6
