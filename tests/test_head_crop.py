"""Crop-to-head (``data.head_crop``, release lever round 7): the box rule on hand-made images, the
paste back into the native frame, and the crop carried through the caches, the external halves,
the scoring at native size and the training config."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from brainseg_lib.data import cache, head_crop
from brainseg_lib.data import external as ext_data
from brainseg_lib.evaluation import external as ext_eval
from brainseg_lib.inference import to_native, to_native_frame
from brainseg_lib.training.config import TrainConfig


def head_image(h=100, w=80, rows=(20, 60), cols=(10, 50), value=120) -> np.ndarray:
    img = np.zeros((h, w), np.uint8)
    img[rows[0]:rows[1], cols[0]:cols[1]] = value
    return img


def test_box_is_the_head_widened_by_the_margin():
    # a 40x40 head: widened by 4% of 40 = 1.6 px on each side, outwards
    assert head_crop.head_box(head_image()) == (18, 62, 8, 52)


def test_box_is_clipped_to_the_image():
    assert head_crop.head_box(head_image(rows=(0, 100), cols=(0, 40))) == (0, 100, 0, 42)


def test_small_components_do_not_widen_the_box():
    img = head_image()
    img[90:96, 70:76] = 255          # 36 px survive the opening, but are 0.45% of the image (< 0.5%)
    assert head_crop.head_box(img) == (18, 62, 8, 52)
    img[88:98, 68:78] = 255          # 100 px (1.25%) is kept: the box now reaches it
    # rows 20..98 (78 px, margin 3.12) and columns 10..78 (68 px, margin 2.72), clipped
    assert head_crop.head_box(img) == (16, 100, 7, 80)


def test_nothing_found_gives_the_whole_image():
    assert head_crop.head_box(np.zeros((30, 40), np.uint8)) == (0, 30, 0, 40)
    tiny = head_image(rows=(40, 50), cols=(30, 40))     # a box under 5% of the frame
    assert head_crop.head_box(tiny) == (0, 100, 0, 80)
    with pytest.raises(ValueError, match="2-D"):
        head_crop.head_box(np.zeros((2, 3, 4)))


def test_crop_then_paste_restores_the_box_and_zeros_elsewhere():
    img = np.arange(100 * 80, dtype=np.float32).reshape(100, 80)
    box = (18, 62, 8, 52)
    back = head_crop.paste(head_crop.crop(img, box), box, img.shape)
    assert np.array_equal(back[18:62, 8:52], img[18:62, 8:52])
    assert back.sum() == img[18:62, 8:52].sum()
    with pytest.raises(ValueError, match="does not fit"):
        head_crop.paste(np.zeros((3, 3)), box, img.shape)
    image, mask, whole = head_crop.framed(img, img > 0, head_crop=False)
    assert whole == (0, 100, 0, 80) and image is not None and mask.shape == img.shape


def test_to_native_frame_pastes_into_the_box():
    prob = np.ones((16, 16), np.float32)
    out = to_native_frame(prob, 100, 80, (18, 62, 8, 52))
    assert out.shape == (100, 80) and np.allclose(out[18:62, 8:52], 1.0, atol=1e-6)
    assert (out > 0).sum() == 44 * 44
    ramp = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    assert np.array_equal(to_native_frame(ramp, 100, 80, None), to_native(ramp, 100, 80))
    assert np.array_equal(to_native_frame(ramp, 100, 80, (0, 100, 0, 80)), to_native(ramp, 100, 80))


def test_split_arrays_know_their_frames():
    a = cache.SplitArrays("x", 8, np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 8), np.uint8),
                          ["a", "b"], np.array([[10, 20], [30, 40]]), np.zeros(2))
    assert a.frame_boxes().tolist() == [[0, 10, 0, 20], [0, 30, 0, 40]]
    b = cache.SplitArrays("y", 8, np.zeros((1, 8, 8), np.uint8), np.zeros((1, 8, 8), np.uint8),
                          ["c"], np.array([[50, 60]]), np.zeros(1), np.array([[1, 49, 2, 58]]))
    assert a.concat(a).boxes is None
    assert a.concat(b).boxes.tolist() == [[0, 10, 0, 20], [0, 30, 0, 40], [1, 49, 2, 58]]
    assert a.concat(b).head(1).boxes.tolist() == [[0, 10, 0, 20]]


def test_a_setting_added_later_is_recorded_only_when_set():
    assert "head_crop" not in TrainConfig().to_dict()
    cfg = TrainConfig(head_crop=True)
    assert cfg.to_dict()["head_crop"] is True
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict(TrainConfig().to_dict()).head_crop is False
    with pytest.raises(ValueError, match="head_crop"):
        TrainConfig.from_dict({"head_crop": "yes"})


def test_br35h_cache_keeps_cropped_and_whole_scans_apart(fake_root):
    whole = cache.load_split("train", 16, root=fake_root)
    cropped = cache.load_split("train", 16, root=fake_root, head_crop=True)
    assert whole.boxes is None and cropped.boxes.shape == (len(whole), 4)
    assert cache.cache_path("train", 16, True) != cache.cache_path("train", 16)
    again = cache.load_split("train", 16, root=fake_root, head_crop=True)     # from the cache
    assert np.array_equal(again.boxes, cropped.boxes) and np.array_equal(again.images, cropped.images)
    assert cache.load_split("train", 16, root=fake_root).boxes is None
    named = cache.load_named(whole.names[::-1], 16, "re-drawn", fake_root, head_crop=True)
    assert np.array_equal(named.boxes, cropped.boxes[::-1])


def make_cornered_external(root):
    """One dev slice per patient: a 40x30 'head' in the top-left of a 96x96 frame, a bright
    10x10 tumour inside it (and its mask)."""
    rows = []
    for half in ext_data.HALVES:
        for sub in ("images", "masks"):
            (root / half / sub).mkdir(parents=True)
        for patient in ("PA", "PB"):
            name = f"{half}_{patient}"
            img = np.zeros((96, 96), np.uint8)
            img[4:44, 6:36] = 100
            mask = np.zeros((96, 96), np.uint8)
            img[14:24, 12:22] = 250
            mask[14:24, 12:22] = 255
            Image.fromarray(img).save(root / half / "images" / f"{name}.png")
            Image.fromarray(mask).save(root / half / "masks" / f"{name}.png")
            rows.append({"name": name, "patient": patient, "half": half, "tumor_pixels": 100})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


class Bright(torch.nn.Module):
    """Logit +10 where the input is above 0.8 (the tumour here), -10 elsewhere."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.where(x > 0.8, 10.0, -10.0)


