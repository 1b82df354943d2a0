"""Per-patient 3-D Dice and volume error on the external set's whole volumes
(``python -m brainseg_lib score-volumes``; issue 27).

The 44 ``test`` patients of the external TCGA-LGG FLAIR set lie in
``paths.external_volumes_dir()`` as ``<patient>_flair.nii.gz`` and ``<patient>_mask.nii.gz``.
The FLAIR volumes are segmented by ``apply.predict.run_predict``, the path the ``predict``
command takes for a user's NIfTI files (a folder of links to them in, ``<patient>_mask.nii.gz``
out), with the released model unless told otherwise; each predicted mask is read back with
nibabel, checked to have the truth's shape and affine, and compared with the truth voxel for
voxel.

Per patient: 3-D Dice ``2|P & T| / (|P| + |T|)`` (1 where both are empty), the volume error
``|P| - |T|`` in voxels and its absolute value, in mL too where the header gives a spatial unit
(these volumes carry none: the source has no voxel spacing, so volumes are in voxels). CIs
resample patients (``evaluation.bootstrap``: one draw of ``N_BOOT`` replicates, seed 0,
percentile interval at ``CI95``) for the median and mean Dice and the mean and median absolute
volume error.

Buda et al. 2019, who published these scans, report a mean per-patient Dice of about 82 %
(``BUDA_2019``); their network was trained by cross-validation on these very patients, ours
never saw them. That figure is cited, not reproduced.

Writes ``results/metrics/external_volumes.json`` and
``results/tables/external_volumes_per_patient.csv``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from brainseg_lib import paths
from brainseg_lib.data.errors import DatasetNotFoundError
from brainseg_lib.evaluation.bootstrap import CI95, N_BOOT, bootstrap_stat, percentile_ci

JSON_NAME = "external_volumes.json"
CSV_NAME = "external_volumes_per_patient.csv"
TARGET_MEDIAN_DICE = 0.70          # issue 27's goal for the released model
BUDA_2019 = {
    "figure": "mean per-patient Dice about 0.82 (82 %)",
    "mean_dice": 0.82,
    "source": "M. Buda, A. Saha, M. A. Mazurowski. Association of genomic subtypes of lower-grade "
              "gliomas with shape features automatically extracted by a deep learning algorithm. "
              "Computers in Biology and Medicine 109 (2019) 218-225. doi:10.1016/j.compbiomed.2019.05.002",
    "status": "cited, not reproduced",
    "caveat": "their network was trained (cross-validation) on these same TCGA-LGG patients; ours "
              "never saw them, so the figures are not a like-for-like comparison",
}


def available(folder=None) -> bool:
    """Whether the external volumes folder (default ``paths.external_volumes_dir()``) holds any
    ``<patient>_flair.nii.gz``."""
    folder = Path(folder) if folder is not None else paths.external_volumes_dir()
    return folder.is_dir() and any(folder.glob("*_flair.nii.gz"))


def patients(folder: Path) -> list[tuple[str, Path, Path]]:
    """(patient, FLAIR volume, truth mask) of every patient in ``folder``, sorted."""
    if not folder.is_dir():
        raise DatasetNotFoundError(f"no external volumes folder {folder}; set BRAINSEG_EXTERNAL to the "
                                   "lgg_external folder that holds volumes/ (see the data README)")
    out = []
    for flair in sorted(folder.glob("*_flair.nii.gz")):
        name = flair.name[:-len("_flair.nii.gz")]
        truth = folder / f"{name}_mask.nii.gz"
        if not truth.is_file():
            raise DatasetNotFoundError(f"{flair.name} has no {truth.name} beside it in {folder}")
        out.append((name, flair, truth))
    if not out:
        raise DatasetNotFoundError(f"no <patient>_flair.nii.gz volumes in {folder}")
    return out


def predict_volumes(cases, work: Path, checkpoint=None, runtime: str = "torch",
                    threshold: float | None = None, device: str = "cpu"):
    """``run_predict`` on a folder of links ``<patient>.nii.gz`` to the FLAIR volumes, as a
    user would call ``predict --input FOLDER``; the run (masks in ``work / "masks"``)."""
    from brainseg_lib.apply.predict import run_predict
    inputs = work / "inputs"
    inputs.mkdir(parents=True)
    for name, flair, _ in cases:
        try:
            os.symlink(flair.resolve(), inputs / f"{name}.nii.gz")
        except OSError:             # no symbolic links here: a copy reads the same
            shutil.copyfile(flair, inputs / f"{name}.nii.gz")
    run = run_predict(inputs, work / "masks", checkpoint=checkpoint, threshold=threshold,
                      device=device, runtime=runtime, progress=False)
    failed = [r for r in run.rows if r["status"] != "ok"]
    if failed:
        raise ValueError(f"predict failed on {failed[0]['file']}: {failed[0]['error']}")
    return run


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """3-D Dice of two boolean volumes; 1.0 when both are empty."""
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(pred & truth)) / total


def score_patient(name: str, pred_path: Path, truth_path: Path) -> dict:
    """The per-patient row: Dice and volume error of a predicted mask against the truth."""
    import nibabel as nib

    from brainseg_lib.apply.volumes import voxel_ml
    p, t = nib.load(pred_path), nib.load(truth_path)
    if p.shape != t.shape or not np.array_equal(p.affine, t.affine):
        raise ValueError(f"{pred_path.name} does not line up with {truth_path.name} (shape {p.shape} "
                         f"vs {t.shape}, or another affine); the predict path lost the geometry")
    pred, truth = np.asanyarray(p.dataobj) > 0, np.asanyarray(t.dataobj) > 0
    ml = voxel_ml(t.header)
    err = int(pred.sum()) - int(truth.sum())
    return {"patient": name, "slices": int(t.shape[2]),
            "tumour_slices_true": int(truth.any(axis=(0, 1)).sum()),
            "tumour_slices_pred": int(pred.any(axis=(0, 1)).sum()),
            "voxels_true": int(truth.sum()), "voxels_pred": int(pred.sum()),
            "dice": dice(pred, truth), "volume_error_voxels": err, "abs_volume_error_voxels": abs(err),
            "abs_volume_error_ml": None if ml is None else abs(err) * ml}


def summarise(per_patient: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Medians, means and patient-bootstrap CIs of Dice and absolute volume error."""
    cols = ["dice", "abs_volume_error_voxels"]
    known_ml = per_patient["abs_volume_error_ml"].notna().all()
    cols += ["abs_volume_error_ml"] if known_ml else []
    values = per_patient[cols].to_numpy(dtype=np.float64)

    def stats(res: np.ndarray) -> dict:
        return {f"{f}_{c}": getattr(np, f)(res[:, :, j], axis=1)
                for j, c in enumerate(cols) for f in ("median", "mean")}

    reps = bootstrap_stat(values, stats, n_boot, seed)
    out = {}
    for j, c in enumerate(cols):
        v = values[:, j]
        out[c] = {"median": float(np.median(v)), "median_ci95": percentile_ci(reps[f"median_{c}"], CI95),
                  "mean": float(np.mean(v)), "mean_ci95": percentile_ci(reps[f"mean_{c}"], CI95),
                  "q1": float(np.quantile(v, 0.25)), "q3": float(np.quantile(v, 0.75)),
                  "min": float(v.min()), "max": float(v.max())}
    if not known_ml:
        out["abs_volume_error_ml"] = None
    return out


