"""Per-epoch validation on the device the model trains on.

VAL lives there as uint8 for the whole run, like TRAIN (``loaders.resident_tensors``).
Each batch's logits (``inference.iter_logits``, the batches ``predict_logits`` uses) add to
running sums kept on the device: the BCE sum, the soft-Dice sums (intersection, prediction,
target) and the confusion counts at ``cfg.threshold``. Two small transfers per epoch bring
them back (float sums and int64 counts apart, so the counts stay exact on every device).
Scoring the output of ``predict_logits`` instead would copy the logits of the whole of VAL to
the CPU every epoch and score them there (201 x 256 x 256 floats, 53 MB, at the paper's size).

The figures are those of the whole of VAL at once: ``val_loss`` is ``losses.get_loss`` over
the set up to float rounding (``losses.loss_from_sums``), and ``val_dice`` / ``val_iou`` are
the pooled F1 and IoU of ``metrics.metrics_from_counts``. The logits are those of
``predict_logits`` with the training's autocast: on the CPU (fp32) the counts, and with them
the choice of ``best.pt``, are those of scoring its output; on CUDA, VAL is scored under
bf16 autocast as trained, while the evaluation after training runs in fp32, so a VAL Dice in
``history.csv`` may differ slightly from a later evaluation of the same weights. An
empty VAL is refused: its Dice (1 by the empty-mask rule) would make
epoch 1 the best for good.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from brainseg_lib.evaluation.metrics import batch_confusion_counts, metrics_from_counts
from brainseg_lib.inference import iter_logits
from brainseg_lib.training.config import TrainConfig
from brainseg_lib.training.losses import loss_from_sums

EMPTY_VAL = "VAL is empty (limit_val: 0?): nothing to choose the best epoch on"


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
    if images_u8.shape[0] == 0:
        raise ValueError(EMPTY_VAL)
    device = images_u8.device
    # float64 running sums where the device has them (MPS has not)
    soft_total = torch.zeros(4, device=device,
                             dtype=torch.float32 if device.type == "mps" else torch.float64)
    count_total = torch.zeros(4, dtype=torch.int64, device=device)
    for i, logits in iter_logits(model, images_u8, device, channels_last=cfg.channels_last,
                                 amp_dtype=amp_dtype):
        soft, counts = batch_sums(logits, masks_u8[i:i + logits.shape[0]], cfg.threshold)
        soft_total += soft
        count_total += counts
    bce_sum, inter, p_sum, t_sum = soft_total.tolist()
    m = metrics_from_counts(*count_total.tolist())
    loss = loss_from_sums(cfg.loss, bce_sum, masks_u8.numel(), inter, p_sum, t_sum)
    return {"val_loss": loss, "val_dice": m["f1"], "val_iou": m["iou"]}
