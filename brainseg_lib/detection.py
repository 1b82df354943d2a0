"""Image-level tumour detection from the segmentation model, on scans no model has seen.

**Data.** Br35H's ``yes/`` folder holds 1,500 tumour scans; the 801 annotated images
(TRAIN/VAL/TEST) are copies of some of them under the same names. ``inventory`` checks
that each annotated image is byte-identical to its ``yes/`` namesake; every other
``yes/`` scan (y801..y1499 on the published data) is an *unseen positive*. ``no/``
holds 1,500 scans without tumour. No model is trained on either folder.

**Scores** (from the segmentation, at the model's input size):

* ``area_frac``: the predicted tumour area, the fraction of pixels with p >= 0.5;
* ``max_prob``: the highest tumour probability in the image.

The primary score, fixed before looking at any result, is ``area_frac``: it is the
segmentation's own decision at the 0.5 threshold every segmentation metric uses, it
rests on many pixels (one hot pixel cannot flip it, unlike ``max_prob``), and its
threshold reads as a minimum tumour size. ``max_prob`` is reported beside it.

**Threshold on validation only.** VAL has no tumour-free image, so the ``val`` role
of the healthy split (``healthy.py``: ``no/`` split once by whole near-duplicate groups
into ``train``, ``val`` and ``report``; 300 ``val`` scans, listed in the JSON) is the
negative validation set, with the 201 VAL tumour images as positives. For each score two
thresholds are chosen there: the one maximising Youden's J (sensitivity + specificity -
1), and the highest one whose sensitivity is >= ``FIXED_SENSITIVITY`` (0.90). An image is
positive when score >= threshold; thresholds lie midway between observed scores; Youden
ties go to the lower threshold. The hold-out never enters the report, and the ``train``
scans, which a model may have trained on, are used nowhere here.

**Report** on every unseen positive and every ``report`` scan of ``no/``:
sensitivity, specificity, accuracy and ROC AUC, each with a 95% percentile bootstrap
CI that resamples images within each class (so the class mix stays fixed). AUC is the
Mann-Whitney rank formula (ties count one half), checked against scikit-learn in the
tests. Unseen scans that are near-duplicates of a TRAIN image (the signals of
``leakage.py``: thumbnail correlation >= 0.95 or pHash distance <= 6) are counted,
and every figure is reported with and without them. Report scans that are
near-duplicates of a hold-out scan (which helped choose the threshold) are counted too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from . import leakage, plots
from .data import (IMAGE_SUFFIXES, SPLITS, data_root, list_split, read_grayscale, resize_image,
                   sha256_file)
from .evaluate import json_ready
from .fileio import atomic_write_text
from .metrics import confusion_counts
from .progress import progress_bar
from .train import predict_probabilities

YES, NO = "yes", "no"
PRIMARY = "area_frac"
SCORES = {"area_frac": "predicted tumour area (fraction of pixels with p >= 0.5)",
          "max_prob": "maximum tumour probability"}
RATES = ("sensitivity", "specificity", "accuracy", "auc")
N_BOOT = 2000


# --------------------------------------------------------------------- files
def natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_images(folder: Path) -> list[str]:
    """Image files directly in ``folder``, in natural order (no2 before no10)."""
    return sorted((p.name for p in Path(folder).iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
                  key=natural_key)


@dataclass
class Inventory:
    positives: list[str]             # unseen yes/ scans
    negatives: list[str]             # every no/ scan
    checks: dict = field(default_factory=dict)


def inventory(root=None) -> Inventory:
    """The unseen positives and the negatives, with the byte-identity checks.

    ``checks``: how many annotated names have a ``yes/`` namesake and how many of those are
    byte-identical (SHA-256), the names that differ or are missing, the first and last
    unseen name, unseen or ``no/`` scans that are byte-copies of an annotated image, and
    ``no/`` scans that are byte-copies of an unseen positive (contradictory labels).
    """
    base = data_root(root)
    yes_dir, no_dir = base / YES, base / NO
    for d in (yes_dir, no_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"Br35H folder {d} not found (expected {YES}/ and {NO}/ under {base})")
    annotated = {}
    for split in SPLITS:
        anns, folder = list_split(split, root)
        annotated.update({a.filename: folder / a.filename for a in anns})
    yes = list_images(yes_dir)
    no = list_images(no_dir)
    yes_set = set(yes)
    ann_hash = {n: sha256_file(p) for n, p in annotated.items()}
    in_yes = [n for n in annotated if n in yes_set]
    differing = [n for n in in_yes if sha256_file(yes_dir / n) != ann_hash[n]]
    positives = [n for n in yes if n not in annotated]
    ann_hashes = set(ann_hash.values())
    pos_hash = {n: sha256_file(yes_dir / n) for n in positives}
    no_hash = {n: sha256_file(no_dir / n) for n in no}
    pos_hashes = set(pos_hash.values())
    checks = {
        "yes_images": len(yes), "no_images": len(no), "annotated_images": len(annotated),
        "annotated_with_yes_namesake": len(in_yes),
        "byte_identical_to_yes_namesake": len(in_yes) - len(differing),
        "differing_from_yes_namesake": sorted(differing, key=natural_key),
        "annotated_missing_from_yes": sorted(set(annotated) - yes_set, key=natural_key),
        "unseen_positives": len(positives),
        "first_unseen": positives[0] if positives else None,
        "last_unseen": positives[-1] if positives else None,
        "unseen_byte_copies_of_annotated": [n for n in positives if pos_hash[n] in ann_hashes],
        "no_byte_copies_of_annotated": [n for n in no if no_hash[n] in ann_hashes],
        "no_byte_copies_of_unseen_yes": [n for n in no if no_hash[n] in pos_hashes],
    }
    return Inventory(positives, no, checks)


def negative_groups(fp: "leakage.Fingerprints") -> dict[str, int]:
    """Near-duplicate groups among negatives (connected components of the audit's links)."""
    labels = leakage.groups(fp, leakage.pair_table(fp, min_corr=leakage.CORR_THRESHOLD))
    return dict(zip(fp.names, (int(x) for x in labels)))


# --------------------------------------------------------------------- scores
def read_scans(folder: Path, names: list[str], size: int, fingerprint: bool = False,
               progress: bool | None = None):
    """Scans resized to the model's input (uint8 (N, size, size)) and, optionally, their
    leakage fingerprints computed at native size."""
    images = np.zeros((len(names), size, size), np.uint8)
    thumbs, hashes = [], []
    for i, n in enumerate(progress_bar(names, desc=f"reading {Path(folder).name}/",
                                       disable=None if progress is None else not progress)):
        img = read_grayscale(Path(folder) / n)
        images[i] = resize_image(img, size)
        if fingerprint:
            t, h = leakage.fingerprint_image(img)
            thumbs.append(t)
            hashes.append(h)
    fp = leakage.stack_fingerprints(names, [Path(folder).name] * len(names), thumbs, hashes) \
        if fingerprint else None
    return images, fp


def image_scores(model, images_u8: np.ndarray, threshold: float = 0.5, batch_size: int = 64) -> pd.DataFrame:
    """``max_prob`` and ``area_frac`` of each image (uint8 (N, S, S)) at the model's size."""
    p = torch.from_numpy(predict_probabilities(model, images_u8, batch_size=batch_size,
                                               channels_last=False))
    return pd.DataFrame({"max_prob": p.amax(dim=(1, 2)).double().numpy(),
                         "area_frac": (p >= threshold).float().mean(dim=(1, 2)).double().numpy()})


def _image_frame(parts) -> pd.DataFrame:
    """One row per image (name, folder, label, role) from (folder, names, label, role) parts."""
    return pd.concat([pd.DataFrame({"name": list(n), "folder": f, "label": lab, "role": role})
                      for f, n, lab, role in parts], ignore_index=True)


def detection_inputs(image_size: int, root=None, limit: int | None = None, healthy_seed: int = 0,
                     progress: bool | None = None) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """The images every detection score is computed on, read once: (one row per image: name,
    folder, label, role and, for report images, nearest_train, corr, phash_dist,
    near_dup_train, near_dup_holdout; the images at ``image_size``, uint8 (N, S, S); info).

    Validation: the VAL tumour images and the healthy split's ``val`` scans
    (``splits/healthy_seed<k>.csv``, drawn by near-duplicate group). Report: the unseen
    positives and the healthy split's ``report`` scans (the first ``limit`` of each class
    when set). The healthy ``train`` scans, which a model may have trained on, are in neither.
    """
    from .data import load_split
    from .healthy import load_manifest
    base = data_root(root)
    inv = inventory(root)
    man = load_manifest(healthy_seed)
    unknown = set(man["name"]) ^ set(inv.negatives)
    if unknown:
        raise ValueError(f"splits/healthy_seed{healthy_seed}.csv does not list the no/ folder's scans "
                         f"({len(unknown)} differ, e.g. {sorted(unknown)[:3]}); rewrite it with "
                         "`python -m brainseg_lib healthy-split`")
    held = sorted(man.loc[man["role"] == "val", "name"], key=natural_key)
    report_neg = sorted(man.loc[man["role"] == "report", "name"], key=natural_key)
    report_pos = list(inv.positives)
    if limit is not None:
        report_pos, report_neg = report_pos[:limit], report_neg[:limit]
    val = load_split("val", image_size, root=root)
    held_imgs, held_fp = read_scans(base / NO, held, image_size, True, progress)
    neg_imgs, neg_fp = read_scans(base / NO, report_neg, image_size, True, progress)
    pos_imgs, pos_fp = read_scans(base / YES, report_pos, image_size, True, progress)
    parts = [("VAL", val.names, 1, "val"), (NO, held, 0, "val"), (YES, report_pos, 1, "report"),
             (NO, report_neg, 0, "report")]
    frame = _image_frame(parts)
    images = np.concatenate([val.images, held_imgs, pos_imgs, neg_imgs])
    train_fp = leakage.fingerprints(root, splits=("train",))
    near = pd.concat([leakage.nearest_in(pos_fp, train_fp).assign(folder=YES),
                      leakage.nearest_in(neg_fp, train_fp).assign(folder=NO)], ignore_index=True)
    near = near.rename(columns={"nearest": "nearest_train", "dup": "near_dup_train"})
    frame = frame.merge(near[["name", "folder", "nearest_train", "corr", "phash_dist", "near_dup_train"]],
                        on=["name", "folder"], how="left")
    if len(held):   # report scans that repeat a hold-out scan (the threshold has seen them)
        hnear = pd.concat([leakage.nearest_in(pos_fp, held_fp).assign(folder=YES),
                           leakage.nearest_in(neg_fp, held_fp).assign(folder=NO)], ignore_index=True)
        hnear = hnear.rename(columns={"dup": "near_dup_holdout"})
        frame = frame.merge(hnear[["name", "folder", "near_dup_holdout"]], on=["name", "folder"], how="left")
    else:
        frame["near_dup_holdout"] = False
    for col in ("near_dup_train", "near_dup_holdout"):
        frame.loc[frame["role"] == "val", col] = False
        frame[col] = frame[col].astype(bool)
    sizes = man.groupby("group").size().to_numpy()
    info = {"inventory": inv.checks,
            "holdout": {"size": len(held), "seed": healthy_seed,
                        "drawn_by": f"role 'val' of splits/healthy_seed{healthy_seed}.csv "
                                    "(whole near-duplicate groups of no/)", "names": held},
            "healthy_training_scans_excluded": int((man["role"] == "train").sum()),
            "no_groups": {"groups": int(len(sizes)), "groups_with_duplicates": int((sizes > 1).sum()),
                          "scans_in_such_groups": int(sizes[sizes > 1].sum()), "largest": int(sizes.max())},
            "limit_per_class": limit, "image_size": image_size}
    return frame, images, info


def collect_scores(model, image_size: int, root=None, limit: int | None = None, healthy_seed: int = 0,
                   threshold: float = 0.5, progress: bool | None = None,
                   inputs=None) -> tuple[pd.DataFrame, dict]:
    """``detection_inputs`` (or the ``inputs`` it returned) scored by ``model``: the frame
    gains max_prob and area_frac; info gains the pixel threshold."""
    frame, images, info = inputs or detection_inputs(image_size, root, limit, healthy_seed, progress)
    s = image_scores(model, images, threshold)
    cols = list(frame.columns)
    out = pd.concat([frame.reset_index(drop=True), s], axis=1)
    out = out[cols[:4] + list(s.columns) + cols[4:]]
    return out, {**info, "pixel_threshold": threshold}


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


def _div(a, b) -> float:
    return float(a / b) if b else float("nan")


def rates(tp, fp, fn, tn) -> dict[str, float]:
    return {"sensitivity": _div(tp, tp + fn), "specificity": _div(tn, tn + fp),
            "accuracy": _div(tp + tn, tp + fp + fn + tn)}


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


def evaluate_scores(scores, labels, threshold: float, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Counts, sensitivity, specificity, accuracy and AUC at ``threshold``, with stratified
    percentile bootstrap 95% CIs (images resampled within each class)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    c = confusion(s, y, threshold)
    out = {"images": int(len(s)), "positives": int(y.sum()), "negatives": int((~y).sum()),
           "threshold": float(threshold), **c, **rates(**c), "auc": auc_score(s, y)}
    pos, neg = s[y], s[~y]
    rng = np.random.default_rng(seed)
    boot = {k: [] for k in RATES}
    if len(pos) and len(neg):
        for _ in range(n_boot):
            bp = pos[rng.integers(0, len(pos), len(pos))]
            bn = neg[rng.integers(0, len(neg), len(neg))]
            tp, tn = int((bp >= threshold).sum()), int((bn < threshold).sum())
            r = rates(tp, len(bn) - tn, len(bp) - tp, tn)
            for k in ("sensitivity", "specificity", "accuracy"):
                boot[k].append(r[k])
            boot["auc"].append(auc_score(np.r_[bp, bn], np.r_[np.ones(len(bp)), np.zeros(len(bn))]))
    out["ci95"] = {k: [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))] if v
                   else [float("nan"), float("nan")] for k, v in boot.items()}
    return out


