"""brainseg_lib.evaluation.bootstrap: the one bootstrap core behind every CI.

Hand-computed tiny cases, the draw order of the plain and the stratified resampling
(which the committed seeded CIs depend on, bit for bit), the percentile helper, and a
check that the committed CIs under results/ still come out of their committed inputs.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainseg_lib.evaluation import bootstrap, metrics

RESULTS = Path(__file__).resolve().parents[1] / "results"


# ----------------------------------------------------------------------------- draws
def test_resample_indices_are_one_block_draw_in_replicate_order():
    idx = bootstrap.resample_indices(3, 4, np.random.default_rng(7))
    assert idx.tolist() == [[2, 1, 2], [2, 1, 2], [2, 0, 0], [0, 0, 2]]
    # the same numbers as one direct numpy call, and as a loop drawing one replicate at a time
    assert np.array_equal(idx, np.random.default_rng(7).integers(0, 3, size=(4, 3)))
    rng = np.random.default_rng(7)
    assert np.array_equal(idx, np.array([rng.integers(0, 3, 3) for _ in range(4)]))


def test_resample_within_strata_draws_replicate_by_replicate():
    pos, neg = bootstrap.resample_within_strata([2, 3], 2, np.random.default_rng(7))
    assert pos.tolist() == [[1, 1], [1, 1]] and neg.tolist() == [[2, 2, 1], [0, 0, 0]]
    # the order of the detection bootstrap: replicate b draws stratum 0, then stratum 1
    rng = np.random.default_rng(7)
    loop = [(rng.integers(0, 2, 2), rng.integers(0, 3, 3)) for _ in range(2)]
    assert np.array_equal(pos, [p for p, _ in loop]) and np.array_equal(neg, [n for _, n in loop])
    # not what one block draw per stratum gives: the order is part of the committed CIs
    rng = np.random.default_rng(7)
    rng.integers(0, 2, size=(2, 2))
    assert rng.integers(0, 3, size=(2, 3)).tolist() == [[1, 2, 2], [0, 0, 0]] != neg.tolist()


def test_one_stratum_draws_what_the_plain_resample_draws():
    """With numpy's generator, one stratum is the plain bootstrap: the two draw orders agree."""
    one, = bootstrap.resample_within_strata([5], 40, np.random.default_rng(3))
    assert np.array_equal(one, bootstrap.resample_indices(5, 40, np.random.default_rng(3)))


def test_strata_keep_their_sizes_and_their_own_units():
    pos = np.arange(4) + 100.0
    neg = np.arange(7) + 200.0
    seen = bootstrap.bootstrap_clusters_stratified([pos, neg], [np.arange(4), np.arange(7)],
                                                   lambda r: r, n_boot=30, seed=2)
    assert len(seen[0]) == len(seen[1]) == 30
    assert all(len(r) == 4 and np.isin(r, pos).all() for r in seen[0])
    assert all(len(r) == 7 and np.isin(r, neg).all() for r in seen[1])
    with pytest.raises(ValueError, match="stratum"):
        bootstrap.bootstrap_clusters_stratified([pos, np.array([])], [np.arange(4), []], lambda r: r, n_boot=3)
    with pytest.raises(ValueError, match="one label per row"):
        bootstrap.bootstrap_clusters_stratified([pos], [np.arange(3)], lambda r: r, n_boot=3)


def test_singleton_clusters_are_the_image_bootstrap_draw_for_draw():
    """One cluster per row, in row order: each resample is exactly the rows that
    resample_within_strata draws (the committed image-level CIs depend on it)."""
    pos, neg = np.arange(5) * 1.0, np.arange(3) + 10.0
    seen = bootstrap.bootstrap_clusters_stratified([pos, neg], [np.arange(5), np.arange(3)],
                                                   lambda r: r, n_boot=25, seed=4)
    ip, ineg = bootstrap.resample_within_strata([5, 3], 25, np.random.default_rng(4))
    assert np.array_equal(np.stack(seen[0]), pos[ip]) and np.array_equal(np.stack(seen[1]), neg[ineg])
    # labels are codes by first appearance, whatever they are called
    same = bootstrap.bootstrap_clusters_stratified([pos, neg], [list("edcba"), [7, 3, 5]],
                                                   lambda r: r, n_boot=25, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(same[0] + same[1], seen[0] + seen[1]))


def test_a_drawn_cluster_brings_all_its_rows_in_draw_order():
    # rows 0 and 2 are one cluster, row 1 another, row 3 a third
    codes = bootstrap.cluster_codes(["a", "b", "a", "c"])
    assert codes.tolist() == [0, 1, 0, 2]
    rows = bootstrap.cluster_rows(codes, np.array([[2, 0, 0], [1, 1, 1], [0, 2, 1]]))
    assert [r.tolist() for r in rows] == [[3, 0, 2, 0, 2], [1, 1, 1], [0, 2, 3, 1]]
    # the statistic sees resamples whose size follows the clusters drawn
    vals = np.array([10.0, 20.0, 11.0, 30.0])
    sizes = bootstrap.bootstrap_clusters_stratified([vals], [["a", "b", "a", "c"]],
                                                    lambda r: [len(x) for x in r[0]], n_boot=200, seed=0)
    assert set(sizes) <= set(range(3, 7)) and len(set(sizes)) > 1
    assert bootstrap.cluster_codes([]).tolist() == []


