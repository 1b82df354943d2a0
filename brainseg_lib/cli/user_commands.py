"""Commands for users of the released model and of the data: predict, bench, fetch-data,
export, report."""
from __future__ import annotations

import argparse
import sys

from brainseg_lib.cli.common import with_overrides


def _cmd_bench(args) -> int:
    from brainseg_lib.study.bench import format_table, run_benchmark
    from brainseg_lib.study.profiles import default_profile, load_profile
    if args.volume:
        return _bench_volume()
    if args.overlay_side:
        from brainseg_lib import paths
        from brainseg_lib.fileio import write_json
        from brainseg_lib.study.bench_predict import time_predict_overlay
        r = time_predict_overlay(args.overlay_side, scan=args.overlay_scan)
        out = write_json(r, paths.ensure(paths.benchmarks_dir()) / f"predict_overlay_{args.overlay_side}.json")
        print(f"predict --overlay on {r['scan']}: {r['seconds_median']} s (outline "
              f"{r['outline_seconds_median']} s; a flat synthetic scan: {r['synthetic_seconds_median']} s); {out}")
        return 0
    params = with_overrides(load_profile(args.profile or default_profile()), args.set,
                             tag_profile=True)
    result = run_benchmark(params, steps=args.steps, blocks=args.blocks, data_root=args.data,
                           onnx=not args.no_onnx)
    print(format_table(result))
    from brainseg_lib import paths
    from brainseg_lib.fileio import atomic_write_text
    from brainseg_lib.report.readme import benchmarks_readme
    atomic_write_text(paths.benchmarks_dir() / "README.md", benchmarks_readme())
    return 0


def _bench_volume() -> int:
    from brainseg_lib import paths
    from brainseg_lib.fileio import write_json
    from brainseg_lib.study.bench_volume import time_predict_volume
    r = time_predict_volume()
    out = write_json(r, paths.ensure(paths.benchmarks_dir()) / "predict_volume.json")
    print(f"predict on a {'x'.join(map(str, r['shape']))} NIfTI ({r['runtime']}): {r['seconds_median']} s; {out}")
    return 0


def _cmd_predict(args) -> int:
    import warnings

    from brainseg_lib.apply.predict import UnverifiedCheckpoint, run_predict, summary_line
    from brainseg_lib.apply.scans import printable, shown
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnverifiedCheckpoint)
        run = run_predict(args.input, args.output, checkpoint=args.checkpoint, threshold=args.threshold,
                          overlay=args.overlay, device=args.device, force=args.force,
                          max_pixels=args.max_pixels, runtime=args.runtime, resume=args.resume,
                          slice_axis=args.slice_axis, max_slices=args.max_slices, truth=args.truth)
    for w in caught:
        print(f"WARNING: {printable(str(w.message))}", file=sys.stderr)
    kinds = "mask and overlay" if args.overlay else "mask"
    kept = f", {run.kept} of them finished by the earlier run" if run.kept else ""
    out, table = (printable(shown(p)) for p in (run.out_dir, run.csv_path))   # any folder name prints
    print(f"model {run.model}: {run.n_ok} of {len(run.rows)} file(s) segmented{kept} "
          f"({kinds} files in {out}); {len(run.rows)} rows written to {table}")
    if run.n_failed:
        print(f"{run.n_failed} file(s) failed; see the errors above and the 'error' column of "
              f"{run.csv_path.name}", file=sys.stderr)
        sys.stderr.flush()
    print(summary_line(run), flush=True)
    return 1 if run.n_failed else 0


def _add_predict(sub) -> None:
    from brainseg_lib.apply.scans import MAX_PIXELS, MAX_SLICES
    from brainseg_lib.apply.volumes import SLICE_AXES
    pr = sub.add_parser(
        "predict", help="segment your own scans (masks, overlays, predictions.csv)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Segment brain MRI scans with a trained U-Net.\n\n"
        "Inputs: JPEG, PNG, TIFF or BMP files of any size, colour mode (RGB, L, LA, P, RGBA,\n"
        "CMYK) and bit depth (8 or 16); NIfTI volumes (.nii, .nii.gz) and DICOM series (a\n"
        "folder's DICOM files, one volume per SeriesInstanceUID), segmented slice by slice into\n"
        "<stem>_mask.nii.gz with the input's geometry; a folder means every file directly in it.\n"
        "Per input <stem>.<ext> the output folder gets <stem>_mask.png (0 = background,\n"
        "255 = tumour, at the input's own size), with --overlay <stem>_overlay.png (the\n"
        "scan with the predicted tumour outlined in cyan, the truth of --truth in red, as in\n"
        "the report, and \"no tumour found\" written on a scan where nothing was found), and\n"
        "one row of predictions.csv (file, width,\n"
        "height, tumour_pixels, tumour_fraction, max_prob, tumour yes/no, status, error,\n"
        "threshold, model_sha256, file_escaped), appended and synced to disk as each scan\n"
        "finishes: after Ctrl-C, a crash or a full disk, --resume finishes the rest. The last\n"
        "line counts the scans read, with tumour found, without, and refused." + _release_help(),
        epilog="Exit status: 0 every file segmented; 1 some file failed (unreadable, not a\n"
        "supported image, or a model output that is not finite; reported on stderr and in\n"
        "predictions.csv, the others are still processed); 2 nothing done or the run stopped\n"
        "(missing model or input, existing outputs without --force or --resume, a model refused\n"
        "at load, an output folder that cannot be written, a full disk, bad option); 130\n"
        "interrupted (the message says how many rows were written).")
    pr.add_argument("--checkpoint", default=None, metavar="PATH",
                    help="model checkpoint (.pt) written by training or by `release` "
                         "(default: the released model, results/models/brainseg-cpu.pt, "
                         "checked against its .sha256 file)")
    pr.add_argument("--input", required=True, metavar="FILE_OR_DIR",
                    help="an image file, or a folder whose files are all segmented (not recursive)")
    pr.add_argument("--output", required=True, metavar="DIR",
                    help="folder for the masks, overlays and predictions.csv (created if needed; "
                         "must not be the input folder)")
    pr.add_argument("--threshold", type=float, default=None, metavar="T",
                    help="tumour where the probability is >= T, 0..1 (default: the model's own, "
                         "0.5 unless the released file records another; predictions.csv names it)")
    pr.add_argument("--overlay", action="store_true",
                    help="also write <stem>_overlay.png: the scan with the predicted tumour outlined "
                         "in cyan (the report's colours), or \"no tumour found\" written on it")
    pr.add_argument("--truth", default=None, metavar="DIR",
                    help="with --overlay: a folder of truth masks (<stem>_mask.png, <stem>.png or the "
                         "scan's own name; any pixel above 0 is tumour) outlined in red on the overlays")
    pr.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="where to run the model: auto (CUDA if available), cpu or cuda (default auto)")
    pr.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                    help="refuse (per file, before decoding) scans with more than N pixels "
                         f"(default {MAX_PIXELS:,}; the model sees each scan at its own input size anyway)")
    _add_volume_args(pr)
    pr.add_argument("--runtime", default="torch", choices=["torch", "onnx"],
                    help="torch (default) or onnx: run results/models/brainseg-cpu.onnx (or the .onnx "
                         "given by --checkpoint, or <stem>.onnx beside a .pt) with onnxruntime on the "
                         "CPU; create it with `python -m brainseg_lib export --format onnx`")
    pr.set_defaults(fn=_cmd_predict)


