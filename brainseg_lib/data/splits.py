"""Splits: the official Br35H split, and the near-duplicate-free grouped splits that keep each group of
near-duplicates inside one split (``grouped_split``, manifests in ``splits/``): ``grouped`` at the
audit's thresholds, ``grouped_strict`` at lower ones (``data/duplicates.py``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainseg_lib import paths
from brainseg_lib.data.br35h import EXPECTED_COUNTS
from brainseg_lib.fileio import atomic_write_text

GROUPED_SCHEMES = ("grouped", "grouped_strict")
SPLIT_SCHEMES = ("official", *GROUPED_SCHEMES)


def grouped_split(names: list[str], labels: np.ndarray, seed: int = 0,
                  targets: dict[str, int] | None = None) -> pd.DataFrame:
    """Assign whole groups to test, then val, then train, in a seeded random order.

    A group goes to TEST (then VAL) only while it fits the remaining target,
    so no group is split; everything else goes to TRAIN. Returns a manifest
    with columns name, group, split.
    """
    targets = dict(targets or EXPECTED_COUNTS)
    rng = np.random.default_rng(seed)
    uniq, sizes = np.unique(labels, return_counts=True)
    order = rng.permutation(len(uniq))
    room = {"test": targets["test"], "val": targets["val"]}
    assign = {}
    for k in order:
        g, s = uniq[k], sizes[k]
        for split in ("test", "val"):
            if s <= room[split]:
                assign[g] = split
                room[split] -= s
                break
        else:
            assign[g] = "train"
    return pd.DataFrame({"name": names, "group": labels, "split": [assign[g] for g in labels]})


def manifest_path(seed: int = 0, scheme: str = "grouped") -> Path:
    """splits/<scheme>_seed<k>.csv, the manifest of a grouped scheme (``grouped`` or ``grouped_strict``)."""
    if scheme not in GROUPED_SCHEMES:
        raise ValueError(f"{scheme!r} has no manifest; the grouped schemes are {GROUPED_SCHEMES}")
    return paths.splits_dir() / f"{scheme}_seed{seed}.csv"


def load_manifest(seed: int = 0, scheme: str = "grouped") -> pd.DataFrame:
    """A grouped scheme's manifest (name, group, split), written by notebook 07."""
    path = manifest_path(seed, scheme)
    if not path.is_file():
        raise FileNotFoundError(f"{scheme} split manifest {path} not found; run notebook "
                                "07_leakage_audit first")
    return pd.read_csv(path)


def write_manifest(manifest: pd.DataFrame, seed: int = 0, scheme: str = "grouped") -> Path:
    """Write splits/<scheme>_seed<k>.csv (atomically; untouched when the content is the same)."""
    path = manifest_path(seed, scheme)
    text = manifest.to_csv(index=False)
    if path.is_file() and path.read_text() == text:
        return path
    return atomic_write_text(path, text)


def audit_groups(split_seed: int = 0) -> dict[str, int] | None:
    """The near-duplicate group of every annotated image (flip-aware, at the audit's thresholds:
    the ``group`` column of the grouped manifest, which lists them all); None before notebook
    07 wrote the manifest."""
    if not manifest_path(split_seed, "grouped").is_file():
        return None
    man = load_manifest(split_seed, "grouped")
    return dict(zip(man["name"], man["group"].astype(int)))


def near_duplicate_labels(names: list[str], split_seed: int = 0) -> list[str] | None:
    """``audit_groups`` as one label per name, an image outside the manifest its own
    group; None before notebook 07 wrote the manifest."""
    groups = audit_groups(split_seed)
    if groups is None:
        return None
    return [f"g{groups[n]}" if n in groups else f"image:{n}" for n in names]


def split_arrays(scheme: str, size: int, data_root=None, split_seed: int = 0, only=None,
                 head_crop: bool = False) -> dict:
    """TRAIN / VAL / TEST arrays of a split scheme: ``official`` (the dataset's folders),
    ``grouped`` (the near-duplicate-free manifest splits/grouped_seed<k>.csv) or
    ``grouped_strict`` (the same at lower thresholds, splits/grouped_strict_seed<k>.csv);
    ``only``: the splits to load (all three by default); ``head_crop``: each scan cropped to
    the head first (``data.head_crop``)."""
    from brainseg_lib.data.br35h import SPLITS
    from brainseg_lib.data.cache import load_named, load_split
    wanted = tuple(only or SPLITS)
    if scheme == "official":
        return {s: load_split(s, size, root=data_root, head_crop=head_crop) for s in wanted}
    if scheme in GROUPED_SCHEMES:
        man = load_manifest(split_seed, scheme)
        return {s: load_named(list(man.loc[man["split"] == s, "name"]), size, s, data_root, head_crop)
                for s in wanted}
    raise ValueError(f"unknown split_scheme {scheme!r}; choose one of {SPLIT_SCHEMES}")
