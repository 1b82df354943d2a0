"""Image-level detection statistics: ROC AUC (Mann-Whitney), ROC points, confusion counts and
rates, thresholds chosen on validation (Youden's J, fixed sensitivity), and class-stratified
bootstrap CIs over near-duplicate groups.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from brainseg_lib.detection.scores import N_BOOT, RATES
from brainseg_lib.evaluation.bootstrap import (
    CI95,
    bootstrap_clusters_stratified,
    percentile_ci,
)
from brainseg_lib.evaluation.metrics import confusion_counts, metrics_from_counts


# --------------------------------------------------------------------- metrics
def auc_score(scores, labels) -> float:
    """ROC AUC by the Mann-Whitney rank formula (ties count one half); NaN for one class."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def roc_points(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): one point per distinct score, from (0, 0) at threshold +inf,
    an image being positive when score >= threshold (sklearn's roc_curve without dropping
    intermediate points)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    tps, fps = np.r_[0, tps], np.r_[0, fps]
    thr = np.r_[np.inf, s[last]]
    return fps / max(1, (~y).sum()), tps / max(1, y.sum()), thr


def confusion(scores, labels, threshold: float) -> dict[str, int]:
    """Image-level TP/FP/FN/TN of ``scores >= threshold`` against the labels."""
    return confusion_counts(np.asarray(scores) >= threshold, np.asarray(labels))


def rates(tp, fp, fn, tn) -> dict[str, float]:
    """Sensitivity (recall), specificity and accuracy of image-level counts: the formulas of
    ``metrics_from_counts``, with NaN for a rate whose denominator is 0 (no images of that
    class), not the segmentation's empty-mask rule."""
    m = metrics_from_counts(tp, fp, fn, tn, if_empty=float("nan"))
    return {"sensitivity": float(m["recall"]), "specificity": float(m["specificity"]),
            "accuracy": float(m["accuracy"])}


def _candidate_thresholds(s: np.ndarray) -> np.ndarray:
    """Midpoints between adjacent distinct scores, plus one below the lowest and one above
    the highest (0.5 alone when there are no scores)."""
    u = np.unique(s)
    return np.r_[u[0] - 1.0, (u[1:] + u[:-1]) / 2, u[-1] + 1.0] if len(u) else np.array([0.5])


def choose_threshold(scores, labels) -> dict:
    """The threshold maximising Youden's J on (validation) scores, with its J, sensitivity
    and specificity. Candidates lie midway between adjacent distinct scores, plus one below
    the lowest and one above the highest; ties go to the lowest threshold."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    cands = _candidate_thresholds(s)
    best = None
    for t in cands:
        r = rates(**confusion(s, y, t))
        j = r["sensitivity"] + r["specificity"] - 1
        if best is None or j > best["youden_j"] + 1e-12:
            best = {"threshold": float(t), "youden_j": float(j), **{k: r[k] for k in ("sensitivity", "specificity")}}
    best["auc"] = auc_score(s, y)
    return best


FIXED_SENSITIVITY = 0.90


def threshold_at_sensitivity(scores, labels, target: float = FIXED_SENSITIVITY) -> dict:
    """The highest threshold whose sensitivity on (validation) scores is >= ``target``
    (candidates as in ``choose_threshold``), with its sensitivity and specificity."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    cands = _candidate_thresholds(s)
    for t in cands[::-1]:
        r = rates(**confusion(s, y, t))
        if r["sensitivity"] >= target:
            return {"threshold": float(t), "target_sensitivity": target,
                    **{k: r[k] for k in ("sensitivity", "specificity")}}
    return {"threshold": float(cands[0]), "target_sensitivity": target, "sensitivity": float("nan"),
            "specificity": float("nan")}


def specificity_at_sensitivity(scores, labels, target: float = FIXED_SENSITIVITY) -> float:
    """The best specificity on the ROC curve among points with sensitivity >= ``target``
    (a property of the scores, like AUC; no threshold is chosen)."""
    fpr, tpr, _ = roc_points(scores, labels)
    ok = tpr >= target
    return float(1 - fpr[ok].min()) if ok.any() else float("nan")


def evaluate_scores(scores, labels, threshold: float, n_boot: int = N_BOOT, seed: int = 0,
                    groups=None) -> dict:
    """Counts, sensitivity, specificity, accuracy and AUC at ``threshold``, with stratified
    percentile bootstrap 95% CIs resampled within each class.

    The resampling unit is the near-duplicate group of ``groups`` (one label per image):
    a drawn group brings all its images, because near-copies are not independent evidence.
    Without ``groups`` every image is its own group (``ci95`` is then the image bootstrap).
    With ``groups``, ``ci95_images`` gives the image bootstrap beside it, for comparison,
    and ``bootstrap_groups`` counts the groups of each class."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    c = confusion(s, y, threshold)
    out = {"images": int(len(s)), "positives": int(y.sum()), "negatives": int((~y).sum()),
           "threshold": float(threshold), **c, **rates(**c), "auc": auc_score(s, y)}
    images = np.arange(len(s))
    if groups is None:
        out["ci95"] = _class_bootstrap_ci(s, y, images, threshold, n_boot, seed)
        return out
    g = np.asarray(groups)
    out["bootstrap_groups"] = {"positives": len(np.unique(g[y])), "negatives": len(np.unique(g[~y]))}
    out["ci95"] = _class_bootstrap_ci(s, y, g, threshold, n_boot, seed)
    out["ci95_images"] = _class_bootstrap_ci(s, y, images, threshold, n_boot, seed)
    return out


def _class_bootstrap_ci(s: np.ndarray, y: np.ndarray, unit: np.ndarray, threshold: float,
                        n_boot: int, seed: int) -> dict[str, list[float]]:
    """Percentile 95% CIs of the rates and AUC over class-stratified resamples of ``unit``
    (NaN when a class is empty)."""
    if y.all() or not y.any():
        return {k: [float("nan"), float("nan")] for k in RATES}
    boot = bootstrap_clusters_stratified([s[y], s[~y]], [unit[y], unit[~y]],
                                         lambda r: _boot_rates(*r, threshold), n_boot, seed)
    return {k: list(percentile_ci(boot[k], CI95)) for k in RATES}


def _boot_rates(pos, neg, threshold: float) -> dict[str, list[float]]:
    """Rates and AUC at ``threshold`` of each resample: item b of ``pos`` (positives' scores)
    and of ``neg`` (negatives' scores), one array per resample."""
    boot = {k: [] for k in RATES}
    for bp, bn in zip(pos, neg):
        tp, tn = int((bp >= threshold).sum()), int((bn < threshold).sum())
        r = rates(tp, len(bn) - tn, len(bp) - tp, tn)
        for k in ("sensitivity", "specificity", "accuracy"):
            boot[k].append(r[k])
        boot["auc"].append(auc_score(np.r_[bp, bn], np.r_[np.ones(len(bp)), np.zeros(len(bn))]))
    return boot
