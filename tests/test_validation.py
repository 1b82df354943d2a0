"""training.validation: per-epoch validation on the training device, from running sums."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from brainseg_lib.data.loaders import resident_tensors
from brainseg_lib.evaluation.metrics import batch_confusion_counts, metrics_from_counts
from brainseg_lib.inference import predict_logits
from brainseg_lib.model.unet import UNet
from brainseg_lib.training import losses, validation

from conftest import small_config, synthetic_arrays


class ConstantLogit(torch.nn.Module):
    """Logit ``c`` everywhere, whatever the image."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, x):
        return torch.full_like(x, self.c)


def masks_with_tumour_pixels(n: int, size: int, per_image: list[int]) -> np.ndarray:
    m = np.zeros((n, size, size), np.uint8)
    for i, k in enumerate(per_image):
        m[i].flat[:k] = 1
    return m


def test_hand_computed_figures_of_a_constant_model():
    # p = 0.5 everywhere and threshold 0.5: every pixel is called tumour
    n, size = 40, 4                                   # 40 images: batches of 32 and 8
    per_image = [3 if i % 5 == 0 else 0 for i in range(n)]
    masks = torch.from_numpy(masks_with_tumour_pixels(n, size, per_image)).unsqueeze(1)
    images = torch.zeros_like(masks)
    tumour, pixels = sum(per_image), n * size * size  # 24 of 640
    for name in losses.LOSSES:
        cfg = small_config(loss=name, threshold=0.5, channels_last=False)
        v = validation.validate(ConstantLogit(0.0), images, masks, cfg)
        assert v["val_dice"] == pytest.approx(2 * tumour / (2 * tumour + (pixels - tumour)))
        assert v["val_iou"] == pytest.approx(tumour / pixels)
        dice_loss = 1 - (2 * 0.5 * tumour + 1) / (0.5 * pixels + tumour + 1)
        expected = {"bce": math.log(2), "dice": dice_loss, "bce_dice": math.log(2) + dice_loss,
                    "bce_dice_img": math.log(2) + dice_loss,   # reported with the batch Dice
                    "bce_dice_img_all": math.log(2) + dice_loss}
        assert v["val_loss"] == pytest.approx(expected[name], rel=1e-6)   # float32 logits
    # threshold above p: nothing called tumour, so no true positive
    v = validation.validate(ConstantLogit(0.0), images, masks, small_config(threshold=0.6))
    assert v["val_dice"] == 0.0 and v["val_iou"] == 0.0


@pytest.mark.parametrize("loss", [n for n in losses.LOSSES if n not in losses.PER_IMAGE])   # their validation
def test_same_figures_as_scoring_predict_logits_of_the_whole_set(loss):          # losses are bce_dice's
    # what validation did before: logits of all of VAL to the CPU, one loss call, one count
    arrays = synthetic_arrays(70, 32, seed=3)         # 32 + 32 + 6 images
    torch.manual_seed(0)
    model = UNet(in_channels=1, base=4).eval()
    images, masks = resident_tensors(arrays, "cpu")
    logits = predict_logits(model, images, torch.device("cpu"), channels_last=False)
    # an untrained model: a threshold that calls its top 20% of pixels tumour
    cfg = small_config(loss=loss, threshold=float(torch.sigmoid(logits).quantile(0.8)))
    v = validation.validate(model, images, masks, cfg)
    counts = batch_confusion_counts(torch.sigmoid(logits) >= cfg.threshold, masks).sum(0)
    m = metrics_from_counts(*counts.tolist())
    assert 0 < m["f1"] < 1                            # a case where the counts matter
    assert v["val_dice"] == m["f1"] and v["val_iou"] == m["iou"]
    whole = float(losses.get_loss(loss)(logits, masks.float()))
    assert v["val_loss"] == pytest.approx(whole, rel=1e-6)


def test_leaves_the_model_in_eval_mode_and_reads_no_gradients():
    arrays = synthetic_arrays(5, 16, seed=1)
    model = UNet(in_channels=1, base=4).train()
    before = {k: t.clone() for k, t in model.state_dict().items()}
    modes = []
    model.register_forward_hook(lambda *_: modes.append(torch.is_inference_mode_enabled()))
    validation.validate(model, *resident_tensors(arrays, "cpu"), small_config())
    assert modes == [True]                            # one batch, no autograd graph
    assert not model.training                         # BatchNorm statistics untouched
    for k, t in model.state_dict().items():
        assert torch.equal(t, before[k]), k


def test_an_empty_val_is_refused():
    empty = torch.zeros((0, 1, 8, 8), dtype=torch.uint8)
    with pytest.raises(ValueError, match="VAL is empty"):
        validation.validate(ConstantLogit(0.0), empty, empty, small_config())


def test_checkpointed_optimizer_state_is_detached_on_cpu_and_keeps_its_structure():
    from brainseg_lib.training.run_state import on_cpu
    w = torch.ones(3, requires_grad=True)
    state = {"state": {0: {"step": torch.tensor(2.0), "exp_avg": w * 2}},
             "param_groups": [{"lr": 1e-3, "params": [0], "betas": (0.9, 0.999)}]}
    got = on_cpu(state)
    assert got["param_groups"] == state["param_groups"]
    assert isinstance(got["param_groups"][0]["betas"], tuple)
    t = got["state"][0]["exp_avg"]
    assert t.device.type == "cpu" and not t.requires_grad and torch.equal(t, torch.full((3,), 2.0))


def test_fit_refuses_an_empty_val_before_training(tmp_path, monkeypatch):
    from brainseg_lib.training import engine
    trained = []
    monkeypatch.setattr(engine, "train_one_epoch", lambda *a, **k: trained.append(1))
    with pytest.raises(ValueError, match="VAL is empty"):
        engine.fit(small_config(epochs=1, limit_val=0), tmp_path / "run",
                   train_arrays=synthetic_arrays(8, 32), val_arrays=synthetic_arrays(4, 32, seed=1),
                   progress=False)
    assert trained == []


def test_iter_logits_leaves_autocast_off_between_batches():
    from brainseg_lib.inference import iter_logits
    images = torch.zeros((3, 1, 8, 8), dtype=torch.uint8)
    seen = []
    with torch.inference_mode():
        for _, lg in iter_logits(ConstantLogit(0.0), images, torch.device("cpu"), batch_size=2,
                                 channels_last=False, amp_dtype=torch.bfloat16):
            seen.append((torch.is_autocast_enabled("cpu"), lg.dtype))
    assert seen == [(False, torch.float32)] * 2
