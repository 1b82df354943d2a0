"""Losses on logits, always computed in float32.

The paper trains "using binary cross-entropy loss, as well as a combination of
binary cross-entropy loss functions". We read the second as the usual
BCE + soft-Dice sum (equal weights), and offer both:

* ``bce``      mean binary cross-entropy over all pixels of the batch;
* ``dice``     1 - soft Dice, with the sums taken over the whole batch and
               smoothing ``eps=1`` in numerator and denominator;
* ``bce_dice`` ``bce + dice``.

Logits are cast to float32 before any reduction: under CUDA autocast the
soft-Dice sums over 50 x 256 x 256 pixels overflow float16.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("bce", "dice", "bce_dice")


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    p = torch.sigmoid(logits.float())
    t = target.float()
    inter = (p * t).sum()
    return 1.0 - (2.0 * inter + eps) / (p.sum() + t.sum() + eps)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return bce_loss(logits, target) + soft_dice_loss(logits, target)


def get_loss(name: str):
    """The loss function called ``name`` (one of LOSSES)."""
    table = {"bce": bce_loss, "dice": soft_dice_loss, "bce_dice": bce_dice_loss}
    if name not in table:
        raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")
    return table[name]
