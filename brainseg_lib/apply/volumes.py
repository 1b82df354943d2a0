"""Volumes for ``predict``: NIfTI files (``.nii``, ``.nii.gz``) and DICOM series
(``apply.dicom_series``) in, a NIfTI mask out, segmented slice by slice.

**Slicing.** ``--slice-axis`` names the voxel axis the volume is cut along: ``auto`` (the
default) takes the acquisition axis the header names (NIfTI ``dim_info``; a DICOM series'
stacking axis) and otherwise ``axial``; ``axial``, ``coronal`` and ``sagittal`` take the
voxel axis closest to the world's superior, anterior or right axis by the affine (a volume
without orientation, such as an identity affine, is cut along its third axis); ``0``, ``1``,
``2`` name a voxel axis directly. A slice across axis ``a`` is shown to the model with the
higher remaining voxel axis as rows and the lower as columns: for ``a = 2`` slice ``k`` is
``data[:, :, k].T``, the image a DICOM slice or a 2-D export of it shows.

**Intensities.** The model takes an 8-bit grayscale image, as ``predict`` reads a PNG. A uint8
volume is passed as it is (slice ``k`` of a uint8 NIfTI gets the mask its PNG export gets);
any other type (int16, 12-bit DICOM, float32, scaled data) is mapped per slice linearly from
its 0.5th-99.5th percentile to 0..255 and clipped (``to_uint8``), so a few hot voxels set no
scale. A flat slice maps to 0.

**Output.** ``<stem>_mask.nii.gz``: uint8 0/1, the input's shape, and for a NIfTI input the
input's own header geometry (sform, qform and their codes, zooms, units), so its affine loads
back bit for bit and a viewer (3D Slicer, ITK-SNAP, FSLeyes) overlays it as it is; for a
DICOM series the series' geometry (``dicom_series.read_series``). The header marks it a label
map and its ``dim_info`` names the slice axis. ``--overlay`` writes ``<stem>_overlay.png``, a
montage of the slices with tumour, outlined in cyan (at most ``MONTAGE_TILES``, evenly chosen, each numbered by
its slice index; the middle slice where there is none). The row of ``predictions.csv`` holds
the slice size as ``width`` x ``height``, tumour voxels in ``tumour_pixels``, and ``slices``,
``slice_axis``, ``tumour_ml`` (empty where the header gives no spatial unit),
``slices_with_tumour`` and ``largest_slice`` (the slice index with the most tumour voxels).

**Refused volumes** (one line each, an error row; the other inputs go on): unreadable or
truncated files, 4-D data, NaN or infinite voxels, a slice of more than ``--max-pixels``
pixels, more than ``--max-slices`` slices, and the series faults ``dicom_series`` lists.
"""
from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainseg_lib.apply.scans import OVERLAY_PNG_LEVEL, _fmt, _save_png, mark_nothing_found, overlay_pil
from brainseg_lib.data.errors import ImageReadError
from brainseg_lib.fileio import atomic_write

VOLUME_SUFFIXES = (".nii.gz", ".nii")
SLICE_AXES = ("auto", "axial", "coronal", "sagittal", "0", "1", "2")
PLANE_OF = {"S": "axial", "I": "axial", "A": "coronal", "P": "coronal", "R": "sagittal", "L": "sagittal"}
UNIT_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001}
WINDOW = (0.5, 99.5)                 # percentiles mapped to 0 and 255 (non-uint8 volumes)
MONTAGE_TILES, MONTAGE_COLUMNS, TILE_SIDE = 48, 8, 256


class VolumeError(ImageReadError):
    """A volume that cannot be segmented; the message says what is wrong and what to do."""


@dataclass
class Volume:
    data: np.ndarray            # 3-D, voxel axes (i, j, k)
    affine: np.ndarray          # voxel -> RAS+ world
    header: object              # the nibabel header the mask keeps (geometry)
    acquisition_axis: int | None
    voxel_ml: float | None      # mL per voxel; None where the spacing is unknown


def is_volume(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def is_volume_input(path: Path) -> bool:
    """A NIfTI file or a DICOM series (``dicom_series.SeriesPath``)."""
    from brainseg_lib.apply.dicom_series import SeriesPath
    return isinstance(path, SeriesPath) or is_volume(path)


def volume_stem(path: Path) -> str:
    """The name without ``.nii.gz`` / ``.nii``; any other file's stem (a series: its label)."""
    low = path.name.lower()
    for s in VOLUME_SUFFIXES:
        if low.endswith(s):
            return path.name[:-len(s)]
    return path.stem


def check_size(pixels: int, slices: int, max_pixels: int, max_slices: int) -> None:
    if pixels > max_pixels:
        raise VolumeError(f"{pixels:,} pixels per slice, over the limit of {max_pixels:,} (raise it "
                          "with --max-pixels if you mean it)")
    if slices > max_slices:
        raise VolumeError(f"{slices} slices, over the limit of {max_slices} (raise it with "
                          "--max-slices if you mean it)")


def geometry_header(shape: tuple, affine: np.ndarray, slice_axis: int | None = None):
    """A NIfTI-1 header for a volume of ``shape`` whose sform and qform are ``affine`` (mm)."""
    import nibabel as nib
    img = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), affine)
    h = img.header
    h.set_data_shape(shape)
    h.set_qform(affine, 1)
    h.set_sform(affine, 1)
    h.set_xyzt_units("mm")
    if slice_axis is not None:
        h.set_dim_info(slice=slice_axis)
    return h


