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
* ``fit(..., tune_allocator=True)`` keeps freed memory in the process on CPU
  (``memory.keep_freed_memory``, a process-wide glibc setting, so never by default);
  ``train_log.txt`` says whether it was applied.
* Under ``torchrun`` (WORLD_SIZE > 1) the same call trains data-parallel, each process
  on its slice of every global batch (``distributed``); rank 0 alone validates and
  writes. A single process runs exactly the code path it always did.
* **Checkpoint cadence** (``fit(..., checkpoint_every=k)``, ``run_state.checkpoint_due``):
  ``last.pt`` after every k-th epoch, the last, a stop and each new best (``best.pt`` is a
  hard link to it). An I/O choice only: the paper's model writes ~355 MiB per checkpoint.
* The pieces, in order: ``prepare_data``, ``build_trainer``, ``resume_state``, then per
  epoch ``train_one_epoch`` and ``end_epoch``; checkpoint files are in ``run_state``, and
  the per-epoch validation on the training device in ``validation``.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from brainseg_lib import paths
from brainseg_lib.data.cache import SplitArrays, load_split
from brainseg_lib.data.standardize import standardised_to_own_mean
from brainseg_lib.data.loaders import (
    AugmentConfig,
    augment_config,
    batches_per_epoch,
    oversample_pool,
    resident_batches,
    resident_tensors,
)
from brainseg_lib.inference import resolve_device
from brainseg_lib.model.unet import NEEDS_REFERENCE, UNet, count_parameters
from brainseg_lib.progress import progress_bar
from brainseg_lib.training import distributed, memory, run_state
from brainseg_lib.training.config import TrainConfig
from brainseg_lib.training.distributed import DistContext
from brainseg_lib.training.run_state import RunState
from brainseg_lib.training.schedule import lr_factor
from brainseg_lib.training.validation import EMPTY_VAL, validate

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


def build_model(cfg: TrainConfig, reference=None) -> UNet:
    """The U-Net of ``cfg``; ``reference``: the TRAIN percentiles an input norm that needs them takes."""
    if cfg.input_norm in NEEDS_REFERENCE and reference is None:
        raise ValueError(f"input_norm {cfg.input_norm!r} needs the reference percentiles of the TRAIN scans")
    return UNet(in_channels=1, base=cfg.base_width, input_norm=cfg.input_norm, reference=reference)


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
    processes: int = 1                # data-parallel processes (torchrun), 1 = a single process
    peak_gpu_mb: float | None = None  # CUDA: peak memory allocated by this process during fit


