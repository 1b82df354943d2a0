"""Calibration: do the model's probabilities mean what they say?

For a set of predicted probabilities ``p`` and binary outcomes ``y`` (tumour pixels, or
tumour images):

* **Brier score**: the mean of ``(p - y)^2``; 0 is perfect, lower is better;
* **ECE** (expected calibration error): ``p`` cut into ``N_BINS`` (15) equal-width bins on
  [0, 1]; the mean over bins, weighted by their counts, of ``|mean p - share of y = 1|``;
* a **reliability table** (per bin: count, mean predicted probability, observed frequency), the
  points of a reliability diagram.

**Temperature scaling** (Guo et al. 2017) divides the logits by one number ``T`` fitted on
VALIDATION by minimising the negative log-likelihood (``fit_temperature``); it never changes a
pixel's side of the 0.5 threshold, so every segmentation metric stays the same. It is reported
before and after, and kept only as a figure: the released model is not changed.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

N_BINS = 15
EPS = 1e-7


def _arrays(p, y) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=np.float64).ravel()
    y = np.asarray(y).astype(bool).ravel()
    if p.shape != y.shape:
        raise ValueError(f"{p.size} probabilities against {y.size} outcomes")
    return p, y


def reliability(p, y, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """Per equal-width bin of ``p``: count, mean predicted probability and observed frequency
    (NaN for an empty bin)."""
    p, y = _arrays(p, y)
    idx = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=p, minlength=n_bins) / count
        freq = np.bincount(idx, weights=y.astype(float), minlength=n_bins) / count
    return {"lower": np.arange(n_bins) / n_bins, "count": count, "mean_p": mean_p, "frequency": freq}


def ece(p, y, n_bins: int = N_BINS) -> float:
    """Expected calibration error over ``n_bins`` equal-width bins."""
    r = reliability(p, y, n_bins)
    ok = r["count"] > 0
    return float(np.sum(r["count"][ok] * np.abs(r["mean_p"][ok] - r["frequency"][ok])) / r["count"].sum())


def brier(p, y) -> float:
    """Mean squared difference between probability and outcome."""
    p, y = _arrays(p, y)
    return float(np.mean((p - y) ** 2))


def logits_of(p) -> np.ndarray:
    """Logits of probabilities (clipped away from 0 and 1)."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def scaled(logits, temperature: float) -> np.ndarray:
    """Probabilities of ``logits / temperature``."""
    return 1 / (1 + np.exp(-np.asarray(logits, dtype=np.float64) / temperature))


def fit_temperature(logits, y) -> float:
    """The temperature minimising the negative log-likelihood of ``y`` (fit on VALIDATION)."""
    z, y = _arrays(logits, y)

    def nll(log_t):
        q = np.clip(scaled(z, np.exp(log_t)), EPS, 1 - EPS)
        return -float(np.mean(np.where(y, np.log(q), np.log(1 - q))))

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def summary(p, y, temperature: float | None = None, n_bins: int = N_BINS) -> dict:
    """ECE and Brier of ``p`` (and, with ``temperature``, of the rescaled probabilities), with
    the reliability table, JSON-ready."""
    p, y = _arrays(p, y)
    out = {"n": int(p.size), "positives": int(y.sum()), "ece": ece(p, y, n_bins), "brier": brier(p, y),
           "reliability": {k: [None if not np.isfinite(v) else float(v) for v in a]
                           for k, a in reliability(p, y, n_bins).items()}}
    if temperature is not None:
        q = scaled(logits_of(p), temperature)
        out.update({"temperature": temperature, "ece_scaled": ece(q, y, n_bins), "brier_scaled": brier(q, y)})
    return out


def add_to_file(path, items: dict) -> dict:
    """Add ``summary`` of each ``key: (p, y)`` of ``items`` to the calibration JSON at ``path``
    (notebook 03 writes it with the temperature fitted on VAL; later notebooks add their sets,
    rescaled by that temperature); returns the whole file's content."""
    import json
    from pathlib import Path

    from brainseg_lib.fileio import write_json
    path = Path(path)
    calib = json.loads(path.read_text()) if path.is_file() else {}
    calib.update({k: summary(p, y, calib.get("temperature")) for k, (p, y) in items.items()})
    write_json(calib, path)
    return calib