# --------------------------------------------------------------------------------- NIfTI
def _reason(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0][:160] or type(e).__name__


def read_nifti(path: Path, slice_axis: str, max_pixels: int, max_slices: int) -> tuple[Volume, int]:
    """(the volume, the axis to cut it along), checked before and after its data is read."""
    import nibabel as nib
    try:
        img = nib.load(path)
        header = img.header
    except MemoryError:
        raise
    except Exception as e:      # nibabel and gzip raise many types for a damaged file
        raise VolumeError(f"not a readable NIfTI file ({_reason(e)}); export it again") from None
    shape = tuple(int(s) for s in img.shape)
    if len(shape) > 3 and any(s > 1 for s in shape[3:]):
        raise VolumeError(f"a {len(shape)}-D volume of shape {'x'.join(map(str, shape))}; predict "
                          "segments one 3-D volume per file: split it (e.g. fslsplit) and give the "
                          "volume you want")
    shape3 = (shape + (1, 1, 1))[:3]
    slice_dim = header.get_dim_info()[2] if hasattr(header, "get_dim_info") else None
    axis = resolve_axis(img.affine, slice_dim, slice_axis)
    check_size(math.prod(shape3) // shape3[axis], shape3[axis], max_pixels, max_slices)
    try:
        data = np.asanyarray(img.dataobj).reshape(shape3)
    except MemoryError:
        raise
    except Exception as e:      # a truncated or corrupt data block
        raise VolumeError(f"cannot read the voxels ({_reason(e)}); the file may be truncated: "
                          "export it again") from None
    return Volume(data, img.affine, header, slice_dim, voxel_ml(header)), axis


def voxel_ml(header) -> float | None:
    """mL per voxel of a NIfTI header, or None where it gives no spatial unit."""
    units = header.get_xyzt_units()[0] if hasattr(header, "get_xyzt_units") else "unknown"
    zooms = header.get_zooms()
    if units not in UNIT_MM or len(zooms) < 3:
        return None
    return math.prod(float(z) * UNIT_MM[units] for z in zooms[:3]) / 1000.0


def resolve_axis(affine, acquisition_axis: int | None, name: str) -> int:
    """The voxel axis to cut along (see the module docstring)."""
    if name in ("0", "1", "2"):
        return int(name)
    if name not in SLICE_AXES:
        raise VolumeError(f"unknown --slice-axis {name!r}; choose one of {', '.join(SLICE_AXES)}")
    if name == "auto":
        if acquisition_axis is not None:
            return int(acquisition_axis)
        name = "axial"
    import nibabel as nib
    try:
        codes = nib.orientations.aff2axcodes(affine)
    except Exception:           # a degenerate affine: no orientation to go by
        codes = (None, None, None)
    for ax, c in enumerate(codes):
        if c is not None and PLANE_OF[c] == name:
            return ax
    return 2


def plane_name(affine, axis: int) -> str:
    """``"2 (axial)"``: the axis and the plane its slices lie in, by the affine."""
    import nibabel as nib
    try:
        code = nib.orientations.aff2axcodes(affine)[axis]
    except Exception:           # a degenerate affine
        code = None
    return f"{axis} ({PLANE_OF[code]})" if code else str(axis)


# ----------------------------------------------------------------------------- segmenting
def to_uint8(plane: np.ndarray) -> np.ndarray:
    """One slice as the model's 8-bit image (see the module docstring)."""
    if plane.dtype == np.uint8:
        return np.ascontiguousarray(plane)
    a = np.asarray(plane, dtype=np.float64)
    lo, hi = np.percentile(a, WINDOW)
    if hi <= lo:
        lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def segment_planes(predictor, data: np.ndarray, axis: int, threshold: float):
    """(bool mask of ``data``'s shape, max probability, per-slice tumour counts, the (index,
    image, mask) of every slice with tumour plus the middle slice's)."""
    mask = np.zeros(data.shape, dtype=bool)
    counts, tiles, top, mid = [], [], 0.0, data.shape[axis] // 2
    for k in range(data.shape[axis]):
        index = [slice(None)] * 3
        index[axis] = k
        gray = to_uint8(data[tuple(index)].T)   # a view: np.take copied the slice with a slow gather
        prob = predictor.probabilities(gray)
        m = prob >= threshold
        mask[tuple(index)] = m.T
        counts.append(int(np.count_nonzero(m)))
        top = max(top, float(prob.max()))
        if counts[-1] or k == mid:
            tiles.append((k, gray, m))
    return mask, top, counts, tiles


def mask_bytes(mask: np.ndarray, vol: Volume, axis: int, gz: bool = True) -> bytes:
    """The mask as a NIfTI file's bytes, with ``vol``'s header geometry (module docstring)."""
    import nibabel as nib
    header = vol.header.copy()
    cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    if not isinstance(header, (nib.Nifti1Header, nib.Nifti2Header)):
        header = geometry_header(mask.shape, vol.affine)
    img = cls(mask.astype(np.uint8), None, header=header)
    img.set_data_dtype(np.uint8)
    h = img.header
    h.set_intent("label")
    h.set_dim_info(slice=axis)
    h["cal_min"], h["cal_max"], h["descrip"] = 0, 1, b"brainseg tumour mask (1 = tumour)"
    data = img.to_bytes()
    return gzip.compress(data, compresslevel=6, mtime=0) if gz else data


def montage(tiles: list) -> object:
    """The slices with tumour, outlined in cyan and numbered, on one PIL image; a volume with
    none shows its middle slice marked "no tumour found"."""
    from PIL import Image, ImageDraw
    with_tumour = [t for t in tiles if t[2].any()] or tiles[len(tiles) // 2:][:1]
    if len(with_tumour) > MONTAGE_TILES:
        pick = np.linspace(0, len(with_tumour) - 1, MONTAGE_TILES).round().astype(int)
        with_tumour = [with_tumour[i] for i in pick]
    ims = []
    for k, gray, m in with_tumour:
        im = overlay_pil(gray, m, mark_empty=False)
        im.thumbnail((TILE_SIDE, TILE_SIDE))
        if m.any():
            ImageDraw.Draw(im).text((2, 1), str(k), fill=(255, 255, 0))
        else:
            mark_nothing_found(im, f"slice {k}: no tumour found")
        ims.append(im)
    cols = min(MONTAGE_COLUMNS, math.ceil(math.sqrt(len(ims))))
    tw, th = max(i.width for i in ims), max(i.height for i in ims)
    canvas = Image.new("RGB", (cols * tw, math.ceil(len(ims) / cols) * th))
    for n, im in enumerate(ims):
        canvas.paste(im, ((n % cols) * tw, (n // cols) * th))
    return canvas


def open_volume(f: Path, slice_axis: str, max_pixels: int, max_slices: int) -> tuple[Volume, int]:
    """(the volume of a NIfTI file or DICOM series, the axis to cut along), or VolumeError."""
    if is_volume(f):
        vol, axis = read_nifti(f, slice_axis, max_pixels, max_slices)
    else:
        from brainseg_lib.apply.dicom_series import read_series
        vol = read_series(getattr(f, "files", (f,)), max_pixels, max_slices)
        axis = resolve_axis(vol.affine, vol.acquisition_axis, slice_axis)
        check_size(vol.data.size // vol.data.shape[axis], vol.data.shape[axis], max_pixels, max_slices)
    if vol.data.dtype.kind not in "biuf":
        raise VolumeError(f"voxels of type {vol.data.dtype} are not grayscale intensities; "
                          "convert the volume to one grayscale channel first")
    bad = vol.data.size - int(np.count_nonzero(np.isfinite(vol.data))) if vol.data.dtype.kind == "f" else 0
    if bad:
        raise VolumeError(f"{bad:,} voxel(s) are NaN or infinite; replace them (e.g. with 0) and "
                          "save the volume again")
    return vol, axis


def segment_volume_input(predictor, f: Path, plan, threshold: float, overlay: bool,
                         max_pixels: int) -> dict:
    """Segment one volume input, write its mask (and montage); its ``predictions.csv`` row."""
    vol, axis = open_volume(f, getattr(plan, "slice_axis", "auto"), max_pixels,
                            getattr(plan, "max_slices", 10 ** 9))
    mask, top, counts, tiles = segment_planes(predictor, vol.data, axis, threshold)
    data = mask_bytes(mask, vol, axis)
    atomic_write(plan.masks[f], lambda fh: fh.write(data))
    if overlay:
        _save_png(montage(tiles), plan.overlays[f], OVERLAY_PNG_LEVEL)
    n = int(np.count_nonzero(mask))
    h, w = tiles[0][1].shape
    return {"file": f.name, "width": w, "height": h, "tumour_pixels": n,
            "tumour_fraction": _fmt(n / mask.size), "max_prob": _fmt(top),
            "tumour": "yes" if n else "no", "status": "ok", "error": "",
            "threshold": float(threshold), "model_sha256": getattr(predictor, "sha256", ""),
            "slices": len(counts), "slice_axis": plane_name(vol.affine, axis),
            "tumour_ml": "" if vol.voxel_ml is None else _fmt(n * vol.voxel_ml),
            "slices_with_tumour": sum(c > 0 for c in counts),
            "largest_slice": int(np.argmax(counts)) if n else ""}
