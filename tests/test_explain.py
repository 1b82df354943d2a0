"""brainseg_lib.explain: captum attribution maps of the U-Net, and the two checks on them.

The planted-feature tests use the real U-Net (base 4, 32x32) with a gate that makes its
output depend on a known part of the image (input pixels for the input-attribution
methods, a quadrant of the Grad-CAM layer for Grad-CAM). A map that is transposed,
flipped, mis-scaled, computed on another layer or for another image of the batch
puts its mass elsewhere and fails.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from brainseg_lib.model.unet import UNet
from brainseg_lib.report import findings
from brainseg_lib.xai import attribution as explain_attribution
from brainseg_lib.xai import checks as explain_checks
from brainseg_lib.xai import deletion

torch.set_num_threads(1)

S = 32
SQUARE = (slice(4, 12), slice(18, 26))          # off the diagonal: a transposed map misses it
QUADRANT = (slice(0, S // 2), slice(S // 2, S))  # top-right quarter of the image


def monotone_unet(seed: int = 0) -> UNet:
    """A U-Net whose activations and gradients are >= 0 for inputs >= 0 (non-negative
    weights, zero biases, identity BatchNorm), so Grad-CAM cannot cancel to zero."""
    torch.manual_seed(seed)
    net = UNet(base=4)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.abs_()
                m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1)
    return net.eval()


class InputGate(nn.Module):
    """The U-Net sees only the pixels of ``region``; everything else is multiplied by 0."""

    def __init__(self, net: UNet, region):
        super().__init__()
        self.net = net
        self.gate = torch.zeros(1, 1, S, S)
        self.gate[(0, 0) + region] = 1

    def forward(self, x):
        return self.net(x * self.gate)


def scans(n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 + 0.8 * torch.rand(n, 1, S, S, generator=g)


def square_mask() -> np.ndarray:
    m = np.zeros((S, S), bool)
    m[SQUARE] = True
    return m


# --------------------------------------------------------------------- shapes and finiteness
def test_every_map_has_the_input_shape_and_is_finite():
    torch.manual_seed(0)
    net = UNet(base=4).eval()
    x = scans(3)
    regions = np.ones((3, S, S), np.float32)
    maps = explain_attribution.attribute(net, x, regions, ig_steps=4, occlusion_frac=0.125)
    assert list(maps) == list(explain_attribution.METHODS)
    for name, m in maps.items():
        assert m.shape == (3, S, S), name
        assert np.isfinite(m).all(), name
        if name not in explain_attribution.gradcam_layers(net):  # Grad-CAM's ReLU may zero a random net's map
            assert np.abs(m).sum() > 0, f"{name}: all-zero map"


def test_gradcam_layers_are_a_decoder_at_half_resolution_and_the_bottleneck():
    net = UNet(base=4).eval()
    shapes = {}
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: shapes.__setitem__(k, tuple(o.shape[-2:])))
             for k, layer in explain_attribution.gradcam_layers(net).items()]
    net(torch.zeros(1, 1, S, S))
    for h in hooks:
        h.remove()
    assert shapes == {explain_attribution.GRADCAM_DECODER: (S // 2, S // 2),
                      explain_attribution.GRADCAM_BOTTLENECK: (S // 16, S // 16)}


# --------------------------------------------------------------------- planted features
@pytest.mark.parametrize("method", [explain_attribution.INTEGRATED_GRADIENTS, explain_attribution.OCCLUSION])
def test_input_attributions_concentrate_on_the_only_pixels_the_model_sees(method):
    model = InputGate(monotone_unet(), SQUARE).eval()
    x = scans(2)
    maps = explain_attribution.attribute(model, x, np.ones((2, S, S), np.float32), methods=[method],
                             ig_steps=8, occlusion_frac=0.125)
    sq = square_mask()
    win, _ = explain_attribution.occlusion_window(S, 0.125)
    near = np.zeros((S, S), bool)          # the square grown by the occlusion window
    near[max(0, 4 - win + 1):12 + win - 1, 18 - win + 1:26 + win - 1] = True
    for i in range(2):
        a = maps[method][i]
        inside = explain_attribution.mass_inside(a, sq)
        assert inside > 0.5, f"only {inside:.3f} of the mass on the seen square (area {sq.mean():.3f})"
        assert explain_attribution.mass_inside(a, near) > 0.999
        assert explain_attribution.mass_inside(a.T, sq) < 0.05    # a transposed map would miss it
        assert explain_attribution.mass_inside(a[::-1], sq) < 0.05  # so would an upside-down one


@pytest.mark.parametrize("method", [explain_attribution.GRADCAM_DECODER, explain_attribution.GRADCAM_BOTTLENECK])
def test_gradcam_follows_the_only_active_part_of_its_layer(method):
    net = monotone_unet()
    layer = explain_attribution.gradcam_layers(net)[method]
    side = {explain_attribution.GRADCAM_DECODER: S // 2, explain_attribution.GRADCAM_BOTTLENECK: S // 16}[method]
    gate = torch.zeros(1, 1, side, side)
    gate[..., :side // 2, side // 2:] = 1          # the layer's top-right quadrant
    hook = layer.register_forward_hook(lambda m, i, out: out * gate)
    try:
        maps = explain_attribution.attribute(net, scans(2), np.ones((2, S, S), np.float32), methods=[method])
    finally:
        hook.remove()
    quad = np.zeros((S, S), bool)
    quad[QUADRANT] = True
    for a in maps[method]:
        assert a.shape == (S, S)
        assert (a >= 0).all()                          # Grad-CAM with its ReLU
        # bilinear upsampling blurs the quadrant's edge: 0.77 for 2x2 -> 32x32, ~0.97 for 16x16
        assert explain_attribution.mass_inside(a, quad) > 0.7
        assert explain_attribution.mass_inside(a.T, quad) < 0.35   # the transposed quadrant is bottom-left
        opposite = np.zeros((S, S), bool)
        opposite[S // 2:, :S // 2] = True
        assert explain_attribution.mass_inside(a, opposite) < 0.05


def test_batched_maps_equal_one_image_at_a_time():
    """The region of image i must stay with image i through captum's batch expansion."""
    torch.manual_seed(1)
    net = UNet(base=4).eval()
    x = scans(3, seed=2)
    regions = np.zeros((3, S, S), np.float32)
    regions[0, :8, :8] = 1
    regions[1, 20:, 10:30] = 1
    regions[2, 12:20, 12:20] = 1
    methods = [explain_attribution.INTEGRATED_GRADIENTS, explain_attribution.OCCLUSION, explain_attribution.GRADCAM_DECODER]
    together = explain_attribution.attribute(net, x, regions, methods=methods, ig_steps=4, batch_size=3)
    for i in range(3):
        alone = explain_attribution.attribute(net, x[i:i + 1], regions[i:i + 1], methods=methods, ig_steps=4)
        for m in methods:
            # float sums differ by batch size at ~1e-7 of the score; misalignment differs by O(1)
            scale = np.abs(alone[m][0]).max()
            np.testing.assert_allclose(together[m][i], alone[m][0], rtol=1e-3, atol=1e-2 * scale,
                                       err_msg=m)


