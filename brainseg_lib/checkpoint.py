"""Checkpoint files: atomic writes, safe loads, architecture checks.

A checkpoint is a dict of tensors and plain Python types only. It is loaded
with ``torch.load(weights_only=True)``, which refuses arbitrary pickled
objects, so a file from a stranger cannot run code on load.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from .fileio import atomic_write
from .model import UNet


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used, with the reason."""


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` to ``path`` via a temp file and an atomic rename."""
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint dict with ``weights_only=True``; raise CheckpointError if unsafe or broken."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it contains objects other than tensors and plain types "
            f"(a pickle payload), which could run code. Only load checkpoints written by "
            f"brainseg_lib. Detail: {str(e).splitlines()[0]}") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(ck, dict) or "state_dict" not in ck or "model_config" not in ck:
        raise CheckpointError(f"{path} is not a brainseg checkpoint (no state_dict/model_config)")
    return ck


def model_from_checkpoint(ck: dict, path: str | Path = "<checkpoint>", expect: dict | None = None) -> UNet:
    """Build the U-Net a checkpoint describes and load its weights.

    ``expect`` (optional) is an architecture config the caller requires; a
    mismatch, or weights that do not fit the stated architecture, raise
    CheckpointError saying what differs.
    """
    cfg = dict(ck["model_config"])
    if expect is not None:
        diff = {k: (cfg.get(k), v) for k, v in expect.items() if cfg.get(k) != v}
        if diff:
            raise CheckpointError(f"{path}: architecture mismatch (checkpoint vs expected): {diff}")
    model = UNet(in_channels=cfg["in_channels"], base=cfg["base"], out_channels=cfg["out_channels"],
                 input_norm=cfg.get("input_norm", "none"))   # older checkpoints: no normalisation
    state = {k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the architecture {cfg}: "
                              f"{str(e).splitlines()[0]}") from e
    return model.eval()
