"""The array cache: each split resized to the model's input size, stored as .npz with a manifest
holding the SHA-256 of every source file, and rebuilt when a source changes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainseg_lib import paths
from brainseg_lib.data.br35h import (
    SPLITS,
    Annotation,
    AnnotationError,
    annotations_path,
    data_root,
    list_split,
    load_sample,
)
from brainseg_lib.data.head_crop import cache_suffix, manifest_entry
from brainseg_lib.data.images import resize_image, resize_mask
from brainseg_lib.fileio import atomic_write, atomic_write_text

log = logging.getLogger(__name__)
CACHE_VERSION = 2


# --------------------------------------------------------------------- cached arrays
@dataclass
class SplitArrays:
    """A split resized to size x size, held in RAM as uint8."""
    split: str
    size: int
    images: np.ndarray                 # uint8 (N, S, S)
    masks: np.ndarray                  # uint8 (N, S, S), 0/1
    names: list[str]
    native_hw: np.ndarray              # int (N, 2)
    native_tumour_fraction: np.ndarray  # float (N,)
    boxes: np.ndarray | None = None    # int (N, 4): the native box each image shows (head crop)

    def __len__(self) -> int:
        return len(self.names)

    def box(self, i: int):
        """The native box image ``i`` shows (``data.head_crop``), or None for the whole scan."""
        return None if self.boxes is None else self.boxes[i]

    def frame_boxes(self) -> np.ndarray:
        """(N, 4) boxes (top, bottom, left, right) of the native frame each image shows: its
        head box (``data.head_crop``), or the whole image."""
        if self.boxes is not None:
            return np.asarray(self.boxes, np.int64)
        hw = np.asarray(self.native_hw, np.int64).reshape(-1, 2)
        zeros = np.zeros(len(hw), np.int64)
        return np.stack([zeros, hw[:, 0], zeros, hw[:, 1]], axis=1)

    def concat(self, other: "SplitArrays") -> "SplitArrays":
        """This split followed by ``other`` (same size), under this split's label."""
        if other.size != self.size:
            raise ValueError(f"cannot join arrays of size {self.size} and {other.size}")
        boxes = (None if self.boxes is None and other.boxes is None
                 else np.concatenate([self.frame_boxes(), other.frame_boxes()]))
        return SplitArrays(self.split, self.size, np.concatenate([self.images, other.images]),
                           np.concatenate([self.masks, other.masks]), self.names + other.names,
                           np.concatenate([self.native_hw, other.native_hw]),
                           np.concatenate([self.native_tumour_fraction, other.native_tumour_fraction]),
                           boxes)

    def head(self, n: int | None) -> "SplitArrays":
        """The first n images (all when n is None or larger than the split)."""
        if n is None or n >= len(self):
            return self
        return SplitArrays(self.split, self.size, self.images[:n], self.masks[:n], self.names[:n],
                           self.native_hw[:n], self.native_tumour_fraction[:n],
                           None if self.boxes is None else self.boxes[:n])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(split: str, size: int, anns: list[Annotation], folder: Path, jpath: Path,
              head_crop: bool = False) -> dict:
    return {
        "version": CACHE_VERSION,
        "split": split,
        "size": size,
        **manifest_entry(head_crop),
        "annotations": {jpath.name: sha256_file(jpath)},
        "files": {a.filename: sha256_file(folder / a.filename) for a in anns},
    }


def cache_path(split: str, size: int, head_crop: bool = False) -> Path:
    return paths.cache_dir() / f"br35h-{split}-{size}{cache_suffix(head_crop)}.npz"


def _atomic_savez(path: Path, **arrays) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _read_cache(path: Path, manifest: dict) -> SplitArrays | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["manifest"])) != manifest:
                log.info("cache %s is stale (sources changed); rebuilding", path.name)
                return None
            return SplitArrays(manifest["split"], manifest["size"], z["images"], z["masks"],
                               [str(n) for n in z["names"]], z["native_hw"],
                               z["native_tumour_fraction"], z["boxes"] if "boxes" in z.files else None)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        log.warning("cache %s unreadable (%s); rebuilding", path, e)
        return None


