"""Thresholds: pooled metrics at every threshold from one pass over native-size probabilities
(``threshold_sweep``), and thresholds chosen on VALIDATION only, then reported on TEST
(``tune_threshold``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from brainseg_lib.data.cache import SplitArrays, native_masks_for
from brainseg_lib.evaluation.metrics import (
    metrics_from_counts,
)
from brainseg_lib.inference import (
    load_model,
    predict_probs,
    to_native_frame,
)
from brainseg_lib.paper import paper_figure


def threshold_sweep(probs: np.ndarray, arrays: SplitArrays, thresholds=None,
                    data_root=None, gts: dict | None = None) -> pd.DataFrame:
    """Pooled precision / recall / F1 / IoU at each threshold, at native resolution.

    Counts come from per-image histograms of the native-size probabilities of
    tumour and background pixels, so a 101-point sweep costs one pass.
    """
    if thresholds is None:
        thresholds = np.round(np.linspace(0.0, 1.0, 101), 2)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    edges = np.concatenate([[-np.inf], thresholds, [np.inf]])
    if gts is None:
        gts = native_masks_for(arrays.names, root=data_root)
    pos = np.zeros(len(edges) - 1)
    neg = np.zeros(len(edges) - 1)
    for i, name in enumerate(arrays.names):
        gt = gts[name]
        p = to_native_frame(probs[i], *gt.shape, arrays.box(i))
        pos += np.histogram(p[gt], bins=edges)[0]
        neg += np.histogram(p[~gt], bins=edges)[0]
    # pixels with prob >= thresholds[j] are those in bins j+1 .. end
    tp = np.cumsum(pos[::-1])[::-1][1:]
    fp = np.cumsum(neg[::-1])[::-1][1:]
    fn = pos.sum() - tp
    tn = neg.sum() - fp
    rows = [{"threshold": t, "tp": a, "fp": b, "fn": c, "tn": d, **metrics_from_counts(a, b, c, d)}
            for t, a, b, c, d in zip(thresholds, tp, fp, fn, tn)]
    return pd.DataFrame(rows)


def tune_threshold(checkpoint, val_arrays, test_arrays, test_probs, data_root=None,
                   test_gts: dict | None = None, device="auto", val_gts: dict | None = None,
                   precision_floor: float | None = None) -> dict:
    """The paper's recall question: choose a threshold on VALIDATION (best pooled F1, and best
    recall at precision >= ``precision_floor``, by default the paper's precision read from
    ``references/``), then report TEST at 0.5 and at each choice.
    VALIDATION is predicted on ``device`` (the run's, as for TEST)."""
    if precision_floor is None:
        precision_floor = paper_figure("Precision")
    model = load_model(checkpoint, device)
    vs = threshold_sweep(predict_probs(model, val_arrays, device), val_arrays, data_root=data_root,
                         gts=val_gts)
    vs = vs[(vs["tp"] + vs["fp"]) > 0]
    choices = {"default_0.5": 0.5, "val_best_f1": float(vs.loc[vs["f1"].idxmax(), "threshold"])}
    ok = vs[vs["precision"] >= precision_floor]
    if len(ok):
        choices["val_recall_at_precision"] = float(ok.loc[ok["recall"].idxmax(), "threshold"])
    ts = threshold_sweep(test_probs, test_arrays, thresholds=sorted(set(choices.values())),
                         data_root=data_root, gts=test_gts).set_index("threshold")
    test = {label: {"threshold": t, **{k: float(ts.loc[t, k]) for k in
                                       ("f1", "iou", "precision", "recall", "specificity", "accuracy")}}
            for label, t in choices.items()}
    return {"fixed_precision": precision_floor, "test": test}
