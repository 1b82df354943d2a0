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

import hashlib
import json
import logging
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from skimage import draw

from . import paths
from .fileio import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

ANNOTATED_DIR = "Br35H-Mask-RCNN"
SPLITS = ("train", "val", "test")
SPLIT_FOLDERS = {"train": "TRAIN", "val": "VAL", "test": "TEST"}
EXPECTED_COUNTS = {"train": 500, "val": 201, "test": 100}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
CACHE_VERSION = 2

HOW_TO_GET = (
    "Get Br35H (Brain Tumor Detection 2020) from Kaggle "
    "'ahmedhamada0/brain-tumor-detection' "
    "(kaggle datasets download -d ahmedhamada0/brain-tumor-detection), or from the "
    "author's GitHub repository 'AhmedHamada0/Brain-Tumor-Detection-Dataset'. "
    "Unpack it so that <folder>/Br35H-Mask-RCNN/TRAIN/annotations_train.json exists, "
    "then set BRAINSEG_DATA=<folder> (default: data/br35h inside the project)."
)


class DataError(RuntimeError):
    """Base class of every data problem this module reports."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The dataset folder, a split folder or an annotation file is missing."""


class AnnotationError(DataError, ValueError):
    """An annotation file or region cannot be used."""


class ImageReadError(DataError, OSError):
    """An image file is missing, unreadable or corrupt."""


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


