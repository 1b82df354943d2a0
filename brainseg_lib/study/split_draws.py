"""Several draws of the grouped split, and the leakage verdict over them.

The grouped split (``splits/grouped_seed0.csv``, notebook 07) is one random assignment of
whole near-duplicate groups (mirror images included) to TRAIN / VAL / TEST. Another split
seed gives another assignment of the same groups; the split-draw sweep
(``sweep_split_draws`` in a profile, ``study.sweep.plan``) trains every seed on each draw,
so that the official-minus-grouped verdict can carry which TEST set was drawn as well as
which seed trained (``compare_draws``). Only the grouped split is drawn again; the stricter
grouped split stays one draw, so the comparisons that involve it use the grouped split's first
draw (split seed 0), and their verdicts are of the same kind (``seed_spread.CONTRASTS``).

``write_draw_manifests`` writes the missing ``splits/grouped_seed<d>.csv`` of the draws the sweep
needs, from the same groups notebook 07 forms; notebook 07 rewrites every draw already there
(``refresh_draws``; a manifest with the same content is left untouched), so a change of the
groups reaches every draw.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from brainseg_lib.evaluation.bootstrap import ci_quantiles
from brainseg_lib.names import split_seed_of  # noqa: F401  (re-exported: the sweep's runs)
from brainseg_lib.study.verdicts import N_BOOT, group_counts, point_f1, side_draws, verdict


def side_mean(f1: pd.Series, draws: pd.Series) -> float:
    """A side's figure: the mean over split draws of each draw's mean over seeds (the mean over
    runs when every draw has the same seeds; a draw with fewer seeds weighs no less)."""
    return float(f1.groupby(draws.to_numpy()).mean().mean())


def draw_manifests(split_seeds, names=None, labels=None) -> dict[int, pd.DataFrame]:
    """The grouped manifest of each split seed, from ``labels`` (the groups of ``names``), by
    default notebook 07's groups (flip-aware near-duplicate links over every Br35H annotated
    image), formed here."""
    from brainseg_lib.data import duplicates, splits
    if labels is None:
        fp = duplicates.fingerprints()
        names, labels = fp.names, duplicates.groups(fp, duplicates.pair_table(fp))
    return {int(d): splits.grouped_split(names, labels, int(d)) for d in split_seeds}


def _write(manifests: dict[int, pd.DataFrame]) -> list:
    """Write each draw's manifest, checked first to keep every group inside one split."""
    from brainseg_lib.data import splits
    written = []
    for d, man in manifests.items():
        if man.groupby("group")["split"].nunique().max() != 1:
            raise RuntimeError(f"split draw {d} splits a near-duplicate group; this is a bug "
                               "in splits.grouped_split")
        written.append(splits.write_manifest(man, d))
    return written


def write_draw_manifests(split_seeds) -> list:
    """Write the grouped manifest of every split seed in ``split_seeds`` that is missing
    (``splits/grouped_seed<d>.csv``); returns the paths written. Each manifest is checked to
    keep every group inside one split before it is written."""
    from brainseg_lib.data import splits
    missing = [d for d in split_seeds if not splits.manifest_path(d, "grouped").is_file()]
    return _write(draw_manifests(missing)) if missing else []


def refresh_draws(names: list[str], labels, split_seeds=None) -> list:
    """Rewrite the grouped manifest of every split draw already in ``splits/`` (split seed > 0,
    or ``split_seeds``) from ``labels``, the groups notebook 07 formed; unchanged ones are left
    untouched (``splits.write_manifest``). Returns the paths."""
    from brainseg_lib import paths
    stems = [p.stem.removeprefix("grouped_seed") for p in paths.splits_dir().glob("grouped_seed*.csv")]
    seeds = split_seeds if split_seeds is not None else sorted(int(d) for d in stems if d.isdigit())
    return _write(draw_manifests([d for d in seeds if d > 0], names, labels))


def split_seeds_of(runs: list[dict]) -> list[int]:
    """The grouped split seeds a sweep plan trains on (0 included when it trains on it)."""
    return sorted({int(r.get("split_seed") or 0) for r in runs if r.get("split_scheme") == "grouped"})


def draws_of(a_draws: list[np.ndarray], n_boot: int, rng: np.random.Generator,
             means: list[float] | None = None) -> np.ndarray:
    """``n_boot`` draws of a side's mean pooled F1 over split draws (``a_draws``: one
    ``group_counts`` array per split draw). With several draws, only the draws are resampled,
    each standing for its mean over seeds: a draw's mean already carries its seeds' and its
    TEST images' noise, so resampling them again inside would count that noise twice (the
    spread of the draw means is the whole variance of their mean). With one draw (the official
    split), its seeds and near-duplicate groups are resampled (``verdicts.side_draws``)."""
    if len(a_draws) == 1:
        return side_draws(a_draws[0], n_boot, rng)
    means = np.array(means if means is not None else [point_f1(c) for c in a_draws])
    pick = rng.integers(0, len(means), size=(n_boot, len(means)))
    return means[pick].mean(axis=1)


def compare_draws(a: list[list[pd.DataFrame]], b: list[list[pd.DataFrame]], groups: dict | None,
                  n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> dict:
    """Mean pooled TEST F1 of side ``a`` minus side ``b``, each a list of split draws, each
    draw a list of per-image tables (one per training seed). The CI comes from a hierarchical
    bootstrap (``draws_of``): a side with several split draws resamples its draws; a side with
    one draw (the official split) resamples its seeds and near-duplicate groups. A side's figure
    is the mean over its draws of each draw's mean over seeds (``side_mean``). Returns the
    difference, its CI, the verdict (``verdicts.verdict``) and the counts that went in."""
    if not a or not b or not all(a) or not all(b):
        raise ValueError("a comparison needs at least one run in every draw of each side")
    ca = [group_counts(d, groups) for d in a]
    cb = [group_counts(d, groups) for d in b]
    fa, fb = [point_f1(c) for c in ca], [point_f1(c) for c in cb]          # each draw's mean over seeds
    rng = np.random.default_rng(seed)
    diffs = draws_of(ca, n_boot, rng, fa) - draws_of(cb, n_boot, rng, fb)
    lo, hi = np.quantile(diffs, ci_quantiles(level))
    point = float(np.mean(fa) - np.mean(fb))                               # side_mean
    return {"diff": point, "ci95": [float(lo), float(hi)], "verdict": verdict(float(lo), float(hi)),
            "n_boot": n_boot, "draws": [len(a), len(b)],
            "seeds": [sum(len(d) for d in a), sum(len(d) for d in b)],     # runs per side
            "groups": [max(c.shape[1] for c in ca), max(c.shape[1] for c in cb)],
            "seeds_per_draw": [[len(d) for d in a], [len(d) for d in b]],
            "per_draw_f1": [fa, fb]}