def fit(cfg: TrainConfig, run_dir: str | Path, resume: bool = False,
        callbacks: tuple[Callable[[dict], None], ...] = (),
        train_arrays: SplitArrays | None = None, val_arrays: SplitArrays | None = None,
        data_root=None, progress: bool | None = None, tune_allocator: bool = False,
        checkpoint_every: int = 1) -> TrainResult:
    """Train a U-Net as ``cfg`` says, writing everything under ``run_dir``.

    ``callbacks`` are called after each epoch with that epoch's history row; an
    exception raised by one stops training; ``fit(..., resume=True)`` replays from the last
    checkpoint (``checkpoint_every``, default every epoch). ``tune_allocator`` keeps freed
    memory in the process on CPU (``memory.keep_freed_memory``: process-wide and one-way,
    hence off unless asked for). Under ``torchrun`` the run is data-parallel
    (``distributed``): rank 0 writes everything, and every rank returns the same history.
    """
    checkpoint_every = run_state.check_cadence(checkpoint_every)
    run_dir = paths.ensure(Path(run_dir))
    (run_dir / "snapshots").mkdir(exist_ok=True)
    set_determinism(cfg)
    ddp = distributed.setup(resolve_device(cfg.device))
    if ddp.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ddp.device)
    logger = run_state.run_logger(run_dir, main=ddp.is_main, epochs=cfg.epochs)
    malloc = memory.tune_allocator(tune_allocator, ddp.device)
    with ddp.main_first():
        train_arrays, val_arrays = prepare_data(cfg, train_arrays, val_arrays, data_root)
    ddp.check_batch(len(train_arrays), cfg.batch_size)
    reference, train_arrays = (standardised_to_own_mean(train_arrays) if cfg.input_norm in NEEDS_REFERENCE
                               else (None, train_arrays))     # before augmentation: model.histogram_norm
    tr = build_trainer(cfg, ddp, len(train_arrays), reference)
    tr.checkpoint_every = checkpoint_every
    st = resume_state(tr, cfg, run_dir / "last.pt", ddp, logger) if resume else RunState()
    tr.net = ddp.wrap(tr.model)
    # the training set lives on the training device as uint8 for the whole run, and so does
    # VAL on rank 0, which alone validates
    train_x, train_y = resident_tensors(train_arrays, ddp.device)
    tr.pool = oversample_pool(train_arrays.masks, cfg.small_tumour_oversample)   # once per run
    val = resident_tensors(val_arrays, ddp.device) if ddp.is_main else None
    n_params = count_parameters(tr.model)
    _log_setup(logger, cfg, tr, n_params, train_arrays, val_arrays, malloc, ddp)
    wall0 = time.perf_counter()
    epochs = progress_bar(range(st.epoch, cfg.epochs), desc="epochs",
                          disable=(None if progress is None else not progress) if ddp.is_main else True)
    for epoch in epochs:
        loss, epoch_s, stop = train_one_epoch(tr, cfg, st, epoch, train_x, train_y, ddp)
        row = end_epoch(tr, cfg, st, (loss, epoch_s, stop), val, run_dir, wall0, ddp, logger)
        for cb in callbacks:
            cb(row)
        if stop:
            logger.info("CUT: train_seconds %.1f reached max_train_seconds %s after %d of %d epochs; "
                        "this run is marked cut_by_time and will not be released",
                        st.train_seconds, cfg.max_train_seconds, epoch + 1, cfg.epochs)
            break
    wall = st.wall_before + time.perf_counter() - wall0
    peak = (round(torch.cuda.max_memory_allocated(ddp.device) / 2**20, 1)
            if ddp.device.type == "cuda" else None)
    return TrainResult(run_dir, pd.DataFrame(st.history), run_dir / "best.pt", run_dir / "last.pt",
                       st.train_seconds, wall, st.snapshots, n_params,
                       ddp.device.type if ddp.enabled else str(ddp.device), st.cut, ddp.world_size,
                       peak)


def prepare_data(cfg: TrainConfig, train_arrays, val_arrays, data_root):
    """TRAIN and VAL as the config says: loaded unless given, cut to ``limit_*``, with the
    healthy scans joined when ``healthy_ratio`` > 0."""
    if train_arrays is None:
        train_arrays = load_split("train", cfg.image_size, root=data_root, head_crop=cfg.head_crop)
    if val_arrays is None:
        val_arrays = load_split("val", cfg.image_size, root=data_root, head_crop=cfg.head_crop)
    train_arrays, val_arrays = train_arrays.head(cfg.limit_train), val_arrays.head(cfg.limit_val)
    if cfg.healthy_ratio:
        from brainseg_lib.data.healthy import with_healthy
        train_arrays = with_healthy(train_arrays, "train", cfg.healthy_ratio, cfg.healthy_seed, data_root,
                                    cfg.head_crop)
        val_arrays = with_healthy(val_arrays, "val", cfg.healthy_ratio, cfg.healthy_seed, data_root,
                                  cfg.head_crop)
    if not len(val_arrays):   # refused before training, not after the first epoch
        raise ValueError(EMPTY_VAL)
    return train_arrays, val_arrays


