"""Histogram standardisation inside the model (``input_norm: nyul_zscore``,
``model.histogram_norm``): the torch form against the numpy form (``data.standardize``) on
hand-made scans, what it makes the model blind to, how the reference is set and kept, and its
ONNX export."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import small_config, synthetic_arrays, tiny_checkpoint_state

from brainseg_lib.data.standardize import LEVELS, head_landmarks, reference_landmarks, standardise
from brainseg_lib.model.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from brainseg_lib.model.histogram_norm import head_percentiles, standardise_head
from brainseg_lib.model.unet import UNet
from brainseg_lib.training import engine

REF = np.linspace(30, 250, len(LEVELS))


def scans(n=3, size=32, seed=0) -> np.ndarray:
    """uint8 scans: a black border, a head of random grey levels, one with no head at all."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size), np.uint8)
    for i in range(n - 1):
        out[i, 4:-4, 4:-4] = rng.integers(14, 256, (size - 8, size - 8))
        out[i, 10:16, 10:16] = 255                      # ties at the top
    return out


def as_float(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(u8).float().div(255).unsqueeze(1)


def test_percentiles_match_numpy_on_the_head_pixels():
    u8 = scans()
    marks, has_head = head_percentiles(as_float(u8))
    expected = head_landmarks(u8) / 255
    assert has_head.tolist() == [True, True, False]
    np.testing.assert_allclose(marks[:2].numpy(), expected[:2], atol=1e-5)


def test_the_torch_map_matches_the_numpy_map_before_its_rounding():
    u8 = scans()
    got = standardise_head(as_float(u8), torch.tensor(REF / 255, dtype=torch.float32)).squeeze(1).numpy()
    want = standardise(u8, REF).astype(np.float64) / 255
    assert np.abs(got - want).max() <= 0.6 / 255 + 1e-4      # numpy rounds to uint8, torch does not
    assert (got[2] == u8[2] / 255).all()                     # no head: unchanged
    assert (got[:, :4] == 0).all()                           # background unchanged


def test_a_model_with_it_is_blind_to_a_monotone_remap_of_the_head():
    torch.manual_seed(0)
    m = UNet(base=4, input_norm="nyul_zscore", reference=REF / 255).eval()
    u8 = scans()[:2]
    x = as_float(u8)
    remapped = torch.where(x > 0.05, 0.05 + (x - 0.05) ** 2 / 0.95, x)   # darker, still monotone
    with torch.no_grad():
        a, b = m(x), m(remapped)
        plain = UNet(base=4, input_norm="zscore").eval()
        c, d = plain(x), plain(remapped)
    assert (a - b).abs().max() < 0.2 * (c - d).abs().max()


def test_the_reference_is_required_saved_and_loaded(tmp_path):
    cfg = small_config(augment=False, epochs=1)
    cfg = type(cfg)(**{**cfg.to_dict(), "input_norm": "nyul_zscore"})
    with pytest.raises(ValueError, match="reference percentiles"):
        engine.build_model(cfg)
    with pytest.raises(ValueError, match="reference percentiles"):
        UNet(base=4, input_norm="nyul_zscore", reference=[0.1, 0.2])
    train, val = synthetic_arrays(16, seed=0), synthetic_arrays(8, seed=1, split="val")
    res = engine.fit(cfg, tmp_path / "run", train_arrays=train, val_arrays=val, progress=False)
    ck = load_checkpoint(res.best_path)
    want = reference_landmarks(train.images) / 255
    np.testing.assert_allclose(ck["state_dict"]["reference"].numpy(), want, rtol=1e-6)
    again = model_from_checkpoint(ck)
    np.testing.assert_allclose(again.reference.numpy(), want, rtol=1e-6)
    save_checkpoint(tiny_checkpoint_state(32, input_norm="nyul_zscore"), tmp_path / "tiny.pt")
    assert model_from_checkpoint(load_checkpoint(tmp_path / "tiny.pt")).reference.shape == (len(LEVELS),)


def test_it_exports_to_onnx_and_runs_the_same(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from brainseg_lib.model.onnx import export_onnx
    ckpt = save_checkpoint(tiny_checkpoint_state(32, input_norm="nyul_zscore"), tmp_path / "tiny.pt")
    out = export_onnx(ckpt)
    x = as_float(scans())
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    prob = sess.run(["probability"], {"image": x.numpy()})[0]
    with torch.no_grad():
        want = torch.sigmoid(model_from_checkpoint(load_checkpoint(ckpt)).eval()(x)).numpy()
    assert np.abs(prob - want).max() < 1e-4


def test_half_precision_input_is_standardised_in_float32():
    x = as_float(scans())
    ref = torch.tensor(REF / 255, dtype=torch.float32)
    for dtype in (torch.float16, torch.bfloat16):
        got = standardise_head(x.to(dtype), ref)
        assert got.dtype == dtype and torch.isfinite(got.float()).all()
        assert (got.float() - standardise_head(x.to(dtype).float(), ref)).abs().max() < 1e-2


def test_training_mode_leaves_the_standardisation_to_the_training_loop(tmp_path):
    """In training the model z-scores only (the engine standardised the scans before augmenting
    them); in eval mode it standardises its input itself."""
    from brainseg_lib.model.unet import normalize_input
    m = UNet(base=4, input_norm="nyul_zscore", reference=REF / 255)
    x = as_float(scans())
    ref = torch.tensor(REF / 255, dtype=torch.float32)
    assert torch.equal(normalize_input(x, m.input_norm, m.reference, training=True), normalize_input(x, "zscore"))
    assert torch.allclose(normalize_input(x, m.input_norm, m.reference),
                          normalize_input(standardise_head(x, ref), "zscore"))
    seen = []
    m.encoders[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    m.train()(x)
    m.eval()(x)
    assert not torch.allclose(seen[0], seen[1])


def test_the_training_loop_trains_on_scans_standardised_before_augmentation(tmp_path, monkeypatch):
    from brainseg_lib.data.standardize import standardised_to_own_mean
    train = synthetic_arrays(16, seed=0)
    ref, done = standardised_to_own_mean(train)
    np.testing.assert_allclose(ref, reference_landmarks(train.images) / 255)
    assert np.array_equal(done.images, standardise(train.images, ref * 255))
    assert np.array_equal(done.masks, train.masks) and done.names == train.names
    seen = []
    real = engine.resident_tensors
    monkeypatch.setattr(engine, "resident_tensors", lambda arrays, dev: seen.append(arrays) or real(arrays, dev))
    cfg = small_config(augment=False, epochs=1)
    cfg = type(cfg)(**{**cfg.to_dict(), "input_norm": "nyul_zscore"})
    engine.fit(cfg, tmp_path / "run", train_arrays=train, val_arrays=synthetic_arrays(8, seed=1, split="val"),
               progress=False)
    assert np.array_equal(seen[0].images, done.images)          # TRAIN standardised ...
    assert np.array_equal(seen[1].images, synthetic_arrays(8, seed=1, split="val").images)   # VAL as it is
