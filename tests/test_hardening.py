"""Hardening: bad inputs give a clear error naming the file, or a documented, warned skip.

Already covered elsewhere, so not repeated here:

* truncated JPEG, zero-byte image, garbage bytes (alone and inside a split):
  tests/test_data.py::TestImageErrors
* annotations JSON that is not valid JSON, references a missing image, holds
  NaN coordinates; an image the JSON does not mention (skipped with a warning
  and a count): tests/test_data.py::TestDatasetErrors
* coordinates outside the image, on ``rasterize`` itself:
  tests/test_data.py::TestRasterize::test_points_outside_image_are_clipped
* interrupted training resumes exactly: tests/test_train.py::test_resume_*
* pickle payloads in checkpoints are refused: tests/test_checkpoint.py

Added here: negative coordinates through the loader and the cache, infinite
coordinates and non-UTF-8 bytes in the JSON, no cache left by a failed build,
broken files fed to ``predict``, and the released model's checksum.
"""
from __future__ import annotations

import csv
import os
import warnings

import numpy as np
import pytest
import torch
from conftest import circle, ellipse, polygon, scan_image, write_image, write_via

from brainseg_lib import cli, paths
from brainseg_lib.data import br35h as data_br35h
from brainseg_lib.data import cache as data_cache
from brainseg_lib.data.errors import ImageReadError
from brainseg_lib.model import released as predict_released
from brainseg_lib.model.checkpoint import CheckpointError, save_checkpoint
from brainseg_lib.model.unet import UNet
from brainseg_lib.training.config import TrainConfig

torch.set_num_threads(1)


def split_folder(root, split):
    return root / data_br35h.ANNOTATED_DIR / data_br35h.SPLIT_FOLDERS[split]


# ============================================================================= annotations
def test_negative_coordinates_are_clipped_through_the_loader(fake_root):
    # VAL: y500.jpg is 50 high x 40 wide, y501.png 36 x 36 (conftest.FAKE_LAYOUT).
    # Documented rule (data module docstring): coordinates outside the image are clipped.
    folder = split_folder(fake_root, "val")
    write_via(folder / "annotations_val.json", {
        # a rectangle from (-15, -20) to (10, 12): only rows 0..12, columns 0..10 are inside
        "y500.jpg": [polygon([-15, 10, 10, -15], [-20, -20, 12, 12])],
        # a region wholly at negative coordinates, and an ellipse centred left of the image
        "y501.png": [circle(-30, -30, 5), ellipse(-4, 18, 8, 5)],
    })
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # clipping is silent, not a skip
        samples = {s.name: s for s in data_br35h.iter_samples("val", fake_root)}
    m = samples["y500.jpg"].mask
    assert m.shape == samples["y500.jpg"].image.shape == (50, 40) and m.dtype == bool
    assert m[:13, :11].all()                                 # the part inside the image
    assert not m[13:, :].any() and not m[:, 11:].any()       # nothing beyond the clipped shape
    m = samples["y501.png"].mask
    assert m.shape == (36, 36)
    assert m[18, 0] and m[18, 3] and not m[18, 4]            # ellipse reaches x = -4 + 8 = 4 (exclusive)
    assert not m[:12, :].any() and not m[25:, :].any() and not m[:, 4:].any()

    arr = data_cache.load_split("val", 16, root=fake_root, progress=False)
    assert set(np.unique(arr.masks)) <= {0, 1} and arr.masks.reshape(2, -1).any(1).all()
    np.testing.assert_allclose(arr.native_tumour_fraction,
                               [samples[n].mask.mean() for n in arr.names])


def test_infinite_coordinates_in_json(fake_root):
    folder = split_folder(fake_root, "test")
    write_via(folder / "annotations_test.json", {
        "y701.jpg": [circle(24, 16, 6)], "y702.png": [circle(5, 5, 2), polygon([1, 9, float("inf")], [1, 1, 9])]})
    assert "Infinity" in (folder / "annotations_test.json").read_text()
    with pytest.raises(data_br35h.AnnotationError, match=r"y702\.png region 1 \(polygon\).*infinite"):
        data_cache.load_split("test", 16, root=fake_root)


