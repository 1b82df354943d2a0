"""Releasing the trial a round of lever trials adopted (``study.release_plan``), on a hand-made
plan, decision and tiny checkpoints: what is refused and why, what the released file holds,
the agreement check, and the card written from the members' records."""
from __future__ import annotations

import json

import pytest
import yaml
from conftest import tiny_checkpoint_state

from brainseg_lib.model.checkpoint import save_checkpoint
from brainseg_lib.study import release_levers as rl
from brainseg_lib.study import release_plan as rp
from brainseg_lib.study.release import ReleaseRefused

PLAN = {"name": "roundx", "base": "cpu", "fixed": {"epochs": 30, "threads": 2, "split_scheme": "official"},
        "seeds": [0, 1, 2],
        "rule": {"screen_gain": 0.01, "max_val_f1_loss": 0.02, "max_healthy_marked_rise": 0.02,
                 "max_lgg_clean_marked_rise": 0.02, "n_boot": 100, "lgg_held_out_sites": ["DU"]},
        "trials": [{"tag": "r0-cpu", "lever": "reference", "set": {}},
                   {"tag": "t1-aug", "against": "r0-cpu", "lever": "more augmentation",
                    "set": {"augment_level": "mri"}},
                   {"tag": "t2-ens", "against": "r0-cpu", "lever": "t1 as 3-seed ensembles with flips",
                    "ensemble_of": "t1-aug", "members": 3, "tta": True, "min_component": 0.002}],
        "inference": []}


@pytest.fixture
def plan(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINSEG_RELEASE_LEVERS", str(tmp_path / "levers"))
    monkeypatch.setenv("BRAINSEG_RESULTS", str(tmp_path / "results"))
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(PLAN)), sort_keys=False))
    return rl.load_plan(path)


def write_decision(plan, adopted, trial="t2-ens"):
    folder = rl.folder()
    folder.mkdir(parents=True, exist_ok=True)
    decision = {"plan": plan["source"], "adopted": adopted, "release_trial": trial if adopted else "r0-cpu",
                "release_inference": {"tta": True, "min_component": 0.002} if adopted else
                {"tta": False, "min_component": 0.0}}
    (folder / "decision-roundx.json").write_text(json.dumps(decision))
    return rp.read_decision(plan)


def train_members(plan, tag="t2-ens"):
    for run, ck in zip(rl.member_runs(plan, tag, 0), rl.checkpoints(plan, tag, 0)):
        state = tiny_checkpoint_state(32, seed=len(run))
        save_checkpoint(state, ck)


def test_a_round_not_yet_judged_is_refused_with_its_command(plan):
    with pytest.raises(ReleaseRefused, match="release-levers --plan"):
        rp.read_decision(plan)


def test_a_decision_from_another_plan_file_is_refused(plan):
    write_decision(plan, ["t2-ens"])
    path = rl.folder() / "decision-roundx.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "plan": "params/other.yaml"}))
    with pytest.raises(ReleaseRefused, match="other.yaml"):
        rp.read_decision(plan)


def test_a_round_that_adopted_nothing_leaves_the_release_alone(plan):
    with pytest.raises(ReleaseRefused, match="adopted no trial"):
        rp.chosen(plan, write_decision(plan, []))


def test_missing_checkpoints_are_named_with_the_command_that_trains_them(plan):
    with pytest.raises(ReleaseRefused, match="release-levers --plan") as e:
        rp.chosen(plan, write_decision(plan, ["t2-ens"]))
    assert "seed0-t1-aug" in str(e.value) and "seed2-t1-aug" in str(e.value)


def test_a_chosen_threshold_is_released_with_the_other_settings(plan, tmp_path, monkeypatch):
    from brainseg_lib.inference import checkpoint_threshold
    from brainseg_lib.model.released import load_released
    train_members(plan)
    decision = write_decision(plan, ["t2-ens"])
    path = rl.folder() / "decision-roundx.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "release_inference":
                                {"tta": True, "min_component": 0.002, "threshold": 0.3}}))
    assert rp.chosen(plan, rp.read_decision(plan))["inference"]["threshold"] == 0.3
    assert "threshold" not in rp.chosen(plan, decision)["inference"]
    _stub_scoring(monkeypatch, predict_f1=0.80)
    dest = tmp_path / "models" / "brainseg-cpu.pt"
    info = rp.release_from_plan(plan["source"], dest=dest)
    assert checkpoint_threshold(load_released(dest)) == 0.3 and info["inference"]["threshold"] == 0.3


def test_a_histogram_standardisation_is_refused_until_predict_applies_it(plan):
    train_members(plan)
    write_decision(plan, ["t2-ens"])
    path = rl.folder() / "decision-roundx.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "release_inference":
                                {"tta": True, "min_component": 0.002, "standardize": "br35h_train"}}))
    with pytest.raises(ReleaseRefused, match="ScanSettings"):
        rp.chosen(plan, rp.read_decision(plan))


def test_an_adopted_ensemble_releases_its_first_seeds_members_and_settings(plan):
    train_members(plan)
    got = rp.chosen(plan, write_decision(plan, ["t2-ens"]))
    assert got["trial"] == "t2-ens" and got["seed"] == 0
    assert got["member_runs"] == [f"cpu-official-bce_dice-seed{s}-t1-aug" for s in (0, 1, 2)]
    assert got["inference"] == {"tta": True, "min_component": 0.002}
    assert [p.parent.name for p in got["checkpoints"]] == got["member_runs"]


