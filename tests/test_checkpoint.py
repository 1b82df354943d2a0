"""brainseg_lib.checkpoint: safe loading (no pickle payloads), architecture checks, atomic writes."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from brainseg_lib.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from brainseg_lib.model.unet import UNet


def tiny_checkpoint(base: int = 2) -> dict:
    torch.manual_seed(0)
    m = UNet(base=base)
    return {"state_dict": m.state_dict(), "model_config": m.config(), "epoch": 1,
            "history": [{"epoch": 1, "val_dice": 0.5}], "note": "plain types only"}


class Payload:
    """Unpickling this would create a marker file: proof that code ran on load."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mknod if hasattr(os, "mknod") else open, (self.marker,))


class Custom:
    def __init__(self):
        self.x = 1


def test_round_trip(tmp_path):
    ck = tiny_checkpoint()
    p = save_checkpoint(ck, tmp_path / "sub" / "a.pt")
    assert p.is_file() and not list(p.parent.glob("*.tmp"))
    loaded = load_checkpoint(p)
    assert loaded["epoch"] == 1 and loaded["history"] == ck["history"]
    model = model_from_checkpoint(loaded, p, expect={"base": 2, "in_channels": 1})
    ref = UNet(base=2)
    ref.load_state_dict(ck["state_dict"])
    ref.eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_bf16_weights_are_loaded_as_fp32(tmp_path):
    ck = tiny_checkpoint()
    ck["state_dict"] = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
                        for k, v in ck["state_dict"].items()}
    save_checkpoint(ck, tmp_path / "b.pt")
    model = model_from_checkpoint(load_checkpoint(tmp_path / "b.pt"))
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_pickled_object_in_torch_save_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    ck = tiny_checkpoint()
    ck["extra"] = Payload(marker)
    torch.save(ck, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refusing to load") as e:
        load_checkpoint(tmp_path / "evil.pt")
    assert "evil.pt" in str(e.value)
    assert not marker.exists()


def test_custom_class_instance_is_refused(tmp_path):
    ck = tiny_checkpoint()
    ck["optimizer"] = Custom()
    torch.save(ck, tmp_path / "custom.pt")
    with pytest.raises(CheckpointError, match="pickle payload"):
        load_checkpoint(tmp_path / "custom.pt")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_file_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"state_dict": {}, "model_config": {},
                                                      "x": Payload(marker)}))
    with pytest.raises(CheckpointError, match="plain.pt"):
        load_checkpoint(tmp_path / "plain.pt")
    assert not marker.exists()


def test_architecture_mismatch_is_refused(tmp_path):
    save_checkpoint(tiny_checkpoint(base=2), tmp_path / "a.pt")
    ck = load_checkpoint(tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="architecture mismatch") as e:
        model_from_checkpoint(ck, tmp_path / "a.pt", expect={"base": 64})
    assert "base" in str(e.value) and "a.pt" in str(e.value)
    with pytest.raises(CheckpointError, match="mismatch"):
        model_from_checkpoint(ck, expect={"depth": 5})


def test_weights_not_matching_the_stated_architecture(tmp_path):
    ck = tiny_checkpoint(base=2)
    ck["model_config"] = dict(ck["model_config"], base=4)      # lies about its width
    save_checkpoint(ck, tmp_path / "lie.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        model_from_checkpoint(load_checkpoint(tmp_path / "lie.pt"), tmp_path / "lie.pt")


@pytest.mark.parametrize("content", [b"", b"garbage bytes, not a checkpoint" * 10, "truncated"])
def test_broken_files(tmp_path, content):
    p = tmp_path / "broken.pt"
    if content == "truncated":
        save_checkpoint(tiny_checkpoint(), tmp_path / "ok.pt")
        b = (tmp_path / "ok.pt").read_bytes()
        content = b[: len(b) // 2]
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_checkpoint(p)


def test_missing_file_and_foreign_dict(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a brainseg checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a brainseg checkpoint"):
        load_checkpoint(tmp_path / "list.pt")


def test_failed_save_leaves_no_file(tmp_path):
    with pytest.raises(Exception):
        save_checkpoint({"fn": lambda: 0}, tmp_path / "x.pt")     # lambdas cannot be pickled
    assert list(tmp_path.iterdir()) == []


def test_scoring_runs_where_the_model_is(tmp_path, monkeypatch):
    """``load_model`` places the model on the asked device, and ``predict_probs`` without a
    device predicts where the model already is: it never moves a GPU model to the CPU (which
    made the paper profile score 3,000 detection images on the CPU of a GPU machine)."""
    import numpy as np

    from brainseg_lib import inference
    from brainseg_lib.data.cache import SplitArrays
    from brainseg_lib.training.config import TrainConfig

    net = UNet(in_channels=1, base=2)
    ck = tmp_path / "m.pt"
    save_checkpoint({"state_dict": net.state_dict(), "model_config": net.config(),
                     "train_config": TrainConfig(image_size=8, base_width=2).to_dict()}, ck)
    model = inference.load_model(ck, "cpu")
    assert not model.training and inference.model_device(model).type == "cpu"

    seen = []
    monkeypatch.setattr(inference, "predict_probabilities",
                        lambda m, images, device, *a, **k: seen.append(device) or np.zeros((1, 8, 8)))
    arrays = SplitArrays("val", 8, np.zeros((1, 8, 8), np.uint8), np.zeros((1, 8, 8), np.uint8),
                         ["a"], np.array([[8, 8]]), np.zeros(1))
    on_meta = inference.load_model(ck, torch.device("meta"))   # stands in for a GPU
    inference.predict_probs(on_meta, arrays)
    assert seen == [torch.device("meta")] and inference.model_device(on_meta).type == "meta"
    inference.predict_probs(model, arrays, "cpu")                # an explicit device still wins
    assert seen[-1] == torch.device("cpu")


def test_predicting_from_a_read_only_array_is_silent_and_equal():
    """A memory-mapped cache is read-only: predict_probabilities reads it without torch's
    'not writable' warning (which landed in the report's stderr) and predicts as from a copy."""
    import warnings

    import numpy as np

    from brainseg_lib import inference
    torch.manual_seed(0)
    net = UNet(in_channels=1, base=2).eval()
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16), dtype=np.uint8)
    frozen = images.copy()
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = inference.predict_probabilities(net, frozen, torch.device("cpu"))
    assert np.array_equal(p, inference.predict_probabilities(net, images, torch.device("cpu")))
    assert inference.read_only_tensor(frozen).data_ptr() == frozen.ctypes.data   # shared, not copied