def _release_help() -> str:
    import textwrap

    from brainseg_lib.report.release_card import help_text
    text = help_text()
    return ("\n\n" + textwrap.fill(text.strip(), 88)) if text else ""


def _add_volume_args(pr) -> None:
    """predict's options for NIfTI and DICOM volumes, and for re-running into one output."""
    from brainseg_lib.apply.scans import MAX_SLICES
    from brainseg_lib.apply.volumes import SLICE_AXES
    pr.add_argument("--force", action="store_true",
                    help="redo every scan, overwriting existing output files (without it or --resume, "
                         "existing outputs stop the run before anything is written)")
    pr.add_argument("--resume", action="store_true",
                    help="finish an interrupted run in the same --output: keep the scans whose row in "
                         "predictions.csv says ok and whose mask (and overlay) exist, do the others "
                         "(refused if the table was made with another --threshold or model)")
    pr.add_argument("--slice-axis", default="auto", choices=SLICE_AXES,
                    help="volumes: the axis to cut into slices: auto (default: the acquisition axis the "
                         "header names, else axial), axial, coronal, sagittal (by the affine), or a "
                         "voxel axis 0, 1, 2")
    pr.add_argument("--max-slices", type=int, default=MAX_SLICES, metavar="N",
                    help=f"refuse (per volume) volumes with more than N slices (default {MAX_SLICES:,})")


def _add_bench(sub) -> None:
    b = sub.add_parser("bench", help="benchmark training/inference speed vs peak and a naive pipeline")
    b.add_argument("--profile", help="params/<profile>.yaml (default: paper on CUDA, else cpu)")
    b.add_argument("--steps", type=int, default=10, help="training steps per timed block")
    b.add_argument("--blocks", type=int, default=5,
                   help="timed blocks per pipeline; images/s is their median")
    b.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a profile value")
    b.add_argument("--overlay-side", type=int, default=0, metavar="N",
                   help="instead: time predict --overlay on a real Br35H scan scaled to NxN (e.g. 5000), "
                        "and on a flat synthetic one")
    b.add_argument("--overlay-scan", default=None, metavar="PATH",
                   help="the scan --overlay-side scales (default: yes/y0.jpg of the Br35H data)")
    b.add_argument("--volume", action="store_true",
                   help="instead: time predict --runtime onnx on a synthetic 256x256x40 NIfTI volume")
    b.add_argument("--no-onnx", action="store_true",
                   help="skip the onnxruntime vs PyTorch inference timing")
    b.set_defaults(fn=_cmd_bench)


def _adders() -> dict:
    """Each user command's parser builder; each imports only what its own parser needs."""
    def fetch(sub):
        from brainseg_lib.data.fetch import add_fetch_parser
        add_fetch_parser(sub)

    def build_external(sub):
        from brainseg_lib.data.external_build import add_build_external_parser
        add_build_external_parser(sub)

    def report(sub):
        from brainseg_lib.report.html import add_report_parser
        add_report_parser(sub)

    def export(sub):
        from brainseg_lib.model.onnx import add_export_parser
        add_export_parser(sub)
    return {"predict": _add_predict, "bench": _add_bench, "fetch-data": fetch,
            "build-external": build_external, "report": report, "export": export}


def register(sub, only: str | None = None) -> None:
    """Add the user-facing sub-commands to ``sub`` (an argparse sub-parser action): all of
    them, or with ``only`` that one with its options and the others as bare names (a parser
    imports torch, nbformat or PIL, so ``predict --help`` loads predict's alone)."""
    for name, add in _adders().items():
        if only is None or name == only:
            add(sub)
        else:
            sub.add_parser(name, add_help=False)
