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


TEXT_PT = 9          # the smallest text of these figures, in points (legible at 100% zoom)
MAP_CMAP, MAP_ALPHA = "jet", 0.45


def overlay_figure(ex: Explained, titles: list[str]):
    """One row per image: the MRI with truth (red) and prediction (cyan) contours, then each
    method's map over the MRI (absolute value, scaled to its own maximum) with the truth contour;
    a colour bar gives the map's scale."""
    methods = list(ex.maps)
    n, k = len(ex.names), len(methods) + 1
    fig, axes = plt.subplots(n, k, figsize=(2.3 * k + 0.9, 2.6 * n + 0.4), squeeze=False)
    for r in range(n):
        ax = axes[r, 0]
        ax.imshow(ex.images[r], cmap="gray")
        plots.draw_contours(ax, ex.gts[r], plots.TUMOUR)
        plots.draw_contours(ax, ex.probs[r] >= 0.5, plots.PRED)
        plots.note_no_prediction(ax, ex.probs[r] >= 0.5)
        ax.set_title(titles[r], fontsize=TEXT_PT)
        for c, m in enumerate(methods, 1):
            a = np.abs(ex.maps[m][r])
            ax = axes[r, c]
            ax.imshow(ex.images[r], cmap="gray")
            ax.imshow(a / a.max() if a.max() > 0 else a, cmap=MAP_CMAP, alpha=MAP_ALPHA, vmin=0, vmax=1)
            plots.draw_contours(ax, ex.gts[r], "white", lw=0.8)
            ax.set_title(f"{m}\nmass in tumour {mass_inside(a, ex.gts[r]):.2f}", fontsize=TEXT_PT)
        for ax in axes[r]:
            ax.axis("off")
    fig.suptitle("truth: red (white on maps), prediction: cyan; target of each map: "
                 + ", ".join(f"{n}={t}" for n, t in zip(ex.names, ex.targets)), fontsize=TEXT_PT + 1)
    fig.tight_layout(rect=(0, 0, 1 - 0.9 / fig.get_figwidth(), 1))
    _map_colour_bar(fig)
    return fig


def _map_colour_bar(fig):
    """The attribution maps' colour scale, in a bar at the figure's right edge."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    w = fig.get_figwidth()
    cax = fig.add_axes((1 - 0.75 / w, 0.2, 0.12 / w, 0.6), label="<colorbar>")
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=MAP_CMAP), cax=cax)
    bar.set_label(f"|attribution| / the map's maximum (drawn at {MAP_ALPHA:.0%} opacity)", fontsize=TEXT_PT)
    bar.ax.tick_params(labelsize=TEXT_PT)
    return bar


def mass_figure(summary: pd.DataFrame):
    """Mean mass inside the tumour per method, against the two random baselines."""
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    xs = np.arange(len(summary))
    ax.bar(xs, summary["mass_inside_gt"], color="#4a90d9", label="method")
    ax.errorbar(xs, summary["expected_random"] + summary["diff_vs_expected"],
                yerr=[summary["diff_vs_expected"] - summary["diff_ci_low"],
                      summary["diff_ci_high"] - summary["diff_vs_expected"]],
                fmt="none", color="k", capsize=3, label="95% CI (paired vs expected)")
    ax.axhline(summary["expected_random"].mean(), color=plots.TUMOUR, ls="--",
               label="random: tumour area fraction")
    ax.scatter(xs, summary["random_map"], color="gray", marker="x", zorder=3, label="uniform-noise map")
    ax.set_xticks(xs, [m.replace(" (", "\n(") for m in summary["method"]], fontsize=TEXT_PT)
    ax.set_ylabel("fraction of |attribution| inside tumour")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=TEXT_PT)
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
        ax.set_title(f"{sub['name'].nunique()} images", fontsize=TEXT_PT)
        ax.set_ylim(bottom=0)
        if len(mean):
            ax.legend(fontsize=TEXT_PT)
    fig.tight_layout()
    return fig
