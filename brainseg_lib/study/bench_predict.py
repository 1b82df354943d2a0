"""Timing ``predict --overlay`` on one synthetic very large scan (``bench --overlay-side N``)."""
from __future__ import annotations

import time
from statistics import median

import numpy as np
import torch


def time_predict_overlay(side: int = 5000, checkpoint=None, repeats: int = 3) -> dict:
    """Seconds for ``predict --overlay`` on one synthetic side x side scan (median of
    ``repeats``; the released model unless ``checkpoint``), with the share spent drawing."""
    import tempfile

    from PIL import Image

    from brainseg_lib.apply.predict import run_predict
    from brainseg_lib.apply.scans import overlay_image
    yy, xx = np.mgrid[:side, :side]
    scan = ((np.hypot(yy - side / 2, xx - side / 2) < side / 3) * 120 + 20).astype(np.uint8)
    runs, draws = [], []
    with tempfile.TemporaryDirectory() as tmp:
        Image.fromarray(scan).save(f"{tmp}/scan.png")
        for k in range(repeats):
            t0 = time.perf_counter()
            run_predict(f"{tmp}/scan.png", f"{tmp}/out{k}", checkpoint=checkpoint, overlay=True,
                        device="cpu", progress=False)
            runs.append(time.perf_counter() - t0)
            mask = np.asarray(Image.open(f"{tmp}/out{k}/scan_mask.png")) > 127
            t0 = time.perf_counter()
            overlay_image(scan, mask)
            draws.append(time.perf_counter() - t0)
    return {"kind": "predict_overlay", "side": side, "seconds_median": round(median(runs), 3),
            "seconds_runs": [round(r, 3) for r in runs], "outline_seconds_median": round(median(draws), 3),
            "threads": torch.get_num_threads()}
