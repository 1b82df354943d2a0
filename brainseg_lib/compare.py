"""Table I: the paper's cited rows, the paper's own row, and our reproduction runs.

The cited and paper rows are data, read from ``references/khadra2026_table1.csv``
(each row gives its source). Reproduction rows are read from the run JSONs in
``results/metrics``: the pooled (``global``) native-resolution test metrics,
averaged over seeds when a configuration was run with several. A value a
study does not report stays empty (NaN in pandas, blank in CSV), never 0.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import paths
from .evaluate import load_run_metrics, write_csv
from .fileio import atomic_write_text

COLUMNS = ["Study", "F1", "IoU", "Precision", "Recall", "Specificity", "Accuracy"]
METRIC_COLUMNS = COLUMNS[1:]
KEY_OF = {"F1": "f1", "IoU": "iou", "Precision": "precision", "Recall": "recall",
          "Specificity": "specificity", "Accuracy": "accuracy"}
PAPER_ROW = "Khadra et al. 2026 (paper)"
README_START, README_END = "<!-- TABLE1:START -->", "<!-- TABLE1:END -->"


def cited_rows(path: str | Path | None = None) -> pd.DataFrame:
    """The six cited studies and the paper's own row, with Reference and Source columns."""
    df = pd.read_csv(path or paths.PAPER_TABLE1_CSV)
    missing = set(COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{path or paths.PAPER_TABLE1_CSV} lacks columns {sorted(missing)}")
    return df


def training_data_label(run: dict) -> str:
    """What the run trained on: annotated images only (the paper's setting) or with healthy scans."""
    ratio = (run.get("config") or {}).get("healthy_ratio") or 0
    return "annotated only" if not ratio else f"+ healthy scans x{ratio:g}"


def run_label(run: dict) -> str:
    label = (f"Ours: {run.get('profile', '?')} profile, {run.get('split_scheme', 'official')} split, "
             f"{run.get('loss', '?')}, {training_data_label(run)}")
    if run.get("run_tag"):
        label += f" [{run['run_tag']}]"
    return label + (", seed sweep" if run.get("_source") == "sweep" else "")


def study_runs(metrics_dir=None) -> list[dict]:
    """Every run JSON of the study: results/metrics, then the sweep's (marked ``_source``)."""
    return load_run_metrics(metrics_dir) + [
        {**r, "_source": "sweep"} for r in load_run_metrics(paths.sweep_dir() / "metrics")]


def runs_by_label(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs grouped by their Table I label (``run_label``), in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(run_label(r), []).append(r)
    return groups


def reproduction_rows(runs: list[dict]) -> pd.DataFrame:
    """One row per (profile, split scheme, loss): mean over seeds, with sd and seed count."""
    rows = []
    for label, rs in runs_by_label(runs).items():
        seeds = sorted(r.get("seed", 0) for r in rs)
        label += (f" (mean ± sd over {len(rs)} seeds)" if len(rs) > 1 else f" (seed {seeds[0]})")
        row = {"Study": label, "n_seeds": len(rs),
               "Reference": ("this repository, " + ("results/sweep/metrics/" if rs[0].get("_source") == "sweep"
                                                   else "results/metrics/") + ", ".join(
                   sorted(r["run_name"] + ".json" for r in rs))),
               "Source": "measured: pooled native-resolution test metrics"}
        for col, key in KEY_OF.items():
            vals = np.array([r["global"][key] for r in rs], dtype=float)
            row[col] = float(vals.mean())
            row[f"{col}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def build_table1(runs: list[dict] | None = None, metrics_dir=None) -> pd.DataFrame:
    """Cited rows, paper row and reproduction rows (detail columns included)."""
    if runs is None:
        runs = study_runs(metrics_dir)
    ours = reproduction_rows(runs)
    table = pd.concat([cited_rows(), ours], ignore_index=True)
    return table


BOUNDARY_COLUMNS = ["Study", "Images", "HD95 median (px)", "HD95 mean (px)", "NSD mean"]


def boundary_rows(runs: list[dict]) -> pd.DataFrame:
    """Table I's companion: boundary metrics of our runs on their TEST tumour images (native
    resolution), mean over seeds where there are several. The cited studies report none."""
    rows = []
    for label, rs in runs_by_label([r for r in runs if r.get("boundary")]).items():
        b = [r["boundary"] for r in rs]
        rows.append({"Study": label + (f" (mean over {len(rs)} seeds)" if len(rs) > 1 else ""),
                     "Images": int(b[0]["hd95"]["n_images"]),
                     "HD95 median (px)": float(np.mean([x["hd95"]["median"] for x in b])),
                     "HD95 mean (px)": float(np.mean([x["hd95"]["mean"] for x in b])),
                     "NSD mean": float(np.mean([x["nsd"]["mean"] for x in b])),
                     "NSD tolerance (px)": b[0]["nsd_tolerance_px"]})
    return pd.DataFrame(rows, columns=BOUNDARY_COLUMNS + ["NSD tolerance (px)"])


def write_boundary_table(runs: list[dict] | None = None, out_dir=None) -> dict[str, Path]:
    """table1_boundary.csv and .md (HD95 and NSD at native resolution, rule in boundary.py)."""
    t = boundary_rows(study_runs() if runs is None else runs)
    out = paths.ensure(Path(out_dir) if out_dir else paths.tables_dir())
    lines = ["| " + " | ".join(BOUNDARY_COLUMNS) + " |", "|" + "---|" * len(BOUNDARY_COLUMNS)]
    lines += [f"| {r['Study']} | {r['Images']} | {r['HD95 median (px)']:.1f} | {r['HD95 mean (px)']:.1f} | "
              f"{r['NSD mean']:.3f} |" for _, r in t.iterrows()]
    note = (f"\nNSD tolerance: {t['NSD tolerance (px)'].iloc[0]:g} px. " if len(t) else "\n") + \
        "Computed per TEST tumour image at native resolution with MONAI (brainseg_lib/boundary.py).\n"
    return {"csv": write_csv(t, out / "table1_boundary.csv"),
            "md": atomic_write_text(out / "table1_boundary.md", "\n".join(lines) + "\n" + note)}


def differences_from_paper(table: pd.DataFrame) -> pd.DataFrame:
    """Each reproduction row minus the paper's row, per metric (empty where the paper is)."""
    paper = table.loc[table["Study"] == PAPER_ROW, METRIC_COLUMNS].iloc[0]
    ours = table[table["Study"].str.startswith("Ours")]
    diff = ours[METRIC_COLUMNS].astype(float) - paper.astype(float)
    return pd.concat([ours[["Study"]], diff], axis=1).reset_index(drop=True)


def _fmt(v, sd=math.nan) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    s = f"{v:.3f}"
    if sd is not None and not (isinstance(sd, float) and math.isnan(sd)):
        s += f" ± {sd:.3f}"
    return s


def _display_rows(table: pd.DataFrame) -> list[list[str]]:
    """Our values to 3 decimals (± sd); cited values exactly as the paper printed them."""
    rows = []
    for _, r in table.iterrows():
        cells = [str(r["Study"])]
        ours = str(r["Study"]).startswith("Ours")
        for c in METRIC_COLUMNS:
            v = r[c]
            if not ours and not (isinstance(v, float) and math.isnan(v)):
                cells.append(f"{v:g}")
                continue
            cells.append(_fmt(v, r.get(f"{c}_sd", math.nan)))
        rows.append(cells)
    return rows


def to_markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _display_rows(table)]
    return "\n".join(lines) + "\n"


def _tex_escape(s: str) -> str:
    return re.sub(r"([&%$#_{}])", r"\\\1", s).replace("±", r"$\pm$")


def to_latex(table: pd.DataFrame) -> str:
    out = [r"\begin{tabular}{l" + "r" * len(METRIC_COLUMNS) + "}", r"\hline",
           " & ".join(COLUMNS) + r" \\", r"\hline"]
    out += [" & ".join(_tex_escape(c) for c in cells) + r" \\" for cells in _display_rows(table)]
    out += [r"\hline", r"\end{tabular}"]
    return "\n".join(out) + "\n"


def write_table1(table: pd.DataFrame, out_dir: str | Path | None = None) -> dict[str, Path]:
    """table1.csv (exactly COLUMNS), table1_detail.csv, table1.md and table1.tex."""
    out = paths.ensure(Path(out_dir) if out_dir else paths.tables_dir())
    written = {
        "csv": write_csv(table[COLUMNS], out / "table1.csv"),
        "detail": write_csv(table, out / "table1_detail.csv"),
    }
    for key, text in (("md", to_markdown(table)), ("tex", to_latex(table))):
        written[key] = atomic_write_text(out / f"table1.{key}", text)
    return written


def embed_in_readme(markdown: str, readme: str | Path | None = None,
                    start: str = README_START, end: str = README_END) -> bool:
    """Replace the text between two marker comments in README.md; True if it changed."""
    readme = Path(readme or paths.PROJECT_ROOT / "README.md")
    text = readme.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{readme} lacks the markers {start} ... {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{markdown}{end}{tail}"
    if new != text:
        atomic_write_text(readme, new)
        return True
    return False


TIMINGS_START, TIMINGS_END = "<!-- TIMINGS:START -->", "<!-- TIMINGS:END -->"


def timings_markdown(timings_dir: str | Path | None = None) -> str:
    """A table of the run_all.sh wall times recorded in results/timings/*.json."""
    import json
    folder = Path(timings_dir) if timings_dir else paths.results_dir() / "timings"
    rows = []
    for p in sorted(folder.glob("run_all_*.json")):
        t = json.loads(p.read_text())
        nbs = ", ".join(f"{k.split('_')[0]}: {v} s" for k, v in t["notebooks"].items())
        rows.append(f"| `{t['profile']}` | {t['total_seconds']} s | {nbs} | {t['machine']} | {t['date']} |")
    if not rows:
        return "_No timed run yet: run `./run_all.sh`._\n"
    head = ["| profile | notebooks total | per notebook | machine | date |", "|---|---|---|---|---|"]
    return "\n".join(head + rows) + "\n"


SPEED_START, SPEED_END = "<!-- SPEED:START -->", "<!-- SPEED:END -->"


def speed_markdown(run_name: str = "cpu-official-bce_dice-seed0") -> str:
    """The "How fast" figures, read from the cpu run's JSON and the benchmark JSONs."""
    import json
    lines = []
    run_json = paths.metrics_dir() / f"{run_name}.json"
    if run_json.is_file():
        from .experiment import load_timing
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
    for p in sorted((paths.results_dir() / "benchmarks").glob("*.json")):
        b = json.loads(p.read_text())
        if b.get("kind") == "predict_overlay":
            lines.append(f"- **`predict --overlay` on a {b['side']}x{b['side']} scan** (`{p.name}`, "
                         f"{b['threads']} threads): {b['seconds_median']} s per scan (median of "
                         f"{len(b['seconds_runs'])}), of which {b['outline_seconds_median']} s draw the outline.")
            continue
        lines.append(
            f"- **Benchmark `{p.name}`** ({b['device_name']}, {b['threads']} threads, "
            f"{b['image_size']}x{b['image_size']}, base {b['base_width']}, batch {b['batch_size']}): "
            f"{b['train_images_per_s']} training images/s, {b['achieved_gflops']} GFLOP/s achieved "
            f"vs {b['peak_matmul_gflops']} GFLOP/s fp32 matmul peak (ratio {b['ratio_to_peak']}); "
            f"epoch {b['ours_epoch_s']} s vs {b['naive_epoch_s']} s for the naive JPEG pipeline "
            f"(x{b['speedup_vs_naive']}); inference p50 {b['infer_ms_p50']} ms, p95 "
            f"{b['infer_ms_p95']} ms per image"
            + (f"; keeping freed memory (glibc malloc tuning) x{b['speedup_from_malloc_tuning']} "
               f"over the default allocator, timed just before in the same run "
               f"({b['default_malloc_images_per_s']} images/s; minor page faults per step "
               f"{b['default_malloc_page_faults_per_step']} -> {b['minor_page_faults_per_step']})."
               if "default_malloc_page_faults_per_step" in b else "."))
    return ("\n".join(lines) + "\n") if lines else "_Not measured yet._\n"
