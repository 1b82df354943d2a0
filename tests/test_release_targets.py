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
    assert _row(md, "TCGA-LGG test half", "mean Dice, tumour slices")[-1] == "missed by 0.050 (within the CI)"
    # lower is better: 0.16 against <= 0.15, the CI's lower end 0.11 reaches it
    assert _row(md, "TCGA-LGG test half", "tumour slices with no prediction")[-1] == "missed by 0.010 (within the CI)"
    assert _row(md, "TCGA-LGG test half", "clean slices marked")[-1] == "met"
    worst = _row(md, "Figshare test half", "pooled F1, worst tumour type")
    assert worst[3] == "0.500 (glioma)" and worst[-1] == "missed by 0.050 (within the CI)"
    assert _row(md, "Br35H TEST (official)", "pooled F1, mean of 3 seeds")[-1] == "not measured"
    assert _row(md, "Br35H report scans", "detection specificity at sensitivity 0.90")[3] == "n/a"


def test_verdict_says_when_the_ci_does_not_reach_the_target():
    t = rt.Target("pooled F1", "x", "lgg:pooled_f1", 0.80, True)
    assert rt.verdict(t, 0.60, [0.55, 0.70]) == "missed by 0.200 (outside the CI)"
    assert rt.verdict(t, 0.80, None) == "met"
    low = rt.Target("missed", "x", "lgg:missed_share", 0.15, False)
    assert rt.verdict(low, 0.30, [0.20, 0.40]) == "missed by 0.150 (outside the CI)"


def test_seed_figures_are_the_mean_and_sd_of_the_runs(tmp_path):
    for i, (f1, dice) in enumerate(((0.80, 0.70), (0.90, 0.80), (0.85, 0.90))):
        (tmp_path / f"r{i}.json").write_text(json.dumps({"global": {"f1": f1}, "per_image_mean": {"f1": dice}}))
    s = rt.seed_figures(tmp_path, ["r0", "r1", "r2"])
    assert math.isclose(s["f1"]["mean"], 0.85) and math.isclose(s["f1"]["sd"], 0.05)
    assert math.isclose(s["dice"]["mean"], 0.80) and s["dice"]["n"] == 3
    assert rt.seed_figures(tmp_path, ["r0", "missing"]) is None
    md = rt.targets_markdown(EV, s, None)
    assert _row(md, "Br35H TEST (official)", "pooled F1, mean of 3 seeds")[3] == "0.850 (sd 0.050, 3 seeds)"


def test_external_volumes_available_needs_flair_volumes(tmp_path):
    from brainseg_lib.study import external_volumes
    assert not external_volumes.available(tmp_path / "absent")
    assert not external_volumes.available(tmp_path)
    (tmp_path / "TCGA_X_flair.nii.gz").write_bytes(b"")
    assert external_volumes.available(tmp_path)


def test_missing_figures_and_unknown_cis_are_not_measured_not_a_crash():
    ev = {"lgg": {"test": {**_half(0.85, 0.6, 0.1, 0.04), "clean_marked_share": None}},
          "br35h_test": {**_half(0.9, 0.84, 0.05, 0.0),
                         "ci95_by_patient": {"pooled_f1": [None, None], "mean_dice_tumour": [math.nan, 0.9]}}}
    md = rt.targets_markdown(ev, None, None)
    assert _row(md, "TCGA-LGG test half", "clean slices marked")[-1] == "not measured"
    row = _row(md, "Br35H TEST (official)", "pooled F1, released file")
    assert row[4] == "" and row[-1] == "met"
    assert _row(md, "Br35H TEST (official)", "mean Dice/image, released file")[4] == ""


def test_detection_is_met_only_at_its_sensitivity():
    def det(sens, spec):
        return {"report_at_fixed_sensitivity": {"all": {"area_frac": {
            "sensitivity": sens, "specificity": spec, "ci95": {"specificity": [spec - 0.05, spec + 0.03]}}}}}
    label = ("Br35H report scans", "detection specificity at sensitivity 0.90")
    assert _row(rt.targets_markdown(EV, None, det(0.91, 0.96)), *label)[-1] == "met"
    low = _row(rt.targets_markdown(EV, None, det(0.85, 0.96)), *label)
    assert low[-1] == "not met: its sensitivity condition fails" and "sensitivity 0.850 < 0.90" in low[3]


