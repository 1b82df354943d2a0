"""report/release_targets.py: issue 24's targets against hand-made evaluation figures."""
from __future__ import annotations

import json
import math

from brainseg_lib.report import release_targets as rt


def _half(f1, dice, missed, clean, types=None):
    ci = {"pooled_f1": [f1 - 0.1, f1 + 0.1], "mean_dice_tumour": [dice - 0.1, dice + 0.1],
          "missed_share": [missed - 0.05, missed + 0.05], "clean_marked_share": [clean - 0.02, clean + 0.02]}
    out = {"pooled_f1": f1, "mean_dice_tumour": dice, "missed_share": missed,
           "clean_marked_share": clean, "ci95_by_patient": ci}
    if types:
        out["by_label"] = {k: {"pooled_f1": v, "ci95_by_patient": {"pooled_f1": [v - 0.1, v + 0.1]}}
                           for k, v in types.items()}
    return out


EV = {"lgg": {"test": _half(0.85, 0.60, 0.16, 0.04)},
      "figshare": {"test": _half(0.72, 0.5, 0.10, math.nan, {"glioma": 0.50, "meningioma": 0.8})},
      "br35h_test": _half(0.90, 0.84, 0.05, math.nan)}


def _row(md: str, where: str, label: str) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:2] == [where, label]:
            return cells
    raise AssertionError(f"no row {where} / {label}")


def test_each_target_is_met_or_missed_by_its_gap():
    md = rt.targets_markdown(EV, None, None)
    assert _row(md, "TCGA-LGG test half", "pooled F1")[-1] == "met"
    assert _row(md, "TCGA-LGG test half", "mean Dice, tumour slices")[-1] == "missed by 0.050 (the CI reaches it)"
    # lower is better: 0.16 against <= 0.15, the CI's lower end 0.11 reaches it
    assert _row(md, "TCGA-LGG test half", "tumour slices with no prediction")[-1] == "missed by 0.010 (the CI reaches it)"
    assert _row(md, "TCGA-LGG test half", "clean slices marked")[-1] == "met"
    worst = _row(md, "Figshare test half", "pooled F1 of the worst tumour type")
    assert worst[3] == "0.500 (glioma)" and worst[-1] == "missed by 0.050 (the CI reaches it)"
    assert _row(md, "Br35H TEST (official)", "pooled F1, mean of 3 seeds")[-1] == "not measured"
    assert _row(md, "Br35H report scans", "detection specificity (sensitivity target 0.90)")[3] == "n/a"


def test_verdict_says_when_the_ci_does_not_reach_the_target():
    t = rt.Target("pooled F1", "x", "lgg:pooled_f1", 0.80, True)
    assert rt.verdict(t, 0.60, [0.55, 0.70]) == "missed by 0.200 (the CI does not reach it)"
    assert rt.verdict(t, 0.80, None) == "met"
    low = rt.Target("missed", "x", "lgg:missed_share", 0.15, False)
    assert rt.verdict(low, 0.30, [0.20, 0.40]) == "missed by 0.150 (the CI does not reach it)"


def test_seed_figures_are_the_mean_and_sd_of_the_runs(tmp_path):
    for i, (f1, dice) in enumerate(((0.80, 0.70), (0.90, 0.80), (0.85, 0.90))):
        (tmp_path / f"r{i}.json").write_text(json.dumps({"global": {"f1": f1}, "per_image_mean": {"f1": dice}}))
    s = rt.seed_figures(tmp_path, ["r0", "r1", "r2"])
    assert math.isclose(s["f1"]["mean"], 0.85) and math.isclose(s["f1"]["sd"], 0.05)
    assert math.isclose(s["dice"]["mean"], 0.80) and s["dice"]["n"] == 3
    assert rt.seed_figures(tmp_path, ["r0", "missing"]) is None
    md = rt.targets_markdown(EV, s, None)
    assert _row(md, "Br35H TEST (official)", "pooled F1, mean of 3 seeds")[3] == "0.850 (sd 0.050 over 3 seeds)"


def test_external_volumes_available_needs_flair_volumes(tmp_path):
    from brainseg_lib.study import external_volumes
    assert not external_volumes.available(tmp_path / "absent")
    assert not external_volumes.available(tmp_path)
    (tmp_path / "TCGA_X_flair.nii.gz").write_bytes(b"")
    assert external_volumes.available(tmp_path)