def test_tumour_score_sums_logits_over_the_region():
    net = UNet(base=4).eval()
    x = scans(2)
    region = torch.zeros(2, 1, S, S)
    region[0, 0, :4, :4] = 1
    with torch.no_grad():
        logits = net(x)
        got = explain_attribution.TumourScore(net)(x, region)
    assert got.shape == (2,)
    assert torch.allclose(got[0], logits[0, 0, :4, :4].sum())
    assert got[1] == 0


def test_target_regions_fall_back_to_the_truth_when_nothing_is_predicted():
    probs = np.zeros((2, 4, 4))
    probs[0, 1, 1] = 0.9
    gts = np.zeros((2, 4, 4), np.uint8)
    gts[:, 2:, 2:] = 1
    regions, used = explain_attribution.target_regions(probs, gts, "pred")
    assert used == ["pred", "gt"]
    assert regions[0].sum() == 1 and regions[1].sum() == 4
    regions, used = explain_attribution.target_regions(probs, gts, "gt")
    assert used == ["gt", "gt"] and (regions == gts).all()
    with pytest.raises(ValueError):
        explain_attribution.target_regions(probs, gts, "box")


# --------------------------------------------------------------------- the checks
def test_mass_fraction_and_summary_separate_a_planted_map_from_noise():
    rng = np.random.default_rng(0)
    n = 12
    gts = np.zeros((n, S, S), bool)
    gts[:, SQUARE[0], SQUARE[1]] = True
    planted = rng.random((n, S, S)) * 0.1 + 5 * gts          # most mass on the tumour
    flat = np.ones((n, S, S))                                # knows nothing
    per = explain_attribution.attribution_mass({"planted": planted, "flat": flat}, gts,
                                   [f"i{k}" for k in range(n)])
    summ = explain_attribution.mass_summary(per).set_index("method")
    area = gts[0].mean()
    assert summ.loc["planted", "expected_random"] == pytest.approx(area)
    assert summ.loc["planted", "mass_inside_gt"] > 0.8
    assert summ.loc["flat", "mass_inside_gt"] == pytest.approx(area)
    assert summ.loc["flat", "random_map"] == pytest.approx(area, abs=0.02)
    assert summ.loc["planted", "beats_random"] and not summ.loc["flat", "beats_random"]
    assert np.isnan(explain_attribution.mass_inside(np.zeros((S, S)), gts[0]))


