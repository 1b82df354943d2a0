"""Evaluate a checkpoint on a split and write per-image CSV + aggregate JSON.

Metrics are computed at two resolutions:

* ``native`` (what Table I reports): the predicted probability map is resized
  back to each image's own size (bilinear), thresholded, and compared with the
  mask rasterised at native size. This is what a user with the original scans
  and annotations would measure.
* ``model``: prediction and the resized mask at the model's input size.

The aggregate JSON holds ``global`` (pooled) and ``per_image_mean`` /
``per_image_sd`` blocks for the native resolution, the same under
``model_resolution``, bootstrap 95% CIs of the pooled metrics (resampling images, and
resampling near-duplicate groups, ``bootstrap_ci95_groups``: the unit to quote), the training
config, checkpoint path and device. Clock times are not in it (``experiment.write_timing``
keeps them beside the run), so the same run gives the same JSON on any machine.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainseg_lib import paths
from brainseg_lib.data.cache import SplitArrays, load_split, native_masks_for
from brainseg_lib.data.splits import near_duplicate_labels
from brainseg_lib.evaluation.bootstrap import bootstrap_ci, bootstrap_cis_groups
from brainseg_lib.evaluation.boundary import boundary_metrics, summarize_boundary
from brainseg_lib.evaluation.metrics import (
    COUNTS,
    METRICS,
    confusion_counts,
    metrics_from_counts,
    per_image_table,
    summarize_per_image,
)
from brainseg_lib.fileio import display_path, write_csv, write_json
from brainseg_lib.inference import (
    predict_probs,
    resolve_device,
    to_native_frame,
)
from brainseg_lib.model.checkpoint import load_checkpoint, model_from_checkpoint

RUN_KIND = "segmentation_run"


@dataclass
class Evaluation:
    per_image: pd.DataFrame        # one row per image, native and model_* columns
    summary: dict                  # JSON-ready aggregate
    probs: np.ndarray              # model-resolution probabilities (N, S, S)


def evaluate_model(model, split: str, image_size: int, threshold: float = 0.5, device=None,
                   data_root=None, arrays: SplitArrays | None = None,
                   limit: int | None = None, gts: dict | None = None, boundary: bool = True,
                   head_crop: bool = False) -> Evaluation:
    """Predict ``split`` and score it at native and model resolution. ``gts`` (native masks
    by name) can be passed in when the same images are scored several times. With
    ``boundary``, HD95 and NSD (``boundary.py``) are added per image at native resolution.
    ``head_crop``: the split is loaded cropped to the head (a model trained so) when ``arrays``
    is not given; given arrays carry their own boxes."""
    arrays = (arrays or load_split(split, image_size, root=data_root, head_crop=head_crop)).head(limit)
    probs = predict_probs(model, arrays, device)
    if gts is None:
        gts = native_masks_for(arrays.names, root=data_root)
    rows = []
    for i, name in enumerate(arrays.names):
        gt = gts[name]
        pn = to_native_frame(probs[i], *gt.shape, arrays.box(i)) >= threshold
        native = confusion_counts(pn, gt)
        model_res = confusion_counts(probs[i] >= threshold, arrays.masks[i])
        rows.append({"name": name, "native_h": gt.shape[0], "native_w": gt.shape[1],
                     "tumour_pixels": int(gt.sum()), "pred_pixels": int(pn.sum()),
                     "max_prob": float(probs[i].max()), **native,
                     **{f"model_{k}": v for k, v in model_res.items()},
                     **(boundary_metrics(pn, gt) if boundary else {})})
    df = per_image_table(pd.DataFrame(rows))
    model_df = per_image_table(df[[f"model_{c}" for c in COUNTS]].set_axis(list(COUNTS), axis=1))
    for k in METRICS:
        df[f"model_{k}"] = model_df[k].to_numpy()
    native_summary = summarize_per_image(df)
    summary = {
        "split": split, "threshold": threshold, "table_resolution": "native",
        "n_images": native_summary["n_images"],
        "global": native_summary["global"],
        "per_image_mean": native_summary["per_image_mean"],
        "per_image_sd": native_summary["per_image_sd"],
        "counts": native_summary["counts"],
        "bootstrap_ci95": {m: list(bootstrap_ci(df, m)) for m in METRICS},
        **group_cis(df),
        "model_resolution": {k: v for k, v in summarize_per_image(model_df).items() if k != "n_images"},
    }
    if boundary:
        summary["boundary"] = summarize_boundary(df)
    return Evaluation(df, summary, probs)


def group_cis(per_image: pd.DataFrame) -> dict:
    """``bootstrap_ci95_groups``: the pooled metrics' CIs resampling near-duplicate groups
    (``splits.near_duplicate_labels``) instead of images, and how many groups there were;
    {} before the audit wrote its groups."""
    labels = near_duplicate_labels(list(per_image["name"]))
    if labels is None:
        return {}
    cis = bootstrap_cis_groups(per_image, labels, METRICS)
    return {"bootstrap_ci95_groups": {m: list(cis[m]) for m in METRICS},
            "near_duplicate_groups": len(set(labels))}


def evaluate_checkpoint(checkpoint: str | Path, split: str = "test", threshold: float = 0.5,
                        device="auto", data_root=None, limit: int | None = None,
                        arrays: SplitArrays | None = None, gts: dict | None = None) -> Evaluation:
    """Load a checkpoint written by ``train.fit`` and evaluate it on ``split`` (or on
    ``arrays``, e.g. the TEST part of the grouped split)."""
    ck = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ck, checkpoint)
    size = ck["train_config"]["image_size"]
    dev = resolve_device(device)
    ev = evaluate_model(model, split, size, threshold, dev, data_root, arrays=arrays, limit=limit,
                        gts=gts, head_crop=bool(ck["train_config"].get("head_crop", False)))
    ev.summary.update({"checkpoint": display_path(checkpoint), "device": str(dev),
                       "config": ck["train_config"], "epoch": ck.get("epoch")})
    return ev


def write_evaluation(ev: Evaluation, run_name: str, extra: dict | None = None,
                     out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``<run>.json`` (aggregate) and ``<run>_per_image.csv`` to results/metrics."""
    out = paths.ensure(Path(out_dir) if out_dir else paths.metrics_dir())
    summary = {"kind": RUN_KIND, "run_name": run_name, **ev.summary, **(extra or {})}
    csv_path = write_csv(ev.per_image, out / f"{run_name}_per_image.csv")
    summary["per_image_csv"] = csv_path.name
    return write_json(summary, out / f"{run_name}.json"), csv_path


