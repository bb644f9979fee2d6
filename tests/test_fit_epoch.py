"""Validation against published results: the Chinchilla points of Besiroglu et al. 2024.

Runs where ``../shared/testdata/scaling/epoch-chinchilla`` is present (relative to the repository
root) and is skipped elsewhere.
"""

from pathlib import Path

import numpy as np
import pytest

from lmscaling.chinchilla import ChinchillaFit
from lmscaling.fit import read_points

DATA = (
    Path(__file__).resolve().parents[1].parent
    / "shared/testdata/scaling/epoch-chinchilla/svg_extracted_data.csv"
)
pytestmark = pytest.mark.skipif(not DATA.exists(), reason="epoch-chinchilla test data absent")


def test_chinchilla_fit_reproduces_besiroglu_2024():
    rows = read_points(DATA, {"N": "Model Size", "C": "Training FLOP"})
    assert len(rows) == 245
    rows = sorted(rows, key=lambda r: r["loss"])[:-5]  # drop the 5 highest losses
    x = np.array([[r["N"], r["D"]] for r in rows])  # D = C / (6N)
    fit = ChinchillaFit(budgets=[1e24]).fit(x, [r["loss"] for r in rows])
    p = fit.params()
    # Besiroglu et al. 2024: E = 1.817, alpha = 0.347, beta = 0.367
    assert p["E"] == pytest.approx(1.817, abs=0.01)
    assert p["alpha"] == pytest.approx(0.347, abs=0.01)
    assert p["beta"] == pytest.approx(0.367, abs=0.01)
    # the grid-of-L-BFGS-B replication: A = 477.8, B = 2143, objective 0.0010183
    assert p["A"] == pytest.approx(477.8, rel=0.01)
    assert p["B"] == pytest.approx(2143.2, rel=0.01)
    assert fit.objective == pytest.approx(0.0010183, rel=1e-3)
    assert fit.derived(fit.theta[None])["a"][0] == pytest.approx(0.514, abs=0.005)
    assert not fit.flat["flat"] and fit.bounds_hit == []
    assert fit.n_converged > 0.9 * fit.n_starts
