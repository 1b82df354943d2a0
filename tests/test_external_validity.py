"""The external-validity work: an epoch budget that no clock changes, healthy scans in
training, input normalisation and augmentation, boundary metrics, the external set, the
lever table and a release that refuses a cut run. Tiny hand-made inputs only."""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from conftest import synthetic_arrays

from brainseg_lib import paths
from brainseg_lib.data import external as ext_data
from brainseg_lib.data import healthy, loaders
from brainseg_lib.data.errors import ImageReadError
from brainseg_lib.evaluation import boundary
from brainseg_lib.evaluation import external as ext_eval
from brainseg_lib.model.unet import UNet, normalize_input
from brainseg_lib.report import findings, model_card
from brainseg_lib.study import levers
from brainseg_lib.study import release as release_release
from brainseg_lib.training import config as train_config
from brainseg_lib.training import engine

torch.set_num_threads(1)


def tiny_config(**kw) -> train_config.TrainConfig:
    base = dict(image_size=32, base_width=4, batch_size=8, epochs=3, lr=1e-2, device="cpu", seed=0,
                augment=True, deterministic=True, channels_last=False, threads=1)
    base.update(kw)
    return train_config.TrainConfig(**base)


# --------------------------------------------------------------------------- epoch budget
def test_a_slowed_run_trains_the_same_weights(tmp_path):
    """The budget is epochs: a run slowed down on purpose ends with identical weights."""
    arrays, val = synthetic_arrays(16, seed=0), synthetic_arrays(4, seed=1, split="val")
    cfg = tiny_config(snapshot_epochs=[2])
    fast = engine.fit(cfg, tmp_path / "fast", train_arrays=arrays, val_arrays=val, progress=False)
    slow = engine.fit(cfg, tmp_path / "slow", train_arrays=arrays, val_arrays=val, progress=False,
                     callbacks=(lambda row: time.sleep(0.3),))
    a = torch.load(fast.last_path, weights_only=True)["state_dict"]
    b = torch.load(slow.last_path, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the slowdown is real: its three 0.3 s sleeps alone are in its wall time (comparing with the
    # fast run's own time was flaky on a loaded machine)
    assert slow.wall_seconds >= 3 * 0.3 - 1e-3
    assert not fast.cut_by_time and not slow.cut_by_time
    # snapshots are taken by epoch, each with the seconds at which it was reached
    assert set(fast.snapshots) == {2} and fast.snapshots[2]["train_seconds"] > 0
    snap = torch.load(fast.snapshots[2]["path"], weights_only=True)
    assert snap["epoch"] == 2


def test_a_time_cap_cuts_and_marks_the_run(tmp_path):
    arrays, val = synthetic_arrays(16, seed=0), synthetic_arrays(4, seed=1, split="val")
    res = engine.fit(tiny_config(epochs=50, max_train_seconds=1e-9), tmp_path / "cut", train_arrays=arrays,
                    val_arrays=val, progress=False)
    assert res.cut_by_time and list(res.history["epoch"]) == [1]
    assert torch.load(res.last_path, weights_only=True)["cut_by_time"] is True


def test_release_refuses_a_cut_run_and_an_unscored_one():
    with pytest.raises(release_release.ReleaseRefused, match="cut by max_train_seconds"):
        release_release.refuse_unfinished({"cut_by_time": True, "split": "test", "epochs_run": 3,
                                   "config": {"max_train_seconds": 300, "epochs": 70}}, "run.json")
    with pytest.raises(release_release.ReleaseRefused, match="not scored on TEST"):
        release_release.refuse_unfinished({"cut_by_time": False, "split": "val", "config": {}}, "run.json")
    release_release.refuse_unfinished({"cut_by_time": False, "split": "test", "config": {}}, "run.json")


def test_profiles_that_write_table1_have_no_time_cap():
    from brainseg_lib.study.profiles import load_profile
    for name in ("cpu", "paper", "smoke"):
        p = load_profile(name)
        assert p.get("max_train_seconds") is None, name
        assert "snapshot_seconds" not in p, name
    assert load_profile("cpu")["threads"] >= 1            # Table I's float results depend on it


# --------------------------------------------------------------------------- normalisation, augmentation
def test_zscore_input_is_standardised_and_ignores_brightness_and_contrast():
    x = torch.rand(3, 1, 16, 16)
    z = normalize_input(x, "zscore")
    assert torch.allclose(z.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(dim=(1, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)
    assert torch.allclose(normalize_input(0.5 * x + 0.2, "zscore"), z, atol=1e-4)
    assert torch.equal(normalize_input(x, "none"), x)
    with pytest.raises(ValueError, match="input_norm"):
        UNet(base=4, input_norm="minmax")
    net = UNet(base=4, input_norm="zscore").eval()
    assert net.config()["input_norm"] == "zscore"


def test_basic_level_replays_the_original_augmentation():
    x, y = torch.rand(4, 1, 16, 16), (torch.rand(4, 1, 16, 16) > 0.7).float()
    a = loaders.augment_batch(x, y, loaders.AugmentConfig(), torch.Generator().manual_seed(3))
    b = loaders.augment_batch(x, y, loaders.augment_config("basic"), torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="augment_level"):
        loaders.augment_config("extreme")


def test_full_augmentation_is_reproducible_bounded_and_keeps_masks_binary():
    x, y = torch.rand(8, 1, 24, 24), (torch.rand(8, 1, 24, 24) > 0.7).float()
    cfg = loaders.augment_config("full")
    a = loaders.augment_batch(x, y, cfg, torch.Generator().manual_seed(5))
    b = loaders.augment_batch(x, y, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].min() >= 0 and a[0].max() <= 1
    assert set(a[1].unique().tolist()) <= {0.0, 1.0}
    c = loaders.augment_batch(x, y, cfg, torch.Generator().manual_seed(6))
    assert not torch.equal(a[0], c[0])


def test_gaussian_blur_per_image_sigma():
    flat = torch.full((2, 1, 9, 9), 0.3)
    assert torch.allclose(loaders.gaussian_blur(flat, torch.tensor([0.5, 1.5])), flat, atol=1e-6)
    dot = torch.zeros(2, 1, 15, 15)
    dot[:, :, 7, 7] = 1.0
    out = loaders.gaussian_blur(dot, torch.tensor([0.5, 2.0]))
    assert out[0, 0, 7, 7] > out[1, 0, 7, 7]                 # the wider sigma spreads more
    assert torch.allclose(out.sum(dim=(1, 2, 3)), torch.ones(2), atol=1e-4)   # mass kept


# --------------------------------------------------------------------------- healthy scans
@pytest.fixture
def healthy_root(tmp_path, monkeypatch):
    root = tmp_path / "br35h"
    (root / "no").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (40 + i, 50), dtype=np.uint8)).save(root / "no" / f"no{i}.jpg")
    monkeypatch.setenv("BRAINSEG_SPLITS", str(tmp_path / "splits"))
    healthy.write_manifest(healthy.build_manifest(0, root, val_size=2, train_pool=4))
    return root


def test_healthy_scans_join_training_as_empty_masks(healthy_root):
    man = healthy.load_manifest(0)
    assert man.groupby("role").size().to_dict() == {"report": 2, "train": 4, "val": 2}
    tumours = synthetic_arrays(4, size=32)
    mixed = healthy.with_healthy(tumours, "train", 0.5, 0, healthy_root)
    assert len(mixed) == 6 and mixed.names[4:] == list(man.loc[man.role == "train", "name"])[:2]
    assert mixed.masks[4:].sum() == 0 and mixed.images.shape == (6, 32, 32)
    assert (mixed.native_tumour_fraction[4:] == 0).all()
    assert healthy.with_healthy(tumours, "train", 0.0, 0, healthy_root) is tumours
    with pytest.raises(ValueError, match="holds 4"):
        healthy.with_healthy(tumours, "train", 2.0, 0, healthy_root)
    # the cache is read back identically
    again = healthy.load_healthy("train", 32, 0, 2, healthy_root)
    np.testing.assert_array_equal(again.images, mixed.images[4:])


def test_fit_mixes_healthy_scans_at_the_ratio(healthy_root, tmp_path):
    arrays, val = synthetic_arrays(4, seed=0), synthetic_arrays(2, seed=1, split="val")
    res = engine.fit(tiny_config(epochs=1, healthy_ratio=1.0, batch_size=4), tmp_path / "h",
                    train_arrays=arrays, val_arrays=val, data_root=healthy_root, progress=False)
    log = (res.run_dir / "train_log.txt").read_text()
    assert "train=8 (healthy 4) val=4" in log


def test_missing_healthy_split_says_how_to_write_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINSEG_SPLITS", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="healthy-split"):
        healthy.load_manifest(0)


# --------------------------------------------------------------------------- boundary metrics
def test_boundary_metrics_by_hand():
    gt = np.zeros((40, 40), bool)
    gt[10:20, 10:20] = True
    shifted = np.roll(gt, 3, axis=0)                # every outline point moves 3 px (or less)
    m = boundary.boundary_metrics(shifted, gt)
    assert m["hd95"] == pytest.approx(3.0)
    assert 0 < m["nsd"] < 1
    same = boundary.boundary_metrics(gt, gt)
    assert same == {"hd95": 0.0, "nsd": 1.0, "hd95_diag": 0.0, "nsd_diag": 1.0}
    assert m["hd95_diag"] == pytest.approx(3.0 / np.hypot(40, 40))
    # within the tolerance: a 2 px shift keeps every outline point within 2 px
    assert boundary.boundary_metrics(np.roll(gt, 2, axis=1), gt, tolerance=2.0)["nsd"] == pytest.approx(1.0)


def test_boundary_empty_mask_rule():
    gt = np.zeros((30, 40), bool)
    assert all(math.isnan(v) for v in boundary.boundary_metrics(gt, gt).values())
    assert all(math.isnan(v) for v in boundary.boundary_metrics(~gt, gt).values())
    gt[5:9, 5:9] = True
    m = boundary.boundary_metrics(np.zeros_like(gt), gt)
    assert m["hd95"] == pytest.approx(50.0) and m["nsd"] == 0.0          # the diagonal of 30x40
    assert math.isnan(m["hd95_diag"]) and m["nsd_diag"] == 0.0          # a miss is counted apart
    with pytest.raises(ValueError, match="shape"):
        boundary.boundary_metrics(np.zeros((3, 3)), gt)
    s = boundary.summarize_boundary(pd.DataFrame({"hd95": [1.0, 3.0, np.nan], "nsd": [1.0, 0.5, np.nan]}))
    assert s["hd95"] == {"mean": 2.0, "median": 2.0, "n_images": 2} and s["nsd"]["mean"] == 0.75
    s = boundary.summarize_boundary(pd.DataFrame({"hd95": [0.1, 50.0, np.nan], "nsd": [1.0, 0.0, np.nan],
                                                  "hd95_diag": [0.002, np.nan, np.nan],
                                                  "nsd_diag": [1.0, 0.0, np.nan]}))
    assert s["missed"] == 1 and s["hd95_diag"] == {"mean": 0.002, "median": 0.002, "n_images": 1}


def test_scale_free_boundary_metrics_do_not_depend_on_image_size():
    """The same shape and error drawn at 1x and 4x: pixel HD95 grows 4x, the diagonal share
    does not; NSD at 2 px changes with size, NSD at 1% of the diagonal does not."""
    def case(k):
        gt = np.zeros((60 * k, 60 * k), bool)
        gt[20 * k:40 * k, 20 * k:40 * k] = True
        return boundary.boundary_metrics(np.roll(gt, 2 * k, axis=0), gt)
    small, big = case(1), case(4)
    assert big["hd95"] == pytest.approx(4 * small["hd95"])
    assert big["hd95_diag"] == pytest.approx(small["hd95_diag"])
    assert big["nsd_diag"] == pytest.approx(small["nsd_diag"], abs=0.05)
    assert big["nsd"] < small["nsd"] - 0.2


# --------------------------------------------------------------------------- external set
def make_external(root, mismatch: bool = False):
    """Two patients per half; patient A has a tumour slice and a clean slice, B one tumour slice."""
    rows = []
    for half in ext_data.HALVES:
        for sub in ("images", "masks"):
            (root / half / sub).mkdir(parents=True)
        for patient, slices in (("PA", (1, 0)), ("PB", (1,))):
            for k, has in enumerate(slices):
                name = f"{half}_{patient}_{k}"
                img = np.full((32, 32), 30, np.uint8)
                mask = np.zeros((32, 32), np.uint8)
                if has:
                    img[8:16, 8:16] = 220
                    mask[8:16, 8:16] = 255
                Image.fromarray(img).save(root / half / "images" / f"{name}.png")
                m = Image.fromarray(mask)
                if mismatch and half == "dev" and patient == "PB":
                    m = m.resize((30, 32))
                m.save(root / half / "masks" / f"{name}.png")
                rows.append({"name": name, "patient": f"{half}-{patient}", "half": half,
                             "tumor_pixels": int(mask.sum() // 255)})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def test_missing_external_set_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINSEG_EXTERNAL", str(tmp_path / "absent"))
    assert not ext_data.available()
    with pytest.raises(ext_data.ExternalDataNotFound, match="BRAINSEG_EXTERNAL") as e:
        ext_data.load_half("dev", 32)
    assert "lgg-mri-segmentation" in str(e.value)


def test_image_and_mask_of_different_sizes_name_the_file(tmp_path):
    root = make_external(tmp_path / "ext", mismatch=True)
    with pytest.raises(ImageReadError, match="dev_PB_0.png"):
        ext_data.load_half("dev", 32, root)


class Oracle(torch.nn.Module):
    """Logit +10 where the image is bright, -10 elsewhere: a perfect segmenter here."""

    def __init__(self, offset: int = 0):
        super().__init__()
        self.w, self.offset = torch.nn.Parameter(torch.zeros(1)), offset

    def forward(self, x):
        out = torch.where(x > 0.5, 10.0, -10.0)
        return torch.roll(out, self.offset, dims=-1) if self.offset else out


def test_external_figures_by_hand(tmp_path):
    root = make_external(tmp_path / "ext")
    half = ext_data.load_half("test", 32, root)
    assert half.patients == ["test-PA", "test-PA", "test-PB"]
    perfect = ext_eval.score_half(Oracle(), half)
    s = ext_eval.summarize_half(perfect, n_boot=50)
    assert (s["pooled_f1"], s["mean_dice_tumour"], s["clean_marked_share"]) == (1.0, 1.0, 0.0)
    assert s["hd95_median"] == 0.0 and s["nsd_mean"] == 1.0 and s["n_patients"] == 2
    # shifted by 4 px: Dice of two 8x8 squares overlapping 8x4 = 0.5 on each tumour slice
    shifted = ext_eval.score_half(Oracle(offset=4), half)
    s = ext_eval.summarize_half(shifted, n_boot=200)
    assert s["pooled_f1"] == pytest.approx(0.5) and s["mean_dice_tumour"] == pytest.approx(0.5)
    assert s["hd95_median"] == pytest.approx(4.0)
    lo, hi = s["ci95_by_patient"]["pooled_f1"]
    assert lo <= 0.5 <= hi
    text = findings.external_findings({"test": s})
    assert "pooled F1 0.500" in text and "0 of 1 clean slices" in text
    # on a common scale: 4 px of a 32x32 slice's diagonal, NSD at 1% of it (0.45 px)
    assert s["hd95_diag_median_detected"] == pytest.approx(4.0 / np.hypot(32, 32))
    assert f"HD95 median {100 * 4.0 / np.hypot(32, 32):.1f}% of the image diagonal" in text


def test_external_cis_resample_whole_patients():
    """The patient bootstrap, by hand: draw patients (sorted by id) with replacement, pool
    all their slices, and take the 2.5 and 97.5 percentiles of each figure."""
    rng = np.random.default_rng(0)
    n = 40
    tumour = rng.random(n) < 0.7
    tp = np.where(tumour, rng.integers(0, 60, n), 0)
    df = pd.DataFrame({"patient": rng.choice(["p3", "p1", "p4", "p2", "p5"], n), "tumour": tumour,
                       "tp": tp, "fp": rng.integers(0, 20, n), "fn": np.where(tumour, rng.integers(1, 30, n), 0),
                       "marked": rng.random(n) < 0.5, "dice": np.where(tumour, rng.random(n), np.nan),
                       "hd95": np.where(tumour, rng.random(n) * 50, np.nan),
                       "nsd": np.where(tumour, rng.random(n), np.nan)})
    s = ext_eval.summarize_half(df, n_boot=60, seed=5)
    patients = sorted(df["patient"].unique())
    boot = {"pooled_f1": [], "mean_dice_tumour": [], "clean_marked_share": []}
    for draw in np.random.default_rng(5).integers(0, len(patients), size=(60, len(patients))):
        g = pd.concat([df[df.patient == patients[i]] for i in draw])
        t = g[g.tumour]
        boot["pooled_f1"].append(2 * g.tp.sum() / (2 * g.tp.sum() + g.fp.sum() + g.fn.sum()))
        boot["mean_dice_tumour"].append(t.dice.mean() if len(t) else np.nan)
        boot["clean_marked_share"].append(g[~g.tumour].marked.mean() if (~g.tumour).any() else np.nan)
    for k, v in boot.items():
        assert s["ci95_by_patient"][k] == pytest.approx(
            [np.nanquantile(v, 0.025), np.nanquantile(v, 0.975)], abs=1e-12), k
    assert s["n_patients"] == 5 and s["n_boot"] == 60 and s["boot_seed"] == 5
    assert s["tumour_slices_missed"] == int((df.tumour & ~df.marked).sum()) > 0


# --------------------------------------------------------------------------- lever table
def test_lever_table_reads_selection_figures(tmp_path, monkeypatch):
    plan = {"base": "smoke", "fixed": {"epochs": 1},
            "trials": [{"tag": "a", "lever": "first", "set": {"healthy_ratio": 0.0}},
                       {"tag": "b", "lever": "second", "set": {"healthy_ratio": 0.5}}]}
    params = levers.trial_params(plan)
    assert all(p["score_test"] is False and p["epochs"] == 1 for p in params)
    assert [p["run_tag"] for p in params] == ["a", "b"]
    from brainseg_lib.study.experiment import name_for
    out = paths.ensure(tmp_path / "lv" / "metrics")
    sel = {"val": {"pooled_f1": 0.9, "hd95_median": 5.0, "nsd_mean": 0.6},
           "healthy_val": {"marked_share": 0.1},
           "external_dev": {"pooled_f1": 0.7, "mean_dice_tumour": 0.6, "clean_marked_share": 0.05,
                            "hd95_median": 362.0, "nsd_mean": 0.5, "tumour_slices_missed": 45,
                            "n_tumour_slices": 80}}
    (out / f"{name_for(params[0])}.json").write_text(json.dumps(
        {"run_name": name_for(params[0]), "config": {"image_size": 64, "healthy_ratio": 0.0},
         "epochs_run": 1, "selection": sel}))
    paths.ensure(tmp_path / "lv" / "runs" / name_for(params[0]))
    (tmp_path / "lv" / "runs" / name_for(params[0]) / "timing.json").write_text('{"train_seconds": 2.0}')
    t = levers.lever_table(plan, tmp_path / "lv")
    assert list(t["tag"]) == ["a"] and t.loc[0, "ext_dev_mean_dice"] == 0.6     # b not run yet
    assert t.loc[0, "train_seconds"] == 2.0
    md = levers.table_markdown(t)
    assert "| a | first | 64 |" in md and "ext dev Dice (tumour)" in md
    # counts print as counts; with 45 of 80 tumour slices missed the HD95 median is the diagonal
    # given to a miss, not a distance: the cell says so, and the note says what it means
    assert f"| {levers.UNMEASURED} | 45/80 | 0.500 |" in md and "| 1 | 2.000 |" in md
    assert "| 362 |" not in md
    t.loc[0, "ext_dev_missed"] = "39/80"                     # under half missed: the median is measured
    assert "| 362 | 39/80 | 0.500 |" in levers.table_markdown(t)
    assert pd.isna(levers._of(np.nan, 80))          # NaN: an older JSON shows blank
    assert md.rstrip().endswith(levers.HD95_NOTE)


def test_rescore_recomputes_selection_from_the_kept_checkpoint(tmp_path, monkeypatch):
    plan = {"base": "smoke", "fixed": {"epochs": 1},
            "trials": [{"tag": t, "set": {}} for t in "abcd"]}
    from brainseg_lib.study.experiment import name_for
    a, b, _, d = (name_for(p) for p in levers.trial_params(plan))
    folder = tmp_path / "lv"
    config = {"image_size": 16, "limit_val": 2}
    # a and b and d finished; c never ran; b kept no best.pt; d's best.pt is another epoch's
    paths.ensure(folder / "metrics")
    for name in (a, b, d):
        (folder / "metrics" / f"{name}.json").write_text(json.dumps(
            {"run_name": name, "config": config, "best_epoch": 3, "selection": {"old": 1}}))
    for name, epoch in ((a, 3), (d, 2)):
        paths.ensure(folder / "runs" / name)
        (folder / "runs" / name / "best.pt").write_text(str(epoch))
    monkeypatch.setattr("brainseg_lib.model.checkpoint.load_checkpoint",
                        lambda p: {"epoch": int(p.read_text()), "train_config": config})
    seen = []

    class Val:
        def head(self, n):
            return ("val", n)
    monkeypatch.setattr("brainseg_lib.data.splits.split_arrays",
                        lambda scheme, size, root, seed, only=None, head_crop=False: {"val": Val()})

    def figures(ckpt, val, cfg, data_root=None, external_dev=True):
        seen.append((ckpt, val, cfg.image_size, external_dev))
        return {"external_dev": {"tumour_slices_missed": 7}}
    monkeypatch.setattr(levers, "selection_figures", figures)
    done = levers.rescore_selection(plan, folder)
    assert done == {"rescored": [a], "no_checkpoint": [b], "mismatched": [d]}
    assert seen == [(folder / "runs" / a / "best.pt", ("val", 2), 16, True)]
    ra = json.loads((folder / "metrics" / f"{a}.json").read_text())
    assert ra["selection"] == {"external_dev": {"tumour_slices_missed": 7}} and ra["selection_rescored"]
    assert ra["selection_original"] == {"old": 1}           # what the choice was made on stays
    for name in (b, d):
        assert json.loads((folder / "metrics" / f"{name}.json").read_text())["selection"] == {"old": 1}
    # a second rescore keeps the first original, not the rescored figures
    levers.rescore_selection(plan, folder)
    assert json.loads((folder / "metrics" / f"{a}.json").read_text())["selection_original"] == {"old": 1}


def test_model_card_gains_boundary_healthy_and_external_lines():
    m = paths.metrics_dir()
    pt = {"sensitivity": 0.93, "specificity": 0.98, "negatives": 600, "auc": 0.96}
    (m / "detection.json").write_text(json.dumps({
        "primary_score": "area_frac", "fixed_sensitivity": 0.9, "healthy_any_pixel_share": None,
        "report": {"all": {"area_frac": pt}},
        "report_at_fixed_sensitivity": {"all": {"area_frac": {**pt, "sensitivity": 0.86, "specificity": 0.99}}}}))
    half = {"n_patients": 44, "n_slices": 513, "pooled_f1": 0.671, "mean_dice_tumour": 0.378,
            "clean_marked": 16, "n_clean_slices": 176, "clean_marked_share": 0.091, "hd95_median": 12.0,
            "nsd_mean": 0.26, "ci95_by_patient": {"pooled_f1": [0.58, 0.74]}, "n_tumour_slices": 337,
            "tumour_slices_missed": 177}
    (m / "external_validation.json").write_text(json.dumps({"test": half}))
    text = model_card._card_extras({"boundary": {"hd95": {"median": 10.2, "mean": 57.5},
                                              "nsd": {"mean": 0.39}, "nsd_tolerance_px": 2.0}})
    assert "HD95 median 10.2 px" in text and "NSD at 2 px mean 0.390" in text
    assert "false-positive rate 0.020" in text and "nan of them" in text
    assert "External test half" in text and "pooled F1 0.671 [0.580, 0.740]" in text
    assert "16 of 176" in text and "External dev half" not in text
    assert "HD95 median 12.0 px (177 of 337 tumour slices have no prediction and count at the image diagonal)" in text
