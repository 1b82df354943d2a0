"""The sweep re-runs what is missing or stale and skips what is finished with the same settings."""
import json

from brainseg_lib.study import sweep
from brainseg_lib.study.experiment import config_from_params, name_for


def smoke_plan(*seeds):
    """The smoke profile's official-split runs for ``seeds``, no extra loss or variant."""
    return sweep.plan("smoke", seeds=seeds, schemes=("official",), extra_losses=(), variants={})


def test_sweep_skips_finished_runs_and_redoes_stale_ones(tmp_path, monkeypatch):
    runs = sweep.plan("smoke", seeds=(0, 1), schemes=("official",), extra_losses=())
    assert len(runs) == 2
    (tmp_path / "metrics").mkdir()
    done = config_from_params(runs[0]).to_dict()
    (tmp_path / "metrics" / f"{name_for(runs[0])}.json").write_text(
        json.dumps({"config": {**done, "threads": 7}}))          # thread count does not matter
    stale = {**config_from_params(runs[1]).to_dict(), "base_width": 99}
    (tmp_path / "metrics" / f"{name_for(runs[1])}.json").write_text(json.dumps({"config": stale}))
    called = []
    monkeypatch.setattr(sweep, "run_profile", lambda r: called.append(name_for(r)))
    names = sweep.run_sweep(runs, in_process=True, sweep_dir=tmp_path)
    assert names == [name_for(r) for r in runs]
    assert called == [name_for(runs[1])]                         # only the stale run again
    called.clear()
    sweep.run_sweep(runs, in_process=True, sweep_dir=tmp_path, skip_done=False)
    assert called == names                                       # --force re-runs everything


def test_finished_is_false_for_missing_or_unreadable_metrics(tmp_path):
    run = sweep.plan("smoke", seeds=(0,), schemes=("official",), extra_losses=())[0]
    assert not sweep.finished(run, str(tmp_path))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / f"{name_for(run)}.json").write_text("{not json")
    assert not sweep.finished(run, str(tmp_path))
    (tmp_path / "metrics" / f"{name_for(run)}.json").write_text(
        json.dumps({"config": {**config_from_params({**run, "snapshot_epochs": (1, 2)}).to_dict()}}))
    assert sweep.finished({**run, "snapshot_epochs": (1, 2)}, str(tmp_path))   # tuple vs stored list


def test_planned_lines_are_self_contained(tmp_path):
    runs = smoke_plan(0, 1)
    lines = sweep.plan_lines(runs, threads=1, sweep_dir=tmp_path)
    assert len(lines) == 2 and len(set(lines)) == 2
    for r, line in zip(runs, lines):
        name = sweep.name_for(r)
        assert f"BRAINSEG_RESULTS={tmp_path}" in line
        assert f"-f {tmp_path / 'params' / (name + '.yaml')}" in line
        assert line.endswith(str(tmp_path / "executed" / f"{name}.ipynb"))
        assert not (tmp_path / "params").exists()       # planning writes nothing: the line does
        assert "--no-progress-bar" in line.split()      # its log reads as lines, not a redrawn bar


def test_plan_adds_tagged_variants_on_seed_0():
    runs = sweep.plan("smoke", seeds=(0, 1), schemes=("official",), extra_losses=(),
                      variants={"annotated-only": {"healthy_ratio": 0.0}})
    v = [r for r in runs if r.get("run_tag")]
    assert len(v) == 1 and v[0]["seed"] == 0 and v[0]["healthy_ratio"] == 0.0
    assert sweep.name_for(v[0]).endswith("-seed0-annotated-only")


