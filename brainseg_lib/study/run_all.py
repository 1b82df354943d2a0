"""``./run_all.sh``'s engine: every notebook of a profile, then one atomic swap into results/.

``python -m brainseg_lib run-study --profile P`` (called by ``./run_all.sh``):

1. takes the results folder's lock (a second run on the same folder is refused), rolls back
   a promotion a crash interrupted, and removes staging folders of killed runs;
2. runs the notebooks in study order with papermill into ``<dest>/.staging-XXXX`` (each
   notebook gets only the parameters it declares, from ``params/base.yaml`` + the profile),
   and writes the timings JSON there; a profile whose notebook 08 runs its own sweep (smoke)
   runs that sweep first (``sweep_first``), so every notebook sees the same runs on a first
   run as on a second;
3. for the ``cpu`` profile, scores the committed released model (``results/models``, copied
   into the stage first; notebook 10) and rewrites its model card there; the model itself is
   never re-released here (``python -m brainseg_lib release`` does that, as its own step);
4. renders the HTML report of the executed notebooks (``report/``) inside the stage;
5. promotes the stage into ``<dest>`` in one crash-safe swap (``staging.promote``).

Only the study's ``cpu`` profile writes to ``results/``: ``smoke`` writes to ``results/smoke/``
(git-ignored) and ``paper`` to ``results/paper/`` (``paths.profile_results_dir``), so a pipeline
check or the GPU run never touches the study's results. README.md is updated from the promoted files afterwards.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from brainseg_lib import names, paths
from brainseg_lib.study import staging
from brainseg_lib.study.notebooks import NotebookFailed, run_notebooks
from brainseg_lib.study.profiles import load_profile

log = logging.getLogger(__name__)


def destination(profile: str) -> Path:
    """Where a profile's results go: results/ for the study (cpu), results/<profile>/ for any
    other (``paths.profile_results_dir``); a profile that is not a plain name is refused."""
    return paths.profile_results_dir(names.check_name(profile, "profile"))


def export_missing_onnx(models: Path) -> Path | None:
    """The released model's ONNX export beside it, written when absent (it is not committed: it is
    derived from the .pt, and the committed ``.sha256`` checks the export); None without a
    released model, or with the reason logged where the export cannot run here."""
    from brainseg_lib.model.onnx import OnnxExportError, export_onnx, onnx_path_for
    pt = models / paths.released_model().name
    if not pt.is_file() or onnx_path_for(pt).is_file():
        return None
    try:
        out = export_onnx(pt)
    except (OnnxExportError, ImportError) as e:
        log.warning("[run_all] ONNX export of %s skipped: %s", pt.name, e)
        return None
    log.info("[run_all] ONNX export written: %s", out)
    return out


def build_stage(profile: dict, stage: Path) -> dict:
    """Steps 2-4 with the results folder pointed at the stage (and ``BRAINSEG_MODEL``
    unset, so notebook 10 scores the stage's copy of the release); returns the timings."""
    study, committed = profile["profile"] == paths.STUDY_PROFILE, paths.models_dir()
    with paths.env_override(BRAINSEG_RESULTS=stage, BRAINSEG_MODEL=None):
        if study and committed.is_dir():   # notebook 10 scores the committed release in the stage
            shutil.copytree(committed, stage / "models")
            export_missing_onnx(stage / "models")
        timings = run_notebooks(profile, stage, before=sweep_first(profile))
        if study and (stage / "models" / "release.json").is_file():
            from brainseg_lib.study.release import ReleaseRefused, write_card
            try:
                log.info("[run_all] model card rewritten: %s", write_card(stage / "models"))
            except ReleaseRefused as e:    # an external set is absent: the committed card stays
                log.warning("[run_all] model card kept as committed: %s", e)
        from brainseg_lib.report.html import check_report, render_report
        index = render_report()
    broken = check_report(index.parent)
    if broken:
        raise RuntimeError("the HTML report has broken links or images:\n" + "\n".join(broken[:20]))
    return timings


def sweep_first(profile: dict) -> dict | None:
    """For a profile whose notebook 08 runs its own sweep (``run_sweep``: smoke), run that sweep
    before any notebook, so notebooks 04 and 06, which read the sweep's runs, see the same runs
    on a first run as on a second (notebook 08 then finds them finished); its seconds, or None."""
    if not profile.get("run_sweep"):
        return None
    import time

    from brainseg_lib.study.sweep import plan, run_sweep
    t0 = time.perf_counter()
    run_sweep(plan(profile["profile"], seeds=tuple(profile["sweep_seeds"])), in_process=True)
    return {"sweep": round(time.perf_counter() - t0)}


def keep_failed_notebook(stage: Path, dest: Path, err: NotebookFailed) -> NotebookFailed:
    """Copy the failed notebook's partial executed copy out of the stage (which is about to be
    removed) to ``<dest>/failed-<notebook>.ipynb``; returns the error naming that copy."""
    src = stage / "executed" / err.notebook
    if not src.is_file():
        return err
    kept = dest / f"failed-{err.notebook}"
    shutil.copy2(src, kept)
    return NotebookFailed(f"{err.summary}\nthe executed copy, with the failing cell, is kept at {kept}",
                          err.notebook, err.summary)


def _swap_in(stage: Path, dest: Path) -> None:
    """Promote the stage; if that fails in this process, put the previous results back at once."""
    staging.carry_over(dest, stage, "timings")
    from brainseg_lib.report.html import keep_screenshots
    report = paths.report_dir().name          # results/report, in dest and in the stage
    keep_screenshots(dest / report, stage / report)
    try:
        staging.promote(stage, dest)
    except BaseException:
        staging.recover(dest)
        raise
    for old in dest.glob("failed-*.ipynb"):
        old.unlink()


def run_study(profile_name: str) -> dict:
    """Run a whole profile and promote it (see the module docstring); returns the timings."""
    names.check_name(profile_name, "profile")
    profile = load_profile(profile_name)
    dest = destination(profile_name)
    with staging.exclusive_lock(dest), paths.env_override(
            BRAINSEG_SWEEP=paths.sweep_dir_for(profile_name),   # 08's tiny sweep stays with smoke
            PYTHONPATH=paths.kernel_pythonpath()):
        for note in filter(None, [staging.recover(dest)]):
            log.warning("[run_all] %s", note)
        for name in staging.remove_stale_stages(dest):
            log.warning("[run_all] removed %s, left by a killed run", name)
        stage = Path(tempfile.mkdtemp(prefix=staging.STAGING_PREFIX, dir=dest))
        try:
            timings = build_stage(profile, stage)
            _swap_in(stage, dest)
        except NotebookFailed as e:
            raise keep_failed_notebook(stage, dest, e) from None
        finally:
            names.remove_tree(stage, dest, ignore_errors=True)
    if dest == paths.results_dir():
        from brainseg_lib.report.readme import update_readme
        update_readme()
    return timings
