"""Training engine: one config object, one ``fit`` call, checkpoints you can trust.

* Every run lives in its own folder (``paths.runs_dir()/<run_name>``) holding
  ``history.csv`` (one row per epoch), ``last.pt``, ``best.pt`` (best
  validation Dice), ``snapshots/epoch_<k>.pt`` (weights after the epochs listed in
  ``snapshot_epochs``, each with the seconds of training at which it was reached) and
  ``train_log.txt``. Checkpoints are written atomically and hold only tensors
  and plain types, so they load with ``torch.load(weights_only=True)``.
* ``train_seconds`` counts the optimiser steps only (data batching and
  augmentation included; per-epoch validation and checkpoint writing not).
  ``wall_seconds`` counts everything.
* **The budget is epochs.** Wall-clock time is measured and reported, never used to
  decide what is trained: the same config gives the same weights on a fast or a slow
  machine. ``max_train_seconds`` remains as an explicit option for experiments; a run
  it stops is marked ``cut_by_time`` (in the result, the checkpoints and the run JSON),
  and ``release`` refuses such a run.
* **Healthy scans** (``healthy_ratio`` > 0): Br35H's tumour-free ``no/`` scans join
  TRAIN as empty masks, ``round(healthy_ratio * n_train)`` of them from the TRAIN part of
  ``splits/healthy_seed<k>.csv`` (see ``healthy.py``), and VAL gets the same ratio from
  that file's VAL part. With 0 (the paper's setting) only annotated images are used.
* With ``ema_decay`` set, an exponential moving average of the weights (and
  BatchNorm buffers) is kept; validation, ``best.pt``, snapshots and the
  ``state_dict`` of every checkpoint are the averaged weights, and the raw
  training weights are stored beside them for resuming.
* Randomness: the model is initialised from ``seed``; shuffling and
  augmentation draw from generators seeded by (seed, epoch), so resuming at
  epoch k replays exactly what an uninterrupted run would have seen.
"""
from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from brainseg_lib import paths
from brainseg_lib.data.cache import SplitArrays, load_split
from brainseg_lib.data.loaders import (
    augment_config,
    batches_per_epoch,
    resident_batches,
    resident_tensors,
)
from brainseg_lib.evaluation.metrics import batch_confusion_counts, metrics_from_counts
from brainseg_lib.fileio import atomic_write_text
from brainseg_lib.inference import predict_logits, resolve_device
from brainseg_lib.model.checkpoint import load_checkpoint, save_checkpoint
from brainseg_lib.model.unet import UNet, count_parameters
from brainseg_lib.progress import progress_bar
from brainseg_lib.training.config import TrainConfig
from brainseg_lib.training.losses import get_loss
from brainseg_lib.training.memory import MALLOC_TUNED, keep_freed_memory
from brainseg_lib.training.schedule import lr_factor

log = logging.getLogger(__name__)


def autocast_dtype(cfg: TrainConfig, device: torch.device):
    """bf16 autocast on CUDA when amp is auto/bf16; no autocast elsewhere."""
    if device.type == "cuda" and cfg.amp in ("auto", "bf16"):
        return torch.bfloat16
    return None


def set_determinism(cfg: TrainConfig) -> None:
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2**32))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not cfg.deterministic


def build_model(cfg: TrainConfig) -> UNet:
    return UNet(in_channels=1, base=cfg.base_width, input_norm=cfg.input_norm)


def validate(model, arrays: SplitArrays, cfg: TrainConfig, device, loss_fn) -> dict:
    """Validation loss and pooled Dice / IoU at the model's resolution."""
    images = torch.from_numpy(arrays.images)
    masks = torch.from_numpy(arrays.masks).unsqueeze(1)
    logits = predict_logits(model, images, device, channels_last=cfg.channels_last,
                            amp_dtype=autocast_dtype(cfg, device))
    loss = float(loss_fn(logits, masks.float()))
    counts = batch_confusion_counts(torch.sigmoid(logits) >= cfg.threshold, masks).sum(0)
    m = metrics_from_counts(*counts.tolist())
    return {"val_loss": loss, "val_dice": m["f1"], "val_iou": m["iou"]}


