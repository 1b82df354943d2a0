"""Explaining the U-Net's tumour masks with captum, and checking the explanations.

**What is explained.** A segmentation net outputs a map, not a score. ``TumourScore``
wraps the U-Net so that it returns one number per image: the sum of the tumour
logits over a fixed region of that image, by default the mask the model itself
predicts (probability >= 0.5) on the unaltered image (``target="pred"``), or the
ground-truth tumour (``target="gt"``). When the predicted mask is empty the
ground truth is used instead, and the fallback is recorded.

**Methods** (all from ``captum.attr``, none hand-written):

* ``Grad-CAM (decoder 2)``: ``LayerGradCam`` on the decoder level at half the input
  resolution (``model.decoders[2]``), with the ReLU of the original Grad-CAM;
* ``Grad-CAM (bottleneck)``: ``LayerGradCam`` on the bottleneck (1/16 resolution);
  both are upsampled to the input size with ``LayerAttribution.interpolate`` (bilinear);
* ``Occlusion``: ``Occlusion`` with a square window of ``occlusion_frac`` of the side,
  stride half the window, occluded pixels set to 0 (black);
* ``Integrated gradients``: ``IntegratedGradients`` from a black image (all 0),
  ``ig_steps`` Gauss-Legendre steps.

Every map has the input's spatial shape (H, W) and is computed at the model's input
size (the run's ``image_size``).

**Checks** (are the maps about the tumour, or would a random map do as well?):

* *attribution mass*: the fraction of the absolute attribution that lies inside the
  ground-truth tumour. A map that knows nothing puts a fraction equal to the tumour's
  area fraction there (the expected random baseline); an actual uniform-noise map is
  scored too. Per method, the paired per-image difference to the expected baseline
  gets a percentile bootstrap 95% CI over images.
* *deletion*: pixels are replaced (by the image mean, or 0) in order of decreasing
  (signed) attribution, a growing fraction at a time (``DELETION_FRACTIONS``, up to
  half the image), and the predicted tumour area (pixels with probability >= 0.5) is
  measured, relative to the area on the intact image. The curve's normalised area
  (AUC; 1 = nothing changes, lower = the map found what the prediction rests on) is
  compared with random deletion orders (the mean of ``n_random`` permutations), again
  as a paired per-image difference with a bootstrap CI. Images whose intact prediction
  is empty have no area curve and are left out (counted); the summed tumour
  probability (a soft area, defined for every image) is scored the same way as a
  second measure. Ties in a map (Occlusion is blocky, Grad-CAM has ReLU zeros) are
  broken at random. The filled pixels are out of distribution: where they look like
  tumour to the model the curve *rises* (counted as ``images_grew``: above ``GROWTH``
  = 1.1x the intact value), so the table also gives the median paired difference and
  the share of images where the method's AUC is below the random order's.

A method *beats the random baseline* when the 95% CI of its paired difference lies
entirely on the good side of 0 (mass: above; deletion AUC: below) and the mean
difference is at least ``MIN_EFFECT`` (0.01, in mass fraction or in AUC), so that a
difference too small to matter (an untrained model whose output barely moves) is not
called a win.

As a reference that is not an explanation method, the model's own probability map is
scored with the same two checks ("Probability map (reference)").
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

with warnings.catch_warnings():  # captum imports tqdm.auto, which warns in kernels without ipywidgets
    warnings.filterwarnings("ignore", message="IProgress not found")
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion

from . import plots
from .evaluate import json_ready
from .loaders import to_float
from .train import predict_probabilities

GRADCAM_DECODER = "Grad-CAM (decoder 2)"
GRADCAM_BOTTLENECK = "Grad-CAM (bottleneck)"
OCCLUSION = "Occlusion"
INTEGRATED_GRADIENTS = "Integrated gradients"
METHODS = (GRADCAM_DECODER, GRADCAM_BOTTLENECK, OCCLUSION, INTEGRATED_GRADIENTS)
REFERENCE = "Probability map (reference)"
RANDOM = "Random order"
DELETION_FRACTIONS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5)
TARGETS = ("pred", "gt")
MIN_EFFECT = 0.01
GROWTH = 1.1   # a deletion curve above 1.1x its intact value: the fill itself looks like tumour
FILLS = ("mean", "zero")


class TumourScore(nn.Module):
    """``model`` -> one scalar per image: the sum of tumour logits over ``region``.

    ``region`` (N, 1, H, W), 0/1, is passed as captum's ``additional_forward_args``, so
    captum expands it together with the inputs (integrated-gradient steps, batched
    occlusions).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)[:, :1]
        return (logits * region).sum(dim=(1, 2, 3))


