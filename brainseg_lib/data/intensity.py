"""Intensity augmentation that spans MRI sequences (the ``mri`` augment level, issue 24).

Br35H holds mostly one look of a brain slice; a user's scans come from other sequences (FLAIR,
T1 with contrast) in which the same tissue is brighter, darker or inverted, under a smooth
coil shading. Three batch transforms, on float images in [0, 1] (B, 1, S, S), each applied to
an image with its own probability and drawing every random number from the batch's
``torch.Generator`` (so a run, or a resumed run, sees the same batches):

* ``histogram_shift``: a random monotone piecewise-linear remapping of intensities through
  ``n_points`` control points whose outputs are jittered by up to ``jitter`` of their gap,
  then sorted (so the mapping stays monotone), the ends kept at 0 and 1 (as MONAI's ``RandHistogramShift``; re-written here so the draws come
  from our generator);
* ``bias_field``: a smooth multiplicative field ``exp(poly2(x, y))`` with coefficients uniform
  in [-coeff, coeff] (as MONAI's ``RandBiasField`` of degree 2);
* ``invert_head``: the intensities inside the head (above ``HEAD_LEVEL``) inverted, the
  background left black: bright tumour on dark tissue becomes dark on bright, and back.

The mask is never changed by these.
"""
from __future__ import annotations

import torch

HEAD_LEVEL = 0.05   # an image's pixels above this (of its [0, 1] range) count as head


def _chosen(b: int, p: float, gen: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(b, generator=gen) < p).to(device).view(b, 1, 1, 1)


def histogram_shift(x: torch.Tensor, p: float, n_points: int, jitter: float,
                    gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    on = _chosen(b, p, gen, x.device)
    ref = torch.linspace(0.0, 1.0, n_points)
    gap = 1.0 / (n_points - 1)
    shift = (torch.rand(b, n_points, generator=gen) * 2 - 1) * jitter * gap
    shift[:, 0] = 0.0
    shift[:, -1] = 0.0
    out_pts = torch.sort((ref + shift).clamp(0, 1), dim=1).values.to(x.device, x.dtype)  # monotone
    flat = x.reshape(b, -1).clamp(0, 1)
    idx = torch.clamp((flat / gap).long(), max=n_points - 2)              # segment of each pixel
    lo, hi = torch.gather(out_pts, 1, idx), torch.gather(out_pts, 1, idx + 1)
    frac = flat / gap - idx.to(x.dtype)
    mapped = (lo + (hi - lo) * frac).reshape_as(x)
    return torch.where(on, mapped, x)


def bias_field(x: torch.Tensor, p: float, coeff: float, gen: torch.Generator) -> torch.Tensor:
    b, s = x.shape[0], x.shape[-1]
    on = _chosen(b, p, gen, x.device)
    c = ((torch.rand(b, 5, generator=gen) * 2 - 1) * coeff).to(x.device, x.dtype)
    t = torch.linspace(-1.0, 1.0, s, device=x.device, dtype=x.dtype)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    basis = torch.stack([xx, yy, xx * xx, yy * yy, xx * yy])                # (5, S, S)
    field = torch.exp(torch.einsum("bk,kij->bij", c, basis)).unsqueeze(1)
    return torch.where(on, (x * field).clamp(0, 1), x)


def invert_head(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    on = _chosen(b, p, gen, x.device)
    head = x > HEAD_LEVEL
    inverted = torch.where(head, (1.0 + HEAD_LEVEL - x).clamp(0, 1), torch.zeros_like(x))
    return torch.where(on, inverted, x)
