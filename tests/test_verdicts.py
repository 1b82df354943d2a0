"""study.verdicts: the hierarchical bootstrap (seeds x near-duplicate groups) behind every
'A is better than B' sentence, on hand-made per-image tables with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainseg_lib.study import verdicts


def _table(names, tp, fp, fn):
    return pd.DataFrame({"name": names, "tp": tp, "fp": fp, "fn": fn})


def _side(rng, n=40, miss=0.1, seeds=3, noise=0.0):
    """``seeds`` runs on the same ``n`` images: each image has 100 tumour pixels, of which a
    share ``miss`` (plus seed noise) is missed."""
    names = [f"im{i}" for i in range(n)]
    out = []
    for _ in range(seeds):
        m = np.clip(miss + rng.normal(0, noise, n), 0, 1)
        fn = np.round(100 * m)
        out.append(_table(names, 100 - fn, np.full(n, 5.0), fn))
    return out


def test_group_counts_sum_each_groups_images_per_seed():
    a = _table(["x", "y", "z"], [1, 2, 4], [0, 1, 0], [3, 0, 1])
    b = _table(["z", "x", "y"], [5, 1, 1], [0, 0, 0], [0, 0, 0])         # another order, same images
    c = verdicts.group_counts([a, b], {"x": 7, "y": 7})                    # z: its own unit
    assert c.shape == (2, 2, 3)
    assert c[0].tolist() == [[3, 1, 3], [4, 0, 1]] and c[1].tolist() == [[2, 0, 0], [5, 0, 0]]
    with pytest.raises(ValueError, match="different TEST images"):
        verdicts.group_counts([a, _table(["x", "y", "w"], [1, 1, 1], [0, 0, 0], [0, 0, 0])], None)


def test_point_difference_is_the_mean_pooled_f1_difference():
    rng = np.random.default_rng(0)
    a, b = _side(rng, miss=0.1), _side(rng, miss=0.3)
    got = verdicts.compare(a, b, None, n_boot=200)
    f1 = lambda runs: np.mean([2 * r.tp.sum() / (2 * r.tp.sum() + r.fp.sum() + r.fn.sum()) for r in runs])  # noqa: E731
    assert got["diff"] == pytest.approx(f1(a) - f1(b))
    assert got["seeds"] == [3, 3] and got["images"] == [40, 40] and got["groups"] == [40, 40]


def test_a_clear_gap_is_higher_or_lower_and_a_tie_is_no_evidence():
    rng = np.random.default_rng(1)
    good, bad = _side(rng, miss=0.05, noise=0.02), _side(rng, miss=0.4, noise=0.02)
    assert verdicts.compare(good, bad, None, n_boot=300)["verdict"] == "higher"
    assert verdicts.compare(bad, good, None, n_boot=300)["verdict"] == "lower"
    same = verdicts.compare(good, [t.copy() for t in good], None, n_boot=300)
    assert same["verdict"] == "no evidence" and same["ci95"][0] < 0 < same["ci95"][1]


def test_groups_widen_the_ci_when_images_are_copies():
    """Forty images that are ten slices copied four times: resampling images as if they were
    independent understates the noise; resampling the groups does not."""
    rng = np.random.default_rng(2)
    base = np.clip(rng.normal(0.25, 0.2, 10), 0, 1)
    names = [f"im{i}" for i in range(40)]
    fn = np.round(100 * np.repeat(base, 4))
    a = [_table(names, 100 - fn, np.full(40, 5.0), fn)]
    b = [_table(names, np.full(40, 80.0), np.full(40, 5.0), np.full(40, 20.0))]
    groups = {n: i // 4 for i, n in enumerate(names)}
    by_image = verdicts.compare(a, b, None, n_boot=2000)
    by_group = verdicts.compare(a, b, groups, n_boot=2000)
    width = lambda r: r["ci95"][1] - r["ci95"][0]   # noqa: E731
    assert by_group["groups"] == [10, 10]
    assert width(by_group) > 1.5 * width(by_image)


def test_seed_noise_enters_the_ci():
    """Two sides whose images score alike but whose seeds scatter: the CI must be wider than
    with identical seeds, or seed-to-seed variation would be ignored."""
    rng = np.random.default_rng(3)
    calm = verdicts.compare(_side(rng, miss=0.2, noise=0.0), _side(rng, miss=0.2, noise=0.0), None, n_boot=1000)
    names = [f"im{i}" for i in range(40)]
    wild = [_table(names, np.full(40, 100.0 - m), np.full(40, 5.0), np.full(40, float(m))) for m in (5, 20, 40)]
    noisy = verdicts.compare(wild, _side(rng, miss=0.2, noise=0.0), None, n_boot=1000)
    assert noisy["ci95"][1] - noisy["ci95"][0] > 3 * (calm["ci95"][1] - calm["ci95"][0])


def test_verdict_reads_only_the_ci():
    assert verdicts.verdict(0.001, 0.2) == "higher"
    assert verdicts.verdict(-0.2, -0.001) == "lower"
    assert verdicts.verdict(-0.001, 0.2) == "no evidence"
    with pytest.raises(ValueError, match="at least one run"):
        verdicts.compare([], [_table(["x"], [1], [0], [0])], None)


def test_forest_plot_draws_one_row_per_contrast_and_greys_a_ci_across_zero():
    import matplotlib
    matplotlib.use("Agg")
    from brainseg_lib.report import plots
    contrasts = {"official_minus_grouped": {"diff": -0.04, "ci95": [-0.08, -0.01]},
                 "grouped_minus_grouped_strict": {"diff": 0.02, "ci95": [-0.01, 0.06]}}
    fig = plots.contrast_forest(contrasts, {"diff": 0.3, "ci95": [0.05, 0.6]})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()][:2] == ["official − grouped", "grouped (first draw) − stricter grouped"]
    points = [line for line in ax.lines if line.get_marker() == "o"]
    assert [p.get_color() for p in points] == ["tab:red", "0.55", "tab:red"]
