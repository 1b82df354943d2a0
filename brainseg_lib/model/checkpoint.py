"""Checkpoint files: atomic writes, safe loads, architecture checks.

A checkpoint is a dict of tensors and plain Python types only. It is loaded
with ``torch.load(weights_only=True)``, which refuses arbitrary pickled
objects, so a file from a stranger cannot run code on load.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from brainseg_lib.fileio import atomic_write
from brainseg_lib.model.unet import UNet


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
    if not isinstance(ck, dict) or not ("state_dict" in ck or "members" in ck) or "model_config" not in ck:
        raise CheckpointError(f"{path} is not a brainseg checkpoint (no state_dict/model_config)")
    return ck


# Bounded schema of a checkpoint's model_config: (type, smallest, largest) per key. Checked
# before anything is allocated, so a tampered or corrupt config cannot exhaust memory.
MODEL_CONFIG_SCHEMA = {"in_channels": (int, 1, 4), "base": (int, 1, 256), "out_channels": (int, 1, 8),
                       "depth": (int, 4, 4)}
IMAGE_SIZE_RANGE = (16, 1024)


def _check_int(cfg: dict, key: str, lo: int, hi: int, path, section: str) -> None:
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise CheckpointError(f"{path}: {section}.{key} must be an integer in [{lo}, {hi}], got {v!r}")


def validate_model_config(cfg, path="<checkpoint>") -> dict:
    """The model_config of a checkpoint, checked against MODEL_CONFIG_SCHEMA and the known
    input normalisations; raises CheckpointError naming the key."""
    from brainseg_lib.model.unet import INPUT_NORMS
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: model_config is not a mapping")
    for key, (_, lo, hi) in MODEL_CONFIG_SCHEMA.items():
        if key == "depth" and key not in cfg:
            continue
        _check_int(cfg, key, lo, hi, path, "model_config")
    if cfg.get("input_norm", "none") not in INPUT_NORMS:
        raise CheckpointError(f"{path}: model_config.input_norm must be one of {INPUT_NORMS}, "
                              f"got {cfg.get('input_norm')!r}")
    return cfg


def validate_image_size(train_cfg, path="<checkpoint>") -> int:
    """train_config.image_size: an integer in IMAGE_SIZE_RANGE and a multiple of 16."""
    if not isinstance(train_cfg, dict) or "image_size" not in train_cfg:
        raise CheckpointError(f"{path} has no train_config.image_size, so the input size is unknown")
    _check_int(train_cfg, "image_size", *IMAGE_SIZE_RANGE, path, "train_config")
    if train_cfg["image_size"] % 16:
        raise CheckpointError(f"{path}: train_config.image_size must be a multiple of 16, "
                              f"got {train_cfg['image_size']}")
    return train_cfg["image_size"]


def model_from_checkpoint(ck: dict, path: str | Path = "<checkpoint>", expect: dict | None = None):
    """Build the U-Net a checkpoint describes and load its weights; a released seed ensemble
    (``members``: one state dict per model, ``model.released.release_model``) becomes a
    ``model.ensemble.SeedEnsemble`` of such U-Nets.

    ``expect`` (optional) is an architecture config the caller requires; a
    mismatch, or weights that do not fit the stated architecture, raise
    CheckpointError saying what differs.
    """
    cfg = dict(validate_model_config(ck["model_config"], path))
    if expect is not None:
        diff = {k: (cfg.get(k), v) for k, v in expect.items() if cfg.get(k) != v}
        if diff:
            raise CheckpointError(f"{path}: architecture mismatch (checkpoint vs expected): {diff}")
    if ck.get("members") is not None:
        from brainseg_lib.model.ensemble import SeedEnsemble
        members = ck["members"]
        if not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, dict) for m in members):
            raise CheckpointError(f"{path}: `members` must list the state dicts of 2 or more models")
        return SeedEnsemble([unet_with_weights(cfg, state, path) for state in ck["members"]]).eval()
    return unet_with_weights(cfg, ck["state_dict"], path)


def unet_with_weights(cfg: dict, state_dict: dict, path) -> UNet:
    """The U-Net of a (validated) model config with ``state_dict`` loaded (fp16 weights as fp32)."""
    model = UNet(in_channels=cfg["in_channels"], base=cfg["base"], out_channels=cfg["out_channels"],
                 input_norm=cfg.get("input_norm", "none"))   # older checkpoints: no normalisation
    state = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the architecture {cfg}: "
                              f"{str(e).splitlines()[0]}") from e
    return model.eval()
