"""Input and output handling of ``predict``: listing inputs, naming and planning outputs
(never overwriting without ``force``), refusing oversized scans before decoding, overlays,
and CSV cells safe from formula injection.
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
               "tumour", "status", "error"]
SUPPORTED_SUFFIXES = tuple(sorted(data_images.IMAGE_SUFFIXES))
MAX_PIXELS = 50_000_000    # default --max-pixels: larger scans are refused per file, before decoding
OUTLINE_RGB = (255, 0, 0)


class PredictError(ValueError):
    """A prediction run that cannot start (bad arguments, inputs or output folder)."""


class OutputExistsError(PredictError):
    """Outputs already exist and ``force`` was not given."""




def _save_png(array: np.ndarray, path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return _atomic_write(path, lambda f: f.write(buf.getvalue()))


# ----------------------------------------------------------------------------- inputs and outputs
def list_inputs(input_path: str | Path) -> list[Path]:
    """The file itself, or every non-hidden file directly in a folder, in natural order."""
    p = Path(input_path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = data_files.list_files(p)
        if not files:
            raise PredictError(f"no files to predict in {p}")
        return files
    raise FileNotFoundError(f"input not found: {p}")


def output_stems(files: list[Path]) -> dict[Path, str]:
    """Output stem per input: its stem, or its name with '.' -> '_' where stems collide."""
    counts: dict[str, int] = {}
    for f in files:
        counts[f.stem.casefold()] = counts.get(f.stem.casefold(), 0) + 1
    stems, used = {}, set()
    for f in files:
        s = f.stem if counts[f.stem.casefold()] == 1 else f.name.replace(".", "_")
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

    def all_outputs(self) -> list[Path]:
        return [*self.masks.values(), *self.overlays.values(), self.csv_path]


def plan_outputs(files: list[Path], out_dir: Path, overlay: bool) -> Plan:
    stems = output_stems(files)
    images = [f for f in files if f.suffix.lower() in data_images.IMAGE_SUFFIXES]
    masks = {f: out_dir / f"{stems[f]}_mask.png" for f in images}
    overlays = {f: out_dir / f"{stems[f]}_overlay.png" for f in images} if overlay else {}
    return Plan(files, masks, overlays, out_dir / CSV_NAME)


def check_outputs(plan: Plan, input_path: Path, out_dir: Path, force: bool) -> None:
    """Refuse outputs that would land on inputs or in the input's folder, and existing
    outputs unless ``force``."""
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
    if existing and not force:
        shown = ", ".join(o.name for o in existing[:5])
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        raise OutputExistsError(
            f"refusing to overwrite {len(existing)} existing output file(s) in {out_dir}: "
            f"{shown}{more}. Pass --force to overwrite them, or choose another --output.")


def overlay_image(gray: np.ndarray, mask: np.ndarray, color=OUTLINE_RGB) -> np.ndarray:
    """The scan as RGB with the mask's outline drawn in ``color`` (uint8 H x W x 3).

    The outline is the mask's inner boundary (a mask pixel with a background pixel among its
    4 neighbours; the image edge counts as background), thickened to about 1 pixel per 256
    pixels of the shorter side by a running maximum along each axis. Every step is an array
    operation whose time is linear in the number of pixels (a 5000x5000 scan takes well
    under a second).
    """
    from scipy.ndimage import maximum_filter1d
    m = np.asarray(mask, dtype=bool)
    p = np.pad(m, 1)
    interior = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    edge = m & ~interior
    width = max(1, round(min(m.shape) / 256))
    if width > 1 and edge.any():
        size = 2 * (width - 1) + 1
        edge = maximum_filter1d(maximum_filter1d(edge.view(np.uint8), size, axis=0), size, axis=1).astype(bool)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgb[edge] = color
    return rgb


CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """A CSV cell that a spreadsheet will not run as a formula: text starting with = + - @,
    tab or carriage return gets a leading apostrophe (OWASP, CSV injection)."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START):
        return "'" + value
    return value


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
