"""Atomic file writes: every file the project writes goes through here.

The content is written to a temp file in the target's folder and renamed into
place, so a reader (or a crash) never sees a half-written file. The temp file
ends in ``.tmp`` and is removed if writing fails. Finished files get the usual
permissions (0666 minus the umask), not mkstemp's 0600.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import pandas as pd

from brainseg_lib import paths

UMASK = os.umask(0)   # the process umask: finished files get 0o666 & ~UMASK, folders 0o777 & ~UMASK
os.umask(UMASK)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(binary_file)`` on a temp file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_copy(src: str | Path, dst: str | Path) -> Path:
    """Make ``dst`` a copy of ``src`` in one atomic rename: a hard link when the filesystem
    allows it (no bytes written; safe because ``atomic_write`` never changes a file in place,
    it replaces it), else a byte copy."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        def copy(f):
            with open(src, "rb") as s:
                shutil.copyfileobj(s, f)
        return atomic_write(dst, copy)
    try:
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# where a path is shown to a user (results/..., or project-relative): defined in paths
display_path = paths.display_path


def write_json(obj: dict, path: str | Path) -> Path:
    """Atomic JSON write (sorted keys off, indent 1, NaN refused)."""
    return atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=False, default=_jsonable))


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Atomic CSV write, without the index."""
    return atomic_write_text(path, df.to_csv(index=False))


def json_ready(obj):
    """``obj`` with NaN and infinities as None (JSON has no NaN) and numpy scalars as Python
    numbers, recursively through dicts, lists and tuples (tuples become lists)."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class Locked(RuntimeError):
    """Another process holds the lock."""


@contextlib.contextmanager
def exclusive_lock(lock_path: str | Path, holder: str = "another process"):
    """Hold an exclusive, non-blocking flock on ``lock_path`` for the block; raise ``Locked``
    (naming ``holder`` and the lock file) when another process holds it. The lock goes with
    the process, so a killed holder never leaves it stuck."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Locked(f"{holder} is using {lock_path.parent} (lock {lock_path}); "
                         "wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