def test_cluster_resamples_keep_near_copies_together():
    vals = np.array([1.0, 1.0, 1.0, 5.0, 9.0])      # a group of three copies and two singletons
    seen = bootstrap.bootstrap_clusters_stratified([vals], [[0, 0, 0, 1, 2]], lambda r: r[0],
                                                   n_boot=300, seed=1)
    assert all((r == 1.0).sum() % 3 == 0 for r in seen)
    # the image bootstrap splits them up
    loose = bootstrap.bootstrap_clusters_stratified([vals], [np.arange(5)], lambda r: r[0],
                                                    n_boot=300, seed=1)
    assert any((r == 1.0).sum() % 3 for r in loose)


# -------------------------------------------------------------------------- replicates
def test_bootstrap_stat_hands_every_resample_to_the_statistic_at_once():
    x = np.array([1.0, 2.0, 4.0])
    means = bootstrap.bootstrap_stat(x, lambda r: r.mean(axis=1), n_boot=4, seed=7)
    # indices [[2,1,2],[2,1,2],[2,0,0],[0,0,2]] (test above): means of (4,2,4), (4,2,4), (4,1,1), (1,1,4)
    assert means.tolist() == [10 / 3, 10 / 3, 2.0, 2.0]
    # rows of a 2-D sample are the units (a patient's sums stay together)
    rows = np.array([[1, 10], [2, 20], [4, 40]])
    sums = bootstrap.bootstrap_stat(rows, lambda r: r.sum(axis=1), n_boot=4, seed=7)
    assert sums.tolist() == [[10, 100], [10, 100], [6, 60], [6, 60]]


def test_grouped_resampling_of_unit_sums_equals_resampling_whole_groups():
    """Resampling per-group sums (what the patient bootstrap does) is resampling groups with
    all their rows: the pooled ratio of each replicate is the same."""
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"group": rng.integers(0, 5, 30), "tp": rng.integers(0, 50, 30),
                         "fp": rng.integers(0, 20, 30), "fn": rng.integers(0, 20, 30)})
    sums = rows.groupby("group", sort=True)[["tp", "fp", "fn"]].sum()

    def f1(r):
        tp, fp, fn = np.moveaxis(r.sum(axis=1), -1, 0)
        return metrics.rate(2 * tp, 2 * tp + fp + fn, 1.0)

    fast = bootstrap.bootstrap_stat(sums.to_numpy(), f1, n_boot=25, seed=4)
    groups = sums.index.to_numpy()
    slow = []
    for draw in np.random.default_rng(4).integers(0, len(groups), size=(25, len(groups))):
        picked = pd.concat([rows[rows.group == groups[i]] for i in draw])
        tp, fp, fn = picked["tp"].sum(), picked["fp"].sum(), picked["fn"].sum()
        slow.append(2 * tp / (2 * tp + fp + fn))
    assert fast.tolist() == slow


# --------------------------------------------------------------------------------- CIs
def test_percentile_ci_by_hand():
    v = np.arange(11.0)                       # 0..10: the q quantile is 10 q (linear method)
    assert bootstrap.percentile_ci(v, (0.25, 0.75)) == (2.5, 7.5)
    assert bootstrap.percentile_ci(v) == (0.25, 9.75)
    assert bootstrap.percentile_ci([]) == pytest.approx((np.nan, np.nan), nan_ok=True)
    with_nan = np.r_[v, np.nan]
    assert np.isnan(bootstrap.percentile_ci(with_nan)).all()
    assert bootstrap.percentile_ci(with_nan, skip_nan=True) == (0.25, 9.75)
    with warnings.catch_warnings():          # a figure no replicate can give: NaN, no warning
        warnings.simplefilter("error")
        assert np.isnan(bootstrap.percentile_ci([np.nan] * 4, skip_nan=True)).all()


def test_ci_quantiles_of_a_level_are_not_the_literal_ci95():
    """The two conventions the committed CIs use differ in the last bits (module docstring)."""
    lo, hi = bootstrap.ci_quantiles(0.95)
    assert lo == (1 - 0.95) / 2 and lo != 0.025 and hi == 0.975
    assert bootstrap.CI95 == (0.025, 0.975)
    v = np.random.default_rng(0).random(2000)
    assert bootstrap.percentile_ci(v, (lo, hi))[0] != bootstrap.percentile_ci(v, bootstrap.CI95)[0]
    assert bootstrap.ci_quantiles(0.5) == (0.25, 0.75)


