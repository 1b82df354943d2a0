"""``build-external``: the external test set, rebuilt from the published TCGA-LGG slices.

The study's external set (``external.py``) is 1,019 FLAIR slices of 88 patients from Buda et
al. 2019, as published on Kaggle (``mateuszbuda/lgg-mri-segmentation``, folder ``kaggle_3m``:
``<patient>/<patient>_<k>.tif``, three channels (pre-contrast, FLAIR, post-contrast), and
``<patient>/<patient>_<k>_mask.tif``, 0/255). ``references/lgg_external.csv`` names every
slice, its patient and its half (``dev`` or ``test``, split by patient), its tumour pixel
count and the SHA-256 of its image's and mask's decoded pixels (uint8, row-major).

The build takes the FLAIR channel of each named slice and its mask, writes them as 8-bit
grayscale PNGs in the layout of ``external.py`` with ``manifest.csv``, and checks every
slice's pixels against the reference before the folder is moved into place. Pixels, not
file bytes, are compared: another PNG encoder writes other bytes for the same image. A
slice that differs stops the build, naming it; nothing partial is left at ``dest``.

The selection itself (which patients, which slices) is the reference file's: up to 8 tumour
slices per patient, evenly spaced, and up to 4 clean slices that show brain, with patients
split alternately in sorted order (``../shared/data/README.md`` of the study's workplace).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from brainseg_lib.data.errors import ImageReadError
from brainseg_lib.data.images import DECODE_ERRORS, read_grayscale

FLAIR_CHANNEL = 1        # the middle channel of kaggle_3m's RGB TIFs
MANIFEST_COLUMNS = ("name", "patient", "half", "tumor_pixels")
SOURCE_HINT = ("download the Kaggle dataset mateuszbuda/lgg-mri-segmentation (where there is "
               "internet), unpack it and pass its kaggle_3m folder as --source")

log = logging.getLogger(__name__)


class BuildError(Exception):
    """The source is missing slices, or its pixels are not those of the reference."""


def pixel_sha256(a: np.ndarray) -> str:
    """SHA-256 of a uint8 array's pixels in row-major order (independent of the file format)."""
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).hexdigest()


def read_reference(path: Path) -> pd.DataFrame:
    """The reference slice list (see the module docstring)."""
    ref = pd.read_csv(path, dtype={"name": str, "patient": str, "half": str})
    missing = {*MANIFEST_COLUMNS, "image_sha256", "mask_sha256"} - set(ref.columns)
    if missing:
        raise BuildError(f"{path} lacks the columns {sorted(missing)}")
    return ref


def reference_from_folder(root: Path) -> pd.DataFrame:
    """The reference rows of a built set at ``root`` (its manifest plus each slice's pixel
    digests): how ``references/lgg_external.csv`` was made from the study's copy, and a
    way to compare any copy with it."""
    man = pd.read_csv(root / "manifest.csv", dtype={"name": str, "patient": str, "half": str})
    digests = {kind: [pixel_sha256(read_grayscale(root / half / kind / f"{name}.png"))
                      for name, half in zip(man["name"], man["half"])]
               for kind in ("images", "masks")}
    return man.assign(image_sha256=digests["images"], mask_sha256=digests["masks"])


def read_flair(path: Path) -> np.ndarray:
    """The FLAIR channel of a kaggle_3m slice (an 8-bit, 3-channel TIF)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("RGB", "RGBA"):
                raise BuildError(f"{path} is {im.mode}, not the 3-channel 8-bit TIF of kaggle_3m")
            return np.ascontiguousarray(np.asarray(im.convert("RGB"))[..., FLAIR_CHANNEL])
    except DECODE_ERRORS as e:
        raise ImageReadError(f"cannot decode {path}: {e} (truncated or corrupt file?)") from e


def read_slice(source: Path, patient: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The FLAIR image and the 0/255 mask of slice ``name`` of ``patient`` in kaggle_3m."""
    image_path = source / patient / f"{name}.tif"
    mask_path = source / patient / f"{name}_mask.tif"
    for p in (image_path, mask_path):
        if not p.is_file():
            raise BuildError(f"{p} is missing from the source; {SOURCE_HINT}")
    return read_flair(image_path), read_grayscale(mask_path)


def write_slices(source: Path, ref: pd.DataFrame, out: Path) -> list[str]:
    """Write every reference slice under ``out``; the names whose pixels differ."""
    from brainseg_lib.progress import progress_bar
    differ = []
    for half in ref["half"].unique():
        for kind in ("images", "masks"):
            (out / half / kind).mkdir(parents=True, exist_ok=True)
    for row in progress_bar(list(ref.itertuples(index=False)), desc="slices"):
        image, mask = read_slice(source, row.patient, row.name)
        if pixel_sha256(image) != row.image_sha256 or pixel_sha256(mask) != row.mask_sha256:
            differ.append(row.name)
        for kind, a in (("images", image), ("masks", mask)):
            Image.fromarray(a, mode="L").save(out / row.half / kind / f"{row.name}.png")
    return differ


def write_manifest(ref: pd.DataFrame, out: Path) -> Path:
    """``manifest.csv`` (name, patient, half, tumor_pixels), as ``external.py`` reads it."""
    path = out / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(MANIFEST_COLUMNS)
        w.writerows(ref[list(MANIFEST_COLUMNS)].itertuples(index=False))
    return path


def build_external(source: Path, dest: Path, reference: Path | None = None) -> Path:
    """Build the external set at ``dest`` from kaggle_3m at ``source``; raise BuildError
    when ``dest`` exists or a slice is missing or differs from the reference."""
    from brainseg_lib import paths
    ref = read_reference(Path(reference or paths.LGG_EXTERNAL_SLICES))
    source, dest = Path(source).expanduser(), Path(dest).expanduser().absolute()
    if not source.is_dir():
        raise BuildError(f"source folder {source} not found; {SOURCE_HINT}")
    if dest.exists():
        raise BuildError(f"{dest} exists; remove it or choose another --dest")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{dest.name}-tmp-", dir=dest.parent))
    try:
        differ = write_slices(source, ref, work)
        if differ:
            raise BuildError(f"{len(differ)} of {len(ref)} slices differ from the reference "
                             f"(first: {', '.join(differ[:5])}): this source or its reading is "
                             "not the one the study used")
        write_manifest(ref, work)
        os.replace(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("built the external set at %s: %d slices of %d patients, every one verified",
             dest, len(ref), ref["patient"].nunique())
    return dest


def cmd_build_external(args) -> int:
    """CLI entry: 0 when the set is built and verified, 2 otherwise."""
    from brainseg_lib import paths
    dest = Path(args.dest) if args.dest else paths.external_dir()
    try:
        build_external(Path(args.source), dest)
    except (BuildError, OSError, ValueError) as e:   # ImageReadError is an OSError, a bad CSV a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"external set ready at {dest} (set BRAINSEG_EXTERNAL={dest} if that is not the default)")
    return 0


def add_build_external_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``build-external`` on an ``add_subparsers()`` object."""
    b = subparsers.add_parser("build-external", help="build the external TCGA-LGG set from "
                              "Kaggle's kaggle_3m folder, verified slice by slice")
    b.add_argument("--source", required=True, type=Path,
                   help="the unpacked kaggle_3m folder of mateuszbuda/lgg-mri-segmentation")
    b.add_argument("--dest", type=Path,
                   help="where the set goes (default: $BRAINSEG_EXTERNAL or data/lgg_external)")
    b.set_defaults(fn=cmd_build_external)
    return b
