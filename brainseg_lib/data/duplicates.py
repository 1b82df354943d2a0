"""Near-duplicate audit of the 801 annotated images, and a near-duplicate-free grouped split.

Two independent signals compare every pair of images:

* **thumbnail correlation**: each image is resized to 64x64 grayscale,
  z-normalised, and pairs are compared by Pearson correlation; a pair with
  r >= ``CORR_THRESHOLD`` (0.95) is a near-duplicate;
* **perceptual hash** (pHash): 32x32 grayscale, 2-D DCT, the 8x8 lowest
  frequencies without the DC term against their median = 63 bits; a pair at
  Hamming distance <= ``PHASH_THRESHOLD`` (6) is a near-duplicate.

Both signals are **flip-aware**: each image is also compared with the left-right, up-down and
both-ways mirrored versions of every other (``ORIENTATIONS``), and a pair's figures are the
closest of the four (highest correlation, smallest pHash distance). Br35H holds mirrored copies
of the same slice, and training flips images, so a mirrored copy in TRAIN is the same training
example; a plain comparison misses it (the pair's plain figures are kept beside it, as
``corr_plain`` / ``phash_plain``, so the audit counts what the flips add).

A pair flagged by either signal links two images; the connected components
of these links are the **groups**. The grouped split assigns whole groups to
TRAIN / VAL / TEST with the official sizes as targets, deterministically from a
seed, so no group spans two splits.

A **stricter grouped split** (scheme ``grouped_strict``) links pairs at lower thresholds:
r >= ``STRICT_CORR_THRESHOLD`` (0.90, the top band of the near-miss audit) or pHash
distance <= ``STRICT_PHASH_THRESHOLD`` (10). They were set from the images alone, before any
run on that split: at a pHash distance of 12 the links chain most images into one component,
which no split of the official sizes can keep whole (``leakage.json``'s
``grouped_strict_split`` records that component's size and the largest group at 10).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.fft import dctn
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from brainseg_lib.data.br35h import SPLITS, list_split
from brainseg_lib.data.images import read_grayscale, resize_image
from brainseg_lib.progress import progress_bar

CORR_THRESHOLD = 0.95
PHASH_THRESHOLD = 6
THUMB = 64
PAIR_MIN_CORR = 0.80                       # pair_table keeps pairs down to this correlation ...
PAIR_MAX_PHASH = PHASH_THRESHOLD + 6       # ... or up to this pHash distance
STRICT_CORR_THRESHOLD = 0.90               # the stricter grouped split's links (module docstring)
STRICT_PHASH_THRESHOLD = 10
ORIENTATIONS = ("none", "lr", "ud", "lrud")  # the mirror images compared (training flips both ways)


@dataclass
class Fingerprints:
    names: list[str]
    splits: list[str]
    thumbs: np.ndarray      # (N, THUMB*THUMB) z-normalised float32
    hashes: np.ndarray      # (N, 4, 63) bool: the pHash of each of ORIENTATIONS

    def subset(self, idx) -> "Fingerprints":
        """The fingerprints at positions ``idx``, in that order."""
        idx = list(idx)
        return Fingerprints([self.names[i] for i in idx], [self.splits[i] for i in idx],
                            self.thumbs[idx], self.hashes[idx])

    def oriented_thumbs(self, k: int) -> np.ndarray:
        """The thumbnails mirrored as ``ORIENTATIONS[k]`` (z-normalisation commutes with it)."""
        t = mirror(self.thumbs.reshape(-1, THUMB, THUMB), k)
        return np.ascontiguousarray(t).reshape(len(t), -1)


def mirror(a: np.ndarray, k: int) -> np.ndarray:
    """``a`` (..., H, W) mirrored as ``ORIENTATIONS[k]``: the one place their order is defined."""
    a = a[..., :, ::-1] if ORIENTATIONS[k] in ("lr", "lrud") else a
    return a[..., ::-1, :] if ORIENTATIONS[k] in ("ud", "lrud") else a


def _thumb(img: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((side, side), Image.BILINEAR), dtype=np.float32)


def _phash_of_thumb(t: np.ndarray) -> np.ndarray:
    d = dctn(t.astype(np.float64), norm="ortho")[:8, :8].ravel()[1:]
    return d > np.median(d)


def oriented_phash_bits(img: np.ndarray) -> np.ndarray:
    """(4, 63) pHashes of ``img`` as each of ``ORIENTATIONS`` (mirroring the 32x32 thumbnail,
    which equals the thumbnail of the mirrored image)."""
    t = _thumb(img, 32)
    return np.stack([_phash_of_thumb(mirror(t, k)) for k in range(len(ORIENTATIONS))])


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between the bit rows of ``a`` and ``b`` (0/1 as float32 for BLAS:
    exact for 63 bits)."""
    a, b = a.astype(np.float32), b.astype(np.float32)
    return np.rint(a @ (1 - b).T + (1 - a) @ b.T).astype(np.int64)


