"""Segment your own scans: ``python -m brainseg_lib predict``.

Every input image is read as one uint8 grayscale channel (``images.read_grayscale``:
JPEG, PNG, TIFF, BMP; modes RGB, L, LA, P, RGBA, CMYK, 16-bit, ...), resized to
the checkpoint's ``train_config.image_size`` exactly as in training (cropped to the head
first, flipped and cleaned of small components where the checkpoint says so:
``inference.scan_probability``), passed through the U-Net, and the tumour probability map is
resized back to the image's own width and height (bilinear) and thresholded.

Outputs, in the output folder, per input ``<stem>.<ext>``:

* ``<stem>_mask.png``: the binary mask at the input's size, 0 = background,
  255 = tumour (8-bit grayscale PNG);
* ``<stem>_overlay.png`` (with ``overlay=True``): the scan in gray in the report's colours:
  the predicted tumour outlined in cyan, the truth (a mask of the scan in ``truth``, if
  given: ``<stem>_mask.png``, ``<stem>.png`` or the scan's own name) in red, and a scan
  where nothing was found marked "no tumour found" (``scans.overlay_pil``);
* one row of ``predictions.csv``: file, width, height, tumour_pixels,
  tumour_fraction, max_prob (the highest native-size probability), tumour
  (``yes`` when any pixel reaches the threshold), status (``ok``/``error``),
  error (the reason), threshold, model_sha256, file_escaped (``apply.table``).

If several inputs share a stem (``scan.jpg`` and ``scan.png``), each of them
uses its whole name with dots made underscores instead (``scan_jpg_mask.png``).
A folder input means every file directly in it (not sub-folders; hidden
dot-files are ignored), in natural order. A file that is not an image of a
supported type, or cannot be decoded, is reported on stderr and in the CSV;
the other files are still processed.

Every file is written to a temp file and renamed into place, and each row of
``predictions.csv`` is appended and flushed as soon as its scan's outputs
are in place (``apply.table``): an interrupt, a crash or a full disk keeps every
finished row, and a scan whose outputs could not all be written has its partial
outputs removed, so a row's status always matches what is on disk. Existing
outputs are never overwritten unless ``force=True`` (redo every scan) or
``resume=True`` (keep the scans whose row says ``ok`` and whose outputs exist, do
the others); otherwise the run is refused before anything is written.

NIfTI files (``.nii``, ``.nii.gz``) and DICOM series (a folder's DICOM files, one input per
SeriesInstanceUID) are volumes: each is segmented slice by slice and gets a NIfTI mask with its
geometry, ``<stem>_mask.nii.gz``, a montage as its overlay, and one row (``apply.volumes``).

Model outputs are checked before they are trusted (``apply.models``): a NaN,
infinite or misshapen probability map is an error row, and a model that gives
one on a probe image is refused at load.

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

import errno
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainseg_lib.apply import table as ptable
from brainseg_lib.apply.models import (  # noqa: F401  (re-exported: predict's public names)
    RUNTIMES,
    ModelOutputError,
    UnverifiedCheckpoint,
    load_onnx_predictor,
    load_predictor,
)
from brainseg_lib.apply.scans import (  # noqa: F401
    CSV_COLUMNS,
    MAX_PIXELS,
    MAX_SLICES,
    OVERLAY_PNG_LEVEL,
    SUPPORTED_SUFFIXES,
    Plan,
    PredictError,
    _fmt,
    _save_png,
    check_outputs,
    check_pixels,
    list_inputs,
    overlay_pil,
    plan_outputs,
    printable,
    read_truth,
    shown,
)
from brainseg_lib.apply.volumes import SLICE_AXES, is_volume_input, segment_volume_input
from brainseg_lib.data import images
from brainseg_lib.data.errors import ImageReadError
from brainseg_lib.progress import progress_bar

# a write that fails with one of these stops the run (the next scans would fail alike)
FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
PER_FILE_ERRORS = (ImageReadError, ModelOutputError, MemoryError, OSError)


class PredictInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says how many rows were written and how to resume."""


@dataclass
class PredictionRun:
    rows: list[dict]
    csv_path: Path
    out_dir: Path
    model: Path
    kept: int = 0                   # rows of scans finished by an earlier run (--resume)
    threshold: float = 0.5          # the one used: given, or the model's own

    @property
    def n_failed(self) -> int:
        return sum(r["status"] != "ok" for r in self.rows)

    @property
    def n_ok(self) -> int:
        return len(self.rows) - self.n_failed

    @property
    def n_tumour(self) -> int:
        return sum(r["status"] == "ok" and r["tumour"] == "yes" for r in self.rows)