def summarize(scores: pd.DataFrame, info: dict, primary: str = PRIMARY, n_boot: int = N_BOOT,
              seed: int = 0) -> dict:
    """Everything for results/metrics/detection.json: thresholds chosen on validation, and
    the report metrics of both scores on all report images and without near-duplicates."""
    if primary not in SCORES:
        raise ValueError(f"unknown score {primary!r}; choose one of {tuple(SCORES)}")
    val = scores[scores["role"] == "val"]
    rep = scores[scores["role"] == "report"]
    clean = rep[~rep["near_dup_train"]]
    chosen = {k: choose_threshold(val[k], val["label"]) for k in SCORES}
    at_sens = {k: threshold_at_sensitivity(val[k], val["label"]) for k in SCORES}
    report, report_sens = {}, {}
    for subset, df in (("all", rep), ("without_near_duplicates", clean)):
        report[subset] = {k: evaluate_scores(df[k], df["label"], chosen[k]["threshold"], n_boot, seed)
                          for k in SCORES}
        report_sens[subset] = {k: {**evaluate_scores(df[k], df["label"], at_sens[k]["threshold"], n_boot, seed),
                                   "roc_specificity_at_sensitivity": specificity_at_sensitivity(df[k], df["label"])}
                               for k in SCORES}
    dup = rep[rep["near_dup_train"]]
    return json_ready({
        "kind": "detection", "primary_score": primary, "scores": SCORES,
        "threshold_rule": "Youden's J maximised on validation: VAL tumour images (positives) + "
                          f"the {info['holdout']['size']} no/ scans of the healthy split's val role "
                          "(negatives); positive when score >= threshold. The fixed-sensitivity point: "
                          f"the highest threshold with validation sensitivity >= {FIXED_SENSITIVITY}",
        "validation": {"positives": int(val["label"].sum()), "negatives": int((val["label"] == 0).sum()),
                       "chosen": chosen, "at_fixed_sensitivity": at_sens},
        "report": report,
        "fixed_sensitivity": FIXED_SENSITIVITY,
        "healthy_any_pixel_share": float((rep.loc[rep["label"] == 0, "area_frac"] > 0).mean())
        if (rep["label"] == 0).any() else None,
        "report_at_fixed_sensitivity": report_sens,
        "near_duplicates_of_train": {
            "thumbnail_corr_min": leakage.CORR_THRESHOLD, "phash_max_hamming": leakage.PHASH_THRESHOLD,
            "positives": int(dup["label"].sum()), "negatives": int((dup["label"] == 0).sum()),
            "total": int(len(dup)), "of": int(len(rep)),
            "by_corr": int((rep["corr"] >= leakage.CORR_THRESHOLD).sum()),
            "by_phash": int((rep["phash_dist"] <= leakage.PHASH_THRESHOLD).sum())},
        "near_duplicates_of_holdout": {
            "positives": int(rep.loc[rep["near_dup_holdout"], "label"].sum()),
            "negatives": int((rep.loc[rep["near_dup_holdout"], "label"] == 0).sum()),
            "total": int(rep["near_dup_holdout"].sum()), "of": int(len(rep))},
        **info,
    })


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
                           healthy_seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """The validation and report images of ``detection_inputs`` without the near-duplicate
    columns, read through the healthy-scan cache: what ``operating_points`` needs, cheap
    enough to run after every training run."""
    from .data import load_split
    from .healthy import load_healthy
    inv = inventory(root)
    val = load_split("val", image_size, root=root)
    held = load_healthy("val", image_size, healthy_seed, root=root)
    neg = load_healthy("report", image_size, healthy_seed, n=limit, root=root)
    pos_names = inv.positives[:limit] if limit is not None else inv.positives
    pos, _ = read_scans(data_root(root) / YES, pos_names, image_size, progress=False)
    parts = [("VAL", val.names, 1, "val"), (NO, held.names, 0, "val"), (YES, pos_names, 1, "report"),
             (NO, neg.names, 0, "report")]
    return _image_frame(parts), np.concatenate([val.images, held.images, pos, neg.images])


