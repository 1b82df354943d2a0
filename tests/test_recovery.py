"""Recovery from any entry point (issue 28, probe 8): a results swap a crash interrupted is
finished or rolled back by whichever command runs next, not only by ``run-study``.

Each test builds a results folder, starts ``staging.promote`` of a new stage and kills it
between two folder renames (as ``tests/test_run_all.py`` does), then runs a reading command
through ``brainseg_lib.cli.main`` and checks what it saw."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from brainseg_lib import paths
from brainseg_lib.cli import main as cli_main
from brainseg_lib.model import released
from brainseg_lib.model.checkpoint import save_checkpoint
from brainseg_lib.study import staging

from conftest import scan_image, tiny_checkpoint_state

METRICS = ("f1", "iou", "precision", "recall", "specificity", "accuracy")


def run_json(folder: Path, f1: float, name="cpu-official-bce_dice-seed0") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({
        "kind": "segmentation_run", "run_name": name, "profile": "cpu", "epochs_run": 2,
        "global": {k: f1 for k in METRICS}}))


def release(folder: Path, seed: int) -> Path:
    ck = save_checkpoint(tiny_checkpoint_state(32, seed), folder / f"src{seed}.pt")
    dest = released.release_model(ck, folder / "models" / "brainseg-cpu.pt")
    ck.unlink()
    return dest


def crash_promote(stage: Path, dest: Path, monkeypatch, after: int) -> None:
    """Run ``promote`` and kill it after ``after`` folder renames (the journal's file renames pass)."""
    real, moved = os.replace, []

    def replace(a, b):
        if Path(a).is_dir():
            if len(moved) >= after:
                raise KeyboardInterrupt("killed")
            moved.append(a)
        real(a, b)
    with monkeypatch.context() as m:
        m.setattr(staging.os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            staging.promote(stage, dest)
    assert (dest / staging.JOURNAL).is_file()            # the swap is half done


@pytest.fixture
def results(isolated_dirs, monkeypatch):
    """results/ with an old released model and run; a stage with new ones."""
    res = isolated_dirs["results"]
    monkeypatch.delenv("BRAINSEG_MODEL", raising=False)
    old_model = release(res, seed=0)
    run_json(res / "metrics", 0.5)
    stage = res / ".staging-t"
    release(stage, seed=1)
    run_json(stage / "metrics", 0.9)
    return res, stage, released.verify_checksum(old_model)


def test_predict_after_a_half_swap_sees_the_rolled_back_model(results, monkeypatch, tmp_path, capsys):
    """Killed after moving the old folders aside and before moving the new ones in: results/
    has no released model. predict rolls the swap back first and uses the old model."""
    res, stage, old_digest = results
    crash_promote(stage, res, monkeypatch, after=2)         # models/ and metrics/ moved aside
    assert not paths.released_model().exists()
    img = tmp_path / "scan.png"
    Image.fromarray(scan_image(30, 20)).save(img)
    assert cli_main(["predict", "--input", str(img), "--output", str(tmp_path / "out"),
                     "--device", "cpu"]) == 0
    assert "rolled back" in capsys.readouterr().err
    assert (tmp_path / "out" / "scan_mask.png").is_file()
    assert released.verify_checksum(paths.released_model()) == old_digest
    assert not (res / staging.JOURNAL).exists() and not list(res.glob(".previous-*"))


def test_headline_after_a_half_swap_sees_all_old_results(results, monkeypatch, capsys):
    """Killed with one new folder in and one old folder aside: headline rolls back first and
    reports the old run, never a mix."""
    res, stage, _ = results
    crash_promote(stage, res, monkeypatch, after=3)         # 2 old out, new metrics/ in
    assert cli_main(["headline"]) == 0
    out = capsys.readouterr().out
    assert "test F1 0.500" in out and "0.900" not in out
    assert not (res / staging.JOURNAL).exists()


def test_headline_after_a_finished_swap_whose_cleanup_died_sees_the_new_results(results, capsys):
    res, stage, _ = results
    staging.promote(stage, res)
    backup = res / ".previous-t"
    (backup / "metrics").mkdir(parents=True)                 # the clean-up never ran
    (res / staging.JOURNAL).write_text(json.dumps({"backup": backup.name, "stage": stage.name,
                                                   "folders": ["metrics", "models"],
                                                   "had_old": ["metrics", "models"], "done": True}))
    assert cli_main(["headline"]) == 0
    assert "test F1 0.900" in capsys.readouterr().out
    assert not backup.exists() and not (res / staging.JOURNAL).exists()


def test_a_profile_folder_is_recovered_too(isolated_dirs, monkeypatch):
    """results/paper (or results/smoke) holds its own journal when its run_all swap died."""
    res = isolated_dirs["results"]
    dest = res / "paper"
    run_json(dest / "metrics", 0.5)
    stage = dest / ".staging-p"
    run_json(stage / "metrics", 0.9)
    crash_promote(stage, dest, monkeypatch, after=1)
    assert staging.recover_results() == ["results/paper: rolled back an interrupted promotion; "
                                         "the previous results are in place"]
    kept = json.loads((dest / "metrics" / "cpu-official-bce_dice-seed0.json").read_text())
    assert kept["global"]["f1"] == 0.5


def test_a_swap_in_progress_elsewhere_is_waited_for_then_refused(isolated_dirs):
    res = isolated_dirs["results"]
    (res / staging.JOURNAL).write_text(json.dumps({"backup": ".previous-x", "stage": ".staging-x",
                                                   "folders": [], "had_old": [], "done": False}))
    with staging.exclusive_lock(res):                         # another process's run_all
        with pytest.raises(staging.RunInProgress, match="swapping new results"):
            staging.recover_results(wait_s=0.3)
    assert staging.recover_results() == ["results: rolled back an interrupted promotion; "
                                         "the previous results are in place"]


def test_no_journal_means_nothing_to_do(isolated_dirs):
    assert staging.recover_results() == []
    assert not (isolated_dirs["results"] / staging.LOCK).exists()   # not even a lock file


def test_a_journal_naming_a_path_outside_is_refused(isolated_dirs, tmp_path):
    """The journal's folder names are checked: a tampered one never deletes outside results/."""
    res = isolated_dirs["results"]
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("x")
    (res / staging.JOURNAL).write_text(json.dumps({"backup": "../../victim", "stage": ".staging-x",
                                                   "folders": [], "had_old": [], "done": True}))
    with pytest.raises(ValueError, match="not a single folder"):
        staging.recover(res)
    assert (victim / "keep.txt").is_file()