def test_paired_ci_is_the_mean_difference_and_a_percentile_bootstrap_by_hand():
    diff = np.array([0.1, np.nan, -0.3, 0.5, 0.2])           # the NaN is dropped
    d, lo, hi = explain_attribution.paired_ci(diff, n_boot=6, seed=9)
    kept = np.array([0.1, -0.3, 0.5, 0.2])
    assert d == pytest.approx(0.125)
    # by hand: one block of resampled images, a mean per replicate, linear quantiles
    draw = np.random.default_rng(9).integers(0, 4, size=(6, 4))
    means = np.sort(kept[draw].mean(axis=1))
    assert lo == pytest.approx(means[0] + 0.125 * (means[1] - means[0]), abs=1e-12)   # position 5 * 0.025
    assert hi == pytest.approx(means[4] + 0.875 * (means[5] - means[4]), abs=1e-12)
    # a narrower level lies inside
    _, lo50, hi50 = explain_attribution.paired_ci(diff, n_boot=200, seed=9, level=0.5)
    _, lo95, hi95 = explain_attribution.paired_ci(diff, n_boot=200, seed=9)
    assert lo95 <= lo50 <= hi50 <= hi95
    assert np.isnan(explain_attribution.paired_ci(np.array([np.nan]), n_boot=10)).all()


def test_curve_auc():
    f = deletion.DELETION_FRACTIONS
    assert deletion.curve_auc(f, np.ones(len(f))) == pytest.approx(1.0)
    assert deletion.curve_auc([0, 1], [1, 0]) == pytest.approx(0.5)


class Brightness(nn.Module):
    """Tumour wherever the pixel is brighter than 0.5: the prediction rests on those pixels."""

    def forward(self, x):
        return 40 * (x - 0.5)


def test_deletion_favours_the_map_that_points_at_the_prediction():
    n = 6
    x = torch.full((n, 1, S, S), 0.2)
    x[(slice(None), 0) + SQUARE] = 0.9
    gts = np.broadcast_to(square_mask(), (n, S, S))
    good = np.where(gts, 1.0, 0.0) + np.random.default_rng(1).random((n, S, S)) * 0.01
    maps = {"good": good, "inverted": -good}
    names = [f"i{k}" for k in range(n)]
    curves = deletion.deletion(Brightness(), x, maps, names, fill="mean", n_random=2)
    assert set(curves["method"]) == {"good", "inverted", deletion.RANDOM}
    first = curves[curves["fraction"] == 0]
    assert (first["area"] == 64).all() and (first["rel_area"] == 1).all()
    summ = deletion.deletion_summary(curves).set_index("method")
    assert summ.loc["good", "deletion_auc"] < 0.2
    assert summ.loc["good", "beats_random"]
    assert not summ.loc["inverted", "beats_random"]
    assert summ.loc["inverted", "deletion_auc"] > summ.loc["good", "random_order_auc"] - 1e-9
    # the soft measure agrees
    soft = deletion.deletion_summary(curves, "rel_prob").set_index("method")
    assert soft.loc["good", "beats_random"] and not soft.loc["inverted", "beats_random"]
    text = findings.xai_findings(
        explain_attribution.mass_summary(explain_attribution.attribution_mass({explain_attribution.OCCLUSION: good}, gts, names)),
        [deletion.deletion_summary(curves.replace({"good": explain_attribution.OCCLUSION}))])
    assert "Verdict: Occlusion beats the random baseline on every check made" in text


