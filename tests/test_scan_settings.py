"""One scan through ``inference.scan_probability``: ``predict`` (PyTorch and ONNX) applies a
checkpoint's head crop, test-time flips and small-component removal exactly as the study's
scoring applies them to whole sets (``inference.scored_probabilities`` + ``to_native_frame``)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import scan_image, tiny_checkpoint_state

from brainseg_lib.apply import models as apply_models
from brainseg_lib.data.head_crop import head_box
from brainseg_lib.data.images import resize_image
from brainseg_lib.inference import (
    ScanSettings,
    predict_probabilities,
    scan_probability,
    to_native,
    to_native_frame,
)
from brainseg_lib.model.checkpoint import model_from_checkpoint, save_checkpoint
from brainseg_lib.inference import scored_probabilities as probabilities

SIZE = 32


def cornered_scan(h=90, w=70, seed=3) -> np.ndarray:
    """A head (a scan of intensities 70-120 with a bright blob) in the top-left of a dark frame."""
    img = np.zeros((h, w), np.uint8)
    img[5:60, 4:48] = np.clip(scan_image(55, 44, seed=seed).astype(int) + 60, 0, 255)
    return img


def checkpoint_file(tmp_path, inference=None, head_crop=False):
    state = tiny_checkpoint_state(SIZE)
    state["train_config"] = {**state["train_config"], **({"head_crop": True} if head_crop else {})}
    if inference is not None:
        state["inference"] = inference
    path = save_checkpoint(state, tmp_path / "m.pt")
    return path, state


def load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", apply_models.UnverifiedCheckpoint)
        return apply_models.load_predictor(path, "cpu")


def test_plain_settings_are_the_plain_resize(tmp_path):
    path, state = checkpoint_file(tmp_path)
    predictor = load(path)
    assert predictor.settings == ScanSettings()
    img = cornered_scan()
    model = model_from_checkpoint(state)
    expected = to_native(predict_probabilities(model, resize_image(img, SIZE)[None])[0], *img.shape)
    assert np.allclose(predictor.probabilities(img), expected, atol=1e-6)


def test_predict_applies_the_released_settings_as_the_study_scores_them(tmp_path):
    inference = {"tta": True, "min_component": 0.02}
    path, state = checkpoint_file(tmp_path, inference, head_crop=True)
    predictor = load(path)
    assert predictor.settings == ScanSettings(True, True, 0.02)
    img = cornered_scan()
    box = head_box(img)
    assert box != (0, img.shape[0], 0, img.shape[1])
    model = model_from_checkpoint(state)
    x = resize_image(img[box[0]:box[1], box[2]:box[3]], SIZE)[None]
    study = to_native_frame(probabilities(model, x, torch.device("cpu"), 0.5, True, 0.02)[0],
                            *img.shape, box)
    mine = predictor.probabilities(img)
    assert np.allclose(mine, study, atol=1e-5)
    assert (mine >= 0.5).any() and not (mine[box[1]:] >= 0.5).any()     # nothing outside the head
    # each setting changes the map: the test would notice one left out
    for other in (ScanSettings(False, True, 0.02), ScanSettings(True, False, 0.02), ScanSettings(True, True, 0.0)):
        assert not np.allclose(scan_probability(predictor.batch_probabilities, img, SIZE, other), mine, atol=1e-5)


def test_a_reduced_decoding_puts_the_box_at_native_scale():
    def probs(x):                      # a map of ones: the pasted box is all that shows
        return np.ones(x.shape, np.float32)
    img = cornered_scan()
    box = head_box(img)
    out = scan_probability(probs, img, SIZE, ScanSettings(head_crop=True), native_hw=(180, 140))
    assert out.shape == (180, 140)
    rows, cols = np.nonzero(out > 0.5)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == tuple(2 * v for v in box)


def test_onnx_exports_record_settings_only_when_they_change_the_resize():
    from brainseg_lib.model.onnx import scan_settings_metadata
    assert scan_settings_metadata({"train_config": {"image_size": 32}}) == {}
    meta = scan_settings_metadata({"train_config": {"image_size": 32, "head_crop": True},
                                   "inference": {"tta": True, "min_component": 0.002}})
    assert meta["scan_settings"] == '{"head_crop": true, "min_component": 0.002, "tta": true}'
    assert "head's box" in meta["postprocess"]


def test_the_onnx_predictor_applies_the_recorded_settings():
    pytest.importorskip("onnxruntime")
    from brainseg_lib.apply.onnx_runtime import OnnxPredictor

    class Session:                       # probability = the input itself (a bright scan is 'tumour')
        def run(self, names, feed):
            return [feed["image"]]

    meta = {"scan_settings": '{"head_crop": true, "min_component": 0.0, "tta": false}', "threshold": "0.5"}
    onnx = OnnxPredictor(Session(), SIZE, apply_models.Path("x.onnx"), meta)
    img = cornered_scan()
    got = onnx.probabilities(img)
    want = scan_probability(onnx.batch_probabilities, img, SIZE, ScanSettings(head_crop=True))
    assert np.array_equal(got, want)
    assert not np.allclose(got, scan_probability(onnx.batch_probabilities, img, SIZE, ScanSettings()))


def test_an_export_with_unreadable_settings_is_refused_by_name():
    from brainseg_lib.apply.onnx_runtime import scan_settings
    from brainseg_lib.apply.scans import PredictError
    for bad in ('{"head_crop": true, "zoom": 2}', "[1]", "not json"):
        with pytest.raises(PredictError, match="x.onnx: unreadable scan_settings"):
            scan_settings({"scan_settings": bad}, apply_models.Path("x.onnx"))
    assert scan_settings({}, apply_models.Path("x.onnx")) == ScanSettings()
