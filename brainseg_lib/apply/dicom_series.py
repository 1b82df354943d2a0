"""DICOM series for ``predict``: the DICOM files of an input folder grouped into series, each
series checked and stacked into one volume with its geometry.

A folder's DICOM files (suffix ``.dcm``, ``.dicom`` or ``.ima``, or no known suffix and the
``DICM`` marker at byte 128) are grouped by SeriesInstanceUID; each series is one input of the
run (``SeriesPath``: named after the folder, plus ``_series<SeriesNumber>`` where the folder
holds several), in place of its files. A series is read with pydicom and refused, with one
line naming the file and the fault, when a file is not an image (a structured report, SR), a
file cannot be read or decoded, its images differ in size, orientation or pixel spacing
(a mix of acquisitions), two slices sit at one position, a slice is missing (a gap of 1.5
slice steps or more) or the slice spacing is otherwise uneven (beyond 1 % and 0.01 mm).

Slices are ordered by their position along the slice normal (ImageOrientationPatient x
ImagePositionPatient), never by file name or InstanceNumber, so a shuffled folder and an
oblique acquisition stack correctly. The volume's voxel (i, j, k) is column i, row j of slice k
(as ``dcm2niix`` lays it out) and its affine maps it to RAS+ millimetres: DICOM's LPS patient
coordinates with the first two axes negated. Stored values are rescaled by RescaleSlope and
RescaleIntercept; MONOCHROME1 is inverted so that bright means bright.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from brainseg_lib.apply.volumes import Volume, VolumeError, check_size, geometry_header

DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
GAP_MISSING = 1.5          # a gap of this many slice steps or more: a slice is missing
SPACING_RTOL, SPACING_ATOL = 0.01, 0.01


class SeriesPath(type(Path())):
    """One DICOM series as one input: a path named ``<folder>/<label>`` (no such file) whose
    ``files`` are the series' DICOM files."""
    files: tuple = ()


def is_dicom(path: Path) -> bool:
    """A DICOM file by its suffix, or (no image or volume suffix) by the ``DICM`` marker."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    from brainseg_lib.apply.volumes import is_volume
    from brainseg_lib.data.images import IMAGE_SUFFIXES
    if path.suffix.lower() in IMAGE_SUFFIXES or is_volume(path):
        return False
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "series"


def group_series(files: list[Path], name: str) -> list[Path]:
    """``files`` with their DICOM files replaced by one ``SeriesPath`` per series, at the
    place of the series' first file; ``name`` (the folder's name) names the series."""
    dicoms = [f for f in files if is_dicom(f)]
    if not dicoms:
        return files
    import pydicom  # noqa: F401  (fails here, once, when pydicom is missing)
    groups, numbers, uid_of = {}, {}, {}
    for f in dicoms:
        uid, number = _series_uid(f)
        uid_of[f] = uid
        groups.setdefault(uid, []).append(f)
        numbers.setdefault(uid, number)
    labels, used = {}, set()
    for k, uid in enumerate(groups):
        number = numbers[uid]
        if uid.startswith("no-uid:"):           # not parsed, or no UID: named after its file
            label = _label(groups[uid][0].stem)
        else:
            label = _label(name) if len(groups) == 1 else _label(f"{name}_series{number or k + 1}")
        while label.casefold() in used:
            label = f"{label}_{k + 1}"
        used.add(label.casefold())
        labels[uid] = label
    out, placed = [], set()
    for f in files:
        if f not in uid_of:
            out.append(f)
            continue
        uid = uid_of[f]
        if uid not in placed:
            sp = SeriesPath(f.parent / labels[uid])
            sp.files = tuple(groups[uid])
            out.append(sp)
            placed.add(uid)
    return out


def _header(f: Path, tags=("SeriesInstanceUID", "SeriesNumber")):
    import pydicom
    try:
        return pydicom.dcmread(f, stop_before_pixels=True, force=True, specific_tags=list(tags))
    except Exception:           # pydicom raises many types for a damaged file
        return None


def _series_uid(f: Path) -> tuple[str, str]:
    """(SeriesInstanceUID, SeriesNumber) of a file; a file without a UID is a series of its own."""
    ds = _header(f)
    uid = str(ds.get("SeriesInstanceUID", "") or "") if ds is not None else ""
    number = str(ds.get("SeriesNumber", "") or "") if ds is not None else ""
    return uid or f"no-uid:{f.name}", number


# ------------------------------------------------------------------------------- reading
def _read_all(files: tuple, max_slices: int, max_pixels: int):
    import pydicom
    if len(files) > max_slices:
        raise VolumeError(f"{len(files)} slices, over the limit of {max_slices} (raise it with "
                          "--max-slices if you mean it)")
    out = []
    for f in files:
        try:
            ds = pydicom.dcmread(f)
        except Exception as e:      # pydicom raises many types for a damaged file
            raise VolumeError(f"{f.name} is not a readable DICOM file ({_reason(e)}); remove it or "
                              "export the series again") from None
        if not any(t in ds for t in ("PixelData", "SOPClassUID", "Modality")):
            raise VolumeError(f"{f.name} is not a readable DICOM file (no SOP class, modality or "
                              "pixel data); remove it or export the series again")
        if "PixelData" not in ds:
            kind = ds.get("Modality", "") or "no modality"
            sop = getattr(ds.get("SOPClassUID", None), "name", "") or "unknown SOP class"
            raise VolumeError(f"{f.name} is not an image ({kind}, {sop}): it holds no pixel data; "
                              "move reports and other non-image files out of the series folder")
        if int(ds.get("SamplesPerPixel", 1)) != 1 or int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise VolumeError(f"{f.name} is a colour or multi-frame image; predict reads "
                              "single-frame grayscale slices (split or convert the series first)")
        check_size(int(ds.Rows) * int(ds.Columns), 1, max_pixels, 10 ** 9)
        out.append((f, ds))
    return out


def _reason(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:160] or type(e).__name__


def _same(items, key, what: str) -> None:
    """VolumeError when the slices' ``key`` values differ (a mix of acquisitions)."""
    first_f, first = items[0][0], key(items[0][1])
    for f, ds in items[1:]:
        v = key(ds)
        if (first is None) != (v is None) or (v is not None and not np.allclose(v, first, atol=1e-4)):
            raise VolumeError(f"mixed images in one series: {f.name} has {what} {v}, {first_f.name} "
                              f"has {first}; put each acquisition in its own folder")


