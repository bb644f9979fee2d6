import json
import math
import warnings

import numpy as np
import pytest

from lmscaling.fit import FitError, PowerLawFit, fit_scaling_laws, plot_scaling_laws


def test_exact_power_law_is_recovered():
    x = np.geomspace(1e4, 1e6, 6)
    law = PowerLawFit("N").fit(x, 5.0 * x**-0.1)
    assert law.a == pytest.approx(5.0, rel=1e-9)
    assert law.b == pytest.approx(-0.1, rel=1e-9)
    assert law.r2 == pytest.approx(1.0, abs=1e-12)
    assert law.predict(1e5) == pytest.approx(5.0 * 1e5**-0.1)
    d = law.to_dict()
    assert d["alpha"] == pytest.approx(0.1)
    # Kaplan's form L = (X_c / X)^alpha
    assert (d["x_c"] / 2e5) ** 0.1 == pytest.approx(law.predict(2e5)[()], rel=1e-9)
    assert law.warnings == []


def test_noisy_fit_intervals_cover_truth_and_band_brackets_fit():
    rng = np.random.default_rng(0)
    x = np.geomspace(1e3, 1e7, 12)
    y = 8.0 * x**-0.08 * np.exp(rng.normal(0, 0.01, x.size))
    law = PowerLawFit("C", confidence=0.95).fit(x, y)
    assert law.b_ci[0] < -0.08 < law.b_ci[1]
    assert law.a_ci[0] < 8.0 < law.a_ci[1]
    assert law.b_ci[1] - law.b_ci[0] < 0.02
    lo, hi = law.band(x)
    mid = law.predict(x)
    assert np.all(lo < mid) and np.all(mid < hi)
    assert 0.95 < law.r2 < 1.0
    assert len(law.residuals) == 12


def test_diagnostics_and_errors():
    law = PowerLawFit("N").fit([1e4, 2e4, 3e4], [3.0, 3.1, 3.2])
    assert any("decades" in w for w in law.warnings)
    assert any("does not fall" in w for w in law.warnings)
    with pytest.raises(FitError, match="at least 2"):
        PowerLawFit("N").fit([1e4], [3.0])
    with pytest.raises(FitError, match="non-positive"):
        PowerLawFit("N").fit([1e4, 0.0], [3.0, 2.0])
    with pytest.raises(FitError, match="non-finite"):
        PowerLawFit("N").fit([1e4, 1e5], [3.0, math.nan])
    with pytest.raises(FitError, match="same N"):
        PowerLawFit("N").fit([1e4, 1e4], [3.0, 2.0])


def _points(n=5):
    N = np.geomspace(1e4, 3e5, n)
    return [
        {
            "tokenizer": "bpe",
            "eval_set": "val",
            "model": f"m{i}",
            "N": float(v),
            "D": 1e6,
            "C": 6 * float(v) * 1e6,
            "loss": float(6.0 * v**-0.12),
        }
        for i, v in enumerate(N)
    ]


def test_models_trained_in_different_precisions_are_warned_about():
    from lmscaling.fit import FitSettings

    settings = FitSettings(bootstrap=0, holdout=0, axes=("N",))
    points = _points()
    mixed = [{**p, "precision": "fp32" if i >= 3 else "bf16"} for i, p in enumerate(points)]
    mixed[0]["precision"] = None  # a row without one is not counted
    (group,) = fit_scaling_laws(mixed, settings=settings)["groups"]
    (warned,) = [w for w in group["warnings"] if "precisions" in w]
    assert warned.startswith("models trained in different precisions (bf16: m1, m2; fp32: m3, m4)")
    assert "train.precision" in warned
    # the fit itself is unchanged by the labels
    (plain,) = fit_scaling_laws(points, settings=settings)["groups"]
    assert group["fits"]["N"]["b"] == plain["fits"]["N"]["b"]
    # spelled differently, or not given, is not a precision of its own
    odd = ["BF16 ", "bf16", float("nan"), "", "fp32", None]
    spelled = [{**p, "precision": v} for p, v in zip(_points(6), odd, strict=True)]
    spelled[4]["model"] = None
    (group,) = fit_scaling_laws(spelled, settings=settings)["groups"]
    (warned,) = [w for w in group["warnings"] if "precisions" in w]
    assert warned.startswith("models trained in different precisions (bf16: m0, m1; fp32: unnamed)")
    for alike in ([{**p, "precision": "bf16"} for p in points], points):
        (group,) = fit_scaling_laws(alike, settings=settings)["groups"]
        assert not any("precisions" in w for w in group["warnings"])


