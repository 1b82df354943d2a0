"""Atomic file writes: every file the project writes goes through here.

The content is written to a temp file in the target's folder and renamed into
place, so a reader (or a crash) never sees a half-written file. The temp file
ends in ``.tmp`` and is removed if writing fails. Finished files get the usual
permissions (0666 minus the umask), not mkstemp's 0600.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, BinaryIO

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(binary_file)`` on a temp file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
