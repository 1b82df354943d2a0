"""Figures of the released model on every evaluation set (notebook 10), drawn from the files
``study.release_eval`` writes: per-slice Dice distributions by set, by tumour type, by site and
by tumour-size quartile, with the tumour slices given no prediction counted in each label, and
the release lever table as a CI plot."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

SET_LABELS = {"br35h_test": "Br35H TEST", "lgg_test": "TCGA-LGG test", "lgg_dev": "TCGA-LGG dev",
              "figshare_test": "Figshare test", "figshare_dev": "Figshare dev"}


def dice_strips(groups: dict[str, pd.DataFrame], title: str, ax=None):
    """One box + jittered strip of per-slice Dice (tumour slices) per group; the x label of each
    group says how many of its tumour slices got no prediction (Dice 0 from a miss)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(groups) + 1.5), 3.8))
    rng = np.random.default_rng(0)
    labels, data = [], []
    for name, df in groups.items():
        t = df[df["tumour"]]
        data.append(t["dice"].to_numpy())
        missed = int((~t["marked"]).sum())
        labels.append(f"{name}\n{missed}/{len(t)} missed")
    ax.boxplot(data, widths=0.55, showfliers=False, medianprops={"color": "black"})
    for i, d in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(d)), d, s=6, alpha=0.35, color="tab:cyan",
                   edgecolors="none")
    many = len(labels) > 5            # long labels side by side overlap: slant them
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=9,
                  rotation=35 if many else 0, ha="right" if many else "center")
    ax.set_ylabel("Dice per tumour slice")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    return ax.figure


def by_column(df: pd.DataFrame, column: str, order=None) -> dict[str, pd.DataFrame]:
    keys = order or sorted(df[column].dropna().unique())
    return {str(k): df[df[column] == k] for k in keys}


def lever_ci_plot(table: pd.DataFrame):
    """Gain in combined dev score of each judged lever over its reference, with its 95% CI."""
    t = table[table["ci95"].astype(str).str.startswith("[")].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(t) + 1.4))
    for i, row in t.iterrows():
        lo, hi = (float(v) for v in row["ci95"].strip("[]").split(","))
        colour = "tab:green" if row["verdict"] == "adopted" else "tab:gray"
        ax.plot([lo, hi], [i, i], color=colour, lw=2)
        ax.plot(row["gain"], i, "o", color=colour)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(t)), [f"{r.tag} ({r.seeds})" for r in t.itertuples()], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("gain in combined dev score (LGG + Figshare), 95% CI")
    ax.set_title("Release levers: green = adopted by the rule", fontsize=11)
    fig.tight_layout()
    return fig
