"""Failure analysis: where the model fails, on Br35H TEST and on the external set.

Every figure here is computed from per-image files the notebooks wrote (the released run's
``<run>_per_image.csv``, ``external_<half>_per_slice.csv``), over **tumour images only**:

* **by tumour size**: the tumour's share of the image (scale-free, so Br35H's varied sizes and
  the external 256x256 slices compare), cut at the quartiles of each set; per quartile the
  images, the mean Dice and the share **missed** (nothing predicted at all);
* **size-matched**: Br35H TEST and the external slices in the same size bins (the external
  set's quartiles), and the gap in mean Dice standardised to the external set's size mix, with
  a bootstrap 95% CI that resamples Br35H near-duplicate groups and external patients;
* **by site** (external): the acquisition site is the second field of a TCGA patient id
  (``TCGA_DU_5853_...``: DU); per site the patients, slices, pooled F1, mean Dice and missed;
* **worst cases**: the ``k`` lowest-Dice images, and what sets them apart from the rest
  (median tumour share, share missed, sites).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from brainseg_lib.evaluation.bootstrap import CI95, percentile_ci
from brainseg_lib.evaluation.metrics import rate

N_BOOT = 2000


def br35h_frame(per_image: pd.DataFrame, groups: dict | None = None) -> pd.DataFrame:
    """Tumour images of a Br35H per-image CSV as name, dice, tumour_share, missed, unit (the
    near-duplicate group where known, else the image), tp, fp, fn."""
    d = per_image[per_image["tumour_pixels"] > 0]
    return pd.DataFrame({"name": d["name"], "dice": d["f1"],
                         "tumour_share": d["tumour_pixels"] / (d["native_h"] * d["native_w"]),
                         "missed": d["pred_pixels"] == 0,
                         "unit": [f"g{groups[n]}" if groups and n in groups else n for n in d["name"]],
                         "tp": d["tp"], "fp": d["fp"], "fn": d["fn"]}).reset_index(drop=True)


def site_of(patient: str) -> str:
    """The acquisition site of a TCGA patient id (``TCGA_DU_5853_19950823``: DU)."""
    parts = str(patient).split("_")
    return parts[1] if len(parts) > 2 and parts[0] == "TCGA" else "?"


def external_frame(per_slice: pd.DataFrame) -> pd.DataFrame:
    """Tumour slices of an external per-slice CSV in ``br35h_frame``'s columns, the patient as
    the resampling unit, plus the site."""
    d = per_slice[per_slice["tumour"].astype(bool)]
    pixels = d[["tp", "fp", "fn", "tn"]].sum(axis=1)
    return pd.DataFrame({"name": d["name"], "dice": d["dice"], "tumour_share": d["tumour_pixels"] / pixels,
                         "missed": ~d["marked"].astype(bool), "unit": d["patient"],
                         "site": d["patient"].map(site_of), "tp": d["tp"], "fp": d["fp"],
                         "fn": d["fn"]}).reset_index(drop=True)


def quartile_edges(share: pd.Series) -> np.ndarray:
    """The 0, 25, 50, 75 and 100% points of the tumour shares (the outer ones opened up)."""
    e = np.quantile(share, [0, 0.25, 0.5, 0.75, 1.0])
    e[0], e[-1] = -np.inf, np.inf
    return e


def by_size(frame: pd.DataFrame, edges: np.ndarray | None = None) -> pd.DataFrame:
    """Per size bin (the frame's own quartiles by default): images, tumour-share range, mean
    Dice and the share missed."""
    edges = quartile_edges(frame["tumour_share"]) if edges is None else edges
    b = pd.cut(frame["tumour_share"], edges, labels=[f"Q{k + 1}" for k in range(len(edges) - 1)])
    g = frame.groupby(b, observed=False)
    return pd.DataFrame({"images": g.size(), "share_min": g["tumour_share"].min(),
                         "share_max": g["tumour_share"].max(), "mean_dice": g["dice"].mean(),
                         "missed": g["missed"].sum(), "missed_share": g["missed"].mean()}).rename_axis("size_bin")


def _standardised_gap(a: pd.DataFrame, b: pd.DataFrame, edges: np.ndarray, weights: np.ndarray) -> float:
    """Mean Dice of ``a`` minus ``b`` per size bin, weighted by ``weights`` (bins empty on a side
    are left out and the weights renormalised)."""
    da, db = (by_size(f, edges)["mean_dice"].to_numpy() for f in (a, b))
    ok = np.isfinite(da) & np.isfinite(db)
    return float(np.sum((da - db)[ok] * weights[ok]) / weights[ok].sum()) if ok.any() else float("nan")


def _resample_units(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    units = frame["unit"].unique()
    pick = rng.choice(units, len(units))
    parts = {u: g for u, g in frame.groupby("unit")}
    return pd.concat([parts[u] for u in pick], ignore_index=True)


def size_matched(br35h: pd.DataFrame, external: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Br35H TEST against the external slices within the external set's size quartiles: the
    table per bin, and the Br35H-minus-external gap in mean Dice standardised to the external
    size mix, with a bootstrap CI over Br35H groups and external patients."""
    edges = quartile_edges(external["tumour_share"])
    ext_t, br_t = by_size(external, edges), by_size(br35h, edges)
    weights = ext_t["images"].to_numpy(dtype=float)
    gap = _standardised_gap(br35h, external, edges, weights)
    rng = np.random.default_rng(seed)
    boots = [_standardised_gap(_resample_units(br35h, rng), _resample_units(external, rng), edges, weights)
             for _ in range(n_boot)]
    table = pd.DataFrame({"external_images": ext_t["images"], "br35h_images": br_t["images"],
                          "external_dice": ext_t["mean_dice"], "br35h_dice": br_t["mean_dice"],
                          "external_missed_share": ext_t["missed_share"], "br35h_missed_share": br_t["missed_share"]})
    return {"table": table, "gap": gap, "ci95": list(percentile_ci(boots, CI95, skip_nan=True)), "n_boot": n_boot}


def by_site(external: pd.DataFrame) -> pd.DataFrame:
    """Per acquisition site of the external tumour slices: patients, slices, pooled F1 over
    the tumour slices, mean Dice and the share missed."""
    rows = []
    for site, g in external.groupby("site"):
        tp, fp, fn = (g[c].sum() for c in ("tp", "fp", "fn"))
        rows.append({"site": site, "patients": g["unit"].nunique(), "tumour_slices": len(g),
                     "pooled_f1": float(rate(2 * tp, 2 * tp + fp + fn, float("nan"))),
                     "mean_dice": g["dice"].mean(), "missed_share": g["missed"].mean()})
    return pd.DataFrame(rows)


def worst_cases(frame: pd.DataFrame, k: int = 10) -> tuple[pd.DataFrame, dict]:
    """The ``k`` lowest-Dice images (ties, such as the many Dice-0 misses, broken by the larger
    tumour: a missed large tumour is the worse failure), and what sets them apart from the rest."""
    worst = frame.sort_values(["dice", "tumour_share"], ascending=[True, False], kind="stable").head(k)
    rest = frame.drop(worst.index)
    common = {"k": int(len(worst)), "dice_zero": int((frame["dice"] == 0).sum()), "images": int(len(frame)), "median_tumour_share_worst": float(worst["tumour_share"].median()),
              "median_tumour_share_rest": float(rest["tumour_share"].median()) if len(rest) else None,
              "missed_worst": int(worst["missed"].sum()),
              "missed_share_rest": float(rest["missed"].mean()) if len(rest) else None}
    if "site" in frame:
        common["sites_worst"] = worst["site"].value_counts().to_dict()
    return worst, common


def failure_sentence(label: str, size: pd.DataFrame, common: dict) -> str:
    """What the failures of one set have in common, in a sentence from its tables."""
    q1, q4 = size.iloc[0], size.iloc[-1]
    return (f"{label}: the smallest quarter of tumours (up to {100 * q1['share_max']:.2f}% of the image) has mean "
            f"Dice {q1['mean_dice']:.3f} and {int(q1['missed'])} of {int(q1['images'])} missed outright; the largest "
            f"quarter {q4['mean_dice']:.3f} and {int(q4['missed'])} of {int(q4['images'])}. "
            f"{common['dice_zero']} of {common['images']} tumour images score Dice 0. The {common['k']} worst "
            f"images have a median tumour share of {100 * common['median_tumour_share_worst']:.2f}% against "
            f"{100 * (common['median_tumour_share_rest'] or float('nan')):.2f}% for the rest, and "
            f"{common['missed_worst']} of them are missed outright"
            + (f"; their sites: {', '.join(f'{k} {v}' for k, v in common['sites_worst'].items())}"
               if common.get("sites_worst") else "") + ".")


def matched_sentence(matched: dict) -> str:
    """The size-matched comparison (``size_matched``) in a sentence."""
    gap, (lo, hi) = matched["gap"], matched["ci95"]
    if lo > 0:
        return (f"Within the same size bins, Br35H TEST scores a mean Dice {gap:+.3f} above the external test "
                f"half (95% CI {lo:+.3f} to {hi:+.3f}, standardised to the external size mix): size alone does "
                "not explain the drop.")
    return (f"Within the same size bins the Br35H-minus-external gap in mean Dice is {gap:+.3f} "
            f"(95% CI {lo:+.3f} to {hi:+.3f}): no evidence of a drop beyond size.")


def analyse(per_image: pd.DataFrame, per_slice: pd.DataFrame, groups: dict | None, n_boot: int = N_BOOT) -> dict:
    """Every table and sentence of the failure analysis of Br35H TEST (a run's per-image CSV,
    ``groups``: its near-duplicate groups) against an external half (its per-slice CSV)."""
    br, ex = br35h_frame(per_image, groups), external_frame(per_slice)
    size = {"Br35H TEST": by_size(br), "external test": by_size(ex)}
    matched = size_matched(br, ex, n_boot=n_boot)
    (worst_br, common_br), (worst_ex, common_ex) = worst_cases(br), worst_cases(ex)
    sentences = [failure_sentence("Br35H TEST", size["Br35H TEST"], common_br),
                 failure_sentence("External test half", size["external test"], common_ex),
                 matched_sentence(matched)]
    return {"by_size": pd.concat(size, names=["set"]).reset_index(), "matched": matched, "sites": by_site(ex),
            "worst": pd.concat({"Br35H TEST": worst_br, "external test": worst_ex}, names=["set"]).reset_index(),
            "sentences": sentences,
            "json": {"size_matched_gap": matched["gap"], "size_matched_ci95": matched["ci95"],
                     "worst_br35h": common_br, "worst_external": common_ex, "sentences": sentences}}

