"""Verdicts with confidence intervals: is one set of runs better than another?

A verdict compares the pooled test F1 of two sets of runs (for example three seeds on the
official split against three seeds on the grouped split). Its 95% CI comes from a
**hierarchical bootstrap** that resamples both sources of noise at once:

* the **seeds** of each side, with replacement (seed-to-seed variation of training);
* the **near-duplicate groups** of each side's TEST images, with replacement (which test
  images were drawn); a group is the unit because its images are copies of one slice (mirror
  images included, ``data/duplicates.py``), so they are not independent. One group draw is
  shared by every seed of a side, since all seeds of a side are scored on the same TEST set.

The statistic is the mean over the drawn seeds of each seed's pooled F1 over the drawn groups
(TP, FP and FN summed over the drawn images), and the verdict is the side of 0 on which the
whole CI lies: "higher", "lower", or "no evidence of a difference" when the CI spans 0. No
rule here depends on a seed standard deviation, so the sd convention (ddof) cannot change a
verdict. With one seed on a side, the seed level has nothing to resample and the CI covers
test-set sampling only; the result says so (``seeds``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from brainseg_lib.evaluation.bootstrap import ci_quantiles, cluster_codes
from brainseg_lib.evaluation.metrics import rate

N_BOOT = 2000
COUNTS = ("tp", "fp", "fn")


def group_counts(per_image: list[pd.DataFrame], groups: dict[str, object] | None) -> np.ndarray:
    """(seeds, groups, 3) TP/FP/FN summed per near-duplicate group of the TEST images, one
    row per run of a side. Every run must score the same images. An image without a group
    (or ``groups`` None) is its own unit."""
    names = list(per_image[0]["name"])
    for df in per_image[1:]:
        if sorted(df["name"]) != sorted(names):
            raise ValueError("the runs of one side score different TEST images; a side's seeds "
                             "must share one TEST set")
    labels = [("g", groups[n]) if groups and n in groups else ("i", n) for n in names]
    codes = cluster_codes([str(x) for x in labels])
    out = np.zeros((len(per_image), codes.max() + 1, len(COUNTS)))
    for s, df in enumerate(per_image):
        df = df.set_index("name").loc[names]
        for k, c in enumerate(COUNTS):
            np.add.at(out[s, :, k], codes, df[c].to_numpy(dtype=float))
    return out


def _pooled_f1(tp, fp, fn):
    return rate(2 * tp, 2 * tp + fp + fn, 1.0)      # no pixel at all: no error


def side_draws(counts: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` draws of a side's mean pooled F1: seeds and groups resampled with
    replacement (``counts`` from ``group_counts``)."""
    n_seeds, n_groups, _ = counts.shape
    weights = rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups), size=n_boot)   # (B, G)
    sums = np.einsum("sgk,bg->bsk", counts, weights)                                      # (B, S, 3)
    f1 = _pooled_f1(sums[..., 0], sums[..., 1], sums[..., 2])                             # (B, S)
    pick = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    return np.take_along_axis(f1, pick, axis=1).mean(axis=1)


def point_f1(counts: np.ndarray) -> float:
    """A side's mean over seeds of the pooled F1 (no resampling)."""
    s = counts.sum(axis=1)
    return float(_pooled_f1(s[:, 0], s[:, 1], s[:, 2]).mean())


def compare(a: list[pd.DataFrame], b: list[pd.DataFrame], groups: dict[str, object] | None,
            n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> dict:
    """Mean pooled F1 of side ``a`` minus side ``b`` (lists of per-image tables, one per seed,
    with name, tp, fp, fn), its hierarchical-bootstrap CI and the verdict."""
    if not a or not b:
        raise ValueError("a comparison needs at least one run on each side")
    ca, cb = group_counts(a, groups), group_counts(b, groups)
    rng = np.random.default_rng(seed)
    diffs = side_draws(ca, n_boot, rng) - side_draws(cb, n_boot, rng)
    lo, hi = np.quantile(diffs, ci_quantiles(level))
    return {"diff": point_f1(ca) - point_f1(cb), "ci95": [float(lo), float(hi)],
            "verdict": verdict(float(lo), float(hi)), "n_boot": n_boot,
            "seeds": [len(a), len(b)], "groups": [ca.shape[1], cb.shape[1]],
            "images": [len(a[0]), len(b[0])]}


def verdict(lo: float, hi: float) -> str:
    """'higher' when the whole CI of A - B lies above 0, 'lower' below, else 'no evidence'."""
    if lo > 0:
        return "higher"
    if hi < 0:
        return "lower"
    return "no evidence"


def flag_contrast(values: pd.Series, flagged: pd.Series, groups: pd.Series, n_perm: int = 10000,
                  n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Mean of ``values`` (one per image, e.g. per-image Dice averaged over seeds) where
    ``flagged`` minus where not, with a two-sided permutation p-value that shuffles the flag
    among whole near-duplicate ``groups`` (the flag is a property of a group) and a bootstrap
    CI resampling groups within each flag. Series share one index (image names)."""
    df = pd.DataFrame({"v": values, "f": flagged.astype(bool), "g": groups}).dropna()
    per_group = df.groupby("g").agg(s=("v", "sum"), n=("v", "size"), f=("f", "max"))
    if per_group["f"].nunique() < 2:
        return {"flagged": int(df["f"].sum()), "unflagged": int((~df["f"]).sum()), "diff": None,
                "ci95": [None, None], "p_value": None, "why": "every image is on one side"}
    s, n, f = (per_group[c].to_numpy() for c in ("s", "n", "f"))

    def diff(flags):
        return s[flags].sum() / n[flags].sum() - s[~flags].sum() / n[~flags].sum()

    rng = np.random.default_rng(seed)
    observed = diff(f)
    perms = np.array([diff(rng.permutation(f)) for _ in range(n_perm)])
    p = (np.sum(np.abs(perms) >= abs(observed) - 1e-12) + 1) / (n_perm + 1)
    boots = []
    idx_t, idx_f = np.flatnonzero(f), np.flatnonzero(~f)
    for _ in range(n_boot):
        t, u = rng.choice(idx_t, len(idx_t)), rng.choice(idx_f, len(idx_f))
        boots.append(s[t].sum() / n[t].sum() - s[u].sum() / n[u].sum())
    lo, hi = np.quantile(boots, ci_quantiles())
    return {"flagged": int(df["f"].sum()), "unflagged": int((~df["f"]).sum()),
            "flagged_groups": int(f.sum()), "unflagged_groups": int((~f).sum()),
            "mean_flagged": float(s[f].sum() / n[f].sum()), "mean_unflagged": float(s[~f].sum() / n[~f].sum()),
            "diff": float(observed), "ci95": [float(lo), float(hi)], "p_value": float(p),
            "n_perm": n_perm, "n_boot": n_boot}
