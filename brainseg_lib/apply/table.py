"""The predictions table, ``predictions.csv``: written as the scans finish, read back to resume.

The header is written before the first mask, and each row is appended and flushed as soon as
its scan's mask (and overlay) are in place, and synced to disk (fsync) at least every second
(``Table``), so an interrupt, a crash or a full disk keeps every finished row. ``predict --resume`` reads the table back
(``read_rows``) and skips the scans whose row says ``ok`` and whose outputs are on disk
(``finished``); the others are done again and their old rows dropped.

File names are kept losslessly whatever their encoding. ``file`` is the name as valid UTF-8
text (bytes that are not UTF-8 shown as ``\\xNN``, a leading formula character behind an
apostrophe, see ``scans.csv_safe``); where that differs from the exact name, ``file_escaped``
holds the exact name's bytes percent-encoded (RFC 3986: ``urllib.parse.unquote_to_bytes``
gives them back), else it is empty. ``threshold`` and ``model_sha256`` record what decided
each row, and a resume with another threshold or model is refused.
"""
from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

from brainseg_lib.apply.scans import CSV_COLUMNS, Plan, PredictError, csv_safe, shown
from brainseg_lib.fileio import atomic_write


def name_cells(name: str) -> dict:
    """The ``file`` and ``file_escaped`` cells of an input's exact name."""
    cell = csv_safe(shown(name))
    return {"file": cell, "file_escaped": "" if cell == name else quote(os.fsencode(name), safe="")}


def exact_name(cells: dict) -> str:
    """The exact file name a row read from the table stands for (``name_cells`` reversed)."""
    escaped = cells.get("file_escaped") or ""
    return os.fsdecode(unquote_to_bytes(escaped)) if escaped else cells["file"]


def to_csv(rows: list[dict], header: bool = False) -> bytes:
    """CSV lines (UTF-8) of in-memory rows (``file`` the exact name), optionally the header first."""
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
    if header:
        w.writeheader()
    for r in rows:
        cells = {k: csv_safe(v) for k, v in r.items() if k != "file"}
        w.writerow({**cells, "error": csv_safe(shown(r.get("error", ""))), **name_cells(r["file"])})
    return text.getvalue().encode("utf-8")


def write_rows(path: Path, rows: list[dict]) -> Path:
    """The whole table (header and ``rows``), atomically."""
    return atomic_write(path, lambda f: f.write(to_csv(rows, header=True)))


# the columns of tables written before volumes were read: still resumed (volume cells empty)
LEGACY_COLUMNS = CSV_COLUMNS[:CSV_COLUMNS.index("file_escaped") + 1]
SYNC_SECONDS = 1.0      # the table is synced to disk at least this often (fsync: ~3 ms each)


class Table:
    """``predictions.csv`` open for appending: it starts as the header and ``rows`` (written
    atomically), then ``append`` adds one row and flushes it to the operating system before
    it returns (so an interrupt, a crash or a kill keeps it), and syncs the file to disk
    (fsync) when the last sync is ``SYNC_SECONDS`` old, and on ``close`` (a power cut loses at
    most the last second's rows; a sync per row would cost 3 s per 1,000 scans)."""

    def __init__(self, path: Path, rows: list[dict]):
        self.path, self.rows = path, list(rows)
        write_rows(path, self.rows)
        self._fh = open(path, "ab")
        self._synced = time.monotonic()

    def append(self, row: dict) -> None:
        self._fh.write(to_csv([row]))
        self._fh.flush()
        if time.monotonic() - self._synced >= SYNC_SECONDS:
            self.sync()
        self.rows.append(row)

    def sync(self) -> None:
        os.fsync(self._fh.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        try:
            self.sync()
            self._fh.close()
        except OSError:
            pass            # every row was flushed to the operating system already

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_rows(path: Path) -> list[dict]:
    """The rows of an existing table (``file`` the exact name), or PredictError when it is not
    a table this version of ``predict`` wrote."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise PredictError(f"{path} is not UTF-8 text ({e.reason}); use --force to start again") from None
    if reader.fieldnames == CSV_COLUMNS[:len(LEGACY_COLUMNS)] == LEGACY_COLUMNS:
        rows = [{**r, **{c: "" for c in CSV_COLUMNS[len(LEGACY_COLUMNS):]}} for r in rows]
    elif reader.fieldnames != CSV_COLUMNS:
        raise PredictError(f"{path} was not written by this version of predict (columns "
                           f"{reader.fieldnames}); use --force to redo every scan, or another --output")
    return [{**r, "file": exact_name(r)} for r in rows]


def _same_settings(row: dict, threshold: float, sha256: str, path: Path) -> None:
    """PredictError unless a finished row was made at ``threshold`` by the model ``sha256``."""
    try:
        same_t = float(row["threshold"]) == float(threshold)
    except ValueError:
        same_t = False
    if not same_t or row["model_sha256"] != sha256:
        raise PredictError(
            f"--resume: {path} holds rows made with threshold {row['threshold']} by the model with "
            f"SHA-256 {row['model_sha256'][:12]}...; this run has threshold {threshold:g} and model "
            f"{sha256[:12]}...; resume with the same --threshold and model, or use --force")


def _written(path: Path) -> bool:
    """An output file that exists and is not empty (a power cut can leave a renamed file empty)."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def finished(rows: list[dict], plan: Plan, overlay: bool, threshold: float, sha256: str
             ) -> tuple[dict[Path, dict], list[dict]]:
    """(the rows of inputs already done, by input; the rows of files that are not inputs).

    An input is done when its last row says ``ok`` and its mask (and overlay, with
    ``overlay``) exist; a mask without its row, or a row saying ``error``, is done again."""
    by_name = {r["file"]: r for r in rows}
    done = {}
    for f in plan.files:
        row = by_name.get(f.name)
        if row is None or row["status"] != "ok" or f not in plan.masks:
            continue
        if _written(plan.masks[f]) and (not overlay or _written(plan.overlays[f])):
            _same_settings(row, threshold, sha256, plan.csv_path)
            done[f] = row
    inputs = {f.name for f in plan.files}
    return done, [r for r in by_name.values() if r["file"] not in inputs]
