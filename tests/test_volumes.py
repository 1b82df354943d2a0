"""NIfTI volumes through ``predict`` (apply.volumes): masks that line up voxel for voxel with
the input and with the 2-D path, affines that round-trip bit for bit, the volume row of
predictions.csv, --slice-axis, --resume, refused volumes, and per-patient scoring."""
from __future__ import annotations

import csv
import gzip
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import scan_image, tiny_checkpoint_state
from PIL import Image

from brainseg_lib import cli
from brainseg_lib.apply import volumes
from brainseg_lib.apply.predict import run_predict
from brainseg_lib.model.checkpoint import save_checkpoint

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SIZE, H, W, DEPTH = 32, 28, 20, 5      # in-plane rows (H) and columns (W) differ on purpose


@pytest.fixture
def tiny_ckpt(tmp_path):
    return save_checkpoint(tiny_checkpoint_state(SIZE, 0), tmp_path / "models" / "tiny.pt")


def oblique_affine() -> np.ndarray:
    """A rotated, anisotropic, shifted voxel-to-world affine (float32-exact, as a header stores it)."""
    c, s = np.cos(0.3), np.sin(0.3)
    a = np.array([[0.9 * c, -1.1 * s, 0.0, -40.5], [0.9 * s, 1.1 * c, 0.2, 12.25],
                  [0.0, 0.0, 2.5, -7.0], [0, 0, 0, 1]])
    return a.astype(np.float32).astype(np.float64)


def volume_data() -> np.ndarray:
    """uint8 (W, H, DEPTH): slice k shown to the model is scan_image(H, W, seed=k)."""
    return np.stack([scan_image(H, W, seed=k).T for k in range(DEPTH)], axis=-1)


def write_nifti(path, data, affine=None, units="mm", slice_dim=None, qform=True):
    img = nib.Nifti1Image(data, oblique_affine() if affine is None else affine)
    img.header.set_sform(img.affine, 2)
    img.header.set_qform(img.affine if qform else None, 1 if qform else 0)
    img.header.set_xyzt_units(units)
    if slice_dim is not None:
        img.header.set_dim_info(slice=slice_dim)
    nib.save(img, path)
    return path


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_nifti_mask_lines_up_with_the_input_and_with_the_2d_path(tmp_path, tiny_ckpt):
    inp, pngs = tmp_path / "in", tmp_path / "png"
    inp.mkdir(), pngs.mkdir()
    src = write_nifti(inp / "head.nii.gz", volume_data())
    for k in range(DEPTH):
        Image.fromarray(scan_image(H, W, seed=k)).save(pngs / f"s{k}.png")
    run = run_predict(inp, tmp_path / "out", checkpoint=tiny_ckpt, overlay=True, progress=False)
    run2d = run_predict(pngs, tmp_path / "out2d", checkpoint=tiny_ckpt, progress=False)
    assert run.n_failed == 0 and run2d.n_failed == 0
    out = nib.load(tmp_path / "out" / "head_mask.nii.gz")
    ref = nib.load(src)
    assert out.shape == ref.shape == (W, H, DEPTH)
    assert np.array_equal(out.affine, ref.affine)                       # bit for bit
    assert np.array_equal(out.affine, oblique_affine())
    assert (out.header["sform_code"], out.header["qform_code"]) == (2, 1)
    assert out.header.get_zooms() == ref.header.get_zooms()
    mask = np.asanyarray(out.dataobj)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    for k in range(DEPTH):                      # slice k of the volume = the PNG of slice k
        png_mask = np.asarray(Image.open(tmp_path / "out2d" / f"s{k}_mask.png")) == 255
        assert np.array_equal(mask[:, :, k].T.astype(bool), png_mask), k
    assert 0 < mask.sum() < mask.size
    montage = Image.open(tmp_path / "out" / "head_overlay.png")
    assert montage.mode == "RGB" and montage.width >= W


def test_volume_row_of_predictions_csv(tmp_path, tiny_ckpt):
    write_nifti(tmp_path / "v.nii", volume_data())
    run_predict(tmp_path / "v.nii", tmp_path / "out", checkpoint=tiny_ckpt, progress=False)
    (row,) = read_csv(tmp_path / "out" / "predictions.csv")
    mask = np.asanyarray(nib.load(tmp_path / "out" / "v_mask.nii.gz").dataobj).astype(bool)
    per_slice = mask.sum(axis=(0, 1))
    assert (row["file"], row["status"], row["width"], row["height"]) == ("v.nii", "ok", str(W), str(H))
    assert int(row["tumour_pixels"]) == mask.sum() and int(row["slices"]) == DEPTH
    assert int(row["slices_with_tumour"]) == int((per_slice > 0).sum())
    assert int(row["largest_slice"]) == int(np.argmax(per_slice))
    voxel_mm3 = np.prod(np.linalg.norm(oblique_affine()[:3, :3], axis=0))    # column lengths
    assert float(row["tumour_ml"]) == pytest.approx(mask.sum() * voxel_mm3 / 1000, rel=1e-5)
    assert row["slice_axis"] == "2 (axial)"