def run_operating_points(model, image_size: int, root=None, limit: int | None = None,
                         healthy_seed: int = 0, threshold: float = 0.5) -> dict:
    """``operating_points`` of one trained model (recorded in every run's JSON, so the
    seed-to-seed spread is read from files)."""
    frame, images = operating_point_inputs(image_size, root, limit, healthy_seed)
    scores = pd.concat([frame, image_scores(model, images, threshold)], axis=1)
    out = operating_points(scores)
    counts = scores.groupby(["role", "label"]).size()
    return json_ready({**out, "primary_score": PRIMARY, "fixed_sensitivity": FIXED_SENSITIVITY,
                       "report_positives": int(counts.get(("report", 1), 0)),
                       "report_negatives": int(counts.get(("report", 0), 0)), "limit_per_class": limit})


def seed_table(profile: str, loss: str = "bce_dice", split_scheme: str = "official",
               sweep_dir=None) -> pd.DataFrame:
    """The ``detection`` figures recorded by each seed-sweep run of (profile, split, loss)."""
    from . import paths
    from .evaluate import load_run_metrics
    rows = []
    for r in load_run_metrics((sweep_dir or paths.sweep_dir()) / "metrics"):
        d = r.get("detection") or {}
        if (r.get("profile"), r.get("split_scheme", "official"), r.get("loss")) != (profile, split_scheme, loss) \
                or "auc" not in d or r.get("run_tag"):
            continue
        rows.append({"run_name": r["run_name"], "seed": r["seed"],
                     **{k: d[k] for k in ("auc", "youden_sensitivity", "youden_specificity",
                                          "fixed_sensitivity_sensitivity", "fixed_sensitivity_specificity",
                                          "roc_specificity_at_sensitivity")}})
    return pd.DataFrame(rows).sort_values("seed").reset_index(drop=True) if rows else pd.DataFrame()