def test_fit_scaling_laws_groups_and_skips_constant_axis(tmp_path):
    from lmscaling.fit import FitSettings

    result = fit_scaling_laws(_points(), settings=FitSettings(bootstrap=20, holdout=0))
    (group,) = result["groups"]
    assert group["extrapolation"] == []
    assert set(group["fits"]) == {"N", "C"}  # D is constant: skipped, with a warning
    assert any("D takes a single value" in w for w in group["warnings"])
    assert group["fits"]["N"]["b"] == pytest.approx(-0.12, rel=1e-9)
    # C = 6 N D with fixed D: the same exponent against C
    assert group["fits"]["C"]["b"] == pytest.approx(-0.12, rel=1e-9)
    plot_scaling_laws(result, tmp_path / "f.png", tmp_path / "f.svg")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "f.svg").read_text()
    with pytest.raises(FitError, match="has no value in column"):
        fit_scaling_laws([{"tokenizer": "t", "eval_set": "v", "loss": 1.0}])
    with pytest.raises(FitError, match="no evaluation points"):
        fit_scaling_laws([])


# ---- OLS: robust variant, bands, bootstrap, serialization -----------------------------------


def test_robust_fit_resists_an_outlier_and_band_matches_statsmodels():
    x = np.geomspace(1e4, 1e7, 10)
    y = 6.0 * x**-0.1
    y[-1] *= 1.3  # one bad point, at the end where it tilts the OLS line most
    ols = PowerLawFit("N").fit(x, y)
    rob = PowerLawFit("N", robust=True).fit(x, y)
    assert abs(rob.b + 0.1) < 0.002 and abs(ols.b + 0.1) > 0.01
    assert rob.to_dict()["method"].startswith("robust") and rob.to_dict()["r2"] is None
    # the covariance band equals statsmodels' get_prediction band
    import statsmodels.api as sm

    grid = np.geomspace(1e3, 1e8, 7)
    exog = sm.add_constant(np.log(grid))
    ref = ols._result.get_prediction(exog).conf_int(alpha=0.05)
    lo, hi = ols.band(grid)
    np.testing.assert_allclose(lo, np.exp(ref[:, 0]), rtol=1e-10)
    np.testing.assert_allclose(hi, np.exp(ref[:, 1]), rtol=1e-10)
    plo, phi = ols.band(grid, kind="prediction")
    assert np.all(plo < lo) and np.all(phi > hi)
    obs = ols._result.get_prediction(exog).summary_frame(alpha=0.05)
    np.testing.assert_allclose(plo, np.exp(obs["obs_ci_lower"]), rtol=1e-10)


def test_ols_bootstrap_and_round_trip():
    rng = np.random.default_rng(1)
    x = np.geomspace(1e3, 1e7, 20)
    y = 8.0 * x**-0.08 * np.exp(rng.normal(0, 0.01, x.size))
    law = PowerLawFit("C").fit(x, y).bootstrap(500, seed=0)
    lo, hi = law.boot_ci["b"]
    assert lo < -0.08 < hi and hi - lo < 0.02
    assert law.boot_ci["alpha"] == pytest.approx([-hi, -lo])
    # bootstrap and t intervals agree roughly for well-behaved data
    assert lo == pytest.approx(law.b_ci[0], abs=0.004)
    back = PowerLawFit.from_dict(law.to_dict())
    np.testing.assert_allclose(back.predict(x), law.predict(x), rtol=1e-12)
    np.testing.assert_allclose(back.band(x)[0], law.band(x)[0], rtol=1e-12)
    # two points: every resample with a single x fails and is counted
    two = PowerLawFit("N").fit([1e4, 1e5], [3.0, 2.5]).bootstrap(200, seed=0)
    assert 60 < two.n_resamples_failed < 140  # P(failure) = 1/2
    with pytest.raises(FitError, match="degrees of freedom"):
        two.band([1e4])