def _floats(ds, tag):
    v = ds.get(tag, None)
    return None if v is None else [float(x) for x in v]


def _order(items) -> tuple[list, np.ndarray, np.ndarray, float]:
    """(slices in order along the normal, row cosine, column cosine, slice step in mm)."""
    iop = _floats(items[0][1], "ImageOrientationPatient")
    if iop is None or any(_floats(ds, "ImagePositionPatient") is None for _, ds in items):
        if len(items) > 1:
            raise VolumeError("the slices carry no ImageOrientationPatient/ImagePositionPatient, so "
                              "their order and spacing are unknown; export the series with its geometry")
        thick = float(items[0][1].get("SliceThickness", 0) or 0)
        return items, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), thick or 1.0
    x, y = np.array(iop[:3]), np.array(iop[3:])
    normal = np.cross(x, y)
    pos = np.array([np.dot(_floats(ds, "ImagePositionPatient"), normal) for _, ds in items])
    order = np.argsort(pos, kind="stable")
    items, pos = [items[i] for i in order], pos[order]
    if len(items) < 2:
        return items, x, y, float(items[0][1].get("SliceThickness", 0) or 1.0)
    _check_gaps(items, np.diff(pos))
    return items, x, y, float(np.median(np.diff(pos)))


def _check_gaps(items, gaps: np.ndarray) -> None:
    step = float(np.median(gaps))
    if np.min(gaps) < 1e-3:
        k = int(np.argmin(gaps))
        raise VolumeError(f"{items[k][0].name} and {items[k + 1][0].name} lie at the same position: "
                          "the series mixes acquisitions (echoes or time points); put each in its own folder")
    if np.max(gaps) >= GAP_MISSING * step:
        k = int(np.argmax(gaps))
        raise VolumeError(f"missing slice(s): a gap of {gaps[k]:.3g} mm between {items[k][0].name} and "
                          f"{items[k + 1][0].name}, where the slices are {step:.3g} mm apart; "
                          "export the whole series again")
    if np.max(np.abs(gaps - step)) > SPACING_RTOL * step + SPACING_ATOL:
        raise VolumeError(f"inconsistent slice spacing: gaps from {gaps.min():.4g} to {gaps.max():.4g} mm; "
                          "predict needs evenly spaced slices (resample the series first)")


def _pixels(f: Path, ds) -> np.ndarray:
    try:
        a = ds.pixel_array
    except Exception as e:      # a missing decoder, truncated pixel data, ...
        raise VolumeError(f"cannot decode the pixels of {f.name} ({_reason(e)}); for a compressed "
                          "series install pylibjpeg (pip install pylibjpeg pylibjpeg-libjpeg) or "
                          "decompress it first") from None
    slope = float(ds.get("RescaleSlope", 1) or 1)
    inter = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1 or inter != 0:
        a = a.astype(np.float32) * np.float32(slope) + np.float32(inter)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        a = a.max() - a
    return a


def read_series(files: tuple, max_pixels: int, max_slices: int) -> Volume:
    """The series of ``files`` as a Volume (voxel (column, row, slice), RAS+ affine in mm), or
    VolumeError with the one-line reason."""
    items = _read_all(files, max_slices, max_pixels)
    _same(items, lambda ds: [int(ds.Rows), int(ds.Columns)], "rows x columns")
    _same(items, lambda ds: _floats(ds, "ImageOrientationPatient"), "orientation")
    _same(items, lambda ds: _floats(ds, "PixelSpacing"), "pixel spacing")
    items, x, y, step = _order(items)
    planes = [_pixels(f, ds) for f, ds in items]
    dtype = np.result_type(*planes)
    data = np.stack([p.astype(dtype, copy=False).T for p in planes], axis=-1)
    spacing = _floats(items[0][1], "PixelSpacing") or [1.0, 1.0]
    first = np.array(_floats(items[0][1], "ImagePositionPatient") or [0.0, 0, 0])
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1] = x * spacing[1], y * spacing[0]
    last = _floats(items[-1][1], "ImagePositionPatient")
    affine[:3, 2] = (np.array(last) - first) / (len(items) - 1) if len(items) > 1 and last else \
        np.cross(x, y) * step
    affine[:3, 3] = first
    affine[:2] *= -1                                   # LPS -> RAS
    header = geometry_header(data.shape, affine, slice_axis=2)
    return Volume(data, header.get_best_affine(), header, 2,
                  abs(spacing[0] * spacing[1] * step) / 1000.0)
