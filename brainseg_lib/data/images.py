"""Reading images: any JPEG/PNG/TIFF/BMP as one uint8 grayscale channel (EXIF orientation
applied, 16-bit and palette modes handled), reduced decoding for huge scans, and resizing
images (bilinear) and masks (nearest) to the model's input size.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from brainseg_lib.data.errors import ImageReadError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}


# --------------------------------------------------------------------- images
# what PIL raises for a file it cannot decode (truncated, corrupt, a decompression bomb)
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


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
    except DECODE_ERRORS as e:
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
