"""Scoring an external set: per-slice Dice, HD95 and NSD, and the pooled figures with 95% CIs
that resample whole patients (LGG) or index blocks (Figshare; the ``patient`` column then holds
the block) (``summarize_half``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from brainseg_lib.data.external import ExternalHalf
from brainseg_lib.evaluation.bootstrap import (
    CI95,
    N_BOOT,
    bootstrap_stat,
    percentile_ci,
)
from brainseg_lib.evaluation.boundary import EMPTY, NSD_TOLERANCE_DIAG, NSD_TOLERANCE_PX, boundary_metrics
from brainseg_lib.evaluation.metrics import (
    COUNTS,
    confusion_counts,
    metrics_from_counts,
    rate,
)


def score_half(model, half: ExternalHalf, threshold: float = 0.5, device=None,
               boundary: bool = True, probs=None) -> pd.DataFrame:
    """One row per slice: counts, Dice, whether any pixel is predicted, HD95 and NSD
    (``probs``: the model's probabilities of the half, where already computed)."""
    from brainseg_lib.inference import predict_probs, to_native_frame
    probs = predict_probs(model, half.arrays, device) if probs is None else probs
    rows = []
    for i, (name, truth, patient) in enumerate(zip(half.arrays.names, half.truths, half.patients)):
        pred = to_native_frame(probs[i], *truth.shape, half.arrays.box(i)) >= threshold
        c = confusion_counts(pred, truth)
        b = boundary_metrics(pred, truth) if boundary else dict(EMPTY)
        rows.append({"name": name, "patient": patient, **({"label": half.labels[i]} if half.labels else {}),
                     "tumour": bool(truth.any()),
                     "tumour_pixels": int(truth.sum()), "pred_pixels": int(pred.sum()),
                     "marked": bool(pred.any()), **c,
                     "dice": metrics_from_counts(*(c[k] for k in COUNTS))["f1"], **b})
    return pd.DataFrame(rows)


# per-patient sums from which every figure is a ratio (so a patient bootstrap only re-adds them)
_SUMS = ("tp", "fp", "fn", "dice_t", "n_t", "marked_c", "n_c", "hd95_t", "nsd_t", "missed_t")


def _patient_sums(df: pd.DataFrame) -> pd.DataFrame:
    t = df["tumour"]
    parts = pd.DataFrame({
        "patient": df["patient"], "tp": df["tp"], "fp": df["fp"], "fn": df["fn"],
        "dice_t": df["dice"].where(t, 0.0), "n_t": t.astype(float),
        "marked_c": (df["marked"] & ~t).astype(float), "n_c": (~t).astype(float),
        "hd95_t": df["hd95"].where(t, 0.0).fillna(0.0), "nsd_t": df["nsd"].where(t, 0.0).fillna(0.0),
        "missed_t": (t & ~df["marked"]).astype(float)})
    return parts.groupby("patient", sort=True)[list(_SUMS)].sum()


def _figures(s: np.ndarray) -> dict[str, np.ndarray]:
    """The figures from summed columns (last axis in _SUMS order)."""
    tp, fp, fn, dice_t, n_t, marked_c, n_c, hd95_t, nsd_t, missed_t = np.moveaxis(s, -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"pooled_f1": rate(2 * tp, 2 * tp + fp + fn, 1.0),   # no pixel at all: no error
                "mean_dice_tumour": dice_t / n_t, "clean_marked_share": marked_c / n_c,
                "hd95_mean": hd95_t / n_t, "nsd_mean": nsd_t / n_t, "missed_share": missed_t / n_t}


def summarize_half(df: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """The half's figures with 95% CIs resampled by patient, plus counts."""
    sums = _patient_sums(df)
    point = {k: float(v) for k, v in _figures(sums.to_numpy().sum(0)).items()}
    boot = bootstrap_stat(sums.to_numpy(), lambda r: _figures(r.sum(1)), n_boot, seed)
    ci = {k: list(percentile_ci(v, CI95, skip_nan=True)) for k, v in boot.items()}
    t = df["tumour"]
    return {**point, "ci95_by_patient": ci, "n_boot": n_boot, "boot_seed": seed,
            "hd95_median": float(df.loc[t, "hd95"].median()) if t.any() else None,
            # on a common scale: HD95 as a share of the diagonal over the tumour slices with a
            # prediction (the missed ones are counted apart), NSD at 1% of the diagonal
            **_scale_free(df[t]),
            # tumour slices with nothing predicted: HD95 = the diagonal there (boundary's rule)
            "tumour_slices_missed": int((t & ~df["marked"]).sum()),
            "n_slices": int(len(df)), "n_tumour_slices": int(t.sum()), "n_clean_slices": int((~t).sum()),
            "n_patients": int(len(sums)), "clean_marked": int((df["marked"] & ~t).sum()),
            "nsd_tolerance_px": NSD_TOLERANCE_PX, "nsd_tolerance_diag": NSD_TOLERANCE_DIAG}


def _scale_free(tumour: pd.DataFrame) -> dict:
    """The scale-free boundary figures of the tumour slices (``boundary``'s module docstring)."""
    if "hd95_diag" not in tumour or not len(tumour):
        return {"hd95_diag_median_detected": None, "nsd_diag_mean": None}
    hd = tumour["hd95_diag"].dropna()
    return {"hd95_diag_median_detected": float(hd.median()) if len(hd) else None,
            "nsd_diag_mean": float(tumour["nsd_diag"].mean())}
