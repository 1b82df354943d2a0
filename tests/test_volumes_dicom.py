"""DICOM series through ``predict`` (apply.dicom_series): an oblique series written with
pydicom in shuffled file order stacks by position, its mask lines up with every DICOM pixel in
world coordinates, several series in one folder are told apart, and broken series are refused
with one line each while the others go through."""
from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import scan_image, tiny_checkpoint_state
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from brainseg_lib import cli
from brainseg_lib.apply import volumes
from brainseg_lib.apply.models import load_predictor
from brainseg_lib.apply.predict import run_predict
from brainseg_lib.model.checkpoint import save_checkpoint

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SIZE, ROWS, COLS, DEPTH = 32, 26, 22, 6
OBLIQUE = [0.939693, 0.34202, 0.0, -0.296198, 0.813798, 0.5]     # 20 deg in-plane, 30 deg tilt
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


@pytest.fixture
def tiny_ckpt(tmp_path):
    return save_checkpoint(tiny_checkpoint_state(SIZE, 0), tmp_path / "models" / "tiny.pt")


def pixels(k: int, rows: int = ROWS, cols: int = COLS) -> np.ndarray:
    """12-bit slice k (uint16, rows x cols)."""
    return scan_image(rows, cols, seed=k).astype(np.uint16) * 16 + 7


def dicom_file(path, *, uid, k, position, iop=OBLIQUE, rows=ROWS, cols=COLS, number=1, image=True):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage if image else BASIC_TEXT_SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = uid, number, k + 1
    ds.StudyInstanceUID, ds.PatientID = "1.2.3.4", "anon"
    ds.Modality = "MR" if image else "SR"
    if image:
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.PixelSpacing, ds.SliceThickness = ["0.9", "1.2"], "2.5"
        ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels(k, rows, cols).astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(folder, uid=None, depth=DEPTH, steps=None, number=1, prefix="im", **kw):
    """A series in ``folder``, files named in shuffled order; returns its uid."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    normal = np.cross(OBLIQUE[:3], OBLIQUE[3:])
    offsets = np.cumsum([0.0] + list(steps if steps is not None else [2.5] * (depth - 1)))
    names = np.random.default_rng(number).permutation(len(offsets))
    for k, off in enumerate(offsets):
        pos = np.array([-60.0, 20.0, 5.0]) + normal * off
        dicom_file(folder / f"{prefix}{names[k]:03d}.dcm", uid=uid, k=k, position=pos, number=number, **kw)
    return uid


def world_lps(ds, i, j) -> np.ndarray:
    """DICOM's own mapping of pixel (column i, row j) of a file to patient LPS millimetres."""
    iop, ipp = np.array(ds.ImageOrientationPatient, float), np.array(ds.ImagePositionPatient, float)
    dr, dc = map(float, ds.PixelSpacing)
    return ipp + iop[:3] * dc * i + iop[3:] * dr * j


def test_oblique_shuffled_series_lines_up_with_every_dicom_pixel(tmp_path, tiny_ckpt):
    write_series(tmp_path / "series")
    run = run_predict(tmp_path / "series", tmp_path / "out", checkpoint=tiny_ckpt, progress=False)
    assert run.n_failed == 0 and [r["file"] for r in run.rows] == ["series"]
    out = nib.load(tmp_path / "out" / "series_mask.nii.gz")
    mask = np.asanyarray(out.dataobj).astype(bool)
    assert out.shape == (COLS, ROWS, DEPTH)
    predictor = load_predictor(tiny_ckpt, "cpu")
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    for f in (tmp_path / "series").iterdir():
        ds = pydicom.dcmread(f)
        k = ds.InstanceNumber - 1                   # written in position order, files shuffled
        for i, j in [(0, 0), (COLS - 1, 0), (0, ROWS - 1), (COLS - 1, ROWS - 1), (5, 9)]:
            world = ras_to_lps @ (out.affine @ [i, j, k, 1])[:3]
            assert np.allclose(world, world_lps(ds, i, j), atol=1e-3), (f.name, i, j)
        want = predictor.probabilities(volumes.to_uint8(ds.pixel_array)) >= 0.5
        assert np.array_equal(mask[:, :, k].T, want), f.name
    assert 0 < mask.sum() < mask.size
    row = run.rows[0]
    assert row["slice_axis"].startswith("2") and int(row["slices"]) == DEPTH
    assert float(row["tumour_ml"]) == pytest.approx(mask.sum() * 0.9 * 1.2 * 2.5 / 1000, rel=1e-4)
    assert out.header.get_dim_info()[2] == 2 and out.header.get_xyzt_units()[0] == "mm"


