"""What a training run has done so far, and the files that keep it: ``last.pt``, ``best.pt``,
``snapshots/epoch_<k>.pt``, ``history.csv`` and ``train_log.txt`` (see ``engine``'s docstring).

Checkpoints hold only tensors and plain types (``torch.load(weights_only=True)``) and are
written atomically.
"""
from __future__ import annotations

import copy
import logging
import numbers
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from brainseg_lib.fileio import atomic_copy, atomic_write_text
from brainseg_lib.model.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class RunState:
    """The progress of a run: restored from ``last.pt`` on resume, saved with each checkpoint."""
    epoch: int = 0                   # epochs completed
    step: int = 0                    # optimiser steps taken
    train_seconds: float = 0.0
    wall_before: float = 0.0         # wall seconds of the sessions before this one (resume)
    history: list[dict] = field(default_factory=list)
    best_dice: float = -1.0
    snapshots: dict[int, dict] = field(default_factory=dict)   # epoch -> {"path", "train_seconds"}
    cut: bool = False                # stopped by max_train_seconds


def restore(path: Path, cfg, model, opt, ema, device) -> RunState:
    """Load ``path`` (a run's last.pt) into the model, optimiser and EMA; its RunState."""
    ck = load_checkpoint(path, map_location=device)
    if ck["train_config"] != cfg.to_dict():
        raise ValueError(f"cannot resume {path}: its config differs from this run's config")
    model.load_state_dict(ck["train_state_dict"] if ema is not None else ck["state_dict"])
    if ema is not None:
        ema.load_state_dict(ck["ema_state"])
    opt.load_state_dict(ck["optimizer"])
    history = list(ck["history"])
    return RunState(epoch=ck["epoch"], step=ck["step"], train_seconds=ck["train_seconds"],
                    wall_before=ck["wall_seconds"], history=history,
                    best_dice=max((h["val_dice"] for h in history), default=-1.0),
                    snapshots={int(k): dict(v) for k, v in ck.get("snapshots", {}).items()},
                    cut=bool(ck.get("cut_by_time", False)))


def check_cadence(every) -> int:
    """``every`` (epochs between checkpoints) as an int if it is a whole number >= 1 (numpy
    integers too, not bools); else a ValueError."""
    if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
        raise ValueError(f"checkpoint_every must be a whole number of epochs >= 1, got {every!r}")
    return int(every)


def checkpoint_due(epoch: int, epochs: int, every: int, is_best: bool, stop: bool) -> bool:
    """Whether ``last.pt`` is written after ``epoch``: every ``every``-th epoch, the last one,
    a stop, and every new best. ``best.pt`` is thus always the ``last.pt`` of its epoch and
    never newer than ``last.pt``, so a resume (which retrains the epochs since ``last.pt``
    with the same per-epoch seeds) keeps the best of the epochs it knows. With
    ``deterministic`` the retrained epochs equal the lost ones; without it (bf16 and cuDNN
    autotuning on a GPU) they differ in float rounding, and the lost epochs' wall time is
    not counted."""
    return is_best or stop or epoch == epochs or epoch % every == 0


def save_checkpoints(st: RunState, cfg, eval_model, model, opt, ema, run_dir: Path,
                     is_best: bool) -> None:
    """``last.pt`` (and ``best.pt`` when ``is_best``) after the epoch ``st.epoch``: the
    evaluated weights as ``state_dict``, with EMA also the raw weights and the average."""
    state = checkpoint_state(eval_model, opt, cfg, st.epoch, st.step, st.train_seconds,
                             st.history[-1]["wall_seconds"], st.history, st.snapshots)
    state["cut_by_time"] = st.cut
    if ema is not None:
        state["train_state_dict"] = cpu_state(model)
        state["ema_state"] = cpu_state(ema)
    last = save_checkpoint(state, run_dir / "last.pt")
    if is_best:   # the same bytes: a hard link, not a second serialisation of weights and optimiser
        atomic_copy(last, run_dir / "best.pt")


def checkpoint_state(model, opt, cfg, epoch, step, train_seconds, wall_seconds, history, snapshots):
    return {
        "state_dict": cpu_state(model),
        "model_config": model.config(),
        "train_config": cfg.to_dict(),
        "optimizer": on_cpu(opt.state_dict()),   # Adam's moments too: loads on a CPU-only machine
        "epoch": epoch, "step": step,
        "train_seconds": float(train_seconds), "wall_seconds": float(wall_seconds),
        "history": copy.deepcopy(history),
        "metrics": dict(history[-1]) if history else {},
        "snapshots": {str(k): dict(v) for k, v in snapshots.items()},
        "torch_version": str(torch.__version__),
    }


