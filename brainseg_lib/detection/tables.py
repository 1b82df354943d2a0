"""Detection tables: the report table with CIs, the group-against-image CI comparison and the
per-seed table, as DataFrames and Markdown.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainseg_lib.detection.scores import RATES
from brainseg_lib.fileio import atomic_write_text

SEED_COLUMNS = {"auc": "AUC", "youden_sensitivity": "sensitivity (Youden)",
                "youden_specificity": "specificity (Youden)",
                "fixed_sensitivity_sensitivity": "sensitivity (fixed-sensitivity threshold)",
                "fixed_sensitivity_specificity": "specificity (fixed-sensitivity threshold)",
                "roc_specificity_at_sensitivity": "ROC specificity at sensitivity 0.90"}


def seed_markdown(seeds: pd.DataFrame) -> str:
    """Mean ± sd over the sweep's seeds of each operating-point figure (``seed_table``)."""
    if seeds.empty:
        return "_No seed sweep with detection figures yet._\n"
    lines = [f"| figure (all report scans, area score) | mean ± sd over {len(seeds)} seeds |", "|---|---|"]
    for col, label in SEED_COLUMNS.items():
        lines.append(f"| {label} | {seeds[col].mean():.3f} ± {seeds[col].std(ddof=1) if len(seeds) > 1 else 0:.3f} |")
    return "\n".join(lines) + "\n"


def _num(v) -> float:
    """A JSON value back to a float (None -> NaN)."""
    return float("nan") if v is None else float(v)


def _fmt_ci(v, ci) -> str:
    v, lo, hi = _num(v), _num(ci[0]), _num(ci[1])
    return "n/a" if np.isnan(v) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


TABLE_COLUMNS = ("Task", "Images", "Positives", "Negatives", "Sensitivity", "Specificity",
                 "Accuracy", "AUC")


def detection_table(summary: dict) -> pd.DataFrame:
    """Rows of the detection results table (primary score): all report images, then without
    near-duplicates of TRAIN, VAL or the hold-out. Numeric columns, with ``<metric>_ci_low`` /
    ``_ci_high``."""
    k = summary["primary_score"]
    rows = []
    points = [("report", subset, label) for subset, label in
              (("all", "all unseen scans"),
               ("without_near_duplicates", "without near-duplicates of TRAIN, VAL or the hold-out"))]
    if "report_at_fixed_sensitivity" in summary:
        points.append(("report_at_fixed_sensitivity", "all",
                       f"all unseen scans, threshold for sensitivity >= {summary['fixed_sensitivity']:g} on validation"))
    for block, subset, label in points:
        m = summary[block][subset][k]
        row = {"Task": f"Image-level tumour detection ({label}; score: {k})", "Images": m["images"],
               "Positives": m["positives"], "Negatives": m["negatives"]}
        for col, key in (("Sensitivity", "sensitivity"), ("Specificity", "specificity"),
                         ("Accuracy", "accuracy"), ("AUC", "auc")):
            row[col] = _num(m[key])
            row[f"{col}_ci_low"], row[f"{col}_ci_high"] = map(_num, m["ci95"][key])
        rows.append(row)
    df = pd.DataFrame(rows)
    ci = [c for c in df.columns if c not in TABLE_COLUMNS]
    return df[list(TABLE_COLUMNS) + ci]


def table_markdown(table: pd.DataFrame) -> str:
    """The table with '0.912 [0.890, 0.931]' cells (value and 95% bootstrap CI)."""
    def cell(r, c):
        if c in ("Task", "Images", "Positives", "Negatives"):
            return str(r[c])
        return _fmt_ci(r[c], (r[c + "_ci_low"], r[c + "_ci_high"]))
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(cell(r, c) for c in TABLE_COLUMNS) + " |" for _, r in table.iterrows()]
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, out_dir) -> dict[str, Path]:
    """detection_table.csv and detection_table.md in ``out_dir``."""
    from brainseg_lib.fileio import write_csv
    out = Path(out_dir)
    md = out / "detection_table.md"
    atomic_write_text(md, table_markdown(table))
    return {"csv": write_csv(table, out / "detection_table.csv"), "md": md}


def metrics_frame(summary: dict) -> pd.DataFrame:
    """Long table of the report metrics: subset x score, value and CI per metric."""
    rows = []
    for subset, by_score in summary["report"].items():
        for k, m in by_score.items():
            row = {"subset": subset, "score": k, "primary": k == summary["primary_score"],
                   "images": m["images"], "threshold": m["threshold"]}
            for r in RATES:
                row[r] = _num(m[r])
                row[f"{r}_ci"] = "[{:.3f}, {:.3f}]".format(*map(_num, m["ci95"][r]))
            rows.append(row)
    return pd.DataFrame(rows)


def ci_comparison(summary: dict) -> pd.DataFrame:
    """Per subset and rate (primary score): the value, the group-bootstrap CI (``ci95``) and
    the image-bootstrap CI (``ci95_images``), and how many times wider the first is."""
    k = summary["primary_score"]
    rows = []
    for subset, by_score in summary["report"].items():
        m = by_score[k]
        for r in RATES:
            g, i = [list(map(_num, m[c][r])) for c in ("ci95", "ci95_images")]
            rows.append({"subset": subset, "figure": r, "value": _num(m[r]),
                         "group CI low": g[0], "group CI high": g[1],
                         "image CI low": i[0], "image CI high": i[1],
                         "width ratio": (g[1] - g[0]) / (i[1] - i[0]) if i[1] > i[0] else float("nan")})
    return pd.DataFrame(rows)
