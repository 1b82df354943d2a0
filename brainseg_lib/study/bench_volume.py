"""Timing ``predict`` on one volume (``bench --volume``): a 256 x 256 x 40 NIfTI segmented with
the onnxruntime backend (issue 27's target: under 2 s on the 2-core CPU).

The volume is synthetic int16 (a noisy head-like ellipse with a brighter blob, 12-bit range),
so every slice goes through the per-slice intensity mapping (``apply.volumes.to_uint8``).
Each figure is the median of ``repeats`` whole ``run_predict`` calls (loading and probing the
model, reading the NIfTI, 40 forward passes, writing the mask NIfTI and the table); the load
average and whether the process ran under ``nice`` are recorded beside it, since the machine
may be busy with other work.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np

SHAPE = (256, 256, 40)


def synthetic_volume(path: Path, shape=SHAPE, seed: int = 0) -> Path:
    """A synthetic int16 NIfTI of ``shape`` (1 mm voxels) at ``path``."""
    import nibabel as nib
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    head = (x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 1.2) ** 2 < 1
    blob = (x - 0.3) ** 2 + (y + 0.2) ** 2 + z ** 2 < 0.05
    data = head * 1200.0 + blob * 1500.0 + rng.normal(0, 40, shape)
    img = nib.Nifti1Image(np.clip(data, 0, 4095).astype(np.int16), np.diag([1.0, 1.0, 1.0, 1.0]))
    img.header.set_xyzt_units("mm")
    nib.save(img, path)
    return path


def time_predict_volume(checkpoint=None, repeats: int = 3, runtime: str = "onnx") -> dict:
    """Seconds of ``repeats`` whole ``run_predict`` calls on a synthetic 256x256x40 NIfTI."""
    import torch

    from brainseg_lib import paths
    from brainseg_lib.apply.predict import run_predict
    runs, row = [], None
    with tempfile.TemporaryDirectory() as tmp:
        vol = synthetic_volume(Path(tmp) / "volume.nii.gz")
        for k in range(repeats):
            t0 = time.perf_counter()
            run = run_predict(vol, Path(tmp) / f"out-{k}", checkpoint=checkpoint, device="cpu",
                              runtime=runtime, progress=False)
            runs.append(time.perf_counter() - t0)
            row = run.rows[0]
    return {"kind": "predict_volume", "shape": list(SHAPE), "dtype": "int16", "runtime": runtime,
            "model": paths.display_path(run.model), "seconds_median": round(median(runs), 3),
            "seconds_runs": [round(r, 3) for r in runs], "repeats": repeats,
            "what": "whole run_predict: model load and probe, NIfTI read, 40 slices, mask write, table",
            "status": row["status"], "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "nice": os.nice(0), "load_average_1min": round(os.getloadavg()[0], 2),
            "target_seconds": 2.0}
