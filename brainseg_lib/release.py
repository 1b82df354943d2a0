"""Release the default cpu run's best checkpoint for users, with a model card.

``python -m brainseg_lib release`` (called by ``./run_all.sh cpu``):

1. copies the best checkpoint of ``cpu-official-bce_dice-seed0`` to
   ``results/models/brainseg-cpu.pt`` (fp16 weights) with its SHA-256;
2. runs the released file through the ``predict`` pipeline on the official
   TEST images and checks that the pooled F1 of the written masks agrees with
   the native-resolution pooled F1 in ``results/metrics`` (within 0.01);
3. writes ``results/models/MODEL_CARD.md`` and ``release.json`` from those
   files: no figure in the card is typed by hand.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from . import paths
from .data import list_split, native_masks, split_dir
from .evaluate import write_json
from .fileio import atomic_write_text
from .metrics import COUNTS, confusion_counts, metrics_from_counts
from .predict import RELEASED_MODEL, release_model, run_predict

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


def release(run_name: str = "cpu-official-bce_dice-seed0", dest: Path = RELEASED_MODEL,
            data_root=None) -> dict:
    run_json = paths.metrics_dir() / f"{run_name}.json"
    if not run_json.is_file():
        raise FileNotFoundError(f"{run_json} not found: run ./run_all.sh cpu first")
    from .experiment import load_timing
    run = {**json.loads(run_json.read_text()), **load_timing(run_name)}
    refuse_unfinished(run, run_json)
    src = paths.resolve_recorded(run["checkpoint"])
    model = release_model(src, dest)
    check = predict_check(model, data_root)
    n_train, n_val = (len(list_split(s, data_root)[0]) for s in ("train", "val"))
    diff = abs(check["f1"] - run["global"]["f1"])
    info = {"model": str(model.relative_to(paths.PROJECT_ROOT)), "from_run": run_name,
            "source_checkpoint": run["checkpoint"], "size_bytes": model.stat().st_size,
            "sha256": model.with_name(model.name + ".sha256").read_text().split()[0],
            "metrics_json": f"results/metrics/{run_name}.json",
            "train_images": n_train, "val_images": n_val,
            "test_f1_native_reported": run["global"]["f1"],
            "test_f1_via_predict": check["f1"], "abs_difference": diff,
            "within_tolerance": bool(diff <= TOLERANCE), "tolerance": TOLERANCE}
    write_json(info, dest.parent / "release.json")
    atomic_write_text(dest.parent / "MODEL_CARD.md", model_card(run, info))
    if diff > TOLERANCE:
        raise RuntimeError(f"released model disagrees with the reported metrics: F1 {check['f1']:.4f} "
                           f"via predict vs {run['global']['f1']:.4f} reported")
    return info


def model_card(run: dict, info: dict) -> str:
    g, cfg = run["global"], run["config"]
    leak_path = paths.metrics_dir() / "leakage.json"
    leak = json.loads(leak_path.read_text()) if leak_path.is_file() else None
    ci = run.get("bootstrap_ci95", {})
    rows = "\n".join(
        f"| {m} | {g[m]:.3f} | {ci[m][0]:.3f} – {ci[m][1]:.3f} | {run['per_image_mean'][m]:.3f} |"
        for m in ("f1", "iou", "precision", "recall", "specificity", "accuracy"))
    leak_txt = ("The official split leaks: " + ", ".join(
        f"{v['either']} of {v['of']} {k.split('->')[0].upper()} images have a near-duplicate in "
        f"{k.split('->')[1].upper()}" for k, v in leak["images_with_duplicate_in"].items()
        if k in ("test->train", "val->train")) + " (results/metrics/leakage.json). The test "
        "metrics above may be optimistic for that reason; the grouped-split rows of Table I "
        "measure it by re-training on a split without such duplicates."
        if leak else "See notebook 07 for the leakage audit of the official split.")
    extra = _card_extras(run)
    return f"""# Model card: brainseg-cpu

A U-Net (Khadra et al. 2026 architecture, base width {cfg['base_width']}) that segments brain
tumours in 2-D MRI slices. Generated by `python -m brainseg_lib release` from
`{info['metrics_json']}`; nothing here is typed by hand.

- **File:** `{info['model']}` ({info['size_bytes'] / 1e6:.2f} MB, fp16 weights), SHA-256
  `{info['sha256']}` (verified on load by `predict`).
