"""Segmentation metrics from the confusion matrix (paper Eq. 1-5, plus specificity).

For a binary prediction P and ground truth G over a set of pixels::

    F1 = Dice = 2TP / (2TP + FP + FN)          (Eq. 1)
    IoU       = TP / (TP + FP + FN)            (Eq. 2)
    precision = TP / (TP + FP)                 (Eq. 3)
    recall    = TP / (TP + FN)                 (Eq. 4)
    accuracy  = (TP + TN) / (TP+TN+FP+FN)      (Eq. 5)
    specificity = TN / (TN + FP)

Two aggregates are reported for a split:

* ``global`` (pooled): TP, FP, FN, TN are summed over every pixel of every
  image, then each formula is applied once. This is how a single headline
  number is usually computed, and what Table I reports.
* ``per_image_mean`` / ``per_image_sd``: the formula per image, then the mean
  and sample standard deviation (ddof=1) over images.

**Empty-mask rule.** A ratio whose denominator is 0 is 1.0 when the image has
no errors (FP = FN = 0) and 0.0 otherwise. So an image with no tumour and no
predicted tumour scores 1 on every metric; predicting nothing on a tumour
image gives precision 0 (and recall 0); predicting tumour on an empty image
gives recall 0 (and F1 0). Every annotated Br35H image has a tumour, so the
rule only matters for image-level detection and for synthetic tests. It is
``metrics_from_counts``'s default; its ``if_empty`` argument replaces it, as the
image-level detection rates (``detection.roc.rates``) do with NaN.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import pandas as pd

METRICS = ("f1", "iou", "precision", "recall", "specificity", "accuracy")
COUNTS = ("tp", "fp", "fn", "tn")


def confusion_counts(pred, target) -> dict[str, int]:
    """TP/FP/FN/TN of two binary arrays or tensors of the same shape."""
    if isinstance(pred, torch.Tensor):
        pred, target = pred.detach().cpu().numpy(), target.detach().cpu().numpy()
    p = np.asarray(pred).astype(bool)
    t = np.asarray(target).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} != target shape {t.shape}")
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(p.size - tp - fp - fn)}


def batch_confusion_counts(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image counts of a (B, ...) batch as a (B, 4) int64 tensor [tp, fp, fn, tn]."""
    p = pred.reshape(pred.shape[0], -1).bool()
    t = target.reshape(target.shape[0], -1).bool()
    tp = (p & t).sum(1)
    fp = (p & ~t).sum(1)
    fn = (~p & t).sum(1)
    tn = p.shape[1] - tp - fp - fn
    return torch.stack([tp, fp, fn, tn], 1).long()


def rate(num, den, if_empty):
    """``num / den``, or ``if_empty`` where ``den`` is 0: the one ratio behind every rate
    (segmentation metrics here, detection rates in ``detection.roc``, the pooled F1 of the
    external bootstrap). Scalars give a scalar; arrays are divided element-wise."""
    if np.ndim(den) == 0:
        return num / den if den != 0 else if_empty
    den = np.asarray(den)
    nonzero = den != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(nonzero, num / np.where(nonzero, den, 1), if_empty)


def metrics_from_counts(tp: float, fp: float, fn: float, tn: float,
                        if_empty: float | None = None) -> dict[str, float]:
    """All six metrics from one confusion matrix.

    A ratio whose denominator is 0 follows the empty-mask rule of the module docstring
    (1.0 when FP = FN = 0, else 0.0) unless ``if_empty`` gives its value instead (image-level
    detection passes NaN: a rate of no images is undefined).
    """
    if if_empty is None:
        if_empty = 1.0 if fp == 0 and fn == 0 else 0.0
    return {
        "f1": rate(2 * tp, 2 * tp + fp + fn, if_empty),
        "iou": rate(tp, tp + fp + fn, if_empty),
        "precision": rate(tp, tp + fp, if_empty),
        "recall": rate(tp, tp + fn, if_empty),
        "specificity": rate(tn, tn + fp, if_empty),
        "accuracy": rate(tp + tn, tp + tn + fp + fn, if_empty),
    }


def per_image_table(counts) -> "pd.DataFrame":
    """A DataFrame with the count columns plus one column per metric, one row per image.

    ``counts`` is a DataFrame (or anything DataFrame() accepts) with tp, fp, fn, tn.
    """
    import pandas as pd
    df = pd.DataFrame(counts).copy()
    m = [metrics_from_counts(*(r[c] for c in COUNTS)) for r in df[list(COUNTS)].to_dict("records")]
    for k in METRICS:
        df[k] = [row[k] for row in m]
    return df


def summarize_per_image(per_image) -> dict[str, dict[str, float]]:
    """``global`` (pooled counts), ``per_image_mean`` and ``per_image_sd`` blocks."""
    tot = {c: int(per_image[c].sum()) for c in COUNTS}
    return {
        "global": metrics_from_counts(*(tot[c] for c in COUNTS)),
        "per_image_mean": {k: float(per_image[k].mean()) for k in METRICS},
        "per_image_sd": {k: float(per_image[k].std(ddof=1)) if len(per_image) > 1 else 0.0
                         for k in METRICS},
        "counts": tot,
        "n_images": int(len(per_image)),
    }
