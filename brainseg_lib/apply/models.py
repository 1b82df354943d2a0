"""The models ``predict`` runs, and their outputs checked before they are trusted.

``load_predictor`` (PyTorch) and ``load_onnx_predictor`` (onnxruntime, ``apply.onnx_runtime``)
give an object with ``image_size``, ``source``, ``sha256`` and ``probabilities(image,
native_hw)``. Every probability map a model returns is checked (``check_output``): it must
have the input's shape and hold finite values, else the scan gets an error row
(``ModelOutputError``), never "no tumour" from a NaN. Each model is also run once at load on a
probe image (``probe``): a model whose output is NaN, infinite or of the wrong shape there is
refused before anything is written. A scan whose forward pass runs out of memory is an error
of that scan only.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from brainseg_lib import paths
from brainseg_lib.apply.scans import PredictError
from brainseg_lib.data.cache import sha256_file
from brainseg_lib.inference import ScanSettings, checkpoint_threshold, predict_logits, resolve_device, scan_probability
from brainseg_lib.model.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    validate_image_size,
    validate_model_config,
)
from brainseg_lib.model.released import checksum_path, load_released, verify_checksum

RUNTIMES = ("torch", "onnx")
MEMORY_WORDS = ("out of memory", "not enough memory", "failed to allocate", "bad_alloc")


class UnverifiedCheckpoint(UserWarning):
    """A checkpoint was loaded without a SHA-256 sidecar to verify it against."""


class ModelOutputError(ValueError):
    """The model's output for one scan cannot be trusted (non-finite, wrong shape) or could
    not be computed (out of memory): an error row for that scan."""


def check_output(prob: np.ndarray, expected: tuple, source: Path) -> np.ndarray:
    """``prob`` if it has the ``expected`` shape and only finite values, else ModelOutputError."""
    if tuple(prob.shape) != tuple(expected):
        raise ModelOutputError(f"the model {source.name} returned probabilities of shape "
                               f"{tuple(prob.shape)} where {tuple(expected)} was expected")
    if not np.isfinite(prob).all():
        raise ModelOutputError(f"the model {source.name} returned NaN or infinite probabilities "
                               "for this scan; the model file may be damaged or tampered with")
    return prob


@contextlib.contextmanager
def memory_guard():
    """Turn running out of memory inside a forward pass into ModelOutputError (one scan)."""
    try:
        yield
    except MemoryError:
        raise ModelOutputError("out of memory while running the model on this scan") from None
    except RuntimeError as e:           # torch's CPU and CUDA allocators raise RuntimeError
        if not any(w in str(e).lower() for w in MEMORY_WORDS):
            raise
        raise ModelOutputError("out of memory while running the model on this scan: "
                               f"{str(e).splitlines()[0][:200]}") from None


def probe_image(size: int) -> np.ndarray:
    """A deterministic, non-uniform uint8 test image (size x size) for ``probe``."""
    yy, xx = np.mgrid[:size, :size]
    return ((yy * 7 + xx * 3) % 256).astype(np.uint8)


def probe(predictor) -> None:
    """Refuse (PredictError, one line) a model whose output on ``probe_image`` is not a finite
    map of the input's shape, before any output is written."""
    try:
        predictor.probabilities(probe_image(predictor.image_size))
    except ModelOutputError as e:
        raise PredictError(f"refusing the model {predictor.source}: on a probe image {e}") from None