def test_load_sweep_leaves_tagged_variants_to_table1(tmp_path):
    from brainseg_lib.study import seed_spread
    m = tmp_path / "metrics"
    m.mkdir()
    g = {k: 0.9 for k in ("f1", "iou", "precision", "recall", "specificity", "accuracy")}
    for name, tag in (("cpu-official-bce_dice-seed0", None), ("cpu-official-bce_dice-seed0-annotated-only", "annotated-only")):
        (m / f"{name}.json").write_text(json.dumps({
            "kind": "segmentation_run", "run_name": name, "profile": "cpu", "split_scheme": "official",
            "loss": "bce_dice", "seed": 0, "run_tag": tag, "n_images": 100, "global": g,
            "bootstrap_ci95": {k: [0.8, 0.95] for k in g}}))
    runs = seed_spread.load_sweep("cpu", sweep_dir=tmp_path)
    assert list(runs["run_name"]) == ["cpu-official-bce_dice-seed0"]


def test_one_planned_line_runs_as_printed(tmp_path, real_root):
    """The first line of `sweep --plan` for the smoke profile, run by a shell as printed,
    trains and writes that run's metrics into the sweep folder."""
    import os
    import subprocess
    runs = smoke_plan(0)
    line = sweep.plan_lines(runs, threads=1, sweep_dir=tmp_path)[0]
    env = {**os.environ, "BRAINSEG_DATA": str(real_root)}
    subprocess.run(["bash", "-c", line], check=True, env=env, timeout=600)
    out = json.loads((tmp_path / "metrics" / f"{name_for(runs[0])}.json").read_text())
    assert out["run_name"] == name_for(runs[0]) and out["config"]["epochs"] == 2
    assert sweep.finished(runs[0], tmp_path)
    script = sweep.slurm_script(sweep.plan_lines(runs, threads=1, sweep_dir=tmp_path))
    assert "#SBATCH --array=0-0" in script and 'eval "${LINES[$SLURM_ARRAY_TASK_ID]}"' in script


def test_a_profile_that_fixes_threads_keeps_them_whatever_the_jobs():
    assert sweep.run_threads({"threads": 2}, jobs=2, cores=2) == 2       # cpu profile: pinned
    assert sweep.run_threads({"threads": 2}, jobs=1, cores=16) == 2
    assert sweep.run_threads({"threads": 0}, jobs=2, cores=16) == 8      # unpinned: cores split
    assert sweep.run_threads({}, jobs=3, cores=2) == 1


def test_run_sweep_passes_each_run_its_threads(tmp_path, monkeypatch):
    runs = smoke_plan(0, 1)
    runs = [{**runs[0], "threads": 2}, {**runs[1], "threads": 0}]
    got = {}
    monkeypatch.setattr(sweep, "_papermill", lambda r, t, d: got.setdefault(name_for(r), t))
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 8)
    sweep.run_sweep(runs, jobs=2, sweep_dir=tmp_path)
    assert got == {name_for(runs[0]): 2, name_for(runs[1]): 4}            # pinned 2; 8 cores / 2 jobs


def test_a_run_made_with_other_threads_is_stale_only_where_the_profile_fixes_them(tmp_path):
    run = smoke_plan(0)[0]
    (tmp_path / "metrics").mkdir()
    path = tmp_path / "metrics" / f"{name_for(run)}.json"
    pinned = {**run, "threads": 2}
    path.write_text(json.dumps({"config": config_from_params({**pinned, "threads": 1}).to_dict()}))
    assert not sweep.finished(pinned, tmp_path)                  # 1 thread: other floats
    assert sweep.finished({**run, "threads": 0}, tmp_path)       # unpinned: any count will do
    path.write_text(json.dumps({"config": config_from_params(pinned).to_dict()}))
    assert sweep.finished(pinned, tmp_path)


def test_oversubscription_warning_claims_same_results_only_for_pinned_threads(tmp_path, monkeypatch, caplog):
    runs = smoke_plan(0, 1)
    monkeypatch.setattr(sweep, "_papermill", lambda r, t, d: None)
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 2)
    sweep.run_sweep([{**r, "threads": 2} for r in runs], jobs=2, sweep_dir=tmp_path)
    assert "with the same results" in caplog.text
    caplog.clear()
    three = smoke_plan(0, 1, 2)
    sweep.run_sweep([{**r, "threads": 0} for r in three], jobs=4, sweep_dir=tmp_path)   # 3 x 1 thread
    assert "slower than fewer --jobs" in caplog.text and "same results" not in caplog.text