def summary_line(run: PredictionRun) -> str:
    """The closing line of a run: scans read, with tumour, without, refused."""
    without = run.n_ok - run.n_tumour
    refused = f"; see the 'error' column of {run.csv_path.name}" if run.n_failed else ""
    return (f"summary: {len(run.rows)} scan(s) read: {run.n_tumour} with tumour found, "
            f"{without} without (marked \"no tumour found\" on any overlay), "
            f"{run.n_failed} refused{refused}")


def predict_file(predictor, path: Path, threshold: float, max_pixels: int | None = None,
                 full_image: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """(gray image, bool mask, CSV row) of one file; raises ImageReadError if unreadable
    or larger than ``max_pixels`` (default MAX_PIXELS), ModelOutputError if the model's
    output cannot be trusted. Without ``full_image`` (no overlay to draw) a large JPEG is
    decoded at a reduced scale; the mask is still at native size."""
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
    n = int(np.count_nonzero(mask))
    row = {"file": path.name, "width": w, "height": h, "tumour_pixels": n,
           "tumour_fraction": _fmt(n / mask.size), "max_prob": _fmt(float(prob.max())),
           "tumour": "yes" if n else "no", "status": "ok", "error": "",
           "threshold": float(threshold), "model_sha256": getattr(predictor, "sha256", "")}
    return image, mask, row


def _remove(paths: list[Path]) -> None:
    for p in paths:
        try:
            p.unlink(missing_ok=True)
        except OSError:
            pass        # a mask without its row is done again by --resume


def segment(predictor, f: Path, plan: Plan, threshold: float, overlay: bool, max_pixels: int) -> dict:
    """Segment one scan and write its mask (and overlay); its row. On any failure, interrupts
    included, the outputs of this scan are removed, so no mask outlives a failed scan."""
    outputs = [o[f] for o in (plan.masks, plan.overlays) if f in o]
    try:
        if is_volume_input(f):          # a NIfTI file or a DICOM series: apply.volumes
            return segment_volume_input(predictor, f, plan, threshold, overlay, max_pixels)
        image, mask, row = predict_file(predictor, f, threshold, max_pixels, full_image=overlay)
        truth = read_truth(plan.truth_dir, f, image.shape) if overlay else None
        _save_png(mask.astype(np.uint8) * 255, plan.masks[f])
        if overlay:
            _save_png(overlay_pil(image, mask, truth=truth), plan.overlays[f], OVERLAY_PNG_LEVEL)
        return row
    except BaseException:
        _remove(outputs)
        raise


def error_row(f: Path, e: BaseException, threshold: float, sha256: str) -> dict:
    """The ``error`` row of a scan that failed with ``e``."""
    if isinstance(e, MemoryError):
        reason = "out of memory while segmenting this scan"
    else:
        reason = (str(e) or type(e).__name__).replace("\n", " ")
    return {"file": f.name, **{c: "" for c in CSV_COLUMNS[1:7]}, "status": "error",
            "error": reason, "threshold": float(threshold), "model_sha256": sha256}


def _predict_all(predictor, todo: list[Path], plan: Plan, table: ptable.Table, threshold: float,
                 overlay: bool, max_pixels: int, stderr, progress) -> None:
    """Segment ``todo`` in order, appending each row to ``table`` as its scan finishes."""
    from tqdm import tqdm
    disable = True if progress is False or len(todo) < 2 else None
    for f in progress_bar(todo, desc="predicting", disable=disable):
        try:
            row = segment(predictor, f, plan, threshold, overlay, max_pixels)
        except PER_FILE_ERRORS as e:
            if isinstance(e, OSError) and e.errno in FATAL_ERRNOS:
                raise
            row = error_row(f, e, threshold, getattr(predictor, "sha256", ""))
            tqdm.write(f"error: {printable(shown(f.name))}: {printable(shown(row['error']))}",
                       file=stderr)
        try:
            table.append(row)
        except BaseException:
            _remove([o[f] for o in (plan.masks, plan.overlays) if f in o])   # no mask without its row
            raise


def _resume_rows(plan: Plan, resume: bool, overlay: bool, threshold: float, sha256: str, stderr
                 ) -> tuple[list[dict], list[Path]]:
    """(rows kept from the existing table, inputs still to do): everything to do unless
    ``resume`` finds a table (``apply.table.finished``)."""
    if not resume:
        return [], list(plan.files)
    if not plan.csv_path.exists():
        print(f"--resume: no {plan.csv_path.name} in {plan.out_dir} yet, so nothing to resume; "
              "starting with the first scan", file=stderr)
        return [], list(plan.files)
    done, foreign = ptable.finished(ptable.read_rows(plan.csv_path), plan, overlay, threshold, sha256)
    return foreign + [done[f] for f in plan.files if f in done], [f for f in plan.files if f not in done]


def _open_table(plan: Plan, rows: list[dict]) -> ptable.Table:
    """Create the output folder and start the table there; an OS error names the folder."""
    try:
        plan.out_dir.mkdir(parents=True, exist_ok=True)
        return ptable.Table(plan.csv_path, rows)
    except PermissionError:
        raise                           # the CLI's "permission denied" line
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(plan.out_dir)) from None


