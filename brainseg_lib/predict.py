"""Segment your own scans: ``python -m brainseg_lib predict``.

Every input image is read as one uint8 grayscale channel (``data.read_grayscale``:
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
from PIL import Image

from . import data, paths
from .checkpoint import (CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint,
                         validate_image_size, validate_model_config)
from .evaluate import to_native
from .fileio import atomic_write as _atomic_write
from .progress import progress_bar
from .train import predict_logits, resolve_device

RELEASED_MODEL = paths.PROJECT_ROOT / "results" / "models" / "brainseg-cpu.pt"
CSV_NAME = "predictions.csv"
CSV_COLUMNS = ["file", "width", "height", "tumour_pixels", "tumour_fraction", "max_prob",
               "tumour", "status", "error"]
SUPPORTED_SUFFIXES = tuple(sorted(data.IMAGE_SUFFIXES))
OUTLINE_RGB = (255, 0, 0)
MAX_PIXELS = 50_000_000    # default --max-pixels: larger scans are refused per file, before decoding
FP16_MAX = 65504.0



class PredictError(ValueError):
    """A prediction run that cannot start (bad arguments, inputs or output folder)."""


class UnverifiedCheckpoint(UserWarning):
    """A checkpoint was loaded without a SHA-256 sidecar to verify it against."""


class OutputExistsError(PredictError):
    """Outputs already exist and ``force`` was not given."""


def _save_png(array: np.ndarray, path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return _atomic_write(path, lambda f: f.write(buf.getvalue()))


# ----------------------------------------------------------------------------- released model
def checksum_path(model_path: str | Path) -> Path:
    """``<model>.sha256``, the checksum file next to a released model."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".sha256")


def _sha256(path: Path) -> str:
    return data.sha256_file(path)


def release_model(src_checkpoint: str | Path, dest: str | Path | None = None,
                  fp16: bool = True) -> Path:
    """Write a slim copy of a training checkpoint for users, plus its ``.sha256``.

    Kept: ``state_dict`` (floating tensors cast to fp16 when ``fp16``, except a
    tensor whose values fp16 cannot hold, which stays fp32), ``model_config``,
    ``train_config``, ``metrics``. Dropped: optimiser state, history, raw
    training weights of EMA runs. Both files are written atomically. ``dest``
    defaults to RELEASED_MODEL.
    """
    src = Path(src_checkpoint)
    dest = Path(dest) if dest is not None else RELEASED_MODEL
    ck = load_checkpoint(src)
    model_from_checkpoint(ck, src)            # the weights must fit the architecture
    tcfg = ck.get("train_config")
    if not isinstance(tcfg, dict) or "image_size" not in tcfg:
        raise CheckpointError(f"{src} has no train_config.image_size; cannot release it")
    state = {}
    for k, v in ck["state_dict"].items():
        v = v.detach().cpu()
        if fp16 and v.is_floating_point() and v.dtype != torch.float16:
            finite = bool(torch.isfinite(v).all())
            if finite and (v.numel() == 0 or float(v.abs().max()) <= FP16_MAX):
                v = v.to(torch.float16)
        state[k] = v.clone()
    slim = {
        "state_dict": state,
        "model_config": dict(ck["model_config"]),
        "train_config": dict(tcfg),
        # clock times stay out, so the same weights give the same file (and SHA-256) anywhere
        "metrics": {k: v for k, v in (ck.get("metrics") or {}).items() if not k.endswith("_seconds")},
        "released_from": src.name,
        "weights_dtype": "float16" if fp16 else "float32",
    }
    save_checkpoint(slim, dest)
    digest = _sha256(dest)
    _atomic_write(checksum_path(dest), lambda f: f.write(f"{digest}  {dest.name}\n".encode()))
    return dest


def verify_checksum(path: str | Path) -> str:
    """Check ``path`` against its ``.sha256`` file; return the digest or raise CheckpointError."""
    path = Path(path)
    side = checksum_path(path)
    if not side.is_file():
        raise CheckpointError(f"{path} has no checksum file {side.name}, so it cannot be verified; "
                              "re-release it with brainseg_lib.predict.release_model")
    try:
        expected = side.read_text(encoding="ascii").split()[0].lower()
    except (UnicodeDecodeError, IndexError) as e:
        raise CheckpointError(f"{side} is not a SHA-256 checksum file "
                              "(expected '<64 hex digits>  <file name>')") from e
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise CheckpointError(f"{side} is not a SHA-256 checksum file "
                              "(expected '<64 hex digits>  <file name>')")
    actual = _sha256(path)
    if actual != expected:
        raise CheckpointError(
            f"{path}: SHA-256 mismatch: {side.name} records {expected}, the file has {actual}. "
            "The file was modified or corrupted after release; restore it (git checkout "
            "results/models/) or release it again.")
    return actual


