"""Pieces the headline figures rest on: the threshold sweep, threshold tuning on VALIDATION,
the grouped split, and the findings sentences (hand-made inputs, known answers)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainseg_lib.data.cache import SplitArrays
from brainseg_lib.data.splits import grouped_split
from brainseg_lib.evaluation import thresholds
from brainseg_lib.evaluation.metrics import metrics_from_counts
from brainseg_lib.model.checkpoint import save_checkpoint
from brainseg_lib.model.unet import UNet
from brainseg_lib.report import findings
from brainseg_lib.training.config import TrainConfig


def _arrays(names, size=4):
    n = len(names)
    return SplitArrays("val", size, np.zeros((n, size, size), np.uint8), np.zeros((n, size, size), np.uint8),
                       list(names), np.array([[size, size]] * n), np.zeros(n))


def test_threshold_sweep_counts_pixels_at_or_above_each_threshold():
    """Two 2x2 images at native size 2x2 (the model size too, so no resizing)."""
    probs = np.array([[[0.9, 0.6], [0.2, 0.1]],
                      [[0.4, 0.8], [0.7, 0.0]]], np.float32)
    gts = {"a": np.array([[1, 1], [0, 0]], bool), "b": np.array([[0, 1], [0, 0]], bool)}
    arr = _arrays(["a", "b"], size=2)
    sweep = thresholds.threshold_sweep(probs, arr, thresholds=[0.5, 0.65, 1.0], gts=gts).set_index("threshold")
    # >= 0.5: a -> tp 2; b -> 0.8 tp, 0.7 fp
    assert sweep.loc[0.5, ["tp", "fp", "fn", "tn"]].tolist() == [3, 1, 0, 4]
    # >= 0.65: a -> 0.9 tp (0.6 missed); b -> 0.8 tp, 0.7 fp
    assert sweep.loc[0.65, ["tp", "fp", "fn", "tn"]].tolist() == [2, 1, 1, 4]
    assert sweep.loc[1.0, ["tp", "fp"]].tolist() == [0, 0]
    assert sweep.loc[0.65, "f1"] == pytest.approx(metrics_from_counts(2, 1, 1, 4)["f1"])


def test_threshold_sweep_default_grid_matches_direct_thresholding():
    rng = np.random.default_rng(0)
    probs = rng.random((3, 8, 8)).astype(np.float32)
    gts = {n: rng.random((8, 8)) > 0.6 for n in "xyz"}
    sweep = thresholds.threshold_sweep(probs, _arrays("xyz", 8), gts=gts)
    assert len(sweep) == 101
    for t in (0.0, 0.37, 0.5, 0.99):
        pred = np.stack([p >= t for p in probs])
        gt = np.stack([gts[n] for n in "xyz"])
        row = sweep[np.isclose(sweep.threshold, t)].iloc[0]
        assert row.tp == (pred & gt).sum() and row.fp == (pred & ~gt).sum()


def test_tune_threshold_chooses_on_validation_and_reports_test(tmp_path, monkeypatch):
    """The choice depends on VALIDATION only: a TEST set on which another threshold would be
    better does not move it."""
    net = UNet(in_channels=1, base=2)
    ck = tmp_path / "m.pt"
    save_checkpoint({"state_dict": net.state_dict(), "model_config": net.config(),
                     "train_config": TrainConfig(image_size=2, base_width=2).to_dict()}, ck)
    val_probs = np.array([[[0.9, 0.6], [0.3, 0.1]]], np.float32)
    monkeypatch.setattr(thresholds, "predict_probs", lambda model, arrays, device: val_probs)
    val, test = _arrays(["v"], 2), _arrays(["t"], 2)
    val_gts = {"v": np.array([[1, 1], [0, 0]], bool)}         # best val F1 at any t in (0.3, 0.6]
    test_gts = {"t": np.array([[1, 0], [0, 0]], bool)}
    test_probs = np.array([[[0.9, 0.6], [0.3, 0.1]]], np.float32)  # test would prefer t > 0.6
    out = thresholds.tune_threshold(ck, val, test, test_probs, test_gts=test_gts, val_gts=val_gts,
                                    device="cpu", precision_floor=0.99)
    chosen = out["test"]["val_best_f1"]["threshold"]
    assert 0.3 < chosen <= 0.6
    assert out["test"]["val_best_f1"]["precision"] == pytest.approx(0.5)   # on TEST: 1 tp, 1 fp
    assert out["test"]["default_0.5"]["recall"] == 1.0
    assert out["fixed_precision"] == 0.99
    assert out["test"]["val_recall_at_precision"]["threshold"] <= 0.6


def test_grouped_split_never_splits_a_group_and_respects_the_targets():
    labels = np.array([0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4, 5])
    names = [f"y{i}" for i in range(len(labels))]
    man = grouped_split(names, labels, seed=3, targets={"test": 3, "val": 2})
    assert man.groupby("group")["split"].nunique().max() == 1
    # groups (label: size) 0:3 1:1 2:2 3:1 4:4 5:1; with seed 3 both targets are met exactly:
    # TEST takes groups 2 and 5 (2 + 1), VAL groups 1 and 3 (1 + 1), the rest is TRAIN
    assert man.split.value_counts().to_dict() == {"train": 7, "test": 3, "val": 2}
    assert man.groupby("group")["split"].first().to_dict() == {
        0: "train", 1: "val", 2: "test", 3: "val", 4: "train", 5: "test"}
    again = grouped_split(names, labels, seed=3, targets={"test": 3, "val": 2})
    assert again.equals(man)                                    # seeded
    other = [grouped_split(names, labels, seed=s, targets={"test": 3, "val": 2}).split.tolist()
             for s in range(6)]
    assert len({tuple(o) for o in other}) > 1                   # the seed matters


def _contrast(diff, lo, hi, seeds=(3, 3)):
    """A comparison as ``seed_spread.contrasts`` records it (hand-made CI)."""
    from brainseg_lib.study.verdicts import verdict
    return {"diff": diff, "ci95": [lo, hi], "verdict": verdict(lo, hi), "seeds": list(seeds),
            "units": "seeds x near-duplicate groups"}


def _report(off=(0.90, 0.01), grp=(0.85, 0.01), bce=(0.89, 0.02), gain=0.0, og_ci=(0.02, 0.08)):
    return {"main_loss": "bce_dice",
            "contrasts": {"official_minus_grouped": _contrast(off[0] - grp[0], *og_ci),
                          "bce_dice_minus_bce": _contrast(off[0] - bce[0], -0.02, 0.04)},
            "official": {"f1_mean": off[0], "f1_sd": off[1], "n_seeds": 3},
            "grouped": {"f1_mean": grp[0], "f1_sd": grp[1], "n_seeds": 3},
            "official_minus_grouped_f1": off[0] - grp[0],
            "loss": {"bce_dice": {"f1_mean": off[0], "f1_sd": off[1], "n_seeds": 3},
                     "bce": {"f1_mean": bce[0], "f1_sd": bce[1], "n_seeds": 3},
                     "bce_dice_minus_bce_f1": off[0] - bce[0]},
            "threshold": {"default_0.5": {"threshold": 0.5, "f1": 0.9, "precision": 0.95, "recall": 0.80},
                          "val_best_f1": {"threshold": 0.4, "f1": 0.9, "precision": 0.93,
                                          "recall": 0.80 + gain}}}


def test_findings_say_which_differences_have_a_ci_clear_of_zero():
    text = findings.findings_markdown(_report())
    assert ("the official (leaky) split scores higher than the grouped split (+0.050 F1, 95% CI +0.020 to "
            "+0.080, resampling seeds x near-duplicate groups)") in text
    assert ("the difference (+0.010 F1, 95% CI -0.020 to +0.040, resampling seeds x near-duplicate groups) "
            "spans 0, so there is no evidence that BCE+Dice and plain BCE differ") in text
    assert "does not raise test recall (change +0.000)" in text
    lower = findings.findings_markdown(_report(off=(0.85, 0.01), grp=(0.90, 0.01), og_ci=(-0.08, -0.02)))
    assert "the grouped split scores higher than the official (leaky) split (-0.050 F1" in lower
    bare = {**_report(), "contrasts": {}}
    assert "no CI for the difference (+0.050), so no verdict" in findings.findings_markdown(bare)


def test_no_published_verdict_depends_on_the_seed_sd_convention(monkeypatch):
    """The mutation the review found: the seed sd's ddof flipped a verdict. Verdicts now rest on
    the CI alone: the same contrasts with population or sample sds give the same verdicts."""
    import re
    from brainseg_lib.study import seed_spread
    runs = pd.DataFrame({"split_scheme": ["official"] * 3 + ["grouped"] * 3, "loss": "bce_dice",
                         "seed": [0, 1, 2] * 2, "f1": [0.86, 0.87, 0.85, 0.885, 0.89, 0.887]})

    def words(ddof):
        monkeypatch.setattr(pd.Series, "std", lambda self, ddof_=ddof, **kw: float(np.std(self.to_numpy(float), ddof=ddof_)))
        rep = seed_spread.findings(runs)
        rep["contrasts"] = {"official_minus_grouped": _contrast(-0.0243, -0.050, 0.0001)}
        text = findings.findings_markdown(rep)
        return re.sub(r"± \d\.\d{3}", "± sd", text), rep["official"]["f1_sd"]

    (sample, sd1), (population, sd0) = words(1), words(0)
    assert sd1 != sd0                                 # the convention did change the sds ...
    assert sample == population                       # ... and no sentence changed with it
    assert "no evidence that the official (leaky) split and the grouped split differ" in sample


def test_findings_name_the_grouped_splits_near_misses():
    rows = [{"signal": "corr", "from": 0.80, "to": 0.95, "test_images_with_train_partner": 36, "test_images": 100},
            {"signal": "corr", "from": 0.90, "to": 0.95, "test_images_with_train_partner": 3, "test_images": 100},
            {"signal": "phash", "from": 7.0, "to": 12.0, "test_images_with_train_partner": 5, "test_images": 100}]
    text = findings.findings_markdown({**_report(), "grouped_near_misses": rows})
    assert ("3 (thumbnail correlation 0.90-0.95) to 36 (0.80-0.95) of 100 grouped TEST images still have "
            "a TRAIN partner that neither signal links, and 5 have one at pHash distance 7-12") in text
    assert "Just below" not in findings.findings_markdown(_report())       # no audit, no sentence


def test_findings_report_a_recall_gain_only_above_the_margin():
    assert "raises test recall by 0.050" in findings.findings_markdown(_report(gain=0.05))
    assert "does not raise" in findings.findings_markdown(_report(gain=0.005))
    assert findings.findings_markdown({"official_minus_grouped_f1": None, "official": {}, "grouped": {},
                                       "loss": {"bce_dice_minus_bce_f1": None}, "threshold": {}}) \
        == "_No sweep results yet._\n"


def test_leakage_and_same_name_sentences_come_from_the_numbers():
    counts = pd.DataFrame([{"query": "test", "reference": "train", "query_images": 100, "dup": 72},
                           {"query": "val", "reference": "train", "query_images": 201, "dup": 60}])
    text = findings.leakage_findings(counts)
    assert "**72 of 100 TEST images**" in text and "**60 of 201 VAL images**" in text
    main = [{"run_name": "cpu-a", "global": {"f1": 0.885}, "threads": 2}]
    sweep = [{"run_name": "cpu-a", "global": {"f1": 0.895}, "threads": 1},
             {"run_name": "cpu-b", "global": {"f1": 0.8}, "threads": 1}]
    note = findings.same_name_note(main, sweep)
    assert "0.885 in notebook 02 (2 threads), 0.895 in this sweep (1 threads)" in note
    assert "cpu-b" not in note
    assert findings.same_name_note(main, [{"run_name": "cpu-a", "global": {"f1": 0.885}}]) == ""


def test_manifest_paths_name_the_scheme_and_refuse_the_official_split():
    from brainseg_lib.data import splits
    assert splits.manifest_path(2).name == "grouped_seed2.csv"
    assert splits.manifest_path(0, "grouped_strict").name == "grouped_strict_seed0.csv"
    with pytest.raises(ValueError, match="has no manifest"):
        splits.manifest_path(0, "official")
    with pytest.raises(FileNotFoundError, match="grouped_strict split manifest"):
        splits.load_manifest(7, "grouped_strict")


def _strict(rep, strict=(0.84, 0.01), gx_ci=(-0.02, 0.04), ox_ci=(0.03, 0.09), seeds=3):
    gx, ox = rep["grouped"]["f1_mean"] - strict[0], rep["official"]["f1_mean"] - strict[0]
    return {**rep, "grouped_strict": {"f1_mean": strict[0], "f1_sd": strict[1], "n_seeds": seeds},
            "contrasts": {**rep["contrasts"],
                          "grouped_minus_grouped_strict": _contrast(gx, *gx_ci, seeds=(3, seeds)),
                          "official_minus_grouped_strict": _contrast(ox, *ox_ci, seeds=(3, seeds))},
            "grouped_minus_grouped_strict_f1": rep["grouped"]["f1_mean"] - strict[0],
            "official_minus_grouped_strict_f1": rep["official"]["f1_mean"] - strict[0]}


def test_findings_compare_the_stricter_split_with_both_others():
    text = findings.findings_markdown(_strict(_report()))
    assert ("- **A stricter grouped split.** Linking images also at thumbnail correlation >= 0.90 or pHash "
            "distance <= 10 (notebook 07), test F1 is 0.840 ± 0.010 (mean ± sd over 3 seeds)") in text
    assert ("Against the other two splits, the difference (+0.010 F1, 95% CI -0.020 to +0.040, resampling "
            "seeds x near-duplicate groups) spans 0, so there is no evidence that the grouped split and the "
            "stricter one differ") in text
    assert ("and for the official split against the stricter one, the official split scores higher than the "
            "stricter one (+0.060 F1, 95% CI +0.030 to +0.090") in text
    assert "The official-vs-grouped verdict holds at the stricter thresholds." in text    # both: official higher
    assert "the grouped figure is the one to quote for unseen patients' slices" in text
    assert findings.strict_verdict_holds(_strict(_report())) is True
    assert findings.strict_verdict_holds(_report()) is None                             # no stricter runs
    assert "stricter grouped split" not in findings.findings_markdown(_report())


def test_findings_say_when_the_official_vs_grouped_verdict_does_not_hold_at_the_stricter_thresholds():
    rep = _strict(_report(off=(0.86, 0.01), grp=(0.91, 0.01), og_ci=(-0.08, -0.02)), strict=(0.87, 0.01),
                  ox_ci=(-0.04, 0.02))                                 # grouped higher; strict: no evidence
    text = findings.findings_markdown(rep)
    assert "So the official-vs-grouped verdict does not hold at the stricter thresholds" in text
    assert "the two grouped figures together, not the first alone, are the range to quote" in text
    # the leakage point then leaves the advice to it instead of contradicting it
    assert "the grouped figure is the one to quote" not in text
    assert "the next point, a stricter grouped split, says which figure to quote for unseen patients' slices." in text
    assert findings.strict_verdict_holds(rep) is False
    one_seed = _strict(_report(off=(0.86, 0.01), grp=(0.91, 0.01), og_ci=(-0.08, -0.02)), strict=(0.87, None),
                       ox_ci=(-0.04, 0.02), seeds=1)
    text = findings.findings_markdown(one_seed)
    assert "(mean ± sd over 1 seed)" in text and "one seed on a side, so test-set sampling only there" in text
    no_ci = {**rep, "contrasts": {"official_minus_grouped": rep["contrasts"]["official_minus_grouped"]}}
    text = findings.findings_markdown(no_ci)
    assert "verdict holds" not in text and "does not hold" not in text


def test_findings_name_the_stricter_splits_own_near_misses():
    rows = [{"signal": "corr", "from": 0.80, "to": 0.90, "test_images_with_train_partner": 30, "test_images": 100},
            {"signal": "corr", "from": 0.85, "to": 0.90, "test_images_with_train_partner": 8, "test_images": 100},
            {"signal": "phash", "from": 11.0, "to": 12.0, "test_images_with_train_partner": 20, "test_images": 100}]
    text = findings.findings_markdown({**_strict(_report()), "grouped_strict_near_misses": rows})
    assert ("tested. Just below the stricter split's thresholds, 8 (thumbnail correlation 0.85-0.90) to 30 "
            "(0.80-0.90) of 100 stricter-split TEST images still have a TRAIN partner that neither signal links, "
            "and 20 have one at pHash distance 11-12 (notebook 07).") in text


def test_seeds_headline_adds_the_stricter_split_only_when_it_ran():
    rep = _report()
    assert findings.seeds_headline(rep) == ("- **Seeds and leakage:** F1 0.900 ± 0.010 on the official split, "
                                            "0.850 ± 0.010 on a near-duplicate-free grouped split "
                                            "(mean ± sd over 3 and 3 seeds).")
    assert findings.seeds_headline(_strict(rep)).endswith(
        "grouped split, 0.840 ± 0.010 on a stricter one (mean ± sd over 3, 3 and 3 seeds).")
    assert findings.seeds_headline({**rep, "grouped": {"f1_mean": None}}) == ""


def test_seed_spread_findings_take_the_stricter_split_runs_when_the_sweep_has_them():
    from brainseg_lib.study import seed_spread
    runs = pd.DataFrame({"split_scheme": ["official"] * 2 + ["grouped"] * 2 + ["grouped_strict"] * 2,
                         "loss": "bce_dice", "f1": [0.80, 0.90, 0.70, 0.70, 0.60, 0.64]})
    rep = seed_spread.findings(runs)
    assert rep["grouped_strict"]["f1_mean"] == pytest.approx(0.62) and rep["grouped_strict"]["n_seeds"] == 2
    assert rep["grouped_minus_grouped_strict_f1"] == pytest.approx(0.08)
    assert rep["official_minus_grouped_strict_f1"] == pytest.approx(0.23)
    assert rep["grouped_strict_near_misses"] is None                      # no audit in this folder
    assert "grouped_strict" not in seed_spread.findings(runs[runs.split_scheme != "grouped_strict"])
