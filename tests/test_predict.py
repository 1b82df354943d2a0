"""brainseg_lib.predict and ``python -m brainseg_lib predict``: your own scans in, masks out."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import scan_image, tiny_checkpoint_state
from PIL import Image

from brainseg_lib import cli, paths
from brainseg_lib.apply import predict as predict_predict
from brainseg_lib.apply import scans as predict_scans
from brainseg_lib.data import cache, images
from brainseg_lib.inference import to_native
from brainseg_lib.model import released as predict_released
from brainseg_lib.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from brainseg_lib.model.unet import UNet

torch.set_num_threads(1)

SIZE = 32


def tiny_state(seed: int = 0) -> dict:
    """The shared tiny checkpoint (conftest.tiny_checkpoint_state) at this module's size."""
    return tiny_checkpoint_state(SIZE, seed, input_norm="none")


@pytest.fixture
def tiny_ckpt(tmp_path):
    return save_checkpoint(tiny_state(), tmp_path / "models" / "tiny.pt")


def reference_prob(ckpt, path) -> np.ndarray:
    """The native-size probability map computed directly, without predict.py's pipeline. It
    shares resize_image and to_native with predict.py; those two are pinned by hand below."""
    model = model_from_checkpoint(load_checkpoint(ckpt))
    img = images.read_grayscale(path)
    x = torch.tensor(images.resize_image(img, SIZE)).float().div(255)[None, None]
    with torch.no_grad():
        prob = torch.sigmoid(model(x))[0, 0].numpy()
    return to_native(prob, *img.shape)


# Mixed inputs: name -> (height, width, how it is written). Non-square, different sizes.
MIXED = {
    "a_rgb.jpg": (37, 53, "RGB"),
    "b_gray.png": (64, 21, "L"),
    "c_16bit.png": (45, 30, "I;16"),
    "d_rgba.png": (50, 70, "RGBA"),
    "e_palette.bmp": (33, 41, "P"),
    "f_cmyk.jpg": (29, 61, "CMYK"),
    "g_cmyk.tif": (40, 23, "CMYK"),
}
BAD = {"h_corrupt.jpg": "random bytes", "i_notes.txt": "text"}