def _stub_scoring(monkeypatch, predict_f1, reported_f1=0.80):
    from brainseg_lib.data import br35h
    from brainseg_lib.model import onnx
    from brainseg_lib.study import release_eval
    cards = []
    monkeypatch.setattr(onnx, "export_onnx", lambda model: None)
    monkeypatch.setattr(release_eval, "evaluate_release",
                        lambda model, data_root=None: {"br35h_test": {"pooled_f1": reported_f1}})
    monkeypatch.setattr(rp, "predict_check", lambda model, data_root=None: {"f1": predict_f1})
    monkeypatch.setattr(rp, "write_card", lambda folder: cards.append(folder))
    monkeypatch.setattr(rp, "recipe_seeds", lambda plan, what, sha, data_root=None, out_dir=None:
                        {"trial": what["trial"], "release_sha256": sha})
    monkeypatch.setattr(br35h, "list_split", lambda split, root=None: ([None] * (5 if split == "train" else 2), None))
    return cards


def test_release_from_plan_writes_the_ensemble_and_its_record(plan, tmp_path, monkeypatch):
    from brainseg_lib.model.released import load_released
    train_members(plan)
    write_decision(plan, ["t2-ens"])
    cards = _stub_scoring(monkeypatch, predict_f1=0.805)
    dest = tmp_path / "models" / "brainseg-cpu.pt"
    info = rp.release_from_plan(plan["source"], dest=dest)
    ck = load_released(dest)
    assert len(ck["members"]) == 3 and ck["inference"] == {"tta": True, "min_component": 0.002}
    saved = json.loads((dest.parent / "release.json").read_text())
    assert saved == info and saved["from_trial"] == "t2-ens" and saved["within_tolerance"]
    assert saved["member_runs"][2] == "cpu-official-bce_dice-seed2-t1-aug"
    assert saved["abs_difference"] == pytest.approx(0.005) and cards == [dest.parent]
    seeds = json.loads((dest.parent / rp.SEEDS_JSON).read_text())
    assert seeds == {"trial": "t2-ens", "release_sha256": saved["sha256"]}


def test_a_release_that_predict_disagrees_with_is_refused(plan, tmp_path, monkeypatch):
    train_members(plan)
    write_decision(plan, ["t2-ens"])
    _stub_scoring(monkeypatch, predict_f1=0.75)
    with pytest.raises(RuntimeError, match="disagrees"):
        rp.release_from_plan(plan["source"], dest=tmp_path / "models" / "m.pt")
    assert not (tmp_path / "models" / "release.json").exists()


def test_the_card_of_a_plan_release_says_what_the_file_holds(tmp_path, monkeypatch):
    from brainseg_lib.report import release_card
    from brainseg_lib.report.model_card import lever_model_card
    from brainseg_lib.training.config import TrainConfig
    monkeypatch.setenv("BRAINSEG_RESULTS", str(tmp_path))
    ev = {"image_size": 64, "br35h_test": {"pooled_f1": 0.83, "mean_dice_tumour": 0.8, "tumour_slices_missed": 4,
                                           "n_tumour_slices": 100, "n_slices": 100,
                                           "ci95_by_patient": {"pooled_f1": [0.8, 0.86], "mean_dice_tumour": [0.75, 0.84]}}}
    monkeypatch.setattr("brainseg_lib.report.model_card._release_sections", lambda ev: "SECTIONS")
    members = [{"run_name": f"run{s}", "config": {**TrainConfig(seed=s, head_crop=True).to_dict()},
                "epochs_run": 30, "best_epoch": 20 + s, "device": "cpu"} for s in range(3)]
    info = {"model": "results/models/brainseg-cpu.pt", "from_plan": "params/p.yaml", "decision": "d.json",
            "from_trial": "t2-ens", "lever": "an ensemble", "trial_seed": 0, "size_bytes": 2e6, "sha256": "ab",
            "train_images": 500, "val_images": 201, "inference": {"tta": True, "min_component": 0.002},
            "test_f1_via_predict": 0.83, "test_f1_native_reported": 0.83, "reported_in": "x.json",
            "abs_difference": 0.0, "tolerance": 0.01}
    card = lever_model_card(info, ev, members)
    assert "the mean logits of 3 models trained alike with seeds 0, 1, 2" in card
    assert "cropped to its head" in card and "test-time flips" in card and "under 0.2% of the input" in card
    assert "pooled F1 0.830 [0.800, 0.860]" in card and "4 of 100 tumours with no prediction" in card
    assert "best epochs by validation Dice:\n  20, 21, 22" in card and "SECTIONS" in card
    assert "Table I's \"ours\" row is the study's cpu run, not this file" in card
    assert "from probability" not in card
    with_threshold = lever_model_card({**info, "inference": {**info["inference"], "threshold": 0.3}}, ev, members)
    assert "a pixel is tumour from probability 0.3 on (not 0.5" in with_threshold
    (tmp_path / "models").mkdir()
    assert release_card.from_study_run(tmp_path / "models")
    (tmp_path / "models" / "release.json").write_text(json.dumps(info))
    assert not release_card.from_study_run(tmp_path / "models")


def test_recipe_seed_figures_are_kept_only_for_the_released_file():
    from brainseg_lib.report.release_targets import recipe_seed_figures
    recipe = {"release_sha256": "ab", "f1": {"mean": 0.86, "sd": 0.01, "n": 3},
              "dice": {"mean": 0.8, "sd": 0.02, "n": 3}, "seeds": []}
    assert recipe_seed_figures(recipe, {"sha256": "ab"}) == {"f1": recipe["f1"], "dice": recipe["dice"]}
    assert recipe_seed_figures(recipe, {"sha256": "cd"}) is None
    assert recipe_seed_figures(None, {"sha256": "ab"}) is None
