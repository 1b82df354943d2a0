"""Honest evaluation: aggregate the sweep (seeds x split schemes x losses) into findings.

Every figure here is read from the run JSONs in ``paths.sweep_dir()/metrics``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from brainseg_lib import paths
from brainseg_lib.data.splits import audit_groups
from brainseg_lib.evaluation.evaluate import load_run_metrics
from brainseg_lib.evaluation.metrics import METRICS
from brainseg_lib.study.split_draws import side_mean, split_seed_of


def load_sweep(profile: str, sweep_dir=None) -> pd.DataFrame:
    """One row per sweep run of ``profile``: scheme, loss, seed, pooled metrics, CIs, tuning."""
    folder = (sweep_dir or paths.sweep_dir()) / "metrics"
    rows = []
    for r in load_run_metrics(folder):
        if r.get("profile") != profile or r.get("run_tag"):   # tagged variants are Table I rows only
            continue
        row = {"run_name": r["run_name"], "split_scheme": r.get("split_scheme", "official"),
               "split_seed": split_seed_of(r),
               "loss": r["loss"], "seed": r["seed"], "n_images": r["n_images"],
               "per_image_csv": str(folder / r["per_image_csv"]) if r.get("per_image_csv") else None,
               **{m: r["global"][m] for m in METRICS},
               **{f"{m}_ci_lo": r["bootstrap_ci95"][m][0] for m in METRICS},
               **{f"{m}_ci_hi": r["bootstrap_ci95"][m][1] for m in METRICS},
               # resampling near-duplicate groups (runs scored since the audit's groups exist)
               **{f"f1_group_ci_{e}": (r.get("bootstrap_ci95_groups") or {}).get("f1", [np.nan, np.nan])[i]
                  for i, e in enumerate(("lo", "hi"))}}
        for label, t in (r.get("threshold_tuning") or {}).get("test", {}).items():
            for k in ("threshold", "f1", "precision", "recall"):
                row[f"{label}:{k}"] = t[k]
        rows.append(row)
    cols = ["run_name", "split_scheme", "split_seed", "loss", "seed", "n_images", "per_image_csv", *METRICS,
            *(f"{m}_ci_{e}" for m in METRICS for e in ("lo", "hi"))]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=cols)


def summarize_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd (ddof=1) of each pooled metric per (split scheme, loss), over every run
    (every seed of every split draw: ``n_runs``, ``n_draws``)."""
    out = []
    for (scheme, loss), g in runs.groupby(["split_scheme", "loss"]):
        row = {"split_scheme": scheme, "loss": loss, "n_runs": len(g),
               "n_draws": int(draw_column(g).nunique())}
        for m in METRICS:
            row[m] = g[m].mean()
            row[f"{m}_sd"] = g[m].std(ddof=1) if len(g) > 1 else np.nan
        out.append(row)
    return pd.DataFrame(out)


def ci_table(runs: pd.DataFrame) -> pd.DataFrame:
    """F1 and IoU with their per-image bootstrap 95% CIs, and F1's CI resampling near-duplicate
    groups where the run has it, one row per run."""
    cols = ["run_name", "f1", "f1_ci_lo", "f1_ci_hi", "f1_group_ci_lo", "f1_group_ci_hi",
            "iou", "iou_ci_lo", "iou_ci_hi"]
    t = runs[[c for c in cols if c in runs]]
    return t.sort_values("run_name").reset_index(drop=True).round(4)


def _mean(runs, scheme, loss, col="f1", first_draw: bool = False):
    """(mean, sd over runs, runs) of (scheme, loss); the mean over split draws of each draw's
    mean over seeds (``split_draws.side_mean``); ``first_draw``: split seed 0 only."""
    g = _runs_of(runs, scheme, loss, first_draw)
    if not len(g):
        return None, None, 0
    return side_mean(g[col], draw_column(g)), float(g[col].std(ddof=1)) if len(g) > 1 else None, len(g)


def draw_column(g: pd.DataFrame) -> pd.Series:
    """The split draw of each run (its ``split_seed``; 0 for a table without the column)."""
    return g["split_seed"] if "split_seed" in g else pd.Series(0, index=g.index)