def load_split(split: str, size: int, root: str | Path | None = None, use_cache: bool = True,
               progress: bool | None = None, head_crop: bool = False) -> SplitArrays:
    """Load a split resized to ``size``, from the checksummed cache when it is current; with
    ``head_crop``, each image and mask cropped to the head's box first (``data.head_crop``)."""
    from brainseg_lib.data.head_crop import framed
    from brainseg_lib.progress import progress_bar
    anns, folder = list_split(split, root)
    jpath = annotations_path(split, data_root(root) if root is not None else None)
    manifest = _manifest(split, size, anns, folder, jpath, head_crop)
    cpath = cache_path(split, size, head_crop)
    if use_cache and cpath.is_file():
        cached = _read_cache(cpath, manifest)
        if cached is not None:
            return cached
    n = len(anns)
    images = np.zeros((n, size, size), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    native_hw = np.zeros((n, 2), np.int64)
    frac = np.zeros(n, np.float64)
    boxes = np.zeros((n, 4), np.int64)
    for i, a in enumerate(progress_bar(anns, desc=f"preparing {split}@{size}",
                                        disable=None if progress is None else not progress)):
        s = load_sample(a, folder)
        image, mask, boxes[i] = framed(s.image, s.mask, head_crop)
        images[i] = resize_image(image, size)
        masks[i] = resize_mask(mask, size)
        native_hw[i] = s.image.shape
        frac[i] = s.mask.mean()
    out = SplitArrays(split, size, images, masks, [a.filename for a in anns], native_hw, frac,
                      boxes if head_crop else None)
    if use_cache:
        write_cache(cpath, out, manifest)
    return out


def write_cache(cpath: Path, arrays: SplitArrays, manifest: dict) -> None:
    """Write ``arrays`` and the manifest of what they were made from (``_read_cache`` reads
    them back only while the manifest still matches), atomically."""
    extra = {} if arrays.boxes is None else {"boxes": arrays.boxes}
    _atomic_savez(cpath, images=arrays.images, masks=arrays.masks, names=np.array(arrays.names),
                  native_hw=arrays.native_hw, native_tumour_fraction=arrays.native_tumour_fraction,
                  manifest=np.array(json.dumps(manifest)), **extra)
    atomic_write_text(cpath.with_suffix(".manifest.json"), json.dumps(manifest, indent=1))


def native_mask(split: str, name: str, root: str | Path | None = None) -> np.ndarray:
    """The ground-truth mask of one image at its native size (bool)."""
    anns, folder = list_split(split, root)
    for a in anns:
        if a.filename == name:
            return load_sample(a, folder).mask
    raise KeyError(f"{name} is not annotated in split {split!r}")


def native_masks(split: str, root: str | Path | None = None) -> dict[str, np.ndarray]:
    """All ground-truth masks of a split at native size, keyed by file name."""
    anns, folder = list_split(split, root)
    out = {}
    for a in anns:
        out[a.filename] = load_sample(a, folder).mask
    return out


def load_named(names: list[str], size: int, label: str, root=None, head_crop: bool = False) -> SplitArrays:
    """Images from any official split, selected by file name and kept in the given order
    (for re-drawn splits such as the grouped split). Uses the per-split caches."""
    parts = {s: load_split(s, size, root=root, head_crop=head_crop) for s in SPLITS}
    index = {n: (s, i) for s, a in parts.items() for i, n in enumerate(a.names)}
    missing = [n for n in names if n not in index]
    if missing:
        raise AnnotationError(f"{len(missing)} image(s) of split '{label}' are not annotated "
                              f"in the dataset: {', '.join(missing[:5])}")
    pick = [index[n] for n in names]

    def take(attr):
        return np.stack([getattr(parts[s], attr)[i] for s, i in pick]) if pick else \
            getattr(parts["train"], attr)[:0]
    return SplitArrays(label, size, take("images"), take("masks"), list(names),
                       take("native_hw"), take("native_tumour_fraction"),
                       take("boxes") if head_crop else None)


def native_masks_for(names: list[str], root=None) -> dict[str, np.ndarray]:
    """Native-size ground-truth masks of the named images, from whichever split holds them."""
    wanted = set(names)
    out = {}
    for split in SPLITS:
        anns, folder = list_split(split, root)
        for a in anns:
            if a.filename in wanted:
                out[a.filename] = load_sample(a, folder).mask
    missing = wanted - set(out)
    if missing:
        raise AnnotationError(f"no annotation for {', '.join(sorted(missing)[:5])}")
    return out
