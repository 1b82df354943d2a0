"""Seeds x split schemes x losses: independent runs, side by side when cores allow.

Each run is notebook 02_training executed by papermill with its own parameters
and a distinct output name, writing into the sweep folder
(``paths.sweep_dir()``, default ``results/sweep``). Runs share nothing but the
read-only data cache, so ``--jobs N`` runs N of them at once; on a cluster each
line of ``plan`` can be submitted as its own job.

Sweep runs use a fixed number of epochs (``max_train_seconds`` is lifted), so a
run's result does not depend on how many other runs share the machine. Nor on ``--jobs``:
a profile that fixes ``threads`` (the cpu profile does, since the thread count changes float
results) keeps them in every run (``run_threads``); only a profile that leaves them at 0
gets the cores split evenly over the jobs.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from brainseg_lib import names, paths
from brainseg_lib.data.splits import SPLIT_SCHEMES
from brainseg_lib.study.experiment import config_from_params, name_for, run_profile
from brainseg_lib.study.profiles import load_profile, write_profile

DEFAULT_SEEDS = (0, 1, 2)

log = logging.getLogger(__name__)


def plan(profile: str, seeds=DEFAULT_SEEDS, schemes=SPLIT_SCHEMES,
         extra_losses=None, variants=None) -> list[dict]:
    """Parameter dicts: every scheme (official, grouped, grouped_strict by default) x seed with
    the profile's loss; the grouped split drawn again with split seeds 1 .. n-1 for the
    profile's ``sweep_split_draws: n`` (each draw x every seed: the split-draw sweep whose
    spread enters the leakage verdict, ``study.split_draws``); each extra loss on the
    official split with the same seeds (the paper's loss question); and each variant (a
    tagged set of overrides, e.g. the paper's annotated-only setting) on the official split
    with seed 0. ``extra_losses`` and ``variants`` default to the profile's
    ``sweep_extra_losses`` and ``sweep_variants``. Every run's name is checked here, before
    any work (``names.check_name``): a variant named ``../x`` is refused, never a path."""
    names.check_name(profile, "profile")
    base = load_profile(profile)
    base["max_train_seconds"] = None
    base["snapshot_epochs"] = []
    extra_losses = base.get("sweep_extra_losses", ["bce"]) if extra_losses is None else extra_losses
    variants = base.get("sweep_variants") or {} if variants is None else variants
    for tag in variants:
        names.check_name(tag, f"sweep_variants key of profile {profile!r}")
    runs = [{**base, "split_scheme": s, "seed": k} for s in schemes for k in seeds]
    runs += [{**base, "split_scheme": "grouped", "split_seed": d, "seed": k}
             for d in range(1, int(base.get("sweep_split_draws") or 1)) if "grouped" in schemes
             for k in seeds]
    runs += [{**base, **overrides, "split_scheme": "official", "seed": 0, "run_tag": tag}
             for tag, overrides in variants.items()]
    runs += [{**base, "split_scheme": "official", "seed": k, "loss": loss}
             for loss in extra_losses if loss != base["loss"] for k in seeds]
    for r in runs:
        r["tune_threshold"] = True
        name_for(r)                       # refuses an unsafe profile, tag, loss or split name
    return runs


def finished(params: dict, sweep_dir) -> bool:
    """Whether ``sweep_dir`` holds this run's metrics, trained with this configuration: a run
    left from an older profile is stale, and so is an unreadable file. The thread count counts
    only where the profile fixes it (it changes the floats); with ``threads: 0`` a run made
    with any count is finished."""
    path = Path(sweep_dir) / "metrics" / f"{name_for(params)}.json"
    try:
        recorded = json.loads(path.read_text()).get("config", {})
    except (OSError, ValueError, AttributeError):
        return False
    wanted = config_from_params(params).stored()
    ignore = set() if fixed_threads(params) else {"threads"}
    return ({k: v for k, v in recorded.items() if k not in ignore}
            == {k: v for k, v in wanted.items() if k not in ignore})


def job_files(params: dict, sweep_dir: Path) -> dict[str, Path]:
    """The files of one sweep run, each checked to lie under ``sweep_dir``: its params file,
    output notebook and log (nothing is written here)."""
    name = name_for(params)
    files = {"params": sweep_dir / "params" / f"{name}.yaml",
             "notebook": sweep_dir / "executed" / f"{name}.ipynb",
             "log": sweep_dir / "logs" / f"{name}.log"}
    for what, path in files.items():
        names.inside(sweep_dir, path, f"sweep {what} file")
    return files


def job_command(params: dict, sweep_dir: Path) -> tuple[list[str], dict]:
    """(papermill arguments, environment additions) of one sweep run: its own params file,
    output notebook and results folder (``sweep_dir``), so it can run anywhere."""
    files = job_files(params, sweep_dir)
    args = [sys.executable, "-m", "papermill", "-k", "python3", "--log-level", "WARNING", "--no-progress-bar",
            "-f", str(files["params"]), str(paths.NOTEBOOKS_DIR / "02_training.ipynb"), str(files["notebook"])]
    env = {"BRAINSEG_RESULTS": str(sweep_dir), "BRAINSEG_PROGRESS": "0", "MPLBACKEND": "Agg"}
    return args, env


def planned_job(params: dict, threads: int, sweep_dir: Path) -> tuple[list[str], dict, Path]:
    """One job of the sweep, ready to run here: (papermill arguments, environment additions,
    log path), after writing the run's own params file and making its folders."""
    files = job_files(params, sweep_dir)
    for f in files.values():
        paths.ensure(f.parent)
    write_profile({**params, "threads": threads}, files["params"])
    args, env = job_command(params, sweep_dir)
    return args, env, files["log"]


def plan_lines(runs: list[dict], threads: int = 0, sweep_dir=None) -> list[str]:
    """Shell lines, one per run, each runnable on its own (``sweep --plan``). Planning writes
    nothing: each line makes its own folders and writes its own params file (one-line YAML)
    when it runs, then runs papermill."""
    import shlex

    import yaml
    sweep_dir = Path(sweep_dir) if sweep_dir else paths.sweep_dir()
    lines = []
    for r in runs:
        files = job_files(r, sweep_dir)
        args, env = job_command(r, sweep_dir)
        text = yaml.safe_dump({**r, "threads": threads or r.get("threads", 0)}, sort_keys=False,
                              default_flow_style=True, width=float("inf")).strip()
        folders = " ".join(shlex.quote(str(files[k].parent)) for k in ("params", "notebook"))
        lines.append(f"mkdir -p {folders} && printf '%s\\n' {shlex.quote(text)} > "
                     f"{shlex.quote(str(files['params']))} && "
                     + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " "
                     + " ".join(shlex.quote(a) for a in args))
    return lines


def slurm_script(lines: list[str], job_name: str = "brainseg-sweep", cpus: int = 2) -> str:
    """An ``sbatch --array`` script whose task k runs plan line k (``sweep --plan --format slurm``)."""
    import shlex
    body = "\n".join(f"  {shlex.quote(line)}" for line in lines)
    return f"""#!/usr/bin/env bash
#SBATCH --job-name={job_name}
#SBATCH --array=0-{len(lines) - 1}
#SBATCH --cpus-per-task={cpus}
#SBATCH --output={job_name}-%A_%a.log
# One sweep run per array task; each line has its own params file, output notebook and
# results folder (written by `python -m brainseg_lib sweep --plan --format slurm`).
set -euo pipefail
LINES=(
{body}
)
eval "${{LINES[$SLURM_ARRAY_TASK_ID]}}"
"""


def _papermill(params: dict, threads: int, sweep_dir: Path) -> Path:
    args, env, log = planned_job(params, threads, sweep_dir)
    with open(log, "w") as fh:
        rc = subprocess.call(args, env={**os.environ, **env}, stdout=fh, stderr=subprocess.STDOUT)
    if rc:
        raise RuntimeError(f"sweep run {name_for(params)} failed (exit {rc}); see {log}")
    from brainseg_lib.study.notebooks import clean_executed_copy
    clean_executed_copy(args[-1])     # no timestamps: a re-run with the same results is identical
    return Path(args[-1])


def fixed_threads(params: dict) -> int:
    """The thread count the profile fixes (the cpu profile's 2), or 0 when it leaves it open."""
    return int(params.get("threads") or 0)


def run_threads(params: dict, jobs: int, cores: int | None = None) -> int:
    """Threads for one run: the profile's ``threads`` when it fixes them, else the
    ``cores`` (default: this machine's) split evenly over ``jobs``."""
    cores = cores or os.cpu_count() or 1
    return fixed_threads(params) or max(1, cores // max(1, jobs))


def run_sweep(runs: list[dict], jobs: int = 1, in_process: bool = False, skip_done: bool = True,
              sweep_dir: str | Path | None = None) -> list[str]:
    """Execute ``runs``; returns the run names. Finished runs (see ``finished``) are skipped
    unless ``skip_done`` is False. The grouped manifests of the split draws that the runs
    train on are written first where missing (``split_draws.write_draw_manifests``)."""
    from brainseg_lib.study.split_draws import split_seeds_of, write_draw_manifests
    sweep_dir = Path(sweep_dir) if sweep_dir else paths.sweep_dir()
    todo = [r for r in runs if not (skip_done and finished(r, sweep_dir))]
    for path in write_draw_manifests(split_seeds_of(todo)):
        log.warning("wrote the split draw %s", paths.display_path(path))
    if in_process:
        with paths.env_override(BRAINSEG_RESULTS=sweep_dir):
            for r in todo:
                run_profile(r)
    else:
        cores = os.cpu_count() or 1
        threads = [run_threads(r, jobs, cores) for r in todo]
        if min(max(1, jobs), len(todo)) * max(threads, default=1) > cores:
            pinned = all(fixed_threads(r) for r in todo)
            log.warning("%d runs at once with up to %d threads each on %d cores: slower than "
                        "fewer --jobs%s", min(jobs, len(todo)), max(threads), cores,
                        ", with the same results (the profile fixes the threads)" if pinned else "")
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for f in [pool.submit(_papermill, r, t, sweep_dir) for r, t in zip(todo, threads)]:
                f.result()
    return [name_for(r) for r in runs]
