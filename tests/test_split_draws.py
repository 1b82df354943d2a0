"""The split-draw sweep: several draws of the grouped split, their run names and manifests,
and the three-level bootstrap (split draws x seeds x near-duplicate groups) behind the
official-minus-grouped verdict, on hand-made per-image tables with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainseg_lib.names import split_seed_of
from brainseg_lib.study import split_draws, sweep, verdicts
from brainseg_lib.study.experiment import name_for, run_name


def _runs(names, misses):
    """One per-image table per seed: every image has 100 tumour pixels, ``miss`` of them missed."""
    return [pd.DataFrame({"name": names, "tp": 100.0 - m, "fp": 5.0, "fn": float(m)}) for m in misses]


def _draw(tag, n=30, misses=(10, 10, 10)):
    return _runs([f"{tag}{i}" for i in range(n)], misses)


def test_the_draw_is_part_of_a_grouped_run_name_and_read_back_from_it():
    assert run_name("cpu", 1, "bce_dice", "grouped", split_seed=3) == "cpu-grouped-bce_dice-seed1-split3"
    assert run_name("cpu", 1, "bce_dice", "grouped") == "cpu-grouped-bce_dice-seed1"        # draw 0: as before
    assert run_name("cpu", 1, "bce_dice", "official", split_seed=3) == "cpu-official-bce_dice-seed1"
    assert run_name("cpu", 0, "bce_dice", "grouped", "tag", split_seed=2) == "cpu-grouped-bce_dice-seed0-split2-tag"
    for d in (0, 2, 11):
        assert split_seed_of({"run_name": run_name("cpu", 0, "bce_dice", "grouped", split_seed=d)}) == d
    assert split_seed_of({"run_name": "cpu-grouped-bce_dice-seed0-split4", "split_seed": 1}) == 1   # JSON wins


def test_the_cpu_plan_trains_every_seed_on_every_draw_and_smoke_on_one():
    runs = sweep.plan("cpu", seeds=(0, 1), schemes=("official", "grouped"), extra_losses=(), variants={})
    grouped = sorted((r.get("split_seed", 0), r["seed"]) for r in runs if r["split_scheme"] == "grouped")
    assert grouped == [(d, s) for d in range(5) for s in (0, 1)]
    assert len({name_for(r) for r in runs}) == len(runs)                   # no two runs share a name
    assert split_draws.split_seeds_of(runs) == [0, 1, 2, 3, 4]
    only_official = sweep.plan("cpu", seeds=(0,), schemes=("official",), extra_losses=(), variants={})
    assert all(r["split_scheme"] == "official" for r in only_official)     # no draws without grouped
    smoke = sweep.plan("smoke", seeds=(0,), schemes=("official", "grouped"), extra_losses=(), variants={})
    assert split_draws.split_seeds_of(smoke) == [0]


def test_missing_draw_manifests_are_written_and_existing_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINSEG_SPLITS", str(tmp_path))
    made = []

    def fake(seeds):
        made.extend(seeds)
        return {d: pd.DataFrame({"name": ["a", "b", "c"], "group": [0, 0, 1],
                                 "split": ["train", "train", "test"]}) for d in seeds}
    monkeypatch.setattr(split_draws, "draw_manifests", fake)
    (tmp_path / "grouped_seed0.csv").write_text("kept\n")
    written = split_draws.write_draw_manifests([0, 1, 2])
    assert made == [1, 2] and sorted(p.name for p in written) == ["grouped_seed1.csv", "grouped_seed2.csv"]
    assert (tmp_path / "grouped_seed0.csv").read_text() == "kept\n"
    assert split_draws.write_draw_manifests([0, 1, 2]) == []               # nothing left to write
    monkeypatch.setattr(split_draws, "draw_manifests", lambda seeds: {
        d: pd.DataFrame({"name": ["a", "b"], "group": [0, 0], "split": ["train", "test"]}) for d in seeds})
    with pytest.raises(RuntimeError, match="splits a near-duplicate group"):
        split_draws.write_draw_manifests([3])


def test_one_draw_per_side_gives_the_seed_and_group_verdict():
    rng = np.random.default_rng(0)
    a = _draw("a", misses=rng.integers(5, 15, 3))
    b = _draw("b", misses=rng.integers(25, 35, 3))
    one = split_draws.compare_draws([a], [b], None, n_boot=500)
    ref = verdicts.compare(a, b, None, n_boot=500)
    assert one["diff"] == pytest.approx(ref["diff"])
    assert one["verdict"] == ref["verdict"] == "higher"
    assert one["draws"] == [1, 1] and one["seeds_per_draw"] == [[3], [3]]


def _noisy_draw(tag, base_miss, rng, n=30):
    """Three seeds on ``n`` images whose misses scatter around ``base_miss`` (per image and seed)."""
    names = [f"{tag}{i}" for i in range(n)]
    return [pd.DataFrame({"name": names, "tp": 100.0 - m, "fp": 5.0, "fn": m})
            for m in (np.clip(rng.normal(base_miss, 8, n), 0, 100).round() for _ in range(3))]


def test_draw_to_draw_spread_enters_the_ci():
    """Five draws whose TEST sets differ in difficulty: with the draws resampled the CI is wider
    than one draw's seeds-and-groups CI, and a gap that one draw makes look real can become no
    evidence."""
    rng = np.random.default_rng(5)
    easy_to_hard = [_noisy_draw(f"d{k}", m, rng) for k, m in enumerate((2, 10, 20, 30, 45))]
    official = [_noisy_draw("off", 15, rng)]
    many = split_draws.compare_draws(official, easy_to_hard, None, n_boot=2000)
    single = split_draws.compare_draws(official, easy_to_hard[-1:], None, n_boot=2000)
    width = lambda r: r["ci95"][1] - r["ci95"][0]   # noqa: E731
    assert width(single) > 0.01                                # seeds and images do scatter
    assert single["verdict"] == "higher"                       # against the hardest draw alone
    assert many["verdict"] == "no evidence" and width(many) > 3 * width(single)
    assert len(many["per_draw_f1"][1]) == 5
    assert many["diff"] == pytest.approx(many["per_draw_f1"][0][0] - np.mean(many["per_draw_f1"][1]))


def test_a_multi_draw_side_resamples_its_draw_means_only():
    """Within-draw noise is already in each draw's mean; resampling it again inside would count
    it twice. Five draws with the same mean give a CI no wider than the official side's own."""
    rng = np.random.default_rng(6)
    same = _noisy_draw("s", 20, rng)
    draws = [[t.assign(name=t["name"] + f"-{k}") for t in same] for k in range(5)]
    official = [_noisy_draw("off", 20, rng)]
    alone = split_draws.compare_draws(official, [same], None, n_boot=2000)
    many = split_draws.compare_draws(official, draws, None, n_boot=2000)
    width = lambda r: r["ci95"][1] - r["ci95"][0]   # noqa: E731
    assert width(many) < width(alone)
    counts = [verdicts.group_counts(d, None) for d in draws]
    boot = split_draws.draws_of(counts, 500, np.random.default_rng(0))
    assert np.allclose(boot, verdicts.point_f1(counts[0]))       # equal draw means: no spread left
    inner = split_draws.draws_of(counts[:1], 500, np.random.default_rng(0))
    assert inner.std() > 0.002                                   # one draw: seeds and images resampled


