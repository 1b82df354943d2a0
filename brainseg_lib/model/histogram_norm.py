"""Histogram standardisation inside the model (``input_norm: nyul_zscore``, issue 24).

The torch form of ``data.standardize`` (Nyul & Udupa 1999), on float images in [0, 1]
(B, 1, S, S), so that training, ``predict``, the study's scoring and the ONNX export apply it the
same way: each image's head pixels (above ``intensity.HEAD_LEVEL``) are mapped piecewise-linearly
from the image's own percentiles (``data.standardize.LEVELS``, linear interpolation, as
``numpy.percentile``) onto the model's ``reference`` percentiles (a buffer, the mean of its TRAIN
scans' percentiles, set when it is built for training), from the head level up to 1; the
background is left as it is, and an image without head pixels comes back unchanged.

Written with sort, gather, maxima and clamps only (no searchsorted, quantile or cummax), which ONNX opset 18
exports. Since the mapping is monotone and lands on the same percentiles whatever the scan's grey
levels were, a model with it is blind to any monotone remapping of a scan's head intensities
(up to the piecewise-linear fit), which the ``mri`` augmentation's histogram shift only teaches.

**In training** the U-Net leaves this step out (``model.training``): the training augmentation's
brightness and contrast shifts lift a black background above the head level, which would make
the whole background count as head. ``training.engine`` standardises the uint8 TRAIN scans once,
before augmentation, with the same reference (``data.standardize``); in eval mode (validation,
scoring, ``predict``, the ONNX export) the model standardises its input itself.
"""
from __future__ import annotations

import torch

from brainseg_lib.data.intensity import HEAD_LEVEL
from brainseg_lib.data.standardize import LEVELS

STEP = 1e-5        # keeps the knots strictly increasing (ties moved up), in [0, 1] units


def head_percentiles(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, len(LEVELS)) percentiles of each image's head pixels, and (B,) whether it has any."""
    flat = x.reshape(x.shape[0], -1)
    head = flat > HEAD_LEVEL
    n = head.sum(dim=1, keepdim=True)                                       # (B, 1)
    ordered = torch.sort(torch.where(head, flat, torch.full_like(flat, float("inf"))), dim=1).values
    q = torch.tensor(LEVELS, dtype=flat.dtype, device=flat.device) / 100.0
    last = (n - 1).clamp(min=0).to(flat.dtype)
    pos = q.unsqueeze(0) * last                                             # (B, K)
    lo = pos.floor()
    hi = torch.minimum(lo + 1, last)
    frac = pos - lo
    vlo = torch.gather(ordered, 1, lo.long())
    vhi = torch.gather(ordered, 1, hi.long())
    return vlo + (vhi - vlo) * frac, n.squeeze(1) > 0


def knots(marks: torch.Tensor) -> torch.Tensor:
    """(B, K+2): the head level, ``marks`` clamped into (head level, 1), and 1, made strictly increasing."""
    b, k = marks.shape
    lo = torch.full((b, 1), HEAD_LEVEL, dtype=marks.dtype, device=marks.device)
    hi = torch.ones((b, 1), dtype=marks.dtype, device=marks.device)
    pts = torch.cat([lo, marks.clamp(HEAD_LEVEL, 1.0), hi], dim=1)
    cols = [pts[:, :1]]
    for j in range(1, k + 2):                  # a running max (cummax has no ONNX export)
        cols.append(torch.maximum(pts[:, j:j + 1], cols[-1] + STEP))       # ties -> STEP apart
    return torch.cat(cols, dim=1)


def standardise_head(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``x`` (B, 1, S, S) in [0, 1] with its head pixels mapped onto ``reference`` (module doc),
    computed in float32 (half precision cannot hold the knots' spacing), returned in x's dtype."""
    dtype, x = x.dtype, x.float()
    marks, has_head = head_percentiles(x)
    src = knots(marks)                                                      # (B, K+2)
    dst = knots(reference.float().unsqueeze(0).expand_as(marks))
    width = src[:, 1:] - src[:, :-1]                                        # (B, K+1), > 0
    slope = (dst[:, 1:] - dst[:, :-1]) / width
    flat = x.reshape(x.shape[0], -1, 1)                                     # (B, N, 1)
    part = torch.minimum(torch.relu(flat - src[:, None, :-1]), width[:, None, :])
    mapped = dst[:, :1] + (part * slope[:, None, :]).sum(-1)                  # (B, N)
    keep = (flat.squeeze(-1) <= HEAD_LEVEL) | ~has_head[:, None]
    return torch.where(keep, flat.squeeze(-1), mapped).reshape_as(x).to(dtype)
