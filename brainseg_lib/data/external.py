"""External validation on TCGA-LGG FLAIR slices (Buda et al. 2019), a set no model trains on.

Layout (``paths.external_dir()``, set by ``BRAINSEG_EXTERNAL``, default
``data/lgg_external``)::

    dev/images/<case>_<slice>.png   dev/masks/<case>_<slice>.png     choices only
    test/images/...                 test/masks/...                   scored once, at the end
    manifest.csv                    name, patient, half, tumor_pixels

Figures, per half, at the slices' own 256x256 resolution (the prediction is resized
back, as for Br35H):

* ``pooled_f1``: Dice over all pixels of all slices pooled (the Table I rule);
* ``mean_dice_tumour``: the mean per-slice Dice over slices with a tumour;
* ``clean_marked_share``: the share of clean slices (no tumour) where any pixel is
  predicted tumour, i.e. a false alarm on a healthy slice;
* ``hd95`` / ``nsd``: boundary metrics over tumour slices (``boundary.py``, with its
  empty-mask rule).

95% CIs resample **patients** with replacement (slices of one patient are not
independent) and recompute each figure from the resampled patients' slices.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainseg_lib import paths
from brainseg_lib.data.cache import SplitArrays
from brainseg_lib.data.errors import DatasetNotFoundError, ImageReadError
from brainseg_lib.data.images import read_grayscale, resize_image, resize_mask

HALVES = ("dev", "test")
HOW_TO_GET = (
    "The external set is TCGA-LGG FLAIR slices from Buda et al. 2019 (Kaggle "
    "'mateuszbuda/lgg-mri-segmentation', folder kaggle_3m), laid out as "
    "<folder>/{dev,test}/{images,masks}/*.png with <folder>/manifest.csv (name, patient, half). "
    "Build it from the unpacked kaggle_3m folder with 'python -m brainseg_lib build-external "
    "--source <kaggle_3m>' (every slice is checked against references/lgg_external.csv), or "
    "set BRAINSEG_EXTERNAL=<folder> (default: data/lgg_external inside the project).")


class ExternalDataNotFound(DatasetNotFoundError):
    """The external folder, a half or its manifest is missing."""


def available(root=None) -> bool:
    """Whether the external set is there (both halves and the manifest)."""
    base = Path(root) if root else paths.external_dir()
    return (base / "manifest.csv").is_file() and all((base / h / "images").is_dir() for h in HALVES)


def check_external(root=None) -> Path:
    base = Path(root) if root else paths.external_dir()
    if not available(base):
        raise ExternalDataNotFound(f"external validation set not found at {base} "
                                   f"(BRAINSEG_EXTERNAL). {HOW_TO_GET}")
    return base


@dataclass
class ExternalHalf:
    arrays: SplitArrays                # images and masks at the model's size
    truths: list[np.ndarray]           # native masks (bool)
    patients: list[str]


def load_half(half: str, size: int, root=None) -> ExternalHalf:
    """One half of the external set, resized to ``size``, with native masks and patients."""
    if half not in HALVES:
        raise ValueError(f"unknown external half {half!r}; choose one of {HALVES}")
    base = check_external(root)
    man = pd.read_csv(base / "manifest.csv")
    man = man[man["half"] == half].reset_index(drop=True)
    images, masks, truths, hw = [], [], [], []
    for name in man["name"]:
        img_path, mask_path = base / half / "images" / f"{name}.png", base / half / "masks" / f"{name}.png"
        img = read_grayscale(img_path)
        truth = read_grayscale(mask_path) > 127
        if truth.shape != img.shape:
            raise ImageReadError(f"mask {mask_path} is {truth.shape[1]}x{truth.shape[0]} but its image "
                                 f"{img_path} is {img.shape[1]}x{img.shape[0]}; they must match")
        images.append(resize_image(img, size))
        masks.append(resize_mask(truth, size))
        truths.append(truth)
        hw.append(img.shape)
    arrays = SplitArrays(f"external-{half}", size, np.stack(images), np.stack(masks).astype(np.uint8),
                         list(man["name"]), np.array(hw, np.int64),
                         np.array([t.mean() for t in truths]))
    return ExternalHalf(arrays, truths, list(man["patient"]))
