"""Input and output handling of ``predict``: listing inputs, naming and planning outputs
(never overwriting without ``force``, or ``resume`` of a run whose table says what is done),
refusing oversized scans before decoding, overlays (drawn around the tumour only, written
with fast PNG compression), and CSV cells safe from formula injection.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from brainseg_lib.data import files as data_files
from brainseg_lib.data import images as data_images
from brainseg_lib.data.errors import ImageReadError
from brainseg_lib.fileio import atomic_write as _atomic_write

CSV_NAME = "predictions.csv"
CSV_COLUMNS = ["file", "width", "height", "tumour_pixels", "tumour_fraction", "max_prob",
               "tumour", "status", "error", "threshold", "model_sha256", "file_escaped",
               # volumes only (apply.volumes): empty for 2-D scans
               "slices", "slice_axis", "tumour_ml", "slices_with_tumour", "largest_slice"]
SUPPORTED_SUFFIXES = tuple(sorted(data_images.IMAGE_SUFFIXES))
MAX_PIXELS = 50_000_000    # default --max-pixels: larger scans are refused per file, before decoding
MAX_SLICES = 2_000         # default --max-slices: volumes with more slices are refused per file
# the report's colours (``report.plots``: TUMOUR, PRED): the truth in red, the prediction in cyan
TRUTH_RGB = (0xff, 0x3b, 0x30)
PRED_RGB = (0x30, 0xd5, 0xff)
OUTLINE_RGB = PRED_RGB      # the predicted outline (its older name)
NOTHING_FOUND = "no tumour found"


class PredictError(ValueError):
    """A prediction run that cannot start (bad arguments, inputs or output folder)."""


class OutputExistsError(PredictError):
    """Outputs already exist and ``force`` was not given."""




OVERLAY_PNG_LEVEL = 1      # zlib level of overlay PNGs: 2.5x faster than the default 6, ~35% larger


def _save_png(image: np.ndarray | Image.Image, path: Path, compress_level: int | None = None) -> Path:
    """Write an array or PIL image as a PNG, atomically; ``compress_level`` None is PIL's
    default (masks are always written so, byte for byte as before)."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    kw = {} if compress_level is None else {"compress_level": compress_level}
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return _atomic_write(path, lambda f: f.write(buf.getbuffer()))


# ----------------------------------------------------------------------------- inputs and outputs
def list_inputs(input_path: str | Path) -> list[Path]:
    """The file itself, or every non-hidden file directly in a folder, in natural order; the
    DICOM files among them as one input per series (``apply.dicom_series.group_series``)."""
    from brainseg_lib.apply.dicom_series import group_series
    p = Path(input_path)
    if p.is_file():
        return group_series([p], p.stem)
    if p.is_dir():
        files = data_files.list_files(p)
        if not files:
            raise PredictError(f"no files to predict in {p}")
        return group_series(files, p.resolve().name or "series")
    raise FileNotFoundError(f"input not found: {p}")


def output_stems(files: list[Path]) -> dict[Path, str]:
    """Output stem per input: its stem, or its name with '.' -> '_' where stems collide."""
    from brainseg_lib.apply.volumes import volume_stem
    counts: dict[str, int] = {}
    for f in files:
        counts[volume_stem(f).casefold()] = counts.get(volume_stem(f).casefold(), 0) + 1
    stems, used = {}, set()
    for f in files:
        s = volume_stem(f) if counts[volume_stem(f).casefold()] == 1 else f.name.replace(".", "_")
        base, i = s, 2
        while s.casefold() in used:
            s, i = f"{base}_{i}", i + 1
        used.add(s.casefold())
        stems[f] = s
    return stems


@dataclass
class Plan:
    files: list[Path]
    masks: dict[Path, Path]
    overlays: dict[Path, Path]
    csv_path: Path
    slice_axis: str = "auto"            # volumes: --slice-axis and --max-slices (apply.volumes)
    max_slices: int = MAX_SLICES
    truth_dir: Path | None = None       # --truth: masks drawn in red on the overlays

    @property
    def out_dir(self) -> Path:
        return self.csv_path.parent

    def all_outputs(self) -> list[Path]:
        return [*self.masks.values(), *self.overlays.values(), self.csv_path]