SEED_COLUMNS = {"auc": "AUC", "youden_sensitivity": "sensitivity (Youden)",
                "youden_specificity": "specificity (Youden)",
                "fixed_sensitivity_sensitivity": "sensitivity (fixed-sensitivity threshold)",
                "fixed_sensitivity_specificity": "specificity (fixed-sensitivity threshold)",
                "roc_specificity_at_sensitivity": "ROC specificity at sensitivity 0.90"}


def seed_markdown(seeds: pd.DataFrame) -> str:
    """Mean ± sd over the sweep's seeds of each operating-point figure (``seed_table``)."""
    if seeds.empty:
        return "_No seed sweep with detection figures yet._\n"
    lines = [f"| figure (all report scans, area score) | mean ± sd over {len(seeds)} seeds |", "|---|---|"]
    for col, label in SEED_COLUMNS.items():
        lines.append(f"| {label} | {seeds[col].mean():.3f} ± {seeds[col].std(ddof=1) if len(seeds) > 1 else 0:.3f} |")
    return "\n".join(lines) + "\n"


def _num(v) -> float:
    """A JSON value back to a float (None -> NaN)."""
    return float("nan") if v is None else float(v)


def _fmt_ci(v, ci) -> str:
    v, lo, hi = _num(v), _num(ci[0]), _num(ci[1])
    return "n/a" if np.isnan(v) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


