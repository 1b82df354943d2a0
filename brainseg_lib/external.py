"""External validation on TCGA-LGG FLAIR slices (Buda et al. 2019), a set no model trains on.

Layout (``paths.external_dir()``, set by ``BRAINSEG_EXTERNAL``, default
``data/lgg_external``)::

    dev/images/<case>_<slice>.png   dev/masks/<case>_<slice>.png     choices only
    test/images/...                 test/masks/...                   scored once, at the end
    manifest.csv                    name, patient, half, tumor_pixels

Figures, per half, at the slices' own 256x256 resolution (the prediction is resized
back, as for Br35H):

* ``pooled_f1``: Dice over all pixels of all slices pooled (the Table I rule);
* ``mean_dice_tumour``: the mean per-slice Dice over slices with a tumour;
* ``clean_marked_share``: the share of clean slices (no tumour) where any pixel is
  predicted tumour, i.e. a false alarm on a healthy slice;
* ``hd95`` / ``nsd``: boundary metrics over tumour slices (``boundary.py``, with its
  empty-mask rule).

95% CIs resample **patients** with replacement (slices of one patient are not
independent) and recompute each figure from the resampled patients' slices.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import paths
from .boundary import NSD_TOLERANCE_PX, boundary_metrics
from .data import (DatasetNotFoundError, ImageReadError, SplitArrays, read_grayscale,  # noqa: F401
                   resize_image, resize_mask)
from .metrics import COUNTS, confusion_counts, metrics_from_counts

HALVES = ("dev", "test")
N_BOOT = 2000
HOW_TO_GET = (
    "The external set is TCGA-LGG FLAIR slices from Buda et al. 2019 (Kaggle "
    "'mateuszbuda/lgg-mri-segmentation', folder kaggle_3m), laid out as "
    "<folder>/{dev,test}/{images,masks}/*.png with <folder>/manifest.csv (name, patient, half). "
    "Set BRAINSEG_EXTERNAL=<folder> (default: data/lgg_external inside the project).")


class ExternalDataNotFound(DatasetNotFoundError):
    """The external folder, a half or its manifest is missing."""


def available(root=None) -> bool:
    """Whether the external set is there (both halves and the manifest)."""
    base = Path(root) if root else paths.external_dir()
    return (base / "manifest.csv").is_file() and all((base / h / "images").is_dir() for h in HALVES)


def check_external(root=None) -> Path:
    base = Path(root) if root else paths.external_dir()
    if not available(base):
        raise ExternalDataNotFound(f"external validation set not found at {base} "
                                   f"(BRAINSEG_EXTERNAL). {HOW_TO_GET}")
    return base


@dataclass
class ExternalHalf:
    arrays: SplitArrays                # images and masks at the model's size
    truths: list[np.ndarray]           # native masks (bool)
    patients: list[str]


def load_half(half: str, size: int, root=None) -> ExternalHalf:
    """One half of the external set, resized to ``size``, with native masks and patients."""
    if half not in HALVES:
        raise ValueError(f"unknown external half {half!r}; choose one of {HALVES}")
    base = check_external(root)
    man = pd.read_csv(base / "manifest.csv")
    man = man[man["half"] == half].reset_index(drop=True)
    images, masks, truths, hw = [], [], [], []
    for name in man["name"]:
        img_path, mask_path = base / half / "images" / f"{name}.png", base / half / "masks" / f"{name}.png"
        img = read_grayscale(img_path)
        truth = read_grayscale(mask_path) > 127
        if truth.shape != img.shape:
            raise ImageReadError(f"mask {mask_path} is {truth.shape[1]}x{truth.shape[0]} but its image "
                                 f"{img_path} is {img.shape[1]}x{img.shape[0]}; they must match")
        images.append(resize_image(img, size))
        masks.append(resize_mask(truth, size))
        truths.append(truth)
        hw.append(img.shape)
    arrays = SplitArrays(f"external-{half}", size, np.stack(images), np.stack(masks).astype(np.uint8),
                         list(man["name"]), np.array(hw, np.int64),
                         np.array([t.mean() for t in truths]))
    return ExternalHalf(arrays, truths, list(man["patient"]))


def score_half(model, half: ExternalHalf, threshold: float = 0.5, device="cpu",
               boundary: bool = True) -> pd.DataFrame:
    """One row per slice: counts, Dice, whether any pixel is predicted, HD95 and NSD."""
    from .evaluate import predict_probs, to_native
    probs = predict_probs(model, half.arrays, device)
    rows = []
    for i, (name, truth, patient) in enumerate(zip(half.arrays.names, half.truths, half.patients)):
        pred = to_native(probs[i], *truth.shape) >= threshold
        c = confusion_counts(pred, truth)
        b = boundary_metrics(pred, truth) if boundary else {"hd95": np.nan, "nsd": np.nan}
        rows.append({"name": name, "patient": patient, "tumour": bool(truth.any()),
                     "tumour_pixels": int(truth.sum()), "pred_pixels": int(pred.sum()),
                     "marked": bool(pred.any()), **c,
                     "dice": metrics_from_counts(*(c[k] for k in COUNTS))["f1"], **b})
    return pd.DataFrame(rows)


# per-patient sums from which every figure is a ratio (so a patient bootstrap only re-adds them)
_SUMS = ("tp", "fp", "fn", "dice_t", "n_t", "marked_c", "n_c", "hd95_t", "nsd_t")


def _patient_sums(df: pd.DataFrame) -> pd.DataFrame:
    t = df["tumour"]
    parts = pd.DataFrame({
        "patient": df["patient"], "tp": df["tp"], "fp": df["fp"], "fn": df["fn"],
        "dice_t": df["dice"].where(t, 0.0), "n_t": t.astype(float),
        "marked_c": (df["marked"] & ~t).astype(float), "n_c": (~t).astype(float),
        "hd95_t": df["hd95"].where(t, 0.0).fillna(0.0), "nsd_t": df["nsd"].where(t, 0.0).fillna(0.0)})
    return parts.groupby("patient", sort=True)[list(_SUMS)].sum()


def _figures(s: np.ndarray) -> dict[str, np.ndarray]:
    """The figures from summed columns (last axis in _SUMS order)."""
    tp, fp, fn, dice_t, n_t, marked_c, n_c, hd95_t, nsd_t = np.moveaxis(s, -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        den = 2 * tp + fp + fn
        return {"pooled_f1": np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 1.0),
                "mean_dice_tumour": dice_t / n_t, "clean_marked_share": marked_c / n_c,
                "hd95_mean": hd95_t / n_t, "nsd_mean": nsd_t / n_t}


def summarize_half(df: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """The half's figures with 95% CIs resampled by patient, plus counts."""
    sums = _patient_sums(df)
    point = {k: float(v) for k, v in _figures(sums.to_numpy().sum(0)).items()}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    boot = _figures(sums.to_numpy()[idx].sum(1))
    ci = {k: [float(np.nanquantile(v, 0.025)), float(np.nanquantile(v, 0.975))] for k, v in boot.items()}
    t = df["tumour"]
    return {**point, "ci95_by_patient": ci, "n_boot": n_boot, "boot_seed": seed,
            "hd95_median": float(df.loc[t, "hd95"].median()) if t.any() else None,
            "n_slices": int(len(df)), "n_tumour_slices": int(t.sum()), "n_clean_slices": int((~t).sum()),
            "n_patients": int(len(sums)), "clean_marked": int((df["marked"] & ~t).sum()),
            "nsd_tolerance_px": NSD_TOLERANCE_PX}


def describe(ext: dict) -> str:
    """The external results in plain sentences, generated from external_validation.json."""
    lines = []
    for h in HALVES:
        e = ext.get(h)
        if not e:
            continue
        ci = e["ci95_by_patient"]
        role = "used for choices" if h == "dev" else "scored once, for the final model"
        lines.append(
            f"- **{h}** ({role}; {e['n_patients']} patients, {e['n_tumour_slices']} tumour and "
            f"{e['n_clean_slices']} clean slices): pooled F1 {e['pooled_f1']:.3f} "
            f"(95% CI {ci['pooled_f1'][0]:.3f}-{ci['pooled_f1'][1]:.3f}), mean Dice on tumour slices "
            f"{e['mean_dice_tumour']:.3f} ({ci['mean_dice_tumour'][0]:.3f}-{ci['mean_dice_tumour'][1]:.3f}), "
            f"{e['clean_marked']} of {e['n_clean_slices']} clean slices marked "
            f"({100 * e['clean_marked_share']:.1f}%), HD95 median {e['hd95_median']:.1f} px, "
            f"NSD at {e['nsd_tolerance_px']:g} px {e['nsd_mean']:.3f}.")
    return "\n".join(lines)
