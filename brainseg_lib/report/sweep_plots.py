"""Figures of the seed and split-draw sweep (notebook 08: every run's TEST F1, where a reader
can see the spread that the verdicts' CIs resample) and of the lever trials that chose the cpu
profile (notebook 09: the lever table as panels, one per selection figure)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from brainseg_lib.study.seed_spread import SCHEME_WORDS, draw_column


def run_columns(runs: pd.DataFrame, loss: str = "bce_dice") -> list[tuple[str, pd.DataFrame]]:
    """(label, runs) per split scheme and draw of ``loss``'s runs, in reading order: the
    official split, each draw of the grouped split, the stricter grouped split."""
    g = runs[runs["loss"] == loss]
    draws = draw_column(g)
    out = []
    for scheme in SCHEME_WORDS:
        s = g[g["split_scheme"] == scheme]
        for d in sorted(draws[s.index].unique()):
            label = SCHEME_WORDS[scheme] + (f"\ndraw {d}" if (draws[g["split_scheme"] == scheme] > 0).any() else "")
            out.append((label, s[draws[s.index] == d]))
    return out


def runs_strip(runs: pd.DataFrame, loss: str = "bce_dice", metric: str = "f1"):
    """One column per split (and per draw of the grouped split), a dot per seed's pooled TEST
    ``metric`` and a bar at the column's mean."""
    cols = run_columns(runs, loss)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.0 + 0.9 * len(cols)), 3.8))
    colours = {"official": "tab:blue", "grouped": "tab:orange", "stricter grouped": "tab:green"}
    for i, (label, r) in enumerate(cols):
        colour = colours[label.split("\n")[0]]
        v = r[metric].to_numpy(dtype=float)
        jitter = np.linspace(-0.12, 0.12, len(v)) if len(v) > 1 else np.zeros(1)
        ax.scatter(i + jitter, v, color=colour, s=28, zorder=3, label=None)
        ax.plot([i - 0.28, i + 0.28], [v.mean()] * 2, color=colour, lw=2.5)
    ax.set_xticks(range(len(cols)), [c[0] for c in cols], fontsize=9)
    ax.set_ylabel(f"pooled TEST {metric.upper()} (one dot per seed)")
    ax.set_title("Every run of the sweep: seeds and split draws (bar: mean)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


# the lever table's selection figures: column, axis label, whether higher is better
LEVER_PANELS = (("val_f1", "Br35H VAL F1", True),
                ("healthy_val_marked", "healthy VAL scans marked (share)", False),
                ("ext_dev_pooled_f1", "TCGA-LGG dev pooled F1", True),
                ("ext_dev_missed_share", "TCGA-LGG dev tumour slices missed (share)", False))


def lever_panels(table: pd.DataFrame):
    """The lever table (``results/levers/lever_table.csv``) as one panel per selection figure,
    a row per trial (forward selection from the paper's setting, top to bottom); the share of
    missed tumour slices comes from the table's ``missed/tumour`` column."""
    t = table.copy()
    parts = t["ext_dev_missed"].astype(str).str.extract(r"^(\d+)/(\d+)$").astype(float)
    t["ext_dev_missed_share"] = parts[0] / parts[1]          # NaN where a trial has no figure
    fig, axes = plt.subplots(1, len(LEVER_PANELS), figsize=(3.1 * len(LEVER_PANELS) + 1.6, 0.9 + 0.42 * len(t)),
                             sharey=True)
    y = np.arange(len(t))
    for ax, (col, label, higher) in zip(axes, LEVER_PANELS):
        v = t[col].to_numpy(dtype=float)
        if np.isnan(v).all():
            ax.set_xlabel(label + "\n(not measured)", fontsize=8)
            continue
        best = np.nanargmax(v) if higher else np.nanargmin(v)
        ax.hlines(y, np.nanmin(v), v, color="0.85", lw=1)
        ax.scatter(v, y, color=["tab:red" if i == best else "tab:blue" for i in range(len(v))], s=30, zorder=3)
        ax.set_xlabel(label + ("\n(higher is better)" if higher else "\n(lower is better)"), fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=8)
    axes[0].set_yticks(y, t["tag"])
    axes[0].invert_yaxis()
    fig.suptitle("Lever trials (one seed each; red: the best trial on each figure)", fontsize=10)
    fig.tight_layout()
    return fig
