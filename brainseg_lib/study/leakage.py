"""The leakage audit of notebook 07: how many images of each split have a near-duplicate in
another, and a summary of the grouped split.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from brainseg_lib import paths
from brainseg_lib.data.br35h import SPLITS
from brainseg_lib.data.duplicates import (
    CORR_THRESHOLD,
    PHASH_THRESHOLD,
    THUMB,
    Fingerprints,
)
from brainseg_lib.data.splits import manifest_path


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


def summarize_leakage(fp: Fingerprints, pairs: pd.DataFrame, labels: np.ndarray,
              manifest: pd.DataFrame, seed: int) -> dict:
    """The figures that go to results/metrics/leakage.json."""
    sizes = np.bincount(labels)
    counts = cross_split_counts(fp, pairs)
    orig = dict(zip(fp.names, fp.splits))
    moved = int(sum(orig[n] != s for n, s in zip(manifest["name"], manifest["split"])))
    spans = manifest.groupby("group")["split"].nunique().max()
    return {
        "images": len(fp.names),
        "thresholds": {"thumbnail_corr_min": CORR_THRESHOLD, "phash_max_hamming": PHASH_THRESHOLD,
                       "thumbnail_side": THUMB},
        "pairs_found": {"corr": int(pairs["dup_corr"].sum()), "phash": int(pairs["dup_phash"].sum()),
                        "both": int((pairs["dup_corr"] & pairs["dup_phash"]).sum()),
                        "either": int(pairs["dup"].sum())},
        "images_with_duplicate_in": {f"{r.query}->{r.reference}": {"corr": int(r.dup_corr),
                                                                  "phash": int(r.dup_phash),
                                                                  "either": int(r.dup),
                                                                  "of": int(r.query_images)}
                                     for r in counts.itertuples()},
        "groups": int(len(sizes)), "groups_with_duplicates": int((sizes > 1).sum()),
        "largest_group": int(sizes.max()),
        "grouped_split": {"seed": seed, "manifest": paths.display_path(manifest_path(seed)),
                          "sizes": manifest["split"].value_counts().reindex(list(SPLITS)).astype(int).to_dict(),
                          "images_moved_from_official_split": moved,
                          "max_splits_per_group": int(spans)},
    }
