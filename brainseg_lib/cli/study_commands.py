"""The study's commands: data check, training, evaluation, tables, sweeps, release, run-study."""
from __future__ import annotations

import json
import logging
import sys

from brainseg_lib.cli.common import with_overrides

log = logging.getLogger(__name__)


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
    """Train one run. Its results go to its profile's folder (``paths.profile_results_dir``):
    results/ for the study's profile (cpu), results/<profile>/ for any other, so a smoke run
    never lands among the study's metrics."""
    from brainseg_lib import paths
    from brainseg_lib.names import check_name
    from brainseg_lib.study.experiment import name_for, run_profile
    from brainseg_lib.study.profiles import default_profile, load_profile
    name = check_name(args.profile or default_profile(), "--profile")
    params = with_overrides(load_profile(name), args.set)
    name_for(params)                                   # every part of the run name, before any work
    with paths.env_override(BRAINSEG_RESULTS=paths.profile_results_dir(params.get("profile"))):
        out = run_profile(params, data_root=args.data, resume=args.resume)
    from brainseg_lib.training.distributed import world_from_env
    if world_from_env()[1] != 0:                    # under torchrun, rank 0 reports
        return 0
    g = out["global"]
    print(f"{out['run_name'] if 'run_name' in out else name}: test F1 {g['f1']:.3f}  IoU {g['iou']:.3f}  "
          f"precision {g['precision']:.3f}  recall {g['recall']:.3f}  "
          f"(train {out['train_seconds']:.0f}s) -> {out['json_path']}")
    return 0


def _cmd_evaluate(args) -> int:
    from brainseg_lib.evaluation.evaluate import evaluate_checkpoint, write_evaluation
    ev = evaluate_checkpoint(args.checkpoint, args.split, args.threshold, args.device, args.data)
    from brainseg_lib.names import check_name
    name = check_name(args.name or f"eval-{args.split}", "--name")
    j, c = write_evaluation(ev, name, {"profile": "custom"}, out_dir=args.out)
    print(json.dumps(ev.summary["global"], indent=1))
    print(f"wrote {j} and {c}")
    return 0


def _cmd_table(args) -> int:
    from brainseg_lib.study.table1 import build_table1, study_runs, to_markdown, write_table1
    table = build_table1(study_runs(scratch=False))    # the study's table: no smoke rows
    written = write_table1(table)
    print(to_markdown(table))
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def _cmd_headline(args) -> int:
    from brainseg_lib import paths
    from brainseg_lib.study.run_all import destination
    results = destination(args.profile) if args.profile else paths.results_dir()
    with paths.env_override(BRAINSEG_RESULTS=results):     # smoke results live in results/smoke/
        lines = _headline_lines(args.profile)
    print("\n".join(lines) if lines else f"no run metrics found in {results / 'metrics'}")
    return 0 if lines else 1


def _headline_lines(profile: str | None) -> list[str]:
    from brainseg_lib import paths
    from brainseg_lib.evaluation.evaluate import load_run_metrics
    from brainseg_lib.study.experiment import load_timing
    lines = []
    for r in load_run_metrics():
        if profile is None and paths.is_scratch_profile(r.get("profile")):
            continue                               # the study's headline: no scratch runs
        if profile not in (None, r.get("profile")):
            continue
        r = {**r, **load_timing(r["run_name"])}
        g = r["global"]
        lines.append(f"{r['run_name']}: test F1 {g['f1']:.3f}  IoU {g['iou']:.3f}  precision {g['precision']:.3f}  "
                     f"recall {g['recall']:.3f}  specificity {g['specificity']:.3f}  accuracy {g['accuracy']:.3f}  "
                     f"| {r.get('epochs_run')} epochs, train {r.get('train_seconds', float('nan')):.0f} s"
                     + (" (CUT by max_train_seconds)" if r.get("cut_by_time") else ""))
    return lines


def _cmd_sweep(args) -> int:
    from brainseg_lib import paths
    from brainseg_lib.study.profiles import default_profile
    from brainseg_lib.study.sweep import plan, plan_lines, run_sweep
    profile = args.profile or default_profile()
    runs = plan(profile, seeds=tuple(args.seeds))          # every name checked before any work
    folder = paths.sweep_dir_for(profile)                   # a smoke sweep stays in results/smoke/
    if args.plan:                                           # print-only, but for the sbatch file
        lines = plan_lines(runs, sweep_dir=folder)
        if args.format == "slurm":
            from brainseg_lib.fileio import atomic_write_text
            from brainseg_lib.study.sweep import slurm_script
            out = atomic_write_text(paths.ensure(folder) / "sweep.sbatch", slurm_script(lines))
            print(f"wrote {out} ({len(lines)} array tasks); submit with: sbatch {out}")
        else:
            print("\n".join(lines))
        return 0
    names = run_sweep(runs, jobs=args.jobs, skip_done=not args.force, sweep_dir=folder)
    print("finished:", ", ".join(names))
    return 0