TABLE_COLUMNS = ("Task", "Images", "Positives", "Negatives", "Sensitivity", "Specificity",
                 "Accuracy", "AUC")


def detection_table(summary: dict) -> pd.DataFrame:
    """Rows of the detection results table (primary score): all report images, then without
    near-duplicates of TRAIN. Numeric columns, with ``<metric>_ci_low`` / ``_ci_high``."""
    k = summary["primary_score"]
    rows = []
    points = [("report", subset, label) for subset, label in
              (("all", "all unseen scans"), ("without_near_duplicates", "without near-duplicates of TRAIN"))]
    if "report_at_fixed_sensitivity" in summary:
        points.append(("report_at_fixed_sensitivity", "all",
                       f"all unseen scans, threshold for sensitivity >= {summary['fixed_sensitivity']:g} on validation"))
    for block, subset, label in points:
        m = summary[block][subset][k]
        row = {"Task": f"Image-level tumour detection ({label}; score: {k})", "Images": m["images"],
               "Positives": m["positives"], "Negatives": m["negatives"]}
        for col, key in (("Sensitivity", "sensitivity"), ("Specificity", "specificity"),
                         ("Accuracy", "accuracy"), ("AUC", "auc")):
            row[col] = _num(m[key])
            row[f"{col}_ci_low"], row[f"{col}_ci_high"] = map(_num, m["ci95"][key])
        rows.append(row)
    df = pd.DataFrame(rows)
    ci = [c for c in df.columns if c not in TABLE_COLUMNS]
    return df[list(TABLE_COLUMNS) + ci]