def test_a_draw_without_runs_is_refused():
    with pytest.raises(ValueError, match="every draw"):
        split_draws.compare_draws([_draw("a")], [_draw("b"), []], None)


def test_sentences_say_a_grouped_mean_is_over_draws_and_seeds():
    from brainseg_lib.report import findings
    from brainseg_lib.report.seed_findings import runs_words
    assert runs_words({"n_seeds": 15, "n_draws": 5}) == "5 split draws × 3 seeds"
    assert runs_words({"n_seeds": 3}) == "3 seeds" and runs_words({"n_seeds": 1, "n_draws": 1}) == "1 seed"
    contrast = {"diff": 0.02, "ci95": [-0.01, 0.05], "verdict": "no evidence", "seeds": [3, 15],
                "units": "split draws x seeds x near-duplicate groups"}
    rep = {"official": {"f1_mean": 0.9, "f1_sd": 0.01, "n_seeds": 3},
           "grouped": {"f1_mean": 0.88, "f1_sd": 0.02, "n_seeds": 15, "n_draws": 5}}
    assert findings.seeds_headline(rep).endswith("(mean ± sd over 3 seeds and 5 split draws × 3 seeds).")
    text = findings.findings_markdown({**rep, "official_minus_grouped_f1": 0.02,
                                       "contrasts": {"official_minus_grouped": contrast},
                                       "loss": {"bce_dice_minus_bce_f1": None}, "threshold": {}})
    assert "(mean ± sd over 3 seeds and 5 split draws × 3 seeds)" in text
    assert "resampling split draws x seeds x near-duplicate groups" in text and "no evidence" in text


