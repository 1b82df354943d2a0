"""The released model: a slim checkpoint (fp16 weights, configs, metrics) with a SHA-256
sidecar in ``sha256sum`` format, verified on every load (``paths.released_model()`` by default).
"""
from __future__ import annotations

from pathlib import Path

import torch

from brainseg_lib import paths
from brainseg_lib.data import cache
from brainseg_lib.fileio import atomic_write as _atomic_write
from brainseg_lib.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)

FP16_MAX = 65504.0   # largest finite float16: weights beyond it are kept in fp32


# ----------------------------------------------------------------------------- released model
def checksum_path(model_path: str | Path) -> Path:
    """``<model>.sha256``, the checksum file next to a released model."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".sha256")


def write_checksum(path: str | Path) -> Path:
    """Write ``<path>.sha256`` (``sha256sum`` format) for the file at ``path``; return it."""
    path = Path(path)
    digest = cache.sha256_file(path)
    return _atomic_write(checksum_path(path), lambda f: f.write(f"{digest}  {path.name}\n".encode()))


def release_model(src_checkpoint, dest: str | Path | None = None, fp16: bool = True,
                  inference: dict | None = None) -> Path:
    """Write a slim copy of a training checkpoint for users, plus its ``.sha256``; given a list
    of two or more checkpoints of one recipe (a seed ensemble, ``model.ensemble``), one file
    holding all their weights (``members``), which ``model_from_checkpoint`` loads as one model.

    Kept: ``state_dict`` (floating tensors cast to fp16 when ``fp16``, except a
    tensor whose values fp16 cannot hold, which stays fp32), ``model_config``,
    ``train_config``, ``metrics``. Dropped: optimiser state, history, raw
    training weights of EMA runs. ``inference`` (test-time flips, small-component removal:
    ``inference.ScanSettings``) is recorded when given, and ``predict`` applies it. Both files
    are written atomically. ``dest`` defaults to ``paths.released_model()``.
    """
    srcs = [Path(p) for p in src_checkpoint] if isinstance(src_checkpoint, (list, tuple)) else [Path(src_checkpoint)]
    dest = Path(dest) if dest is not None else paths.released_model()
    cks = [load_checkpoint(src) for src in srcs]
    for ck, src in zip(cks, srcs):
        model_from_checkpoint(ck, src)            # the weights must fit the architecture
        tcfg = ck.get("train_config")
        if not isinstance(tcfg, dict) or "image_size" not in tcfg:
            raise CheckpointError(f"{src} has no train_config.image_size; cannot release it")
    check_same_recipe(cks, srcs)
    ck, tcfg = cks[0], cks[0]["train_config"]
    states = [slim_state(c["state_dict"], fp16) for c in cks]
    slim = {
        **({"state_dict": states[0]} if len(cks) == 1 else {"members": states}),
        "model_config": dict(ck["model_config"]),
        "train_config": dict(tcfg),
        # clock times stay out, so the same weights give the same file (and SHA-256) anywhere
        "metrics": (clock_free(ck) if len(cks) == 1 else {"members": [clock_free(c) for c in cks]}),
        "released_from": srcs[0].name if len(srcs) == 1 else [f"{s.parent.name}/{s.name}" for s in srcs],
        "weights_dtype": "float16" if fp16 else "float32",
        **({"inference": dict(inference)} if inference else {}),
    }
    save_checkpoint(slim, dest)
    write_checksum(dest)
    return dest


def clock_free(ck: dict) -> dict:
    return {k: v for k, v in (ck.get("metrics") or {}).items() if not k.endswith("_seconds")}


def slim_state(state_dict: dict, fp16: bool) -> dict:
    """The weights on the CPU, floating ones as fp16 where fp16 can hold them."""
    state = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        if fp16 and v.is_floating_point() and v.dtype != torch.float16:
            finite = bool(torch.isfinite(v).all())
            if finite and (v.numel() == 0 or float(v.abs().max()) <= FP16_MAX):
                v = v.to(torch.float16)
        state[k] = v.clone()
    return state


# what the members of a released ensemble must share: one input, one threshold, one way of
# reading a scan (what they may differ in: the seed, and what that changes)
SHARED_TRAIN_KEYS = ("image_size", "threshold", "head_crop", "input_norm")


def check_same_recipe(cks: list[dict], srcs: list[Path]) -> None:
    """Refuse (CheckpointError naming the files) members that differ in architecture or in
    ``SHARED_TRAIN_KEYS``."""
    first = cks[0]
    for ck, src in zip(cks[1:], srcs[1:]):
        differ = ([] if ck["model_config"] == first["model_config"] else ["model_config"]) + [
            k for k in SHARED_TRAIN_KEYS if ck["train_config"].get(k) != first["train_config"].get(k)]
        if differ:
            raise CheckpointError(f"{src} differs from {srcs[0]} in {', '.join(differ)}; the members "
                                  "of one released ensemble must share them")


def verify_checksum(path: str | Path) -> str:
    """Check ``path`` against its ``.sha256`` file; return the digest or raise CheckpointError."""
    path = Path(path)
    side = checksum_path(path)
    if not side.is_file():
        raise CheckpointError(f"{path} has no checksum file {side.name}, so it cannot be verified; "
                              "re-release it with brainseg_lib.model.released.release_model")
    try:
        expected = side.read_text(encoding="ascii").split()[0].lower()
    except (UnicodeDecodeError, IndexError) as e:
        raise CheckpointError(f"{side} is not a SHA-256 checksum file "
                              "(expected '<64 hex digits>  <file name>')") from e
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise CheckpointError(f"{side} is not a SHA-256 checksum file "
                              "(expected '<64 hex digits>  <file name>')")
    actual = cache.sha256_file(path)
    if actual != expected:
        raise CheckpointError(
            f"{path}: SHA-256 mismatch: {side.name} records {expected}, the file has {actual}. "
            "The file was modified or corrupted after release; restore it (git checkout "
            "results/models/) or release it again.")
    return actual


def load_released(path: str | Path | None = None) -> dict:
    """Load a released model after checking its SHA-256 (``weights_only=True`` load)."""
    path = Path(path) if path is not None else paths.released_model()
    if not path.is_file():
        raise CheckpointError(
            f"the released model {path} does not exist yet. Pass --checkpoint PATH with a "
            "checkpoint you trained (e.g. results/runs/<run>/best.pt), or run ./run_all.sh "
            "to train the model and release it.")
    verify_checksum(path)
    return load_checkpoint(path)
