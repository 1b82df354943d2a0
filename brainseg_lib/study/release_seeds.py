"""How far the seed alone moves the release lever figures.

Every verdict of the release rounds (``release_levers``) is a paired gain over seeds, LGG
patients and Figshare blocks. This table shows why most of them are wide: for every trial (and
inference lever) that ran all of a round's seeds, its figures seed by seed, over all rounds
(the ``decision*.json`` files of the trial store). A trial scored in several rounds (the
reference ``r0-cpu``) appears once. Written with each round's verdicts to
``seed_by_seed.{csv,md}``; read from the per-slice files only, so TEST and the external ``test``
halves are not read.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pandas as pd

from brainseg_lib import paths
from brainseg_lib.study import release_levers as rl
from brainseg_lib.study import release_rule as rr

FIGURES = {"combined": "combined score", "lgg_clean_marked_share": "LGG dev clean marked",
           "healthy_marked": "healthy VAL marked", "lgg_missed": "LGG dev missed",
           "figshare_missed": "Figshare dev missed"}
log = logging.getLogger(__name__)


def round_order(path) -> tuple[int, str]:
    """A round's files in round order: round 1's plain file (``decision.json``) first, then by
    the number ending the round's name (``decision-round10`` after ``decision-round9``)."""
    m = re.search(r"(\d+)$", Path(path).stem)
    return (int(m.group(1)) if m and "-" in Path(path).stem else 1, Path(path).stem)


def plan_of(decision: dict) -> dict:
    """The plan a decision file names (recorded project-relative or absolute)."""
    return rl.load_plan(paths.resolve_recorded(decision["plan"]))


def tags_with_all_seeds(plan: dict, decision: dict, out_dir=None) -> list[str]:
    """The training trials and inference levers of a round scored on every seed of its plan."""
    tags = [t["tag"] for t in plan["trials"]] + [v["tag"] for v in decision.get("inference", [])]
    return [t for t in tags if rr.seeds_of(t, plan, out_dir) == list(plan["seeds"])]


def seed_table(out_dir=None) -> pd.DataFrame:
    """One row per trial and seed: the seed's figures (``FIGURES``), plus the round it first
    appeared in; the held-out LGG sites are each round's own."""
    files = sorted(rl.folder(out_dir).glob("decision*.json"), key=round_order)
    rows, seen, before = [], set(), rr.HELD_OUT_SITES
    try:
        for f in files:
            decision = json.loads(f.read_text())
            try:
                plan = plan_of(decision)
            except (OSError, ValueError, KeyError) as e:     # a moved or refused plan: its round is left out
                log.warning("seed table: %s left out (%s)", f.name, e)
                continue
            rr.use_plan(plan)
            for tag in tags_with_all_seeds(plan, decision, out_dir):
                if tag in seen:
                    continue
                seen.add(tag)
                for s in plan["seeds"]:
                    fig = rr.arm_figures(tag, [s], out_dir)
                    rows.append({"round": plan.get("name") or "round1", "trial": tag, "seed": s,
                                 **{k: fig[k] for k in FIGURES}})
    finally:
        rr.HELD_OUT_SITES = before          # the caller's held-out sites, as they were
    return pd.DataFrame(rows, columns=["round", "trial", "seed", *FIGURES])


def seed_table_markdown(table: pd.DataFrame) -> str:
    """Per trial: each figure seed by seed (``a / b / c``) and its range (max - min)."""
    head = ("| round | trial | " + " | ".join(f"{v} (by seed) | range" for v in FIGURES.values())
            + " |\n|" + "---|" * (2 + 2 * len(FIGURES)) + "\n")
    lines = []
    for (rnd, tag), g in table.groupby(["round", "trial"], sort=False):
        g = g.sort_values("seed")
        cells = []
        for k in FIGURES:
            fmt = "{:.0f}" if k.endswith("_missed") else "{:.3f}"
            cells += [" / ".join(fmt.format(v) for v in g[k]), fmt.format(g[k].max() - g[k].min())]
        lines.append(f"| {rnd} | {tag} | " + " | ".join(cells) + " |")
    seeds = ", ".join(map(str, sorted(table["seed"].unique()))) if len(table) else ""
    note = (f"\nEach figure for seeds {seeds} in that order (same recipe, same data, only the seed "
            "differs; for a seed ensemble, its k-th ensemble), and its range over them. `missed` "
            "counts tumour slices with no predicted pixel. Read from `results/release_levers/per_slice/`.\n")
    return head + "\n".join(lines) + "\n" + note


def write_seed_table(out_dir=None) -> dict[str, Path]:
    from brainseg_lib.fileio import atomic_write_text, write_csv
    out = paths.ensure(rl.folder(out_dir))
    table = seed_table(out_dir)
    return {"csv": write_csv(table, out / "seed_by_seed.csv"),
            "md": atomic_write_text(out / "seed_by_seed.md", seed_table_markdown(table))}
