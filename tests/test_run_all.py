"""run_all never leaves a mix of old and new results.

``study.run_all.run_study`` runs with a stand-in for the notebook runner (writes one file
per notebook into the stage, can fail), so these tests take seconds and touch nothing in
the repository. The crash cases stop ``staging.promote`` between its renames and check
that ``staging.recover`` restores the previous results.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from brainseg_lib import paths
from brainseg_lib.study import notebooks, run_all, staging

ROOT = paths.PROJECT_ROOT
NOTEBOOKS = ["01_a", "02_b", "03_c"]


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".run_all.lock"
            and not p.relative_to(folder).parts[0].startswith(".staging")}


@pytest.fixture()
def results(tmp_path, monkeypatch):
    """A results folder with an old run in it, and the notebook runner replaced by a stand-in
    that writes metrics/<nb>.json and figures/<nb>.txt (FAIL names a notebook that raises)."""
    res = tmp_path / "results"
    (res / "metrics").mkdir(parents=True)
    (res / "metrics" / "previous.json").write_text("old")
    (res / "figures").mkdir()
    (res / "figures" / "old.txt").write_text("old")
    (res / "timings").mkdir()
    (res / "timings" / "run_all_paper.json").write_text("kept")
    monkeypatch.setenv("BRAINSEG_RESULTS", str(res))
    state = {"fail": None}

    def fake_run_notebooks(profile, out_dir, nbs=None, before=None):
        for nb in NOTEBOOKS:
            for sub in ("metrics", "figures"):
                paths.ensure(out_dir / sub).joinpath(f"{nb}.txt").write_text("new")
            if nb == state["fail"]:
                paths.ensure(out_dir / "executed").joinpath(f"{nb}.ipynb").write_text("partial")
                raise notebooks.NotebookFailed(f"{nb}.ipynb failed in cell 3", f"{nb}.ipynb",
                                               f"{nb}.ipynb failed in cell 3")
        paths.ensure(out_dir / "timings").joinpath("run_all_smoke.json").write_text("{}")
        return {"profile": profile["profile"]}

    monkeypatch.setattr(run_all, "run_notebooks", fake_run_notebooks)
    monkeypatch.setattr(run_all, "sweep_first", lambda profile: None)
    monkeypatch.setattr(run_all, "destination", lambda name: res)
    import brainseg_lib.report.html as html
    monkeypatch.setattr(html, "render_report", lambda *a, **k: paths.ensure(Path(os.environ["BRAINSEG_RESULTS"]) / "report") / "index.html")
    monkeypatch.setattr(html, "check_report", lambda *a, **k: [])
    monkeypatch.setattr("brainseg_lib.report.readme.update_readme", lambda *a, **k: False)
    return res, state


def test_the_notebook_kernels_import_this_checkout(results, monkeypatch):
    """The kernels papermill starts get this checkout first on PYTHONPATH (another checkout's
    editable install would otherwise be imported there); the variable is restored after."""
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    seen = []
    real = run_all.run_notebooks
    monkeypatch.setattr(run_all, "run_notebooks",
                        lambda *a, **k: seen.append(os.environ["PYTHONPATH"]) or real(*a, **k))
    run_all.run_study("smoke")
    assert seen == [os.pathsep.join([str(paths.PROJECT_ROOT), "/elsewhere"])]
    assert os.environ["PYTHONPATH"] == "/elsewhere"


def test_a_finished_run_replaces_each_folder_whole_and_keeps_other_timings(results):
    res, _ = results
    run_all.run_study("smoke")
    tree = _tree(res)
    assert "metrics/previous.json" not in tree and "figures/old.txt" not in tree   # replaced whole
    assert tree["metrics/02_b.txt"] == "new"
    assert tree["timings/run_all_paper.json"] == "kept"                             # carried over
    assert "timings/run_all_smoke.json" in tree
    assert not [p for p in res.iterdir() if p.name.startswith((".staging", ".previous"))]


def test_failed_notebook_leaves_results_intact(results):
    res, state = results
    before = _tree(res)
    state["fail"] = "02_b"
    with pytest.raises(notebooks.NotebookFailed, match="kept at .*failed-02_b.ipynb"):
        run_all.run_study("smoke")
    kept = res / "failed-02_b.ipynb"
    assert kept.read_text() == "partial"                    # outlives the removed stage
    kept.unlink()
    assert _tree(res) == before
    assert not list(res.glob(".staging-*"))
    assert os.environ["BRAINSEG_RESULTS"] == str(res)        # the stage was only borrowed
    state["fail"] = None
    run_all.run_study("smoke")                               # a later success clears old failures
    assert not list(res.glob("failed-*"))


def fail_folder_rename(after: int, exc: BaseException):
    """An ``os.replace`` that renames ``after`` folders, then raises ``exc`` at the next folder
    (file renames, the journal's, always pass)."""
    real_replace, moved = os.replace, []

    def replace(a, b):
        if Path(a).is_dir():
            if len(moved) >= after:
                raise exc
            moved.append(a)
        real_replace(a, b)
    return replace


@pytest.mark.parametrize("crash_after", [0, 1, 2, 3, 4])
def test_a_crash_during_the_swap_is_rolled_back_by_the_next_run(results, monkeypatch, crash_after):
    """Kill promote after `crash_after` folder renames (2 old folders out, then 3 new in, one
    of which had no old copy): recover() puts the old results back."""
    res, _ = results
    before = _tree(res)
    stage = res / ".staging-x"
    for sub in ("metrics", "figures", "report"):
        paths.ensure(stage / sub).joinpath("f.txt").write_text("new")
    with monkeypatch.context() as m:
        m.setattr(staging.os, "replace", fail_folder_rename(crash_after, KeyboardInterrupt("killed")))
        with pytest.raises(KeyboardInterrupt):
            staging.promote(stage, res)
    assert staging.recover(res).startswith("rolled back")
    assert _tree(res) == before
    assert not (res / staging.JOURNAL).exists()


def test_a_swap_that_fails_in_process_is_rolled_back_at_once(results, monkeypatch):
    res, _ = results
    before = _tree(res)
    real = staging.promote

    def half_promote(stage, dest):    # the first folder moves, the second fails
        with monkeypatch.context() as m:
            m.setattr(staging.os, "replace", fail_folder_rename(1, OSError("disk")))
            real(stage, dest)

    monkeypatch.setattr(staging, "promote", half_promote)
    with pytest.raises(OSError, match="disk"):
        run_all.run_study("smoke")
    assert _tree(res) == before and not (res / staging.JOURNAL).exists()


def test_a_finished_swap_whose_cleanup_died_is_completed(results):
    res, _ = results
    backup = res / ".previous-y"
    backup.mkdir()
    (backup / "leftover.txt").write_text("old")
    (res / staging.JOURNAL).write_text(json.dumps({"backup": backup.name, "stage": ".staging-y",
                                                   "folders": [], "had_old": [], "done": True}))
    assert staging.recover(res) == "finished an interrupted clean-up"
    assert not backup.exists()


def test_a_second_run_on_the_same_folder_is_refused_and_stale_stages_are_removed(results):
    res, _ = results
    with staging.exclusive_lock(res):
        with pytest.raises(staging.RunInProgress, match="another ./run_all.sh"):
            run_all.run_study("smoke")
    (res / ".staging-dead").mkdir()
    (res / ".staging-dead" / "half.txt").write_text("x")
    run_all.run_study("smoke")
    assert not (res / ".staging-dead").exists()


def test_each_notebook_gets_only_the_parameters_it_declares(tmp_path):
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("profile = 'smoke'\nepochs = 2", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print(epochs)")]
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, str(path))
    assert notebooks.declared_parameters(path) == {"profile": "smoke", "epochs": 2}
    assert notebooks.notebook_parameters(path, {"profile": "cpu", "epochs": 30, "lr": 0.1}) == \
        {"profile": "cpu", "epochs": 30}
    nb.cells[0].source = "epochs = compute()"
    nbformat.write(nb, str(path))
    with pytest.raises(ValueError, match="name = literal"):
        notebooks.declared_parameters(path)


def test_strip_execution_metadata_removes_timestamps_only(tmp_path):
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"start_time": "2026-01-01"}
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={
        "tags": ["parameters"], "papermill": {"duration": 1.0}, "execution": {"a": "b"}})]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    assert notebooks.strip_execution_metadata(path) is True
    back = nbformat.read(str(path), as_version=4)
    assert "papermill" not in back.metadata and back.cells[0].metadata == {"tags": ["parameters"]}
    assert notebooks.strip_execution_metadata(path) is False


