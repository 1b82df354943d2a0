"""Export a checkpoint to ONNX: ``python -m brainseg_lib export --format onnx``.

The exported graph is the whole model as ``predict`` runs it, in fp32:

* input ``image``: float32 ``(N, 1, S, S)``, the grayscale scan resized to S x S
  (``data.images.resize_image``, PIL bilinear) as uint8 and divided by 255, so in
  [0, 1] - the very tensor the PyTorch model gets (``data.loaders.to_float``). The
  batch axis ``N`` is dynamic; S is the checkpoint's ``train_config.image_size``.
  The per-image input normalisation (``model_config.input_norm``, e.g. ``zscore``)
  is part of the U-Net and so part of the graph: do not normalise before feeding it;
* outputs ``probability`` (sigmoid of the logits, what ``predict`` thresholds) and
  ``logits``, both float32 ``(N, 1, S, S)``.

A tumour pixel is ``probability >= threshold`` (``train_config.threshold``, 0.5),
after resizing the probability map back to the scan's own size (bilinear,
``inference.to_native``). The model's ``metadata_props`` record all of this
(``image_size``, ``input_range``, ``input_norm``, ``threshold``, ``outputs``), the
source checkpoint's name and SHA-256, and the exporter used. Per-node debugging
metadata (Python stack traces with local paths) is stripped, so the same weights
give the same bytes (and SHA-256) on any machine.

The released checkpoint stores fp16 weights; ``model_from_checkpoint`` turns them
back into fp32, so the ONNX weights are exactly the fp32 values the PyTorch path
computes with. The file is written atomically with ``<name>.sha256`` beside it
(``sha256sum`` format, like the released ``.pt``); ``predict --runtime onnx``
checks it on load. When onnxruntime is installed the export is checked against
PyTorch on a small batch before anything is written.
"""
from __future__ import annotations

import io
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from brainseg_lib import paths
from brainseg_lib.data.cache import sha256_file
from brainseg_lib.fileio import atomic_write
from brainseg_lib.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    validate_image_size,
)
from brainseg_lib.model.released import checksum_path, load_released, write_checksum

OPSET = 18                     # onnxruntime >= 1.14 runs it
INPUT_NAME = "image"
OUTPUT_NAMES = ("probability", "logits")
FORMAT_VERSION = "1"           # bump when the graph's inputs/outputs/metadata change meaning
SELF_CHECK_TOL = 1e-4          # max |probability(onnx) - probability(torch)| accepted at export


class OnnxExportError(RuntimeError):
    """The model could not be exported (missing exporter package, failed check, bad path)."""


class ProbabilityUNet(nn.Module):
    """The U-Net with its sigmoid: ``image -> (probability, logits)``."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.unet(image)
        return torch.sigmoid(logits), logits


def onnx_path_for(model_path: str | Path) -> Path:
    """Where the ONNX export of ``model_path`` goes: ``<stem>.onnx`` beside it."""
    return Path(model_path).with_suffix(".onnx")


def released_onnx() -> Path:
    """The released model's ONNX export, ``results/models/brainseg-cpu.onnx``."""
    return onnx_path_for(paths.released_model())


def _load_source(checkpoint) -> tuple[dict, Path]:
    """The checkpoint dict and its path; a released one (or any with a .sha256) is verified."""
    if checkpoint is None:
        path = paths.released_model()
        return load_released(path), path
    path = Path(checkpoint)
    if checksum_path(path).is_file():
        return load_released(path), path
    return load_checkpoint(path), path


def _export_dynamo(wrapper: nn.Module, example: torch.Tensor):
    """The ONNX ModelProto from the torch.export-based exporter (needs onnxscript)."""
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)      # "torchvision is not installed. Skipping ..." noise
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
            program = torch.onnx.export(
                wrapper, (example,), dynamo=True, opset_version=OPSET, input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES), dynamic_shapes={"image": {0: torch.export.Dim("batch")}},
                optimize=True, verbose=False)
    finally:
        registry_log.setLevel(level)
    return program.model_proto


def _export_torchscript(wrapper: nn.Module, example: torch.Tensor):
    """The ONNX ModelProto from the legacy TorchScript exporter (no onnxscript needed)."""
    import onnx
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # its deprecation notice and trace warnings
        torch.onnx.export(
            wrapper, (example,), buf, dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={n: {0: "batch"} for n in (INPUT_NAME, *OUTPUT_NAMES)})
    return onnx.load_from_string(buf.getvalue())


