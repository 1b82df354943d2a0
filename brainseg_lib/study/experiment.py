"""One reproduction run, end to end: profile -> training -> test metrics on disk.

Notebook 02 and ``python -m brainseg_lib train`` both call ``run_profile``;
nothing here prints numbers that are not also written to ``results/``.
"""
from __future__ import annotations

import torch

from brainseg_lib import names, paths
from brainseg_lib.data.cache import native_masks_for
from brainseg_lib.data.splits import split_arrays
from brainseg_lib.evaluation.evaluate import (
    evaluate_checkpoint,
    evaluate_model,
    write_evaluation,
)
from brainseg_lib.evaluation.thresholds import tune_threshold
from brainseg_lib.fileio import display_path
from brainseg_lib.inference import load_model, resolve_device
from brainseg_lib.paper import paper_figure
from brainseg_lib.training import distributed, memory
from brainseg_lib.training.config import TrainConfig
from brainseg_lib.training.engine import fit

TRAIN_KEYS = {f for f in TrainConfig.__dataclass_fields__}
# what run_profile reads: every TrainConfig field plus the run-level keys below
RUN_KEYS = TRAIN_KEYS | {"profile", "split_scheme", "split_seed", "tune_threshold", "limit_test",
                         "run_tag", "external_dev", "score_test", "detection_points", "detection_limit",
                         "tune_allocator", "checkpoint_every"}


def config_from_params(params: dict) -> TrainConfig:
    """A TrainConfig from a flat parameter dict (notebook parameters or a profile)."""
    return TrainConfig.from_dict({k: v for k, v in params.items() if k in TRAIN_KEYS})


def run_name(profile: str, seed: int, loss: str, split_scheme: str = "official", tag: str = "",
             split_seed: int = 0) -> str:
    """``<profile>-<split>-<loss>-seed<k>``, with ``-split<d>`` for a grouped split drawn with
    split seed ``d`` > 0 (the split-draw sweep) and ``-<tag>`` for a tagged variant (a lever trial).
    The name becomes a folder and file names, so each part and the whole are checked
    (``names.check_name``): a profile or tag holding ``..``, a separator or NUL is refused."""
    names.check_name(profile, "profile")
    if tag:
        names.check_name(tag, "run_tag")
    draw = f"-split{int(split_seed)}" if split_seed and split_scheme != "official" else ""
    return names.check_name(f"{profile}-{split_scheme}-{loss}-seed{seed}{draw}" + (f"-{tag}" if tag else ""),
                            "run name")


def released_run_name() -> str:
    """The study's run: the cpu profile, official split, BCE+Dice, seed 0 (Table I's row). The
    released model comes from it unless a round of lever trials adopted a trial
    (``study.release_plan``; ``release.json`` then holds ``from_plan``)."""
    return run_name(paths.STUDY_PROFILE, seed=0, loss="bce_dice", split_scheme="official")


def run_profile(params: dict, data_root=None, resume: bool = False, progress: bool | None = None) -> dict:
    """Train with ``params``, evaluate the best checkpoint on TEST, write results; return the JSON dict.

    With ``score_test: false`` (the lever trials) TEST is never read: the run's JSON then
    holds the VAL evaluation (``"split": "val"``) and the selection figures only.
    ``tune_allocator`` (default true) keeps freed memory in the process on CPU
    (``training.memory``); ``checkpoint_every`` (default 1) is ``fit``'s checkpoint cadence.
    Under ``torchrun`` every process trains its share of each batch
    (``training.distributed``); process 0 alone evaluates and writes, and every process
    returns its dict."""
    cfg = config_from_params(params)
    name = name_for(params)
    run_dir = paths.runs_dir() / name
    names.inside(paths.runs_dir(), run_dir, "run folder")
    with distributed.session(resolve_device(cfg.device)) as ddp:
        if resume and not ddp.broadcast((run_dir / "last.pt").is_file()):
            raise FileNotFoundError(f"--resume: run {name} has no checkpoint to resume from "
                                    f"({display_path(run_dir / 'last.pt')}); drop --resume to start it fresh")
        with ddp.main_first():
            if ddp.is_main and not resume:
                start_fresh(name, run_dir)
            arrays = split_arrays(params.get("split_scheme", "official"), cfg.image_size, data_root,
                                  params.get("split_seed", 0), head_crop=cfg.head_crop)
        result = fit(cfg, run_dir, resume=resume, data_root=data_root, progress=progress,
                     train_arrays=arrays["train"], val_arrays=arrays["val"],
                     tune_allocator=params.get("tune_allocator", True),
                     checkpoint_every=params.get("checkpoint_every", 1))
        out, error = None, None
        if ddp.is_main:
            try:
                out = score_and_write(params, cfg, result, arrays, data_root)
            except Exception as e:          # tell the waiting ranks, then fail here too
                error = e
        out = ddp.broadcast({"error": repr(error)} if error is not None else out)
        if error is not None:
            raise error
        if isinstance(out, dict) and set(out) == {"error"}:
            raise RuntimeError(f"rank 0 failed while scoring the run: {out['error']}")
        return out


