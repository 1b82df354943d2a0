"""The README's timings section: the notebooks' wall times of each ``./run_all.sh`` profile
(``results/timings/run_all_<profile>.json``, written by ``study.notebooks.run_notebooks``), and
the whole command's wall time from a fresh clone and on a second run
(``results/timings/wall_<profile>.json``, written by ``./run_all.sh`` through
``record_wall_time``): a first run also creates the virtual environment and every cache.
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

from brainseg_lib import paths
from brainseg_lib.fileio import atomic_write_text


def timings_markdown(timings_dir: str | Path | None = None) -> str:
    """A table of the run_all.sh wall times recorded in results/timings/*.json and in the
    paper profile's GPU run (``paths.gpu_run_dir()/timings``), then the whole-command lines."""
    folder = Path(timings_dir) if timings_dir else paths.timings_dir()
    files = sorted(folder.glob("run_all_*.json"))
    files += [p for p in sorted((paths.gpu_run_dir() / "timings").glob("run_all_*.json"))
              if p.name not in {f.name for f in files}]
    rows = []
    for p in files:
        t = json.loads(p.read_text())
        nbs = ", ".join([f"{k} first: {v} s" for k, v in t.get("before_notebooks", {}).items()]
                        + [f"{k.split('_')[0]}: {v} s" for k, v in t["notebooks"].items()])
        rows.append(f"| `{t['profile']}` | {t['total_seconds']} s | {nbs} | {t['machine']} | {t['date']} |")
    if not rows:
        return "_No timed run yet: run `./run_all.sh`._\n"
    head = ["| profile | notebooks total | per notebook | machine | date |", "|---|---|---|---|---|"]
    return "\n".join(head + rows) + "\n" + wall_lines(folder)


def wall_lines(folder: Path) -> str:
    """One line per ``wall_<profile>.json``: the whole ``./run_all.sh`` from a fresh clone (a new
    .venv and empty caches) and on the run after it."""
    out = []
    for p in sorted(folder.glob("wall_*.json")):
        w = json.loads(p.read_text())
        runs = "; ".join(f"{r['label']}: {r['seconds']} s" for r in w["runs"])
        out.append(f"- Whole `./run_all.sh {w['profile']}` ({w['machine']}, {w['date']}): {runs}.")
    return ("\n" + "\n".join(out) + "\n") if out else ""


def record_wall_time(profile: str, seconds: int, fresh_venv: bool, cold_cache: bool, out_dir: Path) -> Path:
    """Add this run of ``./run_all.sh`` to ``<out_dir>/wall_<profile>.json`` (a fresh-clone run
    starts the list anew: its first entry is always the clone's first run)."""
    from brainseg_lib.study.notebooks import machine_description
    path = Path(out_dir) / f"wall_{profile}.json"
    label = ("fresh clone (new .venv, empty cache)" if fresh_venv and cold_cache else
             "empty cache" if cold_cache else "new .venv" if fresh_venv else "a later run (warm cache)")
    old = json.loads(path.read_text()) if path.is_file() and not (fresh_venv and cold_cache) else {"runs": []}
    data = {"profile": profile, "machine": machine_description(), "date": datetime.date.today().isoformat(),
            "runs": old["runs"] + [{"label": label, "seconds": int(seconds)}]}
    return atomic_write_text(path, json.dumps(data, indent=1) + "\n")


TIMINGS_PAGE = "timings.md"     # in paths.timings_dir(): every clock figure the README points to
POINTER = {"TIMINGS": "The wall times of `./run_all.sh` are in [`results/timings/timings.md`]"
                      "(results/timings/timings.md); they live apart "
                      "from the results so that a re-run that trains the same weights changes only "
                      "timing files.\n",
           "SPEED": "The time to accuracy of the released run and the benchmarks' figures are in "
                    "[`results/timings/timings.md`](results/timings/timings.md) (How fast).\n"}


def write_timings_page(run_times: str, speed: str, timings_dir: str | Path | None = None) -> Path:
    """``results/timings/timings.md``: the run_all.sh wall times (``timings_markdown``) and the
    How fast figures (``readme.speed_markdown``), the study's clock figures in one timing file."""
    folder = paths.ensure(Path(timings_dir) if timings_dir else paths.timings_dir())
    text = ("# Clock figures of the study\n\nWritten by `python -m brainseg_lib update-readme` (run by "
            "`./run_all.sh`) from `results/timings/*.json`, each run's `timing.json` and "
            "`results/benchmarks/`. Wall-clock time never decides what is trained: the budget is "
            "epochs, and these machines vary about 2x in speed, so compare speeds only as ratios "
            "within one run.\n\n## Wall times of `./run_all.sh`\n\nPer notebook, set-up excluded, "
            "written by the last run of each profile; below the table, the whole command's wall time, "
            "set-up included, in a fresh clone and on the run after it.\n\n" + run_times +
            "\n## How fast\n\n" + speed + "\nValidation Dice and the snapshots' test F1 against seconds of "
            "training on the machine of the last run: [time_to_accuracy.png](time_to_accuracy.png) "
            "(written by notebook 02).\n")
    return atomic_write_text(folder / TIMINGS_PAGE, text)
