"""``predict --overlay`` in the report's colours (truth red, prediction cyan), the "no tumour
found" mark, and the closing summary line (scans read, with tumour, without, refused).

The model is hand-made: its tumour probability is the pixel's brightness, so a scan's bright
square is its tumour and a dark scan has none.
"""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from brainseg_lib import cli
from brainseg_lib.apply import predict as predict_predict
from brainseg_lib.apply import scans
from brainseg_lib.report import plots


class BrightnessModel:
    """A stand-in predictor: probability = brightness / 255 (no resizing, no network)."""
    image_size, sha256, source = 32, "0" * 64, "hand-made brightness model"

    def probabilities(self, image, size):
        return np.asarray(image, dtype=np.float32) / 255.0


@pytest.fixture
def brightness_model(monkeypatch):
    monkeypatch.setattr(predict_predict, "load_predictor", lambda checkpoint, device: BrightnessModel())


def scan_with_square(side=64, lo=20, hi=230, box=(16, 48)):
    """A dark scan with a bright square (the 'tumour' of BrightnessModel) over ``box``."""
    a = np.full((side, side), lo, np.uint8)
    a[box[0]:box[1], box[0]:box[1]] = hi
    return a


def rgb255(hex_colour: str) -> tuple[int, int, int]:
    return tuple(round(255 * c) for c in to_rgb(hex_colour))


def is_colour(ov: np.ndarray, rgb) -> np.ndarray:
    return (ov == np.array(rgb, np.uint8)).all(-1)


def test_predict_colours_are_the_reports():
    assert scans.TRUTH_RGB == rgb255(plots.TUMOUR)       # truth: the report's red
    assert scans.PRED_RGB == rgb255(plots.PRED)          # prediction: the report's cyan
    assert scans.OUTLINE_RGB == scans.PRED_RGB           # the predicted outline is cyan, not red


def test_overlay_draws_truth_red_and_prediction_cyan():
    gray = np.full((64, 64), 90, np.uint8)
    truth = np.zeros(gray.shape, bool)
    truth[10:30, 10:30] = True
    pred = np.zeros(gray.shape, bool)
    pred[34:54, 34:54] = True                            # apart from the truth
    ov = scans.overlay_image(gray, pred, truth=truth)
    red, cyan = is_colour(ov, scans.TRUTH_RGB), is_colour(ov, scans.PRED_RGB)
    assert red[10, 10:30].all() and red[10:30, 10].all()         # the truth's outline, in red
    assert cyan[34, 34:54].all() and cyan[34:54, 53].all()       # the prediction's, in cyan
    assert not red[~truth].any() and not cyan[~pred].any()       # each on its own mask only
    assert not red[15:25, 15:25].any() and not cyan[40:48, 40:48].any()   # outlines, not fills
    assert (ov[~(red | cyan)] == 90).all()                       # the scan elsewhere, unchanged
    assert not (is_colour(ov, (255, 0, 0))).any()                # no pure red of the old overlay


def test_overlay_of_an_empty_prediction_says_no_tumour_found():
    gray = np.full((200, 300), 90, np.uint8)
    ov = scans.overlay_image(gray, np.zeros(gray.shape, bool))
    changed = (ov != 90).any(-1)
    assert is_colour(ov, scans.PRED_RGB).sum() > 100             # the banner's frame and words
    ys, xs = np.nonzero(changed)
    assert ys.max() < 50 and xs.min() <= 2 and xs.max() > 100    # a banner across the top left
    assert not changed[100:].any()                               # the scan below, untouched
    assert (scans.overlay_image(gray, np.zeros(gray.shape, bool), mark_empty=False) == 90).all()
    tiny = scans.overlay_image(np.full((8, 8), 90, np.uint8), np.zeros((8, 8), bool))
    assert is_colour(tiny, scans.PRED_RGB)[0].all() and (tiny[2:6, 2:6] == 90).all()   # a frame
    found = np.zeros(gray.shape, bool)
    found[80:120, 140:180] = True
    assert not (scans.overlay_image(gray, found)[:60] != 90).any()   # a finding gets no banner


def write_scans(folder):
    folder.mkdir()
    Image.fromarray(scan_with_square()).save(folder / "bright.png")
    Image.fromarray(np.full((64, 64), 20, np.uint8)).save(folder / "dark.png")
    (folder / "notes.txt").write_text("not a scan")
    return folder


def test_run_draws_truth_red_prediction_cyan_and_marks_the_empty_scan(tmp_path, brightness_model):
    inp = write_scans(tmp_path / "scans")
    truth = tmp_path / "truth"
    truth.mkdir()
    t = np.zeros((64, 64), np.uint8)
    t[8:40, 8:40] = 255                                          # a truth that overlaps the square
    Image.fromarray(t).save(truth / "bright_mask.png")
    run = predict_predict.run_predict(inp, tmp_path / "out", overlay=True, truth=truth)
    by = {r["file"]: r for r in run.rows}
    assert by["bright.png"]["tumour"] == "yes" and by["dark.png"]["tumour"] == "no"
    ov = np.asarray(Image.open(tmp_path / "out" / "bright_overlay.png"))
    red, cyan = is_colour(ov, scans.TRUTH_RGB), is_colour(ov, scans.PRED_RGB)
    assert red[8, 8:40].all() and red[8:16, 8].all()             # truth's outline, red
    assert cyan[47, 17:47].all() and cyan[17:47, 47].all()       # prediction's, cyan
    assert cyan[16, 16:48].all()                                 # ... where the outlines cross
    dark = np.asarray(Image.open(tmp_path / "out" / "dark_overlay.png"))
    assert is_colour(dark, scans.PRED_RGB).any() and not is_colour(dark, scans.TRUTH_RGB).any()


def test_truth_needs_an_overlay_and_a_mask_of_the_scans_size(tmp_path, brightness_model):
    inp = write_scans(tmp_path / "scans")
    with pytest.raises(predict_predict.PredictError, match="add --overlay"):
        predict_predict.run_predict(inp, tmp_path / "o1", truth=tmp_path)
    truth = tmp_path / "truth"
    truth.mkdir()
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(truth / "dark.png")
    run = predict_predict.run_predict(inp, tmp_path / "o2", overlay=True, truth=truth)
    bad = next(r for r in run.rows if r["file"] == "dark.png")
    assert bad["status"] == "error" and "12x10 but the scan is 64x64" in bad["error"]


def test_console_ends_with_the_summary_line(tmp_path, brightness_model, capsys):
    inp = write_scans(tmp_path / "scans")
    rc = cli.main(["predict", "--input", str(inp), "--output", str(tmp_path / "out"), "--overlay"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 1                                               # notes.txt was refused
    assert out[-1].startswith("summary: 3 scan(s) read: 1 with tumour found, 1 without")
    assert "1 refused" in out[-1] and "predictions.csv" in out[-1]


def test_summary_line_counts_the_rows():
    rows = [{"status": "ok", "tumour": "yes"}] * 4 + [{"status": "ok", "tumour": "no"}] * 2 \
        + [{"status": "error", "tumour": ""}]
    run = predict_predict.PredictionRun(rows, scans.Path("o/predictions.csv"), scans.Path("o"), "m")
    line = predict_predict.summary_line(run)
    assert "7 scan(s) read: 4 with tumour found, 2 without" in line and "1 refused" in line
    clean = predict_predict.PredictionRun(rows[:4], scans.Path("o/p.csv"), scans.Path("o"), "m")
    assert predict_predict.summary_line(clean).endswith("0 refused")
