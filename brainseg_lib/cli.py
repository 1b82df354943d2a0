"""Command line: ``python -m brainseg_lib <command>`` (also installed as ``brainseg``).

  check-data             verify the dataset layout and print split counts
  train [--profile P]    train and evaluate one run (cpu by default, paper on CUDA)
  evaluate --checkpoint  score a checkpoint on a split, write CSV + JSON
  table                  rebuild Table I from results/metrics/*.json
  embed-table            copy results/tables/table1.md into README.md
  headline [--profile]   print the headline metrics of finished runs
  sweep [--jobs N]       seeds x splits x losses -> results/sweep/
  release                publish results/models/brainseg-cpu.pt with its model card
  predict --input ...    segment your own scans (masks, overlays, predictions.csv)
  bench [--profile P]    speed benchmark -> results/benchmarks/<device>-<profile>.json
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

import yaml


def _with_overrides(params: dict, sets: list[str] | None, tag_profile: bool = False) -> dict:
    """Apply ``--set KEY=VALUE`` overrides (values parsed as YAML); with ``tag_profile`` the
    profile name records them, so outputs named after the profile do not collide."""
    for kv in sets or []:
        k, _, v = kv.partition("=")
        params[k] = yaml.safe_load(v)
        if tag_profile:
            params["profile"] = f"{params['profile']}+{k}={v}"
    return params


def _cmd_check_data(args) -> int:
    from brainseg_lib.data.br35h import (
        EXPECTED_COUNTS,
        SPLITS,
        check_dataset,
        list_split,
    )
    root = check_dataset(args.data)
    print(f"Br35H found at {root}")
    bad = 0
    for s in SPLITS:
        n = len(list_split(s, root)[0])
        flag = "" if n == EXPECTED_COUNTS[s] else f"  (expected {EXPECTED_COUNTS[s]})"
        bad += bool(flag)
        print(f"  {s:5s} {n:4d} annotated images{flag}")
    # the same reading and rasterisation as training, so check-data fails where train would
    from brainseg_lib.data.br35h import iter_samples
    from brainseg_lib.data.errors import DataError
    for s in SPLITS:
        try:
            for _ in iter_samples(s, root):
                pass
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            bad += 1
    print("every annotation rasterises" if not bad else "check-data found problems")
    return 1 if bad else 0


def _cmd_train(args) -> int:
    from brainseg_lib.study.experiment import run_profile
    from brainseg_lib.study.profiles import default_profile, load_profile
    name = args.profile or default_profile()
    params = _with_overrides(load_profile(name), args.set)
    out = run_profile(params, data_root=args.data, resume=args.resume)
    g = out["global"]
    print(f"{out['run_name'] if 'run_name' in out else name}: test F1 {g['f1']:.3f}  IoU {g['iou']:.3f}  "
          f"precision {g['precision']:.3f}  recall {g['recall']:.3f}  "
          f"(train {out['train_seconds']:.0f}s) -> {out['json_path']}")
    return 0


def _cmd_evaluate(args) -> int:
    from brainseg_lib.evaluation.evaluate import evaluate_checkpoint, write_evaluation
    ev = evaluate_checkpoint(args.checkpoint, args.split, args.threshold, args.device, args.data)
    name = args.name or f"eval-{args.split}"
    j, c = write_evaluation(ev, name, {"profile": "custom"}, out_dir=args.out)
    print(json.dumps(ev.summary["global"], indent=1))
    print(f"wrote {j} and {c}")
    return 0


def _cmd_table(args) -> int:
    from brainseg_lib.study.table1 import build_table1, to_markdown, write_table1
    table = build_table1()
    written = write_table1(table)
    print(to_markdown(table))
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def _cmd_embed_table(args) -> int:
    from brainseg_lib import paths
    from brainseg_lib.report.readme import (
        TIMINGS_END,
        TIMINGS_START,
        embed_in_readme,
        timings_markdown,
    )
    md = (paths.tables_dir() / "table1.md").read_text()
    changed = embed_in_readme(md)
    changed |= embed_in_readme(timings_markdown(), start=TIMINGS_START, end=TIMINGS_END)
    from brainseg_lib.report.readme import SPEED_END, SPEED_START, speed_markdown
    changed |= embed_in_readme(speed_markdown(), start=SPEED_START, end=SPEED_END)
    for path, marker in ((paths.tables_dir() / "findings.md", "FINDINGS"),
                         (paths.tables_dir() / "detection_table.md", "DETECTION"),
                         (paths.tables_dir() / "detection_seeds.md", "DETECTION_SEEDS"),
                         (paths.tables_dir() / "table1_boundary.md", "BOUNDARY"),
                         (paths.tables_dir() / "external_validation.md", "EXTERNAL"),
                         (paths.levers_dir() / "lever_table.md", "LEVERS")):
        if path.is_file():
            changed |= embed_in_readme(path.read_text(), start=f"<!-- {marker}:START -->",
                                       end=f"<!-- {marker}:END -->")
    print("README.md " + ("updated" if changed else "already current"))
    return 0


def _cmd_headline(args) -> int:
    from brainseg_lib.evaluation.evaluate import load_run_metrics
    runs = [r for r in load_run_metrics() if args.profile in (None, r.get("profile"))]
    if not runs:
        print("no run metrics found in results/metrics")
        return 1
    from brainseg_lib.study.experiment import load_timing
    for r in runs:
        r = {**r, **load_timing(r["run_name"])}
        g = r["global"]
        print(f"{r['run_name']}: test F1 {g['f1']:.3f}  IoU {g['iou']:.3f}  precision {g['precision']:.3f}  "
              f"recall {g['recall']:.3f}  specificity {g['specificity']:.3f}  accuracy {g['accuracy']:.3f}  "
              f"| {r.get('epochs_run')} epochs, train {r.get('train_seconds', float('nan')):.0f} s"
              + (" (CUT by max_train_seconds)" if r.get("cut_by_time") else ""))
    return 0


def _cmd_bench(args) -> int:
    from brainseg_lib.study.bench import format_table, run_benchmark
    from brainseg_lib.study.profiles import default_profile, load_profile
    if args.overlay_side:
        from brainseg_lib import paths
        from brainseg_lib.fileio import write_json
        from brainseg_lib.study.bench import time_predict_overlay
        r = time_predict_overlay(args.overlay_side)
        out = write_json(r, paths.ensure(paths.results_dir() / "benchmarks") / f"predict_overlay_{args.overlay_side}.json")
        print(f"predict --overlay on a {r['side']}x{r['side']} scan: {r['seconds_median']} s "
              f"(outline {r['outline_seconds_median']} s); {out}")
        return 0
    params = _with_overrides(load_profile(args.profile or default_profile()), args.set,
                             tag_profile=True)
    result = run_benchmark(params, steps=args.steps, blocks=args.blocks, data_root=args.data)
    print(format_table(result))
    from brainseg_lib import paths
    from brainseg_lib.fileio import atomic_write_text
    from brainseg_lib.report.readme import benchmarks_readme
    atomic_write_text(paths.results_dir() / "benchmarks" / "README.md", benchmarks_readme())
    return 0


def _cmd_predict(args) -> int:
    import warnings

    from brainseg_lib.apply.predict import UnverifiedCheckpoint, run_predict
    from brainseg_lib.apply.scans import printable
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnverifiedCheckpoint)
        run = run_predict(args.input, args.output, checkpoint=args.checkpoint, threshold=args.threshold,
                          overlay=args.overlay, device=args.device, force=args.force,
                          max_pixels=args.max_pixels)
    for w in caught:
        print(f"WARNING: {printable(str(w.message))}", file=sys.stderr)
    kinds = "mask and overlay" if args.overlay else "mask"
    print(f"model {run.model}: {run.n_ok} of {len(run.rows)} file(s) segmented "
          f"({kinds} PNGs in {run.out_dir}), table {run.csv_path}")
    if run.n_failed:
        print(f"{run.n_failed} file(s) failed; see the errors above and the 'error' column of "
              f"{run.csv_path.name}", file=sys.stderr)
    return 1 if run.n_failed else 0


def _cmd_sweep(args) -> int:
    from brainseg_lib.study.profiles import default_profile
    from brainseg_lib.study.sweep import plan, plan_lines, run_sweep
    runs = plan(args.profile or default_profile(), seeds=tuple(args.seeds))
    if args.plan:
        lines = plan_lines(runs)
        if args.format == "slurm":
            from brainseg_lib import paths
            from brainseg_lib.fileio import atomic_write_text
            from brainseg_lib.study.sweep import slurm_script
            out = atomic_write_text(paths.ensure(paths.sweep_dir()) / "sweep.sbatch", slurm_script(lines))
            print(f"wrote {out} ({len(lines)} array tasks); submit with: sbatch {out}")
        else:
            print("\n".join(lines))
        return 0
    names = run_sweep(runs, jobs=args.jobs, skip_done=not args.force)
    print("finished:", ", ".join(names))
    return 0


def _cmd_release(args) -> int:
    from brainseg_lib.study.release import release
    info = release(args.run, data_root=args.data)
    print(json.dumps(info, indent=1))
    return 0


def _cmd_levers(args) -> int:
    from brainseg_lib.study import levers
    plan = levers.load_plan(args.plan)
    if not args.table_only:
        levers.run_levers(plan, force=args.force)
    table = levers.lever_table(plan)
    out = levers.write_lever_table(table)
    print(levers.table_markdown(table))
    print(f"written {out['md']}")
    return 0


def _cmd_healthy_split(args) -> int:
    from brainseg_lib.data import healthy
    man = healthy.build_manifest(args.seed, root=args.data)
    path = healthy.write_manifest(man, args.seed)
    print(f"{path}: " + ", ".join(f"{r} {int((man['role'] == r).sum())}" for r in healthy.ROLES))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="brainseg", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="Br35H folder (default: $BRAINSEG_DATA or data/br35h)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check-data", help="verify the dataset").set_defaults(fn=_cmd_check_data)
    t = sub.add_parser("train", help="train + evaluate one profile")
    t.add_argument("--profile", help="params/<profile>.yaml (default: paper on CUDA, else cpu)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a profile value")
    t.add_argument("--resume", action="store_true", help="continue from the run's last.pt")
    t.set_defaults(fn=_cmd_train)
    e = sub.add_parser("evaluate", help="score a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--threshold", type=float, default=0.5)
    e.add_argument("--device", default="auto")
    e.add_argument("--name", help="output name (default eval-<split>)")
    e.add_argument("--out", help="output folder (default results/metrics)")
    e.set_defaults(fn=_cmd_evaluate)
    hs = sub.add_parser("healthy-split", help="split the no/ scans by near-duplicate group "
                        "into train / val / report (splits/healthy_seed<k>.csv)")
    hs.add_argument("--seed", type=int, default=0)
    hs.set_defaults(fn=_cmd_healthy_split)
    lv = sub.add_parser("levers", help="train the lever trials of params/levers.yaml and write "
                        "the lever table (choices on VAL and external dev only)")
    lv.add_argument("--plan", default=None, help="a levers YAML (default params/levers.yaml)")
    lv.add_argument("--force", action="store_true", help="re-run trials whose metrics exist")
    lv.add_argument("--table-only", action="store_true", help="only rebuild the table")
    lv.set_defaults(fn=_cmd_levers)
    sub.add_parser("table", help="rebuild Table I").set_defaults(fn=_cmd_table)
    sub.add_parser("embed-table", help="copy results/tables/table1.md into README.md"
                   ).set_defaults(fn=_cmd_embed_table)
    b = sub.add_parser("bench", help="benchmark training/inference speed vs peak and a naive pipeline")
    b.add_argument("--profile", help="params/<profile>.yaml (default: paper on CUDA, else cpu)")
    b.add_argument("--steps", type=int, default=10, help="training steps per timed block")
    b.add_argument("--blocks", type=int, default=5,
                   help="timed blocks per pipeline; images/s is their median")
    b.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a profile value")
    b.add_argument("--overlay-side", type=int, default=0, metavar="N",
                   help="instead: time predict --overlay on one synthetic NxN scan (e.g. 5000)")
    b.set_defaults(fn=_cmd_bench)
    w = sub.add_parser("sweep", help="seeds x split schemes x losses as independent papermill jobs")
    w.add_argument("--profile", help="profile to sweep (default: paper on CUDA, else cpu)")
    w.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    w.add_argument("--jobs", type=int, default=1, help="runs side by side (threads split evenly)")
    w.add_argument("--force", action="store_true", help="re-run runs whose metrics exist")
    w.add_argument("--plan", action="store_true",
                   help="only print one self-contained command per run (nothing is trained)")
    w.add_argument("--format", choices=["lines", "slurm"], default="lines",
                   help="with --plan: shell lines, or an sbatch --array script in the sweep folder")
    w.set_defaults(fn=_cmd_sweep)
    r = sub.add_parser("release", help="publish the cpu run's best checkpoint + MODEL_CARD.md")
    r.add_argument("--run", default=None, help="run to release (default: the cpu profile's official-split BCE+Dice seed-0 run)")
    r.set_defaults(fn=_cmd_release)
    h = sub.add_parser("headline", help="print the headline test metrics of finished runs")
    h.add_argument("--profile", default=None)
    h.set_defaults(fn=_cmd_headline)
    pr = sub.add_parser(
        "predict", help="segment your own scans (masks, overlays, predictions.csv)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Segment brain MRI scans with a trained U-Net.\n\n"
        "Inputs: JPEG, PNG, TIFF or BMP files of any size, colour mode (RGB, L, LA, P, RGBA,\n"
        "CMYK) and bit depth (8 or 16); a folder means every file directly in it.\n"
        "Per input <stem>.<ext> the output folder gets <stem>_mask.png (0 = background,\n"
        "255 = tumour, at the input's own size), with --overlay <stem>_overlay.png (the\n"
        "scan with the tumour outlined in red), and one row of predictions.csv (file, width,\n"
        "height, tumour_pixels, tumour_fraction, max_prob, tumour yes/no, status, error).",
        epilog="Exit status: 0 every file segmented; 1 some file failed (unreadable or not a\n"
        "supported image; reported on stderr and in predictions.csv, the others are still\n"
        "processed); 2 nothing done (missing model or input, existing outputs without --force,\n"
        "bad option).")
    pr.add_argument("--checkpoint", default=None, metavar="PATH",
                    help="model checkpoint (.pt) written by training or release_model "
                         "(default: the released model results/models/brainseg-cpu.pt, "
                         "checked against its .sha256 file)")
    pr.add_argument("--input", required=True, metavar="FILE_OR_DIR",
                    help="an image file, or a folder whose files are all segmented (not recursive)")
    pr.add_argument("--output", required=True, metavar="DIR",
                    help="folder for the masks, overlays and predictions.csv (created if needed; "
                         "must not be the input folder)")
    pr.add_argument("--threshold", type=float, default=0.5, metavar="T",
                    help="tumour where the probability is >= T, 0..1 (default 0.5)")
    pr.add_argument("--overlay", action="store_true",
                    help="also write <stem>_overlay.png: the scan with the tumour outline in red")
    pr.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="where to run the model: auto (CUDA if available), cpu or cuda (default auto)")
    pr.add_argument("--max-pixels", type=int, default=50_000_000, metavar="N",
                    help="refuse (per file, before decoding) scans with more than N pixels "
                         "(default 50,000,000; the model sees each scan at its own input size anyway)")
    pr.add_argument("--force", action="store_true",
                    help="overwrite existing output files (without it, existing outputs stop the run "
                         "before anything is written)")
    pr.set_defaults(fn=_cmd_predict)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from brainseg_lib.data.errors import DataError
    from brainseg_lib.model.checkpoint import CheckpointError
    try:
        return args.fn(args)
    except (DataError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every file written so far is complete (writes are atomic)", file=sys.stderr)
        return 130
    except PermissionError as e:
        print(f"error: permission denied: {e.filename or e}; choose a folder you can "
              "write to (or read from)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
