"""The learning-rate schedule: constant (the paper), one-cycle by step, or cosine by elapsed
training time (``lr_factor`` multiplies ``TrainConfig.lr``).
"""
from __future__ import annotations

import logging
import math

from brainseg_lib.training.config import TrainConfig

log = logging.getLogger(__name__)


def lr_factor(cfg: TrainConfig, step: int, total_steps: int, train_seconds: float) -> float:
    """Multiplier on cfg.lr: constant, one-cycle by step, or cosine by elapsed time."""
    if cfg.schedule == "none":
        return 1.0
    if cfg.schedule == "onecycle":
        frac = step / max(1, total_steps)
    elif cfg.schedule == "time_cosine":
        if not cfg.max_train_seconds:
            raise ValueError("schedule 'time_cosine' needs max_train_seconds")
        frac = train_seconds / cfg.max_train_seconds
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}")
    frac = min(max(frac, 0.0), 1.0)
    if frac < cfg.warmup_frac:
        return 0.05 + 0.95 * frac / cfg.warmup_frac
    t = (frac - cfg.warmup_frac) / max(1e-9, 1 - cfg.warmup_frac)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))
