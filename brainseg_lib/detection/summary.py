"""The detection summary: thresholds chosen on validation, rates on the report scans with and
without near-duplicates, operating points recorded per run, and the table over seeds.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from brainseg_lib.data import duplicates as leakage
from brainseg_lib.data.br35h import NO, YES, data_root
from brainseg_lib.detection.roc import (
    FIXED_SENSITIVITY,
    auc_score,
    choose_threshold,
    confusion,
    evaluate_scores,
    rates,
    specificity_at_sensitivity,
    threshold_at_sensitivity,
)
from brainseg_lib.detection.scores import (
    N_BOOT,
    PRIMARY,
    SCORES,
    _image_frame,
    image_scores,
    inventory,
    read_scans,
)
from brainseg_lib.fileio import json_ready


def summarize_detection(scores: pd.DataFrame, info: dict, primary: str = PRIMARY, n_boot: int = N_BOOT,
              seed: int = 0) -> dict:
    """Everything for results/metrics/detection.json: thresholds chosen on validation, and
    the report metrics of both scores on all report images and without near-duplicates."""
    if primary not in SCORES:
        raise ValueError(f"unknown score {primary!r}; choose one of {tuple(SCORES)}")
    val = scores[scores["role"] == "val"]
    rep = scores[scores["role"] == "report"]
    # "without near-duplicates": of nothing the model or its thresholds saw (TRAIN trained it,
    # VAL chose its checkpoint and both thresholds, the hold-out scans the thresholds)
    seen = rep["near_dup_train"] | rep["near_dup_val"] | rep["near_dup_holdout"]
    clean = rep[~seen]
    chosen = {k: choose_threshold(val[k], val["label"]) for k in SCORES}
    at_sens = {k: threshold_at_sensitivity(val[k], val["label"]) for k in SCORES}
    report, report_sens = {}, {}
    for subset, df in (("all", rep), ("without_near_duplicates", clean)):
        groups = df["dup_group"]
        report[subset] = {k: evaluate_scores(df[k], df["label"], chosen[k]["threshold"], n_boot, seed, groups)
                          for k in SCORES}
        report_sens[subset] = {k: {**evaluate_scores(df[k], df["label"], at_sens[k]["threshold"], n_boot,
                                                     seed, groups),
                                   "roc_specificity_at_sensitivity": specificity_at_sensitivity(df[k], df["label"])}
                               for k in SCORES}
    return json_ready({
        "kind": "detection", "primary_score": primary, "scores": SCORES,
        "threshold_rule": "Youden's J maximised on validation: VAL tumour images (positives) + "
                          f"the {info['holdout']['size']} no/ scans of the healthy split's val role "
                          "(negatives); positive when score >= threshold. The fixed-sensitivity point: "
                          f"the highest threshold with validation sensitivity >= {FIXED_SENSITIVITY}",
        "validation": {"positives": int(val["label"].sum()), "negatives": int((val["label"] == 0).sum()),
                       "chosen": chosen, "at_fixed_sensitivity": at_sens},
        "report": report,
        "bootstrap_unit": "near-duplicate group (dup_group), resampled within each class (ci95); "
                          "single images within each class (ci95_images), for comparison",
        "fixed_sensitivity": FIXED_SENSITIVITY,
        "healthy_any_pixel_share": float((rep.loc[rep["label"] == 0, "area_frac"] > 0).mean())
        if (rep["label"] == 0).any() else None,
        "report_at_fixed_sensitivity": report_sens,
        "near_duplicates_of_train": {
            "thumbnail_corr_min": leakage.CORR_THRESHOLD, "phash_max_hamming": leakage.PHASH_THRESHOLD,
            **_dup_counts(rep, "near_dup_train"),
            "by_corr": int((rep["corr"] >= leakage.CORR_THRESHOLD).sum()),
            "by_phash": int((rep["phash_dist"] <= leakage.PHASH_THRESHOLD).sum())},
        "near_duplicates_of_val": _dup_counts(rep, "near_dup_val"),
        "near_duplicates_of_holdout": _dup_counts(rep, "near_dup_holdout"),
        "without_near_duplicates_rule": "report scans that are near-duplicates of none of TRAIN, VAL "
                                        "and the hold-out scans",
        **info,
    })


def _dup_counts(rep: pd.DataFrame, col: str) -> dict:
    """How many report scans the boolean column ``col`` flags, by class."""
    flagged = rep.loc[rep[col].astype(bool), "label"]
    return {"positives": int(flagged.sum()), "negatives": int((flagged == 0).sum()),
            "total": int(len(flagged)), "of": int(len(rep))}


def operating_points(scores: pd.DataFrame, primary: str = PRIMARY) -> dict:
    """Sensitivity, specificity and AUC of one model's scores on all report images at the two
    validation-chosen thresholds (Youden's J; sensitivity >= FIXED_SENSITIVITY), and the ROC's
    specificity at that sensitivity: the figures compared across seeds (no bootstrap)."""
    val, rep = scores[scores["role"] == "val"], scores[scores["role"] == "report"]
    out = {"auc": auc_score(rep[primary], rep["label"]),
           "roc_specificity_at_sensitivity": specificity_at_sensitivity(rep[primary], rep["label"])}
    for label, pick in (("youden", choose_threshold), ("fixed_sensitivity", threshold_at_sensitivity)):
        t = pick(val[primary], val["label"])["threshold"]
        r = rates(**confusion(rep[primary], rep["label"], t))
        out.update({f"{label}_threshold": t, f"{label}_sensitivity": r["sensitivity"],
                    f"{label}_specificity": r["specificity"]})
    return out


def operating_point_inputs(image_size: int, root=None, limit: int | None = None,
                           healthy_seed: int = 0, val_arrays=None) -> tuple[pd.DataFrame, np.ndarray]:
    """The validation and report images of ``detection_inputs`` without the near-duplicate
    columns, read through the healthy-scan cache: what ``operating_points`` needs, cheap
    enough to run after every training run. The validation positives are ``val_arrays``
    (the VAL a run chose its checkpoint on; a grouped split's VAL is not the official one),
    the official VAL when None."""
    from brainseg_lib.data.cache import load_split
    from brainseg_lib.data.healthy import load_healthy
    inv = inventory(root)
    val = val_arrays if val_arrays is not None else load_split("val", image_size, root=root)
    if val.images.shape[1:] != (image_size, image_size):
        raise ValueError(f"VAL arrays are {val.images.shape[1:]}, the model's input is {image_size}")
    held = load_healthy("val", image_size, healthy_seed, root=root)
    neg = load_healthy("report", image_size, healthy_seed, n=limit, root=root)
    pos_names = inv.positives[:limit] if limit is not None else inv.positives
    pos, _ = read_scans(data_root(root) / YES, pos_names, image_size, progress=False)
    parts = [("VAL", val.names, 1, "val"), (NO, held.names, 0, "val"), (YES, pos_names, 1, "report"),
             (NO, neg.names, 0, "report")]
    return _image_frame(parts), np.concatenate([val.images, held.images, pos, neg.images])


def run_operating_points(model, image_size: int, root=None, limit: int | None = None,
                         healthy_seed: int = 0, threshold: float = 0.5, val_arrays=None) -> dict:
    """``operating_points`` of one trained model (recorded in every run's JSON, so the
    seed-to-seed spread is read from files), its thresholds chosen on ``val_arrays``
    (``operating_point_inputs``)."""
    frame, images = operating_point_inputs(image_size, root, limit, healthy_seed, val_arrays)
    scores = pd.concat([frame, image_scores(model, images, threshold)], axis=1)
    out = operating_points(scores)
    counts = scores.groupby(["role", "label"]).size()
    return json_ready({**out, "primary_score": PRIMARY, "fixed_sensitivity": FIXED_SENSITIVITY,
                       "val_positives": int(counts.get(("val", 1), 0)),
                       "val_negatives": int(counts.get(("val", 0), 0)),
                       "report_positives": int(counts.get(("report", 1), 0)),
                       "report_negatives": int(counts.get(("report", 0), 0)), "limit_per_class": limit})


def seed_table(profile: str, loss: str = "bce_dice", split_scheme: str = "official",
               sweep_dir=None) -> pd.DataFrame:
    """The ``detection`` figures recorded by each seed-sweep run of (profile, split, loss)."""
    from brainseg_lib import paths
    from brainseg_lib.evaluation.evaluate import load_run_metrics
    from brainseg_lib.names import split_seed_of
    rows = []
    for r in load_run_metrics((sweep_dir or paths.sweep_dir()) / "metrics"):
        d = r.get("detection") or {}
        if (r.get("profile"), r.get("split_scheme", "official"), r.get("loss")) != (profile, split_scheme, loss) \
                or "auc" not in d or r.get("run_tag") or split_seed_of(r):   # draw 0 only
            continue
        rows.append({"run_name": r["run_name"], "seed": r["seed"],
                     **{k: d[k] for k in ("auc", "youden_sensitivity", "youden_specificity",
                                          "fixed_sensitivity_sensitivity", "fixed_sensitivity_specificity",
                                          "roc_specificity_at_sensitivity")}})
    return pd.DataFrame(rows).sort_values("seed").reset_index(drop=True) if rows else pd.DataFrame()
