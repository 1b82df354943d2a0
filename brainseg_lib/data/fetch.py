"""``fetch-data``: download Br35H, verify every file against a manifest, install atomically.

The manifest (``references/br35h.sha256``, ``sha256sum`` format, paths relative to the
dataset root) is the contract: only the files it lists are installed (anything else in the
download is left out and reported), and the caps on entries and bytes come from it
(``extract.limits_for``). Sources: ``github`` (the author's repository at a pinned commit: one
zip, checked per file since GitHub zips are not byte-stable; the download has an overall
deadline and a stall timeout) or ``kaggle`` (a pinned version via the optional kagglehub).
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from brainseg_lib.data.cache import sha256_file
from brainseg_lib.data.download import (  # noqa: F401 -- the errors are fetch's API too
    BadDownload, Clock, DeadlineError, FetchError, NetworkError, OfflineError, StalledError,
    download, offline)
from brainseg_lib.data.extract import (ArchiveDamaged, ExtractRefused, Limits, dataset_prefix,
                                       copy_listed, extract_zip, limits_for)
from brainseg_lib.fileio import exclusive_lock

GITHUB_REPO = "AhmedHamada0/Brain-Tumor-Detection-Dataset"
GITHUB_COMMIT = "b614673"  # as recorded with the data; GitHub resolves the short hash
GITHUB_ARCHIVE_BASE = f"https://github.com/{GITHUB_REPO}/archive"
KAGGLE_DATASET = "ahmedhamada0/brain-tumor-detection"
KAGGLE_VERSION = 12
ANCHOR = "Br35H-Mask-RCNN/TRAIN/annotations_train.json"
DEADLINE_S = 3600.0       # the whole download, retry included (--deadline)
STALL_TIMEOUT_S = 60.0    # no byte for this long from a server that answered (--stall-timeout)
MANUAL_STEPS = f"""To install Br35H by hand:
  1. where there is internet, get the Kaggle dataset {KAGGLE_DATASET} (version {KAGGLE_VERSION}),
       https://www.kaggle.com/datasets/{KAGGLE_DATASET}/versions/{KAGGLE_VERSION}
     or the GitHub repository {GITHUB_REPO} at commit {GITHUB_COMMIT},
       {GITHUB_ARCHIVE_BASE}/{GITHUB_COMMIT}.zip
  2. unpack it so that <folder>/{ANCHOR} exists
  3. move <folder> to {{dest}} or pass --dest <folder>, or set BRAINSEG_DATA=<folder>
  4. check it: python -m brainseg_lib fetch-data --dest <folder>  (verifies, downloads nothing)"""

log = logging.getLogger(__name__)


def read_manifest(path: Path) -> dict[str, str]:
    """``{relative path: sha256}`` from a ``sha256sum``-format file (``#`` lines skipped)."""
    entries = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        digest, _, name = line.partition(" ")
        rel = Path(name := name.strip().lstrip("*"))
        if len(digest) != 64 or not name or rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"{path}:{n}: not a 'sha256  relative/path' line: {line!r}")
        entries[rel.as_posix()] = digest.lower()
    folders = {"/".join(k.split("/")[:i]) for k in entries for i in range(1, k.count("/") + 1)}
    if clash := sorted(folders & entries.keys()):
        raise ValueError(f"{path}: {clash[0]} is listed both as a file and as a folder")
    return entries


def verify_tree(root: Path, entries: dict[str, str]) -> list[str]:
    """One line per listed file that is missing or whose checksum differs (empty: all good)."""
    def problem(rel: str, digest: str) -> str | None:
        p = Path(root) / rel
        if not p.is_file():
            return f"missing: {rel}"
        return None if sha256_file(p) == digest else f"checksum mismatch: {rel}"
    return [m for rel, d in sorted(entries.items()) if (m := problem(rel, d))]