# ----------------------------------------------------------------------------- the predictor
@dataclass
class Predictor:
    """A U-Net (or a seed ensemble) ready for inference, with the input size it was trained at
    and how its maps become a scan's (``inference.ScanSettings``: head crop, flips, component
    removal at ``threshold``), as the checkpoint records them."""
    model: torch.nn.Module
    image_size: int
    device: torch.device
    source: Path
    sha256: str = ""
    settings: ScanSettings = field(default_factory=ScanSettings)
    threshold: float = 0.5

    def batch_probabilities(self, images_u8: np.ndarray) -> np.ndarray:
        """Tumour probabilities (N, S, S) float32 of uint8 images (N, S, S) at the model's size,
        checked (``check_output``)."""
        x = torch.tensor(np.asarray(images_u8, dtype=np.uint8))
        with memory_guard():
            # channels_last only on CUDA: on the CPU it saves nothing for one image and its
            # first call costs ~0.5 s of oneDNN set-up (the logits are the same)
            logits = predict_logits(self.model, x, self.device, batch_size=max(1, len(x)),
                                    channels_last=self.device.type == "cuda")
        prob = torch.sigmoid(logits[:, 0]).numpy()
        return check_output(prob, tuple(x.shape), self.source)

    def probabilities(self, image: np.ndarray, native_hw=None) -> np.ndarray:
        """Tumour probability (float32, ``native_hw`` or the image's own height x width) of one
        uint8 image (``inference.scan_probability`` with the model's settings)."""
        return scan_probability(self.batch_probabilities, image, self.image_size, self.settings,
                                self.threshold, native_hw)


def _device(name: str) -> torch.device:
    if name not in ("auto", "cpu", "cuda"):
        raise PredictError(f"unknown device {name!r}; choose auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise PredictError("--device cuda was asked for but CUDA is not available here; "
                           "use --device cpu (or auto)")
    return resolve_device(name)


def verify_or_warn(path: Path) -> bool:
    """True when ``path`` has a ``.sha256`` beside it (the caller verifies it); otherwise warn
    loudly (``UnverifiedCheckpoint``) that its integrity is not verified, and return False.
    The documented choice: such a file is still used."""
    if checksum_path(path).is_file():
        return True
    warnings.warn(f"{path} has no {checksum_path(path).name} beside it, so its integrity was NOT "
                  "verified; use it only if you trust where it came from", UnverifiedCheckpoint,
                  stacklevel=3)
    return False


def load_predictor(checkpoint: str | Path | None = None, device: str = "auto") -> Predictor:
    """The released model (checksum verified) when ``checkpoint`` is None, else that file,
    probed (``probe``) before it is returned.

    A given checkpoint with a ``.sha256`` file next to it is verified too.
    """
    dev = _device(device)
    if checkpoint is None:
        path = paths.released_model()
        ck = load_released(path)
    else:
        path = Path(checkpoint)
        ck = load_released(path) if verify_or_warn(path) else load_checkpoint(path)
    validate_model_config(ck.get("model_config"), path)      # before anything is allocated
    size = validate_image_size(ck.get("train_config"), path)
    model = model_from_checkpoint(ck, path).to(dev)
    predictor = Predictor(model, size, dev, path, sha256_file(path), ScanSettings.of_checkpoint(ck),
                          checkpoint_threshold(ck))
    probe(predictor)
    return predictor


def load_onnx_predictor(checkpoint: str | Path | None = None, device: str = "auto"):
    """The ONNX export (``onnx_runtime.onnx_model_path``) in an onnxruntime CPU session, its
    ``.sha256`` verified when present (else an UnverifiedCheckpoint warning), probed at load."""
    from brainseg_lib.apply import onnx_runtime
    if device not in ("auto", "cpu", "cuda"):
        _device(device)                                   # an unknown name: the same message
    if device == "cuda":
        raise PredictError("--runtime onnx runs on the CPU (onnxruntime's CPU provider); "
                           "use --device cpu (or auto), or --runtime torch for CUDA")
    onnx_runtime.require_onnxruntime()
    path = onnx_runtime.onnx_model_path(checkpoint)
    if not path.is_file():
        raise PredictError(onnx_runtime.missing_model_message(path, checkpoint))
    digest = verify_checksum(path) if verify_or_warn(path) else sha256_file(path)
    predictor = onnx_runtime.load_onnx_model(path, threads=torch.get_num_threads())
    predictor.sha256 = digest
    return predictor