def test_cropped_external_slices_are_scored_in_their_native_frame(tmp_path):
    root = make_cornered_external(tmp_path / "ext")
    half = ext_data.load_half("dev", 16, root, head_crop=True)
    assert half.arrays.boxes.tolist() == [list(head_crop.head_box(
        np.asarray(Image.open(root / "dev" / "images" / "dev_PA.png"))))] * 2
    # the tumour fills more of the input once the head does
    whole = ext_data.load_half("dev", 16, root)
    assert half.arrays.masks.sum() > 2 * whole.arrays.masks.sum()
    rows = ext_eval.score_half(Bright(), half, boundary=False)
    assert rows["dice"].min() > 0.8
    # the same probabilities read as if they showed the whole frame land in the wrong place
    half.arrays.boxes = None
    assert ext_eval.score_half(Bright(), half, boundary=False)["dice"].max() < 0.2


def test_round7_plan_scores_h1_with_the_crop_and_h2_trains_on_it(tmp_path):
    import yaml

    from brainseg_lib.study import release_levers as rl
    plan = rl.load_plan(rl.PLAN_YAML.parent / "release_levers_7.yaml")
    assert rl.declared_settings(plan, "h1-r0-head-crop", 0)["head_crop"] is True
    assert rl.trained_tag(plan, "h1-r0-head-crop") == "r0-cpu"
    # a trial without the crop records what it always did (earlier rounds' files stay valid)
    assert "head_crop" not in rl.declared_settings(plan, "r0-cpu", 0)
    assert rl.trial_params(plan, "h2-head-crop", 1)["head_crop"] is True
    assert "head_crop" not in rl.trial_params(plan, "r0-cpu", 1)
    # the inference crop scores another trial's checkpoints; a trained crop goes in `set`
    base = {k: v for k, v in plan.items() if k != "source"}
    r0, h1, _ = base["trials"]
    path = tmp_path / "release_levers_8.yaml"
    path.write_text(yaml.safe_dump({**base, "name": "round8", "trials": [
        r0, {k: v for k, v in h1.items() if k != "checkpoints_of"}]}))
    with pytest.raises(ValueError, match="head_crop in `set`"):
        rl.load_plan(path)


def test_round8_scores_ensembles_of_head_crops_with_flips_and_component_removal():
    from brainseg_lib.study import release_levers as rl
    plan = rl.load_plan(rl.PLAN_YAML.parent / "release_levers_8.yaml")
    h5 = rl.declared_settings(plan, "h5-h3-tta-min-component", 1)
    assert (h5["tta"], h5["min_component"]) == (True, 0.002)
    assert h5["checkpoint_run"] == [f"cpu-official-bce_dice-seed{k}-h2-head-crop" for k in (3, 4, 5)]
    assert rl.declared_settings(plan, "h3-h2-ensemble3", 1)["checkpoint_run"] == h5["checkpoint_run"]
    h4 = rl.declared_settings(plan, "h4-h2-tta-min-component", 2)
    assert h4["checkpoint_run"] == "cpu-official-bce_dice-seed2-h2-head-crop" and h4["tta"] is True


