"""The released model on every evaluation set, scored from its committed file (issue 24):
``python -m brainseg_lib evaluate-release`` and notebook 10.

Sets: Br35H TEST (official split; CIs resample near-duplicate groups), the healthy ``report``
scans (share marked), and both halves of both external sets: TCGA-LGG FLAIR (CIs by patient)
and Figshare T1 contrast-enhanced (CIs by index block). Each external half is broken down by
acquisition site (LGG), tumour type (Figshare) and tumour-size quartile (quartile edges from
the half's own tumour slices). The LGG sites the release plan held out (``lgg_held_out_sites``)
get their own view, both halves together: a site no choice looked at.

The released file's settings (``inference.ScanSettings``: the head crop its training used, and
its ``inference``: test-time flips, small-component removal) are applied as ``predict`` applies
them (``inference.scan_probability``), here to whole sets at once. Per-slice rows go to
``results/metrics/release_<set>_per_slice.csv``; every figure to ``release_eval.json``.

Image-level detection (``detection``: notebook 06's rule, thresholds on the VAL tumour images and
the healthy ``val`` scans, rates on the unseen ``yes/`` scans and the healthy ``report`` scans)
is scored the same way, with the released file's settings, per image in
``release_detection_scores.csv``: issue 24's detection target is about the released file. The
healthy ``report`` scans' marked share is read off those scores when every scan was scored (the
same 600 scans; a smoke run with ``detection_limit`` scores them on their own).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainseg_lib import paths

DETECTION_KEEP = ("primary_score", "scores", "threshold_rule", "validation", "report", "bootstrap_unit",
                  "fixed_sensitivity", "report_at_fixed_sensitivity", "healthy_any_pixel_share",
                  "pixel_threshold", "image_size", "head_crop", "tta", "min_component", "limit_per_class")
KEEP = ("pooled_f1", "mean_dice_tumour", "clean_marked_share", "ci95_by_patient",
        "tumour_slices_missed", "n_tumour_slices", "n_slices", "n_clean_slices", "clean_marked",
        "n_patients", "hd95_diag_median_detected", "nsd_diag_mean")


def released_settings(path=None) -> tuple[object, dict, dict]:
    """(model, train_config, inference settings) of the released file, checksum verified; the
    train_config's ``threshold`` is the file's own (``inference.checkpoint_threshold``), and the
    settings name it when the file's ``inference`` sets one."""
    from brainseg_lib.model.checkpoint import model_from_checkpoint
    from brainseg_lib.model.released import load_released
    path = path or paths.released_model()
    ck = load_released(path)
    from brainseg_lib.inference import ScanSettings, checkpoint_threshold
    model = model_from_checkpoint(ck, path).float().eval()
    s = ScanSettings.of_checkpoint(ck)
    own = (ck.get("inference") or {}).get("threshold")
    inf = {"tta": s.tta, "min_component": s.min_component, **({"head_crop": True} if s.head_crop else {}),
           **({"threshold": float(own)} if own is not None else {})}
    return model, {**ck["train_config"], "threshold": checkpoint_threshold(ck)}, inf


