"""Br35H: finding the files, reading images, rasterising VIA annotations, caching.

Layout expected under ``paths.data_dir()`` (see ``../shared/data/README.md``)::

    Br35H-Mask-RCNN/TRAIN/*.jpg + annotations_train.json   (500 images)
    Br35H-Mask-RCNN/VAL/*.jpg   + annotations_val.json     (201 images)
    Br35H-Mask-RCNN/TEST/*.jpg  + annotations_test.json    (100 images)

Rules, stated once:

* **Images** of any mode (1, L, LA, P, RGB, RGBA, CMYK, I;16, I, F) become one
  uint8 grayscale channel: colour through PIL's ITU-R 601-2 luma, 16-bit by
  dividing by 257, 32-bit int/float by min-max scaling. Alpha is dropped.
* **Masks** are rasterised with scikit-image at the image's native size.
  Regions of one image are united; coordinates outside the image are clipped.
  VIA ellipses are ``(cx, cy, rx, ry, theta)`` with ``theta`` in radians,
  clockwise on screen (image y points down); ``theta`` absent means 0.
  scikit-image's ``rotation`` turns the other way in its (row, col) frame, so
  that is ``ellipse(cy, cx, ry, rx, rotation=-theta)`` (checked by a unit test
  and by the overlay in notebook 01).
* **Resizing** to the profile's square side: images with PIL's bilinear filter,
  which anti-aliases when shrinking. Masks: the binary mask is resized the same
  way as a float coverage map and a pixel is tumour where coverage >= 0.5. If
  that empties a non-empty mask (a tumour smaller than one output pixel), the
  pixel of highest coverage is kept, so no annotated tumour vanishes.
* **Cache**: one ``.npz`` per (split, size) under ``paths.cache_dir()``, holding
  a manifest with the SHA-256 of every source file read. A cache whose manifest
  differs from the files on disk is rebuilt. Writes go to a temp file and are
  renamed into place, so an interrupted build never leaves a cache that loads.
"""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from skimage import draw

from brainseg_lib import paths
from brainseg_lib.data.errors import (
    AnnotationError,
    DatasetNotFoundError,
)
from brainseg_lib.data.files import list_images, natural_key
from brainseg_lib.data.images import read_grayscale

log = logging.getLogger(__name__)

ANNOTATED_DIR = "Br35H-Mask-RCNN"
YES, NO = "yes", "no"          # unannotated tumour scans / scans without tumour
SPLITS = ("train", "val", "test")
SPLIT_FOLDERS = {"train": "TRAIN", "val": "VAL", "test": "TEST"}
EXPECTED_COUNTS = {"train": 500, "val": 201, "test": 100}

HOW_TO_GET = (
    "Get Br35H (Brain Tumor Detection 2020) from Kaggle "
    "'ahmedhamada0/brain-tumor-detection' "
    "(kaggle datasets download -d ahmedhamada0/brain-tumor-detection), or from the "
    "author's GitHub repository 'AhmedHamada0/Brain-Tumor-Detection-Dataset'. "
    "Unpack it so that <folder>/Br35H-Mask-RCNN/TRAIN/annotations_train.json exists, "
    "then set BRAINSEG_DATA=<folder> (default: data/br35h inside the project)."
)


# --------------------------------------------------------------------- finding files
def data_root(root: str | Path | None = None) -> Path:
    return Path(root) if root is not None else paths.data_dir()


def split_dir(split: str, root: str | Path | None = None) -> Path:
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    return data_root(root) / ANNOTATED_DIR / SPLIT_FOLDERS[split]


def annotations_path(split: str, root: str | Path | None = None) -> Path:
    return split_dir(split, root) / f"annotations_{split}.json"