def gradcam_layers(model) -> dict[str, nn.Module]:
    """The layers Grad-CAM is computed on, by method name (a ``brainseg_lib.model.UNet``)."""
    return {GRADCAM_DECODER: model.decoders[2], GRADCAM_BOTTLENECK: model.bottleneck}


def model_device(model) -> torch.device:
    """The device of ``model``'s parameters (CPU for a parameter-free module)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def as_input(images_u8: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [0, 1], the model's input scale."""
    return to_float(torch.from_numpy(np.ascontiguousarray(images_u8))[:, None])


def target_regions(probs: np.ndarray, gts: np.ndarray | None, target: str = "pred",
                   threshold: float = 0.5) -> tuple[np.ndarray, list[str]]:
    """Per-image regions whose logits are summed, and which target each one is.

    ``target="pred"``: the predicted mask, or the ground truth where that is empty;
    ``"gt"``: the ground truth. Returns (regions (N, H, W) float32, ["pred"|"gt", ...]).
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {TARGETS}")
    regions, used = [], []
    for i, p in enumerate(probs):
        pred = p >= threshold
        if target == "pred" and pred.any():
            regions.append(pred)
            used.append("pred")
        else:
            if gts is None:
                raise ValueError("target 'gt' (or an empty prediction) needs ground-truth masks")
            regions.append(np.asarray(gts[i]).astype(bool))
            used.append("gt")
    return np.stack(regions).astype(np.float32), used


def occlusion_window(side: int, frac: float) -> tuple[int, int]:
    """(window, stride) of the occlusion square for an image side and a window fraction."""
    w = max(1, int(round(side * frac)))
    return w, max(1, w // 2)


def attribute(model, x: torch.Tensor, regions: np.ndarray, methods=METHODS, ig_steps: int = 32,
              occlusion_frac: float = 0.125, batch_size: int = 4) -> dict[str, np.ndarray]:
    """Attribution maps (N, H, W) float32 per method, for inputs (N, 1, H, W)."""
    model.eval()
    score = TumourScore(model).eval()
    # Grad-CAM layers only when asked for: a model without U-Net levels can still be explained
    layers = gradcam_layers(model) if {GRADCAM_DECODER, GRADCAM_BOTTLENECK} & set(methods) else {}
    h, w = x.shape[-2:]
    win, stride = occlusion_window(min(h, w), occlusion_frac)
    dev = model_device(model)
    x = x.to(dev)
    reg = torch.from_numpy(np.ascontiguousarray(regions, dtype=np.float32))[:, None].to(dev)
    out = {m: [] for m in methods}
    for i in range(0, len(x), batch_size):
        xb, rb = x[i:i + batch_size], reg[i:i + batch_size]
        for m in methods:
            if m in layers:
                a = LayerGradCam(score, layers[m]).attribute(
                    xb, additional_forward_args=(rb,), relu_attributions=True)
                a = LayerAttribution.interpolate(a, (h, w), interpolate_mode="bilinear")
            elif m == OCCLUSION:
                a = Occlusion(score).attribute(
                    xb, sliding_window_shapes=(1, win, win), strides=(1, stride, stride),
                    baselines=0.0, additional_forward_args=(rb,), perturbations_per_eval=16)
            elif m == INTEGRATED_GRADIENTS:
                a = IntegratedGradients(score).attribute(
                    xb, baselines=torch.zeros_like(xb), additional_forward_args=(rb,),
                    n_steps=ig_steps, internal_batch_size=8 * len(xb))
            else:
                raise ValueError(f"unknown method {m!r}; choose from {METHODS} or a Grad-CAM layer")
            out[m].append(a.detach()[:, 0].float().cpu().numpy())
    return {m: np.concatenate(v) if v else np.zeros((0, h, w), np.float32) for m, v in out.items()}


# ----------------------------------------------------------------------- check (a): mass
def mass_inside(attr: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the absolute attribution inside ``mask`` (NaN for an all-zero map)."""
    a = np.abs(np.asarray(attr, dtype=np.float64))
    total = a.sum()
    if not np.isfinite(total) or total <= 0:
        return float("nan")
    return float(a[np.asarray(mask).astype(bool)].sum() / total)