def _require_onnx():
    """The onnx package (both exporters build an onnx ModelProto), or OnnxExportError."""
    try:
        import onnx
    except ImportError as e:
        raise OnnxExportError("exporting to ONNX needs the onnx package: "
                              "pip install onnx onnxscript (or, from the project's checkout, "
                              "pip install -e '.[onnx]')") from e
    return onnx


def export_model_proto(model: nn.Module, image_size: int, exporter: str = "auto"):
    """(ONNX ModelProto, exporter used) of ``model`` (a UNet, fp32, eval) with its sigmoid.

    ``exporter``: ``dynamo`` (torch.onnx.export(dynamo=True), the maintained exporter,
    needs onnxscript), ``torchscript`` (the legacy one), or ``auto``: dynamo, falling
    back to torchscript when onnxscript is not installed.
    """
    _require_onnx()
    wrapper = ProbabilityUNet(model.float().eval()).eval()
    example = torch.zeros(2, model.in_channels, image_size, image_size)
    if exporter in ("auto", "dynamo"):
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            if exporter == "dynamo":
                raise OnnxExportError("the dynamo exporter needs onnxscript: pip install onnxscript")
        else:
            return _export_dynamo(wrapper, example), "torch.onnx.export(dynamo=True)"
    elif exporter != "torchscript":
        raise ValueError(f"unknown exporter {exporter!r}; choose auto, dynamo or torchscript")
    return _export_torchscript(wrapper, example), "torch.onnx.export(dynamo=False) (TorchScript)"


def _strip_debug_metadata(proto) -> None:
    """Drop per-node metadata (stack traces with local file paths, FX node text)."""
    graphs = [proto.graph] + [f for f in proto.functions]
    for g in graphs:
        for node in g.node:
            del node.metadata_props[:]
    for vi in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output):
        del vi.metadata_props[:]
    for init in proto.graph.initializer:
        del init.metadata_props[:]


def model_metadata(ck: dict, source: Path, source_sha256: str, exporter: str) -> dict[str, str]:
    """The ``metadata_props`` written into the ONNX file (all values are strings)."""
    size = validate_image_size(ck.get("train_config"), source)
    cfg = dict(ck["model_config"])
    from brainseg_lib.inference import checkpoint_threshold
    threshold = checkpoint_threshold(ck)
    return {
        "brainseg.format_version": FORMAT_VERSION,
        "image_size": str(size),
        "input": f"{INPUT_NAME}: float32 (N, {cfg['in_channels']}, {size}, {size}), grayscale uint8 "
                 f"resized to {size}x{size} (PIL bilinear) divided by 255; N is dynamic",
        "input_range": "[0, 1]",
        "input_norm": f"{cfg.get('input_norm', 'none')} (inside the graph; feed the [0, 1] image as is)",
        "outputs": "probability: float32 (N, 1, S, S) = sigmoid(logits); logits: float32 (N, 1, S, S)",
        "threshold": repr(float(threshold)),
        "postprocess": "resize probability to the scan's size (bilinear, align_corners=False), "
                       "tumour where probability >= threshold",
        "model_config": json.dumps(cfg, sort_keys=True),
        "source_checkpoint": source.name,
        "source_checkpoint_sha256": source_sha256,
        "source_weights_dtype": str(ck.get("weights_dtype", "float32")),
        "weights_dtype": "float32",
        "exporter": exporter,
        "torch_version": torch.__version__.split("+")[0],
        "opset": str(OPSET),
        **scan_settings_metadata(ck),
    }


def scan_settings_metadata(ck: dict) -> dict[str, str]:
    """``scan_settings``: the head crop, flips and component removal the checkpoint records
    (``inference.ScanSettings``), only when any differs from the plain resize."""
    from dataclasses import asdict

    from brainseg_lib.inference import ScanSettings
    settings = ScanSettings.of_checkpoint(ck)
    if settings == ScanSettings():
        return {}
    return {"scan_settings": json.dumps(asdict(settings), sort_keys=True),
            "postprocess": "as brainseg_lib.inference.scan_probability with scan_settings: crop the scan "
                           "to its head's box first (head_crop), average the maps of the scan and its two "
                           "flips (tta), drop predicted components under min_component of the input, then "
                           "resize the probability back to the box (bilinear, align_corners=False) and "
                           "paste it into an empty frame; tumour where probability >= threshold"}


