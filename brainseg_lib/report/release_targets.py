"""Issue 24's targets for the released model, each against its measured figure and CI.

The targets are the issue's (data, with their source): the TCGA-LGG and Figshare ``test``
halves, Br35H TEST on the official split (the released file, and the mean of the study
profile's three official seeds), and image-level detection at a fixed sensitivity. The measured
figures are read from the files the study wrote: ``release_eval.json`` (notebook 10; its
``detection`` part scores the released file with its own settings), the sweep's per-run JSONs and
``detection.json`` (notebook 06, the study run's detection: used only for an evaluation without
its own). A row is measured only on the released
model: the evaluation must carry the release's checksum, the detection run and the seed runs must
be the released run and its profile's seeds (for a release from a round of lever trials: the
released trial's seeds, ``release_recipe_seeds.json`` beside ``release.json``, written by ``release --plan`` with the
release's checksum); otherwise the row says so. A target is **met** when
the point figure, at the three decimals shown, meets it; otherwise the table says by how much it
is missed, and whether the target lies within the CI.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

SOURCE = "issue 24, 'Targets'"


@dataclass(frozen=True)
class Target:
    label: str          # what a reader is told
    where: str          # the evaluation set
    key: str            # how ``measured`` finds the figure
    limit: float
    higher_is_better: bool

    def text(self) -> str:
        return f"{'≥' if self.higher_is_better else '≤'} {self.limit:.2f}"


TARGETS = (
    Target("pooled F1", "TCGA-LGG test half", "lgg:pooled_f1", 0.80, True),
    Target("mean Dice, tumour slices", "TCGA-LGG test half", "lgg:mean_dice_tumour", 0.65, True),
    Target("tumour slices with no prediction", "TCGA-LGG test half", "lgg:missed_share", 0.15, False),
    Target("clean slices marked", "TCGA-LGG test half", "lgg:clean_marked_share", 0.05, False),
    Target("pooled F1", "Figshare test half", "figshare:pooled_f1", 0.70, True),
    Target("pooled F1, worst tumour type", "Figshare test half", "figshare:worst_type", 0.55, True),
    Target("tumour slices with no prediction", "Figshare test half", "figshare:missed_share", 0.15, False),
    Target("pooled F1, released file", "Br35H TEST (official)", "br35h:pooled_f1", 0.88, True),
    Target("mean Dice/image, released file", "Br35H TEST (official)", "br35h:mean_dice_tumour", 0.83, True),
    Target("pooled F1, mean of 3 seeds", "Br35H TEST (official)", "seeds:f1", 0.88, True),
    Target("mean Dice/image, mean of 3 seeds", "Br35H TEST (official)", "seeds:dice", 0.83, True),
    Target("detection specificity at sensitivity 0.90", "Br35H report scans", "detection:specificity", 0.95, True),
)


NOT_MEASURED = (math.nan, None, "", True)
DETECTION_SENSITIVITY = 0.90    # the detection target holds at this sensitivity (issue 24)


def _number(v) -> float:
    """``v`` as a float; None (a NaN as JSON writes it) as NaN."""
    return math.nan if v is None else float(v)


def _ci(ci) -> list[float] | None:
    """A CI with two finite ends, else None (unknown)."""
    if not ci or len(ci) != 2 or any(v is None or not math.isfinite(float(v)) for v in ci):
        return None
    return [float(ci[0]), float(ci[1])]


def measured(key: str, ev: dict, seeds: dict | None, detection: dict | None) -> tuple[float, list | None, str, bool]:
    """(figure, its 95% CI or None, a note, whether the target's condition holds) of one
    target's ``key``; only detection has a condition (its sensitivity)."""
    where, figure = key.split(":")
    if where in ("lgg", "figshare"):
        half = ((ev or {}).get(where) or {}).get("test")
        if not half:
            return NOT_MEASURED
        if figure == "worst_type":
            label, s = min(half["by_label"].items(), key=lambda kv: _number(kv[1]["pooled_f1"]))
            return _number(s["pooled_f1"]), _ci(s["ci95_by_patient"].get("pooled_f1")), label, True
        return _number(half.get(figure)), _ci(half["ci95_by_patient"].get(figure)), "", True
    if where == "br35h":
        s = (ev or {}).get("br35h_test")
        return (_number(s.get(figure)), _ci(s["ci95_by_patient"].get(figure)), "", True) if s else NOT_MEASURED
    if where == "seeds":
        if not seeds:
            return NOT_MEASURED
        v = seeds[figure]
        return v["mean"], None, f"sd {v['sd']:.3f}, {v['n']} seeds", True
    fixed = ((detection or {}).get("report_at_fixed_sensitivity") or {}).get("all", {}).get("area_frac")
    if not fixed:
        return NOT_MEASURED
    holds = fixed["sensitivity"] >= DETECTION_SENSITIVITY
    note = f"sensitivity {fixed['sensitivity']:.3f}" + ("" if holds else f" < {DETECTION_SENSITIVITY:.2f}")
    return _number(fixed["specificity"]), _ci(fixed["ci95"]["specificity"]), note, holds



def verdict(t: Target, value: float, ci: list | None, condition_met: bool = True) -> str:
    """'met', or 'missed by X' (and whether the target lies within the CI), compared at the three
    decimals shown; a target whose condition fails (detection below its sensitivity) is not met."""
    if value is None or math.isnan(value):
        return "not measured"
    gap = round((t.limit - value) if t.higher_is_better else (value - t.limit), 3)
    if gap <= 0:
        return "met" if condition_met else "not met: its sensitivity condition fails"
    reach = ""
    if ci:
        inside = ci[1] >= t.limit if t.higher_is_better else ci[0] <= t.limit
        reach = " (within the CI)" if inside else " (outside the CI)"
    return f"missed by {gap:.3f}{reach}"


def seed_figures(sweep_metrics: Path, run_names: list[str]) -> dict | None:
    """Mean and sd of pooled F1 and per-image mean Dice over the runs named (sweep JSONs)."""
    import numpy as np
    runs = [sweep_metrics / f"{n}.json" for n in run_names]
    if not runs or not all(p.is_file() for p in runs):
        return None
    data = [json.loads(p.read_text()) for p in runs]
    out = {}
    for key, part in (("f1", "global"), ("dice", "per_image_mean")):
        v = np.array([d[part]["f1"] for d in data])
        out[key] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)), "n": len(v)}
    return out