def test_bootstrap_ci_by_hand():
    df = pd.DataFrame({"tp": [5, 0, 9, 3], "fp": [1, 2, 0, 4], "fn": [0, 3, 1, 1], "tn": [94, 95, 90, 92]})
    draw = bootstrap.resample_indices(4, 5, np.random.default_rng(1))
    assert draw.tolist() == [[1, 2, 3, 3], [0, 0, 3, 3], [0, 1, 3, 1], [1, 3, 1, 1], [2, 2, 0, 0]]
    # pooled F1 2TP / (2TP + FP + FN) of each resample, by hand, sorted
    f1 = sorted([30 / 46, 32 / 44, 16 / 32, 6 / 26, 56 / 60])
    lo, hi = bootstrap.bootstrap_ci(df, "f1", n_boot=5, seed=1)
    # linear quantiles of 5 values: position 4q, so 0.1 and 3.9
    assert lo == pytest.approx(f1[0] + 0.1 * (f1[1] - f1[0]), rel=1e-12)
    assert hi == pytest.approx(f1[3] + 0.9 * (f1[4] - f1[3]), rel=1e-12)
    # and bit for bit the core's steps: block draw, re-pooled counts, ci_quantiles(level)
    direct = [metrics.metrics_from_counts(*s)["f1"] for s in
              df[list(metrics.COUNTS)].to_numpy(np.float64)[draw].sum(axis=1)]
    q = (1 - 0.95) / 2
    assert (lo, hi) == (float(np.quantile(direct, q)), float(np.quantile(direct, 1 - q)))


# ------------------------------------------------------------ the committed CIs reproduce
def _committed(*parts):
    p = RESULTS.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is not in this checkout")
    return p


def test_committed_per_image_cis_reproduce():
    run = "cpu-official-bce_dice-seed0"
    df = pd.read_csv(_committed("metrics", f"{run}_per_image.csv"))
    want = json.loads(_committed("metrics", f"{run}.json").read_text())["bootstrap_ci95"]
    assert {m: list(bootstrap.bootstrap_ci(df, m)) for m in metrics.METRICS} == want


def test_committed_patient_cis_reproduce():
    from brainseg_lib.evaluation import external
    want = json.loads(_committed("metrics", "external_validation.json").read_text())
    for half in ("dev", "test"):
        df = pd.read_csv(_committed("metrics", f"external_{half}_per_slice.csv"))
        got = external.summarize_half(df, n_boot=want[half]["n_boot"], seed=want[half]["boot_seed"])
        assert got["ci95_by_patient"] == want[half]["ci95_by_patient"]


def test_committed_detection_cis_reproduce():
    from brainseg_lib.detection import roc
    want = json.loads(_committed("metrics", "detection.json").read_text())
    scores = pd.read_csv(_committed("tables", "detection_scores.csv"))
    val, rep = scores[scores.role == "val"], scores[scores.role == "report"]
    t = roc.choose_threshold(val["area_frac"], val["label"])["threshold"]
    got = roc.evaluate_scores(rep["area_frac"], rep["label"], t, groups=rep["dup_group"])
    assert got["ci95"] == want["report"]["all"]["area_frac"]["ci95"]
    assert got["ci95_images"] == want["report"]["all"]["area_frac"]["ci95_images"]


def test_committed_paired_difference_cis_reproduce():
    from brainseg_lib.xai import attribution
    want = json.loads(_committed("metrics", "xai.json").read_text())["attribution_mass"]
    per = pd.read_csv(_committed("tables", "xai_attribution_mass_per_image.csv"))
    got = attribution.mass_summary(per)
    assert [[r["diff_vs_expected"], r["diff_ci_low"], r["diff_ci_high"]] for r in want] == \
        got[["diff_vs_expected", "diff_ci_low", "diff_ci_high"]].to_numpy().tolist()


def test_group_ci_moves_copies_together_and_is_wider_than_the_image_ci():
    """Ten slices each copied four times: the image bootstrap treats 40 images as independent
    evidence, the group bootstrap 10; its CI must be wider, and with each image its own group
    it must agree with the image CI to within bootstrap noise."""
    import pandas as pd
    from brainseg_lib.evaluation.bootstrap import bootstrap_ci, bootstrap_ci_groups
    rng = np.random.default_rng(0)
    fn = np.repeat(rng.integers(0, 60, 10), 4).astype(float)
    df = pd.DataFrame({"tp": 100 - fn, "fp": np.full(40, 5.0), "fn": fn, "tn": np.full(40, 1000.0)})
    groups = np.repeat(np.arange(10), 4)
    lo_i, hi_i = bootstrap_ci(df, "f1")
    lo_g, hi_g = bootstrap_ci_groups(df, groups, "f1")
    assert hi_g - lo_g > 1.5 * (hi_i - lo_i)
    lo_1, hi_1 = bootstrap_ci_groups(df, np.arange(40), "f1")
    assert abs((hi_1 - lo_1) - (hi_i - lo_i)) < 0.25 * (hi_i - lo_i)
