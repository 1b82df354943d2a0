"""fetch-data: download, per-file verification and atomic install, against a local server.

A tiny fake dataset is zipped under a GitHub-style top folder and served from
127.0.0.1; nothing here touches the internet.
"""
from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import socket
import threading
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
    full Content-Length when ``lie`` is set, i.e. a transfer that breaks off)."""

    def __init__(self):
        self.body, self.cut, self.lie, self.hits = b"", None, False, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                data = outer.body if outer.cut is None else outer.body[:outer.cut]
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(outer.body if outer.lie else data)))
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = True

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/archive"


@pytest.fixture
def server(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    s = Server()
    s.body = make_zip(FILES)
    yield s
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
    assert (dest / "README.md").is_file()  # unlisted extras come along, unchecked
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