@dataclass
class Trainer:
    """What a run trains with, built once by ``build_trainer``."""
    model: torch.nn.Module           # the U-Net being optimised
    opt: torch.optim.Optimizer
    ema: torch.nn.Module | None      # AveragedModel of ``model`` when ema_decay is set
    loss_fn: Callable                # training loss (under DDP: that of the global batch)
    aug: AugmentConfig | None
    total_steps: int
    device: torch.device
    amp_dtype: torch.dtype | None
    net: torch.nn.Module | None = None   # what a step calls: ``model`` or its DDP wrapper
    checkpoint_every: int = 1            # last.pt after every k-th epoch (and each new best)
    pool: torch.Tensor | None = None     # what an epoch draws from (data.loaders.oversample_pool)

    @property
    def eval_model(self) -> torch.nn.Module:
        """What is validated, snapshotted and saved as ``state_dict``: the average with EMA."""
        return self.ema.module if self.ema is not None else self.model


def build_trainer(cfg: TrainConfig, ddp: DistContext, n_train: int, reference=None) -> Trainer:
    """Model (initialised from the seed set by ``set_determinism``; ``reference`` as
    ``build_model`` takes it), Adam, optional EMA, losses and augmentation."""
    device = ddp.device
    model = build_model(cfg, reference).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = ddp.prepare_model(model, cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = None
    if cfg.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    aug = augment_config(cfg.augment_level) if cfg.augment else None
    total_steps = batches_per_epoch(n_train, cfg.batch_size) * cfg.epochs
    return Trainer(model, opt, ema, ddp.loss(cfg.loss), aug, total_steps, device,
                   autocast_dtype(cfg, device))


def resume_state(tr: Trainer, cfg: TrainConfig, last_path: Path, ddp: DistContext, logger) -> RunState:
    """The RunState of ``last_path`` loaded into the trainer (every rank loads it), or a
    fresh one when there is no checkpoint yet."""
    if not ddp.broadcast(last_path.is_file()):
        return RunState()
    if not last_path.is_file():
        raise FileNotFoundError(f"rank {ddp.rank} cannot see {last_path}, which rank 0 resumes "
                                "from: resuming a distributed run needs its run folder on a "
                                "filesystem shared by every node")
    st = run_state.restore(last_path, cfg, tr.model, tr.opt, tr.ema, tr.device)
    logger.info("resumed from %s at epoch %d", last_path, st.epoch)
    return st


def train_one_epoch(tr: Trainer, cfg: TrainConfig, st: RunState, epoch: int, train_x, train_y,
                    ddp: DistContext) -> tuple[float, float, bool]:
    """One pass over the epoch's batches (this rank's shard of each under DDP), advancing
    ``st.step`` and ``st.train_seconds``; (mean training loss of the global batches,
    seconds, whether ``max_train_seconds`` stopped it)."""
    tr.net.train()
    t_epoch = time.perf_counter()
    loss_sum, n_seen, stop = 0.0, 0, False
    loader = ddp.shard(resident_batches(train_x, train_y, cfg.batch_size, cfg.seed, epoch, tr.aug, tr.pool))
    t_last = time.perf_counter()
    for x, y in loader:
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for g in tr.opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(cfg, st.step, tr.total_steps, st.train_seconds)
        with torch.autocast(tr.device.type, dtype=tr.amp_dtype, enabled=tr.amp_dtype is not None):
            logits = tr.net(x)
        loss = tr.loss_fn(logits, y)   # fp32 inside
        tr.opt.zero_grad(set_to_none=True)
        loss.backward()
        tr.opt.step()
        if tr.ema is not None:
            tr.ema.update_parameters(tr.model)
        st.step += 1
        loss_sum += float(loss.detach()) * x.shape[0]
        n_seen += x.shape[0]
        if tr.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        st.train_seconds += now - t_last
        if cfg.max_train_seconds:
            # one clock for every rank (the slowest): the stop and a time_cosine LR agree
            st.train_seconds = ddp.max(st.train_seconds)
            if st.train_seconds >= cfg.max_train_seconds:
                stop = st.cut = True
                break
        t_last = time.perf_counter()
    epoch_s = time.perf_counter() - t_epoch
    loss_sum, n_seen = ddp.sum(loss_sum, n_seen)   # the ranks' shards make the global batches
    return loss_sum / max(1, n_seen), epoch_s, stop


def end_epoch(tr: Trainer, cfg: TrainConfig, st: RunState, trained: tuple[float, float, bool],
              val: tuple[torch.Tensor, torch.Tensor] | None, run_dir: Path, wall0: float,
              ddp: DistContext, logger) -> dict:
    """Rank 0 validates (on VAL's resident images and masks, ``val``), snapshots,
    checkpoints and logs the epoch just trained; every rank gets its history row (returned)
    and the run's snapshots and best Dice."""
    train_loss, epoch_s, stop = trained
    st.epoch += 1
    row = None
    if ddp.is_main:
        row = {"epoch": st.epoch, "step": st.step, "train_loss": train_loss,
               "lr": tr.opt.param_groups[0]["lr"],
               **validate(tr.eval_model, *val, cfg, tr.amp_dtype),
               "epoch_seconds": epoch_s, "train_seconds": st.train_seconds,
               "wall_seconds": st.wall_before + time.perf_counter() - wall0}
        st.history.append(row)
        if st.epoch in {int(e) for e in cfg.snapshot_epochs} and not stop:
            path = run_state.save_snapshot(tr.eval_model, cfg, run_dir, st.epoch, st.train_seconds)
            st.snapshots[st.epoch] = {"path": str(path), "train_seconds": float(st.train_seconds)}
        is_best = row["val_dice"] > st.best_dice
        st.best_dice = max(st.best_dice, row["val_dice"])
        if run_state.checkpoint_due(st.epoch, cfg.epochs, tr.checkpoint_every, is_best, stop):
            run_state.save_checkpoints(st, cfg, tr.eval_model, tr.model, tr.opt, tr.ema, run_dir, is_best)
        run_state.write_history(run_dir, st.history)
        logger.info("epoch %3d  loss %.4f  val_dice %.4f  val_iou %.4f  lr %.2e%s",
                    st.epoch, row["train_loss"], row["val_dice"], row["val_iou"], row["lr"],
                    "  *best*" if is_best else "",
                    extra={"clock": f"  {epoch_s:.1f}s (train {st.train_seconds:.0f}s)"})
    row, st.snapshots, st.best_dice = ddp.broadcast((row, st.snapshots, st.best_dice))
    if not ddp.is_main:
        st.history.append(row)
    return row


def _log_setup(logger, cfg: TrainConfig, tr: Trainer, n_params: int, train_arrays, val_arrays,
               malloc: str, ddp: DistContext) -> None:
    logger.info("device=%s amp=%s params=%d train=%d (healthy %d) val=%d size=%d base=%d batch=%d "
                "lr=%g loss=%s norm=%s augment=%s threads=%d freed-memory-kept=%s (tune_allocator: %s) "
                "checkpoint every %d epochs and at each new best",
                tr.device, tr.amp_dtype, n_params, len(train_arrays),
                int((train_arrays.native_tumour_fraction == 0).sum()), len(val_arrays), cfg.image_size,
                cfg.base_width, cfg.batch_size, cfg.lr, cfg.loss, cfg.input_norm,
                cfg.augment_level if cfg.augment else "off", torch.get_num_threads(),
                memory.MALLOC_TUNED, malloc, tr.checkpoint_every)
    if ddp.enabled:
        logger.info("distributed: %d processes (%s), %d images per process per step, "
                    "BatchNorm over the global batch (%s)", ddp.world_size, dist.get_backend(),
                    cfg.batch_size // ddp.world_size,
                    "SyncBatchNorm" if ddp.device.type == "cuda" else "GlobalBatchNorm2d")
