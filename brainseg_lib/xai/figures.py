"""Figures of the explainability checks: attribution overlays, attribution mass inside the
tumour, and deletion curves.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from brainseg_lib.report import plots
from brainseg_lib.xai.attribution import RANDOM, REFERENCE, mass_inside
from brainseg_lib.xai.checks import Explained
from brainseg_lib.xai.deletion import MEASURES


def overlay_figure(ex: Explained, titles: list[str]):
    """One row per image: the MRI with truth (red) and prediction (cyan) contours, then each
    method's map over the MRI (absolute value, scaled to its own maximum) with the truth contour."""
    methods = list(ex.maps)
    n, k = len(ex.names), len(methods) + 1
    fig, axes = plt.subplots(n, k, figsize=(2.6 * k, 2.8 * n), squeeze=False)
    for r in range(n):
        ax = axes[r, 0]
        ax.imshow(ex.images[r], cmap="gray")
        plots.draw_contours(ax, ex.gts[r], plots.TUMOUR)
        plots.draw_contours(ax, ex.probs[r] >= 0.5, plots.PRED)
        ax.set_title(titles[r], fontsize=7)
        for c, m in enumerate(methods, 1):
            a = np.abs(ex.maps[m][r])
            ax = axes[r, c]
            ax.imshow(ex.images[r], cmap="gray")
            ax.imshow(a / a.max() if a.max() > 0 else a, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            plots.draw_contours(ax, ex.gts[r], "white", lw=0.8)
            ax.set_title(f"{m}\nmass in tumour {mass_inside(a, ex.gts[r]):.2f}", fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    fig.suptitle("truth: red (white on maps), prediction: cyan; target of each map: "
                 + ", ".join(f"{n}={t}" for n, t in zip(ex.names, ex.targets)), fontsize=8)
    fig.tight_layout()
    return fig


def mass_figure(summary: pd.DataFrame):
    """Mean mass inside the tumour per method, against the two random baselines."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    xs = np.arange(len(summary))
    ax.bar(xs, summary["mass_inside_gt"], color="#4a90d9", label="method")
    ax.errorbar(xs, summary["expected_random"] + summary["diff_vs_expected"],
                yerr=[summary["diff_vs_expected"] - summary["diff_ci_low"],
                      summary["diff_ci_high"] - summary["diff_vs_expected"]],
                fmt="none", color="k", capsize=3, label="95% CI (paired vs expected)")
    ax.axhline(summary["expected_random"].mean(), color=plots.TUMOUR, ls="--",
               label="random: tumour area fraction")
    ax.scatter(xs, summary["random_map"], color="gray", marker="x", zorder=3, label="uniform-noise map")
    ax.set_xticks(xs, [m.replace(" (", "\n(") for m in summary["method"]], fontsize=7)
    ax.set_ylabel("fraction of |attribution| inside tumour")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def deletion_figure(curves: pd.DataFrame):
    """Mean relative curves against the deleted fraction, per ordering: predicted area (left,
    images with a non-empty intact prediction only) and summed probability (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, measure in zip(axes, MEASURES):
        ok = curves.groupby("name")[measure].transform(lambda s: bool(np.all(np.isfinite(s))))
        sub = curves[ok.astype(bool)]
        mean = sub.groupby(["method", "fraction"], sort=False)[measure].mean().reset_index()
        for method, g in mean.groupby("method", sort=False):
            style = dict(color="k", ls="--", lw=2) if method == RANDOM else \
                dict(color="gray", ls=":") if method == REFERENCE else {}
            ax.plot(g["fraction"], g[measure], marker=".", label=method, **style)
        ax.set_xlabel("fraction of pixels deleted (most attributed first)")
        ax.set_ylabel(f"{MEASURES[measure]} / intact")
        ax.set_title(f"{sub['name'].nunique()} images", fontsize=9)
        ax.set_ylim(bottom=0)
        if len(mean):
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