def plan_outputs(files: list[Path], out_dir: Path, overlay: bool) -> Plan:
    """Where each input's mask (``.png``; ``.nii.gz`` for a volume) and overlay go."""
    from brainseg_lib.apply.volumes import is_volume_input
    stems = output_stems(files)
    volumes = {f for f in files if is_volume_input(f)}
    images = [f for f in files if f.suffix.lower() in data_images.IMAGE_SUFFIXES or f in volumes]
    masks = {f: out_dir / f"{stems[f]}_mask.{'nii.gz' if f in volumes else 'png'}" for f in images}
    overlays = {f: out_dir / f"{stems[f]}_overlay.png" for f in images} if overlay else {}
    return Plan(files, masks, overlays, out_dir / CSV_NAME)


def check_outputs(plan: Plan, input_path: Path, out_dir: Path, force: bool, resume: bool = False) -> None:
    """Refuse outputs that would land on inputs or in the input's folder, and existing
    outputs unless ``force`` or ``resume`` (which needs the table that says what is done)."""
    if force and resume:
        raise PredictError("--force redoes every scan and --resume keeps the finished ones: choose one")
    in_folder = input_path if input_path.is_dir() else input_path.parent
    if out_dir.exists() and in_folder.resolve() == out_dir.resolve():
        raise PredictError(f"the output folder is the input folder ({out_dir}); choose another "
                           "--output, or the outputs would be read as inputs next time")
    if out_dir.exists() and not out_dir.is_dir():
        raise PredictError(f"--output {out_dir} exists and is not a folder")
    inputs = {f.resolve() for f in plan.files}
    clash = [o for o in plan.all_outputs() if o.resolve() in inputs]
    if clash:
        raise PredictError(f"an output would overwrite an input: {clash[0]}")
    existing = [o for o in plan.all_outputs() if o.exists()]
    if not existing or force or (resume and plan.csv_path.exists()):
        return
    names = ", ".join(printable(shown(o.name)) for o in existing[:5])
    more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
    if resume:
        raise OutputExistsError(
            f"--resume: {out_dir} holds {len(existing)} output file(s) ({names}{more}) but no "
            f"{CSV_NAME}, so nothing says which scans are finished; pass --force to redo them, "
            "or choose another --output.")
    raise OutputExistsError(
        f"refusing to overwrite {len(existing)} existing output file(s) in {out_dir}: "
        f"{names}{more}. Pass --resume to finish an interrupted run (scans with a mask and an "
        "'ok' row are kept), --force to redo every scan, or choose another --output.")