def test_verdict_compares_at_the_decimals_shown():
    t = rt.Target("pooled F1", "x", "lgg:pooled_f1", 0.80, True)
    assert rt.verdict(t, 0.7996, None) == "met"          # shown as 0.800
    assert rt.verdict(t, 0.7994, None) == "missed by 0.001"


def test_rows_are_kept_only_for_the_released_model():
    release = {"sha256": "abc", "from_run": "cpu-official-bce_dice-seed0"}
    ev_ok, ev_other = {"sha256": "abc"}, {"sha256": "old"}
    det_ok, det_other = {"run_name": "cpu-official-bce_dice-seed0"}, {"run_name": "release-x-seed0"}
    seeds = ["cpu-official-bce_dice-seed0", "cpu-official-bce_dice-seed1"]
    assert rt.of_the_release(release, ev_ok, det_ok, seeds) == (ev_ok, True, det_ok)
    assert rt.of_the_release(release, ev_other, det_other, seeds) == (None, True, None)
    other = {**release, "from_run": "release-official-bce_dice_img-seed0"}
    assert rt.of_the_release(other, ev_ok, det_ok, seeds)[1:] == (False, None)
    assert rt.of_the_release(None, ev_ok, det_ok, seeds) == (None, False, None)
    # an evaluation that scored the released file's own detection is preferred, whatever the run
    own = {"report_at_fixed_sensitivity": {"all": {}}}
    assert rt.of_the_release(other, {**ev_ok, "detection": own}, det_ok, seeds)[2] is own
    assert rt.of_the_release(release, {**ev_ok, "detection": {"skipped": "no yes/"}}, det_ok, seeds)[2] is det_ok
    assert rt.of_the_release(other, {**ev_other, "detection": own}, det_ok, seeds)[2] is None


def test_rounds_list_every_decision_file_in_round_order(tmp_path):
    from brainseg_lib.report.release_card import later_rounds_markdown, rounds_markdown
    assert "No release lever round" in rounds_markdown(tmp_path)
    (tmp_path / "decision-round2.json").write_text(json.dumps(
        {"plan": "params/release_levers_2.yaml", "trials": [{"tag": "r4"}], "adopted": ["r4"],
         "inference": [{"tag": "r4+i1", "adopted": True}], "release_trial": "r4"}))
    (tmp_path / "decision.json").write_text(json.dumps(
        {"plan": "params/release_levers.yaml", "trials": [{"tag": "r1"}, {"tag": "r2"}], "adopted": [],
         "inference": [], "release_trial": "r0"}))
    (tmp_path / "lever_table-round2.md").write_text("| t |\n")
    lines = rounds_markdown(tmp_path).splitlines()
    assert lines[0] == "- round 1 (`params/release_levers.yaml`): 2 verdicts; adopted: nothing; the released model stays as it was"
    assert lines[1] == "- round 2 (`params/release_levers_2.yaml`): 2 verdicts; adopted: r4, r4+i1; release trial `r4`"
    assert "**round2**\n\n| t |" in later_rounds_markdown(tmp_path)


def test_rounds_sort_by_their_number_not_as_text(tmp_path):
    from brainseg_lib.report.release_card import rounds_markdown
    for stem, tag in (("decision", "a"), ("decision-round10", "j"), ("decision-round2", "b")):
        (tmp_path / f"{stem}.json").write_text(json.dumps({"plan": stem, "trials": [], "adopted": [tag],
                                                           "inference": [], "release_trial": tag}))
    trials = [line.rsplit("`", 2)[-2] for line in rounds_markdown(tmp_path).splitlines()]
    assert trials == ["a", "b", "j"]


def test_a_round_with_a_trial_waiting_for_seeds_says_it_is_pending(tmp_path):
    from brainseg_lib.report.release_card import rounds_markdown
    waiting = {"tag": "h13", "adopted": False, "checks": {"all_seeds": False, "ci_above_0": True}}
    out_of_reach = {"tag": "h14", "adopted": False, "checks": {"all_seeds": False}, "beyond_reach": ["lgg_clean_marked_share"]}
    (tmp_path / "decision-round12.json").write_text(json.dumps(
        {"plan": "p12", "trials": [waiting, out_of_reach], "adopted": [], "inference": []}))
    assert rounds_markdown(tmp_path).strip() == (
        "- round 1 (`p12`): 1 verdict; adopted: nothing; the released model stays as it was; "
        "pending (passed the screen, seeds still to train): h13")
