"""``predict`` that survives (issue 28, probes 2, 3, 4 and 10): a table kept row by row through
interrupts, full disks and odd file names; model outputs checked before they are trusted;
one-line errors for OS errors on predict's paths."""
from __future__ import annotations

import csv
import errno
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote_to_bytes

import numpy as np
import pytest
import torch
from conftest import scan_image, tiny_checkpoint_state
from PIL import Image

from brainseg_lib import cli, fileio
from brainseg_lib.apply import predict as predict_predict
from brainseg_lib.apply import table as predict_table
from brainseg_lib.model.checkpoint import save_checkpoint

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:.*integrity was NOT verified")
SIZE = 32


@pytest.fixture
def tiny_ckpt(tmp_path):
    return save_checkpoint(tiny_checkpoint_state(SIZE, 0, input_norm="none"), tmp_path / "models" / "tiny.pt")


def write_scans(folder: Path, n: int, side: int = 24) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.fromarray(scan_image(side, side + k % 5, seed=k)).save(folder / f"s{k:02d}.png")
    return folder


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:       # strict UTF-8: the table is valid text
        return list(csv.DictReader(f))


def run_cli(*argv) -> int:
    return cli.main(["predict", *map(str, argv)])


def count_calls(monkeypatch, fail_at: int | None = None, exc=KeyboardInterrupt):
    """Record every predict_file call's file name; raise ``exc`` on call number ``fail_at``."""
    real, calls = predict_predict.predict_file, []

    def wrapped(predictor, path, *a, **k):
        calls.append(path.name)
        if len(calls) == fail_at:
            raise exc()
        return real(predictor, path, *a, **k)
    monkeypatch.setattr(predict_predict, "predict_file", wrapped)
    return calls