def load_released(path: str | Path | None = None) -> dict:
    """Load a released model after checking its SHA-256 (``weights_only=True`` load)."""
    path = Path(path) if path is not None else RELEASED_MODEL
    if not path.is_file():
        raise CheckpointError(
            f"the released model {path} does not exist yet. Pass --checkpoint PATH with a "
            "checkpoint you trained (e.g. results/runs/<run>/best.pt), or run ./run_all.sh "
            "to train the model and release it.")
    verify_checksum(path)
    return load_checkpoint(path)


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
        x = torch.tensor(data.resize_image(image, self.image_size))[None]
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


def load_predictor(checkpoint: str | Path | None = None, device: str = "auto") -> Predictor:
    """The released model (checksum verified) when ``checkpoint`` is None, else that file.

    A given checkpoint with a ``.sha256`` file next to it is verified too.
    """
    dev = _device(device)
    if checkpoint is None:
        path = RELEASED_MODEL
        ck = load_released(path)
    else:
        path = Path(checkpoint)
        if checksum_path(path).is_file():
            ck = load_released(path)
        else:
            # documented choice: load, but say loudly what was not verified
            warnings.warn(f"{path} has no {checksum_path(path).name} beside it, so its integrity was NOT "
                          "verified; use it only if you trust where it came from", UnverifiedCheckpoint,
                          stacklevel=2)
            ck = load_checkpoint(path)
    validate_model_config(ck.get("model_config"), path)      # before anything is allocated
    size = validate_image_size(ck.get("train_config"), path)
    model = model_from_checkpoint(ck, path).to(dev)
    return Predictor(model, size, dev, path)


