"""The explainability checks of notebook 05 on a sample of TEST images: which cases, the maps,
the attribution-mass and deletion summaries, and the written verdict.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from brainseg_lib.fileio import json_ready
from brainseg_lib.inference import model_device, predict_probabilities
from brainseg_lib.report.findings import xai_findings as verdict
from brainseg_lib.xai.attribution import (
    METHODS,
    as_input,
    attribute,
    attribution_mass,
    mass_summary,
    target_regions,
)
from brainseg_lib.xai.deletion import MEASURES, deletion, deletion_summary


# ----------------------------------------------------------------------- cases and figures
def pick_cases(per_image: pd.DataFrame) -> dict[str, pd.Series]:
    """Three distinct TEST images from a run's per-image CSV: the highest Dice (true
    positive), the most false-positive pixels and the most false-negative pixels (both
    counted at model resolution, where every image has the same number of pixels)."""
    df = per_image.reset_index(drop=True)
    picks, used = {}, set()
    for label, col in (("true positive (best Dice)", "f1"),
                       ("false positives (most FP pixels)", "model_fp"),
                       ("false negatives (most FN pixels)", "model_fn")):
        order = df.sort_values([col, "name"], ascending=[False, True])
        row = order[~order["name"].isin(used)].iloc[0]
        picks[label] = row
        used.add(row["name"])
    return picks


@dataclass
class Explained:
    """Inputs, truth, prediction and maps of some images, for figures and checks."""
    names: list[str]
    images: np.ndarray          # uint8 (N, H, W)
    gts: np.ndarray             # uint8 (N, H, W)
    probs: np.ndarray           # float (N, H, W)
    targets: list[str]          # "pred" | "gt" per image
    maps: dict[str, np.ndarray]


def explain_arrays(model, arrays, names: list[str], target: str = "pred", ig_steps: int = 32,
                   occlusion_frac: float = 0.125, methods=METHODS) -> Explained:
    """Select ``names`` from SplitArrays ``arrays`` and compute every map for them."""
    index = {n: i for i, n in enumerate(arrays.names)}
    idx = [index[n] for n in names]
    images, gts = arrays.images[idx], arrays.masks[idx]
    x = as_input(images)
    probs = predict_probabilities(model, images, model_device(model), batch_size=64,
                                  channels_last=False)
    regions, used = target_regions(probs, gts, target)
    maps = attribute(model, x, regions, methods, ig_steps, occlusion_frac)
    return Explained(list(names), images, gts, probs, used, maps)


# ----------------------------------------------------------------------- the whole study
def sample_names(per_image: pd.DataFrame, n: int | None, seed: int = 0) -> list[str]:
    """``n`` image names drawn (seeded, without replacement) from a run's per-image CSV, in
    the CSV's order; all of them when n is None or larger."""
    names = list(per_image["name"])
    if n is None or n >= len(names):
        return names
    pick = np.sort(np.random.default_rng(seed).choice(len(names), size=n, replace=False))
    return [names[i] for i in pick]


@dataclass
class Checks:
    mass_per_image: pd.DataFrame
    mass: pd.DataFrame              # mass_summary
    curves: pd.DataFrame            # deletion curves, long
    deletion: pd.DataFrame          # deletion_summary for both measures, stacked
    text: str                       # verdict


def run_checks(model, ex: Explained, fill: str = "mean", seed: int = 0, n_random: int = 3,
               n_boot: int = 2000) -> Checks:
    """Both checks on the maps of ``ex`` (the probability map rides along as a reference)."""
    mass_pi = attribution_mass(ex.maps, ex.gts, ex.names, seed=seed, reference=ex.probs)
    mass = mass_summary(mass_pi, n_boot, seed)
    curves = deletion(model, as_input(ex.images), ex.maps, ex.names, fill=fill, n_random=n_random,
                      seed=seed, reference=ex.probs)
    dels = [deletion_summary(curves, m, n_boot, seed) for m in MEASURES]
    return Checks(mass_pi, mass, curves, pd.concat(dels, ignore_index=True), verdict(mass, dels))


def write_checks(checks: Checks, tables_dir) -> dict[str, str]:
    """results/tables/xai_attribution_mass.csv, xai_deletion.csv (summaries) and their
    per-image companions; returns {label: file name}."""
    from pathlib import Path

    from brainseg_lib.fileio import write_csv
    out = Path(tables_dir)
    files = {"attribution_mass": "xai_attribution_mass.csv", "deletion": "xai_deletion.csv",
             "attribution_mass_per_image": "xai_attribution_mass_per_image.csv",
             "deletion_curves": "xai_deletion_curves.csv"}
    write_csv(checks.mass, out / files["attribution_mass"])
    write_csv(checks.deletion, out / files["deletion"])
    write_csv(checks.mass_per_image, out / files["attribution_mass_per_image"])
    write_csv(checks.curves, out / files["deletion_curves"])
    return files


def records(df: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts (NaN -> None, numpy scalars -> Python)."""
    return json_ready(df.to_dict("records"))


def check_invariants(checks: Checks, ex: Explained) -> dict[str, bool]:
    """What holds for any run of the checks, whatever the maps (notebook 05 prints these for
    nbval to compare): a mass row for every (image, method) pair, mass fractions in [0, 1]
    (``mass_inside`` gives NaN for a map with no mass), a full deletion curve for every
    (image, ordering) pair (the random order and the reference included), and curves whose
    first point (nothing deleted) is the intact image's summed probability in ``ex``."""
    from brainseg_lib.xai.deletion import DELETION_FRACTIONS, RANDOM, REFERENCE
    mass, curves = checks.mass_per_image, checks.curves
    methods = list(ex.maps) + [REFERENCE]   # the methods this run explained with
    sizes = curves.groupby(["name", "method"]).size()
    start = curves[curves["fraction"] == 0].set_index("name")["prob_sum"]
    intact = dict(zip(ex.names, ex.probs.reshape(len(ex.names), -1).sum(axis=1)))
    return {
        "a mass row per image and method": len(mass) == len(ex.names) * len(methods)
        and set(zip(mass["name"], mass["method"])) == {(n, m) for n in ex.names for m in methods},
        "mass fractions in [0, 1] (NaN: an all-zero map)":
            bool(mass["mass_inside_gt"].dropna().between(0, 1).all()),
        "a full deletion curve per image and method":
            set(sizes.index) == {(n, m) for n in ex.names for m in methods + [RANDOM]}
            and bool((sizes == len(DELETION_FRACTIONS)).all()),
        "curves start at the intact prediction": len(start) > 0 and all(
            np.isclose(v, intact.get(n, np.nan), rtol=1e-3) for n, v in start.items()),
    }
