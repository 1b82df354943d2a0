"""Histogram standardisation of a scan's head to a reference (Nyul & Udupa 1999, in the
piecewise-linear form torchio's ``HistogramStandardization`` uses), for issue 24's external sets.

A scan from another scanner or sequence puts the same tissue at other grey levels. Each scan's
*landmarks* are percentiles (``LEVELS``) of its head pixels (those above ``intensity.HEAD_LEVEL``
of the uint8 range); the *reference* is the mean landmark vector of a set of scans (Br35H TRAIN,
as the model saw it). ``standardise`` maps each head pixel piecewise-linearly from the scan's
landmarks to the reference's, from the head level up to 255, so the mapping is monotone (a bright
tumour stays brighter than its tissue) and the background is left as it is.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from brainseg_lib.data.intensity import HEAD_LEVEL

LEVELS = (1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99)   # percentiles of the head pixels
HEAD_U8 = HEAD_LEVEL * 255.0                            # a uint8 pixel above this is head
_STEP = 1e-3                                            # keeps the knots strictly increasing


def head_landmarks(images_u8: np.ndarray) -> np.ndarray:
    """(N, len(LEVELS)) percentiles of each uint8 image's head pixels; NaN for an image with none."""
    images = np.asarray(images_u8)
    out = np.full((len(images), len(LEVELS)), np.nan)
    for i, img in enumerate(images):
        head = img[img > HEAD_U8]
        if head.size:
            out[i] = np.percentile(head.astype(np.float64), LEVELS)
    return out


def reference_landmarks(images_u8: np.ndarray) -> np.ndarray:
    """The mean landmarks of the images that have a head (``head_landmarks``); refused when none has."""
    marks = head_landmarks(images_u8)
    kept = marks[~np.isnan(marks).any(axis=1)]
    if not len(kept):
        raise ValueError("no image has pixels above the head level: no reference landmarks")
    return kept.mean(axis=0)


def _knots(landmarks: np.ndarray) -> np.ndarray:
    """The head level, the landmarks, 255: strictly increasing (ties moved up by ``_STEP``)."""
    knots = np.concatenate([[HEAD_U8], np.clip(landmarks, HEAD_U8, 255.0), [255.0]])
    for i in range(1, len(knots)):
        knots[i] = max(knots[i], knots[i - 1] + _STEP)
    return knots


def standardise(images_u8: np.ndarray, reference) -> np.ndarray:
    """Each uint8 image (N, H, W) with its head pixels mapped from its own landmarks to
    ``reference`` (module doc); an image without head pixels comes back unchanged."""
    images = np.asarray(images_u8)
    if images.dtype != np.uint8:
        raise ValueError(f"standardise takes uint8 images, got {images.dtype}")
    ref = np.asarray(reference, dtype=np.float64)
    if ref.shape != (len(LEVELS),) or not np.isfinite(ref).all():
        raise ValueError(f"reference landmarks must be {len(LEVELS)} finite values (LEVELS), got {ref.shape}")
    target = _knots(ref)
    out = images.copy()
    for img, dest in zip(images, out):
        head = img > HEAD_U8
        if not head.any():
            continue
        values = img[head].astype(np.float64)
        mapped = np.interp(values, _knots(np.percentile(values, LEVELS)), target)
        dest[head] = np.clip(np.rint(mapped), 0, 255).astype(np.uint8)
    return out


def standardised_to_own_mean(arrays):
    """(the mean landmarks of ``arrays``' images in [0, 1], ``arrays`` with every image
    standardised to them): what a model with ``input_norm: nyul_zscore`` trains on
    (``model.histogram_norm``). ``arrays``: a ``SplitArrays``, left as it is."""
    ref = reference_landmarks(arrays.images)
    return ref / 255.0, dataclasses.replace(arrays, images=standardise(arrays.images, ref))