# --------------------------------------------------------------------- images
def read_grayscale(path: str | Path, as_displayed: bool = False) -> np.ndarray:
    """Read any supported image as a 2-D uint8 array, or raise ImageReadError naming it.

    ``as_displayed`` (``predict``'s reading of a user's scan): the EXIF orientation is
    applied, so the array (and the mask drawn on it) is the image as a viewer shows it, and a
    file holding several frames (multi-page TIFF, animated PNG or GIF) is refused with the
    frame count, instead of silently segmenting frame 0.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise ImageReadError(f"image file is empty (0 bytes): {path}")
    try:
        with Image.open(path) as im:
            if as_displayed:
                frames = getattr(im, "n_frames", 1)
                if frames > 1 and im.format != "MPO":      # MPO: a camera JPEG with a preview
                    raise ImageReadError(f"{path} holds {frames} frames ({im.format}); segment one "
                                         "image per file (split the frames first)")
                im.load()
                from PIL import ImageOps
                return _to_gray_u8(ImageOps.exif_transpose(im))
            im.load()
            return _to_gray_u8(im)
    except PermissionError as e:
        raise ImageReadError(f"cannot read {path}: permission denied") from e
    except UnidentifiedImageError as e:
        raise ImageReadError(f"not a readable image (unknown or corrupt format): {path}") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"cannot decode image {path}: {e} (truncated or corrupt file?)") from e


REDUCED_DECODE_MIN_SIDE = 2048   # scans with a shorter side above this may be decoded reduced


def read_for_prediction(path: str | Path, reduce_to: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """(image as displayed, its native (height, width)) for ``predict``. With ``reduce_to``,
    a JPEG whose shorter side exceeds both 4 x ``reduce_to`` and ``REDUCED_DECODE_MIN_SIDE``
    (larger than any Br35H scan, so the study's own checks are unaffected) is decoded at a
    reduced scale (PIL's ``draft``, which
    decodes 1/2, 1/4 or 1/8 of the pixels), since the model sees ``reduce_to`` x ``reduce_to``
    anyway; the native size is still the one the mask is written at. Other formats are
    decoded in full."""
    path = Path(path)
    if reduce_to:
        try:
            with Image.open(path) as im:
                w0, h0 = im.size
                if im.format == "JPEG" and min(w0, h0) > max(4 * reduce_to, REDUCED_DECODE_MIN_SIDE):
                    swap = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
                    im.draft("L", (max(2 * reduce_to, w0 // 8), max(2 * reduce_to, h0 // 8)))
                    im.load()
                    from PIL import ImageOps
                    return _to_gray_u8(ImageOps.exif_transpose(im)), ((w0, h0) if swap else (h0, w0))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            pass        # read_grayscale below reports the problem with its reason
    image = read_grayscale(path, as_displayed=True)
    return image, image.shape


def _to_gray_u8(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("L",):
        return np.asarray(im, dtype=np.uint8).copy()
    if mode.startswith("I;16"):
        a = np.asarray(im).astype(np.float64)
        return np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
    if mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if not np.isfinite(lo) or not np.isfinite(hi):
            raise ValueError("image holds non-finite values")
        scale = (hi - lo) or 1.0
        return np.clip(np.rint((a - lo) / scale * 255.0), 0, 255).astype(np.uint8)
    if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBA", "RGBX", "LA", "1", "RGB"):
        if mode not in ("RGB", "LA", "1"):
            im = im.convert("RGB")
        return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    raise ValueError(f"unsupported image mode {mode!r}")


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear (anti-aliased when shrinking) resize of a uint8 image to size x size."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a binary mask by coverage >= 0.5 (see the module docstring); returns uint8 0/1."""
    cover = np.asarray(Image.fromarray(mask.astype(np.float32), mode="F")
                       .resize((size, size), Image.BILINEAR))
    out = cover >= 0.5
    if mask.any() and not out.any():
        out.flat[int(np.argmax(cover))] = True
    return out.astype(np.uint8)


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
    on_disk = {p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
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
    anns.sort(key=lambda a: _natural_key(a.filename))
    return anns, folder


def _natural_key(name: str):
    import re
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def load_sample(ann: Annotation, folder: Path) -> Sample:
    image = read_grayscale(folder / ann.filename)
    mask = rasterize(ann.regions, *image.shape, source=str(folder / ann.filename))
    return Sample(ann.filename, image, mask, [r["name"] for r in ann.regions])


def iter_samples(split: str, root: str | Path | None = None):
    """Yield every annotated Sample of a split at native resolution."""
    anns, folder = list_split(split, root)
    for a in anns:
        yield load_sample(a, folder)


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

    def __len__(self) -> int:
        return len(self.names)

    def concat(self, other: "SplitArrays") -> "SplitArrays":
        """This split followed by ``other`` (same size), under this split's label."""
        if other.size != self.size:
            raise ValueError(f"cannot join arrays of size {self.size} and {other.size}")
        return SplitArrays(self.split, self.size, np.concatenate([self.images, other.images]),
                           np.concatenate([self.masks, other.masks]), self.names + other.names,
                           np.concatenate([self.native_hw, other.native_hw]),
                           np.concatenate([self.native_tumour_fraction, other.native_tumour_fraction]))

    def head(self, n: int | None) -> "SplitArrays":
        """The first n images (all when n is None or larger than the split)."""
        if n is None or n >= len(self):
            return self
        return SplitArrays(self.split, self.size, self.images[:n], self.masks[:n], self.names[:n],
                           self.native_hw[:n], self.native_tumour_fraction[:n])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(split: str, size: int, anns: list[Annotation], folder: Path, jpath: Path) -> dict:
    return {
        "version": CACHE_VERSION,
        "split": split,
        "size": size,
        "annotations": {jpath.name: sha256_file(jpath)},
        "files": {a.filename: sha256_file(folder / a.filename) for a in anns},
    }


def cache_path(split: str, size: int) -> Path:
    return paths.cache_dir() / f"br35h-{split}-{size}.npz"


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
                               z["native_tumour_fraction"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        log.warning("cache %s unreadable (%s); rebuilding", path, e)
        return None


def load_split(split: str, size: int, root: str | Path | None = None, use_cache: bool = True,
               progress: bool | None = None) -> SplitArrays:
    """Load a split resized to ``size``, from the checksummed cache when it is current."""
    from .progress import progress_bar
    anns, folder = list_split(split, root)
    jpath = annotations_path(split, data_root(root) if root is not None else None)
    manifest = _manifest(split, size, anns, folder, jpath)
    cpath = cache_path(split, size)
    if use_cache and cpath.is_file():
        cached = _read_cache(cpath, manifest)
        if cached is not None:
            return cached
    n = len(anns)
    images = np.zeros((n, size, size), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    native_hw = np.zeros((n, 2), np.int64)
    frac = np.zeros(n, np.float64)
    for i, a in enumerate(progress_bar(anns, desc=f"preparing {split}@{size}",
                                        disable=None if progress is None else not progress)):
        s = load_sample(a, folder)
        images[i] = resize_image(s.image, size)
        masks[i] = resize_mask(s.mask, size)
        native_hw[i] = s.image.shape
        frac[i] = s.mask.mean()
    out = SplitArrays(split, size, images, masks, [a.filename for a in anns], native_hw, frac)
    if use_cache:
        write_cache(cpath, out, manifest)
    return out


def write_cache(cpath: Path, arrays: SplitArrays, manifest: dict) -> None:
    """Write ``arrays`` and the manifest of what they were made from (``_read_cache`` reads
    them back only while the manifest still matches), atomically."""
    _atomic_savez(cpath, images=arrays.images, masks=arrays.masks, names=np.array(arrays.names),
                  native_hw=arrays.native_hw, native_tumour_fraction=arrays.native_tumour_fraction,
                  manifest=np.array(json.dumps(manifest)))
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


def load_named(names: list[str], size: int, label: str, root=None) -> SplitArrays:
    """Images from any official split, selected by file name and kept in the given order
    (for re-drawn splits such as the grouped split). Uses the per-split caches."""
    parts = {s: load_split(s, size, root=root) for s in SPLITS}
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
                       take("native_hw"), take("native_tumour_fraction"))


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
