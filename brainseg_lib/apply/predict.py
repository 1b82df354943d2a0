"""Segment your own scans: ``python -m brainseg_lib predict``.

Every input image is read as one uint8 grayscale channel (``images.read_grayscale``:
JPEG, PNG, TIFF, BMP; modes RGB, L, LA, P, RGBA, CMYK, 16-bit, ...), resized to
the checkpoint's ``train_config.image_size`` exactly as in training, passed
through the U-Net, and the tumour probability map is resized back to the
image's own width and height (bilinear, ``evaluate.to_native``) and thresholded.

Outputs, in the output folder, per input ``<stem>.<ext>``:

* ``<stem>_mask.png``: the binary mask at the input's size, 0 = background,
  255 = tumour (8-bit grayscale PNG);
* ``<stem>_overlay.png`` (with ``overlay=True``): the scan in gray with the
  tumour outline in red;
* one row of ``predictions.csv``: file, width, height, tumour_pixels,
  tumour_fraction, max_prob (the highest native-size probability), tumour
  (``yes`` when any pixel reaches the threshold), status (``ok``/``error``),
  error (the reason).

If several inputs share a stem (``scan.jpg`` and ``scan.png``), each of them
uses its whole name with dots made underscores instead (``scan_jpg_mask.png``).
A folder input means every file directly in it (not sub-folders; hidden
dot-files are ignored), in natural order. A file that is not an image of a
supported type, or cannot be decoded, is reported on stderr and in the CSV;
the other files are still processed.

Every file is written to a temp file and renamed into place. Existing outputs
are never overwritten unless ``force=True``; otherwise the run is refused
before anything is written.

The released model (``results/models/brainseg-cpu.pt``) is a slim checkpoint
(weights in fp16, the model and training configs, the metrics of the run it
came from) whose SHA-256 sits next to it in ``brainseg-cpu.pt.sha256``, in the
format of ``sha256sum`` (``<hex>  brainseg-cpu.pt``), and is checked on every
load. Like any checkpoint it is loaded with ``torch.load(weights_only=True)``.

``runtime="onnx"`` (``predict --runtime onnx``) runs the ONNX export of the model
(``results/models/brainseg-cpu.onnx``, written by ``python -m brainseg_lib export
--format onnx``, checked against its ``.onnx.sha256``) with onnxruntime on the CPU
instead of PyTorch; the resizing, thresholding and outputs are the same
(``apply.onnx_runtime``). ``checkpoint`` may then name the ``.onnx`` file, or a
``.pt`` whose export sits beside it as ``<stem>.onnx``.
"""
from __future__ import annotations

import csv
import io
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from brainseg_lib import paths
from brainseg_lib.apply import onnx_runtime
from brainseg_lib.apply.scans import (
    CSV_COLUMNS,
    MAX_PIXELS,
    SUPPORTED_SUFFIXES,
    PredictError,
    _fmt,
    _save_png,
    check_outputs,
    check_pixels,
    csv_safe,
    list_inputs,
    overlay_image,
    plan_outputs,
    printable,
)
from brainseg_lib.data import images
from brainseg_lib.data.errors import ImageReadError
from brainseg_lib.fileio import atomic_write as _atomic_write
from brainseg_lib.inference import predict_logits, resolve_device, to_native
from brainseg_lib.model.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    validate_image_size,
    validate_model_config,
)
from brainseg_lib.model.released import checksum_path, load_released, verify_checksum
from brainseg_lib.progress import progress_bar


class UnverifiedCheckpoint(UserWarning):
    """A checkpoint was loaded without a SHA-256 sidecar to verify it against."""


