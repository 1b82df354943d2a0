"""Release a run's best checkpoint for users, with a model card.

``python -m brainseg_lib release [--run NAME]`` (an explicit step; ``./run_all.sh`` never
re-releases, it scores the committed file):

1. copies the best checkpoint of the run (default ``cpu-official-bce_dice-seed0``) to
   ``results/models/brainseg-cpu.pt`` (fp16 weights) with its SHA-256, and exports it to ONNX;
2. runs the released file through the ``predict`` pipeline on the official
   TEST images and checks that the pooled F1 of the written masks agrees with
   the native-resolution pooled F1 in ``results/metrics`` (within 0.01);
3. scores it on every evaluation set (``release_eval``; a release without figures for both
   external sets is refused) and writes ``results/models/MODEL_CARD.md`` and ``release.json``
   from those files: no figure in the card is typed by hand.

``write_card`` rewrites the card from the committed ``release.json``, the run's metrics JSON and
``release_eval.json``; ``./run_all.sh cpu`` calls it after notebook 10 has scored the file.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from brainseg_lib import paths
from brainseg_lib.apply.predict import run_predict
from brainseg_lib.data.br35h import list_split, split_dir
from brainseg_lib.data.cache import native_masks
from brainseg_lib.evaluation.metrics import (
    COUNTS,
    confusion_counts,
    metrics_from_counts,
)
from brainseg_lib.fileio import atomic_write_text, display_path, write_json
from brainseg_lib.model.released import release_model
from brainseg_lib.report.model_card import model_card
from brainseg_lib.study.experiment import released_run_name

TOLERANCE = 0.01


def predict_check(model_path: Path, data_root=None) -> dict:
    """Pooled native F1 of ``predict`` masks written for the official TEST images."""
    gts = native_masks("test", root=data_root)
    folder = split_dir("test", data_root)
    tot = dict.fromkeys(COUNTS, 0)
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in", Path(tmp) / "out"
        inp.mkdir()
        for name in gts:
            (inp / name).symlink_to((folder / name).resolve())
        run_predict(inp, out, checkpoint=model_path, device="cpu", progress=False)
        for name, gt in gts.items():
            mask = np.asarray(Image.open(out / f"{Path(name).stem}_mask.png")) > 127
            for k, v in confusion_counts(mask, gt).items():
                tot[k] += v
    return {"n_images": len(gts), "counts": tot, **metrics_from_counts(*(tot[c] for c in COUNTS))}


class ReleaseRefused(ValueError):
    """The run cannot be released as it is (cut short, or never scored on TEST)."""


def refuse_unfinished(run: dict, where) -> None:
    """Raise ReleaseRefused for a run stopped by ``max_train_seconds`` (its weights depend on
    the machine's speed) or one whose JSON holds no TEST evaluation."""
    if run.get("cut_by_time"):
        raise ReleaseRefused(
            f"{where}: this run was cut by max_train_seconds={run['config'].get('max_train_seconds')} "
            f"after {run.get('epochs_run')} of {run['config'].get('epochs')} epochs, so its weights "
            "depend on the machine's speed; it is not released. Train it with its full epoch budget "
            "(max_train_seconds: null) and release that run.")
    if run.get("split") != "test":
        raise ReleaseRefused(f"{where}: the run was not scored on TEST (split {run.get('split')!r}); "
                             "only a finished profile run is released")


def release(run_name: str | None = None, dest: Path | None = None, data_root=None) -> dict:
    """Release ``run_name`` (default: ``released_run_name()``) to ``dest`` (default:
    ``paths.released_model()``)."""
    run_name = run_name or released_run_name()
    dest = Path(dest) if dest is not None else paths.released_model()
    run_json = paths.metrics_dir() / f"{run_name}.json"
    if not run_json.is_file():
        raise FileNotFoundError(f"{run_json} not found: run ./run_all.sh cpu first")
    from brainseg_lib.study.experiment import load_timing
    run = {**json.loads(run_json.read_text()), **load_timing(run_name)}
    refuse_unfinished(run, run_json)
    src = paths.resolve_recorded(run["checkpoint"])
    model = release_model(src, dest)
    check = predict_check(model, data_root)
    n_train, n_val = (len(list_split(s, data_root)[0]) for s in ("train", "val"))
    diff = abs(check["f1"] - run["global"]["f1"])
    info = {"model": display_path(model), "from_run": run_name,
            "source_checkpoint": run["checkpoint"], "size_bytes": model.stat().st_size,
            "sha256": model.with_name(model.name + ".sha256").read_text().split()[0],
            "metrics_json": f"results/metrics/{run_name}.json",
            "train_images": n_train, "val_images": n_val,
            "test_f1_native_reported": run["global"]["f1"],
            "test_f1_via_predict": check["f1"], "abs_difference": diff,
            "within_tolerance": bool(diff <= TOLERANCE), "tolerance": TOLERANCE}
    if diff > TOLERANCE:
        raise RuntimeError(f"released model disagrees with the reported metrics: F1 {check['f1']:.4f} "
                           f"via predict vs {run['global']['f1']:.4f} reported")
    write_json(info, dest.parent / "release.json")
    from brainseg_lib.model.onnx import export_onnx
    from brainseg_lib.study.release_eval import evaluate_release
    export_onnx(model)
    evaluate_release(model, data_root=data_root)
    write_card(dest.parent)
    return info


def write_card(models_dir: Path | None = None) -> Path:
    """MODEL_CARD.md from ``release.json``, the run's metrics JSON (in ``paths.metrics_dir()``) and
    ``release_eval.json``; ReleaseRefused when the evaluation lacks an external set."""
    from brainseg_lib.report.release_card import load
    from brainseg_lib.study.release_eval import missing_sets
    models_dir = Path(models_dir) if models_dir else paths.models_dir()
    info = json.loads((models_dir / "release.json").read_text())
    ev = load()
    missing = missing_sets(ev or {})
    if ev is None or missing:
        raise ReleaseRefused(
            "the released model has no evaluation figures for " + (", ".join(missing) or "any set")
            + " (results/metrics/release_eval.json); point BRAINSEG_EXTERNAL and BRAINSEG_FIGSHARE at "
            "both external sets and run `python -m brainseg_lib evaluate-release` first")
    if "from_plan" in info:                  # released from a round of lever trials
        from brainseg_lib.report.model_card import lever_model_card
        from brainseg_lib.study.release_plan import member_records
        return atomic_write_text(models_dir / "MODEL_CARD.md", lever_model_card(info, ev, member_records(info)))
    run = json.loads((paths.metrics_dir() / Path(info["metrics_json"]).name).read_text())
    return atomic_write_text(models_dir / "MODEL_CARD.md", model_card(run, info, ev))
