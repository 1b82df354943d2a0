"""Boundary metrics per image: HD95 and normalised surface distance (NSD), by MONAI.

Both compare the outline of the predicted mask with the outline of the true mask, in
pixels of the image's own (native) resolution:

* **HD95**: the 95th percentile of the symmetric outline-to-outline distances
  (``monai.metrics.compute_hausdorff_distance(percentile=95)``); lower is better.
* **NSD at tolerance tau**: the share of both outlines lying within tau pixels of the
  other outline (``monai.metrics.compute_surface_dice``, Nikolov et al. 2021); 1 is
  perfect. ``NSD_TOLERANCE_PX`` = 2 pixels.

**On a common scale.** Br35H's images run from under 200 to over 1,200 pixels a side, so a
distance in native pixels, and a tolerance of 2 pixels, partly measure image size. Beside the
pixel figures every image therefore gets two scale-free ones: ``hd95_diag``, HD95 as a share of
the image diagonal, and ``nsd_diag``, NSD at a tolerance of ``NSD_TOLERANCE_DIAG`` (1%) of the
diagonal.

**Empty-mask rule.** Boundary metrics are computed for every image whose true mask
holds a tumour. An image without tumour has no outline to compare with: both metrics
are left empty (NaN) and no aggregate counts it (its false alarms are counted by the
pixel metrics and the clean-slice rate instead). A tumour image with an empty
prediction gets the worst values: HD95 = the image diagonal in pixels, NSD = 0; its
``hd95_diag`` is left empty instead, and ``summarize_boundary`` counts such **missed** tumours
apart, so a miss never hides inside an HD95 average (``nsd_diag`` is 0, as ``nsd``).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

NSD_TOLERANCE_PX = 2.0
NSD_TOLERANCE_DIAG = 0.01          # the scale-free NSD's tolerance, a share of the image diagonal
BOUNDARY_METRICS = ("hd95", "nsd", "hd95_diag", "nsd_diag")
EMPTY = dict.fromkeys(BOUNDARY_METRICS, math.nan)


def _one_hot(mask: np.ndarray) -> torch.Tensor:
    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))
    return torch.stack([~m, m])[None].float()


def boundary_metrics(pred, truth, tolerance: float = NSD_TOLERANCE_PX) -> dict[str, float]:
    """``{"hd95", "nsd", "hd95_diag", "nsd_diag"}`` of one binary prediction against its truth
    (same 2-D shape), with the empty-mask rule of the module docstring."""
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice
    p, t = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} != truth shape {t.shape}")
    if not t.any():
        return dict(EMPTY)
    diag = float(math.hypot(*t.shape))
    if not p.any():
        return {"hd95": diag, "nsd": 0.0, "hd95_diag": math.nan, "nsd_diag": 0.0}
    yp, yt = _one_hot(p), _one_hot(t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # MONAI's deprecation notes on its own internals
        hd = float(compute_hausdorff_distance(yp, yt, include_background=False, percentile=95)[0, 0])
        nsd = compute_surface_dice(yp, yt, class_thresholds=[float(tolerance)], include_background=False)
        nsd_rel = compute_surface_dice(yp, yt, class_thresholds=[NSD_TOLERANCE_DIAG * diag],
                                       include_background=False)
    return {"hd95": hd, "nsd": float(nsd[0, 0]), "hd95_diag": hd / diag, "nsd_diag": float(nsd_rel[0, 0])}


def summarize_boundary(per_image) -> dict:
    """Mean, median and count of each boundary metric over the images where it is defined
    (``hd95_diag``: tumour images with a prediction only), and ``missed``: the tumour images
    with nothing predicted (a defined ``nsd`` and an empty ``hd95_diag``)."""
    out = {}
    for k in BOUNDARY_METRICS:
        v = per_image[k].dropna().to_numpy(dtype=float) if k in per_image else np.array([])
        out[k] = {"mean": float(v.mean()) if len(v) else None,
                  "median": float(np.median(v)) if len(v) else None, "n_images": int(len(v))}
    if "hd95_diag" in per_image:
        out["missed"] = int((per_image["nsd"].notna() & per_image["hd95_diag"].isna()).sum())
    out["nsd_tolerance_px"] = NSD_TOLERANCE_PX
    out["nsd_tolerance_diag"] = NSD_TOLERANCE_DIAG
    return out


def scale_free_from_per_image(per_image) -> dict:
    """The common-scale figures of ``summarize_boundary`` that a run scored before they existed
    can still give, from its per-image table (native size, predicted pixels, HD95 in pixels):
    ``missed`` (tumour images with nothing predicted) and ``hd95_diag`` over the tumours found.
    NSD at a share of the diagonal needs the masks again, so it is not given."""
    t = per_image[per_image["tumour_pixels"] > 0]
    found = t[t["pred_pixels"] > 0]
    share = found["hd95"] / np.hypot(found["native_h"], found["native_w"])
    return {"missed": int((t["pred_pixels"] == 0).sum()),
            "hd95_diag": {"mean": float(share.mean()), "median": float(share.median()),
                          "n_images": int(share.notna().sum())}}
