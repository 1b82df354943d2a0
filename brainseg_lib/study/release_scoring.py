"""Per-slice figures of one checkpoint on the data that may steer the release choice: Br35H VAL,
the healthy VAL scans, the TCGA-LGG ``dev`` half and the Figshare ``dev`` half, with or without
the inference levers (test-time flips, small-component removal). Never TEST, never an external
``test`` half.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def native_rows(probs, half, threshold: float) -> pd.DataFrame:
    """One row per slice of ``half`` (an ``ExternalHalf``): ``evaluation.external.score_half``'s
    counts and Dice at native size, without boundary metrics, its ``patient`` column as ``unit``."""
    from brainseg_lib.evaluation.boundary import EMPTY
    from brainseg_lib.evaluation.external import score_half
    return (score_half(None, half, threshold, boundary=False, probs=probs)
            .drop(columns=list(EMPTY)).rename(columns={"patient": "unit"}))


def scoring_model(ckpt, device: str = "cpu"):
    """(model, device, image size, threshold, healthy split seed, head crop) of a checkpoint, or of
    the seed ensemble (``model.ensemble``) of a list of checkpoints, whose members must agree on
    the last four."""
    from brainseg_lib.inference import resolve_device
    from brainseg_lib.model.checkpoint import load_checkpoint, model_from_checkpoint
    from brainseg_lib.model.ensemble import SeedEnsemble
    ckpts = list(ckpt) if isinstance(ckpt, (list, tuple)) else [ckpt]
    loaded = [load_checkpoint(c) for c in ckpts]
    same = {(int(c["image_size"]), float(c.get("threshold", 0.5)), int(c.get("healthy_seed", 0)),
             bool(c.get("head_crop", False))) for c in (ck["train_config"] for ck in loaded)}
    if len(same) > 1:
        raise ValueError("the members of an ensemble differ in image size, threshold, healthy split or head crop: "
                         + ", ".join(map(str, ckpts)))
    dev = resolve_device(device)
    models = [model_from_checkpoint(ck, c).to(dev) for ck, c in zip(loaded, ckpts)]
    model = models[0] if len(models) == 1 else SeedEnsemble(models).eval()
    return (model, dev, *same.pop())


def train_reference(size: int, head_crop: bool, data_root=None):
    """Br35H TRAIN's reference landmarks (``data.standardize``) at ``size``, cropped to the head
    with ``head_crop``: the annotated TRAIN scans as a model of that size sees them."""
    from brainseg_lib.data.splits import split_arrays
    from brainseg_lib.data.standardize import reference_landmarks
    train = split_arrays("official", size, data_root, only=("train",), head_crop=head_crop)["train"]
    return reference_landmarks(train.images)


def score_checkpoint(ckpt, tta: bool = False, min_component: float = 0.0, data_root=None,
                     device: str = "cpu", head_crop: bool = False, threshold: float | None = None,
                     reference=None) -> dict[str, pd.DataFrame]:
    """{val, healthy, lgg, figshare}: per-slice rows of the checkpoint, or of the seed ensemble
    (``model.ensemble``) of a list of checkpoints (see the module doc); every scan cropped to the
    head first (``data.head_crop``) with ``head_crop`` or when the checkpoint trained so; with
    ``reference`` landmarks, every scan's head histogram standardised to them after the resize
    (``data.standardize``); a pixel is tumour from ``threshold`` on (None: the checkpoint's own).
    An external set that is not there is refused (the rule needs both)."""
    from brainseg_lib.data import external as ext
    from brainseg_lib.data.cache import native_masks_for
    from brainseg_lib.data.healthy import load_healthy
    from brainseg_lib.data.splits import split_arrays
    from brainseg_lib.data.standardize import standardise
    from brainseg_lib.inference import any_marked, scored_probabilities
    model, dev, size, thr, healthy_seed, trained_crop = scoring_model(ckpt, device)
    thr = thr if threshold is None else float(threshold)
    crop = bool(head_crop or trained_crop)

    def prep(images):
        return images if reference is None else standardise(images, reference)
    out = {}
    val = split_arrays("official", size, data_root, only=("val",), head_crop=crop)["val"]
    gts = native_masks_for(val.names, root=data_root)
    val_half = ext.ExternalHalf(val, [gts[n] for n in val.names], list(val.names))
    out["val"] = native_rows(scored_probabilities(model, prep(val.images), dev, thr, tta, min_component),
                             val_half, thr).drop(columns="unit")
    h = load_healthy("val", size, healthy_seed, root=data_root, head_crop=crop)
    hp = scored_probabilities(model, prep(h.images), dev, thr, tta, min_component)
    out["healthy"] = pd.DataFrame({"name": h.names,
                                   "marked": any_marked(hp, thr)})
    for which in ("lgg", "figshare"):
        half = ext.load_half("dev", size, which=which, head_crop=crop)
        probs = scored_probabilities(model, prep(half.arrays.images), dev, thr, tta, min_component)
        out[which] = native_rows(probs, half, thr)
    return out


def gate_fraction(ckpt, tta: bool, target_share: float, grid, data_root=None,
                  device: str = "cpu", head_crop: bool = False) -> tuple[float, dict[str, float]]:
    """The smallest component size in ``grid`` (shares of the image) at which the share of healthy
    VAL scans the checkpoint marks is at most ``target_share`` (the last one if none is), with
    the share at every size tried; the scans cropped to the head as ``score_checkpoint`` crops them."""
    from brainseg_lib.data.healthy import load_healthy
    from brainseg_lib.inference import scored_probabilities
    model, dev, size, thr, healthy_seed, crop = scoring_model(ckpt, device)
    h = load_healthy("val", size, healthy_seed, root=data_root, head_crop=bool(head_crop or crop))
    return smallest_gate(scored_probabilities(model, h.images, dev, thr, tta, 0.0), thr, target_share, grid)


def smallest_gate(probs, threshold: float, target_share: float, grid) -> tuple[float, dict[str, float]]:
    """``gate_fraction``'s choice on probabilities ``probs`` (N,S,S) of healthy scans."""
    from brainseg_lib.inference import any_marked, drop_small_components
    shares = {}
    for g in grid:
        kept = drop_small_components(probs, threshold, g)      # a copy, the same at size 0
        shares[str(g)] = float(any_marked(kept, threshold).mean())
        if shares[str(g)] <= target_share:
            return float(g), shares
    return float(grid[-1]), shares


def unit_sums(df: pd.DataFrame) -> pd.DataFrame:
    """Per resampling unit (patient or block): the sums every external figure is a ratio of."""
    t = df["tumour"]
    parts = pd.DataFrame({"unit": df["unit"], "tp": df["tp"], "fp": df["fp"], "fn": df["fn"],
                          "dice_t": df["dice"].where(t, 0.0), "n_t": t.astype(float),
                          "missed_t": (t & ~df["marked"]).astype(float),
                          "marked_c": (df["marked"] & ~t).astype(float), "n_c": (~t).astype(float)})
    return parts.groupby("unit", sort=True).sum()


SUM_COLUMNS = ("tp", "fp", "fn", "dice_t", "n_t", "missed_t", "marked_c", "n_c")


def set_figures(s: np.ndarray) -> dict[str, np.ndarray]:
    """Pooled F1, mean tumour Dice, missed share, clean-marked share and the set's score from
    summed columns (last axis in SUM_COLUMNS order); a set without clean slices scores no
    clean-marked penalty."""
    tp, fp, fn, dice_t, n_t, missed_t, marked_c, n_c = np.moveaxis(np.asarray(s, float), -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12), 1.0)
        dice = dice_t / n_t
        clean = np.where(n_c > 0, marked_c / np.maximum(n_c, 1e-12), 0.0)
    return {"pooled_f1": f1, "mean_dice_tumour": dice, "missed_share": missed_t / n_t,
            "clean_marked_share": clean, "score": (f1 + dice) / 2 - clean}