def _runs_of(runs, scheme, loss, first_draw: bool = False) -> pd.DataFrame:
    g = runs[(runs.split_scheme == scheme) & (runs.loss == loss)]
    return g[g["split_seed"] == 0] if first_draw and "split_seed" in g else g


def _draws(runs, scheme, loss) -> int:
    """How many draws of the split the runs of (scheme, loss) were trained on (1 at least)."""
    g = _runs_of(runs, scheme, loss)
    return max(1, int(draw_column(g).nunique()))


def findings(runs: pd.DataFrame, main_loss: str = "bce_dice", split_seed: int = 0) -> dict:
    """The three answers (leakage, loss, threshold) as numbers, for JSON and the README, with
    what the grouped split (seed ``split_seed``) leaves just below the near-duplicate
    thresholds, from notebook 07's audit (``leakage.load_near_misses``; None before it ran);
    where the sweep holds ``grouped_strict`` runs, their F1 and its differences too."""
    from brainseg_lib.study.leakage import load_near_misses
    off, off_sd, n_off = _mean(runs, "official", main_loss)
    grp, grp_sd, n_grp = _mean(runs, "grouped", main_loss)
    bce, bce_sd, n_bce = _mean(runs, "official", "bce")
    rep = {"main_loss": main_loss,
           "official": {"f1_mean": off, "f1_sd": off_sd, "n_seeds": n_off},
           "grouped": {"f1_mean": grp, "f1_sd": grp_sd, "n_seeds": n_grp,
                       "n_draws": _draws(runs, "grouped", main_loss)},
           "official_minus_grouped_f1": None if off is None or grp is None else off - grp,
           "loss": {"bce_dice": {"f1_mean": off, "f1_sd": off_sd, "n_seeds": n_off},
                    "bce": {"f1_mean": bce, "f1_sd": bce_sd, "n_seeds": n_bce},
                    "bce_dice_minus_bce_f1": None if off is None or bce is None else off - bce}}
    off_runs = runs[(runs.split_scheme == "official") & (runs.loss == main_loss)]
    tune = {}
    for label in ("default_0.5", "val_best_f1", "val_recall_at_precision"):
        cols = [f"{label}:{k}" for k in ("threshold", "f1", "precision", "recall")]
        if all(c in off_runs for c in cols) and off_runs[cols].notna().all(axis=None):
            tune[label] = {k: float(off_runs[c].mean()) for k, c in
                           zip(("threshold", "f1", "precision", "recall"), cols)}
    rep["threshold"] = tune
    rep["grouped_near_misses"] = load_near_misses(split_seed)
    strict, strict_sd, n_strict = _mean(runs, "grouped_strict", main_loss)
    if n_strict:
        rep["grouped_strict"] = {"f1_mean": strict, "f1_sd": strict_sd, "n_seeds": n_strict}
        first, _, _ = _mean(runs, "grouped", main_loss, first_draw=True)   # the strict split: one draw
        rep["grouped_minus_grouped_strict_f1"] = None if first is None else first - strict
        rep["official_minus_grouped_strict_f1"] = None if off is None else off - strict
        rep["grouped_strict_near_misses"] = load_near_misses(split_seed, scheme="grouped_strict")
    rep["contrasts"] = contrasts(runs, main_loss, split_seed)
    rep["within_test"] = within_test_contrast(runs, main_loss, split_seed)
    return rep


# the comparisons the findings make: (key, side A, side B), a side being (split scheme, loss,
# first draw only). Only the grouped split is drawn several times, so the comparisons with the
# stricter grouped split (one draw) take the grouped split's first draw, and so does
# official_minus_grouped_first_draw, the verdict strict_verdict_holds sets beside the stricter
# one: verdicts of the same kind, whichever split is drawn again.
# The last element: the contrast is made only where the grouped split has several draws (with
# one, the first draw is the whole grouped side and it would repeat official_minus_grouped).
CONTRASTS = (("official_minus_grouped", ("official", None, False), ("grouped", None, False), False),
             ("official_minus_grouped_first_draw", ("official", None, False), ("grouped", None, True), True),
             ("official_minus_grouped_strict", ("official", None, False), ("grouped_strict", None, False), False),
             ("grouped_minus_grouped_strict", ("grouped", None, True), ("grouped_strict", None, False), False),
             ("bce_dice_minus_bce", ("official", None, False), ("official", "bce", False), False))