def load_run_metrics(out_dir: str | Path | None = None) -> list[dict]:
    """Every segmentation-run JSON in results/metrics, sorted by run name."""
    out = Path(out_dir) if out_dir else paths.metrics_dir()
    runs = []
    for p in sorted(out.glob("*.json")):
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(d, dict) and d.get("kind") == RUN_KIND:
            runs.append(d)
    return runs


def case_predictions(checkpoint: str | Path, split: str, names: list[str], threshold: float = 0.5,
                     device="auto", data_root=None):
    """(image, truth, prediction) at native size for the named images, for figures."""
    from brainseg_lib.data.br35h import list_split, load_sample
    ck = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ck, checkpoint)
    size = ck["train_config"]["image_size"]
    anns, folder = list_split(split, data_root)
    by_name = {a.filename: a for a in anns}
    samples = [load_sample(by_name[n], folder) for n in names]
    from brainseg_lib.data.head_crop import framed
    from brainseg_lib.data.images import resize_image
    shown = [framed(s.image, None, bool(ck["train_config"].get("head_crop", False))) for s in samples]
    arrays = SplitArrays(split, size, np.stack([resize_image(im, size) for im, _, _ in shown]),
                         np.zeros((len(samples), size, size), np.uint8), list(names),
                         np.array([s.image.shape for s in samples]), np.zeros(len(samples)))
    probs = predict_probs(model, arrays, resolve_device(device))
    return [(s.image, s.mask, to_native_frame(p, *s.image.shape, box) >= threshold)
            for s, p, (_, _, box) in zip(samples, probs, shown)]


def run_invariants(run: dict, per_image: pd.DataFrame) -> dict[str, bool]:
    """What holds for every scored run, whatever its figures (notebook 03 prints these for
    nbval to compare): one row per scored image (no name twice), native counts that cover
    each image's pixels, tumour and predicted pixels that are tp + fn and tp + fp, and pooled
    counts and figures that are the summed native counts and ``metrics_from_counts`` of them."""
    counts = per_image[list(COUNTS)]
    summed = {k: int(v) for k, v in counts.sum().items()}
    pooled = metrics_from_counts(*summed.values())
    return {
        "one row per scored image": len(per_image) == run["n_images"] == per_image["name"].nunique(),
        "native counts cover every pixel": bool(
            (counts.sum(axis=1) == per_image["native_h"] * per_image["native_w"]).all()),
        "tumour pixels = tp + fn": bool((per_image["tumour_pixels"] == per_image["tp"] + per_image["fn"]).all()),
        "predicted pixels = tp + fp": bool((per_image["pred_pixels"] == per_image["tp"] + per_image["fp"]).all()),
        "pooled figures from the summed counts": summed == run["counts"] and all(
            np.isclose(pooled[k], run["global"][k], equal_nan=True) for k in METRICS),
    }