- **Training data:** Br35H (Kaggle `ahmedhamada0/brain-tumor-detection`), official
  split: {info['train_images']} TRAIN images for training, {info['val_images']} VAL images for model
  selection, {run.get('n_images', '?')} TEST images scored.
- **Profile:** `{run.get('profile')}`: input {cfg['image_size']}x{cfg['image_size']} grayscale,
  batch {cfg['batch_size']}, Adam lr {cfg['lr']}, schedule {cfg['schedule']}, {run.get('epochs_run')}
  epochs in {run.get('train_seconds', 0):.0f} s of training on {run.get('device')}, loss
  {cfg['loss']}, seed {cfg['seed']}; best epoch by validation Dice: {run.get('best_epoch')}.
- **Test metrics** (official TEST split, threshold {run['threshold']}, native resolution):

| metric | pooled | bootstrap 95% CI | per-image mean |
|---|---|---|---|
{rows}

{extra}
- **Check of the released file:** `predict` on the TEST images gives pooled F1
  {info['test_f1_via_predict']:.4f} against {info['test_f1_native_reported']:.4f} reported
  (difference {info['abs_difference']:.4f}, tolerance {info['tolerance']}).
- **Intended use:** research and education. **Not a medical device**; not for diagnosis.
- **Known limits:**
  - {leak_txt}
  - Trained on one public dataset of JPEG slices of unknown provenance and acquisition; the
    external figures above are one other source (TCGA-LGG FLAIR), not every scanner.
  - 2-D slices only. Training {"included " + str(round(cfg.get("healthy_ratio", 0) * info["train_images"])) + " tumour-free scans" if cfg.get("healthy_ratio") else "held no tumour-free scan"}.
  - Inputs are resized to {cfg['image_size']}x{cfg['image_size']}; small lesions lose detail.
"""


def _card_extras(run: dict) -> str:
    """Boundary, healthy-scan and external-validation lines of the model card, read from the
    run JSON, results/metrics/detection.json and results/metrics/external_validation.json."""
    lines = []
    b = run.get("boundary")
    if b:
        lines.append(f"- **Boundary metrics** (TEST tumour images, native resolution): HD95 median "
                     f"{b['hd95']['median']:.1f} px (mean {b['hd95']['mean']:.1f}); NSD at "
                     f"{b['nsd_tolerance_px']:g} px mean {b['nsd']['mean']:.3f} (`boundary.py`).")
    det_path = paths.metrics_dir() / "detection.json"
    if det_path.is_file():
        d = json.loads(det_path.read_text())
        k = d["primary_score"]
        y, f = d["report"]["all"][k], d["report_at_fixed_sensitivity"]["all"][k]
        any_px = d.get("healthy_any_pixel_share")
        any_px = float("nan") if any_px is None else any_px
        lines.append(
            f"- **Healthy scans** ({y['negatives']} unseen tumour-free Br35H scans, notebook 06): "
            f"false-positive rate {1 - y['specificity']:.3f} at the validation-chosen operating point "
            f"(sensitivity {y['sensitivity']:.3f}); {1 - f['specificity']:.3f} at the threshold chosen "
            f"for sensitivity >= {d['fixed_sensitivity']} (sensitivity {f['sensitivity']:.3f}); "
            f"{any_px:.3f} of them have at least one pixel "
            f"marked; AUC {y['auc']:.3f}.")
    ext_path = paths.metrics_dir() / "external_validation.json"
    if ext_path.is_file():
        e = json.loads(ext_path.read_text())
        for half in ("test", "dev"):
            h = e.get(half)
            if not h:
                continue
            ci = h["ci95_by_patient"]
            lines.append(
                f"- **External {half} half** (TCGA-LGG FLAIR, {h['n_patients']} patients, {h['n_slices']} "
                f"slices, notebook 09): pooled F1 {h['pooled_f1']:.3f} [{ci['pooled_f1'][0]:.3f}, "
                f"{ci['pooled_f1'][1]:.3f}], mean Dice on tumour slices {h['mean_dice_tumour']:.3f}, "
                f"clean slices marked {h['clean_marked']} of {h['n_clean_slices']} "
                f"({h['clean_marked_share']:.3f}), HD95 median {h['hd95_median']:.1f} px, NSD "
                f"{h['nsd_mean']:.3f} (95% CIs resample patients).")
    return "\n".join(lines)
