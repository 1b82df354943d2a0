"""Per-epoch validation on the device the model trains on.

VAL lives there as uint8 for the whole run, like TRAIN (``loaders.resident_tensors``).
Each batch adds to running sums kept on the device: the BCE sum, the soft-Dice sums
(intersection, prediction, target) and the confusion counts at ``cfg.threshold``. One
transfer per epoch brings back those eight numbers. Validating by ``inference.predict_logits``
instead would copy the logits of the whole of VAL to the CPU every epoch and score them there
(201 x 256 x 256 floats, 53 MB, at the paper's size).

The figures are those of the whole of VAL at once: ``val_loss`` is ``losses.get_loss`` over
the set up to float rounding (``losses.loss_from_sums``), and ``val_dice`` / ``val_iou`` are
the pooled F1 and IoU of ``metrics.metrics_from_counts``. On the CPU the logits are those of
``predict_logits`` (the same batches of ``VAL_BATCH``), so the counts, and with them the
choice of ``best.pt``, are the same as scoring its output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from brainseg_lib.data.loaders import to_float
from brainseg_lib.evaluation.metrics import batch_confusion_counts, metrics_from_counts
from brainseg_lib.training.config import TrainConfig
from brainseg_lib.training.losses import loss_from_sums

VAL_BATCH = 32   # images per forward pass: predict_logits's default batch


def batch_sums(logits: torch.Tensor, target_u8: torch.Tensor,
               threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's soft sums [bce_sum, intersection, prediction, target] (float32) and
    confusion counts [tp, fp, fn, tn] (int64), on the batch's device."""
    t = target_u8.float()
    p = torch.sigmoid(logits)
    soft = torch.stack([F.binary_cross_entropy_with_logits(logits, t, reduction="sum"),
                        (p * t).sum(), p.sum(), t.sum()])
    return soft, batch_confusion_counts(p >= threshold, target_u8).sum(0)


@torch.inference_mode()
def validate(model: torch.nn.Module, images_u8: torch.Tensor, masks_u8: torch.Tensor,
             cfg: TrainConfig, amp_dtype: torch.dtype | None = None) -> dict:
    """Validation loss and pooled Dice / IoU of ``model`` on uint8 images and masks
    (N,1,S,S) that live on the model's device; ``amp_dtype`` as in training."""
    model.eval()
    device = images_u8.device
    # float64 running sums where the device has them (MPS has not)
    soft_total = torch.zeros(4, device=device,
                             dtype=torch.float32 if device.type == "mps" else torch.float64)
    count_total = torch.zeros(4, dtype=torch.int64, device=device)
    for i in range(0, images_u8.shape[0], VAL_BATCH):
        x = to_float(images_u8[i:i + VAL_BATCH])
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x).float()
        soft, counts = batch_sums(logits, masks_u8[i:i + VAL_BATCH], cfg.threshold)
        soft_total += soft
        count_total += counts
    bce_sum, inter, p_sum, t_sum = soft_total.tolist()
    m = metrics_from_counts(*count_total.tolist())
    loss = loss_from_sums(cfg.loss, bce_sum, masks_u8.numel(), inter, p_sum, t_sum)
    return {"val_loss": loss, "val_dice": m["f1"], "val_iou": m["iou"]}