def test_affine_of_series_round_trips_through_the_written_mask(tmp_path):
    write_series(tmp_path / "s")
    from brainseg_lib.apply.dicom_series import group_series, read_series
    from brainseg_lib.data.files import list_files
    (series,) = group_series(list_files(tmp_path / "s"), "s")
    vol = read_series(series.files, 10 ** 6, 100)
    path = tmp_path / "m.nii.gz"
    path.write_bytes(volumes.mask_bytes(np.zeros(vol.data.shape, bool), vol, 2))
    assert np.array_equal(nib.load(path).affine, vol.affine)


def test_two_series_in_one_folder_are_told_apart(tmp_path, tiny_ckpt):
    write_series(tmp_path / "mixed", number=3, prefix="a")
    write_series(tmp_path / "mixed", number=7, depth=4, prefix="b")
    run = run_predict(tmp_path / "mixed", tmp_path / "out", checkpoint=tiny_ckpt, progress=False)
    assert sorted(r["file"] for r in run.rows) == ["mixed_series3", "mixed_series7"]
    assert run.n_failed == 0
    assert nib.load(tmp_path / "out" / "mixed_series7_mask.nii.gz").shape == (COLS, ROWS, 4)
    assert nib.load(tmp_path / "out" / "mixed_series3_mask.nii.gz").shape == (COLS, ROWS, DEPTH)


def test_broken_series_one_line_each_and_the_good_series_goes_through(tmp_path, tiny_ckpt, capsys):
    d = tmp_path / "study"
    write_series(d, number=1, prefix="good")
    write_series(d, number=2, prefix="gap", steps=[2.5, 2.5, 5.0, 2.5])
    write_series(d, number=3, prefix="uneven", steps=[2.5, 2.5, 3.1, 2.5])
    uid = write_series(d, number=4, prefix="sizes", depth=3)
    dicom_file(d / "sizes999.dcm", uid=uid, k=5, position=[0, 0, 40], rows=30, number=4)
    dicom_file(d / "report.dcm", uid=generate_uid(), k=0, position=None, number=5, image=False)
    (d / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 5)
    rc = cli.main(["predict", "--checkpoint", str(tiny_ckpt), "--input", str(d), "--output",
                   str(tmp_path / "out")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert rc == 1
    why = {"study_series2": "missing slice", "study_series3": "inconsistent slice spacing",
           "study_series4": "mixed images", "study_series5": "report.dcm is not an image",
           "broken": "broken.dcm is not a readable DICOM file"}
    assert len(err) == len(why), err
    for name, words in why.items():
        (line,) = [ln for ln in err if ln.startswith(f"error: {name}")]
        assert words in line, line
    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert rows["study_series1"]["status"] == "ok"
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["study_series1_mask.nii.gz"]


def test_too_many_slices_or_pixels_per_series(tmp_path, tiny_ckpt):
    write_series(tmp_path / "s")
    many = run_predict(tmp_path / "s", tmp_path / "o1", checkpoint=tiny_ckpt, progress=False, max_slices=4)
    assert "--max-slices" in many.rows[0]["error"]
    wide = run_predict(tmp_path / "s", tmp_path / "o2", checkpoint=tiny_ckpt, progress=False, max_pixels=100)
    assert "--max-pixels" in wide.rows[0]["error"]
