"""A shortcut control for detection: does the shape of the scan give its class away?

Br35H's ``yes/`` and ``no/`` scans come from different sources and differ in size and aspect
ratio, and every scan is resized to a square before the model sees it, which stretches it by
its aspect ratio. A detector could then separate the classes by the stretch alone. Two
figures test this, both on the report scans with the same near-duplicate-group CIs as the
detection figures (``roc.evaluate_scores``):

* **aspect ratio alone**: the AUC of width / height as a score, its direction (which class
  is wider) chosen on the validation scans, never on the report;
* **the model without the stretch**: every scan padded with black to a square before the same
  resize, so no scan is stretched, and scored by the same model; its thresholds are chosen on
  the padded validation scans as in ``summary.summarize_detection``.

If the model's AUC holds on padded scans, its detection does not rest on the stretch; the
aspect-ratio AUC says how much there was to exploit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainseg_lib.data.br35h import data_root, list_split
from brainseg_lib.data.images import read_grayscale, resize_image
from brainseg_lib.detection.roc import auc_score, choose_threshold, evaluate_scores
from brainseg_lib.detection.scores import N_BOOT, PRIMARY, image_scores


def scan_paths(frame: pd.DataFrame, root=None) -> list[Path]:
    """The file of every row of a detection frame (folder ``VAL``: the annotated VAL images;
    else ``<data root>/<folder>/<name>``)."""
    base, val_dir = data_root(root), list_split("val", root)[1]
    return [(val_dir if f == "VAL" else base / f) / n for n, f in zip(frame["name"], frame["folder"])]


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """``image`` centred on a black square of its longer side (no stretch when resized)."""
    h, w = image.shape
    side = max(h, w)
    out = np.zeros((side, side), image.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = image
    return out


def read_padded(paths: list[Path], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(width / height of each scan, the scans padded to a square and resized to the model's
    input, uint8 (N, S, S)), each file read once."""
    aspect, images = np.zeros(len(paths)), np.zeros((len(paths), size, size), np.uint8)
    for i, p in enumerate(paths):
        img = read_grayscale(p)
        aspect[i] = img.shape[1] / img.shape[0]
        images[i] = resize_image(pad_to_square(img), size)
    return aspect, images


def _on_report(score: pd.Series, frame: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """``score`` judged like the detection scores: threshold by Youden's J on the validation
    rows, rates and AUC with group CIs on the report rows."""
    val, rep = frame["role"] == "val", frame["role"] == "report"
    t = choose_threshold(score[val], frame.loc[val, "label"])["threshold"]
    return evaluate_scores(score[rep], frame.loc[rep, "label"], t, n_boot, seed, frame.loc[rep, "dup_group"])


def shortcut_control(model, image_size: int, scores: pd.DataFrame, root=None, primary: str = PRIMARY,
                     threshold: float = 0.5, n_boot: int = N_BOOT, seed: int = 0,
                     model_figures: dict | None = None) -> tuple[dict, pd.DataFrame]:
    """(summary for detection.json, per-scan frame: name, folder, role, label, aspect,
    ``<primary>`` and ``<primary>_padded``) of the two controls of the module docstring, on
    the rows of a detection score frame (``scores.collect_scores``). ``model_figures``: the
    model's own figures on the report scans where already computed (``summarize_detection``'s
    ``report["all"][primary]``, the same rule), else they are computed here."""
    frame = scores[["name", "folder", "role", "label", "dup_group", primary]].reset_index(drop=True)
    frame["aspect"], padded = read_padded(scan_paths(frame, root), image_size)
    val = frame["role"] == "val"
    wider_is_tumour = auc_score(frame.loc[val, "aspect"], frame.loc[val, "label"]) >= 0.5
    aspect_score = frame["aspect"] if wider_is_tumour else 1 / frame["aspect"]
    frame[f"{primary}_padded"] = image_scores(model, padded, threshold)[primary].to_numpy()
    out = {"aspect_ratio_only": {**_on_report(aspect_score, frame, n_boot, seed),
                                 "score": "width / height" if wider_is_tumour else "height / width",
                                 "direction_chosen_on": "validation scans"},
           "model": model_figures or _on_report(frame[primary], frame, n_boot, seed),
           "model_padded_to_square": _on_report(frame[f"{primary}_padded"], frame, n_boot, seed),
           "score": primary,
           "aspect_median": {c: float(frame.loc[frame["label"] == lab, "aspect"].median())
                             for c, lab in (("tumour", 1), ("healthy", 0))}}
    return out, frame[["name", "folder", "role", "label", "aspect", primary, f"{primary}_padded"]]
