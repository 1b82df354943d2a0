"""Crash-safe replacement of the results folder by a finished run.

``./run_all.sh`` builds everything in ``<dest>/.staging-XXXX`` and only then calls
``promote``, which swaps the staged folders in:

1. a journal (``<dest>/.promote-journal.json``) records the folders to swap and which of
   them existed before;
2. each existing folder is moved aside into ``<dest>/.previous-XXXX``, then each staged
   folder is moved in (``os.replace``, one rename each);
3. the journal is marked done, the previous folders are deleted, the journal removed.

If the process is killed between 1 and 3, the next run's ``recover`` rolls back to the
previous results (new folders out, old folders back); if ``promote`` raises, the caller rolls
back at once (``run_all._swap_in``). So ``<dest>`` never stays a mix of old and new. (Nothing
is fsynced: this guards against a killed or failing run, not against a power cut.)
``exclusive_lock`` keeps two runs on the same folder from overlapping; while it is held,
any other ``.staging-*`` folder is the leftover of a killed run and is removed.

Every command of the CLI, not only ``run-study``, first calls ``recover_results``: a swap a
crash interrupted is finished or rolled back (under the same lock) before anything reads
``results/``. Every folder the journal names is checked to lie directly under ``<dest>``
(``names.child``) before it is moved or deleted.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

from brainseg_lib.fileio import Locked, atomic_write_text
from brainseg_lib.names import child, remove_tree
from brainseg_lib.fileio import exclusive_lock as fileio_lock

JOURNAL = ".promote-journal.json"
LOCK = ".run_all.lock"
STAGING_PREFIX = ".staging-"


class RunInProgress(Locked):
    """Another run holds the lock on this results folder."""


def exclusive_lock(dest: Path):
    """Hold ``<dest>/.run_all.lock`` (flock, non-blocking) for the duration of the block."""
    return _locked(dest / LOCK)


@contextlib.contextmanager
def _locked(lock: Path):
    try:
        with fileio_lock(lock, "another ./run_all.sh"):
            yield
    except Locked as e:
        raise RunInProgress(str(e)) from None


def remove_stale_stages(dest: Path) -> list[str]:
    """Delete ``.staging-*`` folders left by killed runs (call only while holding the lock)."""
    stale = sorted(p for p in dest.glob(STAGING_PREFIX + "*") if p.is_dir())
    for p in stale:
        remove_tree(p, dest, ignore_errors=True)
    return [p.name for p in stale]


def carry_over(dest: Path, stage: Path, folder: str) -> None:
    """Copy the files of ``dest/folder`` the stage does not replace into ``stage/folder``,
    so promoting that folder adds files instead of dropping the others (timings)."""
    old, new = dest / folder, stage / folder
    if not old.is_dir() or not new.is_dir():
        return
    for f in old.iterdir():
        if f.is_file() and not (new / f.name).exists():
            shutil.copy2(f, new / f.name)


def promote(stage: Path, dest: Path) -> list[str]:
    """Swap every folder of ``stage`` into ``dest`` (see the module docstring)."""
    folders = sorted(p.name for p in stage.iterdir() if p.is_dir())
    backup = dest / (".previous-" + stage.name.removeprefix(STAGING_PREFIX))
    journal = {"backup": backup.name, "stage": stage.name, "folders": folders,
               "had_old": [f for f in folders if (dest / f).exists()], "done": False}
    atomic_write_text(dest / JOURNAL, json.dumps(journal))
    backup.mkdir()
    for f in journal["had_old"]:
        os.replace(dest / f, backup / f)
    for f in folders:
        os.replace(stage / f, dest / f)
    atomic_write_text(dest / JOURNAL, json.dumps({**journal, "done": True}))
    remove_tree(backup, dest, ignore_errors=True)
    (dest / JOURNAL).unlink()
    return folders


def recover(dest: Path) -> str | None:
    """Finish or undo a promotion interrupted by a crash; returns what was done."""
    path = dest / JOURNAL
    if not path.is_file():
        return None
    j = json.loads(path.read_text())
    backup = child(dest, j["backup"], "journal backup folder")
    if j["done"]:
        remove_tree(backup, dest, ignore_errors=True)
        path.unlink()
        return "finished an interrupted clean-up"
    for f in j["folders"]:
        new, old = child(dest, f, "journal folder"), child(backup, f, "journal folder")
        if old.exists():                          # old copy aside: whatever is in dest is new
            remove_tree(new, dest, ignore_errors=True)
            os.replace(old, new)
        elif f not in j["had_old"] and new.exists():
            remove_tree(new, dest, ignore_errors=True)   # a new folder with no old one
    remove_tree(backup, dest, ignore_errors=True)
    path.unlink()
    return "rolled back an interrupted promotion; the previous results are in place"


SWAP_WAIT_S = 30.0   # how long a command waits for another process's swap to finish


def recover_results(root: Path | None = None, wait_s: float = SWAP_WAIT_S) -> list[str]:
    """``recover`` the results folder and each profile folder in it (``results/paper``,
    ``results/smoke``) that holds a journal, under its lock; one line per folder repaired.
    Without a journal it only checks that none is there. A journal whose lock another
    process holds is a swap in progress (milliseconds to seconds): wait up to ``wait_s`` for
    it, then raise ``RunInProgress``."""
    from brainseg_lib import paths
    root = Path(root) if root else paths.results_dir()
    done = []
    for dest in [root, *sorted(p.parent for p in root.glob(f"*/{JOURNAL}"))]:
        note = _recover_locked(dest, wait_s) if (dest / JOURNAL).is_file() else None
        if note:
            done.append(f"{paths.display_path(dest)}: {note}")
    return done


def recover_for_command() -> None:
    """What the CLI runs before every command: ``recover_results``, each repair said on
    stderr in one line."""
    import sys
    for note in recover_results():
        print(f"note: {note}", file=sys.stderr)


def _recover_locked(dest: Path, wait_s: float) -> str | None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with exclusive_lock(dest):
                return recover(dest)
        except RunInProgress:
            if not (dest / JOURNAL).is_file():
                return None                       # the other process finished its swap
            if time.monotonic() > deadline:
                raise RunInProgress(f"another run is swapping new results into {dest}; "
                                    "try again when it has finished") from None
            time.sleep(0.2)
