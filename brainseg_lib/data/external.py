"""External validation sets no model trains on: TCGA-LGG FLAIR slices (Buda et al. 2019) and
Figshare T1 contrast-enhanced slices (Cheng et al. 2015; ``SETS``).

Layout of the LGG set (``paths.external_dir()``, set by ``BRAINSEG_EXTERNAL``, default
``data/lgg_external``; the Figshare set, ``paths.figshare_dir()`` / ``BRAINSEG_FIGSHARE``, is laid
out alike, with ``block`` and ``label`` in its manifest instead of ``patient``)::

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

95% CIs resample **patients** (LGG) or index **blocks** (Figshare) with replacement (slices of one patient are not
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
HOW_TO_GET_FIGSHARE = (
    "The second external set is T1 contrast-enhanced slices of the Figshare brain-tumour set of "
    "Jun Cheng (doi 10.6084/m9.figshare.1512427, CC BY 4.0), laid out as "
    "<folder>/{dev,test}/{images,masks}/fig_<index>.png with <folder>/manifest.csv (name, block, "
    "half, label); set BRAINSEG_FIGSHARE=<folder> (default: data/figshare_external inside the project).")


@dataclass(frozen=True)
class ExternalSet:
    """One external set: where it is found, its resampling unit and how to get it."""
    key: str              # "lgg" or "figshare"
    title: str            # how a reader is told which set it is
    env: str              # the environment variable that points at it
    unit: str             # the manifest column a bootstrap resamples (patient or block)
    how_to_get: str

    def root(self) -> Path:
        return paths.external_dir() if self.key == "lgg" else paths.figshare_dir()


SETS = {
    "lgg": ExternalSet("lgg", "TCGA-LGG FLAIR (4 TCGA sites)", "BRAINSEG_EXTERNAL", "patient", HOW_TO_GET),
    "figshare": ExternalSet("figshare", "Figshare T1 contrast-enhanced (2 Chinese hospitals)",
                            "BRAINSEG_FIGSHARE", "block", HOW_TO_GET_FIGSHARE),
}


class ExternalDataNotFound(DatasetNotFoundError):
    """The external folder, a half or its manifest is missing."""


def external_set(which: str) -> ExternalSet:
    if which not in SETS:
        raise ValueError(f"unknown external set {which!r}; choose one of {sorted(SETS)}")
    return SETS[which]


def available(root=None, which: str = "lgg") -> bool:
    """Whether the external set is there (both halves and the manifest)."""
    base = Path(root) if root else external_set(which).root()
    return (base / "manifest.csv").is_file() and all((base / h / "images").is_dir() for h in HALVES)


def check_external(root=None, which: str = "lgg") -> Path:
    spec = external_set(which)
    base = Path(root) if root else spec.root()
    if not available(base, which):
        raise ExternalDataNotFound(f"external validation set not found at {base} "
                                   f"({spec.env}). {spec.how_to_get}")
    return base


@dataclass
class ExternalHalf:
    arrays: SplitArrays                # images and masks at the model's size
    truths: list[np.ndarray]           # native masks (bool)
    patients: list[str]                # the resampling unit: patient (LGG) or block (Figshare)
    labels: list[str] | None = None    # tumour type per slice (Figshare), else None


def read_mask(mask_path: Path, image_shape: tuple[int, ...], img_path: Path) -> np.ndarray:
    """A binary mask (0/255 or 0/1) of its image's size as bool, or ImageReadError naming it."""
    raw = read_grayscale(mask_path)
    if raw.shape != image_shape:
        raise ImageReadError(f"mask {mask_path} is {raw.shape[1]}x{raw.shape[0]} but its image "
                             f"{img_path} is {image_shape[1]}x{image_shape[0]}; they must match")
    values = np.unique(raw)
    if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
        raise ImageReadError(f"mask {mask_path} is not binary (values {shown}); a mask must hold "
                             "0 for background and 255 (or 1) for tumour only")
    return raw > 0


def load_half(half: str, size: int, root=None, which: str = "lgg", head_crop: bool = False) -> ExternalHalf:
    """One half of an external set (``which``: lgg or figshare), resized to ``size`` (each
    slice cropped to the head first with ``head_crop``, ``data.head_crop``), with native masks,
    the resampling unit of each slice and, for Figshare, its tumour type."""
    from brainseg_lib.data.head_crop import framed
    if half not in HALVES:
        raise ValueError(f"unknown external half {half!r}; choose one of {HALVES}")
    base, spec = check_external(root, which), external_set(which)
    man = pd.read_csv(base / "manifest.csv")
    man = man[man["half"] == half].reset_index(drop=True)
    images, masks, truths, hw, boxes = [], [], [], [], []
    for name in man["name"]:
        img_path, mask_path = base / half / "images" / f"{name}.png", base / half / "masks" / f"{name}.png"
        img = read_grayscale(img_path)
        truth = read_mask(mask_path, img.shape, img_path)
        shown, shown_mask, box = framed(img, truth, head_crop)
        images.append(resize_image(shown, size))
        masks.append(resize_mask(shown_mask, size))
        boxes.append(box)
        truths.append(truth)
        hw.append(img.shape)
    prefix = "external" if which == "lgg" else f"external-{which}"
    arrays = SplitArrays(f"{prefix}-{half}", size, np.stack(images), np.stack(masks).astype(np.uint8),
                         list(man["name"]), np.array(hw, np.int64),
                         np.array([t.mean() for t in truths]),
                         np.array(boxes, np.int64).reshape(-1, 4) if head_crop else None)
    labels = list(man["label"].astype(str)) if "label" in man else None
    return ExternalHalf(arrays, truths, list(man[spec.unit].astype(str)), labels)
