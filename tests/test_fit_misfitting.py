"""Fit sensitivity on published data: Li et al. 2025 "(Mis)Fitting Scaling Laws" and nanoGPT.

Runs where ``../shared/testdata/scaling`` is present (relative to the repository root) and is
skipped elsewhere.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from lmscaling.chinchilla import ChinchillaFit, SaturatingPowerLawFit
from lmscaling.fit import PowerLawFit, read_points

ROOT = Path(__file__).resolve().parents[1].parent / "shared/testdata/scaling"
LI = ROOT / "misfitting-li2025"
NANOGPT = ROOT / "published-constants/nanogpt_gpt2_owt_baselines.csv"


@pytest.mark.skipif(not LI.exists(), reason="misfitting-li2025 test data absent")
def test_li2025_fit_matches_the_authors_and_is_flagged_flat():
    rows = read_points(LI / "scaling_results_last_ckpt_only.csv")
    x = np.array([[r["N"], r["D"]] for r in rows])
    fit = ChinchillaFit().fit(x, [r["loss"] for r in rows])
    # the authors' own fit (free exponents), stored as [log A, log B, log E, alpha, beta]
    theirs = json.loads((LI / "analysis_form_misfitting_new_final_C_vs_N.json").read_text())
    ref = theirs["Hoffmann Form"]
    assert fit.objective == pytest.approx(ref["loss"], rel=1e-4)
    p = fit.params()
    log_a, log_b, log_e, alpha, beta = ref["params"]
    assert p["alpha"] == pytest.approx(alpha, abs=0.005)
    assert p["beta"] == pytest.approx(beta, abs=0.005)
    assert p["E"] == pytest.approx(np.exp(log_e), rel=0.01)
    # near-equal objectives with very different parameters: the fitter says so
    assert fit.flat["flat"]
    (alpha_lo, alpha_hi), _ = fit.flat["exponent_range"]
    assert alpha_hi - alpha_lo > 0.2
    assert any("flat objective" in w for w in fit.warnings)


@pytest.mark.skipif(not NANOGPT.exists(), reason="published-constants test data absent")
def test_nanogpt_baselines_power_law_and_underdetermined_saturating_law():
    rows = read_points(NANOGPT, {"N": "params", "loss": "val_loss", "D": "params"})
    n = np.array([r["N"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    assert PowerLawFit("N").fit(n, loss).b == pytest.approx(-0.081, abs=0.001)
    sat = SaturatingPowerLawFit("N").fit(n, loss).bootstrap(200, seed=0)
    assert any(w.startswith("L(N) = E + A/N^alpha: poorly determined") for w in sat.warnings)
    lo, hi = sat.intervals()["E"]
    assert hi - lo > 0.5  # 4 points, 3 parameters: E is not pinned down