def _similarity(q: Fingerprints, ref: Fingerprints):
    """(plain correlation, plain pHash distance, flip-aware correlation, orientation index of
    it, flip-aware pHash distance), each (len(q), len(ref)): ``q``'s images against ``ref``'s
    in every orientation."""
    n = q.thumbs.shape[1]
    corrs, hams = [], []
    for k in range(len(ORIENTATIONS)):
        corrs.append(q.thumbs @ ref.oriented_thumbs(k).T / n)
        # the hash is not mirror-equivariant: mirror either side, keep the closer
        ham = _hamming(q.hashes[:, 0], ref.hashes[:, k])
        hams.append(ham if k == 0 else np.minimum(ham, _hamming(q.hashes[:, k], ref.hashes[:, 0])))
    corrs, hams = np.stack(corrs), np.stack(hams)
    return corrs[0], hams[0], corrs.max(axis=0), corrs.argmax(axis=0), hams.min(axis=0)


def fingerprints(root=None, splits=SPLITS) -> Fingerprints:
    """Thumbnails and hashes of every annotated image (about 10 s for 801 images)."""
    names, sp, thumbs, hashes = [], [], [], []
    for split in splits:
        anns, folder = list_split(split, root)
        for a in anns:
            t, h = fingerprint_image(read_grayscale(folder / a.filename))
            names.append(a.filename)
            sp.append(split)
            thumbs.append(t)
            hashes.append(h)
    return stack_fingerprints(names, sp, thumbs, hashes)


def pair_table(fp: Fingerprints, min_corr: float = PAIR_MIN_CORR) -> pd.DataFrame:
    """Every pair (i < j) with flip-aware correlation >= min_corr or flip-aware pHash distance
    <= PAIR_MAX_PHASH: both flip-aware figures (``corr``, ``phash_dist``), the orientation of
    the best correlation (``flip``), the plain figures (``corr_plain``, ``phash_plain``) and the
    near-duplicate flags (flip-aware; ``dup_plain``: flagged without mirroring)."""
    corr0, ham0, corr, arg, ham = _similarity(fp, fp)
    iu, ju = np.triu_indices(len(fp.names), k=1)
    c, d = corr[iu, ju], ham[iu, ju]
    keep = (c >= min_corr) | (d <= PAIR_MAX_PHASH)
    df = pd.DataFrame({
        "a": np.array(fp.names)[iu[keep]], "split_a": np.array(fp.splits)[iu[keep]],
        "b": np.array(fp.names)[ju[keep]], "split_b": np.array(fp.splits)[ju[keep]],
        "corr": c[keep].round(4), "phash_dist": d[keep],
        "flip": np.array(ORIENTATIONS)[arg[iu[keep], ju[keep]]],
        "corr_plain": corr0[iu[keep], ju[keep]].round(4), "phash_plain": ham0[iu[keep], ju[keep]],
    })
    df = flag_pairs(df)
    df["dup_plain"] = (df["corr_plain"] >= CORR_THRESHOLD) | (df["phash_plain"] <= PHASH_THRESHOLD)
    return df.sort_values("corr", ascending=False, kind="stable").reset_index(drop=True)


def flag_pairs(df: pd.DataFrame, corr: float = CORR_THRESHOLD, phash: int = PHASH_THRESHOLD) -> pd.DataFrame:
    """``df`` (columns ``corr`` and ``phash_dist``) with the near-duplicate flags at these
    thresholds (this module's by default): ``dup_corr``, ``dup_phash`` and ``dup`` (either)."""
    df["dup_corr"] = df["corr"] >= corr
    df["dup_phash"] = df["phash_dist"] <= phash
    df["dup"] = df["dup_corr"] | df["dup_phash"]
    return df