def summary(df: pd.DataFrame, n_boot: int) -> dict:
    from brainseg_lib.evaluation.external import summarize_half
    s = summarize_half(df, n_boot=n_boot)
    out = {k: s[k] for k in KEEP if k in s}
    t = df[df["tumour"]]
    out["dice_quantiles_tumour"] = {str(q): float(t["dice"].quantile(q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)} if len(t) else {}
    out["missed_share"] = out["tumour_slices_missed"] / out["n_tumour_slices"] if out["n_tumour_slices"] else None
    return out


def breakdown(df: pd.DataFrame, key: str, n_boot: int) -> dict:
    """``summary`` per value of column ``key`` (rows of every slice with that value)."""
    return {str(v): summary(part, n_boot) for v, part in df.groupby(key, sort=True)}


def size_quartiles(df: pd.DataFrame) -> pd.Series:
    """Q1..Q4 of the tumour slices by native tumour pixels (clean slices: none)."""
    t = df["tumour"]
    q = pd.Series(pd.NA, index=df.index, dtype="object")
    if t.sum() >= 4:
        q[t] = pd.qcut(df.loc[t, "tumour_pixels"].rank(method="first"), 4, labels=["Q1", "Q2", "Q3", "Q4"]).astype(str)
    return q


def score_set(model, half, thr: float, inf: dict) -> pd.DataFrame:
    """Per-slice rows (``evaluation.external.score_half``) with the inference settings applied."""
    from brainseg_lib.evaluation.external import score_half
    from brainseg_lib.inference import scored_probabilities
    probs = scored_probabilities(model, half.arrays.images, None, thr, inf["tta"], inf["min_component"])
    return score_half(model, half, thr, probs=probs)


def br35h_test_half(size: int, data_root=None, head_crop: bool = False):
    """Br35H TEST (official) as an ``ExternalHalf`` whose unit is the near-duplicate group."""
    from brainseg_lib.data.cache import native_masks_for
    from brainseg_lib.data.external import ExternalHalf
    from brainseg_lib.data.splits import near_duplicate_labels, split_arrays
    arr = split_arrays("official", size, data_root, only=("test",), head_crop=head_crop)["test"]
    gts = native_masks_for(arr.names, root=data_root)
    groups = near_duplicate_labels(arr.names) or list(arr.names)
    return ExternalHalf(arr, [gts[n] for n in arr.names], [str(g) for g in groups])


def healthy_report(model, size: int, thr: float, inf: dict, seed: int = 0, data_root=None) -> dict:
    """The healthy ``report`` scans with any pixel marked, scored here (``marked_summary``)."""
    from brainseg_lib.data.healthy import load_healthy
    from brainseg_lib.inference import any_marked, scored_probabilities
    h = load_healthy("report", size, seed, root=data_root, head_crop=inf.get("head_crop", False))
    marked = any_marked(scored_probabilities(model, h.images, None, thr, inf["tta"], inf["min_component"]), thr)
    return marked_summary(marked)


def healthy_report_from_detection(scores: pd.DataFrame) -> dict:
    """``healthy_report`` read off the detection scores of the same scans (the healthy ``report``
    rows: label 0, role ``report``; marked = any pixel predicted, ``area_frac`` > 0), so a full
    evaluation scores those 600 scans once, not twice."""
    rows = scores[(scores["role"] == "report") & (scores["label"] == 0)]
    if rows.empty:
        raise ValueError("the detection scores hold no healthy report scans (label 0, role 'report')")
    return marked_summary(rows["area_frac"].to_numpy() > 0)


def marked_summary(marked: np.ndarray) -> dict:
    """Count, share and Wilson 95% interval of the scans marked (one bool per scan)."""
    from brainseg_lib.evaluation.bootstrap import wilson_ci
    n, k = int(len(marked)), int(np.sum(marked))
    return {"n_scans": n, "marked": k, "marked_share": float(k / n) if n else float("nan"),
            "ci95_wilson": list(wilson_ci(k, n))}


def external_views(model, size: int, thr: float, inf: dict, n_boot: int, held_out) -> dict:
    """Both halves of both external sets with their breakdowns, and the held-out LGG sites."""
    from brainseg_lib.data import external as ext
    from brainseg_lib.fileio import write_csv
    from brainseg_lib.study.release_rule import site_of
    out, lgg_rows = {}, []
    for which in ("lgg", "figshare"):
        if not ext.available(which=which):
            spec = ext.external_set(which)
            out[which] = {"skipped": f"not found at {spec.root()} ({spec.env})"}
            continue
        out[which] = {"title": ext.external_set(which).title, "unit": ext.external_set(which).unit}
        for half_name in ext.HALVES:
            df = score_set(model, ext.load_half(half_name, size, which=which,
                                                head_crop=inf.get("head_crop", False)), thr, inf)
            df["size_quartile"] = size_quartiles(df)
            if which == "lgg":
                df["site"] = df["patient"].map(site_of)
                lgg_rows.append(df.assign(half=half_name))
            write_csv(df, paths.metrics_dir() / f"release_{which}_{half_name}_per_slice.csv")
            key = "site" if which == "lgg" else "label"
            out[which][half_name] = {**summary(df, n_boot), f"by_{key}": breakdown(df, key, n_boot),
                                     "by_size_quartile": breakdown(df[df["tumour"]], "size_quartile", n_boot)}
    if lgg_rows and held_out:
        both = pd.concat(lgg_rows, ignore_index=True)
        part = both[both["site"].isin(held_out)]
        out["lgg_held_out_sites"] = {"sites": list(held_out), "halves": "dev and test together",
                                     **summary(part, n_boot)}
    return out


def released_path() -> Path:
    """The file scored: the results folder's release, else the committed one (a scratch run)."""
    return paths.released_model() if paths.released_model().is_file() else paths.committed_released_model()


def evaluate_release(path=None, n_boot: int = 2000, data_root=None, detection_limit: int | None = None) -> dict:
    """Score the released file on every set (see the module doc); write and return the figures.
    ``detection_limit``: score only that many report scans per class for detection (a smoke run)."""
    from brainseg_lib.fileio import write_csv, write_json
    from brainseg_lib.model.released import checksum_path
    from brainseg_lib.study.release_levers import load_plan
    path = path or released_path()
    model, tcfg, inf = released_settings(path)
    size, thr = int(tcfg["image_size"]), float(tcfg.get("threshold", 0.5))
    test = score_set(model, br35h_test_half(size, data_root, inf.get("head_crop", False)), thr, inf)
    write_csv(test, paths.metrics_dir() / "release_br35h_test_per_slice.csv")
    held_out = load_plan()["rule"].get("lgg_held_out_sites") or []
    healthy_seed = int(tcfg.get("healthy_seed", 0))
    det, scores = detection(model, size, thr, inf, healthy_seed, data_root, n_boot, detection_limit)
    healthy = (healthy_report_from_detection(scores) if scores is not None and detection_limit is None
               else healthy_report(model, size, thr, inf, healthy_seed, data_root))
    result = {
        "model": paths.display_path(path),
        "sha256": checksum_path(path).read_text().split()[0], "image_size": size, "threshold": thr,
        "inference": inf, "br35h_test": {**summary(test, n_boot), "unit": "near-duplicate group",
                                         "per_image_mean_dice": float(test["dice"].mean())},
        "healthy_report": healthy,
        **external_views(model, size, thr, inf, n_boot, held_out),
        "detection": det,
        "n_boot": n_boot}
    result = finite(result)
    write_json(result, paths.metrics_dir() / "release_eval.json")
    return result


def detection(model, size: int, thr: float, inf: dict, healthy_seed: int = 0, data_root=None,
              n_boot: int = 2000, limit: int | None = None) -> tuple[dict, pd.DataFrame | None]:
    """Image-level detection by the released file with its settings: (``detection.summary``'s
    figures, ``DETECTION_KEEP``; the per-image scores), or (``{"skipped": why}``, None) where
    Br35H's ``yes/`` or ``no/`` folder is missing."""
    from brainseg_lib.detection.scores import collect_scores
    from brainseg_lib.detection.summary import summarize_detection
    from brainseg_lib.fileio import write_csv
    try:
        scores, info = collect_scores(model, size, data_root, limit, healthy_seed, thr, progress=False,
                                      tta=inf["tta"], min_component=inf["min_component"],
                                      head_crop=inf.get("head_crop", False))
    except FileNotFoundError as e:
        return {"skipped": str(e)}, None
    write_csv(scores, paths.metrics_dir() / "release_detection_scores.csv")
    s = summarize_detection(scores, info, n_boot=n_boot)
    return {k: s[k] for k in DETECTION_KEEP if k in s}, scores


def finite(value):
    """``value`` with every NaN or infinite float (a group without tumour slices) as None."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def missing_sets(result: dict) -> list[str]:
    """The external sets a release evaluation lacks figures for (a release is refused then)."""
    return [w for w in ("lgg", "figshare") if "test" not in (result.get(w) or {})]