def targets_markdown(ev: dict | None, seeds: dict | None, detection: dict | None) -> str:
    """The targets table in Markdown, one row per target."""
    head = ("| set | figure | target | measured | 95% CI | verdict |\n|---|---|---|---|---|---|\n")
    rows = []
    for t in TARGETS:
        value, ci, note, condition = measured(t.key, ev, seeds, detection)
        shown = ("n/a" if math.isnan(value) else f"{value:.3f}") + (f" ({note})" if note else "")
        rows.append(f"| {t.where} | {t.label} | {t.text()} | {shown} | "
                    f"{f'{ci[0]:.3f} to {ci[1]:.3f}' if ci else ''} | {verdict(t, value, ci, condition)} |")
    return (head + "\n".join(rows) + f"\n\nTargets: {SOURCE}. CIs resample patients (LGG), index blocks "
            "(Figshare) or near-duplicate groups (Br35H); the 3-seed rows give the sd over seeds instead. "
            "The study run's wall time (target: `./run_all.sh cpu` within 15 min) is in "
            "results/timings/timings.md.\n")


def of_the_release(release: dict | None, ev: dict | None, detection: dict | None,
                   seed_runs: list[str]) -> tuple[dict | None, bool, dict | None]:
    """The evaluation, whether the seed runs are the release's, and the detection figures, each
    kept only when it is about the released file (``release.json``): same checksum, the released
    run among the seed runs; detection from the evaluation itself (the released file with its
    settings), else from the study's ``detection.json`` when its run is the released run."""
    if not release:
        return None, False, None
    ev = ev if ev and ev.get("sha256") == release.get("sha256") else None
    run = release.get("from_run")
    own = (ev or {}).get("detection")
    if own and "report_at_fixed_sensitivity" in own:
        return ev, run in seed_runs, own
    detection = detection if detection and detection.get("run_name") == run else None
    return ev, run in seed_runs, detection


def study_targets_markdown() -> str:
    """``targets_markdown`` from the result files of the study, about the released model only."""
    from brainseg_lib import paths
    from brainseg_lib.report.release_card import load as read
    from brainseg_lib.study.experiment import run_name
    from brainseg_lib.study.release_eval import released_path
    names = [run_name(paths.STUDY_PROFILE, seed=s, loss="bce_dice", split_scheme="official") for s in (0, 1, 2)]
    release = read(released_path().parent / "release.json")
    ev, seeds_ok, detection = of_the_release(release, read(paths.metrics_dir() / "release_eval.json"),
                                             read(paths.metrics_dir() / "detection.json"), names)
    seeds = seed_figures(paths.sweep_dir() / "metrics", names) if seeds_ok else None
    if release and "from_plan" in release:   # released from a round: its trial's seeds (release_plan)
        seeds = recipe_seed_figures(read(released_path().parent / "release_recipe_seeds.json"), release)
    return targets_markdown(ev, seeds, detection)


def recipe_seed_figures(recipe: dict | None, release: dict) -> dict | None:
    """The f1 and dice seed figures of ``release_plan.recipe_seeds``, kept only when they are about
    the released file (the same checksum)."""
    if not recipe or recipe.get("release_sha256") != release.get("sha256"):
        return None
    return {k: recipe[k] for k in ("f1", "dice")}