def test_no_spatial_unit_means_no_ml_and_scaled_data_keeps_a_0_1_mask(tmp_path, tiny_ckpt):
    img = nib.Nifti1Image(volume_data().astype(np.int16) * 3 + 100, np.eye(4))
    img.header.set_slope_inter(2.0, -5.0)                           # stored values are scaled
    img.header.set_xyzt_units("unknown")
    nib.save(img, tmp_path / "s.nii.gz")
    run = run_predict(tmp_path / "s.nii.gz", tmp_path / "out", checkpoint=tiny_ckpt, progress=False)
    assert run.rows[0]["tumour_ml"] == "" and run.rows[0]["status"] == "ok"
    out = nib.load(tmp_path / "out" / "s_mask.nii.gz")
    assert set(np.unique(np.asanyarray(out.dataobj))) <= {0, 1}
    assert np.array_equal(out.affine, nib.load(tmp_path / "s.nii.gz").affine)


def test_qform_only_affine_round_trips_exactly(tmp_path, tiny_ckpt):
    src = write_nifti(tmp_path / "q.nii.gz", volume_data(), qform=True)
    img = nib.load(src)
    img.header.set_sform(None, 0)
    nib.save(img, src)
    want = nib.load(src).affine
    run_predict(src, tmp_path / "out", checkpoint=tiny_ckpt, progress=False)
    assert np.array_equal(nib.load(tmp_path / "out" / "q_mask.nii.gz").affine, want)


def test_slice_axis_from_header_and_by_name(tmp_path, tiny_ckpt):
    data = np.ascontiguousarray(np.moveaxis(volume_data(), 2, 0))   # slices along voxel axis 0
    src = write_nifti(tmp_path / "x.nii.gz", data, affine=np.eye(4), slice_dim=0)
    run = run_predict(src, tmp_path / "out", checkpoint=tiny_ckpt, progress=False)
    assert run.rows[0]["slice_axis"] == "0 (sagittal)" and int(run.rows[0]["slices"]) == DEPTH
    by_axis = run_predict(src, tmp_path / "out0", checkpoint=tiny_ckpt, progress=False, slice_axis="0")
    assert by_axis.rows[0]["tumour_pixels"] == run.rows[0]["tumour_pixels"]
    axial = run_predict(src, tmp_path / "out2", checkpoint=tiny_ckpt, progress=False, slice_axis="axial")
    assert axial.rows[0]["slice_axis"] == "2 (axial)" and int(axial.rows[0]["slices"]) == H
    swapped = np.eye(4)[[2, 0, 1, 3]]             # voxel axis 0 runs along world z (superior)
    assert volumes.resolve_axis(swapped, None, "axial") == 1
    assert volumes.resolve_axis(swapped, None, "sagittal") == 2
    assert volumes.resolve_axis(swapped, None, "auto") == 1           # no slice_dim: axial
    assert volumes.resolve_axis(swapped, 0, "auto") == 0


def test_to_uint8_passes_uint8_and_maps_other_types_robustly():
    g = scan_image(H, W, seed=3)
    assert volumes.to_uint8(g) is not None and np.array_equal(volumes.to_uint8(g), g)
    a = volumes.to_uint8((g.astype(np.int16) * 16 + 100))            # 12-bit-like, offset
    b = volumes.to_uint8(g.astype(np.float32) * 0.01 - 3.0)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1          # the same picture
    hot = g.astype(np.float32)
    hot[0, 0] = 1e9                                                   # one hot voxel sets no scale
    assert np.abs(volumes.to_uint8(hot)[1:].astype(int) - b[1:].astype(int)).max() <= 1
    assert volumes.to_uint8(np.full((4, 4), 7.5, np.float32)).max() == 0
    assert volumes.to_uint8(np.arange(4096, dtype=np.uint16).reshape(64, 64)).max() == 255