def test_deletion_leaves_out_images_without_a_prediction():
    x = torch.full((2, 1, S, S), 0.2)
    x[(0, 0) + SQUARE] = 0.9                    # image 1 has nothing above 0.5
    maps = {"m": np.random.default_rng(0).random((2, S, S))}
    curves = deletion.deletion(Brightness(), x, maps, ["a", "b"], n_random=1)
    summ = deletion.deletion_summary(curves)
    assert summ["images"].tolist() == [1] and summ["images_left_out"].tolist() == [1]


def test_verdict_says_no_method_when_none_wins():
    mass = pd.DataFrame([{"method": m, "images": 4, "expected_random": 0.1, "random_map": 0.1,
                          "beats_random": False} for m in explain_attribution.METHODS])
    dele = pd.DataFrame([{"measure": "rel_area", "method": m, "images": 0, "images_left_out": 4,
                          "random_order_auc": np.nan, "beats_random": False} for m in explain_attribution.METHODS])
    text = findings.xai_findings(mass, [dele])
    assert "no method beats the random baseline on any check" in text
    assert "not possible here" in text


def test_pick_cases_and_sample_names():
    per = pd.DataFrame({"name": ["a", "b", "c", "d"], "f1": [0.9, 0.95, 0.2, 0.5],
                        "model_fp": [5, 100, 80, 0], "model_fn": [1, 0, 50, 60]})
    picks = explain_checks.pick_cases(per)
    assert [r["name"] for r in picks.values()] == ["b", "c", "d"]
    assert explain_checks.sample_names(per, 2, seed=3) == explain_checks.sample_names(per, 2, seed=3)
    assert len(set(explain_checks.sample_names(per, 3))) == 3
    assert explain_checks.sample_names(per, None) == ["a", "b", "c", "d"]


def test_a_consistent_but_negligible_difference_is_not_a_win():
    """An untrained model's output barely moves: CIs can exclude 0 by 1e-5; that is no win."""
    n = 10
    per = pd.DataFrame({"name": [f"i{k}" for k in range(n)], "method": "m",
                        "mass_inside_gt": 0.1 + 1e-4 + np.arange(n) * 1e-6,
                        "tumour_area_fraction": 0.1, "random_map_mass": 0.1})
    summ = explain_attribution.mass_summary(per)
    assert summ["diff_ci_low"].iloc[0] > 0 and not summ["beats_random"].iloc[0]
    rows = []
    for k in range(n):
        for method, y in (("m", 1 - 1e-4), (deletion.RANDOM, 1.0)):
            rows += [{"name": f"i{k}", "method": method, "fraction": f, "rel_area": 1.0 if f == 0 else y,
                      "rel_prob": 1.0} for f in (0.0, 0.5, 1.0)]
    dele = deletion.deletion_summary(pd.DataFrame(rows))
    assert dele["diff_ci_high"].iloc[0] < 0 and not dele["beats_random"].iloc[0]


def test_records_are_json_ready():
    import json
    df = pd.DataFrame({"a": [1.0, np.nan], "b": [np.int64(3), np.int64(4)], "c": [True, False]})
    json.dumps(explain_checks.records(df), allow_nan=False)
    assert explain_checks.records(df)[1]["a"] is None