def attribution_mass(maps: dict[str, np.ndarray], gts: np.ndarray, names: list[str],
                     seed: int = 0, reference: np.ndarray | None = None) -> pd.DataFrame:
    """One row per (image, method): mass fraction inside the ground truth, the tumour's area
    fraction (the expected fraction of a map that knows nothing) and the fraction of an
    actual uniform-noise map (one per image, seeded)."""
    rng = np.random.default_rng(seed)
    gts = np.asarray(gts).astype(bool)
    random_maps = rng.random(gts.shape)
    rows = []
    items = list(maps.items()) + ([(REFERENCE, reference)] if reference is not None else [])
    for i, name in enumerate(names):
        area = float(gts[i].mean())
        rnd = mass_inside(random_maps[i], gts[i])
        for method, m in items:
            rows.append({"name": name, "method": method, "mass_inside_gt": mass_inside(m[i], gts[i]),
                         "tumour_area_fraction": area, "random_map_mass": rnd})
    return pd.DataFrame(rows)


def paired_ci(diff: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95):
    """Mean of paired differences and its percentile bootstrap CI over images (NaNs dropped)."""
    d = np.asarray(diff, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    a = (1 - level) / 2
    return float(d.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def mass_summary(per_image: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per method: mean mass inside the tumour, the two random baselines, and the paired
    difference to the expected baseline (area fraction) with its bootstrap 95% CI."""
    rows = []
    for method, g in per_image.groupby("method", sort=False):
        g = g[np.isfinite(g["mass_inside_gt"])]
        diff = (g["mass_inside_gt"] - g["tumour_area_fraction"]).to_numpy()
        d, lo, hi = paired_ci(diff, n_boot, seed)
        rows.append({
            "method": method, "images": int(len(g)),
            "mass_inside_gt": float(g["mass_inside_gt"].mean()),
            "expected_random": float(g["tumour_area_fraction"].mean()),
            "random_map": float(g["random_map_mass"].mean()),
            "diff_vs_expected": d, "diff_ci_low": lo, "diff_ci_high": hi,
            "ratio_to_expected": float(g["mass_inside_gt"].mean() / g["tumour_area_fraction"].mean())
            if len(g) else float("nan"),
            "beats_random": bool(np.isfinite(lo) and lo > 0 and d >= MIN_EFFECT),
        })
    return pd.DataFrame(rows)


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


# ----------------------------------------------------------------------- verdict
def verdict(mass: pd.DataFrame, deletion_tables: list[pd.DataFrame]) -> str:
    """Plain sentences, generated from the summary tables: which methods beat random."""
    def fmt(lst):
        return ", ".join(lst) if lst else "none"

    def winners(df):
        df = df[df["method"].isin(METHODS)]
        return [m for m, b in zip(df["method"], df["beats_random"]) if b]

    mass_m = mass[mass["method"].isin(METHODS)]
    wins = {"mass": winners(mass)}
    lines = [
        f"Attribution mass inside the tumour ({int(mass_m['images'].max()) if len(mass_m) else 0} "
        f"images): methods whose mass fraction exceeds the random baseline (the tumour's area "
        f"fraction, on average {mass_m['expected_random'].mean():.3f}; a uniform-noise map gets "
        f"{mass_m['random_map'].mean():.3f}) by at least {MIN_EFFECT} with a 95% CI above 0: "
        f"{fmt(wins['mass'])}; "
        f"not shown to beat it: {fmt([m for m in mass_m['method'] if m not in wins['mass']])}."]
    for dt in deletion_tables:
        d = dt[dt["method"].isin(METHODS)]
        if not len(d):
            continue
        measure = d["measure"].iloc[0]
        n = int(d["images"].max())
        if n == 0:
            lines.append(f"Deletion, {MEASURES[measure]}: no image has a non-empty intact value "
                         f"({int(d['images_left_out'].max())} left out), so this check is not possible here.")
            continue
        wins[measure] = winners(dt)
        lines.append(
            f"Deletion, {MEASURES[measure]} ({n} images, {int(d['images_left_out'].max())} left out): "
            f"methods whose deletion AUC is below that of random deletion orders (on average "
            f"{d['random_order_auc'].mean():.3f}) by at least {MIN_EFFECT} with a 95% CI below 0: "
            f"{fmt(wins[measure])}; "
            f"not shown to beat it: {fmt([m for m in d['method'] if m not in wins[measure]])}.")
        grew = curves_grew(d)
        if grew:
            lines.append(
                f"  Caution: deleting the most-attributed pixels made the {MEASURES[measure]} grow above "
                f"{GROWTH}x its intact value in some images ({grew}): the filled pixels themselves look "
                "like tumour to the model, which confounds this check (see median_diff and "
                "share_below_random in the table).")
    any_win = sorted({m for w in wins.values() for m in w}, key=METHODS.index)
    all_win = [m for m in METHODS if all(m in w for w in wins.values())]
    if not any_win:
        lines.append("Verdict: no method beats the random baseline on any check.")
    elif all_win:
        lines.append(f"Verdict: {fmt(all_win)} beat{'s' if len(all_win) == 1 else ''} the random "
                     f"baseline on every check made ({len(wins)}).")
    else:
        lines.append(f"Verdict: {fmt(any_win)} beat{'s' if len(any_win) == 1 else ''} the random "
                     "baseline on some checks, but no method beats it on every check made.")
    return "\n".join(lines)


def curves_grew(dele: pd.DataFrame) -> str:
    """'Method: k of n, ...' for the methods whose deletion curve rose above GROWTH in some image."""
    d = dele[dele["method"].isin(METHODS) & (dele["images_grew"] > 0)]
    return ", ".join(f"{m}: {k} of {n}" for m, k, n in zip(d["method"], d["images_grew"], d["images"]))


# ----------------------------------------------------------------------- cases and figures
def pick_cases(per_image: pd.DataFrame) -> dict[str, pd.Series]:
    """Three distinct TEST images from a run's per-image CSV: the highest Dice (true
    positive), the most false-positive pixels and the most false-negative pixels (both
    counted at model resolution, where every image has the same number of pixels)."""
    df = per_image.reset_index(drop=True)
    picks, used = {}, set()
    for label, col in (("true positive (best Dice)", "f1"),
                       ("false positives (most FP pixels)", "model_fp"),
                       ("false negatives (most FN pixels)", "model_fn")):
        order = df.sort_values([col, "name"], ascending=[False, True])
        row = order[~order["name"].isin(used)].iloc[0]
        picks[label] = row
        used.add(row["name"])
    return picks


@dataclass
class Explained:
    """Inputs, truth, prediction and maps of some images, for figures and checks."""
    names: list[str]
    images: np.ndarray          # uint8 (N, H, W)
    gts: np.ndarray             # uint8 (N, H, W)
    probs: np.ndarray           # float (N, H, W)
    targets: list[str]          # "pred" | "gt" per image
    maps: dict[str, np.ndarray]


def explain_arrays(model, arrays, names: list[str], target: str = "pred", ig_steps: int = 32,
                   occlusion_frac: float = 0.125, methods=METHODS) -> Explained:
    """Select ``names`` from SplitArrays ``arrays`` and compute every map for them."""
    index = {n: i for i, n in enumerate(arrays.names)}
    idx = [index[n] for n in names]
    images, gts = arrays.images[idx], arrays.masks[idx]
    x = as_input(images)
    probs = predict_probabilities(model, images, model_device(model), batch_size=64,
                                  channels_last=False)
    regions, used = target_regions(probs, gts, target)
    maps = attribute(model, x, regions, methods, ig_steps, occlusion_frac)
    return Explained(list(names), images, gts, probs, used, maps)


def overlay_figure(ex: Explained, titles: list[str]):
    """One row per image: the MRI with truth (red) and prediction (cyan) contours, then each
    method's map over the MRI (absolute value, scaled to its own maximum) with the truth contour."""
    methods = list(ex.maps)
    n, k = len(ex.names), len(methods) + 1
    fig, axes = plt.subplots(n, k, figsize=(2.6 * k, 2.8 * n), squeeze=False)
    for r in range(n):
        ax = axes[r, 0]
        ax.imshow(ex.images[r], cmap="gray")
        plots.draw_contours(ax, ex.gts[r], plots.TUMOUR)
        plots.draw_contours(ax, ex.probs[r] >= 0.5, plots.PRED)
        ax.set_title(titles[r], fontsize=7)
        for c, m in enumerate(methods, 1):
            a = np.abs(ex.maps[m][r])
            ax = axes[r, c]
            ax.imshow(ex.images[r], cmap="gray")
            ax.imshow(a / a.max() if a.max() > 0 else a, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            plots.draw_contours(ax, ex.gts[r], "white", lw=0.8)
            ax.set_title(f"{m}\nmass in tumour {mass_inside(a, ex.gts[r]):.2f}", fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    fig.suptitle("truth: red (white on maps), prediction: cyan; target of each map: "
                 + ", ".join(f"{n}={t}" for n, t in zip(ex.names, ex.targets)), fontsize=8)
    fig.tight_layout()
    return fig


def mass_figure(summary: pd.DataFrame):
    """Mean mass inside the tumour per method, against the two random baselines."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    xs = np.arange(len(summary))
    ax.bar(xs, summary["mass_inside_gt"], color="#4a90d9", label="method")
    ax.errorbar(xs, summary["expected_random"] + summary["diff_vs_expected"],
                yerr=[summary["diff_vs_expected"] - summary["diff_ci_low"],
                      summary["diff_ci_high"] - summary["diff_vs_expected"]],
                fmt="none", color="k", capsize=3, label="95% CI (paired vs expected)")
    ax.axhline(summary["expected_random"].mean(), color=plots.TUMOUR, ls="--",
               label="random: tumour area fraction")
    ax.scatter(xs, summary["random_map"], color="gray", marker="x", zorder=3, label="uniform-noise map")
    ax.set_xticks(xs, [m.replace(" (", "\n(") for m in summary["method"]], fontsize=7)
    ax.set_ylabel("fraction of |attribution| inside tumour")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def deletion_figure(curves: pd.DataFrame):
    """Mean relative curves against the deleted fraction, per ordering: predicted area (left,
    images with a non-empty intact prediction only) and summed probability (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, measure in zip(axes, MEASURES):
        ok = curves.groupby("name")[measure].transform(lambda s: bool(np.all(np.isfinite(s))))
        sub = curves[ok.astype(bool)]
        mean = sub.groupby(["method", "fraction"], sort=False)[measure].mean().reset_index()
        for method, g in mean.groupby("method", sort=False):
            style = dict(color="k", ls="--", lw=2) if method == RANDOM else \
                dict(color="gray", ls=":") if method == REFERENCE else {}
            ax.plot(g["fraction"], g[measure], marker=".", label=method, **style)
        ax.set_xlabel("fraction of pixels deleted (most attributed first)")
        ax.set_ylabel(f"{MEASURES[measure]} / intact")
        ax.set_title(f"{sub['name'].nunique()} images", fontsize=9)
        ax.set_ylim(bottom=0)
        if len(mean):
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------- the whole study
def sample_names(per_image: pd.DataFrame, n: int | None, seed: int = 0) -> list[str]:
    """``n`` image names drawn (seeded, without replacement) from a run's per-image CSV, in
    the CSV's order; all of them when n is None or larger."""
    names = list(per_image["name"])
    if n is None or n >= len(names):
        return names
    pick = np.sort(np.random.default_rng(seed).choice(len(names), size=n, replace=False))
    return [names[i] for i in pick]


@dataclass
class Checks:
    mass_per_image: pd.DataFrame
    mass: pd.DataFrame              # mass_summary
    curves: pd.DataFrame            # deletion curves, long
    deletion: pd.DataFrame          # deletion_summary for both measures, stacked
    text: str                       # verdict


def run_checks(model, ex: Explained, fill: str = "mean", seed: int = 0, n_random: int = 3,
               n_boot: int = 2000) -> Checks:
    """Both checks on the maps of ``ex`` (the probability map rides along as a reference)."""
    mass_pi = attribution_mass(ex.maps, ex.gts, ex.names, seed=seed, reference=ex.probs)
    mass = mass_summary(mass_pi, n_boot, seed)
    curves = deletion(model, as_input(ex.images), ex.maps, ex.names, fill=fill, n_random=n_random,
                      seed=seed, reference=ex.probs)
    dels = [deletion_summary(curves, m, n_boot, seed) for m in MEASURES]
    return Checks(mass_pi, mass, curves, pd.concat(dels, ignore_index=True), verdict(mass, dels))


def write_checks(checks: Checks, tables_dir) -> dict[str, str]:
    """results/tables/xai_attribution_mass.csv, xai_deletion.csv (summaries) and their
    per-image companions; returns {label: file name}."""
    from pathlib import Path
    from .evaluate import write_csv
    out = Path(tables_dir)
    files = {"attribution_mass": "xai_attribution_mass.csv", "deletion": "xai_deletion.csv",
             "attribution_mass_per_image": "xai_attribution_mass_per_image.csv",
             "deletion_curves": "xai_deletion_curves.csv"}
    write_csv(checks.mass, out / files["attribution_mass"])
    write_csv(checks.deletion, out / files["deletion"])
    write_csv(checks.mass_per_image, out / files["attribution_mass_per_image"])
    write_csv(checks.curves, out / files["deletion_curves"])
    return files


def records(df: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts (NaN -> None, numpy scalars -> Python)."""
    return json_ready(df.to_dict("records"))
