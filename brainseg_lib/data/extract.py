"""Bounded, manifest-driven unpacking for ``fetch-data``.

Only the files the manifest lists are written, each at its listed path under a fresh folder;
everything else in an archive is left out and reported (one summary line for unlisted files,
one line per unsafe entry: symbolic links, devices, absolute paths, ``..``, a file and a folder
at the same path, a second entry of one name). Caps derived from the manifest (``limits_for``)
are checked on the archive's declared entry count and sizes before anything is written, and
again on the bytes actually written, so a header that lies cannot get past them.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# The manifest records no sizes, so the byte cap comes from the file count: Br35H's files are
# JPEGs of tens of KiB (and four annotation JSONs), so a mean of 256 KiB a file is a wide
# margin (about 0.95 GiB for the 3,865 files of references/br35h.sha256).
MEAN_FILE_BYTES_CAP = 256 * 1024
BYTES_SLACK = 16 * 1024 * 1024
# Beyond the listed files an archive holds its folders and a few extras (README, licence).
ENTRY_SLACK = 256
ENTRY_SLACK_FRACTION = 0.10
DETAIL_LINES = 10          # unsafe entries named one per line, then one line for the rest
CHUNK = 1 << 20


class ExtractRefused(Exception):
    """The archive (or a write) cannot be unpacked; repeating the download will not help.
    ``discard``: the archive itself is at fault and is not worth keeping in the cache."""
    def __init__(self, message: str, discard: bool = False):
        super().__init__(message)
        self.discard = discard


class ArchiveDamaged(Exception):
    """The archive does not unzip (bad CRC, truncated): a fresh download may mend it."""


@dataclass(frozen=True)
class Limits:
    """Caps on one unpacking: entries in the archive, bytes written (and downloaded)."""
    max_entries: int
    max_bytes: int

    @property
    def max_download_bytes(self) -> int:
        return self.max_bytes + 1024 * self.max_entries  # zip headers and names


def limits_for(entries: dict[str, str], max_entries: int | None = None,
               max_bytes: int | None = None) -> Limits:
    """The manifest's file count plus a margin, and ``MEAN_FILE_BYTES_CAP`` a file."""
    n = len(entries)
    return Limits(n + max(ENTRY_SLACK, int(n * ENTRY_SLACK_FRACTION)) if max_entries is None
                  else int(max_entries),
                  n * MEAN_FILE_BYTES_CAP + BYTES_SLACK if max_bytes is None else int(max_bytes))


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _unsafe_name(name: str) -> str | None:
    if "\x00" in name:
        return "a NUL in its name"
    if "\\" in name:
        return "a backslash in its name"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "an absolute path"
    if ".." in name.split("/"):
        return "'..' in its path"
    if not [p for p in name.split("/") if p not in ("", ".")]:
        return "an empty name"
    return None


def _parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in name.split("/") if p not in ("", "."))


def _special(mode: int) -> str | None:
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        return "a symbolic link"
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        return "a device"
    if kind in (stat.S_IFIFO, stat.S_IFSOCK):
        return "a pipe or socket"
    return None


def dataset_prefix(paths: list[tuple[str, ...]], entries: dict[str, str]) -> tuple[str, ...]:
    """The folder holding the most listed files at their listed paths (shallowest on a tie),
    whatever the archive's top folder is called; ``fetch.find_dataset_root`` uses it on a tree."""
    votes: Counter = Counter()
    for full in paths:
        for k in range(len(full)):
            if "/".join(full[k:]) in entries:
                votes[full[:k]] += 1
    return max(votes.items(), key=lambda kv: (kv[1], -len(kv[0])), default=((), 0))[0]


@dataclass
class Plan:
    take: dict[str, zipfile.ZipInfo]   # listed path -> the member that provides it
    unlisted: list[str]                 # regular files the manifest does not list
    skipped: list[str]                  # one line per unsafe or colliding entry


def plan_zip(infos: list[zipfile.ZipInfo], entries: dict[str, str], limits: Limits) -> Plan:
    """Decide what to write, refusing (before any write) an archive over the caps."""
    if len(infos) > limits.max_entries:
        raise ExtractRefused(f"the archive has {len(infos):,} entries, more than the "
                             f"{limits.max_entries:,} the manifest allows ({len(entries):,} files "
                             "plus a margin); nothing was unpacked", discard=True)
    declared = sum(i.file_size for i in infos)
    if declared > limits.max_bytes:
        raise ExtractRefused(f"the archive would unpack to {_mib(declared)}, more than the "
                             f"{_mib(limits.max_bytes)} the manifest allows ({len(entries):,} "
                             "files); nothing was unpacked", discard=True)
    skipped, files, folders = [], [], set()
    for info in infos:
        why = _unsafe_name(info.filename) or _special(info.external_attr >> 16)
        if why:
            skipped.append(f"skipped archive entry {info.filename!r}: {why}")
        elif info.is_dir() or stat.S_ISDIR(info.external_attr >> 16):
            folders.add(_parts(info.filename))
        else:
            files.append((_parts(info.filename), info))
    for parts, _ in files:
        folders.update(parts[:k] for k in range(1, len(parts)))
    prefix = dataset_prefix([p for p, _ in files], entries)
    take: dict[str, zipfile.ZipInfo] = {}
    unlisted: list[str] = []
    for parts, info in files:
        inside = parts[:len(prefix)] == prefix
        rel = "/".join(parts[len(prefix):] if inside else parts)
        if parts in folders:
            skipped.append(f"skipped archive entry {info.filename!r}: a file where the archive "
                           "also has a folder of that name")
        elif inside and rel in take:
            skipped.append(f"skipped archive entry {info.filename!r}: a second entry of that name")
        elif inside and rel in entries:
            take[rel] = info
        else:
            unlisted.append(rel if inside else "/".join(parts))
    return Plan(take, unlisted, skipped)


