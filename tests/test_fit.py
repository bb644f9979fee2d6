import math

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


def test_fit_scaling_laws_groups_and_skips_constant_axis(tmp_path):
    result = fit_scaling_laws(_points())
    (group,) = result["groups"]
    assert set(group["fits"]) == {"N", "C"}  # D is constant: skipped, with a warning
    assert any("D takes a single value" in w for w in group["warnings"])
    assert group["fits"]["N"]["b"] == pytest.approx(-0.12, rel=1e-9)
    # C = 6 N D with fixed D: the same exponent against C
    assert group["fits"]["C"]["b"] == pytest.approx(-0.12, rel=1e-9)
    plot_scaling_laws(result, tmp_path / "f.png", tmp_path / "f.svg")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "f.svg").read_text()
    with pytest.raises(FitError, match="lacks column"):
        fit_scaling_laws([{"tokenizer": "t", "eval_set": "v", "loss": 1.0}])
    with pytest.raises(FitError, match="no evaluation points"):
        fit_scaling_laws([])