@dataclass
class TrainResult:
    run_dir: Path
    history: pd.DataFrame
    best_path: Path
    last_path: Path
    train_seconds: float
    wall_seconds: float
    snapshots: dict[int, dict]        # epoch -> {"path", "train_seconds"}
    n_parameters: int
    device: str
    cut_by_time: bool = False         # stopped by max_train_seconds before its last epoch


def _write_history(run_dir: Path, history: list[dict]) -> None:
    atomic_write_text(run_dir / "history.csv", pd.DataFrame(history).to_csv(index=False))


def fit(cfg: TrainConfig, run_dir: str | Path, resume: bool = False,
        callbacks: tuple[Callable[[dict], None], ...] = (),
        train_arrays: SplitArrays | None = None, val_arrays: SplitArrays | None = None,
        data_root=None, progress: bool | None = None) -> TrainResult:
    """Train a U-Net as ``cfg`` says, writing everything under ``run_dir``.

    ``callbacks`` are called after each epoch with that epoch's history row; an
    exception raised by one stops training (the epoch's checkpoint is already
    saved, so ``fit(..., resume=True)`` continues from it).
    """
    run_dir = paths.ensure(Path(run_dir))
    (run_dir / "snapshots").mkdir(exist_ok=True)
    logger = _run_logger(run_dir)
    set_determinism(cfg)
    device = resolve_device(cfg.device)
    amp_dtype = autocast_dtype(cfg, device)
    if device.type == "cpu":
        keep_freed_memory()
    if train_arrays is None:
        train_arrays = load_split("train", cfg.image_size, root=data_root)
    if val_arrays is None:
        val_arrays = load_split("val", cfg.image_size, root=data_root)
    train_arrays, val_arrays = train_arrays.head(cfg.limit_train), val_arrays.head(cfg.limit_val)
    if cfg.healthy_ratio:
        from brainseg_lib.data.healthy import with_healthy
        train_arrays = with_healthy(train_arrays, "train", cfg.healthy_ratio, cfg.healthy_seed, data_root)
        val_arrays = with_healthy(val_arrays, "val", cfg.healthy_ratio, cfg.healthy_seed, data_root)

    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = None
    if cfg.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    eval_model = ema.module if ema is not None else model
    loss_fn = get_loss(cfg.loss)
    aug = augment_config(cfg.augment_level) if cfg.augment else None
    total_steps = batches_per_epoch(len(train_arrays), cfg.batch_size) * cfg.epochs

    start_epoch, step, train_seconds, wall_before = 0, 0, 0.0, 0.0
    history: list[dict] = []
    best_dice = -1.0
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    snapshots: dict[int, dict] = {}
    cut = False
    if resume and last_path.is_file():
        ck = load_checkpoint(last_path, map_location=device)
        if ck["train_config"] != cfg.to_dict():
            raise ValueError(f"cannot resume {last_path}: its config differs from this run's config")
        model.load_state_dict(ck["train_state_dict"] if ema is not None else ck["state_dict"])
        if ema is not None:
            ema.load_state_dict(ck["ema_state"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, step = ck["epoch"], ck["step"]
        train_seconds, wall_before = ck["train_seconds"], ck["wall_seconds"]
        history = list(ck["history"])
        best_dice = max((h["val_dice"] for h in history), default=-1.0)
        snapshots = {int(k): dict(v) for k, v in ck.get("snapshots", {}).items()}
        cut = bool(ck.get("cut_by_time", False))
        logger.info("resumed from %s at epoch %d", last_path, start_epoch)
    # the training set lives on the training device as uint8 for the whole run
    train_x, train_y = resident_tensors(train_arrays, device)
    n_params = count_parameters(model)
    logger.info("device=%s amp=%s params=%d train=%d (healthy %d) val=%d size=%d base=%d batch=%d "
                "lr=%g loss=%s norm=%s augment=%s threads=%d freed-memory-kept=%s", device, amp_dtype,
                n_params, len(train_arrays), int((train_arrays.native_tumour_fraction == 0).sum()),
                len(val_arrays), cfg.image_size, cfg.base_width, cfg.batch_size, cfg.lr, cfg.loss,
                cfg.input_norm, cfg.augment_level if cfg.augment else "off", torch.get_num_threads(),
                MALLOC_TUNED)
    snap_epochs = {int(e) for e in cfg.snapshot_epochs}
    wall0 = time.perf_counter()
    stop = False
    epochs = progress_bar(range(start_epoch, cfg.epochs), desc="epochs",
                          disable=None if progress is None else not progress)
    for epoch in epochs:
        model.train()
        t_epoch = time.perf_counter()
        loss_sum, n_seen = 0.0, 0
        loader = resident_batches(train_x, train_y, cfg.batch_size, cfg.seed, epoch, aug)
        t_last = time.perf_counter()
        for x, y in loader:
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * lr_factor(cfg, step, total_steps, train_seconds)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
            loss = loss_fn(logits, y)   # fp32 inside
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            loss_sum += float(loss.detach()) * x.shape[0]
            n_seen += x.shape[0]
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            train_seconds += now - t_last
            if cfg.max_train_seconds and train_seconds >= cfg.max_train_seconds:
                stop = True
                cut = True
                break
            t_last = time.perf_counter()
        train_epoch_s = time.perf_counter() - t_epoch
        row = {"epoch": epoch + 1, "step": step, "train_loss": loss_sum / max(1, n_seen),
               "lr": opt.param_groups[0]["lr"], **validate(eval_model, val_arrays, cfg, device, loss_fn),
               "epoch_seconds": train_epoch_s, "train_seconds": train_seconds,
               "wall_seconds": wall_before + time.perf_counter() - wall0}
        history.append(row)
        if epoch + 1 in snap_epochs and not stop:
            snapshots[epoch + 1] = {"path": str(_save_snapshot(eval_model, cfg, run_dir, epoch + 1,
                                                               train_seconds)),
                                    "train_seconds": float(train_seconds)}
        is_best = row["val_dice"] > best_dice
        best_dice = max(best_dice, row["val_dice"])
        state = _checkpoint_state(eval_model, opt, cfg, epoch + 1, step, train_seconds,
                                  row["wall_seconds"], history, snapshots)
        state["cut_by_time"] = cut
        if ema is not None:
            state["train_state_dict"] = _cpu_state(model)
            state["ema_state"] = _cpu_state(ema)
        save_checkpoint(state, last_path)
        if is_best:
            save_checkpoint(state, best_path)
        _write_history(run_dir, history)
        logger.info("epoch %3d  loss %.4f  val_dice %.4f  val_iou %.4f  lr %.2e  %.1fs (train %.0fs)%s",
                    epoch + 1, row["train_loss"], row["val_dice"], row["val_iou"], row["lr"],
                    train_epoch_s, train_seconds, "  *best*" if is_best else "")
        for cb in callbacks:
            cb(row)
        if stop:
            logger.info("CUT: train_seconds %.1f reached max_train_seconds %s after %d of %d epochs; "
                        "this run is marked cut_by_time and will not be released",
                        train_seconds, cfg.max_train_seconds, epoch + 1, cfg.epochs)
            break
    wall = wall_before + time.perf_counter() - wall0
    return TrainResult(run_dir, pd.DataFrame(history), best_path, last_path, train_seconds, wall,
                       snapshots, n_params, str(device), cut)


def _checkpoint_state(model, opt, cfg, epoch, step, train_seconds, wall_seconds, history, snapshots):
    return {
        "state_dict": _cpu_state(model),
        "model_config": model.config(),
        "train_config": cfg.to_dict(),
        "optimizer": opt.state_dict(),
        "epoch": epoch, "step": step,
        "train_seconds": float(train_seconds), "wall_seconds": float(wall_seconds),
        "history": copy.deepcopy(history),
        "metrics": dict(history[-1]) if history else {},
        "snapshots": {str(k): dict(v) for k, v in snapshots.items()},
        "torch_version": str(torch.__version__),
    }


def _cpu_state(module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _save_snapshot(model, cfg, run_dir: Path, epoch: int, train_seconds: float) -> Path:
    path = run_dir / "snapshots" / f"epoch_{epoch}.pt"
    save_checkpoint({"state_dict": _cpu_state(model),
                     "model_config": model.config(), "train_config": cfg.to_dict(),
                     "train_seconds": float(train_seconds), "epoch": int(epoch)}, path)
    return path


def _run_logger(run_dir: Path) -> logging.Logger:
    logger = logging.getLogger(f"brainseg.train.{run_dir.name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fh = logging.FileHandler(run_dir / "train_log.txt")
    fh.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(fh)
    sh = logging.StreamHandler()
    sh.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(sh)
    return logger