def format_problems(problems: list[str], cap: int = 20) -> str:
    """The first ``cap`` problems, one per indented line, then ``and N more``."""
    more = [f"  and {len(problems) - cap} more"] if len(problems) > cap else []
    return "\n".join([f"  {p}" for p in problems[:cap]] + more)


def find_dataset_root(tree: Path, entries: dict[str, str]) -> Path:
    """The folder under ``tree`` holding the most manifest files at their listed paths (the
    shallowest on a tie), whatever the archive's top folder is called; ``tree`` itself
    when there is none, so that verification names every file as missing."""
    tree = Path(tree)
    found = [(*Path(dirpath).relative_to(tree).parts, f) for dirpath, _, files in os.walk(tree) for f in files]
    return tree.joinpath(*dataset_prefix(found, entries))


def _obtain_github(work: Path, url: str, cache: Path, fresh: bool, entries: dict[str, str],
                   limits: Limits, clock: Clock, manifest_name: str) -> Path:
    """Unzip the listed files of the archive at ``url`` into ``work/dataset``, downloading it
    unless ``cache`` holds it and not ``fresh``; returns that folder."""
    try:
        import pooch
    except ImportError:
        raise FetchError("fetching from GitHub needs pooch: pip install pooch") from None
    archive = cache / pooch.utils.unique_file_name(url)
    if fresh:
        archive.unlink(missing_ok=True)
    if archive.exists():
        log.info("reusing cached %s", url)
    else:
        log.info("downloading %s", url)
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FetchError(f"could not create {cache}: {e.strerror or e}") from None
        download(url, archive, clock, limits.max_download_bytes)
    try:
        return extract_zip(archive, work / "dataset", entries, limits, manifest_name)
    except ArchiveDamaged as e:
        archive.unlink(missing_ok=True)  # never reuse it
        raise BadDownload(str(e)) from None
    except ExtractRefused as e:
        if e.discard:
            archive.unlink(missing_ok=True)
        raise FetchError(str(e)) from None


def _obtain_kaggle(work: Path, fresh: bool, entries: dict[str, str], limits: Limits,
                   manifest_name: str) -> Path:
    """Download the pinned Kaggle version (kagglehub keeps its own cache; the deadline and
    stall timeout are kagglehub's own) and copy its listed files to ``work/dataset``."""
    try:
        import kagglehub
    except ImportError:
        raise FetchError("--source kaggle needs kagglehub: pip install kagglehub") from None
    import requests
    handle = f"{KAGGLE_DATASET}/versions/{KAGGLE_VERSION}"
    log.info("downloading Kaggle dataset %s", handle)
    try:
        src = kagglehub.dataset_download(handle, force_download=fresh)
    except (requests.ConnectionError, requests.Timeout) as e:
        raise offline("https://www.kaggle.com", e) from None
    except Exception as e:  # noqa: BLE001 -- kagglehub's own errors (not found, auth)
        raise FetchError(f"kagglehub could not download {handle}: {e}") from None
    try:
        return copy_listed(find_dataset_root(Path(src), entries), work / "dataset", entries,
                           limits, manifest_name)
    except ExtractRefused as e:
        raise FetchError(str(e)) from None


def _fetch_verified(work: Path, source: str, url: str, cache: Path, entries: dict[str, str],
                    limits: Limits, clock: Clock, manifest_name: str) -> Path:
    """Obtain a copy under ``work`` and return its dataset root once every file verifies;
    one fresh retry after a damaged archive, a cut or stalled transfer or mismatching files
    (within the same deadline)."""
    for attempt in (1, 2):
        (sub := work / f"try{attempt}").mkdir()
        try:
            root = (_obtain_kaggle(sub, attempt == 2, entries, limits, manifest_name)
                    if source == "kaggle" else
                    _obtain_github(sub, url, cache, attempt == 2, entries, limits, clock,
                                   manifest_name))
            log.info("verifying %d files", len(entries))
            problems = verify_tree(root, entries)
            if not problems:
                return root
            error: FetchError = FetchError(f"the downloaded copy does not match the manifest "
                                           f"({len(problems)} files)", problems)
        except BadDownload as e:
            error = e
        if attempt == 2:
            raise error
        log.warning("%s; downloading once more", error)
        shutil.rmtree(sub, ignore_errors=True)


