"""Run an exported ONNX model with onnxruntime (CPU provider): ``predict --runtime onnx``.

The graph written by ``brainseg_lib.model.onnx.export_onnx`` takes the float32
image ``(N, 1, S, S)`` in [0, 1] and returns ``probability`` (and ``logits``).
:class:`OnnxPredictor` feeds it exactly what the PyTorch path feeds the U-Net:
the scan (cropped to the head, flipped, cleaned of small components as the export's
``scan_settings`` say) through ``inference.scan_probability``, scaled by ``loaders.to_float``.
So masks from
both runtimes differ only by floating-point rounding inside the network (the
export is checked to agree within 1e-4 in probability).

onnxruntime is optional: without it, or without the exported file, loading
raises ``PredictError`` saying what to install or run. Every output is checked like the
PyTorch path's (``apply.models.check_output``: the input's shape, finite values), and a
model is probed once at load: an export whose output does not match its input (an 8x8 map
for a 64x64 image) or is NaN is refused with one line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from brainseg_lib.apply.models import ModelOutputError, check_output, memory_guard, probe
from brainseg_lib.apply.scans import PredictError
from brainseg_lib.data.loaders import to_float
from brainseg_lib.model.checkpoint import IMAGE_SIZE_RANGE
from brainseg_lib.model.onnx import (
    INPUT_NAME,
    OUTPUT_NAMES,
    onnx_path_for,
    released_onnx,
)
from brainseg_lib.model.released import checksum_path

EXPORT_HINT = "python -m brainseg_lib export --format onnx"


def require_onnxruntime():
    """The onnxruntime module, or PredictError saying how to get it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise PredictError("--runtime onnx needs onnxruntime, which is not installed: "
                           "pip install onnxruntime (or, from the project's checkout, "
                           "pip install -e '.[onnx]'), "
                           "or use --runtime torch") from e
    return onnxruntime


def onnx_model_path(checkpoint: str | Path | None = None) -> Path:
    """The .onnx file ``predict --runtime onnx`` uses: the released export for None, the file
    itself for a ``.onnx`` path, else the export beside a ``.pt`` (``<stem>.onnx``)."""
    if checkpoint is None:
        return released_onnx()
    path = Path(checkpoint)
    return path if path.suffix.lower() == ".onnx" else onnx_path_for(path)


def missing_model_message(path: Path, checkpoint: str | Path | None) -> str:
    hint = EXPORT_HINT
    if checkpoint is not None and Path(checkpoint).suffix.lower() != ".onnx":
        hint += f" --checkpoint {checkpoint}"
    return (f"the ONNX model {path} does not exist; export it first with `{hint}` "
            "(or use --runtime torch)")


def make_session(model: str | Path | bytes, threads: int | None = None):
    """An onnxruntime CPU session for a model file (or its bytes); ``threads`` intra-op threads
    (default: onnxruntime's choice)."""
    ort = require_onnxruntime()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3                       # errors only
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    src = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:      # onnxruntime raises its own (pybind) exception types
        name = "<bytes>" if isinstance(model, bytes) else model
        raise PredictError(f"cannot load the ONNX model {name}: {str(e).splitlines()[0]}; "
                           f"export it again with `{EXPORT_HINT}`") from e


def _image_size(session, meta: dict, path) -> int:
    """The model's input side, checked against its metadata and its input shape."""
    lo, hi = IMAGE_SIZE_RANGE
    try:
        size = int(meta["image_size"])
    except (KeyError, ValueError):
        raise PredictError(f"{path} has no image_size in its metadata, so it is not a brainseg "
                           f"export; export the model with `{EXPORT_HINT}`") from None
    inputs = session.get_inputs()
    outputs = {o.name for o in session.get_outputs()}
    shape = list(inputs[0].shape) if len(inputs) == 1 else None
    if not (lo <= size <= hi and size % 16 == 0 and inputs[0].name == INPUT_NAME
            and shape is not None and len(shape) == 4 and shape[1:] == [1, size, size]
            and OUTPUT_NAMES[0] in outputs):
        raise PredictError(f"{path}: expected one input {INPUT_NAME!r} of shape (N, 1, {size}, {size}) "
                           f"and an output {OUTPUT_NAMES[0]!r}; got inputs "
                           f"{[(i.name, i.shape) for i in inputs]}, outputs {sorted(outputs)}")
    return size


