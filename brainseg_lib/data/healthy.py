"""Tumour-free scans (Br35H ``no/``): one split by near-duplicate group, for training and detection.

Every annotated TRAIN image holds a tumour, so a model trained on them alone has never
seen a healthy scan. ``no/`` holds tumour-free scans, with many near-duplicates of each
other, many of them mirrored. They are split once, by the stricter near-duplicate groups of
``data/duplicates.py`` (flip-aware: each scan is also compared with the mirror images of the
others; thumbnail correlation >= 0.90 or pHash distance <= 6, joined into connected
components: ``LINK_CORR``, ``LINK_PHASH``), into three disjoint roles written to ``splits/healthy_seed<k>.csv``:

* ``val`` (``VAL_SIZE`` scans): the negative validation set. It chooses the detection
  threshold (notebook 06) and, at the run's ratio, joins VAL during training;
* ``train`` (up to ``TRAIN_POOL`` scans): the pool that training draws from, in the
  file's order, ``round(healthy_ratio * n_train)`` scans as empty masks;
* ``report`` (the rest): notebook 06's evaluation scans, which no model trains on and
  no threshold is chosen on.

Whole groups go to one role (``leakage.grouped_split``, seeded), so no report scan is
a near-duplicate of a training or validation scan. Empty masks follow the metrics'
written rule (``metrics.py``): an image with no tumour and no prediction scores 1.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from brainseg_lib import paths
from brainseg_lib.data import splits as leakage
from brainseg_lib.data.br35h import NO, data_root
from brainseg_lib.data.cache import SplitArrays, sha256_file
from brainseg_lib.data.duplicates import PHASH_THRESHOLD, STRICT_CORR_THRESHOLD
from brainseg_lib.data.images import read_grayscale, resize_image
from brainseg_lib.fileio import atomic_write_text

# the links that group no/ scans: the stricter split's correlation threshold (0.90) with the
# audit's pHash distance (6); the stricter split's pHash distance (10) chains 890 of the
# 1,500 no/ scans into one component, which leaves no training pool (tests/test_leakage.py)
LINK_CORR = STRICT_CORR_THRESHOLD
LINK_PHASH = PHASH_THRESHOLD
VAL_SIZE = 300
TRAIN_POOL = 600
ROLES = ("train", "val", "report")


def manifest_path(seed: int = 0):
    return paths.splits_dir() / f"healthy_seed{seed}.csv"


def draw_manifest(names: list[str], groups: dict[str, int], seed: int = 0,
                  val_size: int = VAL_SIZE, train_pool: int = TRAIN_POOL) -> pd.DataFrame:
    """Assign whole near-duplicate groups to val, then train, in a seeded order; the rest
    is report. Returns name, group, role in a seeded random order within each role (the
    training pool is read from the top, so a smaller ratio takes a prefix)."""
    from brainseg_lib.data.files import natural_key
    order = sorted(names, key=natural_key)
    first: dict[int, int] = {}
    labels = np.array([first.setdefault(int(groups[n]), len(first)) for n in order])
    man = leakage.grouped_split(order, labels, seed, {"test": val_size, "val": train_pool})
    man["role"] = man["split"].map({"test": "val", "val": "train", "train": "report"})
    rng = np.random.default_rng(seed + 1)
    man = man.iloc[rng.permutation(len(man))]
    man["role"] = pd.Categorical(man["role"], ROLES, ordered=True)
    man = man.sort_values("role", kind="stable")
    man["role"] = man["role"].astype(str)
    return man[["name", "group", "role"]].reset_index(drop=True)


def build_manifest(seed: int = 0, root=None, progress: bool | None = None, val_size: int = VAL_SIZE,
                   train_pool: int = TRAIN_POOL) -> pd.DataFrame:
    """Fingerprint every ``no/`` scan, group near-duplicates and draw the roles."""
    from brainseg_lib.data.duplicates import near_duplicate_groups, read_scans
    from brainseg_lib.data.files import list_images
    folder = data_root(root) / NO
    names = list_images(folder)
    _, fp = read_scans(folder, names, 16, fingerprint=True, progress=progress)
    return draw_manifest(names, near_duplicate_groups(fp, LINK_CORR, LINK_PHASH), seed, val_size, train_pool)


def write_manifest(man: pd.DataFrame, seed: int = 0):
    """Write splits/healthy_seed<k>.csv (untouched when the content is the same)."""
    path = manifest_path(seed)
    text = man.to_csv(index=False)
    if path.is_file() and path.read_text() == text:
        return path
    return atomic_write_text(path, text)


def load_manifest(seed: int = 0) -> pd.DataFrame:
    path = manifest_path(seed)
    if not path.is_file():
        raise FileNotFoundError(
            f"healthy-scan split {path} not found; write it with "
            "`python -m brainseg_lib healthy-split` (it reads the no/ folder of BRAINSEG_DATA)")
    man = pd.read_csv(path)
    bad = set(man["role"]) - set(ROLES)
    if bad:
        raise ValueError(f"{path}: unknown role(s) {sorted(bad)}; expected {ROLES}")
    return man


def role_names(role: str, seed: int = 0) -> list[str]:
    man = load_manifest(seed)
    return list(man.loc[man["role"] == role, "name"])


def _cache_path(role: str, size: int, seed: int, head_crop: bool = False):
    from brainseg_lib.data.head_crop import cache_suffix
    return paths.cache_dir() / f"br35h-healthy{seed}-{role}-{size}{cache_suffix(head_crop)}.npz"


def load_healthy(role: str, size: int, seed: int = 0, n: int | None = None, root=None,
                 head_crop: bool = False) -> SplitArrays:
    """The first ``n`` scans of a role (all when None) at ``size``, with empty masks, from the
    checksummed cache of ``data.load_split`` (rebuilt when a file changes); with ``head_crop``,
    each cropped to the head first (``data.head_crop``)."""
    from brainseg_lib.data.cache import _read_cache, write_cache
    from brainseg_lib.data.head_crop import framed, manifest_entry
    names = role_names(role, seed)
    folder = data_root(root) / NO
    manifest = {"split": f"healthy-{role}", "size": size, "seed": seed,
                **manifest_entry(head_crop),
                "files": {m: sha256_file(folder / m) for m in names}}
    cpath = _cache_path(role, size, seed, head_crop)
    arrays = _read_cache(cpath, manifest) if cpath.is_file() else None
    if arrays is None:
        imgs = [read_grayscale(folder / m) for m in names]
        parts = [framed(im, None, head_crop) for im in imgs]
        images = np.stack([resize_image(p[0], size) for p in parts]) if imgs \
            else np.zeros((0, size, size), np.uint8)
        arrays = SplitArrays(manifest["split"], size, images, np.zeros_like(images), list(names),
                             np.array([im.shape for im in imgs], np.int64).reshape(-1, 2),
                             np.zeros(len(names)),
                             np.array([p[2] for p in parts], np.int64).reshape(-1, 4) if head_crop else None)
        write_cache(cpath, arrays, manifest)
    return arrays.head(n)


def healthy_count(ratio: float, n_annotated: int) -> int:
    """How many healthy scans join ``n_annotated`` images at ``healthy_ratio`` ``ratio``."""
    return int(round((ratio or 0) * n_annotated))


def with_healthy(arrays: SplitArrays, role: str, ratio: float, seed: int = 0, root=None,
                 head_crop: bool = False) -> SplitArrays:
    """``arrays`` followed by ``healthy_count(ratio, len(arrays))`` healthy scans of ``role``
    (cropped to the head with ``head_crop``)."""
    k = healthy_count(ratio, len(arrays))
    if k <= 0:
        return arrays
    extra = load_healthy(role, arrays.size, seed, k, root, head_crop)
    if len(extra) < k:
        raise ValueError(f"healthy_ratio {ratio} asks for {k} '{role}' scans; "
                         f"{manifest_path(seed).name} holds {len(extra)}")
    return arrays.concat(extra)