def _cmd_release(args) -> int:
    if args.plan and args.run:
        raise SystemExit("error: give --run (a profile run) or --plan (a round's adopted trial), not both")
    if args.plan:
        from brainseg_lib.study.release_plan import release_from_plan
        info = release_from_plan(args.plan, data_root=args.data)
    else:
        from brainseg_lib.study.release import release
        info = release(args.run, data_root=args.data)
    print(json.dumps(info, indent=1))
    return 0


def _cmd_levers(args) -> int:
    from brainseg_lib.study import levers
    plan = levers.load_plan(args.plan)
    if args.rescore:
        done = levers.rescore_selection(plan, data_root=args.data)
        print(f"rescored {len(done['rescored'])} trial(s)")
        for key, why in (("no_checkpoint", "no checkpoint"),
                         ("mismatched", "checkpoint is not the JSON's best epoch or config")):
            if done[key]:
                print(f"{why}, left as they were (retrain with --force): " + ", ".join(done[key]))
    elif not args.table_only:
        levers.run_levers(plan, force=args.force)
    table = levers.lever_table(plan)
    out = levers.write_lever_table(table)
    print(levers.table_markdown(table))
    check, rule_md = levers.write_rule_table(table, plan)
    print(rule_md)
    if not check["kept"]:
        print(f"note: the '{plan['base']}' profile does not meet the rule (see lever_rule.md)")
    print(f"written {out['md']} and lever_rule.md")
    return 0


def _cmd_healthy_split(args) -> int:
    from brainseg_lib.data import healthy
    man = healthy.build_manifest(args.seed, root=args.data)
    path = healthy.write_manifest(man, args.seed)
    print(f"{path}: " + ", ".join(f"{r} {int((man['role'] == r).sum())}" for r in healthy.ROLES))
    return 0



def _cmd_update_readme(args) -> int:
    from brainseg_lib.report.readme import update_readme
    print("README.md " + ("updated" if update_readme() else "already current"))
    return 0


def _cmd_run_study(args) -> int:
    from brainseg_lib.study.notebooks import NotebookFailed
    from brainseg_lib.study.run_all import run_study
    from brainseg_lib.study.staging import RunInProgress
    try:
        t = run_study(args.profile)
    except (NotebookFailed, RunInProgress) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"[run_all] notebooks took {t['total_seconds']} s in all")
    return 0


def _add_training(sub) -> None:
    sub.add_parser("check-data", help="verify the dataset").set_defaults(fn=_cmd_check_data)
    t = sub.add_parser("train", help="train + evaluate one profile (under torchrun: DDP)")
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


def _cmd_release_levers(args) -> int:
    from brainseg_lib.study import release_choice
    from brainseg_lib.study import release_levers as rl
    plan = rl.load_plan(args.plan)
    decision = release_choice.choose(plan, screen_only=args.screen_only)
    names = release_choice.output_names(plan)
    print((rl.folder() / names["md"]).read_text())
    if decision["adopted"]:
        print(f"release trial: {decision['release_trial']} (set {decision['release_set']}), inference "
              f"{decision['release_inference']}; written {rl.folder() / names['json']}")
    else:
        print(f"this round adopted nothing: the released model stays as it is; written {rl.folder() / names['json']}")
    return 0


def _cmd_head_frames(args) -> int:
    from brainseg_lib.study.head_frames import write_head_frame_table
    written = write_head_frame_table(data_root=args.data)
    print(written["md"].read_text())
    return 0


def _cmd_evaluate_release(args) -> int:
    from brainseg_lib.report.release_card import release_summary_table, where_it_fails
    from brainseg_lib.study.release import write_card
    from brainseg_lib.study.release_eval import evaluate_release, missing_sets
    ev = evaluate_release(args.model, n_boot=args.boot, data_root=args.data)
    print(release_summary_table(ev))
    print(where_it_fails(ev))
    if missing_sets(ev):
        print("note: no figures for " + ", ".join(missing_sets(ev)) + "; the model card is left as it is")
    elif args.model is None:
        print(f"model card rewritten: {write_card()}")
    return 0


