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

A second cue is the framing: Br35H's healthy scans show more background around the head than its
tumour scans (``results/release_levers/head_frames.md``), and padding keeps that cue. Two more
figures, on the same scans and with the same CIs:

* **framing alone**: the AUC of the share of the frame the head's box covers
  (``data.head_crop.head_box``, images only), its direction chosen on the validation scans;
* **the model within framing strata**: the model's AUC over only those tumour-healthy pairs whose
  scans fall in the same quartile of that share (quartile edges from the report scans), so a
  detector that ranked by framing alone would score 0.5 plus what is left of the cue inside a
  quartile. The pair counts of each quartile are given beside it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainseg_lib.data.br35h import data_root, list_split
from brainseg_lib.data.images import read_grayscale, resize_image
from brainseg_lib.detection.roc import auc_score, choose_threshold, evaluate_scores
from brainseg_lib.detection.scores import N_BOOT, PRIMARY, image_scores
from brainseg_lib.evaluation.bootstrap import bootstrap_clusters_stratified, percentile_ci

FRAMING_STRATA = 4


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


def read_padded(paths: list[Path], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(width / height of each scan, the share of its frame the head's box covers, the scans
    padded to a square and resized to the model's input, uint8 (N, S, S)), each file read once."""
    from brainseg_lib.data.head_crop import box_share
    aspect, share = np.zeros(len(paths)), np.zeros(len(paths))
    images = np.zeros((len(paths), size, size), np.uint8)
    for i, p in enumerate(paths):
        img = read_grayscale(p)
        aspect[i], share[i] = img.shape[1] / img.shape[0], box_share(img)
        images[i] = resize_image(pad_to_square(img), size)
    return aspect, share, images


def framing_strata(share, n: int = FRAMING_STRATA) -> np.ndarray:
    """The quartile (for n = 4) of each scan's framing share, 0 = most background; edges are the
    quantiles of ``share`` itself, ties at an edge go to the lower stratum."""
    s = np.asarray(share, dtype=np.float64)
    edges = np.quantile(s, np.linspace(0, 1, n + 1)[1:-1])
    return np.searchsorted(edges, s, side="left")


def matched_auc(pos, neg) -> tuple[float, int]:
    """(AUC over the tumour-healthy pairs in the same stratum, how many such pairs): ``pos`` and
    ``neg`` are (score, stratum) rows of each class; ties count one half; NaN with no pair."""
    num, pairs = 0.0, 0
    for k in np.intersect1d(pos[:, 1], neg[:, 1]):
        p, q = pos[pos[:, 1] == k, 0], neg[neg[:, 1] == k, 0]
        num += auc_score(np.r_[p, q], np.r_[np.ones(len(p)), np.zeros(len(q))]) * len(p) * len(q)
        pairs += len(p) * len(q)
    return (num / pairs if pairs else float("nan")), pairs


def within_framing(score, label, share, groups, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """The model's AUC within framing strata (module doc), its 95% CI resampling near-duplicate
    groups within each class, and each stratum's scan counts and share range."""
    s, y, g = np.asarray(score, np.float64), np.asarray(label).astype(bool), np.asarray(groups)
    k = framing_strata(share)
    rows = np.c_[s, k]
    auc, pairs = matched_auc(rows[y], rows[~y])
    reps = bootstrap_clusters_stratified([rows[y], rows[~y]], [g[y], g[~y]],
                                         lambda res: [matched_auc(p, q)[0] for p, q in zip(*res)],
                                         n_boot, seed)
    sh = np.asarray(share, np.float64)
    return {"auc": auc, "ci95": {"auc": list(percentile_ci(reps, skip_nan=True))}, "pairs": pairs,
            "all_pairs": int(y.sum() * (~y).sum()),
            "strata": [{"share_range": [float(sh[k == j].min()), float(sh[k == j].max())],
                        "tumour": int((y & (k == j)).sum()), "healthy": int((~y & (k == j)).sum())}
                       for j in range(int(k.max()) + 1) if (k == j).any()]}


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
    frame["aspect"], frame["head_box_share"], padded = read_padded(scan_paths(frame, root), image_size)
    val, rep = frame["role"] == "val", frame["role"] == "report"
    wider_is_tumour = auc_score(frame.loc[val, "aspect"], frame.loc[val, "label"]) >= 0.5
    aspect_score = frame["aspect"] if wider_is_tumour else 1 / frame["aspect"]
    tighter_is_tumour = auc_score(frame.loc[val, "head_box_share"], frame.loc[val, "label"]) >= 0.5
    framing_score = frame["head_box_share"] * (1 if tighter_is_tumour else -1)
    frame[f"{primary}_padded"] = image_scores(model, padded, threshold)[primary].to_numpy()
    out = {"aspect_ratio_only": {**_on_report(aspect_score, frame, n_boot, seed),
                                 "score": "width / height" if wider_is_tumour else "height / width",
                                 "direction_chosen_on": "validation scans"},
           "framing_only": {**_on_report(framing_score, frame, n_boot, seed),
                            "score": "head-box share" if tighter_is_tumour else "minus head-box share",
                            "direction_chosen_on": "validation scans"},
           "model": model_figures or _on_report(frame[primary], frame, n_boot, seed),
           "model_padded_to_square": _on_report(frame[f"{primary}_padded"], frame, n_boot, seed),
           "model_within_framing_strata": within_framing(
               frame.loc[rep, primary], frame.loc[rep, "label"], frame.loc[rep, "head_box_share"],
               frame.loc[rep, "dup_group"], n_boot, seed),
           "score": primary,
           **{f"{c}_median": {k: float(frame.loc[frame["label"] == lab, c].median())
                              for k, lab in (("tumour", 1), ("healthy", 0))}
              for c in ("aspect", "head_box_share")}}
    cols = ["name", "folder", "role", "label", "aspect", "head_box_share", primary, f"{primary}_padded"]
    return out, frame[cols]