def cpu_state(module) -> dict:
    """A copy of ``module``'s state dict on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def on_cpu(obj):
    """``obj`` (nested dicts, lists and tuples, as an optimizer's state dict) with every
    tensor detached and on the CPU; ``load_state_dict`` moves them back to the parameters'
    device."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_cpu(v) for v in obj)
    return obj


def save_snapshot(model, cfg, run_dir: Path, epoch: int, train_seconds: float) -> Path:
    path = run_dir / "snapshots" / f"epoch_{epoch}.pt"
    save_checkpoint({"state_dict": cpu_state(model),
                     "model_config": model.config(), "train_config": cfg.to_dict(),
                     "train_seconds": float(train_seconds), "epoch": int(epoch)}, path)
    return path


# the clock columns of a run's history: kept in history_timing.csv, apart from history.csv, so
# that two runs that train the same weights write the same history.csv (only timing files differ)
TIMING_COLUMNS = ("epoch_seconds", "train_seconds", "wall_seconds")


def write_history(run_dir: Path, history: list[dict]) -> None:
    """``history.csv`` (epoch, step, losses, lr, validation figures) and ``history_timing.csv``
    (epoch and the clock columns, ``TIMING_COLUMNS``)."""
    df = pd.DataFrame(history)
    clock = [c for c in TIMING_COLUMNS if c in df]
    atomic_write_text(run_dir / "history.csv", df.drop(columns=clock).to_csv(index=False))
    if clock:
        atomic_write_text(run_dir / "history_timing.csv", df[["epoch", *clock]].to_csv(index=False))


def read_history(run_dir: Path) -> pd.DataFrame:
    """A run's history with its clock columns merged back (``write_history``); a history
    written before the split, with the clock columns inline, reads as it is."""
    df = pd.read_csv(Path(run_dir) / "history.csv")
    timing = Path(run_dir) / "history_timing.csv"
    if timing.is_file() and not any(c in df for c in TIMING_COLUMNS):
        df = df.merge(pd.read_csv(timing), on="epoch", how="left")
    return df


class EpochThinning(logging.Filter):
    """Console filter: of the per-epoch lines, keep epoch 1, every ``every``-th (about ten in
    all) and the last; everything else passes. ``train_log.txt`` keeps every line."""

    def __init__(self, epochs: int, every: int | None = None):
        super().__init__()
        self.epochs, self.every = epochs, every or max(1, epochs // 10)

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith("epoch ") and record.args):
            return True
        epoch = int(record.args[0])
        return epoch == 1 or epoch == self.epochs or epoch % self.every == 0


class ClockFormatter(logging.Formatter):
    """Appends a record's clock figures (``extra={"clock": ...}``, the epoch lines' seconds)
    when ``clock`` is true: in ``train_log.txt`` and on a terminal, not in a notebook's or a CI
    log's output, so that an executed notebook of a re-run with the same weights is identical."""

    def __init__(self, fmt: str, datefmt: str | None = None, clock: bool = True):
        super().__init__(fmt, datefmt)
        self.clock = clock

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = getattr(record, "clock", "")
        return text + extra if self.clock and extra else text


def run_logger(run_dir: Path, main: bool = True, epochs: int | None = None) -> logging.Logger:
    """The run's logger: ``train_log.txt`` (every line) and stdout on rank 0, where the
    per-epoch lines are thinned (``EpochThinning``) when ``epochs`` is given; warnings only,
    on stderr, on the other ranks of a distributed run."""
    logger = logging.getLogger(f"brainseg.train.{run_dir.name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    if main:
        fh = logging.FileHandler(run_dir / "train_log.txt")
        fh.setFormatter(ClockFormatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(fh)
    stream = sys.stdout if main else sys.stderr
    sh = logging.StreamHandler(stream)
    sh.setFormatter(ClockFormatter("%(message)s", clock=bool(getattr(stream, "isatty", lambda: False)())))
    sh.setLevel(logging.INFO if main else logging.WARNING)
    if main and epochs:
        sh.addFilter(EpochThinning(epochs))
    logger.addHandler(sh)
    return logger