def check_not_stale(path: Path, meta: dict) -> None:
    """Refuse an export whose recorded source differs from the checksummed ``.pt`` beside it
    (the checkpoint was re-released but not re-exported)."""
    recorded = meta.get("source_checkpoint_sha256", "")
    name = meta.get("source_checkpoint")
    side = checksum_path(path.with_name(name)) if name and Path(name).name == name else None
    if not recorded or side is None or not side.is_file():
        return
    current = side.read_text(encoding="ascii", errors="replace").split()[:1]
    if current and current[0].lower() != recorded.lower():
        raise PredictError(f"{path} was exported from an older {name} (SHA-256 {recorded[:12]}..., "
                           f"now {current[0][:12]}...); export it again with `{EXPORT_HINT}`")


@dataclass
class OnnxPredictor:
    """An onnxruntime session with the U-Net's input size; the same interface as ``Predictor``."""
    session: object
    image_size: int
    source: Path
    metadata: dict = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    sha256: str = ""

    def __post_init__(self):
        # read (and checked: PredictError naming the file) once, when the predictor is made
        self.settings = scan_settings(self.metadata, self.source)
        self.threshold = float(self.metadata.get("threshold", 0.5))

    def batch_probabilities(self, images_u8: np.ndarray) -> np.ndarray:
        """Tumour probabilities (N, S, S) float32 of uint8 images (N, S, S) at the model's size,
        checked (``check_output``)."""
        x = to_float(torch.tensor(np.asarray(images_u8, dtype=np.uint8))[:, None])   # a copy, as Predictor
        try:
            with memory_guard():    # MemoryError, or an allocator's words (MEMORY_WORDS)
                out = self.session.run([OUTPUT_NAMES[0]], {INPUT_NAME: x.numpy()})[0]
        except ModelOutputError:
            raise
        except Exception as e:      # onnxruntime's own (pybind) exception types
            raise ModelOutputError(f"onnxruntime failed on this scan: {str(e).splitlines()[0][:200]}") from None
        return check_output(out, tuple(x.shape), self.source)[:, 0]

    def probabilities(self, image: np.ndarray, native_hw=None) -> np.ndarray:
        """Tumour probability (float32, ``native_hw`` or the image's own height x width) of one
        uint8 image: the same steps as ``Predictor.probabilities``, with the settings the export
        recorded (``scan_settings``; none recorded: the plain resize)."""
        from brainseg_lib.inference import scan_probability
        return scan_probability(self.batch_probabilities, image, self.image_size, self.settings,
                                self.threshold, native_hw)


def scan_settings(meta: dict, path: Path):
    """The ``inference.ScanSettings`` an export records (``scan_settings``; none: the plain
    resize), or PredictError naming the file when they cannot be read."""
    import json
    from dataclasses import fields

    from brainseg_lib.inference import ScanSettings
    try:
        given = json.loads(meta.get("scan_settings") or "{}")
        known = {f.name for f in fields(ScanSettings)}
        if not isinstance(given, dict) or set(given) - known:
            raise ValueError(f"keys {sorted(given) if isinstance(given, dict) else given!r}, "
                             f"known: {sorted(known)}")
        return ScanSettings(**given)
    except ValueError as e:
        raise PredictError(f"{path}: unreadable scan_settings in its metadata ({e}); export the "
                           f"model again with `{EXPORT_HINT}`") from None


def load_onnx_model(path: str | Path, threads: int | None = None) -> OnnxPredictor:
    """An OnnxPredictor for an exported file (its checksum is the caller's business), probed
    (``apply.models.probe``) before it is returned."""
    path = Path(path)
    if not path.is_file():
        raise PredictError(missing_model_message(path, None))
    session = make_session(path, threads)
    meta = dict(session.get_modelmeta().custom_metadata_map)
    size = _image_size(session, meta, path)
    check_not_stale(path, meta)
    predictor = OnnxPredictor(session, size, path, meta)      # unreadable scan_settings: refused here
    probe(predictor)
    return predictor
