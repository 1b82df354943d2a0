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

import numpy as np
import pandas as pd
import torch
from torch import nn

from brainseg_lib.data.loaders import to_float
from brainseg_lib.evaluation.bootstrap import (
    N_BOOT,
    bootstrap_stat,
    ci_quantiles,
    percentile_ci,
)
from brainseg_lib.inference import model_device

with warnings.catch_warnings():  # captum imports tqdm.auto, which warns in kernels without ipywidgets
    warnings.filterwarnings("ignore", message="IProgress not found")
    from captum.attr import (
        IntegratedGradients,
        LayerAttribution,
        LayerGradCam,
        Occlusion,
    )

GRADCAM_DECODER = "Grad-CAM (decoder 2)"
GRADCAM_BOTTLENECK = "Grad-CAM (bottleneck)"
OCCLUSION = "Occlusion"
INTEGRATED_GRADIENTS = "Integrated gradients"
REFERENCE = "Probability map (reference)"
RANDOM = "Random order"
METHODS = (GRADCAM_DECODER, GRADCAM_BOTTLENECK, OCCLUSION, INTEGRATED_GRADIENTS)
TARGETS = ("pred", "gt")
MIN_EFFECT = 0.01


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


def paired_ci(diff: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95):
    """Mean of paired differences and its percentile bootstrap CI over images (NaNs dropped)."""
    d = np.asarray(diff, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan"), float("nan"), float("nan")
    means = bootstrap_stat(d, lambda r: r.mean(axis=1), n_boot, seed)
    return (float(d.mean()), *percentile_ci(means, ci_quantiles(level)))


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