def test_seed_spread_counts_the_draws_and_table1_labels_them():
    from brainseg_lib.study import seed_spread, table1
    runs = pd.DataFrame({"split_scheme": ["official"] * 3 + ["grouped"] * 6, "loss": "bce_dice",
                         "split_seed": [0, 0, 0, 0, 0, 1, 1, 2, 2],
                         "f1": [0.9, 0.9, 0.9, 0.8, 0.8, 0.9, 0.9, 0.7, 0.7]})
    rep = seed_spread.findings(runs)
    assert rep["grouped"]["n_draws"] == 3 and rep["grouped"]["n_seeds"] == 6
    assert rep["grouped"]["f1_mean"] == pytest.approx(0.8)
    unequal = runs.drop(index=[8])                 # draw 2 with one seed weighs as much as the others
    assert seed_spread.findings(unequal)["grouped"]["f1_mean"] == pytest.approx(0.8)
    assert unequal.loc[unequal.split_scheme == "grouped", "f1"].mean() != pytest.approx(0.8)
    from brainseg_lib.evaluation.metrics import METRICS
    full = runs.assign(**{m: 0.5 for m in METRICS if m != "f1"})
    assert seed_spread.summarize_runs(full).set_index("split_scheme").loc["grouped", "n_draws"] == 3
    g = {"profile": "cpu", "split_scheme": "grouped", "loss": "bce_dice", "n_images": 100,
         "global": {"f1": 0.8, "iou": 0.7, "precision": 0.8, "recall": 0.8, "specificity": 0.99,
                    "accuracy": 0.98}}
    rs = [{**g, "seed": s, "run_name": run_name("cpu", s, "bce_dice", "grouped", split_seed=d)}
          for d in (0, 1) for s in (0, 1)]
    label = table1.reproduction_rows(rs)["Study"].iloc[0]
    assert label.endswith("(mean ± sd over 4 runs: 2 split draws × seeds)")


def test_the_table1_plot_names_a_mean_over_draws():
    from brainseg_lib.report.table1_plot import ours_label
    study = ("Ours: cpu profile, grouped split, bce_dice, + healthy scans x1, seed sweep "
             "(mean ± sd over 15 runs: 5 split draws × seeds)")
    assert ours_label(study).endswith("mean of 15 runs, 5 split draws")
    assert ours_label(study.replace("15 runs: 5 split draws × seeds", "3 seeds")).endswith("mean of 3 seeds")


def test_every_contrast_has_a_label_in_the_forest_plot():
    from brainseg_lib.report.plots import CONTRAST_LABELS
    from brainseg_lib.study.seed_spread import CONTRASTS
    assert {key for key, *_ in CONTRASTS} <= set(CONTRAST_LABELS)