# ---- fit_scaling_laws: selection, skips, extrapolation, outputs -------------------------------


def _ladder(n_models=5, with_checkpoints=True):
    rows = _points(n_models)
    for r in rows:
        r.update(final=True, checkpoint="final")
    if with_checkpoints:
        # intermediate checkpoints: other D, worse loss; they must not be fitted
        rows += [
            dict(r, final=False, checkpoint="frac-0.5", D=5e5, loss=r["loss"] + 1) for r in rows
        ]
    return rows


def test_only_final_rows_are_fitted_and_demo_skips_chinchilla_isoflop(tmp_path):
    from lmscaling.fit import FitSettings, plot_isoflop, plot_residuals, summary_metrics

    result = fit_scaling_laws(_ladder(), settings=FitSettings(bootstrap=50, holdout=1))
    (group,) = result["groups"]
    assert group["n_points"] == 5 and len(result["points"]) == 5
    assert group["fits"]["N"]["b"] == pytest.approx(-0.12, rel=1e-9)
    assert (
        "skipped" in group["chinchilla"]
        and "D takes a single value" in group["chinchilla"]["skipped"]
    )
    assert "skipped" in group["isoflop"]
    assert any("Chinchilla L(N, D) not fitted" in w for w in group["warnings"])
    # exact power law: the refit without the largest N predicts it exactly
    (rec,) = [r for r in group["extrapolation"] if r["key"] == "L_N"]
    (held,) = rec["held_out"]
    assert held["model"] == "m4" and rec["n_fit"] == 4
    assert held["actual"] == pytest.approx(6.0 * 3e5**-0.12)
    assert held["predicted"] == pytest.approx(held["actual"], rel=1e-9)
    assert abs(held["rel_error"]) < 1e-9
    assert held["predicted_ci"][0] <= held["predicted"] <= held["predicted_ci"][1]
    # the saturating law is fitted too, with its bootstrap intervals
    sat = group["saturating"]["N"]
    assert set(sat["intervals"]) == {"E", "A", "alpha"}
    assert sat["bootstrap"]["n_resamples"] == 50
    metrics = summary_metrics(result)
    assert metrics["bpe.val.L_N.b"] == pytest.approx(-0.12, rel=1e-9)
    assert metrics["bpe.val.extrapolation.L_N.abs_rel_error"] < 1e-9
    plot_residuals(result, tmp_path / "r.png", tmp_path / "r.svg")
    plot_isoflop(result, tmp_path / "i.png", tmp_path / "i.svg")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert "D takes a single value" in (tmp_path / "i.svg").read_text()
    json.dumps(result, allow_nan=False)  # strict JSON


def test_fewer_points_than_parameters_is_reported():
    from lmscaling.fit import FitSettings

    result = fit_scaling_laws(_ladder(2, False), settings=FitSettings(bootstrap=0))
    (group,) = result["groups"]
    assert "fewer points (2) than parameters (3)" in group["saturating"]["N"]["skipped"]
    assert any("fewer points" in w for w in group["warnings"])
    assert group["extrapolation"] == []  # one point left: nothing to refit
    assert any("L(N) extrapolation check skipped" in w for w in group["warnings"])


def _one_budget(budget_column: bool) -> list[dict]:
    """Five sizes at one budget C = 1e15, D rounded to whole steps of 4,096 tokens: a U in N."""
    rows = []
    for i, n in enumerate([1e5, 2e5, 4e5, 8e5, 1.6e6]):
        d = round(1e15 / (6 * n) / 4096) * 4096
        rows.append(
            {"tokenizer": "t", "eval_set": "v", "N": n, "D": float(d), "C": 6 * n * d}
            | {"loss": 3 + 0.1 * (i - 2) ** 2}
            | ({"budget": 1e15} if budget_column else {})
        )
    return rows


