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
CI that resamples within each class (so the class mix stays fixed) whole near-duplicate
groups (``dup_group``: ``no/`` scans by the healthy split's groups, unseen positives by
the groups among themselves), since near-copies are not independent evidence; the
image-level bootstrap is stored beside it. AUC is the
Mann-Whitney rank formula (ties count one half), checked against scikit-learn in the
tests. Unseen scans that are near-duplicates of a TRAIN image (the signals of
``data/duplicates.py``: thumbnail correlation >= 0.95 or pHash distance <= 6) are counted,
and every figure is reported with and without them. Report scans that are
near-duplicates of a hold-out scan (which helped choose the threshold) are counted too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from brainseg_lib.data import duplicates as leakage
from brainseg_lib.data.br35h import NO, SPLITS, YES, data_root, list_split
from brainseg_lib.data.cache import sha256_file
from brainseg_lib.data.duplicates import read_scans
from brainseg_lib.data.files import list_images, natural_key
from brainseg_lib.inference import scored_probabilities

PRIMARY = "area_frac"
SCORES = {"area_frac": "predicted tumour area (fraction of pixels with p >= 0.5)",
          "max_prob": "maximum tumour probability"}
RATES = ("sensitivity", "specificity", "accuracy", "auc")
N_BOOT = 2000


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


# --------------------------------------------------------------------- scores


def image_scores(model, images_u8: np.ndarray, threshold: float = 0.5, batch_size: int = 64,
                 tta: bool = False, min_component: float = 0.0) -> pd.DataFrame:
    """``max_prob`` and ``area_frac`` of each image (uint8 (N, S, S)) at the model's size; with a
    released file's settings, after test-time flips (``tta``) and the removal of predicted
    components under ``min_component`` of the image, as ``predict`` applies them."""
    p = torch.from_numpy(scored_probabilities(model, images_u8, None, threshold, tta, min_component,
                                              batch_size, channels_last=False))
    return pd.DataFrame({"max_prob": p.amax(dim=(1, 2)).double().numpy(),
                         "area_frac": (p >= threshold).float().mean(dim=(1, 2)).double().numpy()})


def _image_frame(parts) -> pd.DataFrame:
    """One row per image (name, folder, label, role) from (folder, names, label, role) parts."""
    return pd.concat([pd.DataFrame({"name": list(n), "folder": f, "label": lab, "role": role})
                      for f, n, lab, role in parts], ignore_index=True)


def detection_inputs(image_size: int, root=None, limit: int | None = None, healthy_seed: int = 0,
                     progress: bool | None = None, head_crop: bool = False) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """The images every detection score is computed on, read once: (one row per image: name,
    folder, label, role, for report images nearest_train, corr, phash_dist,
    near_dup_train, near_dup_val, near_dup_holdout, and dup_group for all; the images at
    ``image_size``, uint8 (N, S, S); info).

    Validation: the VAL tumour images and the healthy split's ``val`` scans
    (``splits/healthy_seed<k>.csv``, drawn by near-duplicate group). Report: the unseen
    positives and the healthy split's ``report`` scans (the first ``limit`` of each class
    when set). The healthy ``train`` scans, which a model may have trained on, are in neither.
    With ``head_crop`` each image is cropped to its head's box before the resize (a model trained
    on crops); the near-duplicate flags still compare whole scans.
    """
    from brainseg_lib.data.cache import load_split
    from brainseg_lib.data.healthy import load_manifest
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
    val = load_split("val", image_size, root=root, head_crop=head_crop)
    held_imgs, held_fp = read_scans(base / NO, held, image_size, True, progress, head_crop)
    neg_imgs, neg_fp = read_scans(base / NO, report_neg, image_size, True, progress, head_crop)
    pos_imgs, pos_fp = read_scans(base / YES, report_pos, image_size, True, progress, head_crop)
    parts = [("VAL", val.names, 1, "val"), (NO, held, 0, "val"), (YES, report_pos, 1, "report"),
             (NO, report_neg, 0, "report")]
    frame = _image_frame(parts)
    images = np.concatenate([val.images, held_imgs, pos_imgs, neg_imgs])
    near = _near_flag(pos_fp, neg_fp, leakage.fingerprints(root, splits=("train",)), "near_dup_train",
                      {"nearest": "nearest_train", "corr": "corr", "phash_dist": "phash_dist"})
    frame = frame.merge(near, on=["name", "folder"], how="left")
    # report scans that repeat a VAL image (checkpoint and threshold chose on them) or a
    # hold-out scan (the threshold has seen them)
    for col, ref in (("near_dup_val", leakage.fingerprints(root, splits=("val",))),
                     ("near_dup_holdout", held_fp if len(held) else None)):
        frame = frame.merge(_near_flag(pos_fp, neg_fp, ref, col), on=["name", "folder"], how="left")
    for col in ("near_dup_train", "near_dup_val", "near_dup_holdout"):
        frame.loc[frame["role"] == "val", col] = False
        frame[col] = frame[col].astype(bool)
    frame["dup_group"] = dup_group_labels(frame, leakage.near_duplicate_groups(pos_fp), man)
    sizes = man.groupby("group").size().to_numpy()
    info = {"inventory": inv.checks,
            "holdout": {"size": len(held), "seed": healthy_seed,
                        "drawn_by": f"role 'val' of splits/healthy_seed{healthy_seed}.csv "
                                    "(whole near-duplicate groups of no/)", "names": held},
            "healthy_training_scans_excluded": int((man["role"] == "train").sum()),
            "no_groups": _group_sizes(sizes),
            **_report_group_info(frame, pos_fp, neg_fp),
            "limit_per_class": limit, "image_size": image_size, **({"head_crop": True} if head_crop else {})}
    return frame, images, info


