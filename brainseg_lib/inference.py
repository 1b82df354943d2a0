"""Inference, shared by training, evaluation and the applications: choose the device, run the
U-Net on uint8 images in batches (logits or probabilities), and resize a probability map back
to an image's native size.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from brainseg_lib import paths
from brainseg_lib.data.cache import SplitArrays
from brainseg_lib.data.loaders import (
    to_float,
)

log = logging.getLogger(__name__)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; a device name or ``torch.device`` is taken as is."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def model_device(model) -> torch.device:
    """The device of ``model``'s parameters (CPU for a parameter-free module)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def load_model(checkpoint, device="auto") -> torch.nn.Module:
    """The U-Net of a checkpoint written by ``train.fit`` (or the released model), in eval mode,
    on ``device`` (``auto``: CUDA, then MPS, then CPU): every later prediction runs where the
    model is, so a GPU machine never scores thousands of images on its CPU."""
    from brainseg_lib.model.checkpoint import load_checkpoint, model_from_checkpoint
    return model_from_checkpoint(load_checkpoint(checkpoint), checkpoint).to(resolve_device(device))


def load_run_model(run: dict) -> torch.nn.Module:
    """The best checkpoint of a run (its metric JSON's ``checkpoint``) on the device the run
    trained on (its ``config.device``; ``auto``: the GPU when there is one), as the notebooks
    after 02 use it."""
    return load_model(paths.resolve_recorded(run["checkpoint"]), run["config"]["device"])


BATCH = 32   # images per forward pass, unless a caller says otherwise


def iter_logits(model: torch.nn.Module, images_u8: torch.Tensor, device: torch.device,
                batch_size: int = BATCH, channels_last: bool = True, amp_dtype=None):
    """(start, logits) per batch of uint8 images (N,S,S) or (N,1,S,S): float32 logits
    (B,1,S,S) left on ``device``. Call it under ``torch.inference_mode()``; it puts the
    model in eval mode."""
    model.eval()
    if images_u8.dim() == 3:
        images_u8 = images_u8.unsqueeze(1)
    for i in range(0, images_u8.shape[0], batch_size):
        x = to_float(images_u8[i:i + batch_size]).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x).float()
        yield i, logits   # outside the autocast block: the caller's code runs as it would


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, images_u8: torch.Tensor, device: torch.device,
                   batch_size: int = BATCH, channels_last: bool = True,
                   amp_dtype=None) -> torch.Tensor:
    """Logits (N,1,S,S) float32 on CPU for uint8 images (N,S,S) or (N,1,S,S)."""
    out = [lg.cpu() for _, lg in iter_logits(model, images_u8, device, batch_size, channels_last,
                                             amp_dtype)]
    return torch.cat(out) if out else torch.zeros((0, 1) + tuple(images_u8.shape[-2:]))


def read_only_tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``a``'s memory, for reading only. A read-only array (a memory-mapped
    cache) would make torch warn that writing to it is undefined; nothing here writes to it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(a))


def predict_probabilities(model: torch.nn.Module, images_u8, device: torch.device | None = None,
                          batch_size: int = BATCH, channels_last: bool = True) -> np.ndarray:
    """Tumour probabilities (N,S,S) float32 for uint8 images (N,S,S) (array or tensor), on
    ``device`` (default: where the model's parameters are)."""
    if device is None:
        device = model_device(model)
    images = read_only_tensor(images_u8) if isinstance(images_u8, np.ndarray) else images_u8
    logits = predict_logits(model, images, device, batch_size, channels_last)
    return torch.sigmoid(logits[:, 0]).numpy()


def predict_probs(model, arrays: SplitArrays, device=None, batch_size: int = BATCH) -> np.ndarray:
    """Tumour probabilities (N, S, S) float32 at the model's resolution, on ``device`` (the
    model is moved there; default: where the model already is)."""
    device = model_device(model) if device is None else resolve_device(device)
    return predict_probabilities(model.to(device), arrays.images, device, batch_size,
                                 channels_last=device.type != "mps")