# ----------------------------------------------------------------------------- the predictor
@dataclass
class Predictor:
    """A U-Net ready for inference, with the input size it was trained at."""
    model: torch.nn.Module
    image_size: int
    device: torch.device
    source: Path

    def probabilities(self, image: np.ndarray, native_hw=None) -> np.ndarray:
        """Tumour probability (float32, ``native_hw`` or the image's own height x width) of one
        uint8 image."""
        x = torch.tensor(images.resize_image(image, self.image_size))[None]
        logits = predict_logits(self.model, x, self.device, batch_size=1,
                                channels_last=self.device.type != "mps")
        prob = torch.sigmoid(logits[0, 0]).numpy()
        return to_native(prob, *(native_hw or image.shape))


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
    """The released model (checksum verified) when ``checkpoint`` is None, else that file.

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
    return Predictor(model, size, dev, path)


RUNTIMES = ("torch", "onnx")


def load_onnx_predictor(checkpoint: str | Path | None = None, device: str = "auto"
                        ) -> onnx_runtime.OnnxPredictor:
    """The ONNX export (``onnx_runtime.onnx_model_path``) in an onnxruntime CPU session, its
    ``.sha256`` verified when present (else an UnverifiedCheckpoint warning)."""
    if device not in ("auto", "cpu", "cuda"):
        _device(device)                                   # an unknown name: the same message
    if device == "cuda":
        raise PredictError("--runtime onnx runs on the CPU (onnxruntime's CPU provider); "
                           "use --device cpu (or auto), or --runtime torch for CUDA")
    onnx_runtime.require_onnxruntime()
    path = onnx_runtime.onnx_model_path(checkpoint)
    if not path.is_file():
        raise PredictError(onnx_runtime.missing_model_message(path, checkpoint))
    if verify_or_warn(path):
        verify_checksum(path)
    return onnx_runtime.load_onnx_model(path, threads=torch.get_num_threads())


@dataclass
class PredictionRun:
    rows: list[dict]
    csv_path: Path
    out_dir: Path
    model: Path
    written: list[Path] = field(default_factory=list)

    @property
    def n_failed(self) -> int:
        return sum(r["status"] != "ok" for r in self.rows)

    @property
    def n_ok(self) -> int:
        return len(self.rows) - self.n_failed


def predict_file(predictor: Predictor, path: Path, threshold: float,
                 max_pixels: int | None = None, full_image: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """(gray image, bool mask, CSV row) of one file; raises ImageReadError if unreadable
    or larger than ``max_pixels`` (default MAX_PIXELS). Without ``full_image`` (no overlay to
    draw) a large JPEG is decoded at a reduced scale; the mask is still at native size."""
    if path.suffix.lower() not in images.IMAGE_SUFFIXES:
        raise ImageReadError(f"unsupported file type {path.suffix or '(none)'!r}: {path} "
                                  f"(supported: {', '.join(SUPPORTED_SUFFIXES)})")
    check_pixels(path, MAX_PIXELS if max_pixels is None else max_pixels)
    if full_image:
        image = images.read_grayscale(path, as_displayed=True)
        h, w = image.shape
    else:
        image, (h, w) = images.read_for_prediction(path, reduce_to=predictor.image_size)
    prob = predictor.probabilities(image, (h, w))
    mask = prob >= threshold
    n = int(mask.sum())
    row = {"file": path.name, "width": w, "height": h, "tumour_pixels": n,
           "tumour_fraction": _fmt(n / mask.size), "max_prob": _fmt(float(prob.max())),
           "tumour": "yes" if n else "no", "status": "ok", "error": ""}
    return image, mask, row


def run_predict(input_path: str | Path, output_dir: str | Path, checkpoint: str | Path | None = None,
                threshold: float = 0.5, overlay: bool = False, device: str = "auto",
                force: bool = False, progress: bool | None = None, stderr=None,
                max_pixels: int = MAX_PIXELS, runtime: str = "torch") -> PredictionRun:
    """Predict every input, write masks (and overlays) and ``predictions.csv``.

    Raises PredictError (before writing anything) for a bad threshold, a missing
    input, existing outputs without ``force``; CheckpointError for a model that
    is missing or fails its checksum. Per-file failures are reported on
    ``stderr`` and in the CSV and do not stop the run. ``runtime="onnx"`` runs the ONNX
    export with onnxruntime (see the module docstring); PredictError when it is missing.
    """
    stderr = stderr if stderr is not None else sys.stderr
    if not 0.0 <= float(threshold) <= 1.0:
        raise PredictError(f"--threshold must be between 0 and 1, got {threshold}")
    if runtime not in RUNTIMES:
        raise PredictError(f"unknown runtime {runtime!r}; choose torch or onnx")
    input_path, out_dir = Path(input_path), Path(output_dir)
    files = list_inputs(input_path)
    plan = plan_outputs(files, out_dir, overlay)
    check_outputs(plan, input_path, out_dir, force)
    predictor = (load_onnx_predictor if runtime == "onnx" else load_predictor)(checkpoint, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = PredictionRun([], plan.csv_path, out_dir, predictor.source)
    bar = progress_bar(files, desc="predicting", disable=None if len(files) > 1 else True)
    for f in bar:
        try:
            image, mask, row = predict_file(predictor, f, threshold, max_pixels, full_image=overlay)
            run.written.append(_save_png(mask.astype(np.uint8) * 255, plan.masks[f]))
            if overlay:
                run.written.append(_save_png(overlay_image(image, mask), plan.overlays[f]))
        except (ImageReadError, OSError) as e:
            reason = str(e).replace("\n", " ")
            row = {"file": f.name, **{c: "" for c in CSV_COLUMNS[1:7]},
                   "status": "error", "error": reason}
            from tqdm import tqdm
            tqdm.write(f"error: {printable(f.name)}: {printable(reason)}", file=stderr)
        run.rows.append(row)

    def write_csv(fh):
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows({k: csv_safe(v) for k, v in r.items()} for r in run.rows)
        fh.write(text.getvalue().encode("utf-8"))
    run.written.append(_atomic_write(plan.csv_path, write_csv))
    return run
