"""fetch-data: download, per-file verification and atomic install, against a local server.

A tiny fake dataset is zipped under a GitHub-style top folder and served from
127.0.0.1; nothing here touches the internet.
"""
from __future__ import annotations

import argparse
import errno
import logging
import shutil
import hashlib
import http.server
import io
import socket
import stat
import struct
import threading
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("pooch")

from brainseg_lib import paths
from brainseg_lib.data import fetch

FILES = {
    "Br35H-Mask-RCNN/TRAIN/y0.jpg": b"train image 0",
    "Br35H-Mask-RCNN/TRAIN/annotations_train.json": b'{"y0.jpg13": {}}',
    "Br35H-Mask-RCNN/VAL/y1.jpg": b"val image 1",
    "Br35H-Mask-RCNN/TEST/y2.jpg": b"test image 2",
    "Br35H-Mask-RCNN/annotations_all.json": b"{}",
    "yes/y0.jpg": b"train image 0",
    "no/no0.jpg": b"healthy 0",
    "pred/pred0.jpg": b"unlabelled 0",
}
# BRAINSEG_DATA as the user set it (no fixture changes it)
REAL_DATA_ROOT = paths.data_dir()
TOP = f"Brain-Tumor-Detection-Dataset-{fetch.GITHUB_COMMIT}"


def make_zip(files: dict[str, bytes], top: str = TOP) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{top}/README.md", b"extra file, not in the manifest")
        for rel, data in files.items():
            z.writestr(f"{top}/{rel}", data)
    return buf.getvalue()


def write_manifest(path: Path, files: dict[str, bytes]) -> Path:
    lines = [f"{hashlib.sha256(d).hexdigest()}  {rel}" for rel, d in sorted(files.items())]
    path.write_text("# fake Br35H\n\n" + "\n".join(lines) + "\n")
    return path


class Server:
    """Serves ``body`` at any path; ``cut`` sends only that many bytes of it (with the
    full Content-Length when ``lie`` is set, i.e. a transfer that breaks off). ``mode``:
    ``"drip"`` sends one byte every ``gap`` seconds, ``"silent"`` accepts and answers
    nothing, ``"stall"`` sends the headers and ``cut`` bytes and then nothing,
    ``"nolength"`` sends no Content-Length (the body ends when the connection closes)."""

    def __init__(self):
        self.body, self.cut, self.lie, self.hits = b"", None, False, 0
        self.mode, self.gap, self.stop = None, 0.2, threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                if outer.mode == "silent":
                    outer.stop.wait(30)
                    return
                data = outer.body if outer.cut is None else outer.body[:outer.cut]
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                if outer.mode != "nolength":
                    self.send_header("Content-Length", str(len(
                        outer.body if outer.lie or outer.mode else data)))
                self.end_headers()
                if outer.mode == "drip":
                    for b in outer.body:
                        try:
                            self.wfile.write(bytes([b]))
                            self.wfile.flush()
                        except OSError:  # the client gave up
                            break
                        if outer.stop.wait(outer.gap):
                            break
                else:
                    try:
                        self.wfile.write(data)
                        self.wfile.flush()
                    except OSError:  # the client gave up (a cap, a deadline)
                        return
                    if outer.mode == "stall":
                        outer.stop.wait(30)
                self.close_connection = True

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/archive"


@pytest.fixture
def server(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    s = Server()
    s.body = make_zip(FILES)
    yield s
    s.stop.set()
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def manifest(tmp_path):
    return write_manifest(tmp_path / "fake.sha256", FILES)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".fetch-"))


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    fetch.add_fetch_parser(p.add_subparsers(dest="cmd", required=True))
    args = p.parse_args(argv)
    return args.fn(args)


def test_fetch_installs_verified_copy(tmp_path, server, manifest):
    dest = tmp_path / "data" / "br35h"
    assert fetch.fetch_data(dest, base_url=server.url, manifest=manifest) == dest
    for rel, data in FILES.items():
        assert (dest / rel).read_bytes() == data
    assert not (dest / "README.md").exists()  # only the manifest's files are installed
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == \
        sorted(FILES)
    assert leftovers(dest.parent) == []
    assert server.hits == 1


