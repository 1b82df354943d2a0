"""Issue 24's levers and rule, on tiny hand-made inputs: the per-image Dice loss, the MRI
intensity augmentation, test-time flips, small-component removal, the Figshare loader's
refusals, and the release rule's paired verdict on hand-made per-slice tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from brainseg_lib.data import external as ext
from brainseg_lib.data import intensity
from brainseg_lib.data.errors import ImageReadError
from brainseg_lib.data.loaders import augment_batch, augment_config
from brainseg_lib.inference import any_marked, drop_small_components, predict_probabilities, predict_probabilities_tta
from brainseg_lib.training.losses import get_loss, per_image_dice_loss


# ------------------------------------------------------------------ loss
def test_per_image_dice_weighs_each_tumour_image_equally():
    big, small = torch.zeros(1, 1, 10, 10), torch.zeros(1, 1, 10, 10)
    big[..., :8, :8] = 1      # 64 tumour pixels
    small[..., 0, 0] = 1      # 1 tumour pixel
    target = torch.cat([big, small])
    # a prediction that finds the big tumour exactly and misses the small one
    logits = torch.where(torch.cat([big, torch.zeros_like(small)]) > 0, 30.0, -30.0)
    per_image = per_image_dice_loss(logits, target).item()
    # image 1: Dice (2*64+1)/(64+64+1) = 1 -> loss 0; image 2: (0+1)/(0+1+1) -> loss 0.5
    assert per_image == pytest.approx(0.25, abs=1e-6)
    batch = get_loss("dice")(logits, target).item()          # the batch-wide soft Dice
    assert batch == pytest.approx(1 - (2 * 64 + 1) / (64 + 65 + 1), abs=1e-6)
    assert per_image > 10 * batch      # the missed small tumour weighs far more per image


def test_per_image_dice_ignores_tumour_free_images_and_empty_batches():
    empty = torch.zeros(2, 1, 4, 4)
    logits = torch.full((2, 1, 4, 4), 5.0)
    assert per_image_dice_loss(logits, empty).item() == 0.0
    loss = get_loss("bce_dice_img")(logits, empty)
    assert loss.item() == pytest.approx(get_loss("bce")(logits, empty).item())


@pytest.mark.parametrize("name", ["bce_dice_img", "bce_dice_img_all"])
def test_per_image_dice_refuses_data_parallel(name):
    with pytest.raises(ValueError, match=f"loss {name} .*data-parallel"):
        get_loss(name, reduce_sums=lambda t: t)


# ------------------------------------------------------------------ augmentation
def test_histogram_shift_is_monotone_and_keeps_ends():
    x = torch.linspace(0, 1, 101).view(1, 1, 1, 101).repeat(4, 1, 1, 1)
    y = intensity.histogram_shift(x, 1.0, 6, 0.9, torch.Generator().manual_seed(3))
    assert torch.all(y[..., 1:] >= y[..., :-1] - 1e-6)
    assert torch.allclose(y[..., 0], torch.zeros(4, 1, 1)) and torch.allclose(y[..., -1], torch.ones(4, 1, 1))
    assert not torch.allclose(y, x)


def test_invert_head_keeps_background_black_and_flips_tissue():
    x = torch.tensor([[[[0.0, 0.02, 0.3, 0.9]]]])
    y = intensity.invert_head(x, 1.0, torch.Generator().manual_seed(0))
    assert y[0, 0, 0, :2].tolist() == [0.0, 0.0]
    assert y[0, 0, 0, 2] > y[0, 0, 0, 3]           # bright became dark, dark became bright


def test_bias_field_is_smooth_and_off_when_p_is_zero():
    x = torch.full((2, 1, 16, 16), 0.5)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(intensity.bias_field(x, 0.0, 0.3, g), x)
    y = intensity.bias_field(x, 1.0, 0.3, torch.Generator().manual_seed(1))
    assert not torch.allclose(y, x)
    assert (y[..., 1:, :] - y[..., :-1, :]).abs().max() < 0.05   # no jumps between neighbours


def test_mri_level_changes_images_not_masks_and_full_level_replays():
    x = torch.rand(6, 1, 32, 32)
    y = (torch.rand(6, 1, 32, 32) > 0.8).float()
    full_a = augment_batch(x, y, augment_config("full"), torch.Generator().manual_seed(5))
    mri = augment_batch(x, y, augment_config("mri"), torch.Generator().manual_seed(5))
    assert torch.equal(full_a[1], mri[1])              # same geometry, same masks
    assert not torch.allclose(full_a[0], mri[0])       # other intensities
    full_b = augment_batch(x, y, augment_config("full"), torch.Generator().manual_seed(5))
    assert torch.equal(full_a[0], full_b[0])


def test_orient_level_turns_image_and_mask_together_by_quarter_turns():
    from brainseg_lib.data.loaders import AugmentConfig
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 0, 0] = 1.0                                   # one bright corner pixel
    y = x.clone()
    cfg = AugmentConfig(hflip=0, rotate_deg=0, scale=0, translate=0, brightness=0, contrast=0,
                        rot90_p=1.0)
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(ya, (xa >= 0.5).float())           # the mask moved with the image
    corners = {tuple(int(v) for v in torch.nonzero(ya[i, 0])[0]) for i in range(len(ya))}
    assert corners == {(0, 7), (7, 0), (7, 7)}            # every turn, never the identity
    off = augment_batch(x, y, AugmentConfig(hflip=0, rotate_deg=0, scale=0, translate=0,
                                            brightness=0, contrast=0), torch.Generator().manual_seed(0))
    assert torch.equal(off[1], y)
    full = augment_batch(x, y, augment_config("full"), torch.Generator().manual_seed(3))
    orient = augment_batch(x, y, augment_config("full_orient"), torch.Generator().manual_seed(3))
    assert not torch.equal(full[1], orient[1])


# ------------------------------------------------------------------ inference levers
class _LeftBias(torch.nn.Module):
    """A 'model' whose logit rises to the right: not flip-invariant."""
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        ramp = torch.linspace(-3, 3, x.shape[-1]).view(1, 1, 1, -1)
        return ramp.expand_as(x) + 0 * self.w


def test_tta_averages_the_flips_back_into_place():
    imgs = np.zeros((2, 8, 8), np.uint8)
    plain = predict_probabilities(_LeftBias(), imgs, torch.device("cpu"))
    tta = predict_probabilities_tta(_LeftBias(), imgs, torch.device("cpu"))
    # plain, its left-right mirror and the up-down flip (the same as plain): (2p + mirror)/3
    assert np.allclose(tta, (2 * plain + plain[..., ::-1]) / 3, atol=1e-6)


def test_drop_small_components_removes_only_the_small_ones():
    p = np.zeros((1, 20, 20), np.float32)
    p[0, 0:2, 0:2] = 0.9          # 4 pixels
    p[0, 10:16, 10:16] = 0.9      # 36 pixels
    out = drop_small_components(p, 0.5, 10 / 400)
    assert out[0, 0:2, 0:2].max() == 0 and out[0, 10:16, 10:16].min() == pytest.approx(0.9)
    assert np.array_equal(drop_small_components(p, 0.5, 0.0), p)
    assert p[0, 0, 0] == pytest.approx(0.9)      # input kept


# ------------------------------------------------------------------ Figshare loader
def _figshare(tmp_path, mask_values=(0, 255), mask_size=(8, 8)):
    root = tmp_path / "fig"
    for half in ("dev", "test"):
        (root / half / "images").mkdir(parents=True)
        (root / half / "masks").mkdir(parents=True)
    img = np.full((8, 8), 100, np.uint8)
    mask = np.zeros(mask_size[::-1], np.uint8)
    mask[2:5, 2:5] = mask_values[1]
    mask[0, 0] = mask_values[0]
    Image.fromarray(img).save(root / "dev" / "images" / "fig_0001.png")
    Image.fromarray(mask).save(root / "dev" / "masks" / "fig_0001.png")
    pd.DataFrame({"name": ["fig_0001"], "block": ["men0001-0017"], "half": ["dev"],
                  "label": ["meningioma"]}).to_csv(root / "manifest.csv", index=False)
    return root


def test_figshare_half_loads_with_blocks_and_labels(tmp_path):
    half = ext.load_half("dev", 4, root=_figshare(tmp_path), which="figshare")
    assert half.patients == ["men0001-0017"] and half.labels == ["meningioma"]
    assert half.truths[0].sum() == 9


def test_non_binary_mask_is_named_and_refused(tmp_path):
    with pytest.raises(ImageReadError, match=r"fig_0001\.png is not binary"):
        ext.load_half("dev", 4, root=_figshare(tmp_path, mask_values=(0, 128)), which="figshare")


def test_mask_of_another_size_is_named_and_refused(tmp_path):
    with pytest.raises(ImageReadError, match="they must match"):
        ext.load_half("dev", 4, root=_figshare(tmp_path, mask_size=(9, 8)), which="figshare")


def test_missing_figshare_folder_names_its_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINSEG_FIGSHARE", str(tmp_path / "absent"))
    assert not ext.available(which="figshare")
    with pytest.raises(ext.ExternalDataNotFound, match="BRAINSEG_FIGSHARE") as e:
        ext.check_external(which="figshare")
    assert "\n" not in str(e.value) and "figshare.1512427" in str(e.value)


# ------------------------------------------------------------------ the rule, on hand-made tables
def _write_arm(out, tag, seed, dice_scale, val_fp=0, healthy_marked=0):
    """Per-slice files of one trial and seed: 4 LGG patients and 3 Figshare blocks, each with
    tumour slices whose overlap scales with ``dice_scale`` (1 = perfect), one clean LGG slice."""
    from brainseg_lib.study.release_levers import per_slice_path
    rows = {"lgg": [], "figshare": []}
    for which, units in (("lgg", ["p1", "p2", "p3", "p4"]), ("figshare", ["b1", "b2", "b3"])):
        for u in units:
            tp = int(round(100 * dice_scale))
            rows[which].append({"name": f"{u}_t", "unit": u, "tumour": True, "marked": tp > 0,
                                "tp": tp, "fp": 0, "fn": 100 - tp, "tn": 900,
                                "dice": 2 * tp / (2 * tp + 100 - tp) if tp else 0.0})
            if which == "lgg":
                rows[which].append({"name": f"{u}_c", "unit": u, "tumour": False, "marked": False,
                                    "tp": 0, "fp": 0, "fn": 0, "tn": 1000, "dice": 1.0})
    frames = {**{w: pd.DataFrame(r) for w, r in rows.items()},
              "val": pd.DataFrame({"name": ["v1"], "tumour": [True], "marked": [True], "tp": [90],
                                   "fp": [val_fp], "fn": [10], "tn": [900], "dice": [0.9]}),
              "healthy": pd.DataFrame({"name": [f"h{i}" for i in range(10)],
                                       "marked": [i < healthy_marked for i in range(10)]})}
    for w, df in frames.items():
        p = per_slice_path(tag, seed, w, out)
        p.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(p, index=False)


PLAN = {"seeds": [0, 1, 2], "rule": {"screen_gain": 0.01, "max_val_f1_loss": 0.02,
                                     "max_healthy_marked": 0.05, "max_lgg_clean_marked": 0.1,
                                     "n_boot": 500},
        "trials": [{"tag": "r0"}, {"tag": "r1", "against": "r0"}]}


def test_identical_arms_gain_nothing(tmp_path):
    from brainseg_lib.study import release_rule as rr
    for s in (0, 1, 2):
        _write_arm(tmp_path, "r0", s, 0.5)
        _write_arm(tmp_path, "r1", s, 0.5)
    g = rr.paired_gain("r1", "r0", [0, 1, 2], [0, 1, 2], 200, out_dir=tmp_path)
    assert g["gain"] == pytest.approx(0) and g["ci95"] == pytest.approx([0, 0])
    assert not rr.verdict(PLAN, "r1", "r0", tmp_path)["adopted"]     # CI does not exclude 0


def test_better_arm_is_adopted_and_its_gain_is_the_score_difference(tmp_path):
    from brainseg_lib.study import release_rule as rr
    for s in (0, 1, 2):
        _write_arm(tmp_path, "r0", s, 0.5)
        _write_arm(tmp_path, "r1", s, 0.8)
    v = rr.verdict(PLAN, "r1", "r0", tmp_path)
    # per set: (pooled F1 + mean Dice)/2 with F1 = Dice = 2d/(1+d) on every slice
    expected = 2 * 0.8 / 1.8 - 2 * 0.5 / 1.5
    assert v["gain"] == pytest.approx(expected, abs=1e-9)
    assert v["ci95"][0] > 0 and v["adopted"] and rr.screen(PLAN, "r1", tmp_path)


def test_verdict_needs_every_seed_and_the_limits(tmp_path):
    from brainseg_lib.study import release_rule as rr
    for s in (0, 1, 2):
        _write_arm(tmp_path, "r0", s, 0.5)
    _write_arm(tmp_path, "r1", 0, 0.8)
    v = rr.verdict(PLAN, "r1", "r0", tmp_path)
    assert v["checks"]["ci_above_0"] and not v["checks"]["all_seeds"] and not v["adopted"]
    from brainseg_lib.study.release_table import _verdict_text
    assert rr.is_pending(v) and _verdict_text(v).startswith("pending: passed the screen on seed 0")
    assert not rr.is_pending({**v, "beyond_reach": ["healthy_marked"]})       # out of reach: a verdict
    assert _verdict_text({**v, "beyond_reach": ["healthy_marked"]}).startswith("not adopted: all_seeds")
    for s in (1, 2):
        _write_arm(tmp_path, "r1", s, 0.8, val_fp=40, healthy_marked=1)
    v = rr.verdict(PLAN, "r1", "r0", tmp_path)
    assert not v["checks"]["val_f1"] and not v["checks"]["healthy_marked"] and not v["adopted"]
    assert not rr.is_pending(v) and _verdict_text(v).startswith("not adopted: val_f1")
    inference_lever = {"adopted": False, "checks": {"ci_above_0": True}, "all_seeds_of_release": False}
    assert _verdict_text(inference_lever) == "not adopted: all_seeds_of_release"


def test_screen_stops_a_trial_whose_seed0_gain_is_small(tmp_path):
    from brainseg_lib.study import release_rule as rr
    _write_arm(tmp_path, "r0", 0, 0.5)
    _write_arm(tmp_path, "r1", 0, 0.505)
    assert not rr.screen(PLAN, "r1", tmp_path)
    d = rr.decide(PLAN, tmp_path)
    assert d["trials"][0]["screened_out"] and d["adopted"] == []


def test_held_out_site_is_left_out_of_every_figure_the_rule_reads(tmp_path):
    from brainseg_lib.study import release_rule as rr
    from brainseg_lib.study.release_levers import per_slice_path
    _write_arm(tmp_path, "r0", 0, 0.5)
    p = per_slice_path("r0", 0, "lgg", tmp_path)
    df = pd.read_csv(p)
    df.loc[df["unit"] == "p1", "unit"] = "TCGA_DU_1_2"
    df.loc[df["unit"] == "p2", "unit"] = "TCGA_CS_1_2"
    df.to_csv(p, index=False)
    kept = rr.read("r0", 0, "lgg", tmp_path, held_out=["DU"])
    assert "TCGA_DU_1_2" not in set(kept["unit"]) and "TCGA_CS_1_2" in set(kept["unit"])
    assert len(kept) == len(df) - 2
    rr.use_plan({"rule": {"lgg_held_out_sites": ["DU"]}})
    try:
        assert len(rr.read("r0", 0, "lgg", tmp_path)) == len(df) - 2
    finally:
        rr.use_plan({"rule": {}})
    assert rr.site_of("TCGA_DU_5853_19950823") == "DU" and rr.site_of("men0001-0017") == ""


def test_a_trial_beyond_reach_of_a_limit_is_named_and_not_adopted(tmp_path):
    from brainseg_lib.study import release_rule as rr
    for s in (0, 1, 2):
        _write_arm(tmp_path, "r0", s, 0.5)
    _write_arm(tmp_path, "r1", 0, 0.8, healthy_marked=2)     # 20% > 3 x 5%: no seeds can save it
    assert rr.beyond_reach(PLAN, "r1", tmp_path) == ["healthy_marked"]
    v = rr.verdict(PLAN, "r1", "r0", tmp_path)
    assert not v["adopted"] and v["beyond_reach"] == ["healthy_marked"]
    _write_arm(tmp_path, "r1", 0, 0.8, healthy_marked=1)     # 10% <= 15%: the other seeds could
    assert rr.beyond_reach(PLAN, "r1", tmp_path) == []


def test_the_committed_release_plan_validates_and_a_bad_one_is_refused(tmp_path):
    import yaml

    from brainseg_lib.study import release_levers as rl
    plan = rl.load_plan()
    assert plan["trials"][0]["tag"] == "r0-cpu" and plan["seeds"] == [0, 1, 2]
    assert plan["rule"]["lgg_held_out_sites"] == ["DU"]
    for t in plan["trials"]:
        p = rl.trial_params(plan, t["tag"], 1)
        assert p["score_test"] is False and p["seed"] == 1 and p["epochs"] == 30 and p["threads"] == 2
    bad = {**plan, "rule": {**plan["rule"], "max_val_f1_los": 0.1}}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="max_val_f1_los"):
        rl.load_plan(path)


def test_rise_limits_judge_against_the_reference_not_an_absolute_share(tmp_path):
    from brainseg_lib.study import release_rule as rr
    rise = {**PLAN, "rule": {"screen_gain": 0.01, "max_val_f1_loss": 0.02,
                             "max_healthy_marked_rise": 0.02, "max_lgg_clean_marked_rise": 0.02,
                             "n_boot": 300}}
    for s in (0, 1, 2):
        _write_arm(tmp_path, "r0", s, 0.5, healthy_marked=3)   # the reference marks 30%
        _write_arm(tmp_path, "r1", s, 0.8, healthy_marked=3)   # so does the lever: no rise
    assert not rr.verdict(PLAN, "r1", "r0", tmp_path)["adopted"]       # absolute 5% refuses
    assert rr.verdict(rise, "r1", "r0", tmp_path)["adopted"]
    assert rr.beyond_reach(rise, "r1", tmp_path) == []
    for s in (0, 1, 2):
        _write_arm(tmp_path, "r1", s, 0.8, healthy_marked=4)   # 40%: a rise of 0.10
    v = rr.verdict(rise, "r1", "r0", tmp_path)
    assert not v["checks"]["healthy_marked"] and v["checks"]["lgg_clean_marked"] and not v["adopted"]


def test_a_later_round_writes_its_own_files_and_combination(tmp_path):
    from brainseg_lib.names import UnsafeName
    from brainseg_lib.study import release_choice as rc
    from brainseg_lib.study import release_levers as rl
    assert rc.output_names({})["json"] == "decision.json"
    plan = rl.load_plan(rl.PLAN_YAML.parent / "release_levers_2.yaml")
    assert rc.output_names(plan) == {"json": "decision-round2.json", "csv": "lever_table-round2.csv",
                                     "md": "lever_table-round2.md"}
    assert rc.combined_tag(plan) == "r9-combined-round2" and rc.combined_tag({}) == "r9-combined"
    assert plan["rule"].get("max_healthy_marked") is None and plan["rule"]["max_healthy_marked_rise"] == 0.02
    assert rl.checkpoint(plan, "r0-cpu", 0) == rl.checkpoint(rl.load_plan(), "r0-cpu", 0)
    with pytest.raises(UnsafeName):
        rc.output_names({"name": "../x"})
    third = rl.load_plan(rl.PLAN_YAML.parent / "release_levers_3.yaml")
    assert rc.output_names(third)["md"] == "lever_table-round3.md"
    assert all(rl.trial_params(third, t["tag"], 0)["threads"] == 2 for t in third["trials"])


def test_lever_table_reads_the_plans_held_out_sites_whatever_was_read_before(tmp_path):
    from brainseg_lib.study import release_rule as rr
    from brainseg_lib.study.release_levers import per_slice_path
    from brainseg_lib.study.release_table import lever_table
    for s in (0, 1, 2):
        _write_arm(tmp_path, "r0", s, 0.5)
        p = per_slice_path("r0", s, "lgg", tmp_path)
        df = pd.read_csv(p)
        df.loc[df["unit"] == "p1", "unit"] = "TCGA_DU_1_2"
        df.to_csv(p, index=False)
    plan = {**PLAN, "rule": {**PLAN["rule"], "lgg_held_out_sites": ["DU"]}, "trials": [{"tag": "r0"}]}
    rr.use_plan({"rule": {}})                  # another plan read earlier in the process
    try:
        row = lever_table(plan, {"trials": []}, tmp_path).iloc[0]
        assert row["lgg_missed"].endswith("/3")      # 3 tumour slices: the DU patient's is left out
    finally:
        rr.use_plan({"rule": {}})


def test_older_levels_replay_their_recorded_batches():
    """Adding a lever (quarter turns) must not change the draws of the levels runs were trained
    with: the sums below were recorded before ``rot90_p`` existed."""
    g = torch.Generator().manual_seed(11)
    x = torch.rand(6, 1, 32, 32, generator=g)
    y = (torch.rand(6, 1, 32, 32, generator=g) > 0.8).float()
    for level, image_sum, mask_sum in (("basic", 2901.90673366189, 896), ("full", 2692.894600587785, 843),
                                       ("mri", 2883.8537752344764, 843)):
        xa, ya = augment_batch(x, y, augment_config(level), torch.Generator().manual_seed(5))
        assert float(xa.double().sum()) == pytest.approx(image_sum, abs=1e-6) and int(ya.sum()) == mask_sum


def test_rise_limit_on_lgg_clean_slices_and_both_kinds_together(tmp_path):
    from brainseg_lib.study import release_rule as rr
    from brainseg_lib.study.release_levers import per_slice_path
    both = {**PLAN, "rule": {"screen_gain": 0.01, "max_val_f1_loss": 0.02, "max_healthy_marked": 0.5,
                             "max_healthy_marked_rise": 0.02, "max_lgg_clean_marked_rise": 0.02,
                             "n_boot": 300}}
    for s in (0, 1, 2):
        _write_arm(tmp_path, "r0", s, 0.5)
        _write_arm(tmp_path, "r1", s, 0.8)
        p = per_slice_path("r1", s, "lgg", tmp_path)
        df = pd.read_csv(p)
        df.loc[df["name"] == "p1_c", "marked"] = True          # 1 of 4 clean slices marked
        df.to_csv(p, index=False)
    v = rr.verdict(both, "r1", "r0", tmp_path)
    assert not v["checks"]["lgg_clean_marked"] and v["checks"]["healthy_marked"] and not v["adopted"]
    for s in (0, 1, 2):
        _write_arm(tmp_path, "r1", s, 0.8, healthy_marked=6)    # 60%: within no rise, over 50%
    assert not rr.verdict(both, "r1", "r0", tmp_path)["checks"]["healthy_marked"]


def test_limits_compare_a_one_seed_trial_with_the_same_seed_of_the_reference(tmp_path):
    from brainseg_lib.study import release_rule as rr
    rise = {**PLAN, "rule": {"screen_gain": 0.01, "max_val_f1_loss": 0.02,
                             "max_healthy_marked_rise": 0.02, "max_lgg_clean_marked_rise": 0.02,
                             "n_boot": 300}}
    _write_arm(tmp_path, "r0", 0, 0.5, healthy_marked=3)       # seed 0 of the reference: 30%
    for s in (1, 2):
        _write_arm(tmp_path, "r0", s, 0.5, healthy_marked=0)   # its mean over seeds: 10%
    _write_arm(tmp_path, "r1", 0, 0.8, healthy_marked=3)       # the trial's seed 0: 30%, no rise
    v = rr.verdict(rise, "r1", "r0", tmp_path, require_all_seeds=False)
    assert v["checks"]["healthy_marked"]


def test_nested_adopted_trials_release_the_widest_without_a_combination(tmp_path):
    from brainseg_lib.study import release_choice as rc
    plan = {**PLAN, "trials": [{"tag": "r0"}, {"tag": "a", "against": "r0", "set": {"loss": "x"}},
                               {"tag": "b", "against": "r0", "set": {"loss": "x", "healthy_ratio": 1.2}},
                               {"tag": "c", "against": "r0", "set": {"image_size": 128}}]}
    assert rc.containing_all(plan, ["a", "b"]) == "b"
    assert rc.containing_all(plan, ["a", "c"]) is None
    decision = {"adopted": ["a", "b"], "trials": [{"tag": "a", "gain": 0.2, "adopted": True},
                                                  {"tag": "b", "gain": 0.1, "adopted": True}]}
    assert rc.release_trial(plan, decision, tmp_path) == ("b", plan)
    assert "combined" not in decision


def test_a_later_round_without_a_name_or_a_limit_is_refused(tmp_path):
    import yaml

    from brainseg_lib.study import release_levers as rl
    plan = {k: v for k, v in rl.load_plan().items() if k != "source"}
    path = tmp_path / "release_levers_4.yaml"
    path.write_text(yaml.safe_dump(plan))
    with pytest.raises(ValueError, match="needs a `name`"):
        rl.load_plan(path)
    rule = {k: v for k, v in plan["rule"].items() if k != "max_lgg_clean_marked"}
    path.write_text(yaml.safe_dump({**plan, "name": "round4", "rule": rule}))
    with pytest.raises(ValueError, match="max_lgg_clean_marked"):
        rl.load_plan(path)
    path.write_text(yaml.safe_dump({**plan, "name": "round4"}))
    assert rl.load_plan(path)["source"].endswith("release_levers_4.yaml")


def test_healthy_val_gate_takes_the_smallest_size_that_meets_the_reference():
    from brainseg_lib.study.release_scoring import smallest_gate
    probs = np.zeros((4, 10, 10), np.float32)
    probs[0, :2, :2] = 0.9          # a 4-pixel blob (4% of the image)
    probs[1, :3, :3] = 0.9          # 9 pixels (9%)
    probs[2, 5, 5] = 0.9            # 1 pixel (1%)
    grid = (0.0, 0.02, 0.05, 0.10)
    g, shares = smallest_gate(probs, 0.5, 0.25, grid)
    assert g == 0.05 and shares == {"0.0": 0.75, "0.02": 0.5, "0.05": 0.25}
    assert smallest_gate(probs, 0.5, 0.0, grid)[0] == 0.10
    assert smallest_gate(probs, 0.5, 0.0, (0.0, 0.02))[0] == 0.02       # none meets it: the last


def test_a_trial_scoring_another_trials_checkpoints_shares_its_runs(tmp_path):
    import yaml

    from brainseg_lib.study import release_levers as rl
    plan = {k: v for k, v in rl.load_plan().items() if k != "source"}
    trials = [plan["trials"][0], {"tag": "r6", "against": "r0-cpu", "set": {"loss": "bce_dice_img"}},
              {"tag": "g1", "against": "r0-cpu", "checkpoints_of": "r6", "tta": True, "gate": "healthy_val"}]
    path = tmp_path / "release_levers_4.yaml"
    path.write_text(yaml.safe_dump({**plan, "name": "round4", "trials": trials, "inference": []}))
    p = rl.load_plan(path)
    assert rl.trained_tag(p, "g1") == "r6" and rl.checkpoint(p, "g1", 1) == rl.checkpoint(p, "r6", 1)
    assert rl.scoring_settings(p, "r6", 0) == {"tta": False, "min_component": 0.0}
    bad = [*trials[:2], {**trials[2], "checkpoints_of": "r9"}]
    path.write_text(yaml.safe_dump({**plan, "name": "round4", "trials": bad, "inference": []}))
    with pytest.raises(ValueError, match="earlier trial"):
        rl.load_plan(path)


def test_the_committed_round4_plan_and_the_refusals_of_scored_only_trials(tmp_path):
    import yaml

    from brainseg_lib.study import release_levers as rl
    p4 = rl.load_plan(rl.PLAN_YAML.parent / "release_levers_4.yaml")
    assert rl.trained_tag(p4, "g1-r6-flips-gate") == "r6-orient-mri-img-dice" and p4["inference"] == []
    base = {k: v for k, v in p4.items() if k != "source"}
    path = tmp_path / "release_levers_5.yaml"
    g1 = base["trials"][2]
    bad_plans = {
        "changes nothing in `set`": [*base["trials"][:2], {**g1, "set": {"loss": "bce"}}],
        "without `checkpoints_of`": [*base["trials"][:2], {"tag": "x", "against": "r0-cpu", "tta": True}],
        "calibrates to the reference": [*base["trials"], {**g1, "tag": "g2", "against": "g1-r6-flips-gate"}],
        "must be an earlier trial": [*base["trials"], {**g1, "tag": "g2", "checkpoints_of": "g1-r6-flips-gate"}],
    }
    for message, trials in bad_plans.items():
        path.write_text(yaml.safe_dump({**base, "name": "round5", "trials": trials}))
        with pytest.raises(ValueError, match=message):
            rl.load_plan(path)
    path.write_text(yaml.safe_dump({**base, "name": "round5", "inference": [
        {"tag": "i1", "tta": True, "min_component": 0.0}]}))
    with pytest.raises(ValueError, match="no inference levers"):
        rl.load_plan(path)


def test_a_reused_tag_scored_with_other_settings_is_refused(tmp_path):
    import json

    from brainseg_lib.study import release_levers as rl
    p4 = rl.load_plan(rl.PLAN_YAML.parent / "release_levers_4.yaml")
    rl.check_settings(p4, "g1-r6-flips-gate", 0, tmp_path)                 # nothing recorded yet
    declared = rl.declared_settings(p4, "g1-r6-flips-gate", 0, tmp_path)
    assert declared["tta"] and declared["gate"] == "healthy_val" and declared["grid"] == list(rl.GATE_GRID)
    assert declared["checkpoint_run"] == rl.checkpoint(p4, "r6-orient-mri-img-dice", 0).parent.name
    p = rl.settings_path("g1-r6-flips-gate", 0, tmp_path)
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps(declared))
    rl.check_settings(p4, "g1-r6-flips-gate", 0, tmp_path)
    p.write_text(json.dumps({**declared, "tta": False}))
    with pytest.raises(ValueError, match="give the trial a new tag"):
        rl.check_settings(p4, "g1-r6-flips-gate", 0, tmp_path)


def test_a_reused_tag_trained_with_another_set_is_refused(tmp_path):
    import json

    from brainseg_lib.study import release_levers as rl
    from brainseg_lib.study.experiment import name_for
    p4 = rl.load_plan(rl.PLAN_YAML.parent / "release_levers_4.yaml")
    rl.check_trained(p4, "g1-r6-flips-gate", 0, tmp_path)                    # nothing trained yet
    params = rl.trial_params(p4, "r6-orient-mri-img-dice", 0)
    run_json = tmp_path / "metrics" / f"{name_for(params)}.json"
    run_json.parent.mkdir(parents=True)
    run_json.write_text(json.dumps({"config": {k: params[k] for k in ("augment_level", "loss", "epochs")}}))
    rl.check_trained(p4, "g1-r6-flips-gate", 0, tmp_path)                    # same config: kept
    run_json.write_text(json.dumps({"config": {**{k: params[k] for k in ("loss", "epochs")},
                                               "augment_level": "full"}}))
    with pytest.raises(ValueError, match="other augment_level"):
        rl.check_trained(p4, "g1-r6-flips-gate", 0, tmp_path)


def test_settings_used_read_the_gate_a_scored_seed_chose(tmp_path):
    import json

    from brainseg_lib.study import release_levers as rl
    p4 = rl.load_plan(rl.PLAN_YAML.parent / "release_levers_4.yaml")
    gate = rl.gate_path("g1-r6-flips-gate", 1, tmp_path)
    gate.parent.mkdir(parents=True)
    gate.write_text(json.dumps({"min_component": 0.02}))
    assert rl.settings_used(p4, "g1-r6-flips-gate", 1, tmp_path) == {"tta": True, "min_component": 0.02}
    assert rl.settings_used(p4, "r6-orient-mri-img-dice", 1, tmp_path) == {"tta": False, "min_component": 0.0}


def test_seed_table_lists_each_seed_of_every_trial_that_ran_them_all(tmp_path):
    import json
    import shutil

    from brainseg_lib import paths
    from brainseg_lib.report.release_card import later_rounds_markdown
    from brainseg_lib.study import release_rule as rr
    from brainseg_lib.study.release_choice import write_outputs
    from brainseg_lib.study.release_levers import load_plan, per_slice_path
    from brainseg_lib.study.release_seeds import seed_table
    plan_file = tmp_path / "plan.yaml"
    shutil.copy(paths.PARAMS_DIR / "release_levers_2.yaml", plan_file)     # holds out the DU site
    plan = load_plan(plan_file)
    for s, scale in ((0, 0.5), (1, 0.7), (2, 0.6)):
        _write_arm(tmp_path, "r0-cpu", s, scale)
        p = per_slice_path("r0-cpu", s, "lgg", tmp_path)
        df = pd.read_csv(p)
        df.loc[df["unit"] == "p1", ["unit", "marked"]] = ["TCGA_DU_1_2", True]   # its clean slice marked
        df.to_csv(p, index=False)
    _write_arm(tmp_path, "r4-orient", 0, 0.9)         # one seed only: not in the table
    (tmp_path / "decision-broken.json").write_text(json.dumps({"plan": str(tmp_path / "gone.yaml")}))
    decision = {"plan": str(plan_file), "trials": [], "adopted": [], "inference": []}
    written = write_outputs(plan, decision, tmp_path)
    rr.use_plan({"rule": {}})                         # the caller's state, kept through the table
    table = seed_table(tmp_path)
    assert rr.HELD_OUT_SITES == ()
    assert list(table["trial"]) == ["r0-cpu"] * 3 and list(table["seed"]) == [0, 1, 2]
    assert (table["lgg_clean_marked_share"] == 0).all()   # the DU patient's marked slice is left out
    assert (table["lgg_missed"] == 0).all()
    rr.use_plan(plan)
    try:
        for s in (0, 1, 2):
            assert table["combined"][s] == pytest.approx(rr.arm_figures("r0-cpu", [s], tmp_path)["combined"])
    finally:
        rr.use_plan({"rule": {}})
    assert table["combined"][1] > table["combined"][2] > table["combined"][0]   # follows the overlap
    md = written["seeds_md"].read_text()
    c = [f"{v:.3f}" for v in table["combined"]]
    assert f"| round2 | r0-cpu | {c[0]} / {c[1]} / {c[2]} | " in md and "r4-orient" not in md
    assert f"{table['combined'].max() - table['combined'].min():.3f}" in md
    assert "seed by seed" in later_rounds_markdown(tmp_path) and json.loads(written["json"].read_text())["plan"]


def test_rounds_are_ordered_by_their_number():
    from pathlib import Path

    from brainseg_lib.study.release_seeds import round_order
    names = ["decision-round10.json", "decision.json", "decision-round9.json", "decision-round2.json"]
    assert [n for n in sorted(names, key=lambda n: round_order(Path(n)))] == [
        "decision.json", "decision-round2.json", "decision-round9.json", "decision-round10.json"]


def test_seed_ensemble_is_the_mean_of_its_members_logits():
    from brainseg_lib.model.ensemble import SeedEnsemble

    class Const(torch.nn.Module):
        def __init__(self, v):
            super().__init__()
            self.v = torch.nn.Parameter(torch.tensor(float(v)))

        def forward(self, x):
            return x * 0 + self.v
    x = torch.zeros(2, 1, 4, 4)
    assert torch.allclose(SeedEnsemble([Const(1), Const(2), Const(6)])(x), torch.full_like(x, 3.0))
    with pytest.raises(ValueError, match="at least 2"):
        SeedEnsemble([Const(1)])


def test_the_round6_ensemble_trains_and_scores_disjoint_seed_blocks(tmp_path, monkeypatch):
    from brainseg_lib.study import release_levers as rl
    p6 = rl.load_plan(rl.PLAN_YAML.parent / "release_levers_6.yaml")
    tag = "e1-r0-ensemble3"
    assert [rl.member_seeds(p6, tag, s) for s in (0, 1, 2)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert rl.member_seeds(p6, "r0-cpu", 4) == [4]
    assert rl.checkpoints(p6, tag, 0) == [rl.checkpoint(p6, "r0-cpu", s) for s in (0, 1, 2)]
    with pytest.raises(ValueError, match="ensemble of 3"):
        rl.checkpoint(p6, tag, 0)
    runs = rl.declared_settings(p6, tag, 1)["checkpoint_run"]
    assert runs == [rl.checkpoint(p6, "r0-cpu", s).parent.name for s in (3, 4, 5)]
    trained, scored = [], []
    monkeypatch.setattr(rl, "train", lambda plan, t, seeds, out_dir=None: trained.append((t, list(seeds))))

    def fake_score(plan, t, seed, out_dir=None, **kw):
        scored.append((t, seed, kw))
        for w in rl.SETS:
            p = rl.per_slice_path(t, seed, w, out_dir)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("name\n")
    monkeypatch.setattr(rl, "score_trial", fake_score)
    rl._train_and_score(p6, tag, [1, 2], tmp_path)
    assert trained == [("r0-cpu", [3, 4, 5, 6, 7, 8])]
    assert [s[:2] for s in scored] == [(tag, 1), (tag, 2)]
    assert scored[0][2] == {"tta": False, "min_component": 0.0}


def test_ensemble_trials_are_refused_with_anything_else(tmp_path):
    import yaml

    from brainseg_lib.study import release_levers as rl
    base = {k: v for k, v in rl.load_plan(rl.PLAN_YAML.parent / "release_levers_6.yaml").items() if k != "source"}
    r0, e1 = base["trials"]
    path = tmp_path / "release_levers_7.yaml"
    bad = {"go together": [r0, {k: v for k, v in e1.items() if k != "members"}],
           "earlier trial that trains its own": [r0, {**e1, "set": {"loss": "bce"}}],
           "sets tta, min_component, gate, head_crop, standardize or threshold": [r0, {"tag": "x", "lever": "l", "tta": True}],
           "a gate calibrates one checkpoint": [r0, {**e1, "gate": "healthy_val"}],
           "trains its own": [r0, e1, {**e1, "tag": "e2", "ensemble_of": "e1-r0-ensemble3"}]}
    for message, trials in bad.items():
        path.write_text(yaml.safe_dump({**base, "name": "round7", "trials": trials}))
        with pytest.raises(ValueError, match=message):
            rl.load_plan(path)
    path.write_text(yaml.safe_dump({**base, "name": "round7", "trials": [r0, {**e1, "members": 1}]}))
    with pytest.raises(ValueError, match="members"):
        rl.load_plan(path)
    path.write_text(yaml.safe_dump({**base, "name": "round7", "inference": [
        {"tag": "i1", "tta": True, "min_component": 0.0}]}))
    with pytest.raises(ValueError, match="no inference levers"):
        rl.load_plan(path)


def test_no_trial_scores_the_checkpoints_of_an_ensemble(tmp_path):
    import yaml

    from brainseg_lib.study import release_levers as rl
    base = {k: v for k, v in rl.load_plan(rl.PLAN_YAML.parent / "release_levers_6.yaml").items() if k != "source"}
    g2 = {"tag": "g2", "against": "r0-cpu", "checkpoints_of": "e1-r0-ensemble3", "tta": True}
    path = tmp_path / "release_levers_7.yaml"
    path.write_text(yaml.safe_dump({**base, "name": "round7", "trials": [*base["trials"], g2]}))
    with pytest.raises(ValueError, match="an earlier trial that trains its own"):
        rl.load_plan(path)


def test_an_ensemble_checks_every_member_run_it_reuses(tmp_path):
    import json

    from brainseg_lib.study import release_levers as rl
    from brainseg_lib.study.experiment import name_for
    p6 = rl.load_plan(rl.PLAN_YAML.parent / "release_levers_6.yaml")
    params = rl.trial_params(p6, "r0-cpu", 4)          # the middle member of ensemble 1
    run_json = tmp_path / "metrics" / f"{name_for(params)}.json"
    run_json.parent.mkdir(parents=True)
    run_json.write_text(json.dumps({"config": {"loss": "bce", "epochs": params["epochs"]}}))
    rl.check_trained(p6, "e1-r0-ensemble3", 0, tmp_path)       # ensemble 0 does not hold seed 4
    with pytest.raises(ValueError, match="other loss"):
        rl.check_trained(p6, "e1-r0-ensemble3", 1, tmp_path)


def test_ensemble_members_must_agree_on_size_and_threshold(tmp_path):
    from brainseg_lib.model.checkpoint import save_checkpoint
    from brainseg_lib.model.unet import UNet
    from brainseg_lib.study.release_scoring import score_checkpoint
    paths_ = []
    for i, size in enumerate((64, 128)):
        m = UNet(in_channels=1, base=4)
        paths_.append(save_checkpoint({"state_dict": m.state_dict(), "model_config": {"in_channels": 1, "base": 4},
                                       "train_config": {"image_size": size, "threshold": 0.5}},
                                      tmp_path / f"m{i}.pt"))
    with pytest.raises(ValueError, match="differ in image size"):
        score_checkpoint(paths_)


def test_screen_only_gives_a_judged_trial_no_seed_beyond_0(monkeypatch):
    """Round 12's plan: h13 (judged against h7) passes its screen here; without --screen-only its
    seeds 1-2 are trained, with it only seed 0, while the trials not judged get every seed."""
    from brainseg_lib.study import release_levers as rl
    from brainseg_lib.study import release_rule as rr
    p12 = rl.load_plan(rl.PLAN_YAML.parent / "release_levers_12.yaml")
    calls = []
    monkeypatch.setattr(rl, "_train_and_score", lambda plan, tag, seeds, out_dir=None: calls.append((tag, list(seeds))))
    monkeypatch.setattr(rr, "screen", lambda plan, tag, out_dir=None: True)
    monkeypatch.setattr(rr, "beyond_reach", lambda plan, tag, out_dir=None: [])
    monkeypatch.setattr(rr, "decide", lambda plan, out_dir=None: {})
    judged = "h13-h12-ensemble3-tta-min-component"
    rl.run_plan(p12)
    assert (judged, [1, 2]) in calls and ("h12-h6-size128", [1, 2]) in calls
    calls.clear()
    rl.run_plan(p12, screen_only=True)
    assert [c for c in calls if c[0] == judged] == [(judged, [0])]
    assert ("h12-h6-size128", [1, 2]) in calls and ("h7-h6-ensemble3-tta-min-component", [1, 2]) in calls


def test_a_scan_is_marked_when_any_pixel_reaches_the_threshold():
    probs = np.zeros((3, 4, 4), np.float32)
    probs[1, 2, 3] = 0.5          # exactly the threshold: marked
    probs[2, 0, 0] = 0.49
    assert any_marked(probs, 0.5).tolist() == [False, True, False]
    assert any_marked(probs, 0.4).tolist() == [False, True, True]