def _unlisted_in(root: Path, entries: dict[str, str]) -> list[str]:
    return sorted(rel for p in Path(root).rglob("*")
                  if (rel := p.relative_to(root).as_posix()) not in entries and not p.is_dir())


def _existing_ok(dest: Path, entries: dict[str, str], force: bool) -> bool:
    """True when ``dest`` already verifies; raise when it is in the way and not ``force``."""
    if dest.exists() and not dest.is_dir():
        raise FetchError(f"{dest} exists and is not a folder; choose another --dest")
    if not dest.exists() or not any(dest.iterdir()):
        return False
    problems = verify_tree(dest, entries)
    if not problems:
        if extra := _unlisted_in(dest, entries):
            log.warning("%s also holds %d file%s the manifest does not list (not verified): %s",
                        dest, len(extra), "s" * (len(extra) != 1),
                        ", ".join(extra[:5]) + (", ..." if len(extra) > 5 else ""))
        return True
    if force:
        return False
    raise FetchError(f"{dest} does not match the manifest ({len(problems)} files); left as is "
                     "(--force: fetch anew, keeping it as <dest>.replaced-<time>)", problems)


def _install(root: Path, dest: Path) -> None:
    """Move the verified ``root`` onto ``dest``; an existing ``dest`` is renamed aside."""
    backup = dest.with_name(f"{dest.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()
    elif dest.exists():
        os.replace(dest, backup)
        log.warning("kept the previous %s as %s", dest, backup)
    try:
        os.replace(root, dest)
    except OSError:
        if backup.exists() and not dest.exists():
            os.replace(backup, dest)  # put the previous folder back
        raise


def fetch_data(dest: Path, source: str = "github", *, base_url: str | None = None,
               manifest: Path | None = None, force: bool = False,
               cache: Path | None = None, deadline: float = DEADLINE_S,
               stall_timeout: float = STALL_TIMEOUT_S, max_entries: int | None = None,
               max_bytes: int | None = None) -> Path:
    """Put a verified Br35H copy at ``dest`` and return it.

    A ``dest`` that verifies is left alone. One that exists but does not verify is refused,
    naming the bad files; with ``force`` a fresh copy goes in and the old folder is renamed,
    never deleted, to ``<dest>.replaced-<time>``; an empty ``dest`` counts as absent.
    Downloads unpack and verify in ``<parent>/.fetch-<name>-tmp-*`` and move into place with
    one ``os.replace``: no run leaves a partial ``dest``, and the next run removes such temp
    folders (a second fetch of the same ``dest`` is refused while one runs: a lock file).
    Only the manifest's files are unpacked; an archive with more entries or bytes than the
    manifest allows (``extract.limits_for``; ``max_entries``/``max_bytes`` override) is
    refused before anything is written. A damaged zip, a cut or stalled transfer or
    mismatching files cause one fresh download; a second failure is an error.

    ``deadline``: seconds for the whole download, retry included; ``stall_timeout``: seconds
    without a byte from a server that was reached. ``base_url``: the archive folder instead of
    GitHub's (``<base_url>/<commit>.zip``; a URL ending in ``.zip`` is used as is).
    ``manifest``: default references/br35h.sha256. ``cache``: keeps the zip until the copy is
    installed, so a rerun need not download it (default ``<parent>/.fetch-<name>-cache``).
    Raises FetchError (with ``problems``)."""
    if source not in ("github", "kaggle"):
        raise ValueError(f"unknown source {source!r} (github or kaggle)")
    if base_url and source != "github":
        raise FetchError("--base-url applies to --source github only")
    if manifest is None:
        from brainseg_lib import paths
        manifest = paths.BR35H_CHECKSUMS
    try:
        entries = read_manifest(manifest)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise FetchError(f"cannot read the manifest {manifest}: {e}") from None
    limits = limits_for(entries, max_entries, max_bytes)
    dest = Path(dest).expanduser().absolute()
    if _existing_ok(dest, entries, force):
        log.info("%s is already in place and verified (%d files)", dest, len(entries))
        return dest
    clock = Clock(deadline, stall_timeout)
    base = (base_url or GITHUB_ARCHIVE_BASE).rstrip("/")
    url = base if base.endswith(".zip") else f"{base}/{GITHUB_COMMIT}.zip"
    own_cache, cache = cache is None, Path(cache or dest.parent / f".fetch-{dest.name}-cache")
    with exclusive_lock(dest.parent / f".{dest.name}.fetch-lock", "another fetch-data"):
        for stale in dest.parent.glob(f".fetch-{dest.name}-tmp-*"):   # ours alone: we hold the lock
            log.info("removing %s left by an interrupted run", stale)
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".fetch-{dest.name}-tmp-", dir=dest.parent))
        try:
            _install(_fetch_verified(work, source, url, cache, entries, limits, clock,
                                     Path(manifest).name), dest)
            if own_cache:  # installed: the archive is no longer needed
                shutil.rmtree(cache, ignore_errors=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if own_cache and cache.is_dir() and not any(cache.iterdir()):
                cache.rmdir()  # nothing in it worth keeping for a rerun
    log.info("installed Br35H at %s (%d files verified)", dest, len(entries))
    return dest


def cmd_fetch_data(args) -> int:
    """CLI entry: 0 when ``dest`` verifies (fetched or already there), 2 otherwise."""
    from brainseg_lib import paths
    dest = Path(args.dest or getattr(args, "data", None) or paths.data_dir())
    try:
        fetch_data(dest, args.source, base_url=args.base_url, manifest=args.manifest,
                   force=args.force, deadline=getattr(args, "deadline", DEADLINE_S),
                   stall_timeout=getattr(args, "stall_timeout", STALL_TIMEOUT_S))
    except FetchError as e:  # one line, then the manual steps or the files at fault
        more = MANUAL_STEPS.format(dest=dest) if isinstance(e, NetworkError) else \
            format_problems(e.problems)
        print(f"error: {e}\n{more}".rstrip(), file=sys.stderr)
        return 2
    except OSError as e:  # the lock, the temp folder or the final rename
        print(f"error: {e.strerror or e}: {e.filename or dest}", file=sys.stderr)
        return 2
    print(f"Br35H ready at {dest}")
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def add_fetch_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``fetch-data`` on an ``add_subparsers()`` object."""
    f = subparsers.add_parser("fetch-data", help="download Br35H, verify every file, install it")
    f.add_argument("--dest", type=Path, help="where the dataset goes "
                   "(default: --data, $BRAINSEG_DATA or data/br35h)")
    f.add_argument("--source", choices=["github", "kaggle"], default="github", help=f"github "
                   f"(default) or kaggle (v{KAGGLE_VERSION}; needs kagglehub)")
    f.add_argument("--force", action="store_true", help="replace a dest that fails "
                   "verification (the old folder is renamed, not deleted)")
    f.add_argument("--deadline", type=_seconds, default=DEADLINE_S, metavar="SECONDS",
                   help=f"give up a download that takes longer (default {DEADLINE_S:g}; github)")
    f.add_argument("--stall-timeout", type=_seconds, default=STALL_TIMEOUT_S, metavar="SECONDS",
                   help="give up when the server sends nothing for this long "
                   f"(default {STALL_TIMEOUT_S:g}; github)")
    f.add_argument("--base-url", help=argparse.SUPPRESS)  # tests, mirrors
    f.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    f.set_defaults(fn=cmd_fetch_data)
    return f
