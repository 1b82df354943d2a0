"""Choosing the cpu profile on VAL and the external ``dev`` half only: the lever table.

Every run records ``selection`` figures in its JSON (``selection_figures``), computed on
data that may steer choices and on nothing else:

* Br35H VAL (annotated): pooled F1, HD95 median and NSD mean at native resolution;
* Br35H healthy validation scans (``healthy.py`` role ``val``, all 300): the share
  with any pixel predicted tumour (at the model's resolution);
* the external ``dev`` half (``external.py``): pooled F1, mean Dice on tumour slices,
  share of clean slices marked, HD95 median, tumour slices with no prediction, and NSD mean.

``params/levers.yaml`` lists the lever trials: each one changes one thing against the
row it names as its base, starting from the paper's setting (annotated images only).
``python -m brainseg_lib levers`` trains them (results/levers/, skipped when already
done with the same config) and writes ``results/levers/lever_table.{csv,md}``;
``levers --rescore`` recomputes the finished trials' figures from their kept checkpoints
(``rescore_selection``); ``write_rule_table`` applies the plan's rule (``lever_rule.py``) and
writes ``results/levers/lever_rule.{csv,md,json}``. TEST and the external ``test`` half are not
read by any of this.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from brainseg_lib import paths

LEVERS_YAML = paths.PARAMS_DIR / "levers.yaml"
TABLE_COLUMNS = {
    "tag": "trial", "lever": "lever", "image_size": "size", "healthy_ratio": "healthy ratio",
    "input_norm": "norm", "augment_level": "augment", "epochs": "epochs", "train_seconds": "train s",
    "val_f1": "VAL F1", "val_hd95_median": "VAL HD95 med", "val_nsd": "VAL NSD",
    "healthy_val_marked": "healthy VAL marked", "ext_dev_pooled_f1": "ext dev F1",
    "ext_dev_mean_dice": "ext dev Dice (tumour)", "ext_dev_clean_marked": "ext dev clean marked",
    "ext_dev_hd95_median": "ext dev HD95 med", "ext_dev_missed": "ext dev tumour slices missed",
    "ext_dev_nsd": "ext dev NSD",
}


def selection_figures(checkpoint, val_arrays, cfg, data_root=None, external_dev: bool = True,
                      val_eval=None, val_gts: dict | None = None) -> dict:
    """The figures a choice may rest on (see the module docstring) for one checkpoint
    (``val_eval``: the checkpoint's VAL evaluation when it is already computed; ``val_gts``:
    VAL's native masks by name, when already rasterised)."""
    from brainseg_lib.evaluation.evaluate import evaluate_model
    from brainseg_lib.inference import any_marked, load_model, predict_probs, resolve_device
    dev = resolve_device(cfg.device)
    model = load_model(checkpoint, dev)
    ev = val_eval or evaluate_model(model, "val", cfg.image_size, cfg.threshold, dev, data_root,
                                    arrays=val_arrays, gts=val_gts)
    out = {"val": {"pooled_f1": ev.summary["global"]["f1"], "n_images": ev.summary["n_images"],
                   "hd95_median": ev.summary["boundary"]["hd95"]["median"],
                   "nsd_mean": ev.summary["boundary"]["nsd"]["mean"]}}
    try:
        from brainseg_lib.data.healthy import load_healthy
        h = load_healthy("val", cfg.image_size, cfg.healthy_seed, root=data_root, head_crop=cfg.head_crop)
        probs = predict_probs(model, h, dev)
        marked = any_marked(probs, cfg.threshold)
        out["healthy_val"] = {"n_images": len(h), "marked": int(marked.sum()),
                              "marked_share": float(marked.mean()) if len(h) else None}
    except (FileNotFoundError, OSError) as e:
        out["healthy_val"] = {"skipped": str(e)}
    from brainseg_lib.data import external as external_data
    from brainseg_lib.evaluation import external as external_eval
    if external_dev and external_data.available():
        half = external_data.load_half("dev", cfg.image_size, head_crop=cfg.head_crop)
        s = external_eval.summarize_half(external_eval.score_half(model, half, cfg.threshold, dev), n_boot=200)
        out["external_dev"] = {k: s[k] for k in ("pooled_f1", "mean_dice_tumour", "clean_marked_share",
                                                 "hd95_median", "nsd_mean", "n_slices", "clean_marked",
                                                 "n_tumour_slices", "tumour_slices_missed")}
    else:
        out["external_dev"] = {"skipped": f"no external set at {paths.external_dir()}"}
    return out


def load_plan(path: str | Path | None = None) -> dict:
    """``params/levers.yaml``: {base: profile, fixed: {...}, trials: [{tag, lever, set}]}, read
    safely (``params_yaml``) and checked (``params_schema.check_plan``: its shape, and ``fixed``
    and each trial's ``set`` against the parameter schema); ValueError in one line otherwise."""
    from brainseg_lib.study.params_schema import check_plan
    from brainseg_lib.study.params_yaml import read_params_file
    path = Path(path or LEVERS_YAML)
    return check_plan(read_params_file(path), str(path))


def trial_params(plan: dict) -> list[dict]:
    """Parameter dicts of every trial: the base profile, the plan's fixed keys, then the
    trial's own settings (each trial lists its full difference from the base profile).
    Every trial's tag and run name are checked first (``names.check_name``): a tag names
    files, never a path."""
    from brainseg_lib.names import check_name
    from brainseg_lib.study.experiment import name_for
    from brainseg_lib.study.profiles import load_profile
    check_name(plan["base"], "levers base profile")
    for t in plan["trials"]:
        check_name(t.get("tag"), "lever trial tag")
    base = {**load_profile(plan["base"]), **plan.get("fixed", {})}
    trials = [{**base, **t.get("set", {}), "run_tag": t["tag"], "tune_threshold": False,
               "score_test": False, "snapshot_epochs": []}
              for t in plan["trials"]]
    for params in trials:
        name_for(params)
    return trials


def run_levers(plan: dict | None = None, out_dir: str | Path | None = None, force: bool = False) -> list[str]:
    from brainseg_lib.study.sweep import run_sweep
    plan = plan or load_plan()
    return run_sweep(trial_params(plan), in_process=True, skip_done=not force,
                     sweep_dir=Path(out_dir) if out_dir else paths.levers_dir())


def rescore_selection(plan: dict | None = None, out_dir: str | Path | None = None,
                      data_root=None) -> dict[str, list[str]]:
    """Recompute the selection figures of every finished trial from its kept best checkpoint,
    with the config it trained under and today's scoring code, and write them into its JSON
    (``selection_rescored: true``; the figures the choice was made on stay there as
    ``selection_original``): a figure added after the trials ran (the external tumour slices
    with no prediction) then reaches the table without retraining. Checkpoints stay out of
    git, so a fresh clone has none: such trials are listed under ``no_checkpoint``, and a
    checkpoint that is not the JSON's best epoch or config under ``mismatched``; both are
    left as they are (retrain them with ``levers --force``)."""
    from brainseg_lib.data.splits import split_arrays
    from brainseg_lib.fileio import write_json
    from brainseg_lib.model.checkpoint import load_checkpoint
    from brainseg_lib.study.experiment import name_for
    from brainseg_lib.training.config import TrainConfig, stored_config
    plan = plan or load_plan()
    folder = Path(out_dir) if out_dir else paths.levers_dir()
    done = {"rescored": [], "no_checkpoint": [], "mismatched": []}
    for params in trial_params(plan):
        name = name_for(params)
        path, ckpt = folder / "metrics" / f"{name}.json", folder / "runs" / name / "best.pt"
        if not path.is_file():
            continue
        if not ckpt.is_file():
            done["no_checkpoint"].append(name)
            continue
        r, ck = json.loads(path.read_text()), load_checkpoint(ckpt)
        if ck.get("epoch") != r.get("best_epoch") or stored_config(ck.get("train_config")) != r["config"]:
            done["mismatched"].append(name)
            continue
        cfg = TrainConfig.from_dict(r["config"])
        val = split_arrays(r.get("split_scheme", "official"), cfg.image_size, data_root,
                           params.get("split_seed", 0), only=("val",),
                           head_crop=cfg.head_crop)["val"].head(cfg.limit_val)
        original = r.get("selection_original", r.get("selection"))
        r["selection"] = selection_figures(ckpt, val, cfg, data_root,
                                           external_dev=params.get("external_dev", True))
        write_json({**r, "selection_original": original, "selection_rescored": True}, path)
        done["rescored"].append(name)
    return done


def _get(d: dict, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return np.nan
        d = d[k]
    return np.nan if d is None else d


def _of(part, whole):
    """``'part/whole'`` of two counts, NaN when either is missing (an older JSON)."""
    if any(isinstance(v, float) and np.isnan(v) for v in (part, whole)):
        return np.nan
    return f"{int(part)}/{int(whole)}"


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
            "train_seconds": load_timing(r["run_name"], folder / "runs").get("train_seconds",
                                                                             r.get("train_seconds", np.nan)),
            "val_f1": _get(sel, "val", "pooled_f1"), "val_hd95_median": _get(sel, "val", "hd95_median"),
            "val_nsd": _get(sel, "val", "nsd_mean"),
            "healthy_val_marked": _get(sel, "healthy_val", "marked_share"),
            "ext_dev_pooled_f1": _get(sel, "external_dev", "pooled_f1"),
            "ext_dev_mean_dice": _get(sel, "external_dev", "mean_dice_tumour"),
            "ext_dev_clean_marked": _get(sel, "external_dev", "clean_marked_share"),
            "ext_dev_hd95_median": _get(sel, "external_dev", "hd95_median"),
            "ext_dev_missed": _of(_get(sel, "external_dev", "tumour_slices_missed"),
                                  _get(sel, "external_dev", "n_tumour_slices")),
            "ext_dev_nsd": _get(sel, "external_dev", "nsd_mean")})
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


