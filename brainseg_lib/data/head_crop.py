"""Crop-to-head: the bounding box of the head in a scan, so that the head, not the frame around
it, fills the model's input (release lever round 7, ``params/release_levers_7.yaml``).

The rule, the same for every image, at native resolution and without labels: foreground is every
pixel above ``FOREGROUND_SHARE`` of the image's 99th-percentile intensity, opened twice with a 3x3
square; components under ``MIN_COMPONENT_SHARE`` of the image are dropped (text, markers, noise);
the box of the rest is widened by ``MARGIN`` of its height and width on each side and clipped to
the image. When that box covers under ``MIN_BOX_SHARE`` of the image (nothing found), the box is
the whole image, so a crop never loses a scan.

A box is ``(top, bottom, left, right)``, half-open: ``image[top:bottom, left:right]``.
"""
from __future__ import annotations

import numpy as np

FOREGROUND_SHARE = 0.10
MIN_COMPONENT_SHARE = 0.005
MARGIN = 0.04
MIN_BOX_SHARE = 0.05


def rule() -> dict:
    """The crop rule's constants, recorded in every cache of cropped scans so that a changed
    rule rebuilds them."""
    return {"foreground_share": FOREGROUND_SHARE, "min_component_share": MIN_COMPONENT_SHARE,
            "margin": MARGIN, "min_box_share": MIN_BOX_SHARE}


def cache_suffix(head_crop: bool) -> str:
    """The end of a cache file's stem: ``-head`` for cropped scans, nothing for whole ones."""
    return "-head" if head_crop else ""


def manifest_entry(head_crop: bool) -> dict:
    """What a cache manifest records of the crop: the rule (cropped scans) or nothing."""
    return {"head_crop": rule()} if head_crop else {}


def whole_box(shape) -> tuple[int, int, int, int]:
    return 0, int(shape[0]), 0, int(shape[1])


def head_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """The head's box of a 2-D image (see the module doc for the rule)."""
    from scipy import ndimage
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"head_box takes one 2-D image, not shape {img.shape}")
    h, w = img.shape
    level = FOREGROUND_SHARE * float(np.percentile(img, 99))
    if level <= 0:
        return whole_box(img.shape)
    fg = ndimage.binary_opening(img > level, structure=np.ones((3, 3), bool), iterations=2)
    labels, n = ndimage.label(fg, structure=np.ones((3, 3), bool))
    if n == 0:
        return whole_box(img.shape)
    sizes = np.bincount(labels.ravel())
    keep = np.flatnonzero(sizes >= MIN_COMPONENT_SHARE * h * w)
    keep = keep[keep > 0]
    rows, cols = np.nonzero(np.isin(labels, keep))
    if rows.size == 0:
        return whole_box(img.shape)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    dy, dx = MARGIN * (bottom - top), MARGIN * (right - left)
    box = (max(0, int(np.floor(top - dy))), min(h, int(np.ceil(bottom + dy))),
           max(0, int(np.floor(left - dx))), min(w, int(np.ceil(right + dx))))
    if (box[1] - box[0]) * (box[3] - box[2]) < MIN_BOX_SHARE * h * w:
        return whole_box(img.shape)
    return box


def box_share(image: np.ndarray) -> float:
    """The share of the frame the head's box covers (1.0 when no head is found)."""
    top, bottom, left, right = head_box(image)
    return (bottom - top) * (right - left) / image.size


def crop(array: np.ndarray, box) -> np.ndarray:
    """The part of a 2-D array inside ``box``."""
    top, bottom, left, right = box
    return array[top:bottom, left:right]


def paste(part: np.ndarray, box, shape) -> np.ndarray:
    """``part`` (the box's size) in an array of ``shape``, zero outside the box."""
    top, bottom, left, right = box
    if part.shape != (bottom - top, right - left):
        raise ValueError(f"a part of shape {part.shape} does not fit the box {tuple(box)}")
    out = np.zeros(tuple(shape), dtype=part.dtype)
    out[top:bottom, left:right] = part
    return out


def framed(image: np.ndarray, mask: np.ndarray | None, head_crop: bool):
    """(image, mask, box): the image and mask cropped to the head's box, or whole with the
    whole image as box when ``head_crop`` is false."""
    box = head_box(image) if head_crop else whole_box(image.shape)
    return crop(image, box), (None if mask is None else crop(mask, box)), box