RUN_OUTPUTS = (".json", "_per_image.csv", "_threshold_sweep.csv")   # a run's files in results/metrics


def start_fresh(name: str, run_dir) -> None:
    """A fresh run starts clean: its run folder and its old metric files go (each checked to
    lie under its root first), so an interrupted run never leaves an old result beside a
    wiped run folder; results are regenerated, not mixed."""
    if run_dir.exists() or run_dir.is_symlink():
        names.remove_tree(run_dir, paths.runs_dir())
    metrics = paths.metrics_dir()
    for suffix in RUN_OUTPUTS:
        names.remove_file(metrics / f"{name}{suffix}", metrics)


def score_and_write(params: dict, cfg: TrainConfig, result, arrays: dict, data_root=None) -> dict:
    """The evaluation half of ``run_profile``: score the trained run (TEST, or VAL with
    ``score_test: false``), write its metric JSON and timing; the dict ``run_profile`` returns."""
    profile = params.get("profile", "custom")
    split_scheme = params.get("split_scheme", "official")
    run_dir = result.run_dir
    name = run_dir.name                      # name_for(params), as run_profile named the folder
    score_test = params.get("score_test", True)
    val = arrays["val"].head(cfg.limit_val)
    val_gts = native_masks_for(arrays["val"].names, root=data_root)   # rasterised once per run
    if score_test:
        test = arrays["test"].head(params.get("limit_test"))
        test_gts = native_masks_for(test.names, root=data_root)   # rasterised once, scored many times
        ev = evaluate_checkpoint(result.best_path, "test", cfg.threshold, device=cfg.device,
                                 data_root=data_root, arrays=test, gts=test_gts)
        snaps = snapshot_scores(result.snapshots, cfg, test, data_root, gts=test_gts)
    else:
        ev = evaluate_checkpoint(result.best_path, "val", cfg.threshold, device=cfg.device,
                                 data_root=data_root, arrays=val, gts=val_gts)
        snaps = []
    reached = [s for s in snaps if s["test_f1"] >= paper_figure("F1")]
    best_row = result.history.loc[result.history["val_dice"].idxmax()]
    extra = {
        "profile": profile, "split_scheme": split_scheme, "seed": cfg.seed, "loss": cfg.loss,
        "run_tag": params.get("run_tag") or None,
        **({"split_seed": int(params["split_seed"])}                  # a draw of a grouped split
           if params.get("split_seed") and split_scheme != "official" else {}),
        "n_parameters": result.n_parameters, "device": result.device,
        "malloc_tuned": memory.MALLOC_TUNED,
        "threads": torch.get_num_threads(),
        "epochs_run": int(result.history["epoch"].max()), "best_epoch": int(best_row["epoch"]),
        "cut_by_time": bool(result.cut_by_time),
        "best_val_dice": float(best_row["val_dice"]),
        "snapshots": snaps,
        "target_f1": paper_figure("F1"),
        "epochs_to_target": reached[0]["epoch"] if reached else None,
        "history_csv": display_path(run_dir / "history.csv"),
    }
    if params.get("tune_threshold") and score_test:
        extra["threshold_tuning"] = tune_threshold(result.best_path, arrays["val"], test, ev.probs,
                                                   data_root, test_gts, device=cfg.device, val_gts=val_gts)
    if score_test and params.get("detection_points", True):
        extra["detection"] = detection_points(result.best_path, cfg, data_root,
                                              params.get("detection_limit"), val)
    from brainseg_lib.study.levers import selection_figures
    extra["selection"] = selection_figures(result.best_path, val, cfg, data_root,
                                           external_dev=params.get("external_dev", True),
                                           val_eval=None if score_test else ev, val_gts=val_gts)
    json_path, _ = write_evaluation(ev, name, extra)
    timing = write_timing(result, run_dir, extra["epochs_to_target"])
    return {**ev.summary, **extra, **timing, "json_path": str(json_path), "run_dir": str(run_dir)}


