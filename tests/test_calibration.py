"""evaluation.calibration: ECE, Brier and temperature scaling against hand-made cases and
scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest

from brainseg_lib.evaluation import calibration as cal


def test_a_calibrated_forecaster_has_small_ece_and_the_expected_brier():
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = rng.random(p.size) < p                      # outcomes drawn at the stated probability
    assert cal.ece(p, y) < 0.01
    assert cal.brier(p, y) == pytest.approx(np.mean(p * (1 - p)), abs=0.003)


def test_ece_by_hand_and_brier_against_sklearn():
    from sklearn.metrics import brier_score_loss
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55, 0.55])
    y = np.array([0, 1, 1, 1, 0, 0])
    # three occupied bins of 2: |0.05 - 0.5|, |0.95 - 1|, |0.55 - 0|
    assert cal.ece(p, y) == pytest.approx((0.45 + 0.05 + 0.55) / 3)
    assert cal.brier(p, y) == pytest.approx(brier_score_loss(y, p))
    r = cal.reliability(p, y)
    assert r["count"].sum() == 6 and np.isnan(r["frequency"][5])
    with pytest.raises(ValueError, match="probabilities against"):
        cal.brier(p, y[:3])


def test_temperature_scaling_recovers_an_overconfident_model_and_keeps_the_threshold():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 100_000)
    y = rng.random(z.size) < 1 / (1 + np.exp(-z))   # true logits z
    over = 3 * z                                     # an overconfident model: logits 3x too large
    t = cal.fit_temperature(over, y)
    assert t == pytest.approx(3.0, rel=0.05)
    q = cal.scaled(over, t)
    assert cal.ece(q, y) < cal.ece(cal.scaled(over, 1.0), y) / 3
    assert np.array_equal(q >= 0.5, over >= 0)      # the 0.5 side of every pixel is unchanged
    s = cal.summary(cal.scaled(over, 1.0), y, t)
    assert s["ece_scaled"] < s["ece"] and s["temperature"] == t and len(s["reliability"]["count"]) == cal.N_BINS
