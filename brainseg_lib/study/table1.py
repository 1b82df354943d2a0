"""Table I: the paper's cited rows, the paper's own row, and our reproduction runs.

The cited and paper rows are data, read from ``references/khadra2026_table1.csv``
(each row gives its source). Reproduction rows are read from the run JSONs of the study
(``study_runs``: ``results/metrics``, ``results/paper/metrics`` and
``results/sweep/metrics``): the pooled (``global``) native-resolution test metrics,
averaged over seeds when a configuration was run with several, and beside them the
**per-image Dice** (``Dice per image``: the mean over TEST images of each image's Dice, the
primary figure of Metrics Reloaded and nnU-Net). The paper does not say how it aggregates its
F1, so the comparison with its row uses pooled F1 (our Table I column ``F1``) and shows the
per-image figure beside it: the two differ, pooled F1 weighting large tumours more. A value a
study does not report stays empty (NaN in pandas, blank in CSV), never 0. The study's own
table (``python -m brainseg_lib table``, the README) leaves out runs of scratch profiles
(``paths.is_scratch_profile``: smoke) wherever they are found; a smoke run's notebooks keep
them, as its table is about them.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from brainseg_lib import paths
from brainseg_lib.evaluation.evaluate import load_run_metrics
from brainseg_lib.study.split_draws import split_seed_of
from brainseg_lib.fileio import atomic_write_text, write_csv
from brainseg_lib.paper import COLUMNS, PAPER_ROW, cited_rows

METRIC_COLUMNS = COLUMNS[1:]
PER_IMAGE_DICE = "Dice per image"
TABLE_COLUMNS = [COLUMNS[0], COLUMNS[1], PER_IMAGE_DICE, *COLUMNS[2:]]   # what the table shows
SHOWN = TABLE_COLUMNS[1:]
KEY_OF = {"F1": "f1", "IoU": "iou", "Precision": "precision", "Recall": "recall",
          "Specificity": "specificity", "Accuracy": "accuracy"}


def training_data_label(run: dict) -> str:
    """What the run trained on: annotated images only (the paper's setting) or with healthy scans."""
    ratio = (run.get("config") or {}).get("healthy_ratio") or 0
    return "annotated only" if not ratio else f"+ healthy scans x{ratio:g}"


LABEL_PREFIX = "Ours: "


def run_label(run: dict) -> str:
    label = (f"{LABEL_PREFIX}{run.get('profile', '?')} profile, {run.get('split_scheme', 'official')} split, "
             f"{run.get('loss', '?')}, {training_data_label(run)}")
    if run.get("run_tag"):
        label += f" [{run['run_tag']}]"
    return label + (", seed sweep" if run.get("_source") == "sweep" else "")


def label_profile(label: str) -> str | None:
    """The profile a Table I row (``run_label``) is of, or None for a cited or paper row."""
    if not label.startswith(LABEL_PREFIX) or " profile, " not in label:
        return None
    return label[len(LABEL_PREFIX):].split(" profile, ", 1)[0]


def is_scratch_row(label: str) -> bool:
    """Whether a Table I row (by its Study label) is a run of a scratch profile (smoke)."""
    profile = label_profile(label)
    return profile is not None and paths.is_scratch_profile(profile)


def study_rows_only(markdown: str) -> str:
    """A Markdown table of runs (Table I, its boundary companion) without the rows of scratch
    profiles: a smoke run found in the study's folders is never the study's result (README)."""
    return "".join(line for line in markdown.splitlines(keepends=True)
                   if not (line.startswith("| ") and is_scratch_row(line[2:].split(" | ", 1)[0])))


def study_runs(metrics_dir=None, scratch: bool = True) -> list[dict]:
    """Every run JSON of the study: results/metrics, the paper profile's committed GPU run
    (``paths.gpu_run_dir()``; skipped when a run of the same name is read already, as while
    ``run_all.sh paper`` re-runs it in its staging folder), then the sweep's (marked ``_source``).
    With ``scratch=False`` runs of scratch profiles (smoke) are left out."""
    own = load_run_metrics(metrics_dir)
    names = {r.get("run_name") for r in own}
    gpu = paths.gpu_run_dir() / "metrics"
    gpu_runs = [r for r in load_run_metrics(gpu) if r.get("run_name") not in names] if gpu.is_dir() else []
    runs = own + gpu_runs + [
        {**r, "_source": "sweep"} for r in load_run_metrics(paths.sweep_dir() / "metrics")]
    return runs if scratch else [r for r in runs if not paths.is_scratch_profile(r.get("profile"))]


def runs_by_label(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs grouped by their Table I label (``run_label``), in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(run_label(r), []).append(r)
    return groups


def metrics_folder_label(run: dict) -> str:
    """Where the run's JSON is found once run_all.sh has finished: results/sweep/metrics/ for a
    sweep run, results/metrics/ for the study's profile, results/<profile>/metrics/ for another."""
    if run.get("_source") == "sweep":
        return "results/sweep/metrics/"
    profile = run.get("profile", paths.STUDY_PROFILE)
    return "results/metrics/" if profile == paths.STUDY_PROFILE else f"results/{profile}/metrics/"


def ci_columns(col: str) -> tuple[str, str]:
    """The detail table's columns holding the low and high end of ``col``'s 95% CI."""
    return f"{col}_ci95_lo", f"{col}_ci95_hi"


def run_ci(rs: list[dict]) -> dict[str, float]:
    """The 95% bootstrap CI of each metric of a single run (resampling near-duplicate groups
    where the run has it, else images), as ``ci_columns``; NaN for a mean over several seeds,
    whose rows carry the sd over seeds instead."""
    out = {}
    boot = (rs[0].get("bootstrap_ci95_groups") or rs[0].get("bootstrap_ci95") or {}) if len(rs) == 1 else {}
    for col, key in KEY_OF.items():
        lo, hi = boot.get(key) or (math.nan, math.nan)
        out.update(zip(ci_columns(col), (float(lo), float(hi))))
    return out


def over_runs(rs: list[dict], what: str) -> str:
    """'<what> over 3 seeds', or '<what> over 15 runs: 5 split draws × seeds' for runs of
    several draws of the grouped split."""
    draws = len({split_seed_of(r) for r in rs})
    return (f"{what} over {len(rs)} runs: {draws} split draws × seeds" if draws > 1
            else f"{what} over {len(rs)} seeds")


def reproduction_rows(runs: list[dict]) -> pd.DataFrame:
    """One row per (profile, split scheme, loss): mean over seeds, with sd and seed count; a
    single run's row has its bootstrap CIs (``run_ci``). ``Runs`` names the run(s)."""
    rows = []
    for label, rs in runs_by_label(runs).items():
        seeds = sorted(r.get("seed", 0) for r in rs)
        label += f" ({over_runs(rs, 'mean ± sd')})" if len(rs) > 1 else f" (seed {seeds[0]})"
        row = {"Study": label, "n_seeds": len(rs), "Runs": ", ".join(sorted(r["run_name"] for r in rs)),
               "Reference": "this repository, " + metrics_folder_label(rs[0]) + ", ".join(
                   sorted(r["run_name"] + ".json" for r in rs)),
               "Source": "measured: pooled native-resolution test metrics"}
        for col, key in KEY_OF.items():
            vals = np.array([r["global"][key] for r in rs], dtype=float)
            row[col] = float(vals.mean())
            row[f"{col}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        dice = np.array([(r.get("per_image_mean") or {}).get("f1", math.nan) for r in rs], dtype=float)
        row[PER_IMAGE_DICE] = float(dice.mean())
        row[f"{PER_IMAGE_DICE}_sd"] = float(dice.std(ddof=1)) if len(dice) > 1 else math.nan
        rows.append({**row, **run_ci(rs)})
    return pd.DataFrame(rows)


def build_table1(runs: list[dict] | None = None, metrics_dir=None) -> pd.DataFrame:
    """Cited rows, paper row and reproduction rows (detail columns included)."""
    if runs is None:
        runs = study_runs(metrics_dir)
    ours = reproduction_rows(runs)
    table = pd.concat([cited_rows(), ours], ignore_index=True)
    if PER_IMAGE_DICE not in table:
        table[PER_IMAGE_DICE] = math.nan
    return table


BOUNDARY_COLUMNS = ["Study", "Tumour images", "Missed (no prediction)",
                    "HD95 median (% of diagonal, found tumours)", "NSD mean (tolerance 1% of diagonal)",
                    "HD95 median (px)", "HD95 mean (px)", "NSD mean (2 px)"]


def _with_scale_free(run: dict) -> dict:
    """A run's boundary summary, with the common-scale figures taken from its per-image table
    (``boundary.scale_free_from_per_image``) where it was scored before they existed."""
    from brainseg_lib.evaluation.boundary import scale_free_from_per_image
    b = run["boundary"]
    if "hd95_diag" in b or not run.get("per_image_csv"):
        return b
    for folder in (paths.metrics_dir(), paths.sweep_dir() / "metrics", paths.gpu_run_dir() / "metrics"):
        if (folder / run["per_image_csv"]).is_file():
            return {**b, **scale_free_from_per_image(pd.read_csv(folder / run["per_image_csv"]))}
    return b


def _mean_of(b: list[dict], metric: str, stat: str) -> float:
    vals = [(x.get(metric) or {}).get(stat) for x in b]         # null in a JSON: nothing to average
    return float(np.mean([math.nan if v is None else v for v in vals]))


def boundary_rows(runs: list[dict]) -> pd.DataFrame:
    """Table I's companion: boundary metrics of our runs on their TEST tumour images, mean over
    runs where there are several. First on a common scale (``evaluation/boundary.py``): HD95 as
    a share of the image diagonal over the tumours found, NSD at a tolerance of 1% of the
    diagonal, and the missed tumours (no prediction) counted apart; then the native-pixel
    figures, in which a miss counts at the image diagonal and sizes differ from image to image.
    The cited studies report none."""
    rows = []
    for label, rs in runs_by_label([r for r in runs if r.get("boundary")]).items():
        b = [_with_scale_free(r) for r in rs]
        rows.append({"Study": label + (f" ({over_runs(rs, 'mean')})" if len(rs) > 1 else ""),
                     "Tumour images": int(b[0]["hd95"]["n_images"]),
                     "Missed (no prediction)": float(np.mean([x.get("missed", math.nan) for x in b])),
                     "HD95 median (% of diagonal, found tumours)": 100 * _mean_of(b, "hd95_diag", "median"),
                     "NSD mean (tolerance 1% of diagonal)": _mean_of(b, "nsd_diag", "mean"),
                     "HD95 median (px)": _mean_of(b, "hd95", "median"),
                     "HD95 mean (px)": _mean_of(b, "hd95", "mean"),
                     "NSD mean (2 px)": _mean_of(b, "nsd", "mean")})
    return pd.DataFrame(rows, columns=BOUNDARY_COLUMNS)


def write_boundary_table(runs: list[dict] | None = None, out_dir=None) -> dict[str, Path]:
    """table1_boundary.csv and .md (rules in evaluation/boundary.py)."""
    t = boundary_rows(study_runs() if runs is None else runs)
    out = paths.ensure(Path(out_dir) if out_dir else paths.tables_dir())
    fmt = {"Missed (no prediction)": "{:.3g}", "HD95 median (% of diagonal, found tumours)": "{:.1f}",
           "NSD mean (tolerance 1% of diagonal)": "{:.3f}", "HD95 median (px)": "{:.1f}",
           "HD95 mean (px)": "{:.1f}", "NSD mean (2 px)": "{:.3f}"}
    lines = ["| " + " | ".join(BOUNDARY_COLUMNS) + " |", "|" + "---|" * len(BOUNDARY_COLUMNS)]
    lines += ["| " + " | ".join([r["Study"], str(r["Tumour images"])] + [
        "n/a" if pd.isna(r[c]) else f.format(r[c]) for c, f in fmt.items()]) + " |" for _, r in t.iterrows()]
    note = ("\nThe first three figures are on a common scale: Br35H's images run from under 200 to over "
            "1,200 pixels a side, so native pixels partly measure image size. A missed tumour (nothing "
            "predicted) is counted apart and left out of the scale-free HD95; in the native-pixel HD95 it "
            "counts at the image diagonal. Computed per TEST tumour image with MONAI "
            "(brainseg_lib/evaluation/boundary.py).\n")
    return {"csv": write_csv(t, out / "table1_boundary.csv"),
            "md": atomic_write_text(out / "table1_boundary.md", "\n".join(lines) + "\n" + note)}


class FullText(pd.DataFrame):
    """A DataFrame whose text cells show in full in a notebook and on the console: pandas cuts
    them at 50 characters, and two long row labels that differ only at the end looked alike."""

    @property
    def _constructor(self):
        return FullText

    def _repr_html_(self):
        with pd.option_context("display.max_colwidth", None):
            return super()._repr_html_()

    def __repr__(self):
        with pd.option_context("display.max_colwidth", None):
            return super().__repr__()


def differences_from_paper(table: pd.DataFrame) -> pd.DataFrame:
    """Each reproduction row minus the paper's row, per metric the paper reports (a column
    the paper leaves empty would be empty throughout, so it is left out), the rows under their
    full Table I labels (``FullText``)."""
    paper = table.loc[table["Study"] == PAPER_ROW, METRIC_COLUMNS].iloc[0]
    ours = table[table["Study"].str.startswith("Ours")]
    diff = (ours[METRIC_COLUMNS].astype(float) - paper.astype(float)).dropna(axis=1, how="all")
    return FullText(pd.concat([ours[["Study"]], diff], axis=1).reset_index(drop=True))


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
        for c in SHOWN:
            v = r[c]
            if not ours and not (isinstance(v, float) and math.isnan(v)):
                cells.append(f"{v:g}")
                continue
            cells.append(_fmt(v, r.get(f"{c}_sd", math.nan)))
        rows.append(cells)
    return rows


def to_markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _display_rows(table)]
    return "\n".join(lines) + "\n"


def _tex_escape(s: str) -> str:
    return re.sub(r"([&%$#_{}])", r"\\\1", s).replace("±", r"$\pm$")


def to_latex(table: pd.DataFrame) -> str:
    out = [r"\begin{tabular}{l" + "r" * len(SHOWN) + "}", r"\hline",
           " & ".join(TABLE_COLUMNS) + r" \\", r"\hline"]
    out += [" & ".join(_tex_escape(c) for c in cells) + r" \\" for cells in _display_rows(table)]
    out += [r"\hline", r"\end{tabular}"]
    return "\n".join(out) + "\n"


def write_table1(table: pd.DataFrame, out_dir: str | Path | None = None) -> dict[str, Path]:
    """table1.csv (exactly TABLE_COLUMNS), table1_detail.csv, table1.md and table1.tex."""
    out = paths.ensure(Path(out_dir) if out_dir else paths.tables_dir())
    written = {
        "csv": write_csv(table[TABLE_COLUMNS], out / "table1.csv"),
        "detail": write_csv(table, out / "table1_detail.csv"),
    }
    for key, text in (("md", to_markdown(table)), ("tex", to_latex(table))):
        written[key] = atomic_write_text(out / f"table1.{key}", text)
    return written
