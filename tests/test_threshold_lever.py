"""The threshold as a lever of the release (round 10, ``params/release_levers_10.yaml``): a trial
that scores another's checkpoints may set where a probability becomes tumour; a released file
records it (``inference.threshold``), and ``predict`` (PyTorch and ONNX), ``evaluate-release``
and the export use it unless the user gives another."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import yaml
from conftest import scan_image, tiny_checkpoint_state
from PIL import Image

from brainseg_lib.apply import models as apply_models
from brainseg_lib.inference import checkpoint_threshold
from brainseg_lib.model.checkpoint import save_checkpoint
from brainseg_lib.study import release_levers as rl

SIZE = 32
ROUND10 = rl.PLAN_YAML.parent / "release_levers_10.yaml"


def test_the_threshold_comes_from_the_released_inference_then_the_training():
    assert checkpoint_threshold({}) == 0.5
    assert checkpoint_threshold({"train_config": {"threshold": 0.6}}) == 0.6
    assert checkpoint_threshold({"train_config": {"threshold": 0.6}, "inference": {"tta": True}}) == 0.6
    assert checkpoint_threshold({"train_config": {"threshold": 0.6},
                                 "inference": {"tta": True, "threshold": 0.3}}) == 0.3


def test_round10_declares_its_thresholds_and_leaves_the_release_as_it_was_scored():
    p = rl.load_plan(ROUND10)
    h7, h8, h9 = "h7-h6-ensemble3-tta-min-component", "h8-h7-threshold-0.4", "h9-h7-threshold-0.3"
    # h7's settings keep no threshold key, so its files scored in round 9 still match
    assert "threshold" not in rl.declared_settings(p, h7, 0)
    assert rl.how_scored(rl.declared_settings(p, h8, 1)) == {"tta": True, "min_component": 0.002, "threshold": 0.4}
    assert rl.declared_settings(p, h9, 0)["threshold"] == 0.3
    assert rl.checkpoints(p, h8, 2) == rl.checkpoints(p, h7, 2)          # the same h6 members
    assert [rl.trial(p, t)["against"] for t in (h8, h9)] == [h7, h7]


def _plan_with(tmp_path, extra: dict, drop=()):
    base = {k: v for k, v in rl.load_plan(ROUND10).items() if k != "source"}
    h8 = {k: v for k, v in base["trials"][3].items() if k not in drop}
    trials = [*base["trials"][:3], {**h8, **extra}]
    path = tmp_path / "release_levers_11.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps({**base, "name": "round11", "trials": trials}))))
    return path


def test_a_threshold_is_refused_where_it_cannot_apply(tmp_path):
    ensemble = ("ensemble_of", "members", "tta", "min_component")
    with pytest.raises(ValueError, match="head_crop, standardize or threshold"):
        rl.load_plan(_plan_with(tmp_path, {"set": {"loss": "bce"}}, drop=ensemble))
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            rl.load_plan(_plan_with(tmp_path, {"threshold": bad}))
    gated = {"checkpoints_of": "h6-head-crop-mri-aug", "gate": "healthy_val", "against": "r0-cpu"}
    with pytest.raises(ValueError, match="checkpoint's threshold"):
        rl.load_plan(_plan_with(tmp_path, gated, drop=ensemble))


def test_scoring_a_trial_passes_its_threshold_on(tmp_path, monkeypatch):
    from brainseg_lib.study import release_scoring
    seen = []
    monkeypatch.setattr(release_scoring, "score_checkpoint", lambda ckpts, **kw: seen.append(kw) or {})
    p = rl.load_plan(ROUND10)
    for ck in rl.checkpoints(p, "h9-h7-threshold-0.3", 0, tmp_path):
        ck.parent.mkdir(parents=True)
        ck.write_bytes(b"")
    rl.score_trial(p, "h9-h7-threshold-0.3", 0, tmp_path, **rl.scoring_settings(p, "h9-h7-threshold-0.3", 0, tmp_path))
    assert seen == [{"tta": True, "min_component": 0.002, "head_crop": False, "threshold": 0.3,
                     "reference": None}]


def _released(tmp_path, threshold):
    from brainseg_lib.model.released import release_model
    src = save_checkpoint(tiny_checkpoint_state(SIZE), tmp_path / "best.pt")
    inference = {"tta": False, **({"threshold": threshold} if threshold is not None else {})}
    return release_model(src, tmp_path / "rel" / "m.pt", inference=inference)


def test_predict_uses_the_released_threshold_unless_given_another(tmp_path):
    from brainseg_lib.apply.predict import run_predict
    model = _released(tmp_path, 0.3)
    inputs = tmp_path / "in"
    inputs.mkdir()
    img = scan_image(48, 40, seed=5)
    Image.fromarray(img).save(inputs / "a.png")
    prob = apply_models.load_predictor(model, "cpu").probabilities(img)
    assert ((prob >= 0.3) != (prob >= 0.5)).any()         # the two thresholds give other masks
    masks = {}
    for given, out in ((None, "own"), (0.5, "given")):
        run = run_predict(inputs, tmp_path / out, checkpoint=model, threshold=given, device="cpu", progress=False)
        assert run.threshold == (0.3 if given is None else 0.5)
        assert float(run.rows[0]["threshold"]) == run.threshold
        masks[out] = np.array(Image.open(tmp_path / out / "a_mask.png")) > 0
    assert np.array_equal(masks["own"], prob >= 0.3) and np.array_equal(masks["given"], prob >= 0.5)


def test_the_release_evaluation_and_the_export_read_the_released_threshold(tmp_path):
    from brainseg_lib.model.onnx import model_metadata
    from brainseg_lib.model.released import load_released
    from brainseg_lib.study.release_eval import released_settings
    for threshold, want in ((0.3, 0.3), (None, 0.5)):
        path = _released(tmp_path / str(threshold), threshold)
        _, tcfg, inf = released_settings(path)
        assert tcfg["threshold"] == want and inf.get("threshold") == threshold
        meta = model_metadata(load_released(path), path, "0" * 64, "test")
        assert float(meta["threshold"]) == want


def test_the_onnx_predictor_reads_the_exported_threshold(tmp_path):
    pytest.importorskip("onnxruntime")
    from brainseg_lib.apply.onnx_runtime import load_onnx_model
    from brainseg_lib.model.onnx import export_onnx
    model = _released(tmp_path, 0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_path = export_onnx(model)
    assert load_onnx_model(onnx_path).threshold == 0.3
