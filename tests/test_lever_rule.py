"""The lever rule (study/lever_rule.py) on hand-made lever tables only. The rule was written
after the trials it judges had run (README, "How the cpu profile was chosen"), so a test that
it keeps the committed profile would only restate what it was written to do."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brainseg_lib.study import lever_rule

RULE = {"min_score_gain": 0.02, "max_val_f1_loss": 0.01, "max_healthy_marked": 0.05}


def _table(rows):
    """A lever table from (tag, size, F1, Dice, clean marked, VAL F1, healthy marked) rows."""
    cols = ["tag", "image_size", "ext_dev_pooled_f1", "ext_dev_mean_dice", "ext_dev_clean_marked",
            "val_f1", "healthy_val_marked"]
    t = pd.DataFrame(rows, columns=cols)
    return t.assign(healthy_ratio=1.0, input_norm="zscore", augment_level="full")


def _plan(against):
    return {"base": "cpu", "rule": dict(RULE), "trials": [{"tag": k, "against": v} for k, v in against.items()]}


TABLE = _table([("a", 64, 0.50, 0.30, 0.20, 0.90, 0.30),    # score 0.60
                ("b", 96, 0.52, 0.30, 0.20, 0.895, 0.04),  # +0.02 exactly, VAL -0.005: passes
                ("c", 128, 0.70, 0.30, 0.20, 0.88, 0.01),  # +0.20 but VAL -0.02: fails
                ("d", 32, 0.51, 0.30, 0.20, 0.90, 0.01)])  # +0.01: fails
PLAN = _plan({"a": None, "b": "a", "c": "a", "d": "b"})


def _profile(size):
    """A profile with the hand-made trials' settings at input size ``size`` (which picks the trial)."""
    return {"image_size": size, "healthy_ratio": 1.0, "input_norm": "zscore", "augment_level": "full"}


def test_dev_score_adds_f1_and_dice_and_subtracts_clean_marked():
    np.testing.assert_allclose(lever_rule.dev_score(TABLE), [0.60, 0.62, 0.80, 0.61])


@pytest.mark.parametrize("gain, change, expected", [
    (0.02, -0.01, "passes"),                       # both limits are inclusive
    (0.019, 0.0, "fails: score gain +0.019 < 0.02"),
    (0.05, -0.011, "fails: VAL F1 -0.011 < -0.01"),
    (0.0, -0.02, "fails: score gain +0.000 < 0.02; VAL F1 -0.020 < -0.01"),
    (np.nan, 0.0, "not scored"),
])
def test_verdict_names_each_condition_missed(gain, change, expected):
    assert lever_rule.verdict(gain, change, RULE) == expected


def test_apply_rule_compares_each_trial_with_the_one_it_names():
    rules, check = lever_rule.apply_rule(TABLE, PLAN, _profile(96))
    r = rules.set_index("tag")
    assert list(r["verdict"]) == ["first trial", "passes", "fails: VAL F1 -0.020 < -0.01",
                                  "fails: score gain -0.010 < 0.02"]     # d against b, not against a
    assert r.loc["d", "score_gain"] == pytest.approx(-0.01)
    assert r.loc["c", "val_f1_change"] == pytest.approx(-0.02)
    assert list(r["in_profile"]) == ["yes", "yes", "", ""]
    assert check["profile_trial"] == "b" and check["chain"] == ["b", "a"]
    assert check["chain_passes"] and check["healthy_ok"] and check["kept"]
    assert check["allowed"] == ["b"]                      # a marks 30% of healthy scans; c and d fail
    assert check["val_f1_change_from_first"] == pytest.approx(-0.005)


@pytest.mark.parametrize("against, message", [
    ({"a": None, "b": "a", "c": None, "d": "b"}, "trial 'c' must name an earlier trial"),   # no comparison
    ({"a": None, "b": "d", "c": "a", "d": "b"}, "trial 'b' must name an earlier trial"),    # a later one
    ({"a": None, "b": "a", "c": "x", "d": "b"}, "trial 'c' must name an earlier trial"),    # misspelt
    ({"a": "b", "b": "a", "c": "a", "d": "b"}, "the first trial 'a' has no base"),
])
def test_a_plan_whose_trials_do_not_name_earlier_bases_is_refused(against, message):
    with pytest.raises(ValueError, match=message):
        lever_rule.apply_rule(TABLE, _plan(against), {"image_size": 96})


@pytest.mark.parametrize("size, healthy_marked, why", [
    (128, 0.01, "chain_passes"),    # c fails the rule
    (32, 0.01, "chain_passes"),     # d fails, though its base b passes
    (96, 0.06, "healthy_ok"),       # b passes but marks 6% of the healthy VAL scans
])
def test_a_profile_is_not_kept_when_its_chain_fails_or_it_marks_too_many(size, healthy_marked, why):
    table = TABLE.copy()
    table.loc[table.tag == "b", "healthy_val_marked"] = healthy_marked
    _, check = lever_rule.apply_rule(table, PLAN, _profile(size))
    assert not check[why] and not check["kept"]


def test_a_profile_matching_no_trial_is_not_kept_and_its_check_is_json(tmp_path):
    rules, check = lever_rule.apply_rule(TABLE, PLAN, {"image_size": 256})
    assert check["profile_trial"] is None and check["chain"] == [] and not check["kept"]
    assert check["healthy_val_marked"] is None
    json.dumps(check, allow_nan=False)
    assert "trial none" in lever_rule.rule_markdown(rules, check, "cpu")


def test_chain_refuses_a_base_that_is_not_a_trial_or_a_loop():
    assert lever_rule.chain("d", {"a": None, "b": "a", "d": "b"}) == ["d", "b", "a"]
    with pytest.raises(ValueError, match="'x', which is not an earlier trial"):
        lever_rule.chain("b", {"a": None, "b": "x"})
    with pytest.raises(ValueError, match="not an earlier trial"):
        lever_rule.chain("a", {"a": "b", "b": "a"})


def test_rule_of_names_the_missing_limits():
    with pytest.raises(ValueError, match="max_val_f1_loss, max_healthy_marked"):
        lever_rule.rule_of({"rule": {"min_score_gain": 0.02}})
    with pytest.raises(ValueError, match="min_score_gain"):
        lever_rule.rule_of({})


def test_rule_markdown_states_the_limits_from_the_plan():
    rules, check = lever_rule.apply_rule(TABLE, {**PLAN, "rule": {**RULE, "min_score_gain": 0.015}},
                                         _profile(32))
    md = lever_rule.rule_markdown(rules, check, "cpu")
    assert "by at least 0.015 and" in md                                # the limit as written, not rounded
    assert "costs VAL F1 no more than 0.01" in md and "at most 5% of the healthy" in md
    assert "trial d (chain d <- b <- a); every trial on it passes: no" in md