def table_markdown(table: pd.DataFrame) -> str:
    """The table with '0.912 [0.890, 0.931]' cells (value and 95% bootstrap CI)."""
    def cell(r, c):
        if c in ("Task", "Images", "Positives", "Negatives"):
            return str(r[c])
        return _fmt_ci(r[c], (r[c + "_ci_low"], r[c + "_ci_high"]))
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(cell(r, c) for c in TABLE_COLUMNS) + " |" for _, r in table.iterrows()]
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, out_dir) -> dict[str, Path]:
    """detection_table.csv and detection_table.md in ``out_dir``."""
    from .evaluate import write_csv
    out = Path(out_dir)
    md = out / "detection_table.md"
    atomic_write_text(md, table_markdown(table))
    return {"csv": write_csv(table, out / "detection_table.csv"), "md": md}


def metrics_frame(summary: dict) -> pd.DataFrame:
    """Long table of the report metrics: subset x score, value and CI per metric."""
    rows = []
    for subset, by_score in summary["report"].items():
        for k, m in by_score.items():
            row = {"subset": subset, "score": k, "primary": k == summary["primary_score"],
                   "images": m["images"], "threshold": m["threshold"]}
            for r in RATES:
                row[r] = _num(m[r])
                row[f"{r}_ci"] = "[{:.3f}, {:.3f}]".format(*map(_num, m["ci95"][r]))
            rows.append(row)
    return pd.DataFrame(rows)


def describe(summary: dict) -> str:
    """The result in plain sentences, generated from the summary."""
    k = summary["primary_score"]
    lines = []
    for subset, label in (("all", "All report scans"),
                          ("without_near_duplicates", "Without near-duplicates of TRAIN")):
        m = summary["report"][subset][k]
        ci = m["ci95"]
        lines.append(
            f"{label} ({m['positives']} tumour, {m['negatives']} healthy), {k} >= {m['threshold']:.4g}: "
            f"sensitivity {_fmt_ci(m['sensitivity'], ci['sensitivity'])}, "
            f"specificity {_fmt_ci(m['specificity'], ci['specificity'])}, "
            f"accuracy {_fmt_ci(m['accuracy'], ci['accuracy'])}, AUC {_fmt_ci(m['auc'], ci['auc'])}.")
    a, b = (_num(summary["report"][s][k]["auc"]) for s in ("all", "without_near_duplicates"))
    nd = summary["near_duplicates_of_train"]
    lines.append(f"{nd['total']} of {nd['of']} report scans are near-duplicates of a TRAIN image; "
                 f"leaving them out changes the AUC by {b - a:+.3f}.")
    other = [s for s in SCORES if s != k][0]
    lines.append(f"The secondary score ({other}) has AUC "
                 f"{_fmt_ci(summary['report']['all'][other]['auc'], summary['report']['all'][other]['ci95']['auc'])} "
                 f"on all report scans (threshold {summary['report']['all'][other]['threshold']:.4g}).")
    chance = [s for s in SCORES if not np.isnan(_num(summary["report"]["all"][s]["ci95"]["auc"][0]))
              and _num(summary["report"]["all"][s]["ci95"]["auc"][0]) > 0.5]
    lines.append("Scores whose AUC is above chance (95% CI above 0.5): "
                 + (", ".join(chance) if chance else "none") + ".")
    return "\n".join(lines)


