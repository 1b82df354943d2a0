"""Scratch runs stay scratch (issue 28, probe 9): ``train --profile smoke`` writes under
``results/smoke/``, never into the study's ``results/metrics``, and ``table``, ``headline``
and ``update-readme`` leave runs of scratch profiles out wherever they are found. Also the
run edges of probes 10-11: ``--resume`` with nothing to resume is refused, a fresh run that
is interrupted leaves no old metrics beside its wiped run folder, and ``run_all.sh`` expands
a ``~`` in ``BRAINSEG_DATA``.

Training here is one epoch of the smoke profile on the tiny hand-made Br35H tree
(``fake_root``), with the external set pointed at nothing, so it takes seconds."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from brainseg_lib import paths
from brainseg_lib.cli import main as cli_main
from brainseg_lib.study import table1

METRICS = ("f1", "iou", "precision", "recall", "specificity", "accuracy")


@pytest.fixture
def no_external(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINSEG_EXTERNAL", str(tmp_path / "no_external"))


def study_run(folder, name="cpu-official-bce_dice-seed0", profile="cpu", f1=0.86):
    """A finished run's metric JSON in ``folder`` (the fields Table I and headline read)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({
        "kind": "segmentation_run", "run_name": name, "profile": profile, "split_scheme": "official",
        "loss": "bce_dice", "seed": 0, "run_tag": None, "epochs_run": 2, "n_images": 12,
        "config": {"healthy_ratio": 0.0}, "global": {k: f1 for k in METRICS}}))


def test_train_smoke_does_not_write_into_the_study_results(fake_root, no_external, capsys):
    study_run(paths.metrics_dir())
    before = sorted(p.name for p in paths.metrics_dir().iterdir())
    assert cli_main(["--data", str(fake_root), "train", "--profile", "smoke",
                     "--set", "epochs=1", "--set", "detection_points=false"]) == 0
    assert sorted(p.name for p in paths.metrics_dir().iterdir()) == before     # nothing new there
    own = paths.profile_results_dir("smoke") / "metrics"
    assert (own / "smoke-official-bce_dice-seed0.json").is_file()
    assert own.parent == paths.results_dir() / "smoke"
    capsys.readouterr()
    assert cli_main(["headline"]) == 0
    out = capsys.readouterr().out
    assert "cpu-official-bce_dice-seed0" in out and "smoke" not in out
    assert cli_main(["headline", "--profile", "smoke"]) == 0                  # asked for: shown
    assert "smoke-official-bce_dice-seed0" in capsys.readouterr().out
    assert cli_main(["table"]) == 0
    assert "smoke profile" not in (paths.tables_dir() / "table1.md").read_text()


def test_smoke_runs_left_in_the_study_folders_are_not_listed(capsys):
    """A smoke run from before this fix (or a smoke sweep) in the study's folders: table,
    headline and update-readme leave it out; the study's own rows stay."""
    study_run(paths.metrics_dir())
    study_run(paths.metrics_dir(), "smoke-official-bce_dice-seed0", "smoke", f1=0.0)
    study_run(paths.sweep_dir() / "metrics", "smoke-official-bce_dice-seed1", "smoke", f1=0.0)
    assert cli_main(["headline"]) == 0
    out = capsys.readouterr().out
    assert "cpu-official-bce_dice-seed0" in out and "smoke" not in out
    assert cli_main(["table"]) == 0
    md = (paths.tables_dir() / "table1.md").read_text()
    assert "Ours: cpu profile" in md and "smoke" not in md
    # notebook 04 of a smoke run keeps them: its table is about them
    assert any(table1.is_scratch_row(r) for r in table1.build_table1()["Study"])


def test_update_readme_leaves_scratch_rows_out(tmp_path):
    from brainseg_lib.report import readme
    study_run(tmp_path / "m")
    study_run(tmp_path / "m", "smoke-official-bce_dice-seed0", "smoke", f1=0.0)
    table1.write_table1(table1.build_table1(metrics_dir=tmp_path / "m"))   # a smoke row in table1.md
    assert "Ours: smoke profile" in (paths.tables_dir() / "table1.md").read_text()
    text = "\n".join(f"<!-- {m}:START -->\n<!-- {m}:END -->" for m in
                     ("TABLE1", "HEADLINE", "PROFILES", "TIMINGS", "SPEED", "KEY_FINDINGS")) + "\n"
    target = tmp_path / "README.md"
    target.write_text(text)
    assert readme.update_readme(target)
    new = target.read_text()
    assert "Ours: cpu profile" in new and "smoke profile" not in new


def test_one_rule_for_where_a_profile_writes(isolated_dirs):
    """run_all.sh, train and the sweep share paths.profile_results_dir / sweep_dir_for."""
    from brainseg_lib.study import run_all
    assert paths.profile_results_dir("cpu") == paths.results_dir() == run_all.destination("cpu")
    assert paths.profile_results_dir("paper") == paths.results_dir() / "paper"
    assert paths.sweep_dir_for("cpu") == paths.sweep_dir() == isolated_dirs["sweep"]
    assert paths.sweep_dir_for("smoke") == paths.results_dir() / "smoke" / "sweep"
    assert paths.is_scratch_profile("smoke") and paths.is_scratch_profile("custom")
    assert not paths.is_scratch_profile("cpu") and not paths.is_scratch_profile("paper")


# ------------------------------------------------------------------ probes 10-11: run edges
def test_resume_without_a_run_is_refused_in_one_line(fake_root, no_external, capsys):
    """`--resume` with no run folder (or no last.pt in it) used to start fresh in silence."""
    assert cli_main(["--data", str(fake_root), "train", "--profile", "smoke", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no checkpoint to resume" in err and "drop --resume" in err
    assert not (paths.runs_dir() / "smoke-official-bce_dice-seed0").exists()


def test_an_interrupted_fresh_run_leaves_no_old_metrics(fake_root, no_external, monkeypatch):
    """A fresh run wipes its run folder and, with it, its old metric files: an interrupt
    then leaves neither, never an old result beside a wiped run."""
    from brainseg_lib.study import experiment
    from brainseg_lib.study.profiles import load_profile
    name = "smoke-official-bce_dice-seed0"
    (paths.runs_dir() / name).mkdir(parents=True)
    (paths.runs_dir() / name / "history.csv").write_text("old")
    old = [paths.metrics_dir() / f"{name}{s}" for s in experiment.RUN_OUTPUTS]
    for p in old:
        p.write_text("old")
    other = paths.metrics_dir() / f"{name}-tagged.json"        # another run's file stays
    other.write_text("other")

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(experiment, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        experiment.run_profile(load_profile("smoke"), data_root=fake_root)
    assert not (paths.runs_dir() / name).exists()
    assert not [p for p in old if p.exists()] and other.read_text() == "other"


@pytest.mark.skipif(sys.platform == "win32", reason="bash")
def test_run_all_expands_a_tilde_in_brainseg_data(tmp_path):
    """check-data expands `~` (paths._from_env); run_all.sh used to look in <root>/~/..."""
    r = subprocess.run(["bash", str(paths.PROJECT_ROOT / "run_all.sh"), "smoke"], cwd=tmp_path,
                       env={**os.environ, "HOME": str(tmp_path), "BRAINSEG_DATA": "~/nowhere"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"not found at {tmp_path}/nowhere\n" in r.stderr
