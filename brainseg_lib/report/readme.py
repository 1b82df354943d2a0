"""README.md's generated sections (Table I, run_all timings, speed figures, findings, detection, boundary,
external and lever tables), each copied between its ``<!-- NAME:START/END -->`` markers from its file."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from brainseg_lib import paths
from brainseg_lib.fileio import atomic_write_text
from brainseg_lib.report.timings import POINTER, timings_markdown, write_timings_page


def benchmarks_readme(folder=None) -> str:
    """A Markdown table of every benchmark JSON in results/benchmarks (written by ``bench``)."""
    folder = Path(folder) if folder else paths.benchmarks_dir()
    keys = ["train_images_per_s", "speedup_from_malloc_tuning", "ours_epoch_s", "naive_epoch_s", "speedup_vs_naive",
            "achieved_gflops", "peak_matmul_gflops", "ratio_to_peak", "infer_ms_p50",
            "infer_ms_p95", "infer_ms_per_image_onnx", "onnx_speedup_vs_torch", "peak_rss_mb",
            "threads", "torch_version"]
    rows = []
    for p in sorted(folder.glob("*.json")):
        r = json.loads(p.read_text())
        if r.get("kind") in ("predict_overlay", "predict_volume"):
            continue
        rows.append(f"| `{p.name}` | {r['device_name']} | {r['image_size']} / {r['base_width']} / "
                    f"{r['batch_size']} | " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    head = ("# Benchmarks\n\nWritten by `python -m brainseg_lib bench --profile P`; each row is one "
            "run, and every ratio in it was measured within that run (see `brainseg_lib/study/bench.py` "
            "for what is timed).\n\n| file | device | size / base / batch | " + " | ".join(keys) +
            " |\n|" + "---|" * (len(keys) + 3) + "\n")
    trials = profile_trials_markdown(folder / "profile_trials")
    if trials:
        trials = ("\n## Speed trials that chose the previous cpu profile\n\nThe lever trials "
                  "(`results/levers/`) have since replaced that profile with `params/cpu.yaml`'s; these rows "
                  "are kept as measured. Each row is one full `python -m brainseg_lib train --profile cpu "
                  "--set ...` run on the 2-core machine, copied into `profile_trials/<trial>/`. Test F1 at "
                  "the snapshots is reported, as everywhere in this study. The project's speed targets are "
                  "stated in test F1 at these snapshots, so the trials were compared on them: the choice has "
                  "seen the test set, and the chosen profile's snapshot scores may be optimistic for that "
                  "reason. Validation alone separates 64 from 80 px (higher validation Dice at 60 s) but not "
                  "lr 1e-3 from 2e-3 at 64 px. The dense trial shows how much a mark's score depends on where "
                  "in training it lands. Detection AUC (notebook 06, all unseen scans) is given where the "
                  "full `run_all` was run with that trial's settings.\n\n" + trials)
    return head + "\n".join(rows) + "\n" + trials


def _detection_cell(path: Path) -> str:
    """'area AUC / max-prob AUC' on all unseen scans from notebook 06's JSON, or '-'."""
    if not path.is_file():
        return "-"
    rep = json.loads(path.read_text())["report"]["all"]
    return f"{rep['area_frac']['auc']:.3f} / {rep['max_prob']['auc']:.3f}"


def _sweep_cell(sweep_dir: Path, profile: str) -> str:
    """'official vs grouped' test F1 (mean ± sd) of a kept seed sweep, or '-'."""
    if not (sweep_dir / "metrics").is_dir():
        return "-"
    from brainseg_lib.study.seed_spread import findings, load_sweep
    rep = findings(load_sweep(profile, sweep_dir))
    o, g = rep["official"], rep["grouped"]
    if o["f1_mean"] is None or g["f1_mean"] is None:
        return "-"
    return (f"{o['f1_mean']:.3f} ± {o['f1_sd'] or 0:.3f} vs {g['f1_mean']:.3f} ± "
            f"{g['f1_sd'] or 0:.3f} ({o['n_seeds']}/{g['n_seeds']} seeds)")