# --------------------------------------------------------------------- figures (from the CSV)
def roc_figure(scores: pd.DataFrame, summary: dict):
    """ROC curves of both scores on the report images, with each val-chosen operating point."""
    rep = scores[scores["role"] == "report"]
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for k, color in zip(SCORES, ("#4a90d9", "#e67e22")):
        fpr, tpr, _ = roc_points(rep[k], rep["label"])
        m = summary["report"]["all"][k]
        tag = " (primary)" if k == summary["primary_score"] else ""
        ax.plot(fpr, tpr, color=color, label=f"{k}{tag}: AUC {_num(m['auc']):.3f}")
        ax.scatter([1 - _num(m["specificity"])], [_num(m["sensitivity"])], color=color, edgecolor="k", zorder=3,
                   label=f"threshold {m['threshold']:.4g} (chosen on validation)")
    ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=0.8)
    ax.set_xlabel("1 - specificity (false-alarm rate)")
    ax.set_ylabel("sensitivity")
    ax.set_title(f"{len(rep)} unseen scans ({int(rep['label'].sum())} tumour)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def confusion_figure(summary: dict, subset: str = "all"):
    m = summary["report"][subset][summary["primary_score"]]
    cm = np.array([[m["tp"], m["fn"]], [m["fp"], m["tn"]]])
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > cm.max() / 2 else "black", fontsize=12)
    ax.set_xticks([0, 1], ["tumour", "no tumour"])
    ax.set_yticks([0, 1], ["tumour", "no tumour"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{summary['primary_score']} >= {m['threshold']:.4g}", fontsize=9)
    fig.tight_layout()
    return fig


def score_histogram(scores: pd.DataFrame, summary: dict):
    k = summary["primary_score"]
    rep = scores[scores["role"] == "report"]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    bins = np.linspace(0, max(rep[k].max(), 1e-3), 41)
    for label, name, color in ((1, "tumour (yes/)", plots.TUMOUR), (0, "no tumour (no/)", "#4a90d9")):
        ax.hist(rep.loc[rep["label"] == label, k], bins=bins, alpha=0.55, color=color, label=name)
    ax.axvline(summary["report"]["all"][k]["threshold"], color="k", ls="--", label="threshold")
    ax.set_yscale("log")
    ax.set_xlabel(SCORES[k])
    ax.set_ylabel("images")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def gallery_rows(scores: pd.DataFrame, summary: dict, kind: str, n: int = 8) -> pd.DataFrame:
    """Report images the primary score gets wrong: ``missed`` tumours (lowest scores first) or
    ``false_alarms`` (highest scores first)."""
    k = summary["primary_score"]
    t = summary["report"]["all"][k]["threshold"]
    rep = scores[scores["role"] == "report"]
    if kind == "missed":
        sel = rep[(rep["label"] == 1) & (rep[k] < t)].sort_values([k, "max_prob"], ascending=True)
    elif kind == "false_alarms":
        sel = rep[(rep["label"] == 0) & (rep[k] >= t)].sort_values([k, "max_prob"], ascending=False)
    else:
        raise ValueError("kind is 'missed' or 'false_alarms'")
    return sel.head(n)


def gallery(rows: pd.DataFrame, model, image_size: int, title: str, root=None, ncols: int = 4,
            threshold: float = 0.5):
    """The scans of ``rows`` with the predicted tumour outline (cyan), at native size."""
    from .evaluate import to_native
    base = data_root(root)
    n = len(rows)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3.1 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "none", ha="center", va="center", transform=axes[0, 0].transAxes)
    for ax, r in zip(axes.flat, rows.itertuples()):
        img = read_grayscale(base / r.folder / r.name)
        p = predict_probabilities(model, resize_image(img, image_size)[None], channels_last=False)[0]
        ax.imshow(img, cmap="gray")
        plots.draw_contours(ax, to_native(p, *img.shape) >= threshold, plots.PRED)
        dup = " near-dup" if getattr(r, "near_dup_train", False) else ""
        ax.set_title(f"{r.folder}/{r.name}{dup}\narea {r.area_frac:.4f}, max p {r.max_prob:.3f}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
