"""data.external_build: the external set rebuilt from kaggle_3m, verified slice by slice."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brainseg_lib import paths
from brainseg_lib.cli import main as cli_main
from brainseg_lib.data import external, external_build as eb

from conftest import REAL_EXTERNAL_ROOT

# two patients, three slices: (name, patient, half)
SLICES = [("P_A_1", "P_A", "dev"), ("P_A_2", "P_A", "dev"), ("P_B_1", "P_B", "test")]


def write_kaggle_slice(source, patient, name, flair, mask, seed):
    """One kaggle_3m slice: an RGB TIF whose middle channel is ``flair``, and its mask."""
    rng = np.random.default_rng(seed)
    other = rng.integers(0, 256, flair.shape, dtype=np.uint8)
    (source / patient).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.stack([other, flair, 255 - other], -1), "RGB").save(source / patient / f"{name}.tif")
    Image.fromarray(mask, "L").save(source / patient / f"{name}_mask.tif")


@pytest.fixture
def kaggle(tmp_path):
    """A tiny kaggle_3m tree and its reference file; the expected FLAIR and mask per slice."""
    rng = np.random.default_rng(0)
    source, rows, expected = tmp_path / "kaggle_3m", [], {}
    for i, (name, patient, half) in enumerate(SLICES):
        flair = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        mask = np.zeros((8, 8), np.uint8)
        mask[2:2 + i, 3:5] = 255                          # 0, 2 and 4 tumour pixels
        write_kaggle_slice(source, patient, name, flair, mask, seed=100 + i)
        expected[name] = (flair, mask)
        rows.append((name, patient, half, int((mask > 127).sum()),
                     eb.pixel_sha256(flair), eb.pixel_sha256(mask)))
    ref = tmp_path / "reference.csv"
    pd.DataFrame(rows, columns=[*eb.MANIFEST_COLUMNS, "image_sha256", "mask_sha256"]).to_csv(ref, index=False)
    return source, ref, expected


def test_builds_the_layout_external_reads(tmp_path, kaggle):
    source, ref, expected = kaggle
    dest = eb.build_external(source, tmp_path / "lgg", ref)
    for name, patient, half in SLICES:
        flair, mask = expected[name]
        assert np.array_equal(np.asarray(Image.open(dest / half / "images" / f"{name}.png")), flair)
        assert np.array_equal(np.asarray(Image.open(dest / half / "masks" / f"{name}.png")), mask)
    man = pd.read_csv(dest / "manifest.csv")
    assert list(man.columns) == list(eb.MANIFEST_COLUMNS)
    assert list(man["tumor_pixels"]) == [0, 2, 4]
    half = external.load_half("dev", 8, root=dest)        # the study's loader reads it
    assert half.patients == ["P_A", "P_A"]
    assert np.array_equal(half.truths[1], expected["P_A_2"][1] > 127)
    assert not list(tmp_path.glob(".build-*"))            # no temp folder left
    assert eb.reference_from_folder(dest).equals(pd.read_csv(ref))


def test_a_slice_that_differs_stops_the_build_and_leaves_nothing(tmp_path, kaggle):
    source, ref, expected = kaggle
    flair, mask = expected["P_A_2"]
    write_kaggle_slice(source, "P_A", "P_A_2", flair ^ 1, mask, seed=9)   # one bit per pixel
    with pytest.raises(eb.BuildError, match=r"1 of 3 slices differ .*P_A_2"):
        eb.build_external(source, tmp_path / "lgg", ref)
    assert not (tmp_path / "lgg").exists() and not list(tmp_path.glob(".build-*"))


def test_the_flair_channel_is_the_middle_one(tmp_path, kaggle, monkeypatch):
    source, ref, _ = kaggle
    monkeypatch.setattr(eb, "FLAIR_CHANNEL", 0)
    with pytest.raises(eb.BuildError, match="3 of 3 slices differ"):
        eb.build_external(source, tmp_path / "lgg", ref)


def test_missing_slice_and_existing_dest_are_refused(tmp_path, kaggle):
    source, ref, _ = kaggle
    (source / "P_B" / "P_B_1_mask.tif").unlink()
    with pytest.raises(eb.BuildError, match="P_B_1_mask.tif is missing .*lgg-mri-segmentation"):
        eb.build_external(source, tmp_path / "lgg", ref)
    assert not (tmp_path / "lgg").exists() and not list(tmp_path.glob(".build-*"))
    (tmp_path / "taken").mkdir()
    with pytest.raises(eb.BuildError, match="exists"):
        eb.build_external(source, tmp_path / "taken", ref)


def test_cli_reports_a_missing_source_with_exit_2(tmp_path, capsys):
    assert cli_main(["build-external", "--source", str(tmp_path / "nowhere"),
                     "--dest", str(tmp_path / "lgg")]) == 2
    err = capsys.readouterr().err
    assert "nowhere not found" in err and "kaggle_3m" in err


def test_committed_reference_names_the_studys_selection():
    ref = eb.read_reference(paths.LGG_EXTERNAL_SLICES)
    assert len(ref) == ref["name"].nunique() == 1019
    assert ref.groupby("half")["patient"].nunique().to_dict() == {"dev": 44, "test": 44}
    assert ref.groupby("patient")["half"].nunique().max() == 1          # split by patient
    assert all(n.startswith(p + "_") for n, p in zip(ref["name"], ref["patient"]))


@pytest.mark.realdata
def test_committed_reference_matches_the_real_external_set(tmp_path):
    if not external.available(REAL_EXTERNAL_ROOT):
        pytest.skip(f"real external set not available at {REAL_EXTERNAL_ROOT} (set BRAINSEG_EXTERNAL)")
    ref = eb.read_reference(paths.LGG_EXTERNAL_SLICES)
    assert eb.reference_from_folder(REAL_EXTERNAL_ROOT).equals(ref)
    # the manifest the build writes is the study's, byte for byte
    assert eb.write_manifest(ref, tmp_path).read_bytes() == (REAL_EXTERNAL_ROOT / "manifest.csv").read_bytes()


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")   # the deliberately broken TIF
def test_unreadable_or_wrong_kind_of_source_slice_is_named(tmp_path, kaggle):
    source, ref, _ = kaggle
    (source / "P_A" / "P_A_2.tif").write_bytes(b"II*\x00 not really a tiff")
    with pytest.raises(eb.ImageReadError, match=r"P_A_2\.tif"):
        eb.build_external(source, tmp_path / "lgg", ref)
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(source / "P_A" / "P_A_2.tif")   # 16-bit gray
    with pytest.raises(eb.BuildError, match=r"P_A_2\.tif is I;16, not the 3-channel"):
        eb.build_external(source, tmp_path / "lgg", ref)
    assert not (tmp_path / "lgg").exists() and not list(tmp_path.glob(".build-*"))
    assert cli_main(["build-external", "--source", str(source), "--dest", str(tmp_path / "lgg")]) == 2
