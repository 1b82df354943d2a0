"""Timing ``predict --overlay`` on one very large scan (``bench --overlay-side N``).

The scan is a real Br35H scan (``yes/y0.jpg`` unless told otherwise) scaled to N x N
(bilinear) and stored as a PNG, as a large export from a scanner would be; a flat synthetic
image (a bright disk on a dark ground) is timed beside it for comparison, since it
compresses and outlines far more easily than a real scan. Each figure is the median of
``repeats`` whole ``run_predict`` calls (model loading, reading, the network, resizing the
probability map back, drawing, writing the PNGs and the table), and the stages of one call
on the real scan are timed apart.
"""
from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch

DEFAULT_SCAN = "yes/y0.jpg"       # under the Br35H root (BRAINSEG_DATA)


def real_scan_png(folder: Path, side: int, scan: str | Path | None = None) -> tuple[Path, str]:
    """(a PNG of the Br35H scan ``scan`` scaled to side x side, how it was made)."""
    from PIL import Image

    from brainseg_lib import paths
    src = Path(scan) if scan is not None else paths.data_dir() / DEFAULT_SCAN
    if not src.is_file():
        raise FileNotFoundError(f"bench --overlay-side needs a real scan and {src} does not exist; "
                                "fetch the data (python -m brainseg_lib fetch-data) or set BRAINSEG_DATA")
    with Image.open(src) as im:
        big = im.resize((side, side), Image.BILINEAR)
    out = folder / "scan.png"
    big.save(out)
    shown = src.relative_to(paths.data_dir()) if paths.data_dir() in src.parents else src.name
    return out, f"Br35H {shown} ({big.mode}) scaled to {side}x{side} (bilinear), stored as PNG"


def flat_scan_png(folder: Path, side: int) -> Path:
    """A flat synthetic side x side scan: a bright disk on a dark ground."""
    from PIL import Image
    yy, xx = np.mgrid[:side, :side]
    scan = ((np.hypot(yy - side / 2, xx - side / 2) < side / 3) * 120 + 20).astype(np.uint8)
    out = folder / "flat.png"
    Image.fromarray(scan).save(out)
    return out


def time_runs(scan: Path, folder: Path, checkpoint, repeats: int) -> list[float]:
    """Seconds of ``repeats`` whole ``predict --overlay`` runs on ``scan``."""
    from brainseg_lib.apply.predict import run_predict
    runs = []
    for k in range(repeats):
        t0 = time.perf_counter()
        run_predict(scan, folder / f"out-{scan.stem}-{k}", checkpoint=checkpoint, overlay=True,
                    device="cpu", progress=False)
        runs.append(time.perf_counter() - t0)
    return runs


def stage_times(scan: Path, checkpoint) -> dict:
    """Seconds of each stage of one ``predict --overlay`` of ``scan``, timed apart."""
    from PIL import Image

    from brainseg_lib.apply.predict import load_predictor
    from brainseg_lib.apply.scans import OVERLAY_PNG_LEVEL, overlay_pil
    from brainseg_lib.data import images
    clock, out = time.perf_counter, {}
    t = clock()
    predictor = load_predictor(checkpoint, "cpu")
    out["load_model"], t = clock() - t, clock()
    gray = images.read_grayscale(scan, as_displayed=True)
    out["read_scan"], t = clock() - t, clock()
    prob = predictor.probabilities(gray)
    mask = prob >= 0.5
    out["network_and_resize_back"], t = clock() - t, clock()
    overlay = overlay_pil(gray, mask)
    out["draw_outline"], t = clock() - t, clock()
    Image.fromarray(mask.astype(np.uint8) * 255).save(io.BytesIO(), format="PNG")
    out["mask_png"], t = clock() - t, clock()
    overlay.save(io.BytesIO(), format="PNG", compress_level=OVERLAY_PNG_LEVEL)
    out["overlay_png"] = clock() - t
    return {k: round(v, 3) for k, v in out.items()}


def time_predict_overlay(side: int = 5000, checkpoint=None, repeats: int = 3, scan=None) -> dict:
    """Seconds for ``predict --overlay`` on a real Br35H scan scaled to side x side (median
    of ``repeats``; the released model unless ``checkpoint``), the share spent drawing, each
    stage of one run, and the same run on a flat synthetic scan."""
    from PIL import Image

    from brainseg_lib.apply.scans import overlay_pil
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        real, described = real_scan_png(folder, side, scan)
        runs = time_runs(real, folder, checkpoint, repeats)
        gray = np.asarray(Image.open(real).convert("L"))
        mask = np.asarray(Image.open(folder / "out-scan-0" / "scan_mask.png")) > 127
        draws = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            overlay_pil(gray, mask)
            draws.append(time.perf_counter() - t0)
        stages = stage_times(real, checkpoint)
        flat = time_runs(flat_scan_png(folder, side), folder, checkpoint, repeats)
    return {"kind": "predict_overlay", "side": side, "seconds_median": round(median(runs), 3),
            "seconds_runs": [round(r, 3) for r in runs], "outline_seconds_median": round(median(draws), 3),
            "threads": torch.get_num_threads(), "scan": described, "tumour_fraction": round(float(mask.mean()), 4),
            "stages_seconds": stages, "synthetic_seconds_median": round(median(flat), 3)}