def test_deletion_flags_curves_that_grow():
    """A fill the model reads as tumour makes the curve rise; the summary and verdict say so."""
    class GreyIsTumour(nn.Module):
        def forward(self, x):
            return 40 * (0.05 - (x - 0.5).abs())          # tumour where the pixel is mid-grey
    x = torch.zeros(3, 1, S, S)
    x[(slice(None), 0) + SQUARE] = 0.52                  # a small mid-grey 'tumour'
    x[:, 0, 16:, :] = 1.0                                 # bright half: the mean fill is mid-grey
    m = np.random.default_rng(0).random((3, S, S))
    curves = deletion.deletion(GreyIsTumour(), x, {explain_attribution.OCCLUSION: m}, ["a", "b", "c"], n_random=1)
    summ = deletion.deletion_summary(curves)
    assert summ["images_grew"].iloc[0] == 3
    assert {"median_diff", "share_below_random"} <= set(summ.columns)
    mass = explain_attribution.mass_summary(explain_attribution.attribution_mass({explain_attribution.OCCLUSION: m}, x[:, 0].numpy() > 0.5,
                                                         ["a", "b", "c"]))
    assert "Caution" in findings.xai_findings(mass, [summ])


def tiny_checks() -> tuple:
    """Checks with mass rows and full deletion curves for every method, the reference and the
    random order, and the Explained they came from (intact probability sums 2 and 4)."""
    DELETION_FRACTIONS, RANDOM, REFERENCE = deletion.DELETION_FRACTIONS, deletion.RANDOM, deletion.REFERENCE
    names = ("a", "b")
    probs = np.stack([np.full((2, 2), 0.5 * (i + 1), np.float32) for i in range(len(names))])
    ex = explain_checks.Explained(list(names), None, None, probs, [], {m: None for m in explain_checks.METHODS})
    methods = list(explain_checks.METHODS) + [REFERENCE]
    mass = pd.DataFrame([{"name": n, "method": m, "mass_inside_gt": 0.5} for n in names for m in methods])
    curves = pd.DataFrame([{"name": n, "method": m, "fraction": f, "prob_sum": float(p.sum()) * (1 - f)}
                           for n, p in zip(names, probs) for m in methods + [RANDOM]
                           for f in DELETION_FRACTIONS])
    return explain_checks.Checks(mass, None, curves, None, ""), ex


def test_check_invariants_hold_and_name_each_break():
    ok, ex = tiny_checks()
    assert all(explain_checks.check_invariants(ok, ex).values())
    nan_map = ok.mass_per_image.copy()
    nan_map.loc[0, "mass_inside_gt"] = float("nan")              # an all-zero map: allowed
    assert all(explain_checks.check_invariants(explain_checks.Checks(nan_map, None, ok.curves, None, ""), ex).values())
    swapped = ok.mass_per_image.copy()
    swapped.loc[swapped.index[-1], "name"] = "a"                # b's last row now a duplicate of a's
    renamed = ok.curves.assign(name=ok.curves["name"].replace({"b": "c"}))
    no_random_b = ok.curves[~((ok.curves["name"] == "b") & (ok.curves["method"] == deletion.RANDOM))]
    cases = {
        "a mass row per image and method": [(ok.mass_per_image.iloc[1:], ok.curves), (swapped, ok.curves)],
        "mass fractions in [0, 1] (NaN: an all-zero map)":
            [(ok.mass_per_image.assign(mass_inside_gt=1.2), ok.curves)],
        "a full deletion curve per image and method": [(ok.mass_per_image, ok.curves.iloc[1:]),
                                                       (ok.mass_per_image, no_random_b)],
        "curves start at the intact prediction": [(ok.mass_per_image, ok.curves.assign(prob_sum=3.0))],
    }
    for name, variants in cases.items():
        for mass, curves in variants:
            got = explain_checks.check_invariants(explain_checks.Checks(mass, None, curves, None, ""), ex)
            assert [k for k, v in got.items() if not v] == [name]
    got = explain_checks.check_invariants(explain_checks.Checks(ok.mass_per_image, None, renamed, None, ""), ex)
    assert not got["a full deletion curve per image and method"]