def _shown(folder: Path) -> str:
    """The volumes folder as recorded: ``<external set>/volumes`` for the default (the set's
    location differs between machines), else the path."""
    if folder.resolve() == paths.external_volumes_dir().resolve():
        return f"{paths.external_dir().name}/volumes (under BRAINSEG_EXTERNAL)"
    return paths.display_path(folder)


def score_volumes(volumes_dir=None, checkpoint=None, runtime: str = "torch", threshold: float | None = None,
                  device: str = "cpu", n_boot: int = N_BOOT, seed: int = 0, write: bool = True) -> dict:
    """Segment every external volume through ``predict`` and score it per patient; the summary
    (and, with ``write``, the JSON and per-patient CSV written; their paths in the summary)."""
    from brainseg_lib.data.cache import sha256_file
    folder = Path(volumes_dir) if volumes_dir is not None else paths.external_volumes_dir()
    cases = patients(folder)
    with tempfile.TemporaryDirectory(prefix="brainseg-volumes-") as tmp:
        run = predict_volumes(cases, Path(tmp), checkpoint, runtime, threshold, device)
        rows = [score_patient(name, run.out_dir / f"{name}_mask.nii.gz", truth)
                for name, _, truth in cases]
    per_patient = pd.DataFrame(rows)
    result = {"kind": "external_volumes", "read_through": "apply.predict.run_predict (the predict "
              "command's path for NIfTI input)", "model": paths.display_path(run.model),
              "model_sha256": sha256_file(run.model), "runtime": runtime, "threshold": run.threshold,
              "volumes": _shown(folder), "n_patients": len(rows),
              "n_slices": int(per_patient["slices"].sum()), "n_boot": n_boot, "seed": seed,
              "ci": "percentile, patients resampled", **summarise(per_patient, n_boot, seed),
              "spacing": "not known (the volumes carry an identity affine, no units), so volumes and errors are in voxels",
              "target_median_dice": TARGET_MEDIAN_DICE,
              "meets_target": bool(per_patient["dice"].median() >= TARGET_MEDIAN_DICE),
              "cited": {"buda2019": BUDA_2019}}
    if per_patient["abs_volume_error_ml"].notna().all():
        result["spacing"] = "read from the NIfTI headers (mm)"
    if write:
        from brainseg_lib.fileio import write_csv, write_json
        csv_path = write_csv(per_patient, paths.tables_dir() / CSV_NAME)
        result["per_patient_csv"] = paths.display_path(csv_path)
        write_json(result, paths.metrics_dir() / JSON_NAME)
    result["per_patient"] = per_patient
    return result


def summary_line(r: dict) -> str:
    """One line of a ``score_volumes`` result: Dice median and mean with their CIs, and where
    the files went."""
    d = r["dice"]
    return (f"{r['n_patients']} patients ({r['n_slices']} slices), model {r['model']}: per-patient 3-D "
            f"Dice median {d['median']:.3f} (95% CI {d['median_ci95'][0]:.3f}-{d['median_ci95'][1]:.3f}), "
            f"mean {d['mean']:.3f} (95% CI {d['mean_ci95'][0]:.3f}-{d['mean_ci95'][1]:.3f}); "
            f"{paths.display_path(paths.metrics_dir() / JSON_NAME)}, {r.get('per_patient_csv', '')}")