def write_mixed(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, (h, w, mode)) in enumerate(MIXED.items()):
        g = scan_image(h, w, seed=i)
        if mode == "I;16":
            im = Image.fromarray(g.astype(np.uint16) * 257)
        elif mode == "P":
            rgb = np.stack([g, 255 - g, g // 2], -1)
            im = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        else:
            im = Image.fromarray(g).convert(mode)
        im.save(folder / name)
        with Image.open(folder / name) as check:
            assert check.mode == mode and check.size == (w, h), (name, check.mode)
    (folder / "h_corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(3000))
    (folder / "i_notes.txt").write_text("not an image\n")
    return folder


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def run_cli(*argv) -> int:
    return cli.main(["predict", *map(str, argv)])


# ----------------------------------------------------------------------------- the mixed folder
def test_mixed_folder_end_to_end(tmp_path, tiny_ckpt, capsys):
    inp, out = write_mixed(tmp_path / "scans"), tmp_path / "out"
    rc = run_cli("--checkpoint", tiny_ckpt, "--input", inp, "--output", out, "--overlay",
                 "--device", "cpu")
    err = capsys.readouterr().err
    assert rc == 1                                      # the corrupt file and the .txt failed
    assert "h_corrupt.jpg" in err and "i_notes.txt" in err

    rows = read_csv(out / "predictions.csv")
    assert list(rows[0]) == predict_predict.CSV_COLUMNS
    assert [r["file"] for r in rows] == sorted([*MIXED, *BAD])   # one row per file, sorted
    by = {r["file"]: r for r in rows}
    for name, (h, w, _) in MIXED.items():
        r = by[name]
        assert r["status"] == "ok" and r["error"] == ""
        stem = name.rsplit(".", 1)[0]
        with Image.open(out / f"{stem}_mask.png") as im:
            assert im.format == "PNG" and im.mode == "L" and im.size == (w, h)
            mask = np.asarray(im)
        assert set(np.unique(mask)) <= {0, 255}
        assert 0 < (mask == 255).sum() < mask.size          # the tiny model is calibrated for this
        assert (int(r["width"]), int(r["height"])) == (w, h)
        assert int(r["tumour_pixels"]) == int((mask == 255).sum())
        assert float(r["tumour_fraction"]) == pytest.approx((mask == 255).mean(), rel=1e-5)
        assert r["tumour"] == ("yes" if (mask == 255).any() else "no")
        assert 0.0 <= float(r["max_prob"]) <= 1.0
        assert (float(r["max_prob"]) >= 0.5) == (r["tumour"] == "yes")
        with Image.open(out / f"{stem}_overlay.png") as ov:
            assert ov.mode == "RGB" and ov.size == (w, h)
    for name, word in (("h_corrupt.jpg", "not a readable image"), ("i_notes.txt", "unsupported file type")):
        assert by[name]["status"] == "error" and word in by[name]["error"]
        assert by[name]["width"] == "" and by[name]["tumour"] == ""
    assert not (out / "h_corrupt_mask.png").exists() and not (out / "i_notes_mask.png").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    # again without --force: refused up front (exit 2), nothing touched
    before = snapshot(out)
    capsys.readouterr()
    assert run_cli("--checkpoint", tiny_ckpt, "--input", inp, "--output", out, "--overlay") == 2
    err = capsys.readouterr().err
    assert "--force" in err and "a_rgb_mask.png" in err
    assert snapshot(out) == before

    # with --force: overwritten (threshold 0 makes every pixel tumour)
    assert run_cli("--checkpoint", tiny_ckpt, "--input", inp, "--output", out, "--force",
                   "--threshold", "0") == 1
    for name, (h, w, _) in MIXED.items():
        stem = name.rsplit(".", 1)[0]
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        assert mask.shape == (h, w) and (mask == 255).all()
        assert (out / f"{stem}_overlay.png").read_bytes() == before[f"{stem}_overlay.png"][0]
    assert all(r["tumour"] == "yes" for r in read_csv(out / "predictions.csv") if r["status"] == "ok")


def test_mask_matches_an_independent_computation(tmp_path, tiny_ckpt):
    img = tmp_path / "in" / "scan.png"
    img.parent.mkdir()
    Image.fromarray(scan_image(57, 83, seed=3)).convert("RGB").save(img)
    prob = reference_prob(tiny_ckpt, img)
    t = float(np.median(prob))                     # a threshold that gives a non-trivial mask
    run = predict_predict.run_predict(img, tmp_path / "out", tiny_ckpt, threshold=t, overlay=True,
                              device="cpu")
    assert run.n_failed == 0 and len(run.rows) == 1
    mask = np.asarray(Image.open(tmp_path / "out" / "scan_mask.png")) == 255
    assert 0 < mask.sum() < mask.size
    disagree = mask != (prob >= t)
    assert disagree.sum() <= 2                     # float rounding at the threshold only
    row = run.rows[0]
    assert row["max_prob"] == pytest.approx(float(prob.max()), abs=1e-5)
    # the overlay: gray scan, cyan (the report's prediction colour) exactly on the outline of the mask
    ov = np.asarray(Image.open(tmp_path / "out" / "scan_overlay.png"))
    red = (ov == predict_scans.PRED_RGB).all(-1)
    assert red.any() and not red[~mask].any() and red[mask].sum() < mask.sum()


def test_to_native_is_half_pixel_bilinear_worked_by_hand():
    # Output pixel x samples the input at src = (x + 0.5) * in/out - 0.5 (pixel centres line
    # up, align_corners=False), clamped to [0, in - 1]. Widening 2 -> 4 (in/out = 0.5):
    # src = -0.25 -> 0, 0.25, 0.75, 1.25 -> 1, so [0, 1] becomes [0, .25, .75, 1]
    # (align_corners=True would give x / 3: [0, 1/3, 2/3, 1]).
    got = to_native(np.array([[0., 1.]], np.float32), 1, 4)
    np.testing.assert_allclose(got, [[0, 0.25, 0.75, 1]], atol=1e-7)
    # narrowing 4 -> 2 (in/out = 2): src = 0.5 and 2.5, two-tap (no anti-aliasing)
    got = to_native(np.array([[0., 1., 2., 3.]], np.float32), 1, 2)
    np.testing.assert_allclose(got, [[0.5, 2.5]], atol=1e-7)


def test_resize_image_is_pil_bilinear_worked_by_hand():
    # PIL's bilinear: output pixel x is centred at c = (x + 0.5) * in/out; input pixel i weighs
    # max(0, 1 - |i + 0.5 - c| / f), f = max(1, in/out), weights normalised over the image.
    # Widening [0, 100] to 4: c = .25 -> only pixel 0 -> 0; c = .75 -> .75*0 + .25*100 = 25;
    # symmetrically 75 and 100. Every row is the same (one input row).
    got = images.resize_image(np.array([[0, 100]], np.uint8), 4)
    assert got.tolist() == [[0, 25, 75, 100]] * 4
    # Shrinking [0, 40, 80, 120] to 2 is anti-aliased (f = 2): c = 1 gives weights .75, .75,
    # .25, 0, so (30 + 20) / 1.75 = 28.6 -> 29; c = 3: (10 + 60 + 90) / 1.75 = 91.4 -> 91.
    # (A two-tap bilinear would give 20 and 100.)
    got = images.resize_image(np.tile(np.array([0, 40, 80, 120], np.uint8), (4, 1)), 2)
    assert got.tolist() == [[29, 91]] * 2


@pytest.mark.parametrize("side, width", [(100, 1), (520, 2), (900, 4)])
def test_overlay_outline(side, width):
    gray = np.full((side, side + 30), 90, np.uint8)
    mask = np.zeros(gray.shape, bool)
    q = side // 4
    mask[q:3 * q, q:3 * q] = True                          # a square tumour
    mask[:q, -q:] = True                                   # and one touching the image edge
    ov = predict_scans.overlay_image(gray, mask)
    assert ov.shape == (*gray.shape, 3) and ov.dtype == np.uint8
    red = (ov == predict_scans.PRED_RGB).all(-1)           # the outline ("red" before: now cyan)
    assert (ov[~red] == 90).all()                          # the scan elsewhere, unchanged gray
    row = red[side // 2]                                   # a row through the square
    assert row[q:q + width].all() and not row[q + width:3 * q - width].any()
    assert not row[:q - width].any()                       # outline stays within ~width of the edge
    assert red[0, -q:].all() and red[:q, -1].all()         # the image border closes the outline
    empty = predict_scans.overlay_image(gray, np.zeros_like(mask), mark_empty=False)
    assert not (empty == predict_scans.PRED_RGB).all(-1).any()


def whole_image_overlay(gray, mask):
    """The outline drawn over the whole image, as predict did before it looked only at the
    tumour's box: the reference the faster drawing must equal pixel for pixel."""
    from scipy.ndimage import maximum_filter1d
    p = np.pad(mask, 1)
    edge = mask & ~(p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:])
    width = max(1, round(min(mask.shape) / 256))
    if width > 1:
        size = 2 * width - 1
        edge = maximum_filter1d(maximum_filter1d(edge.view(np.uint8), size, axis=0), size, axis=1) > 0
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgb[edge] = predict_scans.OUTLINE_RGB
    return rgb


@pytest.mark.parametrize("shape", [(90, 130), (700, 520), (1300, 40), (1, 1)])
def test_overlay_in_the_tumour_box_equals_the_whole_image_outline(shape):
    rng = np.random.default_rng(shape[0])
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    masks = [np.zeros(shape, bool), np.ones(shape, bool), rng.random(shape) < 0.02,
             (yy - h / 3) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 4) ** 2, (yy == h - 1) | (xx < 2)]
    gray = rng.integers(0, 256, shape, dtype=np.uint8)
    for mask in masks:
        assert np.array_equal(predict_scans.overlay_image(gray, mask, mark_empty=False),
                              whole_image_overlay(gray, mask))


def test_overlay_benchmark_reports_the_real_scan(tmp_path, tiny_ckpt):
    from brainseg_lib.study.bench_predict import time_predict_overlay
    scan = tmp_path / "y1.jpg"
    Image.fromarray(scan_image(40, 50)).convert("RGB").save(scan)
    r = time_predict_overlay(96, checkpoint=tiny_ckpt, repeats=1, scan=scan)
    assert r["kind"] == "predict_overlay" and r["side"] == 96 and len(r["seconds_runs"]) == 1
    assert r["scan"].startswith("Br35H y1.jpg (RGB) scaled to 96x96")
    assert set(r["stages_seconds"]) == {"load_model", "read_scan", "network_and_resize_back",
                                        "draw_outline", "mask_png", "overlay_png"}
    assert r["synthetic_seconds_median"] > 0 and 0 < r["tumour_fraction"] < 1


def test_single_file_ok_exit_zero(tmp_path, tiny_ckpt, capsys):
    img = tmp_path / "one.jpg"
    Image.fromarray(scan_image(40, 24)).save(img)
    assert run_cli("--checkpoint", tiny_ckpt, "--input", img, "--output", tmp_path / "o") == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["one_mask.png", "predictions.csv"]
    assert "1 of 1 file(s)" in capsys.readouterr().out


def test_same_stem_inputs_get_distinct_outputs(tmp_path, tiny_ckpt):
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("scan.jpg", "scan.png", "other.bmp"):
        Image.fromarray(scan_image(20, 30)).save(inp / name)
    (inp / ".DS_Store").write_bytes(b"\0\1")               # hidden files are ignored
    (inp / "sub").mkdir()                                  # sub-folders too
    run = predict_predict.run_predict(inp, tmp_path / "out", tiny_ckpt, device="cpu")
    assert run.n_failed == 0 and [r["file"] for r in run.rows] == ["other.bmp", "scan.jpg", "scan.png"]
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "other_mask.png", "scan_jpg_mask.png", "scan_png_mask.png", "predictions.csv"}


def test_output_folder_equal_to_input_folder_is_refused(tmp_path, tiny_ckpt):
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(scan_image(20, 30)).save(inp / "a.png")
    with pytest.raises(predict_predict.PredictError, match="output folder is the input folder"):
        predict_predict.run_predict(inp, inp, tiny_ckpt)
    assert [p.name for p in inp.iterdir()] == ["a.png"]


@pytest.mark.parametrize("argv, message", [
    (["--threshold", "1.5"], "between 0 and 1"),
    (["--input", "{tmp}/nowhere"], "input not found"),
    (["--checkpoint", "{tmp}/none.pt"], "checkpoint not found"),
])
def test_bad_arguments_exit_2_and_write_nothing(tmp_path, tiny_ckpt, capsys, argv, message):
    img = tmp_path / "x.png"
    Image.fromarray(scan_image(20, 20)).save(img)
    base = {"--checkpoint": str(tiny_ckpt), "--input": str(img), "--output": str(tmp_path / "o")}
    opts = dict(zip(argv[::2], [a.format(tmp=tmp_path) for a in argv[1::2]]))
    args = [x for kv in {**base, **opts}.items() for x in kv]
    assert run_cli(*args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message shown without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tmp_path, tiny_ckpt, capsys):
    img = tmp_path / "x.png"
    Image.fromarray(scan_image(20, 20)).save(img)
    assert run_cli("--checkpoint", tiny_ckpt, "--input", img, "--output", tmp_path / "o",
                   "--device", "cuda") == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_help_documents_every_option():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "brainseg_lib", "predict", "--help"],
                       capture_output=True, text=True, cwd=paths.PROJECT_ROOT, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    for opt in ("--checkpoint", "--input", "--output", "--threshold", "--overlay", "--device",
                "--force", "auto,cpu,cuda", "brainseg-cpu.pt", "predictions.csv", "Exit status"):
        assert opt in r.stdout, opt


