"""Boundary metrics per image: HD95 and normalised surface distance (NSD), by MONAI.

Both compare the outline of the predicted mask with the outline of the true mask, in
pixels of the image's own (native) resolution:

* **HD95**: the 95th percentile of the symmetric outline-to-outline distances
  (``monai.metrics.compute_hausdorff_distance(percentile=95)``); lower is better.
* **NSD at tolerance tau**: the share of both outlines lying within tau pixels of the
  other outline (``monai.metrics.compute_surface_dice``, Nikolov et al. 2021); 1 is
  perfect. ``NSD_TOLERANCE_PX`` = 2 pixels.

**Empty-mask rule.** Boundary metrics are computed for every image whose true mask
holds a tumour. An image without tumour has no outline to compare with: both metrics
are left empty (NaN) and no aggregate counts it (its false alarms are counted by the
pixel metrics and the clean-slice rate instead). A tumour image with an empty
prediction gets the worst values: HD95 = the image diagonal in pixels, NSD = 0.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

NSD_TOLERANCE_PX = 2.0
BOUNDARY_METRICS = ("hd95", "nsd")


def _one_hot(mask: np.ndarray) -> torch.Tensor:
    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))
    return torch.stack([~m, m])[None].float()


def boundary_metrics(pred, truth, tolerance: float = NSD_TOLERANCE_PX) -> dict[str, float]:
    """``{"hd95", "nsd"}`` of one binary prediction against its truth (same 2-D shape),
    with the empty-mask rule of the module docstring."""
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice
    p, t = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} != truth shape {t.shape}")
    if not t.any():
        return {"hd95": math.nan, "nsd": math.nan}
    if not p.any():
        return {"hd95": float(math.hypot(*t.shape)), "nsd": 0.0}
    yp, yt = _one_hot(p), _one_hot(t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # MONAI's deprecation notes on its own internals
        hd = float(compute_hausdorff_distance(yp, yt, include_background=False, percentile=95)[0, 0])
        nsd = float(compute_surface_dice(yp, yt, class_thresholds=[float(tolerance)],
                                         include_background=False)[0, 0])
    return {"hd95": hd, "nsd": nsd}


def summarize_boundary(per_image) -> dict:
    """Mean, median and count of HD95 and NSD over the images where they are defined."""
    out = {}
    for k in BOUNDARY_METRICS:
        v = per_image[k].dropna().to_numpy(dtype=float) if k in per_image else np.array([])
        out[k] = {"mean": float(v.mean()) if len(v) else None,
                  "median": float(np.median(v)) if len(v) else None, "n_images": int(len(v))}
    out["nsd_tolerance_px"] = NSD_TOLERANCE_PX
    return out
