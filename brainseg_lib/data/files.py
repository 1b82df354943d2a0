"""Listing files: one natural-sort key and one folder lister for the whole project.

``natural_key`` orders names as a person would (``y2`` before ``y10``), ignoring case, with
the exact name as the tie-break so the order is total. ``list_files`` lists the regular,
non-hidden files directly in a folder (optionally only some suffixes) in that order; Br35H's
annotated and unannotated folders, the healthy scans and ``predict``'s input folders all go
through it.
"""
from __future__ import annotations

import re
from pathlib import Path

from brainseg_lib.data.images import IMAGE_SUFFIXES


def natural_key(name: str) -> tuple[list, str]:
    """Sort key: digit runs compare as numbers, letters without case; then the name itself."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)], name


def list_files(folder: str | Path, suffixes=None) -> list[Path]:
    """Regular, non-hidden files directly in ``folder`` (with a suffix in ``suffixes``, if
    given; compared without case), in natural order."""
    wanted = None if suffixes is None else {s.lower() for s in suffixes}
    files = [p for p in Path(folder).iterdir()
             if p.is_file() and not p.name.startswith(".")
             and (wanted is None or p.suffix.lower() in wanted)]
    return sorted(files, key=lambda p: natural_key(p.name))


def list_images(folder: str | Path) -> list[str]:
    """Names of the image files directly in ``folder``, in natural order (no2 before no10)."""
    return [p.name for p in list_files(folder, IMAGE_SUFFIXES)]
