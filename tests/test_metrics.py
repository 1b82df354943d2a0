"""brainseg_lib.metrics: hand-computed cases, the empty-mask rule, pooling, sklearn agreement."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    jaccard_score,
    precision_score,
    recall_score,
)

from brainseg_lib.evaluation import bootstrap as metrics_bootstrap
from brainseg_lib.evaluation import metrics

# A 4x4 example, counted by hand:
#   pred        target      outcome
#   1 1 0 0     1 1 1 0     TP TP FN TN
#   1 1 0 0     1 0 0 0     TP FP TN TN
#   0 0 0 0     0 0 0 0     TN TN TN TN
#   0 0 0 1     0 0 0 0     TN TN TN FP
# TP = 3, FP = 2, FN = 1, TN = 10
PRED = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], np.uint8)
TARGET = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8)
HAND = {
    "f1": 2 * 3 / (2 * 3 + 2 + 1),        # 6/9
    "iou": 3 / (3 + 2 + 1),               # 1/2
    "precision": 3 / (3 + 2),             # 3/5
    "recall": 3 / (3 + 1),                # 3/4
    "specificity": 10 / (10 + 2),         # 5/6
    "accuracy": (3 + 10) / 16,            # 13/16
}


def test_hand_computed_counts():
    assert metrics.confusion_counts(PRED, TARGET) == {"tp": 3, "fp": 2, "fn": 1, "tn": 10}


def test_hand_computed_metrics():
    m = metrics.metrics_from_counts(3, 2, 1, 10)
    assert set(m) == set(metrics.METRICS)
    for k, v in HAND.items():
        assert m[k] == pytest.approx(v, abs=1e-12), k
    assert m["f1"] == pytest.approx(0.6666667, abs=1e-6)
    assert m["iou"] == 0.5 and m["precision"] == 0.6 and m["recall"] == 0.75
    assert m["accuracy"] == 0.8125


def test_confusion_counts_accepts_tensors_and_bools():
    c = metrics.confusion_counts(torch.from_numpy(PRED).bool(), torch.from_numpy(TARGET))
    assert c == {"tp": 3, "fp": 2, "fn": 1, "tn": 10}
    with pytest.raises(ValueError, match="shape"):
        metrics.confusion_counts(PRED, TARGET[:3])


def test_batch_confusion_counts_matches_per_image():
    rng = np.random.default_rng(1)
    p = rng.random((5, 1, 8, 8)) < 0.4
    t = rng.random((5, 1, 8, 8)) < 0.3
    b = metrics.batch_confusion_counts(torch.from_numpy(p), torch.from_numpy(t))
    assert b.shape == (5, 4) and b.dtype == torch.int64
    for i in range(5):
        c = metrics.confusion_counts(p[i], t[i])
        assert b[i].tolist() == [c[k] for k in metrics.COUNTS]


# ----------------------------------------------------------------- the empty-mask rule
def test_empty_rule_no_tumour_no_prediction_is_perfect():
    z = np.zeros((4, 4), np.uint8)
    c = metrics.confusion_counts(z, z)
    assert c == {"tp": 0, "fp": 0, "fn": 0, "tn": 16}
    assert metrics.metrics_from_counts(**c) == {k: 1.0 for k in metrics.METRICS}
    assert metrics.metrics_from_counts(0, 0, 0, 0) == {k: 1.0 for k in metrics.METRICS}


def test_empty_rule_missed_tumour():
    m = metrics.metrics_from_counts(tp=0, fp=0, fn=3, tn=13)
    assert m["precision"] == 0.0                 # 0/0 with errors -> 0
    assert m["recall"] == 0.0 and m["f1"] == 0.0 and m["iou"] == 0.0
    assert m["specificity"] == 1.0 and m["accuracy"] == 13 / 16


def test_empty_rule_tumour_predicted_on_empty_image():
    m = metrics.metrics_from_counts(tp=0, fp=2, fn=0, tn=14)
    assert m["recall"] == 0.0                    # 0/0 with errors -> 0
    assert m["precision"] == 0.0 and m["f1"] == 0.0 and m["iou"] == 0.0
    assert m["specificity"] == 14 / 16


# ----------------------------------------------------------------- pooled vs per image
def _two_image_table():
    # image A: 8 tumour pixels, all found.  image B: 1 tumour pixel, missed, 1 false alarm.
    ta = np.zeros((4, 4), np.uint8); ta[:2] = 1
    pa = ta.copy()
    tb = np.zeros((4, 4), np.uint8); tb[0, 0] = 1
    pb = np.zeros((4, 4), np.uint8); pb[3, 3] = 1
    rows = [metrics.confusion_counts(pa, ta), metrics.confusion_counts(pb, tb)]
    return metrics.per_image_table(pd.DataFrame(rows))


def test_pooled_differs_from_per_image_mean():
    df = _two_image_table()
    assert df[list(metrics.COUNTS)].values.tolist() == [[8, 0, 0, 8], [0, 1, 1, 14]]
    assert df["f1"].tolist() == [1.0, 0.0]
    s = metrics.summarize_per_image(df)
    assert s["n_images"] == 2
    assert s["counts"] == {"tp": 8, "fp": 1, "fn": 1, "tn": 22}
    # pooled: 2*8 / (2*8 + 1 + 1) = 16/18
    assert s["global"]["f1"] == pytest.approx(16 / 18)
    assert s["global"]["iou"] == pytest.approx(8 / 10)
    assert s["global"]["accuracy"] == pytest.approx(30 / 32)
    # per image: mean of 1 and 0, sample sd sqrt(0.5)
    assert s["per_image_mean"]["f1"] == pytest.approx(0.5)
    assert s["per_image_sd"]["f1"] == pytest.approx(np.sqrt(0.5))
    assert s["global"]["f1"] != pytest.approx(s["per_image_mean"]["f1"])


def test_summarize_single_image_sd_is_zero():
    df = _two_image_table().iloc[:1]
    assert metrics.summarize_per_image(df)["per_image_sd"] == {k: 0.0 for k in metrics.METRICS}


# ----------------------------------------------------------------- sklearn agreement
@pytest.mark.parametrize("seed, p_pred, p_true", [(0, 0.5, 0.5), (1, 0.1, 0.3), (2, 0.7, 0.05),
                                                  (3, 0.02, 0.02)])
def test_agrees_with_sklearn(seed, p_pred, p_true):
    rng = np.random.default_rng(seed)
    t = rng.random((3, 37, 41)) < p_true
    p = np.where(rng.random(t.shape) < 0.7, t, rng.random(t.shape) < p_pred)
    yt, yp = t.ravel().astype(int), p.ravel().astype(int)
    m = metrics.metrics_from_counts(**metrics.confusion_counts(p, t))
    assert m["f1"] == pytest.approx(f1_score(yt, yp), abs=1e-12)
    assert m["iou"] == pytest.approx(jaccard_score(yt, yp), abs=1e-12)
    assert m["precision"] == pytest.approx(precision_score(yt, yp), abs=1e-12)
    assert m["recall"] == pytest.approx(recall_score(yt, yp), abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(yt, yp), abs=1e-12)
    assert m["specificity"] == pytest.approx(recall_score(yt, yp, pos_label=0), abs=1e-12)


def test_per_image_table_agrees_with_sklearn():
    rng = np.random.default_rng(7)
    t = rng.random((6, 16, 16)) < 0.3
    p = rng.random((6, 16, 16)) < 0.3
    df = metrics.per_image_table(pd.DataFrame([metrics.confusion_counts(p[i], t[i]) for i in range(6)]))
    for i in range(6):
        yt, yp = t[i].ravel(), p[i].ravel()
        assert df.loc[i, "f1"] == pytest.approx(f1_score(yt, yp))
        assert df.loc[i, "iou"] == pytest.approx(jaccard_score(yt, yp))
        assert df.loc[i, "specificity"] == pytest.approx(recall_score(yt, yp, pos_label=0))


# ----------------------------------------------------------------- bootstrap
def _varied_table(n=40, seed=3):
    rng = np.random.default_rng(seed)
    tp = rng.integers(50, 500, n)
    fp = rng.integers(0, 200, n)
    fn = rng.integers(0, 200, n)
    tn = 10_000 - tp - fp - fn
    return metrics.per_image_table(pd.DataFrame({"tp": tp, "fp": fp, "fn": fn, "tn": tn}))


@pytest.mark.parametrize("metric", metrics.METRICS)
def test_bootstrap_ci_brackets_point_estimate(metric):
    df = _varied_table()
    point = metrics.summarize_per_image(df)["global"][metric]
    lo, hi = metrics_bootstrap.bootstrap_ci(df, metric, n_boot=500, seed=0)
    assert lo <= point <= hi
    assert lo < hi


def test_bootstrap_ci_is_reproducible_and_narrows_with_level():
    df = _varied_table()
    a = metrics_bootstrap.bootstrap_ci(df, "f1", n_boot=400, seed=5)
    assert a == metrics_bootstrap.bootstrap_ci(df, "f1", n_boot=400, seed=5)
    lo50, hi50 = metrics_bootstrap.bootstrap_ci(df, "f1", n_boot=400, seed=5, level=0.5)
    assert a[0] <= lo50 <= hi50 <= a[1]


# ------------------------------------------------------------------ the one rate formula
def test_rate_divides_or_takes_the_empty_value():
    assert metrics.rate(3, 4, 1.0) == 0.75
    assert metrics.rate(0, 0, 1.0) == 1.0 and metrics.rate(0, 0, 0.0) == 0.0
    assert np.isnan(metrics.rate(0, 0, float("nan")))
    got = metrics.rate(np.array([1.0, 0.0, 2.0]), np.array([2.0, 0.0, 8.0]), 1.0)
    assert got.tolist() == [0.5, 1.0, 0.25]


def test_if_empty_replaces_the_empty_mask_rule():
    # no images of either class: the empty-mask rule says 1 (no errors), NaN when asked for
    assert metrics.metrics_from_counts(0, 0, 0, 0, if_empty=float("nan"))["recall"] != 1.0
    m = metrics.metrics_from_counts(tp=0, fp=2, fn=0, tn=14, if_empty=float("nan"))
    assert np.isnan(m["recall"]) and m["precision"] == 0.0 and m["specificity"] == 14 / 16
    # a non-empty denominator ignores the rule
    assert metrics.metrics_from_counts(3, 2, 1, 10, if_empty=float("nan")) == metrics.metrics_from_counts(3, 2, 1, 10)
