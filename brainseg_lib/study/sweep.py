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

from brainseg_lib import paths
from brainseg_lib.data.splits import SPLIT_SCHEMES
from brainseg_lib.study.experiment import config_from_params, name_for, run_profile
from brainseg_lib.study.profiles import load_profile, write_profile

DEFAULT_SEEDS = (0, 1, 2)

log = logging.getLogger(__name__)


def plan(profile: str, seeds=DEFAULT_SEEDS, schemes=SPLIT_SCHEMES,
         extra_losses=None, variants=None) -> list[dict]:
    """Parameter dicts: every scheme (official, grouped, grouped_strict by default) x seed with
    the profile's loss; each extra loss on the
    official split with the same seeds (the paper's loss question); and each variant (a
    tagged set of overrides, e.g. the paper's annotated-only setting) on the official split
    with seed 0. ``extra_losses`` and ``variants`` default to the profile's
    ``sweep_extra_losses`` and ``sweep_variants``."""
    base = load_profile(profile)
    base["max_train_seconds"] = None
    base["snapshot_epochs"] = []
    extra_losses = base.get("sweep_extra_losses", ["bce"]) if extra_losses is None else extra_losses
    variants = base.get("sweep_variants") or {} if variants is None else variants
    runs = [{**base, "split_scheme": s, "seed": k} for s in schemes for k in seeds]
    runs += [{**base, **overrides, "split_scheme": "official", "seed": 0, "run_tag": tag}
             for tag, overrides in variants.items()]
    runs += [{**base, "split_scheme": "official", "seed": k, "loss": loss}
             for loss in extra_losses if loss != base["loss"] for k in seeds]
    for r in runs:
        r["tune_threshold"] = True
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


def planned_job(params: dict, threads: int, sweep_dir: Path) -> tuple[list[str], dict, Path]:
    """One self-contained job of the sweep: (papermill arguments, environment additions,
    log path). Writes the run's own params file; the output notebook and the results
    folder are the run's own, so the line can run anywhere (a cluster array task)."""
    name = name_for(params)
    out = paths.ensure(sweep_dir / "executed") / f"{name}.ipynb"
    pfile = paths.ensure(sweep_dir / "params") / f"{name}.yaml"
    write_profile({**params, "threads": threads}, pfile)
    args = [sys.executable, "-m", "papermill", "-k", "python3", "--log-level", "WARNING", "--no-progress-bar",
            "-f", str(pfile), str(paths.NOTEBOOKS_DIR / "02_training.ipynb"), str(out)]
    env = {"BRAINSEG_RESULTS": str(sweep_dir), "BRAINSEG_PROGRESS": "0", "MPLBACKEND": "Agg"}
    return args, env, paths.ensure(sweep_dir / "logs") / f"{name}.log"


def plan_lines(runs: list[dict], threads: int = 0, sweep_dir=None) -> list[str]:
    """Shell lines, one per run, each runnable on its own (``sweep --plan``)."""
    import shlex
    sweep_dir = Path(sweep_dir) if sweep_dir else paths.sweep_dir()
    lines = []
    for r in runs:
        args, env, _ = planned_job(r, threads or r.get("threads", 0), sweep_dir)
        lines.append(" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " "
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
    unless ``skip_done`` is False."""
    sweep_dir = Path(sweep_dir) if sweep_dir else paths.sweep_dir()
    todo = [r for r in runs if not (skip_done and finished(r, sweep_dir))]
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