def outline(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The tumour outline of ``mask`` as (bool array, (top, left)): the outline pixels within
    the mask's bounding box grown by the outline's width, placed at (top, left) of the image;
    None for an empty mask.

    The outline is the mask's inner boundary (a mask pixel with a background pixel among its
    4 neighbours; the image edge counts as background), thickened to about 1 pixel per 256
    pixels of the shorter side by a running maximum along each axis. Only the box around the
    tumour is examined, so a small tumour on a huge scan costs little; the result is the
    same as over the whole image (outside the box there is no outline pixel to spread).
    """
    m = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m[rows[0]:rows[-1] + 1].any(axis=0))
    width = max(1, round(min(m.shape) / 256))
    grow = width - 1
    top, left = max(int(rows[0]) - grow, 0), max(int(cols[0]) - grow, 0)
    crop = m[top:int(rows[-1]) + grow + 1, left:int(cols[-1]) + grow + 1]
    p = np.pad(crop, 1)
    interior = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    edge = crop & ~interior
    return _spread(_spread(edge, grow, axis=0), grow, axis=1), (top, left)


def _spread(a: np.ndarray, reach: int, axis: int) -> np.ndarray:
    """Each element of bool ``a`` OR-ed with its neighbours up to ``reach`` away along
    ``axis`` (a running maximum over 2 * reach + 1; nothing beyond the ends), in about
    log2(reach) array passes (no scipy import: it costs half a second per run)."""
    out, span = np.moveaxis(a, axis, 0), 0
    while span < reach:
        step = min(span + 1, reach - span)       # covers [i - span - step, i + span + step]
        new = out.copy()
        new[step:] |= out[:-step]
        new[:-step] |= out[step:]
        out, span = new, span + step
    return np.moveaxis(out, 0, axis)


def _paste_outline(rgb: Image.Image, mask: np.ndarray, color) -> bool:
    """Draw the outline of ``mask`` on ``rgb`` in ``color``; False for an empty mask."""
    found = outline(mask)
    if found is None:
        return False
    edge, (top, left) = found
    stamp = Image.fromarray(edge.view(np.uint8) * np.uint8(255))
    rgb.paste(tuple(color), (left, top, left + edge.shape[1], top + edge.shape[0]), stamp)
    return True


def mark_nothing_found(rgb: Image.Image, text: str = NOTHING_FOUND) -> Image.Image:
    """Write ``text`` in the prediction's colour on a black banner framed in that colour at the
    top left of ``rgb`` (in place), its font scaled to the image: a scan where the model found
    nothing says so, instead of looking like an overlay that failed to draw. A scan under 16
    pixels a side, too small for words, gets a frame in that colour instead."""
    from PIL import ImageDraw, ImageFont
    w, h = rgb.size
    draw = ImageDraw.Draw(rgb)
    if min(w, h) < 16:
        draw.rectangle((0, 0, w - 1, h - 1), outline=PRED_RGB)
        return rgb
    size = max(6, min(w, h) // 14)
    while True:
        font = ImageFont.load_default(size=size)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        if x1 - x0 + size <= w - 2 or size <= 6:
            break
        size -= 1
    pad = max(1, size // 3)
    box = (1, 1, min(w - 2, x1 - x0 + 2 * pad + 1), min(h - 2, y1 + 2 * pad + 1))
    draw.rectangle(box, fill=(0, 0, 0), outline=PRED_RGB, width=max(1, size // 10))
    draw.text((1 + pad - x0, 1 + pad), text, font=font, fill=PRED_RGB)
    return rgb


def overlay_pil(gray: np.ndarray, mask: np.ndarray, color=OUTLINE_RGB, truth: np.ndarray | None = None,
                mark_empty: bool = True) -> Image.Image:
    """The scan as an RGB PIL image in the report's colours: the outline (``outline``) of the
    ``truth`` mask, if given, in red (``TRUTH_RGB``), then the predicted ``mask``'s in ``color``
    (cyan, ``PRED_RGB``); an empty ``mask`` gets the "no tumour found" banner unless
    ``mark_empty`` is False (``mark_nothing_found``)."""
    rgb = Image.fromarray(np.asarray(gray, dtype=np.uint8)).convert("RGB")
    if truth is not None:
        _paste_outline(rgb, truth, TRUTH_RGB)
    if not _paste_outline(rgb, mask, color) and mark_empty:
        mark_nothing_found(rgb)
    return rgb


def overlay_image(gray: np.ndarray, mask: np.ndarray, color=OUTLINE_RGB, truth: np.ndarray | None = None,
                  mark_empty: bool = True) -> np.ndarray:
    """``overlay_pil`` as a uint8 H x W x 3 array."""
    return np.array(overlay_pil(gray, mask, color, truth, mark_empty))


def truth_path(truth_dir: Path, f: Path) -> Path | None:
    """The truth mask of input ``f`` in ``truth_dir``: ``<stem>_mask.png``, ``<stem>.png`` or a
    file of the input's own name, the first that exists; None when there is none."""
    for name in (f"{f.stem}_mask.png", f"{f.stem}.png", f.name):
        p = truth_dir / name
        if p.is_file() and p.resolve() != f.resolve():
            return p
    return None


def read_truth(truth_dir: Path | None, f: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The truth mask of ``f`` (any pixel above 0 is tumour) at the scan's ``shape``, or None
    without ``truth_dir`` or a mask for ``f``; ImageReadError when its size differs."""
    p = truth_path(truth_dir, f) if truth_dir is not None else None
    if p is None:
        return None
    m = data_images.read_grayscale(p, as_displayed=True) > 0
    if m.shape != tuple(shape):
        raise ImageReadError(f"the truth mask {p} is {m.shape[1]}x{m.shape[0]} but the scan is "
                             f"{shape[1]}x{shape[0]}; give a mask of the scan's size")
    return m


CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """A CSV cell that a spreadsheet will not run as a formula: text starting with = + - @,
    tab or carriage return gets a leading apostrophe (OWASP, CSV injection)."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START):
        return "'" + value
    return value


def shown(text) -> str:
    """``text`` as valid UTF-8: bytes of a file name that were not UTF-8 (Python's surrogate
    escapes, as in ``os.fsdecode``) as ``\\xNN``."""
    text = str(text)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:          # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def printable(text: str) -> str:
    """``text`` with control characters (terminal escape codes among them) shown as escapes."""
    return "".join(ch if ch.isprintable() else
                   (f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}") for ch in str(text))


def _fmt(x: float) -> float:
    return float(f"{x:.6g}")


def check_pixels(path: Path, max_pixels: int) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` pixels, before decoding
    it (a small PNG can hold a huge image)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:          # unreadable files are reported by read_grayscale with the reason
        return
    if w * h > max_pixels:
        raise ImageReadError(f"{path} is {w}x{h} = {w * h / 1e6:.1f} megapixels, over the limit of "
                                  f"{max_pixels / 1e6:g} (raise it with --max-pixels if you mean it)")
