"""brainseg_lib.losses: known values, hand-computed soft Dice, fp32 under low precision."""
from __future__ import annotations

import math

import pytest
import torch

from brainseg_lib.training import losses

TARGET = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]], [[[0.0, 1.0], [0.0, 0.0]]]])   # (2,1,2,2)


def test_names():
    assert losses.get_loss("bce") is losses.bce_loss
    assert losses.get_loss("dice") is losses.soft_dice_loss
    assert losses.get_loss("bce_dice") is losses.bce_dice_loss
    assert losses.get_loss("bce_dice_img") is losses.bce_dice_img_loss
    assert losses.get_loss("bce_dice_img_all") is losses.bce_dice_img_all_loss
    assert set(losses.LOSSES) == {"bce", "dice", "bce_dice", "bce_dice_img", "bce_dice_img_all"}
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        losses.get_loss("focal")


@pytest.mark.parametrize("name", losses.LOSSES)
def test_perfect_confident_logits_give_zero(name):
    logits = (TARGET * 2 - 1) * 30.0
    assert float(losses.get_loss(name)(logits, TARGET)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", losses.LOSSES)
def test_confidently_wrong_logits_give_large_loss(name):
    logits = (1 - TARGET * 2) * 30.0
    val = float(losses.get_loss(name)(logits, TARGET))
    assert val > 0.85
    if name == "dice":
        # p is ~1 on the 5 background pixels, ~0 on the 3 tumour pixels: 1 - 1 / (5 + 3 + 1)
        assert val == pytest.approx(8 / 9, abs=1e-6)
    if name == "bce":
        assert val == pytest.approx(30.0, abs=1e-3)


def test_bce_of_zero_logits_is_ln2():
    assert float(losses.bce_loss(torch.zeros_like(TARGET), TARGET)) == pytest.approx(math.log(2), abs=1e-7)


def test_bce_hand_computed():
    # p = sigmoid(ln 3) = 0.75, sigmoid(-ln 3) = 0.25, sigmoid(0) = 0.5
    logits = torch.tensor([math.log(3), -math.log(3), 0.0, math.log(3)])
    target = torch.tensor([1.0, 1.0, 0.0, 0.0])
    expected = (-math.log(0.75) - math.log(0.25) - math.log(0.5) - math.log(0.25)) / 4
    assert float(losses.bce_loss(logits, target)) == pytest.approx(expected, rel=1e-6)


def test_soft_dice_hand_computed():
    # p = [0.75, 0.25, 0.5, 0.5], t = [1, 1, 0, 0]
    # intersection = 0.75 + 0.25 = 1, sum p = 2, sum t = 2, eps = 1
    # dice loss = 1 - (2*1 + 1) / (2 + 2 + 1) = 1 - 3/5 = 0.4
    logits = torch.tensor([math.log(3), -math.log(3), 0.0, 0.0])
    target = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert float(losses.soft_dice_loss(logits, target)) == pytest.approx(0.4, abs=1e-6)
    # all-zero logits on TARGET: p = 0.5 everywhere (8 px), t sum 3, intersection 1.5
    # 1 - (3 + 1) / (4 + 3 + 1) = 0.5
    assert float(losses.soft_dice_loss(torch.zeros_like(TARGET), TARGET)) == pytest.approx(0.5, abs=1e-6)


def test_soft_dice_sums_over_the_whole_batch():
    # batch-level sums, not a mean of per-image Dice: image 2 has no tumour and predicts none
    logits = torch.tensor([[0.0, 0.0], [-30.0, -30.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    # p = [.5, .5, ~0, ~0]; inter .5; 1 - (1 + 1) / (1 + 1 + 1) = 1/3
    assert float(losses.soft_dice_loss(logits, target)) == pytest.approx(1 / 3, abs=1e-6)


def test_bce_dice_is_the_sum():
    logits = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    target = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.6).float()
    total = losses.bce_dice_loss(logits, target)
    assert float(total) == pytest.approx(float(losses.bce_loss(logits, target))
                                         + float(losses.soft_dice_loss(logits, target)), abs=1e-6)


def test_losses_match_torch_reference():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 1, 16, 16, generator=g) * 3
    target = (torch.rand(3, 1, 16, 16, generator=g) > 0.5).float()
    p = torch.sigmoid(logits)
    ref_bce = -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()
    ref_dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    assert float(losses.bce_loss(logits, target)) == pytest.approx(float(ref_bce), rel=1e-5)
    assert float(losses.soft_dice_loss(logits, target)) == pytest.approx(float(ref_dice), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", losses.LOSSES)
def test_low_precision_logits_computed_in_fp32(dtype, name):
    # 8 x 128 x 128 = 131072 pixels: the Dice sums exceed float16's 65504
    g = torch.Generator().manual_seed(0)
    logits32 = torch.randn(8, 1, 128, 128, generator=g) + 2.0
    target = (torch.rand(8, 1, 128, 128, generator=g) > 0.3).to(dtype)
    low = logits32.to(dtype)
    fn = losses.get_loss(name)
    out = fn(low, target)
    assert out.dtype == torch.float32
    assert torch.isfinite(out)
    ref = fn(low.float(), target.float())                  # same rounded inputs, in fp32
    assert float(out) == pytest.approx(float(ref), rel=1e-6)
    low.requires_grad_(True)
    fn(low, target).backward()
    assert low.grad.dtype == dtype and torch.isfinite(low.grad.float()).all()


@pytest.mark.parametrize("name", losses.PER_IMAGE)
def test_per_image_loss_is_reported_with_the_batch_dice(name):
    """The per-image losses' validation loss is reported as BCE + batch-wide Dice (docstring)."""
    args = (3.0, 10, 2.0, 4.0, 5.0)
    assert losses.loss_from_sums(name, *args) == losses.loss_from_sums("bce_dice", *args)
    assert losses.loss_from_sums(name, *args) != losses.loss_from_sums("dice", *args)


def test_per_image_dice_of_all_images_matches_monai():
    from monai.losses import DiceLoss
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(4, 1, 8, 8, generator=g) * 2
    target = (torch.rand(4, 1, 8, 8, generator=g) > 0.8).float()
    target[1] = 0.0                                   # a tumour-free image counts too
    ref = DiceLoss(sigmoid=True, batch=False, smooth_nr=1.0, smooth_dr=1.0)(logits, target)
    got = losses.per_image_dice_loss(logits, target, tumour_free=True)
    assert float(got) == pytest.approx(float(ref), rel=1e-5)
    assert float(losses.per_image_dice_loss(logits, target)) != pytest.approx(float(ref), rel=1e-3)
    total = losses.bce_dice_img_all_loss(logits, target)
    assert float(total) == pytest.approx(float(losses.bce_loss(logits, target)) + float(ref), rel=1e-5)


def test_predictions_on_a_tumour_free_image_cost_only_with_all_images():
    # 16 pixels at p ~ 1 on an empty mask: 1 - 1 / (16 + 1) under bce_dice_img_all, 0 under bce_dice_img
    empty = torch.zeros(1, 1, 4, 4)
    logits = torch.full((1, 1, 4, 4), 30.0)
    assert float(losses.per_image_dice_loss(logits, empty, tumour_free=True)) == pytest.approx(16 / 17, abs=1e-6)
    assert float(losses.per_image_dice_loss(logits, empty)) == 0.0
    quiet = torch.full((1, 1, 4, 4), -30.0)
    assert float(losses.per_image_dice_loss(quiet, empty, tumour_free=True)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", [n for n in losses.LOSSES if n not in losses.PER_IMAGE])
def test_loss_from_batch_sums_is_the_loss_of_the_whole_set(name):
    # three uneven batches; a mean of per-batch losses would differ (Dice is a ratio of sums)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 1, 4, 4, generator=gen) * 3
    target = (torch.rand(7, 1, 4, 4, generator=gen) > 0.7).float()
    target[:2] = 0.0                                   # a batch with an empty mask
    batches = ((0, 2), (2, 5), (5, 7))
    sums = [0.0] * 4
    for lo, hi in batches:
        lg, t = logits[lo:hi], target[lo:hi]
        p = torch.sigmoid(lg)
        part = (torch.nn.functional.binary_cross_entropy_with_logits(lg, t, reduction="sum"),
                (p * t).sum(), p.sum(), t.sum())
        sums = [a + float(b) for a, b in zip(sums, part)]
    whole = float(losses.get_loss(name)(logits, target))
    assert losses.loss_from_sums(name, sums[0], target.numel(), *sums[1:]) == pytest.approx(whole, rel=1e-6)
    per_batch_mean = sum(float(losses.get_loss(name)(logits[lo:hi], target[lo:hi]))
                         for lo, hi in batches) / len(batches)
    assert abs(per_batch_mean - whole) > 1e-3        # the check above can tell the two apart


def test_loss_from_sums_hand_computed_and_refuses_unknown_names():
    # 8 pixels at p = 0.5, 3 of them tumour: BCE ln 2; Dice 1 - (2*1.5 + 1) / (4 + 3 + 1) = 0.5
    args = (8 * math.log(2), 8, 1.5, 4.0, 3.0)
    assert losses.loss_from_sums("bce", *args) == pytest.approx(math.log(2))
    assert losses.loss_from_sums("dice", *args) == pytest.approx(0.5)
    assert losses.loss_from_sums("bce_dice", *args) == pytest.approx(math.log(2) + 0.5)
    assert math.isnan(losses.loss_from_sums("bce", 0.0, 0, 0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        losses.loss_from_sums("focal", *args)