def test_a_changed_crop_rule_rebuilds_the_cache(fake_root, monkeypatch):
    first = cache.load_split("train", 16, root=fake_root, head_crop=True)
    monkeypatch.setattr(head_crop, "MARGIN", 0.25)
    wider = cache.load_split("train", 16, root=fake_root, head_crop=True)
    widths = lambda b: (b[:, 1] - b[:, 0]) + (b[:, 3] - b[:, 2])      # noqa: E731
    assert (widths(wider.boxes) >= widths(first.boxes)).all() and not np.array_equal(wider.boxes, first.boxes)


def test_a_head_crop_checkpoint_is_evaluated_on_cropped_scans(fake_root, tmp_path):
    from conftest import tiny_checkpoint_state

    from brainseg_lib.evaluation.evaluate import evaluate_checkpoint, evaluate_model
    from brainseg_lib.model.checkpoint import model_from_checkpoint, save_checkpoint
    state = tiny_checkpoint_state(16)
    state["train_config"] = {**state["train_config"], "head_crop": True}
    path = save_checkpoint(state, tmp_path / "crop.pt")
    got = evaluate_checkpoint(path, "train", device="cpu", data_root=fake_root)
    cropped = cache.load_split("train", 16, root=fake_root, head_crop=True)
    want = evaluate_model(model_from_checkpoint(state), "train", 16, data_root=fake_root, arrays=cropped,
                          boundary=True)
    assert got.per_image["pred_pixels"].tolist() == want.per_image["pred_pixels"].tolist()
    whole = evaluate_model(model_from_checkpoint(state), "train", 16, data_root=fake_root)
    assert got.per_image["pred_pixels"].tolist() != whole.per_image["pred_pixels"].tolist()


def test_run_figures_of_a_head_crop_model_read_cropped_scans(monkeypatch):
    from brainseg_lib.data import healthy
    from brainseg_lib.study import experiment, levers
    seen = {}

    def fake_healthy(*a, head_crop=False, **kw):
        seen["healthy"] = head_crop
        raise FileNotFoundError("stop here")
    monkeypatch.setattr(healthy, "load_healthy", fake_healthy)

    class Ev:
        summary = {"global": {"f1": 1.0}, "n_images": 1,
                   "boundary": {"hd95": {"median": 0.0}, "nsd": {"mean": 1.0}}}
    monkeypatch.setattr("brainseg_lib.inference.load_model", lambda *a, **k: None)
    levers.selection_figures("x.pt", None, TrainConfig(head_crop=True, device="cpu"), external_dev=False,
                             val_eval=Ev())
    assert seen["healthy"] is True
    skipped = experiment.detection_points("x.pt", TrainConfig(head_crop=True, device="cpu"))
    assert "head crops" in skipped["skipped"]


def test_scan_settings_take_a_crop_from_training_or_from_inference():
    from brainseg_lib.inference import ScanSettings
    assert ScanSettings.of_checkpoint({"train_config": {"head_crop": True}}).head_crop
    assert ScanSettings.of_checkpoint({"train_config": {}, "inference": {"head_crop": True}}).head_crop
    assert ScanSettings.of_checkpoint({"train_config": {}}) == ScanSettings()


def test_head_frame_table_measures_each_set_from_its_images(tmp_path, monkeypatch):
    from brainseg_lib.study import head_frames
    small, whole = tmp_path / "small.png", tmp_path / "blank.png"
    Image.fromarray(head_image()).save(small)                    # box 44x44 of 100x80
    Image.fromarray(np.zeros((50, 50), np.uint8)).save(whole)    # no head: the whole frame
    assert head_frames.box_share(head_image()) == pytest.approx(44 * 44 / 8000)
    monkeypatch.setattr(head_frames, "set_images", lambda data_root=None: {"a": [small, small], "b": [small, whole]})
    table = head_frames.head_frame_table()
    assert table["n_images"].tolist() == [2, 2]
    assert table.loc[0, "q50"] == pytest.approx(44 * 44 / 8000) and table.loc[1, "q90"] > 0.9
    assert table["whole_frame_share"].tolist() == [0.0, 0.5]
    md = head_frames.table_markdown(table)
    assert "| a | 2 | 0.24 | 0.24 | 0.24 | 0.24 | 0.24 | 0.00 |" in md