def dup_group_labels(frame: pd.DataFrame, yes_groups: dict[str, int], manifest: pd.DataFrame) -> list[str]:
    """The near-duplicate group of every row, the unit the detection CIs resample:
    ``yes/<k>`` for unseen positives (groups among themselves), ``no/<k>`` for ``no/`` scans
    (the healthy split's groups, drawn over all of ``no/``), ``<folder>/<name>`` otherwise."""
    no_groups = dict(zip(manifest["name"], manifest["group"]))
    out = []
    for name, folder in zip(frame["name"], frame["folder"]):
        g = yes_groups.get(name) if folder == YES else no_groups.get(name) if folder == NO else None
        out.append(f"{folder}/{name}" if g is None else f"{folder}/{int(g)}")
    return out


def _report_group_info(frame: pd.DataFrame, pos_fp, neg_fp) -> dict:
    """The report set's near-duplicate groups by class (the bootstrap's units), and how many
    unseen positives are near-duplicates of a report negative: such a pair cannot be one
    unit of a bootstrap stratified by class, so it is counted."""
    rep = frame[frame["role"] == "report"]
    cross = leakage.nearest_in(pos_fp, neg_fp)["dup"] if len(pos_fp.names) and len(neg_fp.names) else []
    return {"report_groups": {c: _group_sizes(rep.loc[rep["label"] == lab, "dup_group"].value_counts().to_numpy())
                              for c, lab in (("positives", 1), ("negatives", 0))},
            "cross_class_near_duplicates": int(np.sum(cross))}


def _group_sizes(sizes: np.ndarray) -> dict:
    """Counts of near-duplicate groups from their sizes."""
    sizes = np.asarray(sizes)
    return {"groups": int(len(sizes)), "groups_with_duplicates": int((sizes > 1).sum()),
            "scans_in_such_groups": int(sizes[sizes > 1].sum()),
            "largest": int(sizes.max()) if len(sizes) else 0}


def _near_flag(pos_fp, neg_fp, ref, col: str, keep: dict[str, str] | None = None) -> pd.DataFrame:
    """name, folder, the ``keep`` columns of ``nearest_in`` (renamed as it maps them) and
    ``col``: whether each report scan is a near-duplicate of a ``ref`` image (all False
    when ``ref`` is None)."""
    if ref is None:
        names = [(n, YES) for n in pos_fp.names] + [(n, NO) for n in neg_fp.names]
        return pd.DataFrame(names, columns=["name", "folder"]).assign(**{col: False})
    keep = keep or {}
    near = pd.concat([leakage.nearest_in(pos_fp, ref).assign(folder=YES),
                      leakage.nearest_in(neg_fp, ref).assign(folder=NO)], ignore_index=True)
    return near.rename(columns={"dup": col, **keep})[["name", "folder", *keep.values(), col]]


def collect_scores(model, image_size: int, root=None, limit: int | None = None, healthy_seed: int = 0,
                   threshold: float = 0.5, progress: bool | None = None,
                   inputs=None, tta: bool = False, min_component: float = 0.0,
                   head_crop: bool = False) -> tuple[pd.DataFrame, dict]:
    """``detection_inputs`` (or the ``inputs`` it returned) scored by ``model``: the frame
    gains max_prob and area_frac; info gains the pixel threshold (and the flips and component
    size when set: ``image_scores``)."""
    frame, images, info = inputs or detection_inputs(image_size, root, limit, healthy_seed, progress, head_crop)
    s = image_scores(model, images, threshold, tta=tta, min_component=min_component)
    cols = list(frame.columns)
    out = pd.concat([frame.reset_index(drop=True), s], axis=1)
    out = out[cols[:4] + list(s.columns) + cols[4:]]
    extra = {**({"tta": True} if tta else {}), **({"min_component": min_component} if min_component else {})}
    return out, {**info, "pixel_threshold": threshold, **extra}