def test_existing_verified_dest_is_a_no_op(tmp_path, server, manifest, capsys):
    dest = tmp_path / "br35h"
    fetch.fetch_data(dest, base_url=server.url, manifest=manifest)
    marker = dest / "yes" / "y0.jpg"
    before = marker.stat().st_mtime_ns
    assert cli(["fetch-data", "--dest", str(dest), "--base-url", server.url,
                "--manifest", str(manifest)]) == 0
    assert server.hits == 1 and marker.stat().st_mtime_ns == before
    assert "ready" in capsys.readouterr().out


def test_corrupted_file_is_named_and_nothing_installed(tmp_path, server, manifest, capsys):
    server.body = make_zip({**FILES, "no/no0.jpg": b"tampered"})
    dest = tmp_path / "br35h"
    assert cli(["fetch-data", "--dest", str(dest), "--base-url", server.url,
                "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "checksum mismatch: no/no0.jpg" in err and "Traceback" not in err
    assert not dest.exists()
    assert leftovers(tmp_path) == [".fetch-br35h-cache"]  # kept: a rerun needs no download
    assert server.hits == 2  # one fresh retry, then the error


def test_missing_file_is_named(tmp_path, server, manifest):
    server.body = make_zip({k: v for k, v in FILES.items() if k != "pred/pred0.jpg"})
    dest = tmp_path / "br35h"
    with pytest.raises(fetch.FetchError) as e:
        fetch.fetch_data(dest, base_url=server.url, manifest=manifest)
    assert e.value.problems == ["missing: pred/pred0.jpg"]
    assert not dest.exists()


@pytest.mark.parametrize("lie", [False, True], ids=["short-archive", "broken-transfer"])
def test_truncated_download_is_a_clean_error(tmp_path, server, manifest, lie):
    server.cut, server.lie = len(server.body) // 2, lie
    dest = tmp_path / "br35h"
    with pytest.raises(fetch.FetchError) as e:
        fetch.fetch_data(dest, base_url=server.url, manifest=manifest)
    assert "damaged or incomplete" in str(e.value) or "cut short" in str(e.value)
    assert server.hits == 2
    assert not dest.exists()
    assert leftovers(tmp_path) == []  # no temp folder, no damaged archive kept


def test_cached_archive_is_reused_and_a_truncated_one_replaced(tmp_path, server, manifest):
    dest = tmp_path / "br35h"
    cache = tmp_path / ".fetch-br35h-cache"
    bad = write_manifest(tmp_path / "bad.sha256", {**FILES, "no/no0.jpg": b"other"})
    with pytest.raises(fetch.FetchError):
        fetch.fetch_data(dest, base_url=server.url, manifest=bad)
    assert server.hits == 2 and len(list(cache.iterdir())) == 1
    fetch.fetch_data(dest, base_url=server.url, manifest=manifest)
    assert server.hits == 2  # the complete cached archive served the second run
    assert not cache.exists() and (dest / "no" / "no0.jpg").is_file()
    # a cached archive cut short (an interrupted earlier run) is detected and replaced
    dest2 = tmp_path / "again"
    cache2 = tmp_path / ".fetch-again-cache"
    cache2.mkdir()
    (cache2 / fetch_cache_name(server.url)).write_bytes(server.body[:100])
    fetch.fetch_data(dest2, base_url=server.url, manifest=manifest)
    assert server.hits == 3 and not cache2.exists()


def fetch_cache_name(base_url: str) -> str:
    import pooch
    return pooch.utils.unique_file_name(f"{base_url}/{fetch.GITHUB_COMMIT}.zip")


def test_leftover_temp_folder_is_removed(tmp_path, server, manifest):
    stale = tmp_path / ".fetch-br35h-tmp-old"
    (stale / "half").mkdir(parents=True)
    fetch.fetch_data(tmp_path / "br35h", base_url=server.url, manifest=manifest)
    assert leftovers(tmp_path) == []


def test_a_second_fetch_of_the_same_dest_is_refused_while_one_runs(tmp_path, server, manifest):
    """The lock keeps a second fetch from deleting the first one's work folder."""
    from brainseg_lib.fileio import Locked, exclusive_lock
    dest = tmp_path / "br35h"
    work = tmp_path / ".fetch-br35h-tmp-running"
    work.mkdir()
    with exclusive_lock(tmp_path / ".br35h.fetch-lock"):
        with pytest.raises(Locked, match="another fetch-data"):
            fetch.fetch_data(dest, base_url=server.url, manifest=manifest)
    assert work.is_dir() and not dest.exists()


def test_offline_prints_one_line_and_manual_steps(tmp_path, manifest, capsys, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the with-block ends
    dest = tmp_path / "br35h"
    assert cli(["fetch-data", "--dest", str(dest), "--base-url", f"http://127.0.0.1:{port}",
                "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: offline: could not reach 127.0.0.1")
    assert "To install Br35H by hand" in err[1]
    text = "\n".join(err)
    for needle in (fetch.KAGGLE_DATASET, fetch.GITHUB_REPO, fetch.GITHUB_COMMIT, fetch.ANCHOR,
                   "BRAINSEG_DATA", "--dest"):
        assert needle in text
    assert "Traceback" not in text
    assert not dest.exists() and leftovers(tmp_path) == []


def test_damaged_existing_dest_is_refused_then_kept_aside_with_force(tmp_path, server, manifest):
    dest = tmp_path / "br35h"
    (dest / "yes").mkdir(parents=True)
    (dest / "yes" / "y0.jpg").write_bytes(b"user's own file")
    with pytest.raises(fetch.FetchError) as e:
        fetch.fetch_data(dest, base_url=server.url, manifest=manifest)
    assert "checksum mismatch: yes/y0.jpg" in e.value.problems and server.hits == 0
    fetch.fetch_data(dest, base_url=server.url, manifest=manifest, force=True)
    assert fetch.verify_tree(dest, fetch.read_manifest(manifest)) == []
    (kept,) = tmp_path.glob("br35h.replaced-*")
    assert (kept / "yes" / "y0.jpg").read_bytes() == b"user's own file"


def test_kaggle_source_copies_the_located_root(tmp_path, manifest, monkeypatch):
    download = tmp_path / "kagglecache" / "versions" / "12"
    for rel, data in FILES.items():
        (download / rel).parent.mkdir(parents=True, exist_ok=True)
        (download / rel).write_bytes(data)
    calls = []
    fake = type("kagglehub", (), {"dataset_download": staticmethod(
        lambda handle, force_download=False: calls.append(handle) or str(download))})
    monkeypatch.setitem(__import__("sys").modules, "kagglehub", fake)
    dest = fetch.fetch_data(tmp_path / "br35h", "kaggle", manifest=manifest)
    assert fetch.verify_tree(dest, fetch.read_manifest(manifest)) == []
    assert calls == [f"{fetch.KAGGLE_DATASET}/versions/{fetch.KAGGLE_VERSION}"]


def test_kaggle_without_kagglehub_says_what_to_install(tmp_path, manifest, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "kagglehub", None)
    with pytest.raises(fetch.FetchError, match="pip install kagglehub"):
        fetch.fetch_data(tmp_path / "br35h", "kaggle", manifest=manifest)
    assert leftovers(tmp_path) == []


def test_find_dataset_root_maps_any_top_folder(tmp_path):
    entries = {"a/b.txt": "0" * 64, "c.txt": "0" * 64}
    (tmp_path / "x" / "y" / "a").mkdir(parents=True)
    (tmp_path / "x" / "y" / "a" / "b.txt").write_text("")
    (tmp_path / "x" / "y" / "c.txt").write_text("")
    (tmp_path / "x" / "c.txt").write_text("")  # a lone decoy one level up
    assert fetch.find_dataset_root(tmp_path, entries) == tmp_path / "x" / "y"
    assert fetch.find_dataset_root(tmp_path / "x" / "y" / "a", {"z": "0" * 64}) == \
        tmp_path / "x" / "y" / "a"


def test_problem_listing_is_capped():
    text = fetch.format_problems([f"missing: f{i}" for i in range(25)])
    assert text.count("missing:") == 20 and text.endswith("and 5 more")


# ------------------------------------------------------------ bounded downloads (issue 28, probe 7)
def zip_with(extra: list, files: dict[str, bytes] = FILES, top: str = TOP) -> bytes:
    """``make_zip(files)`` plus ``extra`` entries: ``(name, data)`` or ``(ZipInfo, data)``
    (names relative to ``top`` unless given as a ZipInfo)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for rel, data in files.items():
            z.writestr(f"{top}/{rel}", data)
        for name, data in extra:
            z.writestr(name if isinstance(name, zipfile.ZipInfo) else f"{top}/{name}", data,
                       compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def special(name: str, kind: int) -> zipfile.ZipInfo:
    """A ZipInfo whose Unix mode says ``kind`` (stat.S_IFLNK, S_IFCHR, ...)."""
    zi = zipfile.ZipInfo(name)
    zi.create_system = 3
    zi.external_attr = (kind | 0o777) << 16
    return zi


def declare_size(data: bytes, name: str, size: int) -> bytes:
    """The zip ``data`` with ``name``'s uncompressed size rewritten to ``size`` in both its
    local and its central header: a header that lies."""
    b, raw = bytearray(data), name.encode()
    local = b.find(b"PK\x03\x04")
    while local >= 0:
        n = struct.unpack_from("<H", b, local + 26)[0]
        if b[local + 30:local + 30 + n] == raw:
            struct.pack_into("<I", b, local + 22, size)
        local = b.find(b"PK\x03\x04", local + 4)
    central = b.find(b"PK\x01\x02")
    while central >= 0:
        n = struct.unpack_from("<H", b, central + 28)[0]
        if b[central + 46:central + 46 + n] == raw:
            struct.pack_into("<I", b, central + 24, size)
        central = b.find(b"PK\x01\x02", central + 4)
    return bytes(b)


def fetch_cli(dest: Path, server: Server, manifest: Path, *more: str) -> int:
    return cli(["fetch-data", "--dest", str(dest), "--base-url", server.url,
                "--manifest", str(manifest), *more])


@pytest.fixture
def writes(monkeypatch):
    """Counts the file writes of extraction (shutil.copyfileobj), passing them through."""
    calls = []
    real = shutil.copyfileobj
    monkeypatch.setattr(shutil, "copyfileobj", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_zip_bomb_refused(tmp_path, server, manifest, capsys, writes):
    """32 MiB of zeros (about 32 KiB zipped) next to 8 listed files of a few bytes: refused
    from the declared sizes before one byte is written, not retried, not kept."""
    server.body = zip_with([("bomb.bin", bytes(32 << 20))])
    assert len(server.body) < 100_000
    dest = tmp_path / "br35h"
    assert fetch_cli(dest, server, manifest) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the archive would unpack to 32.0 MiB, more than the")
    assert "nothing was unpacked" in err and "Traceback" not in err
    assert writes == [] and server.hits == 1
    assert not dest.exists() and leftovers(tmp_path) == []   # the archive is not kept


def test_zip_bomb_with_a_lying_header_is_stopped_at_its_declared_size(tmp_path, server,
                                                                      manifest, capsys):
    """A listed file that says 13 bytes but inflates to 32 MiB: the count while unpacking
    stops it (zipfile stops at the declared size and its CRC fails: damaged, retried)."""
    name = f"{TOP}/yes/y0.jpg"
    server.body = declare_size(zip_with([], {**FILES, "yes/y0.jpg": bytes(32 << 20)}), name,
                               len(FILES["yes/y0.jpg"]))
    dest = tmp_path / "br35h"
    assert fetch_cli(dest, server, manifest) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "damaged" in err or "declared size" in err
    assert not dest.exists() and leftovers(tmp_path) in ([], [".fetch-br35h-cache"])


def test_entry_count_cap(tmp_path, server, manifest, capsys, writes):
    """1,000 junk entries beside 8 listed files (the cap is 8 + 256): refused before any
    write; the cap follows the manifest's file count."""
    server.body = zip_with([(f"junk/{i}.txt", b"x") for i in range(1000)])
    dest = tmp_path / "br35h"
    assert fetch_cli(dest, server, manifest) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the archive has 1,008 entries, more than the 264 the "
                          "manifest allows (8 files plus a margin)")
    assert writes == [] and server.hits == 1 and not dest.exists()
    assert fetch.limits_for(fetch.read_manifest(paths.BR35H_CHECKSUMS)).max_entries == 3865 + 386


def test_unlisted_files_left_out(tmp_path, server, manifest, caplog):
    """Extra scans in yes/ and no/ would join notebook 06's scored scans: left out, named in
    one summary line; a dest that verifies but holds extras is reported the same way."""
    server.body = zip_with([("yes/extra.jpg", b"not Br35H"), ("no/stray.jpg", b"nor this"),
                            ("README.md", b"readme")])
    dest = tmp_path / "br35h"
    with caplog.at_level(logging.INFO):
        assert fetch_cli(dest, server, manifest) == 0
    assert files_under(dest) == sorted(FILES)
    (line,) = [m for m in warnings(caplog) if "does not list" in m]
    assert line == ("left out 3 files that fake.sha256 does not list: "
                    "README.md, no/stray.jpg, yes/extra.jpg")
    (dest / "yes" / "added.jpg").write_bytes(b"added later")
    caplog.clear()
    assert fetch_cli(dest, server, manifest) == 0 and server.hits == 1
    (line,) = warnings(caplog)
    assert "also holds 1 file the manifest does not list" in line and "yes/added.jpg" in line


def test_slow_server_hits_deadline(tmp_path, server, manifest, capsys):
    """One byte every 0.2 s against a 1 s deadline: stopped at the deadline, said so (not
    "offline"), not retried, nothing left behind."""
    server.mode, server.gap = "drip", 0.2
    dest = tmp_path / "br35h"
    t0 = time.monotonic()
    assert fetch_cli(dest, server, manifest, "--deadline", "1", "--stall-timeout", "5") == 2
    assert time.monotonic() - t0 < 3
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: deadline passed: the download from 127.0.0.1")
    assert "within 1 s (--deadline)" in err[0] and "offline" not in err[0]
    assert "To install Br35H by hand" in err[1]
    assert server.hits == 1 and not dest.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("mode", ["silent", "stall"], ids=["before-headers", "mid-body"])
def test_stalled_server_says_stalled(tmp_path, server, manifest, capsys, mode):
    """A server that was reached but then sends nothing: "stalled" after the stall timeout
    (one retry), never "offline"."""
    server.mode, server.cut = mode, 100
    dest = tmp_path / "br35h"
    t0 = time.monotonic()
    with pytest.raises(fetch.StalledError, match=r"^stalled: 127\.0\.0\.1:\d+ was reached but "
                       r"sent nothing for 0\.3 s \(--stall-timeout\)") as e:
        fetch.fetch_data(dest, base_url=server.url, manifest=manifest, stall_timeout=0.3,
                         deadline=20)
    assert "offline" not in str(e.value) and isinstance(e.value, fetch.NetworkError)
    assert time.monotonic() - t0 < 5 and server.hits == 2
    assert not dest.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("case", ["extra-link", "listed-file-is-a-link"])
def test_symlink_entry_one_line(tmp_path, server, manifest, capsys, caplog, case):
    """A symbolic link entry (to /etc, with a file 'under' it) is skipped with one line; a
    listed file that arrives as a link is skipped too and then named as missing."""
    outside = tmp_path / "outside"
    outside.mkdir()
    if case == "extra-link":
        server.body = zip_with([(special(f"{TOP}/link", stat.S_IFLNK), str(outside).encode()),
                                ("link/planted.txt", b"through the link")])
    else:
        server.body = zip_with([(special(f"{TOP}/yes/y0.jpg", stat.S_IFLNK), b"/etc/hostname")],
                               {k: v for k, v in FILES.items() if k != "yes/y0.jpg"})
    dest = tmp_path / "br35h"
    rc = fetch_cli(dest, server, manifest)
    err = capsys.readouterr().err
    assert "Traceback" not in err and list(outside.iterdir()) == []
    name = "link" if case == "extra-link" else "yes/y0.jpg"
    lines = [m for m in warnings(caplog) if "symbolic link" in m]
    assert lines and set(lines) == {f"skipped archive entry '{TOP}/{name}': a symbolic link"}
    if case == "extra-link":
        assert rc == 0 and files_under(dest) == sorted(FILES) and len(lines) == 1
    else:
        assert rc == 2 and "missing: yes/y0.jpg" in err and not dest.exists()


@pytest.mark.parametrize("name,why", [
    ("/tmp/brainseg-abs-probe.txt", "an absolute path"),
    (f"{TOP}/../../escape.txt", "'..' in its path"),
    (f"{TOP}/back\\slash.txt", "a backslash in its name"),
])
def test_unsafe_entry_names_each_one_line(tmp_path, server, manifest, caplog, name, why):
    server.body = zip_with([(zipfile.ZipInfo(name), b"payload")])
    dest = tmp_path / "sub" / "br35h"
    dest.parent.mkdir()
    assert fetch_cli(dest, server, manifest) == 0
    assert [m for m in warnings(caplog) if "skipped" in m] == \
        [f"skipped archive entry {name!r}: {why}"]
    assert [f for f in files_under(tmp_path) if ".fetch-lock" not in f] == \
        sorted([f"sub/br35h/{k}" for k in FILES] + ["fake.sha256"])  # nothing else, anywhere


@pytest.mark.parametrize("kind,why", [(stat.S_IFCHR, "a device"), (stat.S_IFBLK, "a device"),
                                      (stat.S_IFIFO, "a pipe or socket")])
def test_device_entries_each_one_line(tmp_path, server, manifest, caplog, kind, why):
    server.body = zip_with([(special(f"{TOP}/no/dev0", kind), b"")])
    dest = tmp_path / "br35h"
    assert fetch_cli(dest, server, manifest) == 0
    assert [m for m in warnings(caplog) if "skipped" in m] == \
        [f"skipped archive entry '{TOP}/no/dev0': {why}"]
    assert files_under(dest) == sorted(FILES)


@pytest.mark.parametrize("order", ["file-first", "folder-first"])
def test_file_folder_collision_one_line(tmp_path, server, manifest, capsys, caplog, order):
    """'extra' as a file and 'extra/inner.txt' under it: the file is skipped with one line,
    the inner file left out as unlisted; the listed files install."""
    pair = [("extra", b"a file"), ("extra/inner.txt", b"in a folder")]
    server.body = zip_with(pair if order == "file-first" else pair[::-1])
    dest = tmp_path / "br35h"
    assert fetch_cli(dest, server, manifest) == 0
    assert "Traceback" not in capsys.readouterr().err
    skipped = [m for m in warnings(caplog) if "skipped" in m]
    assert skipped == [f"skipped archive entry '{TOP}/extra': a file where the archive also has "
                       "a folder of that name"]
    assert files_under(dest) == sorted(FILES)


def test_enospc_one_line(tmp_path, server, manifest, capsys, monkeypatch):
    """A full disk while unpacking: one line, exit 2, the previous dest (replaced with
    --force) untouched and not renamed, the temp folder gone, the archive kept for a rerun."""
    dest = tmp_path / "br35h"
    (dest / "yes").mkdir(parents=True)
    (dest / "yes" / "y0.jpg").write_bytes(b"user's own file")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(shutil, "copyfileobj", full)
    assert fetch_cli(dest, server, manifest, "--force") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: could not write ")
    assert err[0].endswith(": No space left on device")
    assert files_under(dest) == ["yes/y0.jpg"]
    assert (dest / "yes" / "y0.jpg").read_bytes() == b"user's own file"
    assert list(tmp_path.glob("br35h.replaced-*")) == []
    assert leftovers(tmp_path) == [".fetch-br35h-cache"] and server.hits == 1
    monkeypatch.undo()
    assert fetch_cli(dest, server, manifest, "--force") == 0 and server.hits == 1  # no download


def test_os_error_outside_unpacking_is_one_line(tmp_path, server, manifest, capsys, monkeypatch):
    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))
    monkeypatch.setattr(fetch.tempfile, "mkdtemp", read_only)
    assert fetch_cli(tmp_path / "br35h", server, manifest) == 2
    assert capsys.readouterr().err == f"error: Read-only file system: {tmp_path}\n"


def test_enospc_while_downloading_is_one_line(tmp_path, server, manifest, capsys, monkeypatch):
    from brainseg_lib.data import download
    real = download.os.fdopen

    class Full:
        def __init__(self, fd, mode):
            self.f = real(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(download.os, "fdopen", Full)
    dest = tmp_path / "br35h"
    assert fetch_cli(dest, server, manifest) == 2
    err = capsys.readouterr().err
    assert err == (f"error: could not save the download in {tmp_path / '.fetch-br35h-cache'}: "
                   "No space left on device\n")
    assert not dest.exists() and leftovers(tmp_path) == []


def test_download_over_the_cap_is_not_kept(tmp_path, server, manifest):
    """The download itself is capped (the byte cap plus room for zip headers): a declared
    length over it is refused unread, an undeclared one is cut off at the cap."""
    import random
    server.body = zip_with([("big.bin", random.Random(0).randbytes(1 << 20))])  # incompressible
    dest = tmp_path / "br35h"
    with pytest.raises(fetch.FetchError, match="the manifest allows; not downloaded"):
        fetch.fetch_data(dest, base_url=server.url, manifest=manifest, max_bytes=100_000)
    assert server.hits == 1 and not dest.exists() and leftovers(tmp_path) == []
    server.mode = "nolength"
    with pytest.raises(fetch.FetchError, match="passed the 370,336 bytes the manifest allows"):
        fetch.fetch_data(dest, base_url=server.url, manifest=manifest, max_bytes=100_000)
    assert server.hits == 2 and not dest.exists() and leftovers(tmp_path) == []


def test_kaggle_copy_takes_only_listed_regular_files(tmp_path, manifest, monkeypatch, caplog):
    download = tmp_path / "kagglecache" / "versions" / "12"
    for rel, data in {**FILES, "yes/extra.jpg": b"extra"}.items():
        (download / rel).parent.mkdir(parents=True, exist_ok=True)
        (download / rel).write_bytes(data)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(FILES["no/no0.jpg"])       # same bytes: only the link check stops it
    (download / "no" / "no0.jpg").unlink()
    (download / "no" / "no0.jpg").symlink_to(secret)
    fake = type("kagglehub", (), {"dataset_download": staticmethod(
        lambda handle, force_download=False: str(download))})
    monkeypatch.setitem(__import__("sys").modules, "kagglehub", fake)
    with pytest.raises(fetch.FetchError) as e:
        fetch.fetch_data(tmp_path / "br35h", "kaggle", manifest=manifest)
    assert e.value.problems == ["missing: no/no0.jpg"]
    msgs = warnings(caplog)
    assert "skipped no/no0.jpg: a symbolic link" in msgs
    assert "left out 1 file that fake.sha256 does not list: yes/extra.jpg" in msgs


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_bounds_must_be_positive_seconds(value):
    for flag in ("--deadline", "--stall-timeout"):
        with pytest.raises(SystemExit):
            cli(["fetch-data", flag, value])


def test_manifest_listing_a_file_and_a_folder_is_refused(tmp_path):
    bad = write_manifest(tmp_path / "bad.sha256", {"a": b"1", "a/b": b"2"})
    with pytest.raises(ValueError, match="a is listed both as a file and as a folder"):
        fetch.read_manifest(bad)


# ------------------------------------------------------------ the committed manifest
def committed() -> dict[str, str]:
    return fetch.read_manifest(paths.REFERENCES_DIR / "br35h.sha256")


def test_committed_manifest_lists_the_layout():
    entries = committed()
    annotated = [k for k in entries if k.startswith("Br35H-Mask-RCNN/") and k.endswith(".jpg")]
    counts = {s: sum(k.startswith(f"Br35H-Mask-RCNN/{s}/") for k in annotated)
              for s in ("TRAIN", "VAL", "TEST")}
    assert len(annotated) == 801 and counts == {"TRAIN": 500, "VAL": 201, "TEST": 100}
    assert {k for k in entries if k.endswith(".json")} == {
        "Br35H-Mask-RCNN/TRAIN/annotations_train.json", "Br35H-Mask-RCNN/VAL/annotations_val.json",
        "Br35H-Mask-RCNN/TEST/annotations_test.json", "Br35H-Mask-RCNN/annotations_all.json"}
    tops = {k.split("/")[0] for k in entries}
    assert tops == {"Br35H-Mask-RCNN", "yes", "no", "pred"}
    assert sum(k.startswith("yes/") for k in entries) == 1500
    assert sum(k.startswith("no/") for k in entries) == 1500
    assert sum(k.startswith("pred/") for k in entries) == 60


@pytest.mark.realdata
def test_committed_manifest_matches_the_real_dataset():
    real_root = REAL_DATA_ROOT
    if not (real_root / fetch.ANCHOR).is_file():
        pytest.skip(f"real Br35H data not available at {real_root} (set BRAINSEG_DATA)")
    files = {p.relative_to(real_root).as_posix() for p in real_root.rglob("*") if p.is_file()}
    entries = committed()
    assert files == set(entries)
    assert fetch.verify_tree(real_root, entries) == []