def masks(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*_mask.png"))}


# ----------------------------------------------------------------------------- probe 2: odd names
def test_latin1_name_keeps_table(tmp_path, tiny_ckpt, capsys):
    """A Latin-1 file name (not UTF-8) gets its row, written as valid UTF-8 with the exact name
    recoverable, and its mask under the same bytes; before, the whole table failed."""
    scans = tmp_path / "scans"
    scans.mkdir()
    latin1 = os.fsdecode(b"caf\xe9 scan.png")                     # 'caf\udce9 scan.png'
    Image.fromarray(scan_image(30, 40)).save(scans / latin1)
    Image.fromarray(scan_image(30, 40, seed=1)).save(scans / "plain.png")
    out = tmp_path / "out"
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", out) == 0
    assert "2 rows written" in capsys.readouterr().out
    rows = {r["file"]: r for r in read_csv(out / "predictions.csv")}
    assert set(rows) == {"caf\\xe9 scan.png", "plain.png"}
    odd = rows["caf\\xe9 scan.png"]
    assert odd["status"] == "ok" and unquote_to_bytes(odd["file_escaped"]) == b"caf\xe9 scan.png"
    assert rows["plain.png"]["file_escaped"] == ""
    assert os.path.exists(os.fsencode(out) + b"/caf\xe9 scan_mask.png")
    assert [r["file"] for r in predict_table.read_rows(out / "predictions.csv")] == [latin1, "plain.png"]
    # the row round-trips to the real file: --resume finds it finished and redoes nothing
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", out, "--resume") == 0
    assert "2 of them finished by the earlier run" in capsys.readouterr().out


# ----------------------------------------------------------------------------- probe 3: the table survives
def test_interrupt_keeps_finished_rows_and_resumes(tmp_path, tiny_ckpt, monkeypatch, capsys):
    """12 scans interrupted after 6 and resumed: 12 rows in input order, every mask identical
    to an uninterrupted run's, no scan segmented twice, the finished masks left untouched."""
    scans = write_scans(tmp_path / "scans", 12)
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", ref) == 0
    capsys.readouterr()

    first = count_calls(monkeypatch, fail_at=7)
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", out) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "6 of 12 rows" in err and "--resume" in err
    assert len(err.strip().splitlines()) == 1
    rows = read_csv(out / "predictions.csv")
    assert [r["file"] for r in rows] == [f"s{k:02d}.png" for k in range(6)]
    assert all(r["status"] == "ok" for r in rows) and len(masks(out)) == 6
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*_mask.png")}

    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", out) == 2   # neither flag
    assert "--resume" in capsys.readouterr().err

    again = count_calls(monkeypatch)
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", out, "--resume") == 0
    assert "12 rows written" in capsys.readouterr().out
    assert first[:6] + again == [f"s{k:02d}.png" for k in range(12)]            # none twice
    assert [r["file"] for r in read_csv(out / "predictions.csv")] == [f"s{k:02d}.png" for k in range(12)]
    assert masks(out) == masks(ref)                                              # byte for byte
    assert all((p.stat().st_ino, p.stat().st_mtime_ns) == before[p.name]
               for p in out.glob("*_mask.png") if p.name in before)
    assert read_csv(out / "predictions.csv") == read_csv(ref / "predictions.csv")


KILL_SCRIPT = """
import os, signal, sys
from brainseg_lib import cli
from brainseg_lib.apply import predict
real, calls = predict.predict_file, []
def killed(*a, **k):
    calls.append(1)
    if len(calls) == 7:
        os.kill(os.getpid(), signal.SIGKILL)        # a crash: no handler, no clean-up runs
    return real(*a, **k)
predict.predict_file = killed
sys.exit(cli.main(sys.argv[1:]))
"""


def test_crash_keeps_finished_rows(tmp_path, tiny_ckpt, monkeypatch):
    """A process killed outright (SIGKILL) after 6 scans: their rows are on disk, and
    --resume does the other 6."""
    scans = write_scans(tmp_path / "scans", 12)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", BRAINSEG_PROGRESS="0")
    r = subprocess.run([sys.executable, "-c", KILL_SCRIPT, "predict", "--checkpoint", str(tiny_ckpt),
                        "--input", str(scans), "--output", str(out), "--device", "cpu"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == -9
    assert [row["file"] for row in read_csv(out / "predictions.csv")] == [f"s{k:02d}.png" for k in range(6)]
    calls = count_calls(monkeypatch)
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", out, "--resume") == 0
    assert calls == [f"s{k:02d}.png" for k in range(6, 12)]
    assert len(read_csv(out / "predictions.csv")) == 12


def test_resume_redoes_error_rows_and_masks_without_rows(tmp_path, tiny_ckpt, capsys):
    scans = write_scans(tmp_path / "scans", 4)
    out = tmp_path / "out"
    (scans / "s01.png").write_bytes(b"broken")
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", out) == 1
    Image.fromarray(scan_image(24, 25, seed=1)).save(scans / "s01.png")       # repaired
    rows = read_csv(out / "predictions.csv")
    predict_table.write_rows(out / "predictions.csv",                          # s02's row lost
                             [{**r, "file": r["file"]} for r in rows if r["file"] != "s02.png"])
    (out / "s02_mask.png").write_bytes(b"stale")
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", out, "--resume") == 0
    rows = read_csv(out / "predictions.csv")
    assert [(r["file"], r["status"]) for r in rows] == [(f"s{k:02d}.png", "ok") for k in range(4)]
    assert (out / "s02_mask.png").read_bytes() != b"stale" and (out / "s01_mask.png").is_file()
    with pytest.raises(predict_predict.PredictError, match="threshold 0.5"):   # other settings: refused
        predict_predict.run_predict(scans, out, tiny_ckpt, threshold=0.3, resume=True, device="cpu")
    with pytest.raises(predict_predict.PredictError, match="choose one"):
        predict_predict.run_predict(scans, out, tiny_ckpt, resume=True, force=True)


def enospc_from(n: int, real):
    calls = []

    def write(*a, **k):
        calls.append(1)
        if len(calls) >= n:
            raise OSError(errno.ENOSPC, "No space left on device", str(a[1] if len(a) > 1 else a[0]))
        return real(*a, **k)
    return write


def test_full_disk_keeps_rows(tmp_path, tiny_ckpt, monkeypatch, capsys):
    """The disk fills while writing the 4th mask: the run stops with one line saying how many
    rows are kept and how to resume; the 4th scan leaves nothing behind; --resume finishes."""
    scans = write_scans(tmp_path / "scans", 6)
    out = tmp_path / "out"
    monkeypatch.setattr(predict_predict, "_save_png", enospc_from(4, predict_predict._save_png))
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", out) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "No space left on device" in err and "s03_mask.png" in err and "3 of 6 rows" in err
    assert "--resume" in err
    assert [r["file"] for r in read_csv(out / "predictions.csv")] == ["s00.png", "s01.png", "s02.png"]
    assert sorted(masks(out)) == ["s00_mask.png", "s01_mask.png", "s02_mask.png"]
    monkeypatch.undo()
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", out, "--resume") == 0
    assert len(read_csv(out / "predictions.csv")) == 6 and len(masks(out)) == 6


def test_full_disk_on_the_table_removes_that_scans_mask(tmp_path, tiny_ckpt, monkeypatch, capsys):
    scans = write_scans(tmp_path / "scans", 4)
    out = tmp_path / "out"
    monkeypatch.setattr(predict_table.Table, "append", enospc_from(3, predict_table.Table.append))
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", out) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "2 of 4 rows" in err
    assert len(read_csv(out / "predictions.csv")) == 2
    assert sorted(masks(out)) == ["s00_mask.png", "s01_mask.png"]          # no mask without its row


SIZE_LIMIT_SCRIPT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
from brainseg_lib import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_file_size_limit_keeps_row_status_true(tmp_path, tiny_ckpt):
    """Under ``ulimit -f`` a scan whose overlay is too big fails as a whole: its row says error
    and no mask of it stays on disk; the small scans are ok, with their files."""
    scans = write_scans(tmp_path / "scans", 2)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 300), dtype=np.uint8)).save(scans / "s02_noisy.png")
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", BRAINSEG_PROGRESS="0")
    r = subprocess.run([sys.executable, "-c", SIZE_LIMIT_SCRIPT, "predict", "--checkpoint", str(tiny_ckpt),
                        "--input", str(scans), "--output", str(out), "--overlay", "--device", "cpu"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1, r.stderr
    rows = {row["file"]: row for row in read_csv(out / "predictions.csv")}
    assert rows["s02_noisy.png"]["status"] == "error" and "File too large" in rows["s02_noisy.png"]["error"]
    assert not (out / "s02_noisy_mask.png").exists() and not (out / "s02_noisy_overlay.png").exists()
    for k in range(2):
        assert rows[f"s{k:02d}.png"]["status"] == "ok" and (out / f"s{k:02d}_overlay.png").is_file()


# ----------------------------------------------------------------------------- probe 4: outputs checked
class NaNOnBright(torch.nn.Module):
    """The wrapped U-Net, but NaN logits for bright inputs (mean above 0.3)."""

    def __init__(self, inner, error=None):
        super().__init__()
        self.inner, self.error = inner, error

    def forward(self, x):
        out = self.inner(x)
        if float(x.mean()) > 0.3:
            if self.error is not None:
                raise self.error
            return out * float("nan")
        return out


def bright_scan(folder: Path, name: str = "s99_bright.png") -> None:
    Image.fromarray(np.clip(scan_image(24, 24, seed=9).astype(int) + 150, 0, 255).astype(np.uint8)).save(folder / name)


def patched_model(monkeypatch, error=None):
    real = predict_predict.load_predictor

    def load(*a, **k):
        p = real(*a, **k)                       # probed at load with the real model
        p.model = NaNOnBright(p.model, error)
        return p
    monkeypatch.setattr(predict_predict, "load_predictor", load)


def test_nan_output_is_error_not_no_tumour(tmp_path, tiny_ckpt, monkeypatch, capsys):
    scans = write_scans(tmp_path / "scans", 2)
    bright_scan(scans)
    patched_model(monkeypatch)
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", tmp_path / "o") == 1
    rows = {r["file"]: r for r in read_csv(tmp_path / "o" / "predictions.csv")}
    bad = rows["s99_bright.png"]
    assert bad["status"] == "error" and "NaN" in bad["error"] and bad["tumour"] == "" and bad["max_prob"] == ""
    assert not (tmp_path / "o" / "s99_bright_mask.png").exists()
    assert rows["s00.png"]["status"] == "ok"


def test_nan_model_is_refused_at_load(tmp_path, capsys):
    state = tiny_checkpoint_state(SIZE, 0, input_norm="none")
    state["state_dict"]["head.bias"] = torch.full_like(state["state_dict"]["head.bias"], float("nan"))
    ckpt = save_checkpoint(state, tmp_path / "nan.pt")
    scans = write_scans(tmp_path / "scans", 1)
    assert run_cli("--checkpoint", ckpt, "--input", scans, "--output", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "refusing the model" in err and "NaN" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_out_of_memory_is_one_files_error(tmp_path, tiny_ckpt, monkeypatch, capsys):
    scans = write_scans(tmp_path / "scans", 2)
    bright_scan(scans)
    for k, error in enumerate([MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:117] "
                                                          "DefaultCPUAllocator: not enough memory")]):
        patched_model(monkeypatch, error)
        out = tmp_path / f"o{k}"
        assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", out) == 1
        rows = {r["file"]: r for r in read_csv(out / "predictions.csv")}
        assert rows["s99_bright.png"]["status"] == "error" and "out of memory" in rows["s99_bright.png"]["error"]
        assert rows["s00.png"]["status"] == rows["s01.png"]["status"] == "ok"
        monkeypatch.undo()


# ----------------------------------------------------------------------------- probe 10: OS errors, one line
def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return err


def test_readonly_output_one_line(tmp_path, tiny_ckpt, monkeypatch, capsys):
    """--output on a read-only file system (EROFS, simulated where files are created)."""
    scans = write_scans(tmp_path / "scans", 1)

    def erofs(*a, dir=None, **k):
        raise OSError(errno.EROFS, "Read-only file system", dir)
    monkeypatch.setattr(fileio.tempfile, "mkstemp", erofs)
    out = tmp_path / "ro"
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", out) == 2
    err = one_line_error(capsys)
    assert f"{out}: Read-only file system" in err


def test_output_not_a_directory_one_line(tmp_path, tiny_ckpt, capsys):
    scans = write_scans(tmp_path / "scans", 1)
    (tmp_path / "afile").write_text("x")
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", tmp_path / "afile" / "out") == 2
    err = one_line_error(capsys)
    assert "afile" in err and "Not a directory (a file stands where a folder is needed)" in err


@pytest.mark.parametrize("var", ["BRAINSEG_RESULTS", "BRAINSEG_CACHE"])
def test_results_or_cache_that_is_a_file_one_line(tmp_path, tiny_ckpt, fake_root, monkeypatch, capsys, var):
    """A results or cache folder that is a file: one line naming it, exit 2 (a traceback before)."""
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv(var, str(tmp_path / "afile"))
    argv = (["headline"] if var == "BRAINSEG_RESULTS" else
            ["--data", str(fake_root), "evaluate", "--checkpoint", str(tiny_ckpt), "--split", "test",
             "--device", "cpu"])
    assert cli.main(argv) == 2
    err = one_line_error(capsys)
    assert str(tmp_path / "afile") in err and "a file stands where a folder is needed" in err
    scans = write_scans(tmp_path / "scans", 1)                  # predict does not need either
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", tmp_path / "o") == 0


def test_os_error_line_names_the_path():
    e = OSError(errno.ENOSPC, "No space left on device", "/data/out/x.png")
    assert cli.os_error_line(e) == "/data/out/x.png: No space left on device"
    assert cli.os_error_line(OSError("plain")) == "plain"
