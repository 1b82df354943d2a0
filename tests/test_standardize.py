"""Histogram standardisation of a scan's head to reference landmarks (``data.standardize``,
round 15's lever, ``params/release_levers_15.yaml``), on hand-made uint8 images; and how a
release trial declares it, passes it to scoring and is refused at release until predict applies it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from brainseg_lib.data.standardize import HEAD_U8, LEVELS, head_landmarks, reference_landmarks, standardise
from brainseg_lib.study import release_levers as rl


def head_image(values, size=16):
    """A size x size image: a black border of 2 pixels around a head whose pixels cycle through ``values``."""
    img = np.zeros((size, size), np.uint8)
    inner = np.resize(np.asarray(values, np.uint8), (size - 4) ** 2).reshape(size - 4, size - 4)
    img[2:-2, 2:-2] = inner
    return img


def test_landmarks_are_percentiles_of_the_head_pixels_only():
    img = head_image(np.arange(20, 220))
    marks = head_landmarks(img[None])[0]
    head = img[img > HEAD_U8].astype(float)
    assert np.allclose(marks, np.percentile(head, LEVELS))
    assert np.isnan(head_landmarks(np.zeros((1, 8, 8), np.uint8))).all()   # no head: no landmarks


def test_a_scan_standardised_to_its_own_landmarks_is_unchanged():
    img = head_image(np.arange(20, 220))
    assert np.array_equal(standardise(img[None], head_landmarks(img[None])[0])[0], img)


def test_an_affine_remap_of_the_head_is_undone_and_the_background_kept():
    ref_img = head_image(np.arange(40, 240))
    ref = reference_landmarks(ref_img[None])
    dark = ref_img.copy()
    dark[ref_img > 0] = (ref_img[ref_img > 0].astype(float) * 0.5).astype(np.uint8)   # a darker scanner
    out = standardise(dark[None], ref)[0]
    assert np.abs(out.astype(int) - ref_img.astype(int)).max() <= 2
    assert (out[:2] == 0).all() and (out[:, :2] == 0).all()                      # background as it was
    assert np.allclose(head_landmarks(out[None])[0], ref, atol=2)


def test_the_mapping_is_monotone_and_keeps_the_head_above_the_head_level():
    rng = np.random.default_rng(0)
    img = head_image(rng.integers(14, 256, 400))
    ref = np.linspace(30, 250, len(LEVELS))
    out = standardise(img[None], ref)[0]
    head = img > HEAD_U8
    order = np.argsort(img[head], kind="stable")
    assert (np.diff(out[head][order].astype(int)) >= 0).all()
    assert (out[head] > HEAD_U8).all()


def test_a_saturated_scan_with_tied_landmarks_is_still_mapped():
    img = head_image([255] * 90 + [100] * 10)                  # most landmarks tie at 255
    out = standardise(img[None], np.linspace(30, 250, len(LEVELS)))[0]
    assert out.dtype == np.uint8 and (out[img == 0] == 0).all()


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        standardise(np.zeros((1, 4, 4), np.float32), np.linspace(20, 240, len(LEVELS)))
    with pytest.raises(ValueError, match="finite"):
        standardise(np.zeros((1, 4, 4), np.uint8), [1.0, 2.0])
    with pytest.raises(ValueError, match="no image"):
        reference_landmarks(np.zeros((2, 4, 4), np.uint8))


ROUND13 = rl.PLAN_YAML.parent / "release_levers_13.yaml"
H7 = "h7-h6-ensemble3-tta-min-component"


def _plan_with(tmp_path, extra: dict, drop=()):
    base = {k: v for k, v in rl.load_plan(ROUND13).items() if k != "source"}
    h7 = {k: v for k, v in base["trials"][2].items() if k not in drop}
    trial = {**h7, "tag": "hx-h7-standardized", "against": H7, **extra}
    path = tmp_path / "release_levers_x.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps({**base, "name": "roundx",
                                                          "trials": [*base["trials"][:3], trial]}))))
    return rl.load_plan(path)


def test_a_trial_declares_standardisation_and_scoring_gets_it(tmp_path, monkeypatch):
    from brainseg_lib.study import release_scoring
    p = _plan_with(tmp_path, {"standardize": "br35h_train"})
    assert "standardize" not in rl.declared_settings(p, H7, 0)        # h7's recorded settings still match
    assert rl.how_scored(rl.declared_settings(p, "hx-h7-standardized", 0))["standardize"] == "br35h_train"
    seen, refs = [], []
    monkeypatch.setattr(release_scoring, "score_checkpoint", lambda ckpts, **kw: seen.append(kw) or {})
    monkeypatch.setattr(rl, "standardize_reference", lambda *a, **k: refs.append(a) or np.arange(11.0))
    for ck in rl.checkpoints(p, "hx-h7-standardized", 0, tmp_path):
        ck.parent.mkdir(parents=True)
        ck.write_bytes(b"")
    rl.score_trial(p, "hx-h7-standardized", 0, tmp_path,
                   **rl.scoring_settings(p, "hx-h7-standardized", 0, tmp_path))
    assert np.array_equal(seen[0]["reference"], np.arange(11.0)) and len(refs) == 1
    rl.score_trial(p, H7, 0, tmp_path, **rl.scoring_settings(p, H7, 0, tmp_path))
    assert seen[1]["reference"] is None


def test_standardisation_is_refused_on_a_trial_that_trains(tmp_path):
    ensemble = ("ensemble_of", "members", "tta", "min_component")
    with pytest.raises(ValueError, match="standardize"):
        _plan_with(tmp_path, {"standardize": "br35h_train", "set": {"loss": "bce"}}, drop=ensemble)
    with pytest.raises(ValueError, match="standardize"):
        _plan_with(tmp_path, {"standardize": "histogram-of-my-choice"})
    gated = {"checkpoints_of": "h6-head-crop-mri-aug", "gate": "healthy_val", "against": "r0-cpu",
             "standardize": "br35h_train"}
    with pytest.raises(ValueError, match="gate is calibrated"):
        _plan_with(tmp_path, gated, drop=ensemble)