COUNT_COLUMNS = ("epochs",)
HD95_NOTE = ("An HD95 median is taken over tumour slices, and a tumour slice with nothing predicted "
             "counts at the image diagonal (`evaluation/boundary.py`), which is no measurement: where at "
             "least half of the tumour slices have no prediction the median would be that diagonal, so "
             "the `ext dev HD95 med` cell says `not measured` instead (the `ext dev tumour slices missed` "
             "column counts them: missed/tumour slices of the dev half).")
UNMEASURED = "not measured (half or more missed)"


def _hd95_measured(row: dict):
    """The row's external HD95 median, or ``UNMEASURED`` when half or more of the tumour slices
    got no prediction (the median is then the diagonal given to a miss, not a distance)."""
    v, missed = row.get("ext_dev_hd95_median"), row.get("ext_dev_missed")
    if isinstance(missed, str) and "/" in missed:
        part, whole = (int(x) for x in missed.split("/"))
        if whole and 2 * part >= whole:
            return UNMEASURED
    return v


def table_markdown(table: pd.DataFrame) -> str:
    """The lever table as Markdown, with the note on HD95 medians under it."""
    head = ("| " + " | ".join(TABLE_COLUMNS[c] for c in table.columns) + " |\n|"
            + "---|" * len(table.columns) + "\n")

    def cell(col, v):
        if isinstance(v, (float, np.floating)) and np.isnan(v):
            return ""
        if col in COUNT_COLUMNS:
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3f}"
        return str(v)
    def cells(row: dict):
        return [cell(c, _hd95_measured(row) if c == "ext_dev_hd95_median" else row[c]) for c in table.columns]
    rows = "\n".join("| " + " | ".join(cells(row)) + " |" for row in table.to_dict("records"))
    return head + rows + "\n\n" + HD95_NOTE + "\n"