def profile_trials_markdown(folder=None) -> str:
    """A Markdown table of the training trials that chose the cpu profile.

    ``folder`` (default ``results/benchmarks/profile_trials``) holds ``trials.csv``
    (columns ``trial``, ``note``) and one sub-folder per trial with the run's metrics JSON
    (``metrics.json``), ``history.csv`` and, for a run written since the clock columns moved out
    of it, ``history_timing.csv``, copied from ``python -m brainseg_lib train``
    runs, plus ``detection.json`` (notebook 06) where the detection study was run on that
    trial's model and ``sweep/metrics/*.json`` where the seed sweep was run with its settings.
    Validation Dice at a mark is that of the last epoch finished by then.
    """
    folder = Path(folder) if folder else paths.benchmarks_dir() / "profile_trials"
    index = folder / "trials.csv"
    if not index.is_file():
        return ""
    head = ("| trial | base @ size | lr | epochs | train s | val Dice @ 60 s / 120 s / best | "
            "test F1 snapshot @ 60 s / 120 s | snapshots 100-150 s: n, min-max | first mark >= 0.826 | "
            "test F1 (final) | detection AUC, area / max prob | seed sweep: official vs grouped F1 | "
            "note |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    from brainseg_lib.training.run_state import read_history
    rows = []
    for t in pd.read_csv(index).itertuples():
        run = json.loads((folder / t.trial / "metrics.json").read_text())
        hist = read_history(folder / t.trial)
        cfg, snap = run["config"], run.get("test_f1_at_seconds", {})

        def val_at(s):
            if "train_seconds" not in hist:            # a trial copied without history_timing.csv
                return "-"
            done = hist[hist["train_seconds"] <= s]
            return f"{done['val_dice'].iloc[-1]:.3f}" if len(done) else "-"

        def snap_at(s):
            return f"{snap[s]:.3f}" if s in snap else "-"
        near = [v for k, v in snap.items() if 100 <= float(k) < 150]
        det = _detection_cell(folder / t.trial / "detection.json")
        sweep = _sweep_cell(folder / t.trial / "sweep", run.get("profile", "cpu"))
        spread = f"{len(near)}, {min(near):.3f}-{max(near):.3f}" if near else "-"
        rows.append(
            f"| `{t.trial}` | {cfg['base_width']} @ {cfg['image_size']} | {cfg['lr']:g} | "
            f"{run['epochs_run']} | {run['train_seconds']:.0f} | {val_at(60)} / {val_at(120)} / "
            f"{run['best_val_dice']:.3f} | {snap_at('60')} / {snap_at('120')} | {spread} | "
            f"{run['seconds_to_target'] if run['seconds_to_target'] is not None else 'none'} | "
            f"{run['global']['f1']:.3f} | {det} | {sweep} | {t.note} |")
    return head + "\n".join(rows) + "\n"


README_START, README_END = "<!-- TABLE1:START -->", "<!-- TABLE1:END -->"


def replace_section(text: str, markdown: str, start: str = README_START, end: str = README_END,
                    where: str = "README.md") -> str:
    """``text`` with what lies between the two marker comments replaced by ``markdown``."""
    if start not in text or end not in text:
        raise ValueError(f"{where} lacks the markers {start} ... {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{markdown}{end}{tail}"


def embed_in_readme(markdown: str, readme: str | Path | None = None,
                    start: str = README_START, end: str = README_END) -> bool:
    """Replace the text between two marker comments in README.md; True if it changed."""
    readme = Path(readme or paths.readme())
    text = readme.read_text()
    new = replace_section(text, markdown, start, end, str(readme))
    if new != text:
        atomic_write_text(readme, new)
    return new != text


TIMINGS_START, TIMINGS_END = "<!-- TIMINGS:START -->", "<!-- TIMINGS:END -->"


SPEED_START, SPEED_END = "<!-- SPEED:START -->", "<!-- SPEED:END -->"


def speed_markdown(run_name: str | None = None) -> str:
    """The "How fast" figures, read from the cpu run's JSON and the benchmark JSONs."""
    import json

    from brainseg_lib.study.experiment import released_run_name
    run_name = run_name or released_run_name()
    lines = []
    run_json = paths.metrics_dir() / f"{run_name}.json"
    if run_json.is_file():
        from brainseg_lib.study.experiment import load_timing
        r = {**json.loads(run_json.read_text()), **load_timing(run_name)}
        secs = r.get("snapshot_seconds", {})
        marks = ", ".join(f"epoch {x['epoch']} ({secs.get(str(x['epoch']), float('nan')):.0f} s): "
                          f"{x['test_f1']:.3f}" for x in r.get("snapshots", []))
        first = (f"epoch {r['epochs_to_target']}, reached after {r.get('seconds_to_target') or float('nan'):.0f} s"
                 if r.get("epochs_to_target") is not None else "none")
        lines.append(
            f"- **Time to accuracy (`{run_name}`, {r['device']}, {r['config']['threads'] or 'all'} "
            f"threads).** {r['epochs_run']} epochs (the budget is epochs, not seconds) in "
            f"{r['train_seconds']:.0f} s of training ({r['wall_seconds']:.0f} s with per-epoch "
            f"validation); test F1 {r['global']['f1']:.3f} (pooled, native resolution). Snapshot "
            f"test F1 by epoch (seconds of training when reached): {marks or 'none'}. First snapshot "
            f"at or above the paper's {r['target_f1']}: {first}.")
    for p in sorted((paths.benchmarks_dir()).glob("*.json")):
        b = json.loads(p.read_text())
        if b.get("kind") == "predict_volume":
            lines.append(f"- **`predict` on a {'x'.join(map(str, b['shape']))} {b['dtype']} NIfTI volume** "
                         f"(`{p.name}`, {b['runtime']}, {b['threads']} threads, nice {b['nice']}, load "
                         f"average {b['load_average_1min']}): {b['seconds_median']} s per volume (median of "
                         f"{len(b['seconds_runs'])} whole runs; target {b['target_seconds']} s).")
            continue
        if b.get("kind") == "predict_overlay":
            lines.append(f"- **`predict --overlay` on a {b['side']}x{b['side']} scan** ({b.get('scan', 'synthetic')}; "
                         f"`{p.name}`, {b['threads']} threads): {b['seconds_median']} s per scan (median of "
                         f"{len(b['seconds_runs'])}), of which {b['outline_seconds_median']} s draw the outline"
                         + (f"; a flat synthetic image of that size: {b['synthetic_seconds_median']} s."
                            if "synthetic_seconds_median" in b else "."))
            continue
        lines.append(
            f"- **Benchmark `{p.name}`** ({b['device_name']}, {b['threads']} threads, "
            f"{b['image_size']}x{b['image_size']}, base {b['base_width']}, batch {b['batch_size']}): "
            f"{b['train_images_per_s']} training images/s, {b['achieved_gflops']} GFLOP/s achieved "
            f"vs {b['peak_matmul_gflops']} GFLOP/s {b.get('peak_matmul_dtype', 'float32')} matmul peak "
            f"(ratio {b['ratio_to_peak']}); "
            f"epoch {b['ours_epoch_s']} s vs {b['naive_epoch_s']} s for the naive JPEG pipeline "
            f"(x{b['speedup_vs_naive']}); inference p50 {b['infer_ms_p50']} ms, p95 "
            f"{b['infer_ms_p95']} ms per image"
            + (f" (onnxruntime {b['infer_ms_per_image_onnx']} ms, x{b['onnx_speedup_vs_torch']} "
               "in the same run)" if "infer_ms_per_image_onnx" in b else "")
            + (f"; peak GPU memory {b['peak_gpu_mb']} MiB" if "peak_gpu_mb" in b else "")
            + (f"; torch.compile x{b['compile_speedup']} ({b['compiled_train_images_per_s']} images/s, "
               f"first step {b['compile_first_step_s']} s)" if "compile_speedup" in b else "")
            + (f"; keeping freed memory (glibc malloc tuning) x{b['speedup_from_malloc_tuning']} "
               f"over the default allocator, timed just before in the same run "
               f"({b['default_malloc_images_per_s']} images/s; minor page faults per step "
               f"{b['default_malloc_page_faults_per_step']} -> {b['minor_page_faults_per_step']})."
               if "default_malloc_page_faults_per_step" in b else "."))
    return ("\n".join(lines) + "\n") if lines else "_Not measured yet._\n"


# README section -> the file its text is read from (written by the study's notebooks)
README_SECTIONS = (("findings.md", "FINDINGS"), ("detection_table.md", "DETECTION"),
                   ("detection_seeds.md", "DETECTION_SEEDS"), ("table1_boundary.md", "BOUNDARY"),
                   ("external_validation.md", "EXTERNAL"), ("release_eval.md", "RELEASE_EVAL"),
                   ("release_targets.md", "RELEASE_TARGETS"))


def update_readme(readme: str | Path | None = None) -> bool:
    """Rewrite every generated section of README.md from the result files, in one write;
    True if it changed.

    Table I, the headline, the run_all timings and the speed figures, the findings, detection,
    boundary, external-validation and lever tables: each lives between ``<!-- NAME:START -->``
    and ``<!-- NAME:END -->`` and is copied from the file the study wrote (the two tables of
    runs without rows of scratch profiles, ``table1.study_rows_only``)."""
    from brainseg_lib.report.key_findings import key_findings_markdown
    from brainseg_lib.study.table1 import study_rows_only
    readme = Path(readme or paths.readme())
    sections = [(study_rows_only((paths.tables_dir() / "table1.md").read_text()), README_START, README_END),
                (headline_markdown(), HEADLINE_START, HEADLINE_END),
                (profiles_markdown(), PROFILES_START, PROFILES_END),
                (POINTER["TIMINGS"], TIMINGS_START, TIMINGS_END),    # clock figures: timings.md
                (POINTER["SPEED"], SPEED_START, SPEED_END),
                (key_findings_markdown(page_href="results/report/{page}.html") or "_No results yet._\n",
                 "<!-- KEY_FINDINGS:START -->", "<!-- KEY_FINDINGS:END -->")]
    sources = [(paths.tables_dir() / name, marker) for name, marker in README_SECTIONS]
    sources += [(paths.levers_dir() / "lever_table.md", "LEVERS"),
                (paths.levers_dir() / "lever_rule.md", "LEVER_RULE"),
                (paths.release_levers_dir() / "lever_table.md", "RELEASE_LEVERS")]
    if any(paths.release_levers_dir().glob("decision*.json")):
        from brainseg_lib.report.release_card import later_rounds_markdown
        sections.append((later_rounds_markdown(), "<!-- RELEASE_ROUNDS:START -->", "<!-- RELEASE_ROUNDS:END -->"))
    sections += [(study_rows_only(path.read_text()) if marker == "BOUNDARY" else path.read_text(),
                  f"<!-- {marker}:START -->", f"<!-- {marker}:END -->")
                 for path, marker in sources if path.is_file()]
    write_timings_page(timings_markdown(), speed_markdown())
    text = new = readme.read_text()
    for markdown, start, end in sections:
        new = replace_section(new, markdown, start, end, str(readme))
    if new != text:
        atomic_write_text(readme, new)
    return new != text


HEADLINE_START, HEADLINE_END = "<!-- HEADLINE:START -->", "<!-- HEADLINE:END -->"
PROFILES_START, PROFILES_END = "<!-- PROFILES:START -->", "<!-- PROFILES:END -->"
PROFILE_ROLES = {
    "smoke": ("a pipeline check on a few images; the defaults stored in the notebooks",
              "CI (`./run_tests.sh`); `./run_all.sh smoke` writes to `results/smoke/` (git-ignored)"),
    "cpu": ("a narrower, smaller U-Net for a 2-core laptop, with the choices of the lever table below",
            "`./run_all.sh` without a GPU; the released model"),
    "paper": ("the paper's configuration, unchanged", "`./run_all.sh` with CUDA"),
}


def profile_settings(p: dict) -> str:
    """The settings of a merged profile in one line, read from ``params/``."""
    parts = [f"{p['image_size']}x{p['image_size']}, base width {p['base_width']}, batch {p['batch_size']}",
             f"Adam lr {p['lr']:g}, schedule {p['schedule']}, {p['epochs']} epochs",
             f"threads {p['threads'] or 'all'}, loss {p['loss']}",
             f"healthy scans x{p['healthy_ratio']:g}, input {p['input_norm']}, augmentation {p['augment_level']}"]
    if p.get("limit_train"):
        parts.append(f"{p['limit_train']}/{p['limit_val']}/{p['limit_test']} images")
    return "; ".join(parts)


def profiles_markdown() -> str:
    """The profiles table of the README, generated from ``params/``."""
    from brainseg_lib.study.profiles import known_profiles, load_profile
    rows = ["| profile | what | settings (`params/base.yaml` + `params/<profile>.yaml`) | used by |",
            "|---|---|---|---|"]
    for name in known_profiles():
        what, used = PROFILE_ROLES.get(name, ("", ""))
        rows.append(f"| `{name}` | {what} | {profile_settings(load_profile(name))} | {used} |")
    return "\n".join(rows) + "\n"


def headline_markdown() -> str:
    """The README's first result, read from the released run's JSON, the seed sweep's
    findings and the external validation JSON."""
    from brainseg_lib.paper import paper_figure
    from brainseg_lib.report.findings import seeds_headline
    from brainseg_lib.study.experiment import released_run_name
    run_json = paths.metrics_dir() / f"{released_run_name()}.json"
    if not run_json.is_file():
        return "_No finished run yet: run `./run_all.sh`._\n"
    run = json.loads(run_json.read_text())
    g, dice = run["global"], run.get("per_image_mean", {}).get("f1")
    from brainseg_lib.report.release_card import from_study_run
    who = "released model" if from_study_run() else "the study's cpu run (Table I)"
    lines = [f"- **Br35H TEST (official split), {who}:** F1 {g['f1']:.3f} pooled over pixels"
             + (f" (mean Dice per image {dice:.3f})" if dice is not None else "") + f", IoU {g['iou']:.3f}, "
             f"precision {g['precision']:.3f}, recall {g['recall']:.3f}; the paper reports F1 "
             f"{paper_figure('F1'):.3f}, IoU {paper_figure('IoU'):.2f}, precision "
             f"{paper_figure('Precision'):.3f}, recall {paper_figure('Recall'):.3f}."]
    honest = paths.metrics_dir() / "honest_evaluation.json"
    if honest.is_file() and (line := seeds_headline(json.loads(honest.read_text()))):
        lines.append(line)
    from brainseg_lib.report.release_card import headline_line, load
    ev = load()
    if ev and (line := headline_line(ev)):
        lines.append(line)
    return "\n".join(lines + gpu_run_lines()) + "\n"


def gpu_run_lines(profile: str = "paper") -> list[str]:
    """The paper profile's GPU run (``paths.gpu_run_dir()``) in one README line: where it trained
    (timing.json, else its JSON), TEST F1, its epochs' times (history.csv), its benchmark."""
    import json

    import pandas as pd

    from brainseg_lib.paper import paper_figure
    from brainseg_lib.study.experiment import load_timing, name_for
    from brainseg_lib.study.profiles import load_profile
    from brainseg_lib.training.run_state import read_history
    run_name = name_for(load_profile(profile))
    run_json = paths.gpu_run_dir() / "metrics" / f"{run_name}.json"
    history = paths.gpu_run_dir() / "runs" / run_name / "history.csv"
    if not (run_json.is_file() and history.is_file()):
        return []
    r, h = json.loads(run_json.read_text()), read_history(history.parent).iloc[-1]
    timing = load_timing(run_name, paths.gpu_run_dir() / "runs")
    device = str(r.get("device") or "an unrecorded device")
    where = timing.get("gpu") or ("a GPU" if device.startswith("cuda") else f"{device}, not a GPU")
    g = r["global"]
    line = (f"- **The paper's configuration, trained on {where} (`paper` profile, seed {r['seed']}):** "
            f"TEST F1 {g['f1']:.3f}, IoU {g['iou']:.3f}, precision {g['precision']:.3f}, recall "
            f"{g['recall']:.3f} (paper: F1 {paper_figure('F1'):.3f}); {int(h['epoch'])} epochs in "
            f"{h['wall_seconds']:.0f} s of wall time, {h['train_seconds']:.0f} s of it in optimiser steps")
    if timing.get("peak_gpu_mb"):
        line += f", {timing['peak_gpu_mb'] / 1024:.1f} GiB of GPU memory allocated at its peak in training"
    bench = paths.benchmarks_dir() / "cuda-paper.json"
    if bench.is_file():
        b = json.loads(bench.read_text())
        line += (f"; benchmarked on {b['device_name']} (`bench --profile paper`), the training step runs at "
                 f"{b['achieved_gflops'] / 1000:.0f} TFLOP/s, {b['ratio_to_peak']:.2f} of the "
                 f"{b['peak_matmul_dtype']} matmul peak measured beside it "
                 f"({b['peak_matmul_gflops'] / 1000:.0f} TFLOP/s), with {b['peak_gpu_mb'] / 1024:.1f} GiB "
                 "of GPU memory at its peak")
    if r.get("run_tag"):
        line += f" [{r['run_tag']}: `{paths.display_path(run_json)}` says how]"
    return [line + "."]
