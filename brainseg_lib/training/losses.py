"""Losses on logits, always computed in float32.

The paper trains "using binary cross-entropy loss, as well as a combination of
binary cross-entropy loss functions". We read the second as the usual
BCE + soft-Dice sum (equal weights), and offer both:

* ``bce``      mean binary cross-entropy over all pixels of the batch;
* ``dice``     1 - soft Dice, with the sums taken over the whole batch and
               smoothing ``eps=1`` in numerator and denominator;
* ``bce_dice`` ``bce + dice``;
* ``bce_dice_img`` ``bce`` + the mean over the batch's tumour images of each image's own soft
               Dice loss (eps 1): a 30-pixel tumour weighs as much as a 3,000-pixel one, where the
               batch-wide Dice lets large tumours dominate (a lever against missed small
               tumours, issue 24). Tumour-free images enter through the BCE only; a batch
               without a tumour adds no Dice term. Not available for data-parallel training;
               its validation loss (``loss_from_sums``) is reported with the batch-wide Dice.
* ``bce_dice_img_all`` ``bce`` + the mean over ALL the batch's images of each image's own soft
               Dice loss (eps 1), tumour-free images included: such an image's term is
               1 - 1 / (sum of p + 1), so any predicted mass on it costs up to 1 (MONAI's
               ``DiceLoss(sigmoid=True, batch=False, smooth_nr=1, smooth_dr=1)``). The per-image
               weight of small tumours is kept and predictions on tumour-free scans are paid for
               (a lever against the false alarms of ``bce_dice_img``, issue 24). Same limits as
               ``bce_dice_img``.

Logits are cast to float32 before any reduction: under CUDA autocast the
soft-Dice sums over 50 x 256 x 256 pixels overflow float16.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

LOSSES = ("bce", "dice", "bce_dice", "bce_dice_img", "bce_dice_img_all")
PER_IMAGE = ("bce_dice_img", "bce_dice_img_all")   # per-image Dice: no data-parallel sums


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0,
                   reduce_sums=None) -> torch.Tensor:
    """1 - soft Dice over the batch. ``reduce_sums`` (data-parallel training) maps the stacked
    (intersection, prediction, target) sums of this process to those of the global batch."""
    p = torch.sigmoid(logits.float())
    t = target.float()
    inter, p_sum, t_sum = (p * t).sum(), p.sum(), t.sum()
    if reduce_sums is not None:
        inter, p_sum, t_sum = reduce_sums(torch.stack([inter, p_sum, t_sum]))
    return dice_from_sums(inter, p_sum, t_sum, eps)


def dice_from_sums(inter, p_sum, t_sum, eps: float = 1.0):
    """1 - soft Dice from its sums: intersection, prediction and target (tensors or floats)."""
    return 1.0 - (2.0 * inter + eps) / (p_sum + t_sum + eps)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, reduce_sums=None) -> torch.Tensor:
    return bce_loss(logits, target) + soft_dice_loss(logits, target, reduce_sums=reduce_sums)


def per_image_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0,
                        tumour_free: bool = False) -> torch.Tensor:
    """Mean of 1 - soft Dice of each image: over the images with any tumour pixel (0 when the
    batch holds none), or over every image with ``tumour_free``."""
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    if not tumour_free:
        has = t.sum(1) > 0
        if not bool(has.any()):
            return p.sum() * 0.0
        p, t = p[has], t[has]
    return dice_from_sums((p * t).sum(1), p.sum(1), t.sum(1), eps).mean()


def bce_dice_img_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return bce_loss(logits, target) + per_image_dice_loss(logits, target)


def bce_dice_img_all_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return bce_loss(logits, target) + per_image_dice_loss(logits, target, tumour_free=True)


def get_loss(name: str, reduce_sums=None):
    """The loss function called ``name`` (one of LOSSES); with ``reduce_sums`` (see
    ``soft_dice_loss``) its Dice sums are those of the global batch (BCE, a mean, needs none)."""
    table = {"bce": bce_loss, "dice": soft_dice_loss, "bce_dice": bce_dice_loss,
             "bce_dice_img": bce_dice_img_loss, "bce_dice_img_all": bce_dice_img_all_loss}
    if name not in table:
        raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")
    if name in PER_IMAGE and reduce_sums is not None:
        raise ValueError(f"loss {name} (per-image Dice) is not available for data-parallel "
                         "training; train it on one device or choose bce_dice")
    if reduce_sums is None or name == "bce":
        return table[name]
    return functools.partial(table[name], reduce_sums=reduce_sums)


def loss_from_sums(name: str, bce_sum: float, n_pixels: int, inter: float, p_sum: float,
                   t_sum: float) -> float:
    """The loss ``name`` of a whole set from sums gathered batch by batch: what ``get_loss``
    gives for the set in one call, up to float rounding (BCE is a mean over all pixels and
    the soft Dice a ratio of sums, so neither is a mean of per-batch losses)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")
    bce = bce_sum / n_pixels if n_pixels else float("nan")
    dice = dice_from_sums(inter, p_sum, t_sum)
    return bce if name == "bce" else dice if name == "dice" else bce + dice
