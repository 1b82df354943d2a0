"""Choosing the cpu profile on VAL and the external ``dev`` half only: the lever table.

Every run records ``selection`` figures in its JSON (``selection_figures``), computed on
data that may steer choices and on nothing else:

* Br35H VAL (annotated): pooled F1, HD95 median and NSD mean at native resolution;
* Br35H healthy validation scans (``healthy.py`` role ``val``, all 300): the share
  with any pixel predicted tumour (at the model's resolution);
* the external ``dev`` half (``external.py``): pooled F1, mean Dice on tumour slices,
  share of clean slices marked, HD95 median and NSD mean.

``params/levers.yaml`` lists the lever trials: each one changes one thing against the
row it names as its base, starting from the paper's setting (annotated images only).
``python -m brainseg_lib levers`` trains them (results/levers/, skipped when already
done with the same config) and writes ``results/levers/lever_table.{csv,md}``. TEST and
the external ``test`` half are not read by any of this.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from brainseg_lib import paths

LEVERS_YAML = paths.PARAMS_DIR / "levers.yaml"
TABLE_COLUMNS = {
    "tag": "trial", "lever": "lever", "image_size": "size", "healthy_ratio": "healthy ratio",
    "input_norm": "norm", "augment_level": "augment", "epochs": "epochs", "train_seconds": "train s",
    "val_f1": "VAL F1", "val_hd95_median": "VAL HD95 med", "val_nsd": "VAL NSD",
    "healthy_val_marked": "healthy VAL marked", "ext_dev_pooled_f1": "ext dev F1",
    "ext_dev_mean_dice": "ext dev Dice (tumour)", "ext_dev_clean_marked": "ext dev clean marked",
    "ext_dev_hd95_median": "ext dev HD95 med", "ext_dev_nsd": "ext dev NSD",
}


def selection_figures(checkpoint, val_arrays, cfg, data_root=None, external_dev: bool = True,
                      val_eval=None, val_gts: dict | None = None) -> dict:
    """The figures a choice may rest on (see the module docstring) for one checkpoint
    (``val_eval``: the checkpoint's VAL evaluation when it is already computed; ``val_gts``:
    VAL's native masks by name, when already rasterised)."""
    from brainseg_lib.evaluation.evaluate import evaluate_model
    from brainseg_lib.inference import load_model, predict_probs, resolve_device
    dev = resolve_device(cfg.device)
    model = load_model(checkpoint, dev)
    ev = val_eval or evaluate_model(model, "val", cfg.image_size, cfg.threshold, dev, data_root,
                                    arrays=val_arrays, gts=val_gts)
    out = {"val": {"pooled_f1": ev.summary["global"]["f1"], "n_images": ev.summary["n_images"],
                   "hd95_median": ev.summary["boundary"]["hd95"]["median"],
                   "nsd_mean": ev.summary["boundary"]["nsd"]["mean"]}}
    try:
        from brainseg_lib.data.healthy import load_healthy
        h = load_healthy("val", cfg.image_size, cfg.healthy_seed, root=data_root)
        probs = predict_probs(model, h, dev)
        marked = (probs >= cfg.threshold).reshape(len(h), -1).any(1)
        out["healthy_val"] = {"n_images": len(h), "marked": int(marked.sum()),
                              "marked_share": float(marked.mean()) if len(h) else None}
    except (FileNotFoundError, OSError) as e:
        out["healthy_val"] = {"skipped": str(e)}
    from brainseg_lib.data import external as external_data
    from brainseg_lib.evaluation import external as external_eval
    if external_dev and external_data.available():
        half = external_data.load_half("dev", cfg.image_size)
        s = external_eval.summarize_half(external_eval.score_half(model, half, cfg.threshold, dev), n_boot=200)
        out["external_dev"] = {k: s[k] for k in ("pooled_f1", "mean_dice_tumour", "clean_marked_share",
                                                 "hd95_median", "nsd_mean", "n_slices", "clean_marked")}
    else:
        out["external_dev"] = {"skipped": f"no external set at {paths.external_dir()}"}
    return out


def load_plan(path: str | Path | None = None) -> dict:
    """``params/levers.yaml``: {base: profile, fixed: {...}, trials: [{tag, lever, set}]}."""
    return yaml.safe_load(Path(path or LEVERS_YAML).read_text())


def trial_params(plan: dict) -> list[dict]:
    """Parameter dicts of every trial: the base profile, the plan's fixed keys, then the
    trial's own settings (each trial lists its full difference from the base profile)."""
    from brainseg_lib.study.profiles import load_profile
    base = {**load_profile(plan["base"]), **plan.get("fixed", {})}
    return [{**base, **t.get("set", {}), "run_tag": t["tag"], "tune_threshold": False,
             "score_test": False, "snapshot_epochs": []}
            for t in plan["trials"]]


def run_levers(plan: dict | None = None, out_dir: str | Path | None = None, force: bool = False) -> list[str]:
    from brainseg_lib.study.sweep import run_sweep
    plan = plan or load_plan()
    return run_sweep(trial_params(plan), in_process=True, skip_done=not force,
                     sweep_dir=Path(out_dir) if out_dir else paths.levers_dir())


def _get(d: dict, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return np.nan
        d = d[k]
    return np.nan if d is None else d


def lever_table(plan: dict | None = None, out_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per finished trial of the plan, with its selection figures."""
    from brainseg_lib.study.experiment import load_timing, name_for
    plan = plan or load_plan()
    folder = Path(out_dir) if out_dir else paths.levers_dir()
    rows = []
    for t, params in zip(plan["trials"], trial_params(plan)):
        path = folder / "metrics" / f"{name_for(params)}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        sel, cfg = r.get("selection", {}), r["config"]
        rows.append({
            "tag": t["tag"], "lever": t.get("lever", ""), "image_size": cfg["image_size"],
            "healthy_ratio": cfg.get("healthy_ratio", 0.0), "input_norm": cfg.get("input_norm", "none"),
            "augment_level": cfg.get("augment_level", "basic"), "epochs": r["epochs_run"],
            "train_seconds": load_timing(r["run_name"], folder / "runs").get("train_seconds", r.get("train_seconds", np.nan)),
            "val_f1": _get(sel, "val", "pooled_f1"), "val_hd95_median": _get(sel, "val", "hd95_median"),
            "val_nsd": _get(sel, "val", "nsd_mean"),
            "healthy_val_marked": _get(sel, "healthy_val", "marked_share"),
            "ext_dev_pooled_f1": _get(sel, "external_dev", "pooled_f1"),
            "ext_dev_mean_dice": _get(sel, "external_dev", "mean_dice_tumour"),
            "ext_dev_clean_marked": _get(sel, "external_dev", "clean_marked_share"),
            "ext_dev_hd95_median": _get(sel, "external_dev", "hd95_median"),
            "ext_dev_nsd": _get(sel, "external_dev", "nsd_mean")})
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def table_markdown(table: pd.DataFrame) -> str:
    shown = table.rename(columns=TABLE_COLUMNS)
    head = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"

    def cell(v):
        if isinstance(v, float):
            return "" if np.isnan(v) else (f"{v:.0f}" if abs(v) >= 100 else f"{v:.3f}")
        return str(v)
    return head + "\n".join("| " + " | ".join(cell(v) for v in row) + " |"
                            for row in shown.itertuples(index=False)) + "\n"


def write_lever_table(table: pd.DataFrame, out_dir: str | Path | None = None) -> dict[str, Path]:
    from brainseg_lib.fileio import atomic_write_text, write_csv
    out = paths.ensure(Path(out_dir) if out_dir else paths.levers_dir())
    return {"csv": write_csv(table, out / "lever_table.csv"),
            "md": atomic_write_text(out / "lever_table.md", table_markdown(table))}