@pytest.mark.skipif(sys.platform == "win32", reason="bash")
def test_missing_data_is_reported_before_any_install(tmp_path):
    r = subprocess.run(["bash", str(ROOT / "run_all.sh"), "smoke"], cwd=tmp_path,
                       env={**os.environ, "BRAINSEG_DATA": str(tmp_path / "nowhere")},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "./run_all.sh --fetch" in r.stderr and "ahmedhamada0/brain-tumor-detection" in r.stderr
    assert "[setup]" not in r.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="bash")
def test_setup_env_can_be_sourced_without_changing_the_shell(tmp_path):
    """Sourcing it keeps the caller's shell options: a failing command afterwards does not
    close an interactive shell (no `set -e` leaks out)."""
    script = (f"set +e; opts=$-; BRAINSEG_SKIP_SETUP=1 source {ROOT}/scripts/setup_env.sh; "
              "[ \"$opts\" = \"$-\" ] && echo same-options; false; echo still-here")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert "same-options" in r.stdout and "still-here" in r.stdout


def test_only_the_study_profile_writes_to_results(isolated_dirs):
    """cpu is the study (results/); paper and smoke get folders of their own."""
    assert run_all.destination("cpu") == paths.results_dir()
    assert run_all.destination("paper") == paths.results_dir() / "paper"
    assert run_all.destination("smoke") == paths.smoke_results_dir() == paths.results_dir() / "smoke"


def test_a_profile_that_sweeps_runs_its_sweep_before_any_notebook(monkeypatch):
    """Notebooks 04 and 06 read the sweep's runs, which notebook 08 used to make: a first smoke
    run then gave other tables than a second. The sweep now runs first; a profile without
    ``run_sweep`` runs none."""
    from brainseg_lib.study import sweep
    calls = []
    monkeypatch.setattr(sweep, "plan", lambda name, seeds: [f"{name}-{s}" for s in seeds])
    monkeypatch.setattr(sweep, "run_sweep", lambda runs, in_process: calls.append((runs, in_process)))
    got = run_all.sweep_first({"profile": "smoke", "run_sweep": True, "sweep_seeds": [0, 1]})
    assert calls == [(["smoke-0", "smoke-1"], True)] and set(got) == {"sweep"}
    assert run_all.sweep_first({"profile": "cpu", "run_sweep": False, "sweep_seeds": [0]}) is None
    assert len(calls) == 1