def _stopped(table: ptable.Table, total: int, how: str) -> str:
    left = total - len(table.rows)
    return (f"{how}; {len(table.rows)} of {total} rows are in {table.path} (each finished scan "
            f"has its row and its outputs); run the same command with --resume to do the other {left}")


def _in_input_order(table: ptable.Table, plan: Plan, n_foreign: int, stderr) -> list[dict]:
    """The table's rows, rewritten in input order if a resume appended them out of it."""
    by_name = {r["file"]: r for r in table.rows[n_foreign:]}
    ordered = table.rows[:n_foreign] + [by_name[f.name] for f in plan.files]
    if [id(r) for r in ordered] != [id(r) for r in table.rows]:
        try:
            ptable.write_rows(table.path, ordered)
        except OSError as e:
            print(f"note: {table.path} keeps its rows in the order they were done ({e.strerror})",
                  file=stderr)
    return ordered


def _truth_dir(truth, overlay: bool) -> Path | None:
    """The ``--truth`` folder, checked: it exists, and only an overlay shows it."""
    if truth is None:
        return None
    if not overlay:
        raise PredictError("--truth draws the truth on the overlays: add --overlay")
    if not Path(truth).is_dir():
        raise PredictError(f"--truth {truth} is not a folder of masks")
    return Path(truth)


def run_predict(input_path: str | Path, output_dir: str | Path, checkpoint: str | Path | None = None,
                threshold: float | None = None, overlay: bool = False, device: str = "auto",
                force: bool = False, progress: bool | None = None, stderr=None,
                max_pixels: int = MAX_PIXELS, runtime: str = "torch", resume: bool = False,
                slice_axis: str = "auto", max_slices: int = MAX_SLICES,
                truth: str | Path | None = None) -> PredictionRun:
    """Predict every input, write masks (and overlays) and ``predictions.csv``, row by row.

    Raises PredictError (before writing anything) for a bad threshold, a missing input,
    existing outputs without ``force`` or ``resume``, a model refused at load or a resume
    with another threshold or model; CheckpointError for a model that is missing or fails its
    checksum. Per-file failures are reported on ``stderr`` and in the CSV and do not stop the
    run; a full disk stops it with PredictError, an interrupt with PredictInterrupted, both
    saying how many rows were written. ``runtime="onnx"`` runs the ONNX export with
    onnxruntime (see the module docstring); PredictError when it is missing. NIfTI files
    and DICOM series are cut along ``slice_axis`` and refused past ``max_slices`` slices
    (``apply.volumes``). ``truth``: a folder of truth masks drawn in red on the overlays.
    ``threshold`` None: the model's own (``inference.checkpoint_threshold``: 0.5 unless a released
    file records the one its lever round chose).
    """
    stderr = stderr if stderr is not None else sys.stderr
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise PredictError(f"--threshold must be between 0 and 1, got {threshold}")
    if runtime not in RUNTIMES:
        raise PredictError(f"unknown runtime {runtime!r}; choose torch or onnx")
    input_path, out_dir = Path(input_path), Path(output_dir)
    if str(slice_axis) not in SLICE_AXES:
        raise PredictError(f"unknown --slice-axis {slice_axis!r}; choose one of {', '.join(SLICE_AXES)}")
    plan = plan_outputs(list_inputs(input_path), out_dir, overlay)
    plan.slice_axis, plan.max_slices = str(slice_axis), int(max_slices)
    plan.truth_dir = _truth_dir(truth, overlay)
    check_outputs(plan, input_path, out_dir, force, resume)
    predictor = (load_onnx_predictor if runtime == "onnx" else load_predictor)(checkpoint, device)
    threshold = float(getattr(predictor, "threshold", 0.5) if threshold is None else threshold)
    kept, todo = _resume_rows(plan, resume, overlay, threshold, getattr(predictor, "sha256", ""), stderr)
    n_foreign, total = len(kept) - (len(plan.files) - len(todo)), len(kept) + len(todo)
    with _open_table(plan, kept) as table:
        try:
            _predict_all(predictor, todo, plan, table, threshold, overlay, max_pixels, stderr, progress)
        except KeyboardInterrupt:
            raise PredictInterrupted(_stopped(table, total, "interrupted")) from None
        except OSError as e:
            where = e.filename or table.path
            raise PredictError(_stopped(table, total, f"cannot write {where}: {e.strerror or e}")) from e
    rows = _in_input_order(table, plan, n_foreign, stderr)
    return PredictionRun(rows, plan.csv_path, out_dir, predictor.source,
                         kept=len(plan.files) - len(todo), threshold=threshold)