def test_resume_keeps_finished_volumes_and_redoes_missing_ones(tmp_path, tiny_ckpt):
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("a", "b"):
        write_nifti(inp / f"{name}.nii.gz", volume_data())
    out = tmp_path / "out"
    run_predict(inp, out, checkpoint=tiny_ckpt, progress=False)
    (out / "b_mask.nii.gz").unlink()
    again = run_predict(inp, out, checkpoint=tiny_ckpt, progress=False, resume=True)
    assert again.kept == 1 and (out / "b_mask.nii.gz").is_file()
    assert [r["file"] for r in read_csv(out / "predictions.csv")] == ["a.nii.gz", "b.nii.gz"]


def test_bad_volumes_get_one_line_each_and_the_good_one_goes_through(tmp_path, tiny_ckpt, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    write_nifti(inp / "good.nii.gz", volume_data())
    write_nifti(inp / "four_d.nii.gz", np.zeros((W, H, 3, 2), np.uint8))
    nan = volume_data().astype(np.float32)
    nan[3, 4, 1], nan[0, 0, 0] = np.nan, np.inf
    write_nifti(inp / "nan.nii.gz", nan)
    whole = (inp / "good.nii.gz").read_bytes()
    (inp / "truncated.nii.gz").write_bytes(whole[: len(whole) // 2])
    (inp / "garbage.nii").write_bytes(np.random.default_rng(0).bytes(2000))
    write_nifti(inp / "wide.nii.gz", np.zeros((40, 40, 2), np.uint8))           # 1,600 px a slice
    write_nifti(inp / "deep.nii.gz", np.zeros((W, H, 12), np.uint8))
    rc = cli.main(["predict", "--checkpoint", str(tiny_ckpt), "--input", str(inp), "--output",
                   str(tmp_path / "out"), "--max-pixels", "1000", "--max-slices", "10"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert rc == 1                                  # as for refused 2-D scans: the run goes on
    why = {"four_d.nii.gz": "4-D", "nan.nii.gz": "NaN or infinite", "truncated.nii.gz": "truncated",
           "garbage.nii": "not a readable NIfTI", "wide.nii.gz": "--max-pixels",
           "deep.nii.gz": "--max-slices"}
    assert len(err) == len(why)
    for name, words in why.items():
        (line,) = [ln for ln in err if ln.startswith(f"error: {name}: ")]
        assert words in line, line
    rows = {r["file"]: r for r in read_csv(tmp_path / "out" / "predictions.csv")}
    assert rows["good.nii.gz"]["status"] == "ok" and (tmp_path / "out" / "good_mask.nii.gz").is_file()
    assert all(rows[n]["status"] == "error" for n in why)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["good_mask.nii.gz"]


def test_score_volumes_reads_through_predict_and_writes_cis(tmp_path, tiny_ckpt):
    from brainseg_lib import paths
    from brainseg_lib.study import external_volumes as ev
    folder = tmp_path / "volumes"
    folder.mkdir()
    truths = {}
    for p in range(3):
        data = np.roll(volume_data(), p, axis=0)
        write_nifti(folder / f"P{p}_flair.nii.gz", data, affine=np.eye(4), units="unknown")
        truths[p] = data > 120
        write_nifti(folder / f"P{p}_mask.nii.gz", truths[p].astype(np.uint8), affine=np.eye(4),
                    units="unknown")
    r = ev.score_volumes(folder, checkpoint=tiny_ckpt, n_boot=200)
    direct = run_predict(folder / "P1_flair.nii.gz", tmp_path / "o", checkpoint=tiny_ckpt, progress=False)
    pred = np.asanyarray(nib.load(direct.out_dir / "P1_flair_mask.nii.gz").dataobj) > 0
    row = r["per_patient"].set_index("patient").loc["P1"]
    assert row["dice"] == pytest.approx(ev.dice(pred, truths[1]))
    assert row["abs_volume_error_voxels"] == abs(int(pred.sum()) - int(truths[1].sum()))
    saved = json.loads((paths.metrics_dir() / ev.JSON_NAME).read_text())
    lo, hi = saved["dice"]["median_ci95"]
    assert lo <= saved["dice"]["median"] <= hi and saved["n_patients"] == 3
    assert saved["abs_volume_error_ml"] is None and "Buda" in saved["cited"]["buda2019"]["source"]
    assert len(read_csv(paths.tables_dir() / ev.CSV_NAME)) == 3
    assert ev.dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    assert ev.dice(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)) == 0.5


def test_mask_bytes_are_deterministic(tmp_path):
    src = write_nifti(tmp_path / "d.nii.gz", volume_data())
    vol, axis = volumes.open_volume(src, "auto", 10 ** 6, 100)
    m = vol.data > 100
    assert volumes.mask_bytes(m, vol, axis) == volumes.mask_bytes(m, vol, axis)
    assert gzip.decompress(volumes.mask_bytes(m, vol, axis))[:4] == (348).to_bytes(4, "little")
