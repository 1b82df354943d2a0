"""Four one-line mutations that a review found surviving the tests, each pinned here by a
test that fails when the mutation is applied (checked by hand against each one):

1. the seed sd's ddof in ``seed_spread.summarize_runs`` (sample sd, ddof=1);
2. the CI side of the deletion check's win rule (``xai/deletion.py``: the CI's *upper* end
   must lie below 0);
3. the native-resolution threshold rule in ``evaluation.evaluate`` (a pixel *at* the
   threshold is tumour: ``>=``, as in training's metrics and ``predict``);
4. the ``ratio_to_expected`` column of the attribution-mass summary.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from brainseg_lib.data.cache import SplitArrays
from brainseg_lib.evaluation.evaluate import evaluate_model
from brainseg_lib.study import seed_spread
from brainseg_lib.xai import attribution, deletion


def test_seed_sd_is_the_sample_sd():
    runs = pd.DataFrame({"split_scheme": "official", "loss": "bce_dice", "seed": [0, 1],
                         **{m: [0.8, 0.9] for m in ("f1", "iou", "precision", "recall", "specificity", "accuracy")}})
    s = seed_spread.summarize_runs(runs).iloc[0]
    assert s["f1_sd"] == pytest.approx(np.sqrt(0.005))        # ddof=1; ddof=0 would give 0.05
    assert s["f1"] == pytest.approx(0.85) and s["n_runs"] == 2 and s["n_draws"] == 1


def test_deletion_win_needs_the_whole_ci_below_zero():
    """A method that is better than random on average by a lot but so unevenly that the CI
    of the paired difference spans 0 has not shown it beats random."""
    rows = []
    diffs = [-0.9, 0.5] * 6                        # mean -0.2, CI roughly -0.6 to +0.2
    for k, d in enumerate(diffs):
        for method, y in (("m", 1.0 + d), (deletion.RANDOM, 1.0)):
            rows += [{"name": f"i{k}", "method": method, "fraction": f, "rel_area": 1.0 if f == 0 else y,
                      "rel_prob": 1.0} for f in (0.0, 0.5, 1.0)]
    row = deletion.deletion_summary(pd.DataFrame(rows)).iloc[0]
    assert row["diff_vs_random"] <= -attribution.MIN_EFFECT
    assert row["diff_ci_low"] < 0 < row["diff_ci_high"]
    assert not row["beats_random"]


class _Half(torch.nn.Module):
    """Logit 0 everywhere: probability exactly 0.5."""

    def forward(self, x):
        return torch.zeros_like(x[:, :1])


def test_a_pixel_at_the_threshold_is_tumour_at_native_resolution():
    size = 16
    arrays = SplitArrays("test", size, np.full((1, size, size), 100, np.uint8), np.ones((1, size, size), np.uint8),
                         ["a.jpg"], np.array([[size, size]]), np.ones(1))
    gts = {"a.jpg": np.ones((size, size), bool)}        # native size = model size: no resampling
    ev = evaluate_model(_Half(), "test", size, 0.5, "cpu", arrays=arrays, gts=gts, boundary=False)
    row = ev.per_image.iloc[0]
    assert row["tp"] == size * size and row["fn"] == 0        # '>' would give tp 0
    assert row["model_tp"] == size * size


def test_ratio_to_expected_is_the_mean_mass_over_the_mean_area():
    per = pd.DataFrame({"name": ["a", "b", "c"], "method": "m", "mass_inside_gt": [0.6, 0.3, 0.9],
                        "tumour_area_fraction": [0.1, 0.2, 0.3], "random_map_mass": 0.5})
    row = attribution.mass_summary(per, n_boot=50).iloc[0]
    assert row["ratio_to_expected"] == pytest.approx(0.6 / 0.2)
    assert row["mass_inside_gt"] == pytest.approx(0.6) and row["expected_random"] == pytest.approx(0.2)