def write_lever_table(table: pd.DataFrame, out_dir: str | Path | None = None) -> dict[str, Path]:
    from brainseg_lib.fileio import atomic_write_text, write_csv
    out = paths.ensure(Path(out_dir) if out_dir else paths.levers_dir())
    return {"csv": write_csv(table, out / "lever_table.csv"),
            "md": atomic_write_text(out / "lever_table.md", table_markdown(table))}


def write_rule_table(table: pd.DataFrame, plan: dict | None = None,
                     out_dir: str | Path | None = None) -> tuple[dict, str]:
    """Apply the plan's rule to the lever table against the plan's base profile
    (``lever_rule.apply_rule``); write the rule table and the profile's check, and return the
    check and the Markdown written."""
    from brainseg_lib.fileio import atomic_write_text, write_csv, write_json
    from brainseg_lib.study import lever_rule
    from brainseg_lib.study.profiles import load_profile
    plan = plan or load_plan()
    rules, check = lever_rule.apply_rule(table, plan, load_profile(plan["base"]))
    out = paths.ensure(Path(out_dir) if out_dir else paths.levers_dir())
    write_csv(rules, out / "lever_rule.csv")
    write_json({**check, "profile": plan["base"]}, out / "lever_rule.json")
    md = lever_rule.rule_markdown(rules, check, plan["base"])
    atomic_write_text(out / "lever_rule.md", md)
    return check, md
