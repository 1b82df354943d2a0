"""evaluation/evaluate.py, what writes Table I: counts at native and model resolution and the
pooled figures, on the fake Br35H tree (TEST: 32x48 and 40x40 scans) with a U-Net whose
head is constant, so that what it predicts is known without running a trained model."""
from __future__ import annotations

import pandas as pd
import torch
from conftest import FAKE_LAYOUT

from brainseg_lib.data.cache import native_masks_for
from brainseg_lib.evaluation import evaluate
from brainseg_lib.evaluation.metrics import metrics_from_counts
from brainseg_lib.model.checkpoint import save_checkpoint
from brainseg_lib.model.unet import UNet
from brainseg_lib.training.config import TrainConfig

SIZE = 16                                               # model size, unlike any native size
TEST = FAKE_LAYOUT["test"]
NATIVE_PIXELS = sum(h * w for h, w, _, _ in TEST.values())   # 32*48 + 40*40


def constant_unet(logit: float) -> UNet:
    """A U-Net whose every output pixel is ``logit`` (zero 1x1 head, bias ``logit``)."""
    m = UNet(in_channels=1, base=4)
    with torch.no_grad():
        m.head.weight.zero_()
        m.head.bias.fill_(logit)
    return m.eval()


def counts(ev, prefix=""):
    return {c: int(ev.per_image[prefix + c].sum()) for c in ("tp", "fp", "fn", "tn")}


def test_all_tumour_model_counts_every_native_pixel(fake_root, tmp_path):
    m = constant_unet(10.0)                             # p = 0.99995: every pixel is tumour
    ck = save_checkpoint({"state_dict": m.state_dict(), "model_config": m.config(),
                          "train_config": TrainConfig(image_size=SIZE, base_width=4).to_dict()},
                         tmp_path / "const.pt")
    ev = evaluate.evaluate_checkpoint(ck, "test", threshold=0.5, device="cpu", data_root=fake_root)
    native, model = counts(ev), counts(ev, "model_")
    assert sum(native.values()) == NATIVE_PIXELS
    assert sum(model.values()) == len(TEST) * SIZE * SIZE
    tumour = sum(int(g.sum()) for g in native_masks_for(list(TEST), fake_root).values())
    assert native == {"tp": tumour, "fp": NATIVE_PIXELS - tumour, "fn": 0, "tn": 0}
    assert ev.summary["counts"] == native and ev.summary["n_images"] == 2
    assert ev.summary["global"] == metrics_from_counts(**native)        # Table I: native, pooled
    assert ev.summary["global"]["precision"] != ev.summary["model_resolution"]["global"]["precision"]


def test_a_probability_equal_to_the_threshold_is_tumour(fake_root):
    ev = evaluate.evaluate_model(constant_unet(0.0), "test", SIZE, threshold=0.5, device="cpu",
                        data_root=fake_root)                # sigmoid(0) == 0.5 exactly
    model = counts(ev, "model_")
    assert model["fn"] == model["tn"] == 0
    assert model["tp"] + model["fp"] == len(TEST) * SIZE * SIZE


def per_image_frame() -> pd.DataFrame:
    """Two hand-made images: 2x3 with tp 1, fp 1, fn 1, tn 3; 2x2 with tn 4 only."""
    return pd.DataFrame({"name": ["a", "b"], "native_h": [2, 2], "native_w": [3, 2],
                         "tumour_pixels": [2, 0], "pred_pixels": [2, 0],
                         "tp": [1, 0], "fp": [1, 0], "fn": [1, 0], "tn": [3, 4]})


def test_run_invariants_hold_for_a_consistent_run_and_name_each_break():
    pi = per_image_frame()
    run = {"n_images": 2, "global": metrics_from_counts(1, 1, 1, 7),
           "counts": {"tp": 1, "fp": 1, "fn": 1, "tn": 7}}
    assert all(evaluate.run_invariants(run, pi).values())
    broken = {
        "one row per scored image": ({**run, "n_images": 3}, pi),
        "native counts cover every pixel": (run, pi.assign(native_w=[3, 3])),
        "tumour pixels = tp + fn": (run, pi.assign(tumour_pixels=[1, 0])),
        "predicted pixels = tp + fp": (run, pi.assign(pred_pixels=[3, 0])),
        # the figures of the model-resolution counts, or any others, are caught
        "pooled figures from the summed counts": ({**run, "global": metrics_from_counts(1, 1, 1, 6)}, pi),
    }
    broken = list(broken.items()) + [
        ("one row per scored image", (run, pi.assign(name=["a", "a"]))),            # a name twice
        ("pooled figures from the summed counts", ({**run, "counts": {**run["counts"], "tn": 6}}, pi)),
    ]
    for name, (r, p) in broken:
        got = evaluate.run_invariants(r, p)
        assert [k for k, ok in got.items() if not ok] == [name]
