"""TODO docstring."""
from __future__ import annotations

import logging
import re
from pathlib import Path

from brainseg_lib.data.images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


def _natural_key(name: str):
    import re
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


# --------------------------------------------------------------------- files
def natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_images(folder: Path) -> list[str]:
    """Image files directly in ``folder``, in natural order (no2 before no10)."""
    return sorted((p.name for p in Path(folder).iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
                  key=natural_key)
