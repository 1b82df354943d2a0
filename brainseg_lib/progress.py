"""Progress bars that stay quiet where they would only make noise.

A bar is shown only on an interactive terminal. Under papermill, nbval, CI
logs or a pipe it is disabled, so executed notebooks and checked cells hold no
bar output. ``BRAINSEG_PROGRESS=1`` forces bars on, ``=0`` forces them off.
"""
from __future__ import annotations

import os
import sys

from tqdm import tqdm


def progress_enabled() -> bool:
    forced = os.environ.get("BRAINSEG_PROGRESS")
    if forced is not None:
        return forced.strip() not in ("", "0", "false", "no")
    if "ipykernel" in sys.modules or os.environ.get("CI"):
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(iterable=None, desc: str = "", disable: bool | None = None, **kw):
    """tqdm over ``iterable``; ``disable=None`` means decide with progress_enabled()."""
    if disable is None:
        disable = not progress_enabled()
    elif disable is False:
        disable = False
    return tqdm(iterable, desc=desc, disable=disable, leave=False, dynamic_ncols=True, **kw)