def groups(fp: Fingerprints, pairs: pd.DataFrame) -> np.ndarray:
    """Connected-component label of every image over the near-duplicate links."""
    idx = {n: i for i, n in enumerate(fp.names)}
    p = pairs[pairs["dup"]]
    i = p["a"].map(idx).to_numpy()
    j = p["b"].map(idx).to_numpy()
    n = len(fp.names)
    g = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    return labels


# --------------------------------------------------------------------- other images vs a reference set
def fingerprint_image(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(z-normalised THUMB x THUMB thumbnail, flattened float32; (4, 63) pHashes, one per
    ``ORIENTATIONS``) of one uint8 grayscale image at its native size: the recipe of
    ``fingerprints``."""
    t = _thumb(img, THUMB).ravel()
    t = (t - t.mean()) / (t.std() + 1e-6)
    return t.astype(np.float32), oriented_phash_bits(img)


def stack_fingerprints(names: list[str], splits: list[str], thumbs, hashes) -> Fingerprints:
    """Fingerprints from per-image ``fingerprint_image`` parts (any number, zero included)."""
    return Fingerprints(list(names), list(splits),
                        np.stack(thumbs) if len(thumbs) else np.zeros((0, THUMB * THUMB), np.float32),
                        np.stack(hashes) if len(hashes) else np.zeros((0, len(ORIENTATIONS), 63), bool))


def fingerprint_images(images, names: list[str], split: str = "query") -> Fingerprints:
    """Fingerprints of in-memory images (e.g. scans outside the annotated splits)."""
    thumbs, hashes = zip(*(fingerprint_image(im) for im in images)) if len(names) else ((), ())
    return stack_fingerprints(names, [split] * len(names), thumbs, hashes)


def nearest_in(query: Fingerprints, reference: Fingerprints, chunk: int = 1024) -> pd.DataFrame:
    """For every query image: its most correlated reference image in any orientation
    (``nearest``, ``corr``), the smallest pHash distance to any reference image in any
    orientation (``phash_dist``) and the near-duplicate flags with this module's thresholds
    (``dup_corr``, ``dup_phash``, ``dup`` = either)."""
    best, arg, dmin = [], [], []
    for i in range(0, len(query.names), chunk):
        _, _, corr, _, ham = _similarity(query.subset(range(i, min(i + chunk, len(query.names)))),
                                         reference)
        arg.append(corr.argmax(axis=1))
        best.append(corr.max(axis=1))
        dmin.append(ham.min(axis=1))
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
    arg, best, dmin = cat(arg, np.int64), cat(best, np.float32), cat(dmin, np.int64)
    df = pd.DataFrame({"name": query.names,
                       "nearest": np.array(reference.names, dtype=object)[arg] if len(arg) else [],
                       "corr": best.astype(np.float64).round(4), "phash_dist": dmin})
    return flag_pairs(df)


def near_duplicate_groups(fp: Fingerprints, corr: float = CORR_THRESHOLD,
                          phash: int = PHASH_THRESHOLD) -> dict[str, int]:
    """Near-duplicate group of every image of ``fp`` by name: the connected components of
    the (flip-aware) links among these images alone, at these thresholds (the audit's by
    default)."""
    pairs = flag_pairs(pair_table(fp, min_corr=corr), corr, phash)
    labels = groups(fp, pairs)
    return dict(zip(fp.names, (int(x) for x in labels)))


def read_scans(folder: Path, names: list[str], size: int, fingerprint: bool = False,
               progress: bool | None = None, head_crop: bool = False):
    """Scans resized to the model's input (uint8 (N, size, size)), each cropped to its head's box
    first with ``head_crop`` (``data.head_crop``), and, optionally, their leakage fingerprints
    computed on the whole scan at native size."""
    from brainseg_lib.data.head_crop import framed
    images = np.zeros((len(names), size, size), np.uint8)
    thumbs, hashes = [], []
    for i, n in enumerate(progress_bar(names, desc=f"reading {Path(folder).name}/",
                                       disable=None if progress is None else not progress)):
        img = read_grayscale(Path(folder) / n)
        images[i] = resize_image(framed(img, None, head_crop)[0], size)
        if fingerprint:
            t, h = fingerprint_image(img)
            thumbs.append(t)
            hashes.append(h)
    fp = stack_fingerprints(names, [Path(folder).name] * len(names), thumbs, hashes) \
        if fingerprint else None
    return images, fp
