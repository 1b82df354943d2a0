"""Names are data, never paths.

Every name that becomes part of a path (a profile, a run tag, a sweep variant, a lever tag, a
run name built from them) passes ``check_name``: letters, digits and ``. _ -`` only, starting
with a letter or digit, at most ``MAX_NAME`` characters. So ``..``, ``/``, ``\\``, a NUL byte,
a leading dot or dash, white space and an empty name are refused with one line naming the
parameter. ``+``, ``=`` and ``,`` are allowed too, for the profile names that ``--set`` tags
(``cpu+epochs=5``).

Every deletion and every write of a folder the project names goes through ``inside`` (or
``remove_tree``): the path is resolved and must lie under its root, so even a name that got
past the check cannot reach outside.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

MAX_NAME = 120
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=,-]*")


class UnsafeName(ValueError):
    """A name that would not stay a single path component, or a path outside its root."""


def check_name(value, what: str = "name") -> str:
    """``value`` if it is a safe single path component, else ``UnsafeName`` naming ``what``."""
    if not isinstance(value, str):
        raise UnsafeName(f"{what} must be text (letters, digits, '._-'), not {type(value).__name__} {value!r}")
    if len(value) > MAX_NAME or not NAME_RE.fullmatch(value) or value in (".", ".."):
        raise UnsafeName(f"{what} {value!r} is not allowed: use letters, digits and '._-+=,' only "
                         f"(starting with a letter or digit, at most {MAX_NAME} characters); "
                         "a name never holds a path")
    return value


def inside(root: str | Path, path: str | Path, what: str = "path") -> Path:
    """``path`` resolved, after checking it lies strictly under ``root`` (resolved too)."""
    root_r = Path(root).resolve()
    path_r = Path(path).resolve()
    if path_r == root_r or root_r not in path_r.parents:
        raise UnsafeName(f"{what} {str(path)!r} would lie outside {root_r}; refused")
    return path_r


def child(root: str | Path, name, what: str = "name") -> Path:
    """``root / name`` for a name the project made itself (``.staging-x7``, ``metrics``, a
    journal's entries): one plain path component, any characters but a separator or NUL, not
    ``.`` or ``..``; else ``UnsafeName``. Stricter names from users go through ``check_name``."""
    if (not isinstance(name, str) or name in ("", ".", "..") or "\0" in name
            or "/" in name or "\\" in name):
        raise UnsafeName(f"{what} {name!r} is not a single folder or file name; refused")
    return Path(root) / name


def remove_tree(path: str | Path, root: str | Path, ignore_errors: bool = False) -> None:
    """``shutil.rmtree(path)`` after ``inside(root, path)``: never deletes outside ``root``.
    A symlink at ``path`` is removed as a link, never followed. With ``ignore_errors`` a
    missing or half-removable folder is no error (the check against ``root`` still is)."""
    p = Path(path)
    if p.is_symlink():
        inside(root, p.parent / "_", "folder")   # the link itself must sit under root
        p.unlink()
        return
    shutil.rmtree(inside(root, p, "folder"), ignore_errors=ignore_errors)


def remove_file(path: str | Path, root: str | Path) -> bool:
    """Delete the file (or link) ``path`` if there is one, after checking it sits under
    ``root``; True if something was deleted."""
    p = Path(path)
    inside(root, p.parent / "_", "file")          # the entry itself, not what a link points to
    try:
        p.unlink()
    except FileNotFoundError:
        return False
    return True


def split_seed_of(run: dict) -> int:
    """The grouped-split draw a run's metric JSON was trained on: its ``split_seed`` (written
    for draws other than 0), else the ``-split<d>`` part ``run_name`` gives its name, else 0."""
    if run.get("split_seed") is not None:
        return int(run["split_seed"])
    m = re.search(r"-seed\d+-split(\d+)(?:-|$)", run.get("run_name") or "")
    return int(m.group(1)) if m else 0
