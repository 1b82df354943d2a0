"""brainseg_lib.data: rasterising VIA shapes, reading images, errors, resizing, the cache."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from conftest import (
    FAKE_LAYOUT,
    circle,
    ellipse,
    polygon,
    scan_image,
    write_image,
    write_via,
)
from PIL import Image, UnidentifiedImageError

from brainseg_lib.data import br35h
from brainseg_lib.data import cache as data_cache
from brainseg_lib.data import files as data_files
from brainseg_lib.data import images as data_images
from brainseg_lib.data.errors import ImageReadError


def split_folder(root, split):
    return root / br35h.ANNOTATED_DIR / br35h.SPLIT_FOLDERS[split]


# =========================================================================== rasterize
class TestRasterize:
    def test_polygon_fills_interior_and_outline(self):
        m = br35h.rasterize([polygon([10, 20, 20, 10], [5, 5, 15, 15])], 30, 30)
        assert m.dtype == bool and m.shape == (30, 30)
        expected = np.zeros((30, 30), bool)
        expected[5:16, 10:21] = True          # rows y=5..15, cols x=10..20, outline included
        np.testing.assert_array_equal(m, expected)

    def test_polygon_float_coordinates(self):
        m = br35h.rasterize([polygon([2.4, 12.6, 12.6, 2.4], [3.5, 3.5, 9.5, 9.5])], 20, 20)
        assert m[6, 7] and not m[0, 0] and not m[15, 15]
        rows, cols = np.nonzero(m)
        assert rows.min() >= 3 and rows.max() <= 10 and cols.min() >= 2 and cols.max() <= 13

    def test_thin_polygon_does_not_vanish(self):
        # a sliver 0.4 px high covers no pixel centre; the outline keeps it
        m = br35h.rasterize([polygon([2, 17, 9.5], [3, 3, 3.4])], 20, 20)
        assert m.sum() >= 10 and m[3].sum() >= 10

    def test_circle(self):
        m = br35h.rasterize([circle(15, 15, 5)], 30, 30)
        assert m[15, 15] and m[15, 19] and m[11, 15]
        assert not m[15, 21] and not m[9, 15]
        assert abs(m.sum() - math.pi * 25) < 12
        rows, cols = np.nonzero(m)
        assert rows.mean() == pytest.approx(15, abs=0.01) and cols.mean() == pytest.approx(15, abs=0.01)

    def test_axis_aligned_ellipse_x_is_columns(self):
        m = br35h.rasterize([ellipse(50, 40, 30, 5, 0.0)], 100, 100)
        assert m[40, 50] and m[40, 78] and m[40, 22]      # along x (columns): rx = 30
        assert not m[48, 50] and not m[32, 50]            # along y (rows): ry = 5
        assert abs(m.sum() - math.pi * 30 * 5) < 0.1 * math.pi * 30 * 5

    def test_ellipse_without_theta_equals_theta_zero(self):
        no_theta = ellipse(20, 24, 10, 6)
        assert "theta" not in no_theta
        m = br35h.rasterize([no_theta], 48, 48)
        np.testing.assert_array_equal(m, br35h.rasterize([ellipse(20, 24, 10, 6, 0.0)], 48, 48))
        assert m[24, 29] and m[29, 20] and not m[24, 31] and not m[31, 20]

    def test_rotated_ellipse_is_clockwise_on_screen(self):
        # VIA theta is clockwise on screen (y down): the major axis of theta=+pi/4 runs from
        # the top-left to the bottom-right, through (x, y) = (50 + 20 cos45, 50 + 20 sin45).
        m = br35h.rasterize([ellipse(50, 50, 30, 5, math.pi / 4)], 100, 100)
        d = round(20 * math.cos(math.pi / 4))             # 14
        assert m[50 + d, 50 + d]                          # (x=64, y=64): inside
        assert m[50 - d, 50 - d]                          # (x=36, y=36): inside (symmetry)
        assert not m[50 - d, 50 + d]                      # (x=64, y=36): outside
        assert not m[50 + d, 50 - d]                      # (x=36, y=64): outside
        # the mask's principal axis has a positive slope in (x, y-down) coordinates
        rows, cols = np.nonzero(m)
        assert np.corrcoef(cols, rows)[0, 1] > 0.9

    def test_rotated_ellipse_negative_theta_mirrors(self):
        pos = br35h.rasterize([ellipse(50, 50, 30, 5, math.pi / 4)], 101, 101)
        neg = br35h.rasterize([ellipse(50, 50, 30, 5, -math.pi / 4)], 101, 101)
        assert neg[36, 64] and neg[64, 36] and not neg[64, 64] and not neg[36, 36]
        # flipping the image top-to-bottom about y = 50 (row r -> 100 - r) turns theta into -theta
        assert (pos[::-1] == neg).mean() > 0.995
        assert abs(int(pos.sum()) - int(neg.sum())) <= 4

    def test_theta_half_pi_swaps_axes(self):
        m = br35h.rasterize([ellipse(50, 50, 30, 5, math.pi / 2)], 100, 100)
        assert m[75, 50] and m[25, 50] and not m[50, 60] and not m[50, 40]

    def test_points_outside_image_are_clipped(self):
        m = br35h.rasterize([polygon([-10, 50, 50, -10], [-10, -10, 50, 50])], 20, 20)
        assert m.shape == (20, 20) and m.all()
        m = br35h.rasterize([polygon([-5.5, 8, 8, -5.5], [-3, -3, 30, 30])], 20, 20)
        assert m[:, :9].all() and not m[:, 10:].any()
        m = br35h.rasterize([circle(-2, 10, 6), ellipse(25, 25, 10, 10)], 20, 20)
        assert m[10, 0] and m[10, 3] and not m[10, 5]
        assert m[19, 19] and m[18, 19] and not m[14, 14] and not m[5, 15]

    def test_shape_entirely_outside_gives_empty_mask(self):
        m = br35h.rasterize([circle(100, 100, 5), polygon([30, 40, 35], [30, 30, 40])], 20, 20)
        assert not m.any()

    def test_several_regions_are_united(self):
        shapes = [polygon([1, 8, 8, 1], [1, 1, 8, 8]), circle(20, 20, 4), ellipse(6, 6, 4, 2, 0.3)]
        union = br35h.rasterize(shapes, 30, 30)
        parts = [br35h.rasterize([s], 30, 30) for s in shapes]
        np.testing.assert_array_equal(union, parts[0] | parts[1] | parts[2])
        assert union.sum() < sum(p.sum() for p in parts)   # the ellipse overlaps the square
        assert union.sum() > parts[0].sum()

    def test_empty_region_list(self):
        assert not br35h.rasterize([], 5, 7).any()


class TestRasterizeErrors:
    def test_unknown_shape_names_file_and_region(self):
        shapes = [circle(5, 5, 2), {"name": "polyline", "all_points_x": [1, 2], "all_points_y": [1, 2]}]
        with pytest.raises(br35h.AnnotationError) as e:
            br35h.rasterize(shapes, 10, 10, source="TRAIN/y7.jpg")
        msg = str(e.value)
        assert "TRAIN/y7.jpg" in msg and "region 1" in msg and "polyline" in msg

    @pytest.mark.parametrize("xs, ys", [([1, 5], [1, 5]), ([1], [1]), ([], []), ([1, 2, 3], [1, 2])])
    def test_polygon_needs_three_matching_points(self, xs, ys):
        with pytest.raises(br35h.AnnotationError, match=r"y3\.jpg region 0.*polygon"):
            br35h.rasterize([polygon(xs, ys)], 10, 10, source="y3.jpg")

    @pytest.mark.parametrize("shape", [
        polygon([1, float("nan"), 5], [1, 2, 5]),
        ellipse(5, float("nan"), 2, 2),
        ellipse(5, 5, 2, 2, float("inf")),
        circle(float("nan"), 5, 2),
        circle(5, 5, None),                       # JSON null
    ])
    def test_nan_coordinates_rejected(self, shape):
        with pytest.raises(br35h.AnnotationError, match=r"y4\.jpg region 0.*(NaN|infinite)"):
            br35h.rasterize([shape], 10, 10, source="y4.jpg")

    @pytest.mark.parametrize("shape, key", [
        ({"name": "circle", "cx": 5, "cy": 5}, "r"),
        ({"name": "ellipse", "cx": 5, "cy": 5, "rx": 2}, "ry"),
        ({"name": "polygon", "all_points_x": [1, 2, 3]}, "all_points_y"),
    ])
    def test_missing_key(self, shape, key):
        with pytest.raises(br35h.AnnotationError, match=f"y5.jpg region 0.*'{key}'"):
            br35h.rasterize([shape], 10, 10, source="y5.jpg")

    def test_non_numeric_coordinates(self):
        with pytest.raises(br35h.AnnotationError, match="y6.jpg region 0.*not numeric"):
            br35h.rasterize([polygon(["a", "b", "c"], [1, 2, 3])], 10, 10, source="y6.jpg")

    @pytest.mark.parametrize("shape", [circle(5, 5, 0), ellipse(5, 5, 0, 3), ellipse(5, 5, 3, -1)])
    def test_non_positive_radius(self, shape):
        with pytest.raises(br35h.AnnotationError, match="must be > 0"):
            br35h.rasterize([shape], 10, 10)


# =========================================================================== the fake dataset
class TestFakeDataset:
    def test_iter_samples_matches_rasterize(self, fake_root):
        for split, files in FAKE_LAYOUT.items():
            samples = list(br35h.iter_samples(split, fake_root))
            assert [s.name for s in samples] == sorted(files, key=data_files.natural_key)
            for s in samples:
                h, w, _, regions = files[s.name]
                assert s.image.shape == (h, w) and s.image.dtype == np.uint8
                assert s.mask.shape == (h, w) and s.mask.dtype == bool and s.mask.any()
                np.testing.assert_array_equal(s.mask, br35h.rasterize(regions, h, w))
                assert s.kinds == [r["name"] for r in regions]

    def test_natural_order(self, fake_root):
        names = [s.name for s in br35h.iter_samples("train", fake_root)]
        assert names == ["y0.jpg", "y1.png", "y2.jpg", "y10.png"]

    def test_rotated_ellipse_through_the_loader(self, fake_root):
        # y1.png: ellipse cx=32 cy=32 rx=20 ry=4 theta=+pi/4, plus a circle at (x=50, y=12)
        s = next(x for x in br35h.iter_samples("train", fake_root) if x.name == "y1.png")
        assert s.mask[32 + 10, 32 + 10] and s.mask[32 - 10, 32 - 10]
        assert not s.mask[32 - 10, 32 + 10] and not s.mask[32 + 10, 32 - 10]
        assert s.mask[12, 50]                                   # the circle: union of regions
        assert s.kinds == ["ellipse", "circle"]

    def test_outside_points_through_the_loader(self, fake_root):
        # y2.jpg (48x48): a polygon from y=40 to y=70 and x=-10 to 60 covers rows 40..47
        s = next(x for x in br35h.iter_samples("train", fake_root) if x.name == "y2.jpg")
        assert s.mask[40:, :].all()

    def test_rgb_image_becomes_gray(self, fake_root):
        s = next(x for x in br35h.iter_samples("val", fake_root) if x.name == "y500.jpg")
        assert s.image.ndim == 2
        assert Image.open(split_folder(fake_root, "val") / "y500.jpg").mode == "RGB"

    def test_load_split_arrays(self, fake_root):
        arr = data_cache.load_split("train", 16, root=fake_root, progress=False)
        assert len(arr) == 4 and arr.split == "train" and arr.size == 16
        assert arr.images.shape == (4, 16, 16) and arr.images.dtype == np.uint8
        assert arr.masks.shape == (4, 16, 16) and arr.masks.dtype == np.uint8
        assert set(np.unique(arr.masks)) <= {0, 1}
        assert arr.masks.reshape(4, -1).any(1).all()         # no tumour vanishes
        assert arr.names == ["y0.jpg", "y1.png", "y2.jpg", "y10.png"]
        assert arr.native_hw.tolist() == [[40, 60], [64, 64], [48, 48], [32, 32]]
        for i, n in enumerate(arr.names):
            h, w, _, regions = FAKE_LAYOUT["train"][n]
            assert arr.native_tumour_fraction[i] == pytest.approx(br35h.rasterize(regions, h, w).mean())
        head = arr.head(2)
        assert len(head) == 2 and head.names == arr.names[:2] and head.images.shape[0] == 2
        assert arr.head(None) is arr and arr.head(10) is arr

    def test_native_mask(self, fake_root):
        m = data_cache.native_mask("test", "y701.jpg", fake_root)
        np.testing.assert_array_equal(m, br35h.rasterize([circle(24, 16, 6)], 32, 48))
        with pytest.raises(KeyError):
            data_cache.native_mask("test", "nope.jpg", fake_root)
        assert set(data_cache.native_masks("val", fake_root)) == {"y500.jpg", "y501.png"}

    def test_via_project_file_and_v1_regions_dict(self, fake_root):
        # VIA project files wrap the entries in _via_img_metadata; VIA 1.x stores regions as a dict
        jpath = br35h.annotations_path("test", fake_root)
        raw = json.loads(jpath.read_text())
        for entry in raw.values():
            entry["regions"] = {str(i): r for i, r in enumerate(entry["regions"])}
        jpath.write_text(json.dumps({"_via_settings": {}, "_via_img_metadata": raw}))
        anns = br35h.load_annotations(jpath)
        assert sorted(a.filename for a in anns) == ["y701.jpg", "y702.png"]
        assert [len(a.regions) for a in sorted(anns, key=lambda a: a.filename)] == [1, 2]

    def test_duplicate_keys_for_one_file_are_merged(self, tmp_path):
        folder = tmp_path
        write_image(folder / "a.png", scan_image(20, 20))
        jpath = folder / "ann.json"
        jpath.write_text(json.dumps({
            "a.png1": {"filename": "a.png", "regions": [{"shape_attributes": circle(5, 5, 2)}]},
            "a.png2": {"filename": "a.png", "regions": [{"shape_attributes": circle(15, 15, 2)}]},
        }))
        (ann,) = br35h.load_annotations(jpath)
        assert len(ann.regions) == 2


# =========================================================================== errors
class TestDatasetErrors:
    def test_missing_data_folder(self, tmp_path):
        missing = tmp_path / "nowhere"
        with pytest.raises(br35h.DatasetNotFoundError) as e:
            br35h.check_dataset(missing)
        assert str(missing) in str(e.value)
        assert "ahmedhamada0/brain-tumor-detection" in str(e.value)
        with pytest.raises(br35h.DatasetNotFoundError, match="ahmedhamada0/brain-tumor-detection"):
            data_cache.load_split("train", 16, root=missing)

    def test_missing_data_folder_via_env(self, tmp_path, monkeypatch):
        monkeypatch.setenv("BRAINSEG_DATA", str(tmp_path / "absent"))
        with pytest.raises(br35h.DatasetNotFoundError, match="ahmedhamada0/brain-tumor-detection"):
            list(br35h.iter_samples("train"))

    def test_folder_without_annotated_dir(self, tmp_path):
        (tmp_path / "yes").mkdir()
        with pytest.raises(br35h.DatasetNotFoundError, match=br35h.ANNOTATED_DIR):
            br35h.check_dataset(tmp_path)

    def test_missing_split_folder(self, fake_root):
        import shutil
        shutil.rmtree(split_folder(fake_root, "val"))
        with pytest.raises(br35h.DatasetNotFoundError, match="split 'val'"):
            br35h.check_dataset(fake_root)
        br35h.check_dataset(fake_root, splits=("train",))   # the others are fine

    def test_split_without_json_names_the_json(self, fake_root):
        jpath = br35h.annotations_path("test", fake_root)
        jpath.unlink()
        with pytest.raises(br35h.DatasetNotFoundError) as e:
            data_cache.load_split("test", 16, root=fake_root)
        assert str(jpath) in str(e.value)
        with pytest.raises(br35h.DatasetNotFoundError, match="annotations_test.json"):
            br35h.load_annotations(jpath)

    def test_invalid_json(self, fake_root):
        jpath = br35h.annotations_path("train", fake_root)
        jpath.write_text('{"y0.jpg123": {"filename": "y0.jpg", "regions": [')
        with pytest.raises(br35h.AnnotationError) as e:
            list(br35h.iter_samples("train", fake_root))
        assert str(jpath) in str(e.value) and "not valid JSON" in str(e.value)

    @pytest.mark.parametrize("payload", ['[1, 2]', '{"k": {"regions": []}}',
                                         '{"k": {"filename": "y0.jpg", "regions": [{"x": 1}]}}'])
    def test_malformed_json_structure(self, fake_root, payload):
        jpath = br35h.annotations_path("train", fake_root)
        jpath.write_text(payload)
        with pytest.raises(br35h.AnnotationError, match="annotations_train.json"):
            br35h.list_split("train", fake_root)

    def test_unknown_shape_kind_names_file_and_region(self, fake_root):
        folder = split_folder(fake_root, "val")
        write_via(folder / "annotations_val.json", {
            "y500.jpg": [polygon([5, 20, 12], [5, 5, 25])],
            "y501.png": [circle(5, 5, 2), {"name": "point", "cx": 3, "cy": 3}],
        })
        with pytest.raises(br35h.AnnotationError) as e:
            data_cache.load_split("val", 16, root=fake_root)
        msg = str(e.value)
        assert "y501.png" in msg and "region 1" in msg and "'point'" in msg

    def test_polygon_with_two_points_in_json(self, fake_root):
        folder = split_folder(fake_root, "val")
        write_via(folder / "annotations_val.json", {
            "y500.jpg": [polygon([5, 20], [5, 5])], "y501.png": [circle(5, 5, 2)]})
        with pytest.raises(br35h.AnnotationError, match=r"y500\.jpg region 0 \(polygon\).*>= 3 points"):
            list(br35h.iter_samples("val", fake_root))

    def test_nan_coordinates_in_json(self, fake_root):
        folder = split_folder(fake_root, "val")
        write_via(folder / "annotations_val.json", {
            "y500.jpg": [circle(5, 5, 2)], "y501.png": [ellipse(10, float("nan"), 4, 2, 0.1)]})
        assert "NaN" in (folder / "annotations_val.json").read_text()
        with pytest.raises(br35h.AnnotationError, match=r"y501\.png region 0 \(ellipse\).*NaN"):
            data_cache.load_split("val", 16, root=fake_root)

    def test_json_entry_for_missing_image(self, fake_root):
        folder = split_folder(fake_root, "test")
        (folder / "y702.png").unlink()
        with pytest.raises(br35h.AnnotationError) as e:
            data_cache.load_split("test", 16, root=fake_root)
        assert "y702.png" in str(e.value) and "missing image" in str(e.value)

    def test_entry_without_regions(self, fake_root):
        folder = split_folder(fake_root, "test")
        write_via(folder / "annotations_test.json", {"y701.jpg": [circle(5, 5, 2)], "y702.png": []})
        with pytest.raises(br35h.AnnotationError, match="y702.png has no regions"):
            br35h.list_split("test", fake_root)

    def test_unannotated_image_skipped_with_warning(self, fake_root):
        folder = split_folder(fake_root, "test")
        write_image(folder / "extra1.jpg", scan_image(20, 20))
        write_image(folder / "extra2.png", scan_image(20, 20))
        (folder / "notes.txt").write_text("not an image")
        with pytest.warns(UserWarning, match=r"skipped 2 image\(s\) not in annotations_test.json") as rec:
            arr = data_cache.load_split("test", 16, root=fake_root, use_cache=False)
        assert "extra1.jpg" in str(rec[0].message) and "extra2.png" in str(rec[0].message)
        assert arr.names == ["y701.jpg", "y702.png"]

    def test_no_warning_when_every_image_is_annotated(self, fake_root):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            br35h.list_split("test", fake_root)

    def test_unknown_split(self, fake_root):
        with pytest.raises(ValueError, match="unknown split"):
            br35h.split_dir("holdout", fake_root)


# =========================================================================== image files
class TestImageErrors:
    def _jpeg_bytes(self, tmp_path):
        p = write_image(tmp_path / "ok.jpg", scan_image(64, 64))
        return p.read_bytes()

    def test_truncated_jpeg(self, tmp_path):
        b = self._jpeg_bytes(tmp_path)
        bad = tmp_path / "cut.jpg"
        bad.write_bytes(b[: len(b) // 2])
        with pytest.raises(ImageReadError) as e:
            data_images.read_grayscale(bad)
        assert str(bad) in str(e.value)

    def test_zero_byte_file(self, tmp_path):
        bad = tmp_path / "empty.jpg"
        bad.write_bytes(b"")
        with pytest.raises(ImageReadError, match="empty") as e:
            data_images.read_grayscale(bad)
        assert str(bad) in str(e.value)

    def test_garbage_bytes(self, tmp_path):
        bad = tmp_path / "noise.jpg"
        bad.write_bytes(b"this is not an image at all" * 20)
        with pytest.raises(ImageReadError) as e:
            data_images.read_grayscale(bad)
        assert str(bad) in str(e.value)
        assert type(e.value) is ImageReadError            # not PIL's UnidentifiedImageError
        assert not isinstance(e.value, UnidentifiedImageError)

    def test_jpeg_header_only(self, tmp_path):
        b = self._jpeg_bytes(tmp_path)
        bad = tmp_path / "head.jpg"
        bad.write_bytes(b[:40])
        with pytest.raises(ImageReadError, match="head.jpg"):
            data_images.read_grayscale(bad)

    def test_missing_file(self, tmp_path):
        with pytest.raises(ImageReadError, match="gone.jpg"):
            data_images.read_grayscale(tmp_path / "gone.jpg")

    @pytest.mark.parametrize("damage", ["truncate", "empty"])
    def test_corrupt_image_in_a_split(self, fake_root, damage):
        p = split_folder(fake_root, "train") / "y2.jpg"
        b = p.read_bytes()
        p.write_bytes(b[: len(b) // 3] if damage == "truncate" else b"")
        with pytest.raises(ImageReadError) as e:
            data_cache.load_split("train", 16, root=fake_root)
        assert "y2.jpg" in str(e.value)


# =========================================================================== image modes
GRAY = (np.arange(12 * 10, dtype=np.int64).reshape(12, 10) * 2 + 7).astype(np.uint8)


def _save_mode(path, mode):
    """Write GRAY in ``mode``; return the expected uint8 result."""
    if mode == "I;16":
        Image.fromarray(GRAY.astype(np.uint16) * 257).save(path)
    elif mode == "P":
        im = Image.frombytes("P", GRAY.shape[::-1], (255 - GRAY).tobytes())
        im.putpalette([255 - i for i in range(256) for _ in range(3)])  # index i -> gray 255-i
        im.save(path)
    elif mode == "RGBA":
        rgb = np.repeat(GRAY[..., None], 3, axis=2)
        alpha = np.full(GRAY.shape + (1,), 30, np.uint8)
        Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA").save(path)
    elif mode == "LA":
        Image.fromarray(np.stack([GRAY, np.full_like(GRAY, 99)], axis=2), "LA").save(path)
    else:
        Image.fromarray(GRAY).convert(mode).save(path)
    return GRAY


@pytest.mark.parametrize("mode, suffix", [
    ("RGB", ".png"), ("L", ".png"), ("P", ".png"), ("RGBA", ".png"), ("CMYK", ".tif"),
    ("LA", ".png"), ("I;16", ".png"), ("RGB", ".bmp"), ("L", ".tif"),
])
def test_image_modes_read_as_2d_uint8(tmp_path, mode, suffix):
    path = tmp_path / f"img_{mode.replace(';', '')}{suffix}"
    expected = _save_mode(path, mode)
    with Image.open(path) as im:
        assert im.mode == mode                           # the file really is in that mode
    out = data_images.read_grayscale(path)
    assert out.ndim == 2 and out.dtype == np.uint8 and out.shape == GRAY.shape
    np.testing.assert_array_equal(out, expected)         # lossless formats: exact


def test_rgb_uses_luma(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255                                    # pure red -> 0.299 * 255 = 76
    Image.fromarray(rgb, "RGB").save(tmp_path / "red.png")
    assert np.all(np.abs(data_images.read_grayscale(tmp_path / "red.png").astype(int) - 76) <= 1)


def test_16bit_full_scale_is_255(tmp_path):
    a = np.full((6, 5), 65535, np.uint16)
    a[0, 0] = 0
    a[1, 1] = 257 * 128
    a[1, 2] = 257 * 200                                  # 16-bit scales by 1/257: exactly 200
    a[1, 3] = 1000                                       # 3.89 -> 4
    Image.fromarray(a).save(tmp_path / "w16.png")
    with Image.open(tmp_path / "w16.png") as im:
        assert im.mode == "I;16"
    out = data_images.read_grayscale(tmp_path / "w16.png")
    assert out.dtype == np.uint8 and out[2, 2] == 255 and out[0, 0] == 0 and out[1, 1] == 128
    assert out[1, 2] == 200 and out[1, 3] == 4
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "white16.png")
    assert np.all(data_images.read_grayscale(tmp_path / "white16.png") == 255)   # not min-max scaled


def test_jpeg_grayscale_and_rgb_fake_files_read(fake_root):
    for split, files in FAKE_LAYOUT.items():
        for name, (h, w, _, _) in files.items():
            img = data_images.read_grayscale(split_folder(fake_root, split) / name)
            assert img.shape == (h, w) and img.dtype == np.uint8


# =========================================================================== resizing
class TestResize:
    def test_resize_image(self):
        out = data_images.resize_image(scan_image(40, 60), 16)
        assert out.shape == (16, 16) and out.dtype == np.uint8

    def test_coverage_half_counts_as_tumour(self):
        # 2x2 -> 3x3: the middle column samples exactly halfway between the columns,
        # coverage 0.5, which counts as tumour (>= 0.5)
        out = data_images.resize_mask(np.array([[1, 0], [1, 0]], np.uint8), 3)
        np.testing.assert_array_equal(out, [[1, 1, 0]] * 3)

    def test_coverage_below_half_is_background(self):
        # 2x2 -> 4x4: coverage 1, 0.75 | 0.75, 0.5625 in the corner block; 0.25 / 0.1875 next to it
        out = data_images.resize_mask(np.array([[1, 0], [0, 0]], np.uint8), 4)
        expected = np.zeros((4, 4), np.uint8)
        expected[:2, :2] = 1
        np.testing.assert_array_equal(out, expected)

    def test_block_downscale(self):
        m = np.zeros((64, 64), np.uint8)
        m[16:48, 16:48] = 1
        out = data_images.resize_mask(m, 32)
        expected = np.zeros((32, 32), np.uint8)
        expected[8:24, 8:24] = 1
        np.testing.assert_array_equal(out, expected)
        assert out.dtype == np.uint8

    def test_disk_area_roughly_preserved(self):
        yy, xx = np.mgrid[:256, :256]
        m = (yy - 100) ** 2 + (xx - 140) ** 2 < 40 ** 2
        out = data_images.resize_mask(m, 64)
        assert set(np.unique(out)) == {0, 1}
        assert out.sum() * 16 == pytest.approx(m.sum(), rel=0.05)

    @pytest.mark.parametrize("native, size, pos", [(100, 10, (37, 81)), (640, 32, (300, 5)),
                                                   (173, 16, (0, 172))])
    def test_one_pixel_tumour_does_not_vanish(self, native, size, pos):
        m = np.zeros((native, native), bool)
        m[pos] = True
        out = data_images.resize_mask(m, size)
        assert out.sum() == 1
        (r, c), = np.argwhere(out)
        scale = native / size
        assert abs(r - pos[0] / scale) <= 1.5 and abs(c - pos[1] / scale) <= 1.5

    def test_empty_mask_stays_empty(self):
        assert not data_images.resize_mask(np.zeros((50, 50), bool), 16).any()

    def test_non_square_native(self):
        m = np.zeros((40, 80), bool)
        m[:, :40] = True
        out = data_images.resize_mask(m, 16)
        assert out.shape == (16, 16) and out[:, :7].all() and not out[:, 9:].any()


# =========================================================================== the cache
class TestCache:
    def test_cache_written_with_manifest_and_reused(self, fake_root, isolated_dirs, monkeypatch):
        first = data_cache.load_split("val", 16, root=fake_root, progress=False)
        cpath = data_cache.cache_path("val", 16)
        assert cpath.parent == isolated_dirs["cache"] and cpath.is_file()
        manifest = json.loads(cpath.with_suffix(".manifest.json").read_text())
        assert manifest["split"] == "val" and manifest["size"] == 16
        folder = split_folder(fake_root, "val")
        assert manifest["files"] == {n: data_cache.sha256_file(folder / n) for n in ("y500.jpg", "y501.png")}
        assert manifest["annotations"] == {"annotations_val.json":
                                           data_cache.sha256_file(folder / "annotations_val.json")}
        assert not list(cpath.parent.glob("*.tmp"))

        def no_decoding(*a, **k):
            raise AssertionError("a current cache must not be rebuilt")
        monkeypatch.setattr(data_cache, "load_sample", no_decoding)
        again = data_cache.load_split("val", 16, root=fake_root, progress=False)
        np.testing.assert_array_equal(again.images, first.images)
        np.testing.assert_array_equal(again.masks, first.masks)
        assert again.names == first.names
        np.testing.assert_array_equal(again.native_hw, first.native_hw)

    def test_changed_image_bytes_trigger_rebuild(self, fake_root):
        before = data_cache.load_split("test", 16, root=fake_root, progress=False)
        img_path = split_folder(fake_root, "test") / "y702.png"
        write_image(img_path, np.full((40, 40), 250, np.uint8))   # same name and size, new content
        after = data_cache.load_split("test", 16, root=fake_root, progress=False)
        assert np.all(after.images[1] == 250)
        assert not np.array_equal(after.images[1], before.images[1])
        np.testing.assert_array_equal(after.images[0], before.images[0])
        manifest = json.loads(data_cache.cache_path("test", 16).with_suffix(".manifest.json").read_text())
        assert manifest["files"]["y702.png"] == data_cache.sha256_file(img_path)

    def test_changed_annotation_triggers_rebuild(self, fake_root):
        before = data_cache.load_split("test", 16, root=fake_root, progress=False)
        write_via(br35h.annotations_path("test", fake_root),
                  {"y701.jpg": [circle(24, 16, 6)], "y702.png": [polygon([0, 39, 39, 0], [0, 0, 39, 39])]})
        after = data_cache.load_split("test", 16, root=fake_root, progress=False)
        assert after.masks[1].all() and not before.masks[1].all()

    @pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "pickle"])
    def test_broken_cache_is_rebuilt_not_loaded(self, fake_root, damage, monkeypatch):
        good = data_cache.load_split("train", 16, root=fake_root, progress=False)
        cpath = data_cache.cache_path("train", 16)
        b = cpath.read_bytes()
        broken = {"truncate": b[: len(b) // 2], "garbage": b"\x00garbage" * 100, "empty": b"",
                  "pickle": __import__("pickle").dumps({"images": 1})}[damage]
        cpath.write_bytes(broken)
        calls = []
        real = br35h.load_sample
        monkeypatch.setattr(data_cache, "load_sample", lambda *a: calls.append(1) or real(*a))
        rebuilt = data_cache.load_split("train", 16, root=fake_root, progress=False)
        assert len(calls) == len(good)                        # decoded again from the sources
        np.testing.assert_array_equal(rebuilt.images, good.images)
        np.testing.assert_array_equal(rebuilt.masks, good.masks)
        assert cpath.read_bytes() != broken                   # and the cache was rewritten
        calls.clear()
        data_cache.load_split("train", 16, root=fake_root, progress=False)
        assert calls == []

    def test_cache_with_other_size_is_separate(self, fake_root):
        a = data_cache.load_split("val", 16, root=fake_root, progress=False)
        b = data_cache.load_split("val", 32, root=fake_root, progress=False)
        assert a.images.shape[1:] == (16, 16) and b.images.shape[1:] == (32, 32)
        assert data_cache.cache_path("val", 16).is_file() and data_cache.cache_path("val", 32).is_file()

    def test_use_cache_false_writes_nothing(self, fake_root, isolated_dirs):
        data_cache.load_split("val", 16, root=fake_root, use_cache=False, progress=False)
        assert not any(isolated_dirs["cache"].iterdir())


# =========================================================================== the real dataset
@pytest.mark.realdata
def test_real_br35h(real_root, isolated_dirs):
    """The real files: 500/201/100 annotated images, each readable with a non-empty mask."""
    counts = {}
    for split in br35h.SPLITS:
        anns, folder = br35h.list_split(split, real_root)
        counts[split] = len(anns)
        kinds = set()
        for s in br35h.iter_samples(split, real_root):
            assert s.image.ndim == 2 and s.image.dtype == np.uint8, s.name
            assert s.mask.shape == s.image.shape, s.name
            assert s.mask.any(), f"{split}/{s.name}: empty mask"
            assert s.mask.mean() < 0.5, f"{split}/{s.name}: tumour covers half the image"
            kinds.update(s.kinds)
        assert kinds <= {"polygon", "ellipse", "circle"}
    assert counts == br35h.EXPECTED_COUNTS == {"train": 500, "val": 201, "test": 100}
    assert not any(isolated_dirs["cache"].iterdir())          # nothing cached by reading
    # resized and cached (in the temp cache): no tumour vanishes at 64 x 64
    arr = data_cache.load_split("test", 64, root=real_root, progress=False)
    assert len(arr) == 100 and arr.masks.reshape(100, -1).any(1).all()
    assert data_cache.cache_path("test", 64).parent == isolated_dirs["cache"]
    assert data_cache.cache_path("test", 64).is_file()


def test_one_natural_key_orders_numbers_as_numbers_without_case_and_totally(tmp_path):
    names = ["y10.jpg", "Y2.jpg", "y2.jpg", "no1.jpg", "y1.png"]
    assert sorted(names, key=data_files.natural_key) == ["no1.jpg", "y1.png", "Y2.jpg", "y2.jpg", "y10.jpg"]
    for n in (*names, ".hidden.jpg", "notes.txt"):
        (tmp_path / n).write_text("x")
    (tmp_path / "sub.jpg").mkdir()                                    # a folder is not a file
    assert [p.name for p in data_files.list_files(tmp_path, {".JPG"})] == \
        ["no1.jpg", "Y2.jpg", "y2.jpg", "y10.jpg"]
    assert data_files.list_images(tmp_path) == ["no1.jpg", "y1.png", "Y2.jpg", "y2.jpg", "y10.jpg"]
