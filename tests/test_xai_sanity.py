"""xai.sanity: the model-randomisation test and the comparison with the probability map, on
tiny models and hand-made maps."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from brainseg_lib.model.unet import UNet
from brainseg_lib.xai import sanity
from brainseg_lib.xai.attribution import INTEGRATED_GRADIENTS, OCCLUSION, REFERENCE


def _trained_like(seed=0):
    torch.manual_seed(seed)
    net = UNet(in_channels=1, base=2)
    with torch.no_grad():                      # weights and BN statistics unlike a fresh init
        for p in net.parameters():
            p.add_(torch.randn_like(p))
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(0.3)
                m.running_var.fill_(2.0)
    return net.eval()


def test_randomized_copy_redraws_every_weight_and_leaves_the_model_alone():
    net = _trained_like()
    before = [p.clone() for p in net.parameters()]
    rand = sanity.randomized_copy(net, seed=1)
    for p, q, b in zip(net.parameters(), rand.parameters(), before):
        assert torch.equal(p, b)                                # the original is untouched
        assert not torch.equal(p, q)                            # every tensor re-drawn
    bn = [m for m in rand.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(float(m.running_mean.abs().max()) == 0 and float(m.running_var.min()) == 1 for m in bn)
    again = sanity.randomized_copy(net, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(rand.parameters(), again.parameters()))   # seeded


def test_rank_correlations_by_hand():
    rng = np.random.default_rng(0)
    a = rng.random((2, 8, 8))
    maps_a = {"m": a}
    same = sanity.rank_correlations(maps_a, {"m": -a * 3}, ["x", "y"])    # |.| and rank: the same map
    assert same["rank_corr"].tolist() == pytest.approx([1.0, 1.0])
    flat = sanity.rank_correlations(maps_a, {"m": np.ones_like(a)}, ["x", "y"])
    assert flat["rank_corr"].isna().all()                                 # a constant map has no ranks
    other = sanity.rank_correlations(maps_a, {"m": rng.random((2, 8, 8))}, ["x", "y"])
    assert (other["rank_corr"].abs() < 0.4).all()


def test_against_reference_needs_the_whole_ci_above_zero():
    names = [f"i{k}" for k in range(10)]
    rows = [{"name": n, "method": REFERENCE, "mass_inside_gt": 0.5} for n in names]
    rows += [{"name": n, "method": "better", "mass_inside_gt": 0.7 + 0.01 * k} for k, n in enumerate(names)]
    rows += [{"name": n, "method": "mixed", "mass_inside_gt": 0.5 + (0.3 if k % 2 else -0.3)}
             for k, n in enumerate(names)]
    got = sanity.against_reference(pd.DataFrame(rows), n_boot=200).set_index("method")
    assert bool(got.loc["better", "beats_reference"]) and got.loc["better", "diff_vs_reference"] == pytest.approx(0.245)
    assert not bool(got.loc["mixed", "beats_reference"]) and got.loc["mixed", "ci_low"] < 0


def test_randomisation_test_compares_the_same_images_and_regions():
    net = _trained_like()
    x = torch.rand(3, 1, 16, 16)
    regions = np.zeros((3, 16, 16), np.float32)
    regions[:, 4:12, 4:12] = 1
    from brainseg_lib.xai.attribution import attribute
    maps = attribute(net, x, regions, [OCCLUSION, INTEGRATED_GRADIENTS], ig_steps=4, occlusion_frac=0.25)
    per_image, summary = sanity.randomisation_test(net, x, regions, maps, ["a", "b", "c"], ig_steps=4,
                                                   occlusion_frac=0.25, n_boot=100)
    assert len(per_image) == 6 and set(per_image["method"]) == {OCCLUSION, INTEGRATED_GRADIENTS}
    assert list(summary["method"]) == [OCCLUSION, INTEGRATED_GRADIENTS]
    assert (summary["max_rank_corr"] == sanity.MAX_RANK_CORR).all()
    ok = summary["ci_high"] < sanity.MAX_RANK_CORR
    assert (summary["passes"] == ok).all()
    text = sanity.sanity_sentence(summary, sanity.against_reference(pd.DataFrame(
        {"name": ["a"], "method": ["m"], "mass_inside_gt": [0.5]})))
    assert "Model randomisation (Adebayo et al. 2018" in text