@pytest.mark.parametrize("budget_column", [False, True])
def test_one_compute_budget_skips_the_c_law(budget_column):
    from lmscaling.fit import FitSettings

    rows = _one_budget(budget_column)
    c = [r["C"] for r in rows]
    assert len(set(c)) == 5 and max(c) / min(c) < 1.0001  # distinct, by rounding only
    result = fit_scaling_laws(rows, settings=FitSettings(bootstrap=0, holdout=0))
    (group,) = result["groups"]
    assert set(group["fits"]) == {"N", "D"}
    assert any("one compute budget" in w and "L(C) not fitted" in w for w in group["warnings"])
    json.dumps(result, allow_nan=False)


def test_kaplan_x_c_out_of_float_range_is_none():
    x = np.array([1e6, 1e7, 1e8, 1e9])
    law = PowerLawFit("N").fit(x, 0.5 * x**-0.0005)  # ln X_c = ln 0.5 / 5e-4 = -1386
    assert law.to_dict()["x_c"] is None and law.to_dict()["alpha"] == pytest.approx(5e-4)
    assert PowerLawFit("N").fit(x, 5.0 * x**-0.1).to_dict()["x_c"] == pytest.approx(5**10)
    wide = np.array([1e-300, 1e-100, 1e100, 1e300])  # 600 decades: max / min overflows
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        law = PowerLawFit("N").fit(wide, 3 * wide**-0.001)
    assert law.b == pytest.approx(-0.001) and law.warnings == []


def test_an_axis_too_narrow_for_a_power_law_is_named():
    x = np.array([1e8, 1e8 * (1 + 1e-6), 1e8 * (1 + 2e-6)])
    with pytest.raises(FitError, match=r"L\(D\): .* out of float range .* 2e-06"):
        PowerLawFit("D").fit(x, [3.0, 3.1, 3.2])
    rows = [
        {"tokenizer": "t", "eval_set": "v", "N": 1e5, "D": d, "C": 6e5 * d, "loss": y}
        for d, y in zip(x, [3.0, 3.1, 3.2], strict=True)
    ]
    from lmscaling.fit import FitSettings

    (group,) = fit_scaling_laws(rows, settings=FitSettings(axes=("D",), bootstrap=0))["groups"]
    assert group["fits"] == {}
    assert any("out of float range" in w and w.endswith("not fitted") for w in group["warnings"])


def test_select_points_errors():
    from lmscaling.fit import select_points

    # an IsoFLOP budget label, where given, is a positive number like C
    bad = [dict(p, budget="C1" if i == 1 else 1e15) for i, p in enumerate(_points())]
    with pytest.raises(FitError, match=r"points: row 2 has budget = 'C1'"):
        select_points(bad, "points")
    assert len(select_points([dict(p, budget=None) for p in _points()])) == len(_points())

    missing = r"points.csv: row 1 has no value in column\(s\) \['N', 'D', 'C'\]"
    with pytest.raises(FitError, match=missing):
        select_points([{"tokenizer": "t", "eval_set": "v", "loss": 1.0}], "points.csv")
    with pytest.raises(FitError, match=r"points: row 3 has loss = nan"):
        select_points(
            [dict(p, loss=math.nan if i == 2 else p["loss"]) for i, p in enumerate(_points())]
        )
    with pytest.raises(FitError, match="no row has final"):
        select_points([dict(p, final=False) for p in _points()])


def test_read_points_maps_columns_and_derives_d(tmp_path):
    from lmscaling.fit import read_points

    path = tmp_path / "t.csv"
    path.write_text("Model Size,Training FLOP,loss\n1e6,6e12,3.0\n2e6,2.4e13,2.8\n")
    rows = read_points(path, {"N": "Model Size", "C": "Training FLOP"})
    assert rows[1]["D"] == pytest.approx(2e6) and rows[0]["tokenizer"] == "-"
    with pytest.raises(FitError, match="no column"):
        read_points(path, {"N": "params"})
    with pytest.raises(FitError, match=r"t.csv: needs columns loss, N"):
        read_points(path)
    with pytest.raises(FitError, match="unknown table format"):
        read_points(tmp_path / "t.txt")
