"""A released file may hold a seed ensemble (``members``) and its inference settings: ``predict``
(PyTorch and ONNX) and ``evaluate-release`` load it as one model and apply the settings."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import has_module, scan_image, tiny_checkpoint_state

from brainseg_lib.apply import models as apply_models
from brainseg_lib.inference import ScanSettings, predict_probabilities, scan_probability
from brainseg_lib.model.checkpoint import CheckpointError, model_from_checkpoint, save_checkpoint
from brainseg_lib.model.ensemble import SeedEnsemble
from brainseg_lib.model.released import load_released, release_model

SIZE = 32


def member_files(tmp_path, n=3, **train):
    out = []
    for seed in range(n):
        state = tiny_checkpoint_state(SIZE, seed=seed)
        state["train_config"] = {**state["train_config"], **train}
        out.append(save_checkpoint(state, tmp_path / f"run{seed}" / "best.pt"))
    return out


def test_an_ensemble_file_loads_as_the_mean_of_its_members(tmp_path):
    files = member_files(tmp_path)
    dest = release_model(files, tmp_path / "models" / "ens.pt", inference={"tta": True, "min_component": 0.002})
    ck = load_released(dest)
    assert "state_dict" not in ck and len(ck["members"]) == 3
    assert ck["released_from"] == ["run0/best.pt", "run1/best.pt", "run2/best.pt"]
    model = model_from_checkpoint(ck, dest)
    assert isinstance(model, SeedEnsemble) and model.in_channels == 1
    x = np.stack([scan_image(SIZE, SIZE, seed=s) for s in range(2)])
    singles = [model_from_checkpoint(load_released(release_model(f, tmp_path / f"one{i}.pt")))
               for i, f in enumerate(files)]
    mean_logits = torch.stack([m(torch.tensor(x)[:, None].float() / 255) for m in singles]).mean(0)
    assert np.allclose(predict_probabilities(model, x), torch.sigmoid(mean_logits)[:, 0].detach().numpy(),
                       atol=1e-6)


def test_predict_uses_the_ensemble_and_its_settings(tmp_path):
    dest = release_model(member_files(tmp_path), tmp_path / "models" / "ens.pt",
                         inference={"tta": True, "min_component": 0.002})
    predictor = apply_models.load_predictor(dest, "cpu")
    assert isinstance(predictor.model, SeedEnsemble)
    assert predictor.settings == ScanSettings(False, True, 0.002)
    img = scan_image(50, 40, seed=7)
    want = scan_probability(lambda b: predict_probabilities(predictor.model, b), img, SIZE,
                            ScanSettings(False, True, 0.002))
    assert np.allclose(predictor.probabilities(img), want, atol=1e-6)


def test_members_of_different_recipes_are_refused(tmp_path):
    files = member_files(tmp_path, 2)
    other = tiny_checkpoint_state(SIZE, seed=5)
    other["train_config"] = {**other["train_config"], "head_crop": True}
    odd = save_checkpoint(other, tmp_path / "odd" / "best.pt")
    with pytest.raises(CheckpointError, match="head_crop"):
        release_model([*files, odd], tmp_path / "models" / "bad.pt")


def test_a_single_release_records_no_inference_unless_given(tmp_path):
    f = member_files(tmp_path, 1)[0]
    assert "inference" not in load_released(release_model(f, tmp_path / "a.pt"))
    assert "members" not in load_released(release_model([f], tmp_path / "b.pt"))


@pytest.mark.skipif(not (has_module("onnx") and has_module("onnxruntime")), reason="onnx not installed")
def test_an_ensemble_exports_to_onnx_with_its_settings(tmp_path):
    from brainseg_lib.apply.onnx_runtime import load_onnx_model
    from brainseg_lib.model.onnx import export_onnx
    dest = release_model(member_files(tmp_path), tmp_path / "models" / "ens.pt",
                         inference={"tta": True, "min_component": 0.0})
    onnx = load_onnx_model(export_onnx(dest))
    torch_pred = apply_models.load_predictor(dest, "cpu")
    img = scan_image(48, 48, seed=2)
    assert np.allclose(onnx.probabilities(img), torch_pred.probabilities(img), atol=1e-4)


def test_a_damaged_members_list_is_refused_by_name(tmp_path):
    state = tiny_checkpoint_state(SIZE)
    for bad in ([state["state_dict"]], "weights", [state["state_dict"], 3]):
        ck = {"members": bad, "model_config": state["model_config"], "train_config": state["train_config"]}
        with pytest.raises(CheckpointError, match="x.pt: `members` must list"):
            model_from_checkpoint(ck, tmp_path / "x.pt")