def report(skipped: list[str], unlisted: list[str], manifest_name: str) -> None:
    """One line per skipped entry (the first ``DETAIL_LINES``), one for unlisted files."""
    for line in skipped[:DETAIL_LINES]:
        log.warning("%s", line)
    if len(skipped) > DETAIL_LINES:
        log.warning("skipped %d more unsafe archive entries", len(skipped) - DETAIL_LINES)
    if unlisted:
        shown = ", ".join(sorted(unlisted)[:5]) + (", ..." if len(unlisted) > 5 else "")
        log.warning("left out %d file%s that %s does not list: %s", len(unlisted),
                    "s" * (len(unlisted) != 1), manifest_name, shown)


class _Metered:
    """A reader that counts what passes through and refuses past its caps."""
    def __init__(self, src, budget: list[int], cap: int, name: str, declared: int | None):
        self.src, self.budget, self.cap, self.name, self.declared = src, budget, cap, name, declared
        self.got = 0

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.got += len(data)
        self.budget[0] += len(data)
        if self.declared is not None and self.got > self.declared:
            raise ExtractRefused(f"archive entry {self.name} unpacks past its declared size "
                                 f"({self.declared:,} bytes); refused", discard=True)
        if self.budget[0] > self.cap:
            raise ExtractRefused(f"unpacking passed the {_mib(self.cap)} the manifest allows "
                                 f"(at {self.name}); refused", discard=True)
        return data


def _write(src, target: Path, budget: list[int], cap: int, name: str,
           declared: int | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(target, "xb") as dst:
            shutil.copyfileobj(_Metered(src, budget, cap, name, declared), dst, CHUNK)
    except OSError as e:
        raise ExtractRefused(f"could not write {target}: {e.strerror or e}") from None


def extract_zip(archive: Path, out: Path, entries: dict[str, str], limits: Limits,
                manifest_name: str = "the manifest") -> Path:
    """Write the listed files of the zip ``archive`` under ``out`` (created) and return it.
    Raises ExtractRefused (caps, unsupported entry, OSError) or ArchiveDamaged."""
    out = Path(out)
    try:
        with zipfile.ZipFile(archive) as z:
            plan = plan_zip(z.infolist(), entries, limits)
            report(plan.skipped, plan.unlisted, manifest_name)
            out.mkdir()
            budget = [0]
            for rel, info in sorted(plan.take.items()):
                try:
                    with z.open(info) as src:
                        _write(src, out.joinpath(*rel.split("/")), budget, limits.max_bytes,
                               info.filename, info.file_size)
                except (RuntimeError, NotImplementedError) as e:   # encrypted, unknown method
                    raise ExtractRefused(f"archive entry {info.filename} cannot be unpacked: "
                                         f"{e}", discard=True) from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise ArchiveDamaged(f"the downloaded archive is damaged or incomplete ({e})") from None
    except OSError as e:
        where = e.filename or archive
        raise ExtractRefused(f"could not unpack {where}: {e.strerror or e}") from None
    return out


def copy_listed(src_root: Path, out: Path, entries: dict[str, str], limits: Limits,
                manifest_name: str = "the manifest") -> Path:
    """Copy the listed regular files of an unpacked download (Kaggle) under ``out``,
    with the same caps, reports and refusals as ``extract_zip``."""
    src_root, out = Path(src_root), Path(out)
    real_root = src_root.resolve()
    count, declared, unlisted = 0, 0, []
    for dirpath, dirnames, files in os.walk(src_root):
        count += len(dirnames) + len(files)
        if count > limits.max_entries:
            raise ExtractRefused(f"the download has more than {limits.max_entries:,} entries, "
                                 f"more than the manifest allows ({len(entries):,} files plus "
                                 "a margin); nothing was copied")
        rel_dir = Path(dirpath).relative_to(src_root)
        for f in files:
            rel = (rel_dir / f).as_posix()
            st = os.lstat(Path(dirpath, f))
            declared += st.st_size if stat.S_ISREG(st.st_mode) else 0
            if rel not in entries:
                unlisted.append(rel)
    if declared > limits.max_bytes:
        raise ExtractRefused(f"the download holds {_mib(declared)}, more than the "
                             f"{_mib(limits.max_bytes)} the manifest allows; nothing was copied")
    skipped = []
    todo = []
    for rel in sorted(entries):
        p = src_root / rel
        try:
            st = os.lstat(p)
        except OSError:
            continue                       # verification names it as missing
        why = (_special(st.st_mode) or (None if stat.S_ISREG(st.st_mode) else "not a file")
               or (None if p.resolve().is_relative_to(real_root) else "outside the download"))
        if why:
            skipped.append(f"skipped {rel}: {why}")
        else:
            todo.append(rel)
    report(skipped, unlisted, manifest_name)
    out.mkdir()
    budget = [0]
    for rel in todo:
        try:
            with open(src_root / rel, "rb") as src:
                _write(src, out / rel, budget, limits.max_bytes, rel, None)
        except OSError as e:
            raise ExtractRefused(f"could not read {src_root / rel}: {e.strerror or e}") from None
    return out
