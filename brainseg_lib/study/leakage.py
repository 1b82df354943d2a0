"""The leakage audit of notebook 07: how many images of each split have a near-duplicate in
another, a summary of the grouped split, and what it leaves just below the thresholds.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from brainseg_lib import paths
from brainseg_lib.data.br35h import SPLITS
from brainseg_lib.data.duplicates import (
    CORR_THRESHOLD,
    ORIENTATIONS,
    PAIR_MAX_PHASH,
    PAIR_MIN_CORR,
    PHASH_THRESHOLD,
    STRICT_CORR_THRESHOLD,
    STRICT_PHASH_THRESHOLD,
    THUMB,
    Fingerprints,
    flag_pairs,
    groups,
)
from brainseg_lib.data.splits import grouped_split, manifest_path


def cross_split_counts(fp: Fingerprints, pairs: pd.DataFrame) -> pd.DataFrame:
    """For each (query split, reference split): how many query images have a near-duplicate
    in the reference split, by each signal and by either."""
    rows = []
    combos = [("test", "train"), ("val", "train"), ("test", "val"), ("train", "train"),
              ("val", "val"), ("test", "test")]
    for q, r in combos:
        row = {"query": q, "reference": r, "query_images": fp.splits.count(q)}
        for col in ("dup_corr", "dup_phash", "dup"):
            p = pairs[pairs[col]]
            hit = set(p.loc[(p.split_a == q) & (p.split_b == r), "a"]) | \
                set(p.loc[(p.split_b == q) & (p.split_a == r), "b"])
            row[col] = len(hit)
        rows.append(row)
    return pd.DataFrame(rows)


def partners_across(pairs: pd.DataFrame, manifest: pd.DataFrame, flag: str = "dup") -> dict:
    """How many images of each split of ``manifest`` (name, split) have a partner flagged in
    ``pairs[flag]`` (``dup``: flip-aware, ``dup_plain``: without mirroring) in another split:
    0 everywhere for a split that keeps every group whole."""
    where = dict(zip(manifest["name"], manifest["split"]))
    p = pairs[pairs[flag]].assign(sa=lambda d: d["a"].map(where), sb=lambda d: d["b"].map(where))
    p = p[p["sa"] != p["sb"]]
    return {s: len(set(p.loc[p.sa == s, "a"]) | set(p.loc[p.sb == s, "b"]))
            for s in sorted(set(manifest["split"]))}


def mirrored_counts(pairs: pd.DataFrame, manifest: pd.DataFrame) -> dict:
    """What the flip-aware comparison adds on ``manifest``'s split: the cross-split
    near-duplicate pairs found only against a mirror image, and the TEST and VAL images whose
    only TRAIN near-duplicates are mirrored (a plain comparison calls them clean)."""
    where = dict(zip(manifest["name"], manifest["split"]))
    p = pairs[pairs["dup"]].assign(sa=lambda d: d["a"].map(where), sb=lambda d: d["b"].map(where))
    cross = p[p["sa"] != p["sb"]]
    out = {"cross_split_pairs": int(len(cross)),
           "cross_split_pairs_added_by_mirroring": int((~cross["dup_plain"]).sum())}
    for q in ("test", "val"):
        tr = cross[((cross.sa == q) & (cross.sb == "train")) | ((cross.sb == q) & (cross.sa == "train"))]
        img = lambda d: set(d.loc[d.sa == q, "a"]) | set(d.loc[d.sb == q, "b"])   # noqa: E731
        out[f"{q}_images_with_train_partner"] = len(img(tr))
        out[f"{q}_images_with_only_mirrored_train_partner"] = len(img(tr) - img(tr[tr["dup_plain"]]))
    return out


NEAR_MISS_BANDS = (0.80, 0.85, 0.90)
STRICT_BANDS = (0.80, 0.85)       # the near-miss bands below the stricter split's correlation threshold


def near_misses(pairs: pd.DataFrame, manifest: pd.DataFrame, bands=NEAR_MISS_BANDS,
                corr: float = CORR_THRESHOLD, phash: int = PHASH_THRESHOLD) -> pd.DataFrame:
    """What a split leaves just below its near-duplicate thresholds (``corr``, ``phash``: the
    audit's by default): among the pairs that neither signal flags (``dup`` False, flagged at
    those thresholds) and whose images sit in different splits of ``manifest`` (name, split),
    one row per thumbnail-correlation band [b, corr) and one for pHash distances
    phash+1..PAIR_MAX_PHASH, with the pairs and how many TEST and VAL images have such a
    partner in TRAIN. ``pairs`` is ``pair_table``'s, complete down to PAIR_MIN_CORR and up to
    PAIR_MAX_PHASH."""
    if min(bands) < PAIR_MIN_CORR or max(bands) >= corr:
        raise ValueError(f"bands must lie in [{PAIR_MIN_CORR}, {corr}): pair_table keeps pairs "
                         f"down to correlation {PAIR_MIN_CORR}, and from {corr} they are "
                         f"near-duplicates; got {bands}")
    where = dict(zip(manifest["name"], manifest["split"]))
    unknown = (set(pairs["a"]) | set(pairs["b"])) - set(where)
    if unknown:
        raise ValueError(f"{len(unknown)} paired image(s) are in no split of the manifest, e.g. {sorted(unknown)[:3]}")
    below = pairs[~pairs["dup"]].assign(sa=lambda d: d["a"].map(where), sb=lambda d: d["b"].map(where))
    below = below[below["sa"] != below["sb"]]
    masks = [("corr", b, corr, below["corr"] >= b) for b in bands]
    masks.append(("phash", phash + 1, PAIR_MAX_PHASH, below["phash_dist"] <= PAIR_MAX_PHASH))
    rows = []
    for signal, lo, hi, mask in masks:
        band = below[mask]
        row = {"signal": signal, "from": lo, "to": hi, "cross_split_pairs": len(band)}
        for q in ("test", "val"):
            hit = set(band.loc[(band.sa == q) & (band.sb == "train"), "a"]) | \
                set(band.loc[(band.sb == q) & (band.sa == "train"), "b"])
            row[f"{q}_images_with_train_partner"] = len(hit)
            row[f"{q}_images"] = int((manifest["split"] == q).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def near_miss_table(summary: dict) -> pd.DataFrame:
    """The ``below_thresholds`` rows of every split in a ``summarize_leakage`` summary (grouped,
    grouped_strict where present, official), one table with a ``split`` column
    (results/tables/leakage_near_misses.csv)."""
    return pd.concat([pd.DataFrame(summary[f"{s}_split"]["below_thresholds"]).assign(split=s)
                      for s in ("grouped", "grouped_strict", "official") if f"{s}_split" in summary],
                     ignore_index=True)


def load_near_misses(split_seed: int = 0, metrics_dir=None, scheme: str = "grouped") -> list[dict] | None:
    """A grouped split's ``below_thresholds`` rows from notebook 07's leakage.json, or None
    when the audit has not run, audited another split seed or has no such split."""
    path = (metrics_dir or paths.metrics_dir()) / "leakage.json"
    try:
        grouped = json.loads(path.read_text()).get(f"{scheme}_split") or {}
    except (OSError, ValueError):
        return None
    return grouped.get("below_thresholds") if grouped.get("seed") == split_seed else None


def strict_split(fp: Fingerprints, pairs: pd.DataFrame, seed: int,
                 targets: dict[str, int] | None = None) -> tuple[pd.DataFrame, dict]:
    """The stricter grouped split (``grouped_strict``): groups linked at
    ``STRICT_CORR_THRESHOLD`` / ``STRICT_PHASH_THRESHOLD``, split as the grouped split is.
    Returns its manifest and its summary for leakage.json, with what it leaves below its own
    thresholds (``near_misses`` at the strict thresholds: correlation bands from 0.80 and 0.85,
    pHash distances above ``STRICT_PHASH_THRESHOLD``) and the largest group the links would make
    at pHash distance ``PAIR_MAX_PHASH``, the reason the pHash threshold stops below it.
    ``targets``: the split sizes (the official ones by default)."""
    strict = flag_pairs(pairs.copy(), STRICT_CORR_THRESHOLD, STRICT_PHASH_THRESHOLD)
    labels = groups(fp, strict)
    manifest = grouped_split(fp.names, labels, seed, targets)
    sizes = np.bincount(labels)
    looser = np.bincount(groups(fp, flag_pairs(pairs.copy(), STRICT_CORR_THRESHOLD, PAIR_MAX_PHASH)))
    info = {**_split_block(manifest, seed, "grouped_strict"),
            "thresholds": {"thumbnail_corr_min": STRICT_CORR_THRESHOLD,
                           "phash_max_hamming": STRICT_PHASH_THRESHOLD},
            "groups": len(sizes), "largest_group": int(sizes.max()),
            "images_with_near_duplicate_in_another_split": partners_across(strict, manifest),
            "largest_group_at_phash_max": {"phash_max_hamming": PAIR_MAX_PHASH, "images": int(looser.max())},
            "below_thresholds": near_misses(strict, manifest, STRICT_BANDS, STRICT_CORR_THRESHOLD,
                                            STRICT_PHASH_THRESHOLD).to_dict("records")}
    return manifest, info


def _split_block(manifest: pd.DataFrame, seed: int, scheme: str) -> dict:
    """What leakage.json records of every grouped split: its seed, manifest, sizes and the
    most splits any group spans (1 when no group is split)."""
    return {"seed": seed, "manifest": paths.display_path(manifest_path(seed, scheme)),
            "sizes": manifest["split"].value_counts().reindex(list(SPLITS), fill_value=0).astype(int).to_dict(),
            "max_splits_per_group": int(manifest.groupby("group")["split"].nunique().max())}


def summarize_leakage(fp: Fingerprints, pairs: pd.DataFrame, labels: np.ndarray,
              manifest: pd.DataFrame, seed: int, strict: dict | None = None) -> dict:
    """The figures that go to results/metrics/leakage.json (``strict``: ``strict_split``'s
    summary, kept as ``grouped_strict_split``)."""
    sizes = np.bincount(labels)
    counts = cross_split_counts(fp, pairs)
    orig = dict(zip(fp.names, fp.splits))
    moved = int(sum(orig[n] != s for n, s in zip(manifest["name"], manifest["split"])))
    official = pd.DataFrame({"name": fp.names, "split": fp.splits})
    return {
        "images": len(fp.names),
        "thresholds": {"thumbnail_corr_min": CORR_THRESHOLD, "phash_max_hamming": PHASH_THRESHOLD,
                       "thumbnail_side": THUMB, "mirror_images_compared": list(ORIENTATIONS[1:])},
        "pairs_found": {"corr": int(pairs["dup_corr"].sum()), "phash": int(pairs["dup_phash"].sum()),
                        "both": int((pairs["dup_corr"] & pairs["dup_phash"]).sum()),
                        "either": int(pairs["dup"].sum()),
                        "either_without_mirroring": int(pairs["dup_plain"].sum())},
        "images_with_duplicate_in": {f"{r.query}->{r.reference}": {"corr": int(r.dup_corr),
                                                                  "phash": int(r.dup_phash),
                                                                  "either": int(r.dup),
                                                                  "of": int(r.query_images)}
                                     for r in counts.itertuples()},
        "groups": len(sizes), "groups_with_duplicates": int((sizes > 1).sum()),
        "largest_group": int(sizes.max()),
        "grouped_split": {**_split_block(manifest, seed, "grouped"),
                          "images_moved_from_official_split": moved,
                          "images_with_near_duplicate_in_another_split": partners_across(pairs, manifest),
                          "below_thresholds": near_misses(pairs, manifest).to_dict("records")},
        **({"grouped_strict_split": strict} if strict else {}),
        "official_split": {"below_thresholds": near_misses(pairs, official).to_dict("records"),
                           "mirrored": mirrored_counts(pairs, official)},
    }
