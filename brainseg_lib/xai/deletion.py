"""Deletion curves: remove the most-attributed pixels first and watch the predicted tumour
shrink, against a random order and the probability map itself; AUCs and paired CIs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from brainseg_lib.inference import model_device
from brainseg_lib.xai.attribution import (
    METHODS,
    MIN_EFFECT,
    RANDOM,
    REFERENCE,
    paired_ci,
)

DELETION_FRACTIONS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5)
GROWTH = 1.1   # a deletion curve above 1.1x its intact value: the fill itself looks like tumour
FILLS = ("mean", "zero")


# ----------------------------------------------------------------------- check (b): deletion
def deletion_order(attr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat pixel indices from most to least attributed (signed), ties in random order."""
    a = np.asarray(attr, dtype=np.float64).ravel()
    return np.lexsort((rng.random(a.size), -a))


def fill_value(image: torch.Tensor, fill: str) -> float:
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; choose one of {FILLS}")
    return float(image.mean()) if fill == "mean" else 0.0


@torch.no_grad()
def deletion_curve(model, image: torch.Tensor, order: np.ndarray, fractions=DELETION_FRACTIONS,
                   fill: str = "mean", threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Predicted tumour area (pixels with p >= threshold) and summed probability after
    deleting the first ``round(f * H * W)`` pixels of ``order``, for each fraction f.

    ``image`` is one float input (1, H, W). Returns (areas, probability sums).
    """
    image = image.detach().cpu()
    c, h, w = image.shape
    n = h * w
    batch = image.repeat(len(fractions), 1, 1, 1).reshape(len(fractions), c, n)
    value = fill_value(image, fill)
    for k, f in enumerate(fractions):
        idx = torch.from_numpy(np.ascontiguousarray(order[:int(round(f * n))]))
        batch[k, :, idx] = value
    x = batch.reshape(len(fractions), c, h, w).to(model_device(model))
    p = torch.sigmoid(model(x)[:, 0]).float().cpu()
    return (p >= threshold).sum(dim=(1, 2)).numpy().astype(np.int64), p.sum(dim=(1, 2)).numpy()


def curve_auc(fractions, values) -> float:
    """Normalised area under a curve over ``fractions`` (trapezoid / fraction range)."""
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def deletion(model, x: torch.Tensor, maps: dict[str, np.ndarray], names: list[str],
             fractions=DELETION_FRACTIONS, fill: str = "mean", n_random: int = 3, seed: int = 0,
             reference: np.ndarray | None = None, threshold: float = 0.5) -> pd.DataFrame:
    """Deletion curves, one row per (image, ordering, fraction): ``area`` (pixels), ``rel_area``
    (area / area on the intact image; NaN when that is 0), ``prob_sum`` (summed tumour
    probability, a soft area) and ``rel_prob`` (prob_sum / its intact value). The
    ``Random order`` rows are the mean of ``n_random`` random permutations."""
    model.eval()
    rng = np.random.default_rng(seed)
    items = list(maps.items()) + ([(REFERENCE, reference)] if reference is not None else [])
    rows = []
    for i, name in enumerate(names):
        curves = {}
        for method, m in items:
            curves[method] = deletion_curve(model, x[i], deletion_order(m[i], rng), fractions,
                                            fill, threshold)
        rand = [deletion_curve(model, x[i], rng.permutation(x[i].numel()), fractions, fill, threshold)
                for _ in range(n_random)]
        curves[RANDOM] = (np.mean([r[0] for r in rand], axis=0), np.mean([r[1] for r in rand], axis=0))
        for method, (area, psum) in curves.items():
            base, pbase = float(area[0]), float(psum[0])
            for f, a, s in zip(fractions, area, psum):
                rows.append({"name": name, "method": method, "fraction": float(f), "area": float(a),
                             "rel_area": float(a) / base if base > 0 else float("nan"),
                             "prob_sum": float(s),
                             "rel_prob": float(s) / pbase if pbase > 0 else float("nan")})
    return pd.DataFrame(rows)


MEASURES = {"rel_area": "predicted tumour area (p >= 0.5)",
            "rel_prob": "summed tumour probability (soft area)"}


def deletion_aucs(curves: pd.DataFrame, measure: str = "rel_area") -> pd.DataFrame:
    """Per (image, method): the normalised AUC of the relative curve of ``measure``
    (``rel_area``, or ``rel_prob``); NaN when the intact value is 0 (empty prediction)."""
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; choose one of {tuple(MEASURES)}")
    rows = []
    for (name, method), g in curves.groupby(["name", "method"], sort=False):
        g = g.sort_values("fraction")
        y = g[measure].to_numpy()
        auc = curve_auc(g["fraction"], y) if np.all(np.isfinite(y)) else float("nan")
        rows.append({"name": name, "method": method, "auc": auc})
    return pd.DataFrame(rows)


def deletion_summary(curves: pd.DataFrame, measure: str = "rel_area", n_boot: int = 2000,
                     seed: int = 0) -> pd.DataFrame:
    """Per method: mean deletion AUC of ``measure``, the random order's mean AUC on the same
    images, and the paired difference (method - random; negative = falls faster than random)
    with a bootstrap 95% CI. Images whose intact value is 0 are left out and counted."""
    aucs = deletion_aucs(curves, measure)
    wide = aucs.pivot(index="name", columns="method", values="auc")
    wide = wide[np.isfinite(wide[RANDOM])]
    n_empty = int(aucs["name"].nunique() - len(wide))
    peak = curves.groupby(["name", "method"])[measure].max().unstack().reindex(wide.index)
    rows = []
    for method in [m for m in aucs["method"].unique() if m != RANDOM]:
        diff = (wide[method] - wide[RANDOM]).to_numpy()
        d, lo, hi = paired_ci(diff, n_boot, seed)
        rows.append({"measure": measure, "method": method, "images": int(len(wide)),
                     "images_left_out": n_empty,
                     "deletion_auc": float(wide[method].mean()) if len(wide) else float("nan"),
                     "random_order_auc": float(wide[RANDOM].mean()) if len(wide) else float("nan"),
                     "diff_vs_random": d, "diff_ci_low": lo, "diff_ci_high": hi,
                     "median_diff": float(np.median(diff)) if len(diff) else float("nan"),
                     "share_below_random": float(np.mean(diff < 0)) if len(diff) else float("nan"),
                     "images_grew": int((peak[method] > GROWTH).sum()) if len(wide) else 0,
                     "beats_random": bool(np.isfinite(hi) and hi < 0 and d <= -MIN_EFFECT)})
    return pd.DataFrame(rows)


def curves_grew(dele: pd.DataFrame) -> str:
    """'Method: k of n, ...' for the methods whose deletion curve rose above GROWTH in some image."""
    d = dele[dele["method"].isin(METHODS) & (dele["images_grew"] > 0)]
    return ", ".join(f"{m}: {k} of {n}" for m, k, n in zip(d["method"], d["images_grew"], d["images"]))