def contrasts(runs: pd.DataFrame, main_loss: str = "bce_dice", split_seed: int = 0,
              n_boot: int | None = None) -> dict:
    """Every comparison of ``CONTRASTS`` whose two sides have runs with per-image tables:
    the difference in mean pooled F1 with its hierarchical-bootstrap CI over split draws (a
    side trained on several draws of the grouped split), seeds and near-duplicate groups of
    TEST images (``study.split_draws.compare_draws``)."""
    from brainseg_lib.study import verdicts
    from brainseg_lib.study.split_draws import compare_draws
    groups = audit_groups(split_seed)
    out = {}
    several_draws = _draws(runs, "grouped", main_loss) > 1
    for key, (sa, la, fa), (sb, lb, fb), needs_draws in CONTRASTS:
        if needs_draws and not several_draws:
            continue
        sides = [_side(runs, scheme, loss or main_loss, first) for scheme, loss, first in
                 ((sa, la, fa), (sb, lb, fb))]
        if all(sides):
            inner = "seeds x near-duplicate groups" if groups else "seeds x images"
            words = [f"the {SCHEME_WORDS[sc]} split's " + ("split draws" if len(sd) > 1 else inner)
                     for sc, sd in ((sa, sides[0]), (sb, sides[1]))]
            out[key] = {**compare_draws(*sides, groups, n_boot=n_boot or verdicts.N_BOOT),
                        "units": inner if max(len(sd) for sd in sides) == 1 else " and ".join(words)}
    return out


SCHEME_WORDS = {"official": "official", "grouped": "grouped", "grouped_strict": "stricter grouped"}


def _side(runs: pd.DataFrame, scheme: str, loss: str, first_draw: bool = False) -> list[list[pd.DataFrame]] | None:
    """One side of a contrast: per split draw, the per-image tables of its seeds (None when a
    run lacks its table); ``first_draw``: split seed 0 only."""
    g = _runs_of(runs, scheme, loss, first_draw)
    if "per_image_csv" not in g or not len(g) or g["per_image_csv"].isna().any():
        return None
    return [[pd.read_csv(p) for p in d.sort_values("seed")["per_image_csv"]]
            for _, d in g.groupby(draw_column(g), sort=True)]


def within_test_contrast(runs: pd.DataFrame, main_loss: str = "bce_dice", split_seed: int = 0,
                         data_root=None) -> dict | None:
    """Same models, same TEST set: the official split's TEST images whose near-duplicate group
    (flip-aware) holds an official TRAIN image against those whose group does not, by
    per-image Dice averaged over the official-split seeds (``verdicts.flag_contrast``: group
    permutation p-value, group bootstrap CI). None without the runs or the audit's groups."""
    from brainseg_lib.data.br35h import list_split
    from brainseg_lib.study import verdicts
    groups = audit_groups(split_seed)
    g = runs[(runs.split_scheme == "official") & (runs.loss == main_loss)]
    if groups is None or not len(g) or "per_image_csv" not in g or g["per_image_csv"].isna().any():
        return None
    try:
        train = list_split("train", data_root)[0]
    except FileNotFoundError:             # no dataset here: the contrast needs the official TRAIN names
        return None
    dice = pd.concat([pd.read_csv(p).set_index("name")["f1"] for p in g["per_image_csv"]], axis=1).mean(axis=1)
    train_groups = {groups[a.filename] for a in train if a.filename in groups}
    grp = pd.Series({n: groups.get(n, f"image:{n}") for n in dice.index})
    flagged = grp.map(lambda x: x in train_groups)
    return {**verdicts.flag_contrast(dice, flagged, grp), "seeds": int(len(g)),
            "value": "per-image Dice, mean over seeds"}


def threshold_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Test metrics at 0.5 and at the validation-tuned thresholds, per official-split run."""
    cols = [c for c in runs.columns if ":" in c]
    return runs.loc[runs.split_scheme == "official", ["run_name", *cols]].round(3).reset_index(drop=True)
