"""Detection figures: ROC curves, the confusion matrix, score histograms, and galleries of
missed tumours and false alarms.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from brainseg_lib.data.br35h import data_root
from brainseg_lib.data.images import read_grayscale, resize_image
from brainseg_lib.detection.roc import roc_points
from brainseg_lib.detection.scores import SCORES
from brainseg_lib.detection.tables import _num
from brainseg_lib.inference import predict_probabilities
from brainseg_lib.report import plots

SCORE_WORDS = {"area_frac": "predicted tumour area", "max_prob": "highest tumour probability"}


# --------------------------------------------------------------------- figures (from the CSV)
def roc_figure(scores: pd.DataFrame, summary: dict):
    """ROC curves of both scores on the report images, with each val-chosen operating point."""
    rep = scores[scores["role"] == "report"]
    fig, ax = plt.subplots(figsize=(6, 6.2))
    for k, color in zip(SCORES, ("#4a90d9", "#e67e22")):
        fpr, tpr, _ = roc_points(rep[k], rep["label"])
        m = summary["report"]["all"][k]
        tag = " (the score used)" if k == summary["primary_score"] else ""
        ax.plot(fpr, tpr, color=color, label=f"{SCORE_WORDS.get(k, k)}{tag}: AUC {_num(m['auc']):.3f}")
        ax.scatter([1 - _num(m["specificity"])], [_num(m["sensitivity"])], color=color, edgecolor="k", zorder=3,
                   label=f"cut-off chosen on validation:\n{threshold_words(k, m['threshold'], summary.get('image_size'))}")
    ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=0.8)
    ax.set_xlabel("1 - specificity (false-alarm rate)")
    ax.set_ylabel("sensitivity")
    ax.set_title(f"{len(rep)} unseen scans ({int(rep['label'].sum())} tumour)", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.tight_layout()
    return fig


def threshold_words(score: str, t: float, image_size: int | None = None) -> str:
    """A detection cut-off in words: ``area_frac`` as the fewest pixels predicted tumour of the
    ``image_size`` x ``image_size`` the model sees (and its share), ``max_prob`` as a probability."""
    if score == "area_frac" and image_size:
        n = max(1, math.ceil(t * image_size * image_size - 1e-9))
        return (f"tumour if {n} or more of its {image_size}x{image_size} pixels are predicted "
                f"tumour ({100 * t:.2g}%)")
    if score == "area_frac":
        return f"tumour if {100 * t:.2g}% or more of its pixels are predicted tumour"
    if score == "max_prob":
        return f"tumour if any pixel's probability reaches {t:.3g}"
    return f"{score} >= {t:.4g}"


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
    ax.set_title(threshold_words(summary["primary_score"], m["threshold"], summary.get("image_size")),
                 fontsize=9, wrap=True)
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


def wrong_rows(scores: pd.DataFrame, summary: dict, kind: str) -> pd.DataFrame:
    """Every report image the primary score gets wrong: ``missed`` tumours (lowest scores
    first) or ``false_alarms`` (highest scores first)."""
    k = summary["primary_score"]
    t = summary["report"]["all"][k]["threshold"]
    rep = scores[scores["role"] == "report"]
    if kind == "missed":
        return rep[(rep["label"] == 1) & (rep[k] < t)].sort_values([k, "max_prob"], ascending=True)
    if kind == "false_alarms":
        return rep[(rep["label"] == 0) & (rep[k] >= t)].sort_values([k, "max_prob"], ascending=False)
    raise ValueError("kind is 'missed' or 'false_alarms'")


def gallery_rows(scores: pd.DataFrame, summary: dict, kind: str, n: int = 8) -> pd.DataFrame:
    """The first ``n`` of ``wrong_rows``, one scan per near-duplicate group (``dup_group``,
    where the table has it): copies of one slice would otherwise fill the gallery."""
    sel = wrong_rows(scores, summary, kind)
    if "dup_group" in sel:
        sel = sel.drop_duplicates("dup_group")
    return sel.head(n)


def gallery_note(scores: pd.DataFrame, summary: dict, kind: str, n: int = 8) -> str:
    """A sentence under a gallery of ``n`` (``gallery_rows``): how many scans are wrong, in how
    many near-duplicate groups, how many of those the gallery shows, and what the largest group
    holds (its wrong scans of all its report scans)."""
    rows = wrong_rows(scores, summary, kind)
    what = ("missed tumour" if kind == "missed" else "false alarm") + ("s" if len(rows) != 1 else "")
    if not len(rows):
        return f"There are no {what} at this threshold."
    if "dup_group" not in rows:
        return f"{len(rows)} {what}."
    sizes = rows["dup_group"].value_counts()
    shown = gallery_rows(scores, summary, kind, n)
    s = (f"{len(rows)} {what} on the report scans, in {len(sizes)} near-duplicate group"
         + ("s" if len(sizes) != 1 else "") + f"; the gallery shows one scan of each of the first "
         f"{len(shown)}.")
    top, share = int(sizes.iloc[0]), sizes.iloc[0] / len(rows)
    if top > 1:
        group = sizes.index[0]
        copies = int(((scores["role"] == "report") & (scores["dup_group"] == group)).sum())
        first = rows.loc[rows["dup_group"] == group, "name"].iloc[0]
        where = "is shown" if first in set(shown["name"]) else "is not among those shown"
        s += (f" The largest group holds {top} of them ({share:.0%}): {top} of its {copies} report scans, "
              f"copies of one slice (`{first}` {where})" + (", so the count rests largely on that slice."
                                                            if share >= 1 / 3 else "."))
        if share >= 1 / 3:
            verb = "marks" if kind == "false_alarms" else "misses"
            s += (f" A slice the model {verb} in nearly every copy is worth checking for a wrong label: "
                  "Br35H's labels are its folder names, with no record of who assigned them.")
    return s


def gallery(rows: pd.DataFrame, model, image_size: int, title: str, root=None, ncols: int = 4,
            threshold: float = 0.5):
    """The scans of ``rows`` with the predicted tumour outline (cyan), at native size."""
    from brainseg_lib.inference import to_native
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
        pred = to_native(p, *img.shape) >= threshold
        plots.draw_contours(ax, pred, plots.PRED)
        plots.note_no_prediction(ax, pred)
        dup = " near-dup" if getattr(r, "near_dup_train", False) else ""
        ax.set_title(f"{r.folder}/{r.name}{dup}\narea {r.area_frac:.4f}, max p {r.max_prob:.3f}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