# ----------------------------------------------------------------------------- the released model
def test_released_model_path(monkeypatch, tmp_path):
    monkeypatch.delenv("BRAINSEG_MODEL", raising=False)
    monkeypatch.setenv("BRAINSEG_RESULTS", str(tmp_path / "r"))
    assert paths.released_model() == tmp_path / "r" / "models" / "brainseg-cpu.pt"
    monkeypatch.delenv("BRAINSEG_RESULTS")
    assert paths.released_model() == paths.PROJECT_ROOT / "results" / "models" / "brainseg-cpu.pt"


def test_missing_released_model_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "released_model", lambda: tmp_path / "models" / "brainseg-cpu.pt")
    img = tmp_path / "x.png"
    Image.fromarray(scan_image(20, 20)).save(img)
    assert run_cli("--input", img, "--output", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--checkpoint" in err and "./run_all.sh" in err


def full_training_checkpoint(tmp_path):
    """A checkpoint shaped like train.fit's: optimiser state, history, metrics."""
    ck = tiny_state(seed=1)
    model = UNet(base=4)
    model.load_state_dict(ck["state_dict"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(2, 1, SIZE, SIZE)).mean().backward()
    opt.step()
    ck.update(state_dict={k: v.clone() for k, v in model.state_dict().items()},
              optimizer=opt.state_dict(), epoch=3, step=9,
              history=[{"epoch": e, "val_dice": 0.1 * e} for e in (1, 2, 3)],
              metrics={"epoch": 3, "val_dice": 0.3})
    return save_checkpoint(ck, tmp_path / "run" / "best.pt")


def test_release_round_trip_fp16(tmp_path):
    src = full_training_checkpoint(tmp_path)
    dest = predict_released.release_model(src, tmp_path / "models" / "brainseg-cpu.pt")
    side = predict_released.checksum_path(dest)
    assert side.name == "brainseg-cpu.pt.sha256"
    digest, name = side.read_text().split()
    assert name == "brainseg-cpu.pt" and digest == cache.sha256_file(dest)
    assert side.read_text() == f"{digest}  brainseg-cpu.pt\n"       # sha256sum -c format

    ck = predict_released.load_released(dest)
    assert set(ck) >= {"state_dict", "model_config", "train_config", "metrics"}
    assert not {"optimizer", "history"} & set(ck)
    assert ck["metrics"]["val_dice"] == pytest.approx(0.3)
    floats = [v for v in ck["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)

    # small: about half of an fp32 weights-only file, far below the training checkpoint
    weights_only = save_checkpoint({"s": load_checkpoint(src)["state_dict"]}, tmp_path / "w32.pt")
    assert dest.stat().st_size < 0.6 * weights_only.stat().st_size
    assert dest.stat().st_size < 0.3 * src.stat().st_size

    # and it predicts what the original does
    x = torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p_orig = torch.sigmoid(model_from_checkpoint(load_checkpoint(src))(x))
        p_rel = torch.sigmoid(model_from_checkpoint(ck)(x))
    assert torch.allclose(p_orig, p_rel, atol=1e-2)


def test_release_fp32_is_exact(tmp_path):
    src = full_training_checkpoint(tmp_path)
    dest = predict_released.release_model(src, tmp_path / "r32.pt", fp16=False)
    a, b = load_checkpoint(src)["state_dict"], predict_released.load_released(dest)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_uses_the_released_model_by_default(tmp_path, monkeypatch):
    released = predict_released.release_model(full_training_checkpoint(tmp_path),
                                     tmp_path / "models" / "brainseg-cpu.pt")
    monkeypatch.setattr(paths, "released_model", lambda: released)
    img = tmp_path / "x.png"
    Image.fromarray(scan_image(30, 20)).save(img)
    assert run_cli("--input", img, "--output", tmp_path / "o", "--device", "cpu") == 0
    assert np.asarray(Image.open(tmp_path / "o" / "x_mask.png")).shape == (30, 20)


def test_given_checkpoint_with_a_checksum_file_is_verified(tmp_path):
    rel = predict_released.release_model(full_training_checkpoint(tmp_path), tmp_path / "m.pt")
    predict_predict.load_predictor(rel, "cpu")                           # fine as released
    with open(rel, "ab") as f:
        f.write(b"\0")
    with pytest.raises(CheckpointError, match="modified or corrupted"):
        predict_predict.load_predictor(rel, "cpu")


# ----------------------------------------------------------------------------- hostile names and outputs
def test_formula_names_are_escaped_in_the_csv_and_escape_codes_on_stderr(tmp_path, tiny_ckpt, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(scan_image(20, 30)).save(inp / '=HYPERLINK("x","y").png')
    (inp / "bad\x1b[31m.png").write_bytes(b"not an image")
    assert run_cli("--checkpoint", tiny_ckpt, "--input", inp, "--output", tmp_path / "o") == 1
    files = sorted(r["file"] for r in read_csv(tmp_path / "o" / "predictions.csv"))
    assert files == ["'=HYPERLINK(\"x\",\"y\").png", "bad\x1b[31m.png"]
    err = capsys.readouterr().err
    assert "bad\\x1b[31m.png" in err and "\x1b" not in err


def test_single_file_output_in_its_own_folder_is_refused(tmp_path, tiny_ckpt):
    scans = tmp_path / "scans"
    scans.mkdir()
    img = scans / "one.jpg"
    Image.fromarray(scan_image(40, 24)).save(img)
    with pytest.raises(predict_predict.PredictError, match="output folder is the input folder"):
        predict_predict.run_predict(img, scans, tiny_ckpt)
    assert [p.name for p in scans.iterdir()] == ["one.jpg"]


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_is_one_line_and_exit_2(tmp_path, tiny_ckpt, capsys):
    img = tmp_path / "one.jpg"
    Image.fromarray(scan_image(40, 24)).save(img)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert run_cli("--checkpoint", tiny_ckpt, "--input", img, "--output", locked / "o") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: permission denied") and len(err.strip().splitlines()) == 1


def test_permission_error_in_cli_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    def deny(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "o"))
    monkeypatch.setattr(predict_predict, "run_predict", deny)
    assert run_cli("--input", tmp_path, "--output", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "permission denied" in err and str(tmp_path / "o") in err and len(err.strip().splitlines()) == 1


def test_exif_rotated_jpeg_gets_a_mask_as_displayed(tmp_path, tiny_ckpt):
    scans = tmp_path / "scans"
    scans.mkdir()
    raw = Image.fromarray(scan_image(287, 348))              # stored 348 wide, 287 high
    exif = Image.Exif()
    exif[0x0112] = 6                                         # "rotate 90 CW to display"
    raw.save(scans / "rot.jpg", exif=exif)
    from PIL import ImageOps
    with Image.open(scans / "rot.jpg") as im:
        shown = ImageOps.exif_transpose(im).size             # (287, 348) as a viewer shows it
    assert shown == (287, 348)
    predict_predict.run_predict(scans, tmp_path / "o", tiny_ckpt, device="cpu")
    mask = Image.open(tmp_path / "o" / "rot_mask.png")
    assert mask.size == shown


@pytest.mark.parametrize("suffix, kw", [(".tif", {}), (".png", {})])     # GIF is not a supported type
def test_multi_frame_files_are_refused_with_the_frame_count(tmp_path, tiny_ckpt, suffix, kw):
    scans = tmp_path / "scans"
    scans.mkdir()
    frames = [Image.fromarray(scan_image(30, 30, seed=k)) for k in range(3)]
    frames[0].save(scans / f"multi{suffix}", save_all=True, append_images=frames[1:], **kw)
    run = predict_predict.run_predict(scans, tmp_path / "o", tiny_ckpt, device="cpu")
    assert run.n_failed == 1 and "holds 3 frames" in run.rows[0]["error"]


def test_huge_scans_are_refused_per_file_before_decoding(tmp_path, tiny_ckpt, capsys):
    import resource
    scans = tmp_path / "scans"
    scans.mkdir()
    Image.new("L", (12000, 12000)).save(scans / "huge.png")          # 144 megapixels, a small file
    Image.fromarray(scan_image(30, 30)).save(scans / "small.png")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", tmp_path / "o") == 1
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    rows = {r["file"]: r for r in read_csv(tmp_path / "o" / "predictions.csv")}
    assert rows["small.png"]["status"] == "ok"
    assert "144.0 megapixels" in rows["huge.png"]["error"] and "--max-pixels" in rows["huge.png"]["error"]
    assert grown_mb < 500
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans / "small.png", "--output", tmp_path / "o2",
                   "--max-pixels", "100") == 1                        # a lower limit refuses the small one


def test_large_jpeg_is_decoded_reduced_but_masked_at_native_size(tmp_path, tiny_ckpt):
    from brainseg_lib.data import images
    scans = tmp_path / "scans"
    scans.mkdir()
    big = np.kron(scan_image(300, 400), np.ones((10, 10), np.uint8))          # 3000 x 4000
    Image.fromarray(big).save(scans / "big.jpg", quality=90)
    small, native = images.read_for_prediction(scans / "big.jpg", reduce_to=32)
    assert native == (3000, 4000) and small.shape[0] < 3000 and small.shape[0] * 4 == small.shape[1] * 3
    run = predict_predict.run_predict(scans, tmp_path / "o", tiny_ckpt, device="cpu")
    assert (run.rows[0]["width"], run.rows[0]["height"]) == (4000, 3000)
    assert Image.open(tmp_path / "o" / "big_mask.png").size == (4000, 3000)
    full = predict_predict.run_predict(scans, tmp_path / "o2", tiny_ckpt, device="cpu", overlay=True)
    a = np.asarray(Image.open(tmp_path / "o" / "big_mask.png")) > 0
    b = np.asarray(Image.open(tmp_path / "o2" / "big_mask.png")) > 0
    assert full.rows[0]["status"] == "ok" and (a == b).mean() > 0.99        # the same prediction, nearly


def test_ctrl_c_stops_at_once_and_leaves_no_half_written_file(tmp_path, tiny_ckpt, monkeypatch, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    for k in range(3):
        Image.fromarray(scan_image(30, 30, seed=k)).save(scans / f"s{k}.png")
    real, calls = predict_predict.predict_file, []

    def interrupt_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(predict_predict, "predict_file", interrupt_on_second)
    assert run_cli("--checkpoint", tiny_ckpt, "--input", scans, "--output", tmp_path / "o") == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and len(calls) == 2
    assert "1 of 3 rows" in err and "--resume" in err and len(err.strip().splitlines()) == 1
    # complete, no temp files: the finished scan's mask and its row
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["predictions.csv", "s0_mask.png"]
    assert Image.open(tmp_path / "o" / "s0_mask.png").size == (30, 30)
    assert [(r["file"], r["status"]) for r in read_csv(tmp_path / "o" / "predictions.csv")] == [("s0.png", "ok")]


# ----------------------------------------------------------------------------- --runtime onnx
def test_unknown_runtime_is_refused_before_anything_is_written(tmp_path, tiny_ckpt):
    Image.fromarray(scan_image(40, 40)).save(tmp_path / "scan.png")
    with pytest.raises(predict_scans.PredictError, match="unknown runtime 'tflite'; choose torch or onnx"):
        predict_predict.run_predict(tmp_path / "scan.png", tmp_path / "out", checkpoint=tiny_ckpt,
                                    runtime="tflite")
    assert not (tmp_path / "out").exists()


def test_onnx_runtime_without_an_export_says_how_to_make_one(tmp_path, tiny_ckpt, monkeypatch):
    """No .onnx beside the checkpoint: refused with the export command (or, without onnxruntime,
    with how to install it); nothing is written."""
    Image.fromarray(scan_image(40, 40)).save(tmp_path / "scan.png")
    try:
        import onnxruntime  # noqa: F401
        expected = r"does not exist; export it first with `python -m brainseg_lib export --format onnx"
    except ImportError:
        expected = "pip install onnxruntime"
    for ckpt in (None, tiny_ckpt):
        with pytest.raises(predict_scans.PredictError, match=expected):
            predict_predict.run_predict(tmp_path / "scan.png", tmp_path / "out", checkpoint=ckpt,
                                        runtime="onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(predict_scans.PredictError, match="needs onnxruntime.*--runtime torch"):
        predict_predict.run_predict(tmp_path / "scan.png", tmp_path / "out", checkpoint=tiny_ckpt,
                                    runtime="onnx")
    assert not (tmp_path / "out").exists()