def check_dataset(root: str | Path | None = None, splits=SPLITS) -> Path:
    """Return the data root, or raise naming exactly what is missing and how to get it."""
    base = data_root(root)
    if not base.is_dir():
        raise DatasetNotFoundError(f"Br35H data folder not found: {base}\n{HOW_TO_GET}")
    if not (base / ANNOTATED_DIR).is_dir():
        raise DatasetNotFoundError(
            f"{base} has no '{ANNOTATED_DIR}' folder, so it is not the Br35H root.\n{HOW_TO_GET}")
    for split in splits:
        d = split_dir(split, base)
        if not d.is_dir():
            raise DatasetNotFoundError(f"split '{split}' is missing: no folder {d}\n{HOW_TO_GET}")
        j = annotations_path(split, base)
        if not j.is_file():
            raise DatasetNotFoundError(
                f"split '{split}' has no annotations JSON: {j} is missing\n{HOW_TO_GET}")
    return base


# --------------------------------------------------------------------- annotations
@dataclass
class Annotation:
    filename: str
    regions: list[dict] = field(default_factory=list)


def load_annotations(json_path: str | Path) -> list[Annotation]:
    """Parse a VIA JSON (keyed "<filename><size>") into one Annotation per image."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise DatasetNotFoundError(f"annotations file not found: {json_path}\n{HOW_TO_GET}")
    try:
        raw = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{json_path} is not valid JSON: {e}") from e
    if isinstance(raw, dict) and "_via_img_metadata" in raw:  # a VIA project file
        raw = raw["_via_img_metadata"]
    if not isinstance(raw, dict):
        raise AnnotationError(f"{json_path}: expected a JSON object keyed by image, got {type(raw).__name__}")
    by_name: dict[str, Annotation] = {}
    for key, entry in raw.items():
        if not isinstance(entry, dict) or "filename" not in entry:
            raise AnnotationError(f"{json_path}: entry {key!r} has no 'filename'")
        regions = entry.get("regions", [])
        if isinstance(regions, dict):  # VIA 1.x stores regions as {"0": {...}}
            regions = list(regions.values())
        shapes = []
        for i, region in enumerate(regions):
            shape = region.get("shape_attributes") if isinstance(region, dict) else None
            if not isinstance(shape, dict) or "name" not in shape:
                raise AnnotationError(f"{json_path}: {entry['filename']} region {i} has no shape_attributes.name")
            shapes.append(shape)
        ann = by_name.setdefault(entry["filename"], Annotation(entry["filename"]))
        ann.regions.extend(shapes)
    return list(by_name.values())


def _coords(shape: dict, keys: tuple[str, ...], where: str) -> list:
    vals = []
    for k in keys:
        if k not in shape:
            raise AnnotationError(f"{where}: missing '{k}'")
        v = shape[k]
        try:
            arr = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise AnnotationError(f"{where}: '{k}' is not numeric: {v!r}") from e
        if not np.all(np.isfinite(arr)):
            raise AnnotationError(f"{where}: '{k}' holds NaN or infinite values")
        vals.append(arr)
    return vals


COORD_MARGIN = 1.0        # coordinates may lie up to this many longer sides outside the image,
COORD_MARGIN_MIN_PX = 256  # and at least this many pixels


def _check_extent(where: str, height: int, width: int, xs=(), ys=(), radii=()) -> None:
    """Reject coordinates far outside the image (absurd values would make rasterisation slow
    and huge); what lies within the margin is clipped by the drawing itself."""
    m = max(COORD_MARGIN * max(height, width), COORD_MARGIN_MIN_PX)
    bad = [f"x={x:g}" for x in np.ravel(xs) if not -m <= x <= width + m]
    bad += [f"y={y:g}" for y in np.ravel(ys) if not -m <= y <= height + m]
    bad += [f"radius={r:g}" for r in np.ravel(radii) if r > 2 * max(height, width)]
    if bad:
        raise AnnotationError(f"{where}: coordinates far outside the {width}x{height} image "
                              f"({', '.join(bad[:3])}); up to {m:g} px outside it is accepted "
                              "(and clipped)")


def rasterize(regions: list[dict], height: int, width: int, source: str = "") -> np.ndarray:
    """Union of all regions as a bool (height, width) mask; see the module docstring.
    Coordinates must be finite and within ``COORD_MARGIN`` of the image (``_check_extent``)."""
    mask = np.zeros((height, width), dtype=bool)
    shape_hw = (height, width)
    for i, s in enumerate(regions):
        kind = s.get("name")
        where = f"{source} region {i} ({kind})"
        if kind == "polygon":
            xs, ys = _coords(s, ("all_points_x", "all_points_y"), where)
            _check_extent(where, height, width, xs, ys)
            if xs.ndim != 1 or xs.shape != ys.shape or len(xs) < 3:
                raise AnnotationError(f"{where}: a polygon needs >= 3 points with matching x and y, "
                                      f"got {xs.size} x and {ys.size} y")
            rr, cc = draw.polygon(ys, xs, shape=shape_hw)
            mask[rr, cc] = True
            # draw.polygon fills pixel centres only; add the outline so thin shapes survive
            rr, cc = draw.polygon_perimeter(np.rint(ys), np.rint(xs), shape=shape_hw, clip=False)
            mask[rr, cc] = True
        elif kind == "ellipse":
            cx, cy, rx, ry = _coords(s, ("cx", "cy", "rx", "ry"), where)
            theta = float(_coords(s, ("theta",), where)[0]) if "theta" in s else 0.0
            if rx <= 0 or ry <= 0:
                raise AnnotationError(f"{where}: radii must be > 0, got rx={rx}, ry={ry}")
            _check_extent(where, height, width, cx, cy, (rx, ry))
            # VIA's theta is clockwise on screen; skimage's rotation is the opposite sense
            rr, cc = draw.ellipse(float(cy), float(cx), float(ry), float(rx), shape=shape_hw,
                                  rotation=-theta)
            mask[rr, cc] = True
        elif kind == "circle":
            cx, cy, r = _coords(s, ("cx", "cy", "r"), where)
            if r <= 0:
                raise AnnotationError(f"{where}: radius must be > 0, got r={r}")
            _check_extent(where, height, width, cx, cy, (r,))
            rr, cc = draw.disk((float(cy), float(cx)), float(r), shape=shape_hw)
            mask[rr, cc] = True
        else:
            raise AnnotationError(f"{where}: unknown shape kind {kind!r} "
                                  "(supported: polygon, ellipse, circle)")
    return mask


# --------------------------------------------------------------------- one split
@dataclass
class Sample:
    """One annotated image at native size."""
    name: str
    image: np.ndarray          # uint8 (H, W)
    mask: np.ndarray           # bool (H, W)
    kinds: list[str]


def list_split(split: str, root: str | Path | None = None) -> tuple[list[Annotation], Path]:
    """The split's annotations, checked against the image files in its folder.

    Images named in the JSON but absent raise AnnotationError. Images on disk
    that the JSON does not mention are skipped with a warning giving the count.
    """
    base = check_dataset(root, splits=(split,))
    folder = split_dir(split, base)
    jpath = annotations_path(split, base)
    anns = load_annotations(jpath)
    on_disk = set(list_images(folder))
    for a in anns:
        if a.filename not in on_disk:
            where = f"{a.filename} region 0" if a.regions else a.filename
            raise AnnotationError(f"{jpath}: {where} refers to a missing image {folder / a.filename}")
        if not a.regions:
            raise AnnotationError(f"{jpath}: {a.filename} has no regions")
    unannotated = sorted(on_disk - {a.filename for a in anns})
    if unannotated:
        msg = (f"split '{split}': skipped {len(unannotated)} image(s) not in {jpath.name}: "
               f"{', '.join(unannotated[:5])}{' ...' if len(unannotated) > 5 else ''}")
        warnings.warn(msg, stacklevel=2)
        log.warning(msg)
    anns.sort(key=lambda a: natural_key(a.filename))
    return anns, folder


def load_sample(ann: Annotation, folder: Path) -> Sample:
    image = read_grayscale(folder / ann.filename)
    mask = rasterize(ann.regions, *image.shape, source=str(folder / ann.filename))
    return Sample(ann.filename, image, mask, [r["name"] for r in ann.regions])


def iter_samples(split: str, root: str | Path | None = None):
    """Yield every annotated Sample of a split at native resolution."""
    anns, folder = list_split(split, root)
    for a in anns:
        yield load_sample(a, folder)