def _add_study(sub) -> None:
    rs = sub.add_parser("run-study", help="run every notebook of a profile and swap the results "
                        "in (what ./run_all.sh calls)")
    rs.add_argument("--profile", required=True, help="smoke, cpu or paper (params/<profile>.yaml)")
    rs.set_defaults(fn=_cmd_run_study)
    lv = sub.add_parser("levers", help="train the lever trials of params/levers.yaml and write "
                        "the lever table (choices on VAL and external dev only)")
    lv.add_argument("--plan", default=None, help="a levers YAML (default params/levers.yaml)")
    lv.add_argument("--force", action="store_true", help="re-run trials whose metrics exist")
    lv.add_argument("--table-only", action="store_true", help="only rebuild the table")
    lv.add_argument("--rescore", action="store_true",
                    help="recompute the finished trials' selection figures from their kept checkpoints "
                         "(nothing is trained), then rebuild the table")
    lv.set_defaults(fn=_cmd_levers)
    rv = sub.add_parser("release-levers", help="train and judge the lever trials of "
                        "params/release_levers.yaml that choose the released model (VAL and the "
                        "external dev halves only; finished trials are kept)")
    rv.add_argument("--plan", default=None, help="a release lever YAML (default params/release_levers.yaml)")
    rv.add_argument("--screen-only", action="store_true",
                    help="train no seed beyond 0 of a judged trial: one that passed its screen is "
                         "written as pending, and a later run without this flag trains its other seeds")
    rv.set_defaults(fn=_cmd_release_levers)
    hf = sub.add_parser("head-frames", help="how much of each frame the head fills, by set (Br35H TRAIN, "
                        "healthy TRAIN, both external dev halves; images only): "
                        "results/release_levers/head_frames.md")
    hf.set_defaults(fn=_cmd_head_frames)
    ev = sub.add_parser("evaluate-release", help="score the released model on Br35H TEST, the healthy "
                        "report scans and both halves of both external sets (results/metrics/release_eval.json) "
                        "and rewrite its model card")
    ev.add_argument("--model", default=None, help="a released model file (default: the released model)")
    ev.add_argument("--boot", type=int, default=2000, help="bootstrap resamples for the CIs (default 2000)")
    ev.set_defaults(fn=_cmd_evaluate_release)
    w = sub.add_parser("sweep", help="seeds x split schemes x losses as independent papermill jobs")
    w.add_argument("--profile", help="profile to sweep (default: paper on CUDA, else cpu)")
    w.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    w.add_argument("--jobs", type=int, default=1,
                   help="runs side by side (each keeps the profile's threads; with threads: 0 "
                        "the cores are split evenly)")
    w.add_argument("--force", action="store_true", help="re-run runs whose metrics exist")
    w.add_argument("--plan", action="store_true",
                   help="only print one self-contained command per run (nothing is trained)")
    w.add_argument("--format", choices=["lines", "slurm"], default="lines",
                   help="with --plan: shell lines, or an sbatch --array script in the sweep folder")
    w.set_defaults(fn=_cmd_sweep)


def _add_outputs(sub) -> None:
    sub.add_parser("table", help="rebuild Table I").set_defaults(fn=_cmd_table)
    sub.add_parser("update-readme", help="rewrite README.md's generated sections (Table I, "
                   "timings, findings, ...) from the result files").set_defaults(fn=_cmd_update_readme)
    r = sub.add_parser("release", help="publish the cpu run's best checkpoint, or the trial a round of "
                       "release lever trials adopted, + MODEL_CARD.md")
    r.add_argument("--run", default=None,
                   help="run to release (default: the cpu profile's official-split BCE+Dice seed-0 run)")
    r.add_argument("--plan", default=None,
                   help="a release lever YAML whose round adopted a trial: release that trial's seed 0 "
                   "as the rule judged it (its checkpoints, ensemble and inference settings)")
    r.set_defaults(fn=_cmd_release)
    h = sub.add_parser("headline", help="print the headline test metrics of finished runs")
    h.add_argument("--profile", default=None)
    h.set_defaults(fn=_cmd_headline)


def _cmd_score_volumes(args) -> int:
    from brainseg_lib.study.external_volumes import score_volumes, summary_line
    print(summary_line(score_volumes(args.volumes, args.checkpoint, args.runtime, args.threshold,
                                     args.device, args.n_boot)))
    return 0


def _add_volumes(sub) -> None:
    s = sub.add_parser("score-volumes", help="per-patient 3-D Dice and volume error on the external "
                       "set's whole volumes, segmented through predict (results/metrics/"
                       "external_volumes.json)")
    s.add_argument("--volumes", default=None, metavar="DIR",
                   help="folder of <patient>_flair.nii.gz + <patient>_mask.nii.gz "
                        "(default: $BRAINSEG_EXTERNAL/volumes)")
    s.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="model (default: the released model)")
    s.add_argument("--runtime", default="torch", choices=["torch", "onnx"])
    s.add_argument("--threshold", type=float, default=None,
                   help="tumour where the probability is >= T (default: the model's own)")
    s.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    s.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates (default 2000)")
    s.set_defaults(fn=_cmd_score_volumes)


def register(sub) -> None:
    """Add the study's sub-commands to ``sub`` (an argparse sub-parser action)."""
    _add_training(sub)
    _add_study(sub)
    _add_outputs(sub)
    _add_volumes(sub)