def test_annotations_that_are_not_utf8(fake_root):
    jpath = data_br35h.annotations_path("train", fake_root)
    jpath.write_bytes(b'{"y0.jpg1": {"filename": "y\xe9\xff.jpg", "regions": []}}')
    with pytest.raises(data_br35h.AnnotationError) as e:
        data_cache.load_split("train", 16, root=fake_root)
    assert str(jpath) in str(e.value) and "not valid JSON" in str(e.value)


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_failed_build_leaves_no_cache(fake_root, isolated_dirs, damage):
    p = split_folder(fake_root, "train") / "y2.jpg"
    good = p.read_bytes()
    p.write_bytes(good[: len(good) // 3] if damage == "truncate" else b"")
    with pytest.raises(ImageReadError, match="y2.jpg"):
        data_cache.load_split("train", 16, root=fake_root)
    assert list(isolated_dirs["cache"].iterdir()) == []     # no partial .npz, no temp file
    p.write_bytes(good)                                      # repaired: builds and caches
    assert len(data_cache.load_split("train", 16, root=fake_root, progress=False)) == 4
    assert data_cache.cache_path("train", 16).is_file()


# ============================================================================= predict on broken files
def tiny_checkpoint(path):
    torch.manual_seed(0)
    m = UNet(base=4)
    return save_checkpoint({"state_dict": m.state_dict(), "model_config": m.config(),
                            "train_config": TrainConfig(image_size=32, base_width=4).to_dict()}, path)


def test_predict_reports_broken_files_and_goes_on(tmp_path, capsys):
    inp = tmp_path / "scans"
    inp.mkdir()
    good = write_image(inp / "b_good.jpg", scan_image(48, 30)).read_bytes()
    (inp / "a_cut.jpg").write_bytes(good[: len(good) // 2])
    (inp / "c_empty.png").write_bytes(b"")
    (inp / "d_header.jpg").write_bytes(good[:40])
    (inp / "e_png_named.tif").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    ck = tiny_checkpoint(tmp_path / "m.pt")
    rc = cli.main(["predict", "--checkpoint", str(ck), "--input", str(inp),
                   "--output", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1
    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert len(rows) == 5 and rows["b_good.jpg"]["status"] == "ok"
    assert (tmp_path / "out" / "b_good_mask.png").is_file()
    for name in ("a_cut.jpg", "c_empty.png", "d_header.jpg", "e_png_named.tif"):
        assert rows[name]["status"] == "error" and name in rows[name]["error"]
        assert f"error: {name}:" in err
        assert not (tmp_path / "out" / f"{name.rsplit('.', 1)[0]}_mask.png").exists()
    assert "empty (0 bytes)" in rows["c_empty.png"]["error"]


# ============================================================================= the released model
@pytest.fixture
def released(tmp_path):
    return predict_released.release_model(tiny_checkpoint(tmp_path / "run" / "best.pt"),
                                 tmp_path / "models" / "brainseg-cpu.pt")


@pytest.mark.parametrize("tamper", ["flip_byte", "append", "truncate", "swap_weights"])
def test_load_released_refuses_a_modified_file(released, tmp_path, tamper):
    b = bytearray(released.read_bytes())
    if tamper == "flip_byte":
        b[len(b) // 2] ^= 0x01
    elif tamper == "append":
        b += b"\0"
    elif tamper == "truncate":
        b = b[:-100]
    else:                              # a valid checkpoint, just not the one that was released
        other = tiny_checkpoint(tmp_path / "other.pt")
        b = other.read_bytes()
    released.write_bytes(bytes(b))
    with pytest.raises(CheckpointError, match="modified or corrupted") as e:
        predict_released.load_released(released)
    assert "brainseg-cpu.pt" in str(e.value) and "SHA-256" in str(e.value)


def test_load_released_refuses_a_missing_or_malformed_checksum(released):
    side = predict_released.checksum_path(released)
    side.write_text("not-a-digest  brainseg-cpu.pt\n")
    with pytest.raises(CheckpointError, match="not a SHA-256 checksum file"):
        predict_released.load_released(released)
    side.write_text("")
    with pytest.raises(CheckpointError, match="not a SHA-256 checksum file"):
        predict_released.load_released(released)
    side.unlink()
    with pytest.raises(CheckpointError, match="no checksum file"):
        predict_released.load_released(released)


class Payload:
    """Unpickling this would create a marker file: proof that code ran on load."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mknod if hasattr(os, "mknod") else open, (self.marker,))


def test_matching_checksum_does_not_make_a_pickle_safe(tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "models" / "brainseg-cpu.pt"
    evil.parent.mkdir()
    m = UNet(base=2)
    torch.save({"state_dict": m.state_dict(), "model_config": m.config(), "x": Payload(marker)}, evil)
    predict_released.checksum_path(evil).write_text(f"{data_cache.sha256_file(evil)}  {evil.name}\n")
    assert predict_released.verify_checksum(evil)                      # the checksum itself is fine
    with pytest.raises(CheckpointError, match="pickle payload"):
        predict_released.load_released(evil)
    assert not marker.exists()


def test_cli_with_a_tampered_released_model_exits_2(released, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "released_model", lambda: released)
    with open(released, "ab") as f:
        f.write(b"x")
    img = write_image(tmp_path / "x.png", scan_image(20, 20))
    assert cli.main(["predict", "--input", str(img), "--output", str(tmp_path / "o")]) == 2
    assert "modified or corrupted" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_release_writes_atomically(released, tmp_path, monkeypatch):
    folder = released.parent
    assert sorted(p.name for p in folder.iterdir()) == ["brainseg-cpu.pt", "brainseg-cpu.pt.sha256"]
    assert predict_released.checksum_path(released).read_text().endswith("  brainseg-cpu.pt\n")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def disk_full(obj, f):          # some bytes written, then a failure (atomic_write passes an open file)
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    src = tmp_path / "run" / "best.pt"                       # the fixture's checkpoint
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        predict_released.release_model(src, released)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before   # no temp file left
    assert predict_released.verify_checksum(released)


def test_tests_never_write_the_real_released_model(released):
    assert paths.PROJECT_ROOT not in released.parents


# --------------------------------------------------------------------------- hostile outputs (issue 15, part 5)
def test_csv_cells_that_start_a_formula_are_escaped():
    from brainseg_lib.apply.scans import csv_safe
    for bad in ('=HYPERLINK("http://x","x").png', "+1.png", "-2.png", "@a.png", "\tx.png", "\rx.png"):
        assert csv_safe(bad) == "'" + bad
    assert csv_safe("scan.png") == "scan.png" and csv_safe(0.5) == 0.5


def test_control_characters_are_escaped_before_printing():
    from brainseg_lib.apply.scans import printable
    assert printable("a\x1b[31mred\x07.png") == "a\\x1b[31mred\\x07.png"
    assert printable("é ok.png") == "é ok.png"
    assert printable("x\u202ey") == "x\\u202ey"


# --------------------------------------------------------------------------- untrusted checkpoint configs (issue 15, part 4)
@pytest.mark.parametrize("patch, message", [
    ({"model_config": {"base": 4096}}, "model_config.base must be an integer in \\[1, 256\\]"),
    ({"model_config": {"in_channels": "x"}}, "model_config.in_channels must be an integer"),
    ({"model_config": {"input_norm": "magic"}}, "input_norm must be one of"),
    ({"train_config": {"image_size": 10**6}}, "image_size must be an integer in \\[16, 1024\\]"),
    ({"train_config": {"image_size": 100}}, "multiple of 16"),
])
def test_checkpoint_configs_are_validated_before_allocation(tmp_path, patch, message):
    from brainseg_lib.apply import predict as predict_predict
    from brainseg_lib.model.checkpoint import CheckpointError, save_checkpoint
    from brainseg_lib.model.unet import UNet
    m = UNet(base=4)
    ck = {"state_dict": m.state_dict(), "model_config": m.config(), "train_config": {"image_size": 32}}
    for section, values in patch.items():
        ck[section] = {**ck[section], **values}
    path = save_checkpoint(ck, tmp_path / "evil.pt")
    with pytest.warns(predict_predict.UnverifiedCheckpoint), pytest.raises(CheckpointError, match=message):
        predict_predict.load_predictor(path, device="cpu")


def test_checkpoint_without_sidecar_warns_loudly(tmp_path, capsys):
    from PIL import Image

    from brainseg_lib import cli
    from brainseg_lib.model.checkpoint import save_checkpoint
    from brainseg_lib.model.unet import UNet
    m = UNet(base=4)
    path = save_checkpoint({"state_dict": m.state_dict(), "model_config": m.config(),
                            "train_config": {"image_size": 32}}, tmp_path / "plain.pt")
    scans = tmp_path / "scans"
    scans.mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(scans / "a.png")
    assert cli.main(["predict", "--checkpoint", str(path), "--input", str(scans), "--output",
                     str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "WARNING:" in err and "NOT verified" in err and "plain.pt.sha256" in err


# --------------------------------------------------------------------------- absurd annotations (issue 15, part 3)
def test_absurd_coordinates_are_rejected_fast_with_file_and_region():
    import time

    from brainseg_lib.data import br35h as data_br35h
    t0 = time.perf_counter()
    poly = {"name": "polygon", "all_points_x": [10, 5e7, 20], "all_points_y": [10, 20, 30]}
    with pytest.raises(data_br35h.AnnotationError, match=r"scan.jpg region 0 \(polygon\).*x=5e\+07"):
        data_br35h.rasterize([poly], 300, 300, source="scan.jpg")
    circ = {"name": "circle", "cx": 10, "cy": 10, "r": 1e9}
    with pytest.raises(data_br35h.AnnotationError, match="radius=1e\\+09"):
        data_br35h.rasterize([circ], 300, 300, source="scan.jpg")
    assert time.perf_counter() - t0 < 1.0


def test_slightly_outside_coordinates_are_clipped():
    from brainseg_lib.data import br35h as data_br35h
    poly = {"name": "polygon", "all_points_x": [-20, 50, 50, -20], "all_points_y": [-10, -10, 40, 40]}
    m = data_br35h.rasterize([poly], 100, 100)
    assert m[:40, :50].all() and not m[45:, 55:].any()


def test_check_data_rasterises_and_fails_where_train_would(tmp_path, via, capsys):
    import json

    from brainseg_lib import cli
    from brainseg_lib.data import br35h as data_br35h
    root = via.build_fake_br35h(tmp_path / "br35h")
    assert cli.main(["--data", str(root), "check-data"]) == 1           # counts differ from Br35H's
    assert "error:" not in capsys.readouterr().err                     # but everything rasterises
    jpath = data_br35h.annotations_path("train", root)
    anns = json.loads(jpath.read_text())
    first = next(iter(anns.values()))
    first["regions"][0]["shape_attributes"] = {"name": "circle", "cx": float("nan"), "cy": 5, "r": 3}
    jpath.write_text(json.dumps(anns))
    assert cli.main(["--data", str(root), "check-data"]) == 1
    err = capsys.readouterr().err
    assert "NaN" in err and first["filename"] in err


def test_atomic_copy_keeps_the_old_bytes_when_the_source_is_replaced(tmp_path, monkeypatch):
    """best.pt is a hard link to last.pt of its epoch: the next last.pt (a new file, renamed
    into place) leaves it as it was; without hard links the bytes are copied."""
    from brainseg_lib.fileio import atomic_copy, atomic_write
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    atomic_write(last, lambda f: f.write(b"epoch 3"))
    atomic_copy(last, best)
    assert os.path.samefile(last, best)
    atomic_write(last, lambda f: f.write(b"epoch 4"))
    assert best.read_bytes() == b"epoch 3" and last.read_bytes() == b"epoch 4"

    def no_link(*a):
        raise OSError("hard links not supported")
    monkeypatch.setattr(os, "link", no_link)
    atomic_copy(last, best)
    assert best.read_bytes() == b"epoch 4" and not os.path.samefile(last, best)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]   # no temp left