# ----------------------------------------------------------------------------- inputs and outputs
def list_inputs(input_path: str | Path) -> list[Path]:
    """The file itself, or every non-hidden file directly in a folder, in natural order."""
    p = Path(input_path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
        if not files:
            raise PredictError(f"no files to predict in {p}")
        return sorted(files, key=lambda f: data._natural_key(f.name))
    raise FileNotFoundError(f"input not found: {p}")


def output_stems(files: list[Path]) -> dict[Path, str]:
    """Output stem per input: its stem, or its name with '.' -> '_' where stems collide."""
    counts: dict[str, int] = {}
    for f in files:
        counts[f.stem.casefold()] = counts.get(f.stem.casefold(), 0) + 1
    stems, used = {}, set()
    for f in files:
        s = f.stem if counts[f.stem.casefold()] == 1 else f.name.replace(".", "_")
        base, i = s, 2
        while s.casefold() in used:
            s, i = f"{base}_{i}", i + 1
        used.add(s.casefold())
        stems[f] = s
    return stems


@dataclass
class Plan:
    files: list[Path]
    masks: dict[Path, Path]
    overlays: dict[Path, Path]
    csv_path: Path

    def all_outputs(self) -> list[Path]:
        return [*self.masks.values(), *self.overlays.values(), self.csv_path]


def plan_outputs(files: list[Path], out_dir: Path, overlay: bool) -> Plan:
    stems = output_stems(files)
    images = [f for f in files if f.suffix.lower() in data.IMAGE_SUFFIXES]
    masks = {f: out_dir / f"{stems[f]}_mask.png" for f in images}
    overlays = {f: out_dir / f"{stems[f]}_overlay.png" for f in images} if overlay else {}
    return Plan(files, masks, overlays, out_dir / CSV_NAME)


def check_outputs(plan: Plan, input_path: Path, out_dir: Path, force: bool) -> None:
    """Refuse outputs that would land on inputs or in the input's folder, and existing
    outputs unless ``force``."""
    in_folder = input_path if input_path.is_dir() else input_path.parent
    if out_dir.exists() and in_folder.resolve() == out_dir.resolve():
        raise PredictError(f"the output folder is the input folder ({out_dir}); choose another "
                           "--output, or the outputs would be read as inputs next time")
    if out_dir.exists() and not out_dir.is_dir():
        raise PredictError(f"--output {out_dir} exists and is not a folder")
    inputs = {f.resolve() for f in plan.files}
    clash = [o for o in plan.all_outputs() if o.resolve() in inputs]
    if clash:
        raise PredictError(f"an output would overwrite an input: {clash[0]}")
    existing = [o for o in plan.all_outputs() if o.exists()]
    if existing and not force:
        shown = ", ".join(o.name for o in existing[:5])
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        raise OutputExistsError(
            f"refusing to overwrite {len(existing)} existing output file(s) in {out_dir}: "
            f"{shown}{more}. Pass --force to overwrite them, or choose another --output.")


def overlay_image(gray: np.ndarray, mask: np.ndarray, color=OUTLINE_RGB) -> np.ndarray:
    """The scan as RGB with the mask's outline drawn in ``color`` (uint8 H x W x 3).

    The outline is the mask's inner boundary (a mask pixel with a background pixel among its
    4 neighbours; the image edge counts as background), thickened to about 1 pixel per 256
    pixels of the shorter side by a running maximum along each axis. Every step is an array
    operation whose time is linear in the number of pixels (a 5000x5000 scan takes well
    under a second).
    """
    from scipy.ndimage import maximum_filter1d
    m = np.asarray(mask, dtype=bool)
    p = np.pad(m, 1)
    interior = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    edge = m & ~interior
    width = max(1, round(min(m.shape) / 256))
    if width > 1 and edge.any():
        size = 2 * (width - 1) + 1
        edge = maximum_filter1d(maximum_filter1d(edge.view(np.uint8), size, axis=0), size, axis=1).astype(bool)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgb[edge] = color
    return rgb


CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """A CSV cell that a spreadsheet will not run as a formula: text starting with = + - @,
    tab or carriage return gets a leading apostrophe (OWASP, CSV injection)."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START):
        return "'" + value
    return value


def printable(text: str) -> str:
    """``text`` with control characters (terminal escape codes among them) shown as escapes."""
    return "".join(ch if ch.isprintable() else
                   (f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}") for ch in str(text))


def _fmt(x: float) -> float:
    return float(f"{x:.6g}")


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


def check_pixels(path: Path, max_pixels: int) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` pixels, before decoding
    it (a small PNG can hold a huge image)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:          # unreadable files are reported by read_grayscale with the reason
        return
    if w * h > max_pixels:
        raise data.ImageReadError(f"{path} is {w}x{h} = {w * h / 1e6:.1f} megapixels, over the limit of "
                                  f"{max_pixels / 1e6:g} (raise it with --max-pixels if you mean it)")


def predict_file(predictor: Predictor, path: Path, threshold: float,
                 max_pixels: int = None, full_image: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """(gray image, bool mask, CSV row) of one file; raises data.ImageReadError if unreadable
    or larger than ``max_pixels`` (default MAX_PIXELS). Without ``full_image`` (no overlay to
    draw) a large JPEG is decoded at a reduced scale; the mask is still at native size."""
    if path.suffix.lower() not in data.IMAGE_SUFFIXES:
        raise data.ImageReadError(f"unsupported file type {path.suffix or '(none)'!r}: {path} "
                                  f"(supported: {', '.join(SUPPORTED_SUFFIXES)})")
    check_pixels(path, MAX_PIXELS if max_pixels is None else max_pixels)
    if full_image:
        image = data.read_grayscale(path, as_displayed=True)
        h, w = image.shape
    else:
        image, (h, w) = data.read_for_prediction(path, reduce_to=predictor.image_size)
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
                max_pixels: int = MAX_PIXELS) -> PredictionRun:
    """Predict every input, write masks (and overlays) and ``predictions.csv``.

    Raises PredictError (before writing anything) for a bad threshold, a missing
    input, existing outputs without ``force``; CheckpointError for a model that
    is missing or fails its checksum. Per-file failures are reported on
    ``stderr`` and in the CSV and do not stop the run.
    """
    stderr = stderr if stderr is not None else sys.stderr
    if not 0.0 <= float(threshold) <= 1.0:
        raise PredictError(f"--threshold must be between 0 and 1, got {threshold}")
    input_path, out_dir = Path(input_path), Path(output_dir)
    files = list_inputs(input_path)
    plan = plan_outputs(files, out_dir, overlay)
    check_outputs(plan, input_path, out_dir, force)
    predictor = load_predictor(checkpoint, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = PredictionRun([], plan.csv_path, out_dir, predictor.source)
    bar = progress_bar(files, desc="predicting", disable=None if len(files) > 1 else True)
    for f in bar:
        try:
            image, mask, row = predict_file(predictor, f, threshold, max_pixels, full_image=overlay)
            run.written.append(_save_png(mask.astype(np.uint8) * 255, plan.masks[f]))
            if overlay:
                run.written.append(_save_png(overlay_image(image, mask), plan.overlays[f]))
        except (data.ImageReadError, OSError) as e:
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