def self_check(data: bytes, model: nn.Module, image_size: int, tol: float = SELF_CHECK_TOL) -> float | None:
    """Max |probability| difference ONNX vs PyTorch on a batch of 3 random uint8-derived images
    (None when onnxruntime is not installed); raises OnnxExportError above ``tol``."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, model.in_channels, image_size, image_size), generator=gen,
                      dtype=torch.uint8).float().div_(255.0)
    with torch.inference_mode():
        ref = torch.sigmoid(model.eval()(x)).numpy()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAMES[0]], {INPUT_NAME: x.numpy()})[0]
    diff = float(np.abs(got - ref).max())
    if not diff <= tol:
        raise OnnxExportError(f"the exported model disagrees with PyTorch: max |probability "
                              f"difference| {diff:.3g} > {tol:g}; nothing was written")
    return diff


def export_onnx(checkpoint: str | Path | None = None, dest: str | Path | None = None,
                exporter: str = "auto") -> Path:
    """Export ``checkpoint`` (default: the released model, SHA-256 verified) to ONNX at
    ``dest`` (default: ``<checkpoint stem>.onnx`` beside it, i.e. results/models/brainseg-cpu.onnx),
    with ``<dest>.sha256``; see the module docstring. Returns ``dest``."""
    onnx = _require_onnx()
    ck, source = _load_source(checkpoint)
    dest = Path(dest) if dest is not None else onnx_path_for(source)
    if dest.resolve() == source.resolve() or dest.resolve() == checksum_path(source).resolve():
        raise OnnxExportError(f"--output {dest} would overwrite the checkpoint it is exported from")
    size = validate_image_size(ck.get("train_config"), source)
    model = model_from_checkpoint(ck, source)                    # fp16 weights -> fp32
    proto, used = export_model_proto(model, size, exporter)
    _strip_debug_metadata(proto)
    meta = model_metadata(ck, source, sha256_file(source), used)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta)
    proto.doc_string = "brainseg U-Net tumour segmentation; see metadata_props for the input/output contract"
    data = proto.SerializeToString()
    self_check(data, model, size)
    atomic_write(dest, lambda f: f.write(data))
    write_checksum(dest)
    return dest


# ----------------------------------------------------------------------------- command line
def add_export_parser(subparsers) -> None:
    """Add ``export`` to the CLI's sub-parsers (``main`` calls ``args.fn(args)``)."""
    ex = subparsers.add_parser(
        "export", help="export the released model (or --checkpoint) to ONNX for onnxruntime",
        description="Export a checkpoint to ONNX (fp32, dynamic batch axis). Input 'image': float32 "
                    "(N, 1, S, S), the scan resized to S x S, uint8 / 255 in [0, 1]; outputs "
                    "'probability' and 'logits' (N, 1, S, S). Writes <name>.onnx and <name>.onnx.sha256.")
    ex.add_argument("--format", default="onnx", choices=["onnx"], help="export format (only onnx)")
    ex.add_argument("--checkpoint", default=None, metavar="PATH",
                    help="checkpoint to export (default: the released results/models/brainseg-cpu.pt, "
                         "checked against its .sha256)")
    ex.add_argument("--output", default=None, metavar="PATH",
                    help="the .onnx file to write (default: <checkpoint stem>.onnx beside the checkpoint)")
    ex.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "torchscript"],
                    help="torch.onnx exporter: dynamo (needs onnxscript), the legacy torchscript one, "
                         "or auto = dynamo if onnxscript is installed (default)")
    ex.set_defaults(fn=cmd_export)


def cmd_export(args) -> int:
    """``export``: 0 when written, 2 when refused (the reason on stderr)."""
    try:
        out = export_onnx(args.checkpoint, args.output, exporter=getattr(args, "exporter", "auto"))
    except (OnnxExportError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    digest = checksum_path(out).read_text(encoding="ascii").split()[0]
    print(f"wrote {out} ({out.stat().st_size:,} bytes, sha256 {digest}) and {checksum_path(out).name}")
    return 0