def to_native(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of one probability map back to (height, width)."""
    t = torch.from_numpy(np.ascontiguousarray(prob, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(int(height), int(width)), mode="bilinear",
                         align_corners=False)[0, 0].numpy()


def to_native_frame(prob: np.ndarray, height: int, width: int, box=None) -> np.ndarray:
    """``to_native`` of a probability map that shows ``box`` (top, bottom, left, right) of a
    (height, width) scan (``data.head_crop``): resized to the box and pasted into an empty
    frame; the whole scan when ``box`` is None."""
    from brainseg_lib.data.head_crop import paste
    if box is None:
        return to_native(prob, height, width)
    top, bottom, left, right = (int(v) for v in box)
    return paste(to_native(prob, bottom - top, right - left), (top, bottom, left, right), (height, width))


def predict_probabilities_tta(model: torch.nn.Module, images_u8, device: torch.device | None = None,
                              batch_size: int = BATCH) -> np.ndarray:
    """Test-time augmentation: the mean of the probabilities (N,S,S) of the images, of their
    left-right flips and of their up-down flips, each flipped back (training flips both ways)."""
    return flip_mean(lambda x: predict_probabilities(model, x, device, batch_size), np.asarray(images_u8))


def scored_probabilities(model: torch.nn.Module, images_u8, device: torch.device | None = None,
                         threshold: float = 0.5, tta: bool = False, min_component: float = 0.0,
                         batch_size: int = BATCH, channels_last: bool = True) -> np.ndarray:
    """Probabilities (N,S,S) of whole sets with a released file's settings applied as ``predict``
    applies them to one scan: test-time flips (``tta``), then predicted components under
    ``min_component`` of the image removed at ``threshold``."""
    probs = (predict_probabilities_tta(model, images_u8, device, batch_size) if tta
             else predict_probabilities(model, images_u8, device, batch_size, channels_last))
    return drop_small_components(probs, threshold, min_component) if min_component > 0 else probs


def any_marked(probs: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) bool: whether each map of ``probs`` (N, ...) has a pixel at or above ``threshold``."""
    probs = np.asarray(probs)
    return (probs >= threshold).reshape(len(probs), -1).any(1)


def drop_small_components(probs: np.ndarray, threshold: float, min_fraction: float) -> np.ndarray:
    """``probs`` (N,S,S) with every predicted component (8-connected, at ``threshold``) smaller
    than ``min_fraction`` of the image's pixels set to 0; a copy, the input is kept."""
    from scipy import ndimage
    out = np.array(probs, dtype=np.float32, copy=True)
    if min_fraction <= 0:
        return out
    min_pixels = min_fraction * probs.shape[-1] * probs.shape[-2]
    for i in range(out.shape[0]):
        labels, n = ndimage.label(out[i] >= threshold, structure=np.ones((3, 3), bool))
        if n:
            sizes = np.bincount(labels.ravel())
            small = np.flatnonzero(sizes < min_pixels)
            small = small[small > 0]
            out[i][np.isin(labels, small)] = 0.0
    return out


# ------------------------------------------------------------------- one scan, as the study scores it
def checkpoint_threshold(ck: dict) -> float:
    """The probability from which a checkpoint's pixel is tumour: a released file's
    ``inference.threshold`` (chosen by a lever round, ``study.release_plan``), else
    ``train_config.threshold``, else 0.5."""
    inf = ck.get("inference") or {}
    if inf.get("threshold") is not None:
        return float(inf["threshold"])
    return float((ck.get("train_config") or {}).get("threshold", 0.5))


@dataclass(frozen=True)
class ScanSettings:
    """How a model's maps become a scan's mask, beyond the threshold: the head crop
    (``data.head_crop``, when the model trained on crops), test-time flips and the removal of
    predicted components under ``min_component`` of the model's input."""
    head_crop: bool = False
    tta: bool = False
    min_component: float = 0.0

    @classmethod
    def of_checkpoint(cls, ck: dict) -> "ScanSettings":
        """A checkpoint's settings: the head crop of its training (``train_config.head_crop``) or
        of its ``inference``, and that ``inference``'s test-time flips and component removal (a
        released file's; none in a training checkpoint)."""
        inf = ck.get("inference") or {}
        crop = (ck.get("train_config") or {}).get("head_crop", False) or inf.get("head_crop", False)
        return cls(bool(crop), bool(inf.get("tta", False)), float(inf.get("min_component", 0.0)))


def flip_mean(batch_probs, images_u8: np.ndarray) -> np.ndarray:
    """``predict_probabilities_tta``'s mean over the images and their two flips, for any
    ``batch_probs`` (uint8 (N,S,S) -> probabilities (N,S,S))."""
    out = batch_probs(images_u8)
    for axis in (-1, -2):
        out = out + np.flip(batch_probs(np.ascontiguousarray(np.flip(images_u8, axis))), axis)
    return (out / 3.0).astype(np.float32)


def scan_probability(batch_probs, image: np.ndarray, size: int, settings: ScanSettings,
                     threshold: float = 0.5, native_hw=None) -> np.ndarray:
    """The probability map of one uint8 scan at ``native_hw`` (default: its own size), made as
    the study's scoring makes it: cropped to the head (with ``head_crop``), resized to ``size``,
    ``batch_probs`` (with flips), small components removed, and put back in its native frame.
    ``image`` may be a reduced decoding of a scan of size ``native_hw`` (the box is scaled)."""
    from brainseg_lib.data.head_crop import crop, head_box, whole_box
    from brainseg_lib.data.images import resize_image
    box = head_box(image) if settings.head_crop else whole_box(image.shape)
    x = resize_image(np.ascontiguousarray(crop(image, box)), size)[None]
    prob = flip_mean(batch_probs, x) if settings.tta else batch_probs(x)
    if settings.min_component > 0:
        prob = drop_small_components(prob, threshold, settings.min_component)
    h, w = (int(v) for v in (native_hw or image.shape))
    sy, sx = h / image.shape[0], w / image.shape[1]
    native_box = (round(box[0] * sy), round(box[1] * sy), round(box[2] * sx), round(box[3] * sx))
    return to_native_frame(prob[0], h, w, native_box)