def write_timing(result, run_dir, epochs_to_target=None):
    """The run's clock measurements, kept out of its metric JSON (which is then identical on
    any machine): ``<run dir>/timing.json``."""
    from brainseg_lib.fileio import write_json
    from brainseg_lib.study.bench import cpu_name, device_name
    snaps = {str(e): round(float(v["train_seconds"]), 2) for e, v in sorted(result.snapshots.items())}
    timing = {"train_seconds": round(result.train_seconds, 2), "wall_seconds": round(result.wall_seconds, 2),
              "snapshot_seconds": snaps,
              "seconds_to_target": snaps.get(str(epochs_to_target)) if epochs_to_target else None,
              "threads": torch.get_num_threads(), "device": result.device, "machine": cpu_name()}
    if str(result.device).startswith("cuda"):   # the GPU, its peak memory during fit
        timing["gpu"] = device_name(torch.device(result.device))
        timing["peak_gpu_mb"] = result.peak_gpu_mb
    if result.processes > 1:   # data-parallel under torchrun: threads are per process
        timing["processes"] = result.processes
    write_json(timing, run_dir / "timing.json")
    return timing


def load_timing(run_name: str, runs_dir=None) -> dict:
    """The clock measurements of a run (``write_timing``), or {} when absent."""
    import json
    try:
        path = names.child(runs_dir or paths.runs_dir(), run_name, "run name") / "timing.json"
        return json.loads(path.read_text())
    except (OSError, ValueError):             # UnsafeName is a ValueError: a name from a JSON
        return {}


def detection_points(checkpoint, cfg: TrainConfig, data_root=None, limit: int | None = None,
                     val_arrays=None) -> dict:
    """Image-level detection operating points of a run's best checkpoint
    (``detection.summary.run_operating_points``), its
    thresholds chosen on the run's own VAL (``val_arrays``), or the reason they were skipped
    (no ``yes/``/``no/`` folders, no healthy split)."""
    from brainseg_lib.detection.summary import run_operating_points
    if cfg.head_crop:
        return {"skipped": "not computed for a model trained on head crops: the detection scans "
                           "(yes/, no/) are read whole"}
    try:
        model = load_model(checkpoint, cfg.device)
        return run_operating_points(model, cfg.image_size, data_root, limit, cfg.healthy_seed, cfg.threshold,
                                    val_arrays)
    except (FileNotFoundError, ValueError) as e:
        return {"skipped": str(e)}


def snapshot_scores(snapshots: dict, cfg: TrainConfig, test_arrays, data_root=None,
                    gts: dict | None = None) -> list[dict]:
    """Pooled native-resolution test F1 of each epoch snapshot (report only, never model
    selection); the seconds at which each was reached go to the run's timing.json."""
    out = []
    dev = resolve_device(cfg.device)
    for epoch, snap in sorted(snapshots.items()):
        ev = evaluate_model(load_model(snap["path"], dev), "test", cfg.image_size, cfg.threshold,
                            dev, data_root, arrays=test_arrays, gts=gts, boundary=False)
        out.append({"epoch": int(epoch), "test_f1": ev.summary["global"]["f1"]})
    return out


def name_for(params: dict) -> str:
    """The run name that ``run_profile(params)`` uses."""
    cfg = config_from_params(params)
    return run_name(params.get("profile", "custom"), cfg.seed, cfg.loss,
                    params.get("split_scheme", "official"), params.get("run_tag") or "",
                    params.get("split_seed") or 0)


def load_run(params: dict):
    """(metrics JSON dict, per-image DataFrame, history DataFrame) of a finished run."""
    import json

    import pandas as pd

    from brainseg_lib.training.run_state import read_history
    name = name_for(params)
    path = paths.metrics_dir() / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results for run {name!r} at {path}; run notebook 02_training "
                                "(or `python -m brainseg_lib train`) with the same parameters first")
    run = {**json.loads(path.read_text()), **load_timing(name)}
    per_image = pd.read_csv(paths.metrics_dir() / run["per_image_csv"])
    history = read_history(paths.runs_dir() / name)
    return run, per_image, history
