"""Figures. Each function draws from data already computed (arrays, CSVs, JSON)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from skimage import measure

from brainseg_lib import paths

TUMOUR = "#ff3b30"
PRED = "#30d5ff"


def save_figure(fig, name: str, out_dir: str | Path | None = None) -> Path:
    """Save ``fig`` as results/figures/<name>.png (150 dpi) and return the path."""
    out = paths.ensure(Path(out_dir) if out_dir else paths.figures_dir())
    path = out / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


NO_PREDICTION = "no prediction:\nno pixel reached\nthe threshold"


def draw_contours(ax, mask: np.ndarray, color: str, lw: float = 1.2, label: str | None = None):
    """The outline of ``mask`` on ``ax`` in ``color``."""
    for i, c in enumerate(measure.find_contours(mask.astype(float), 0.5)):
        ax.plot(c[:, 1], c[:, 0], color=color, lw=lw, label=label if i == 0 else None)


def note_no_prediction(ax, pred: np.ndarray, text: str = NO_PREDICTION) -> bool:
    """Write ``text`` on the panel ``ax`` when the prediction ``pred`` is empty, so a blank panel
    reads as "nothing predicted" rather than as a drawing that failed; True when it wrote it."""
    if np.asarray(pred).any():
        return False
    ax.text(0.5, 0.06, text, transform=ax.transAxes, ha="center", va="bottom", fontsize=9,
            color=PRED, bbox=dict(facecolor="black", edgecolor=PRED, alpha=0.8, boxstyle="round,pad=0.3"))
    return True


def sample_grid(images, masks, titles, ncols: int = 4):
    """Fig. 1: images with their ground-truth contours."""
    n = len(images)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, im, m, t in zip(axes.flat, images, masks, titles):
        ax.imshow(im, cmap="gray")
        draw_contours(ax, m, TUMOUR)
        ax.set_title(t, fontsize=8)
    fig.tight_layout()
    return fig


def architecture_figure(levels, image_size: int, n_params: int, base: int):
    """Fig. 2 drawn from ``model.describe``: one box per level, width ~ log channels,
    height ~ spatial side, with shapes and parameter counts as labels."""
    enc = [l for l in levels if l.stage.startswith("encoder")]
    bott = [l for l in levels if l.stage == "bottleneck"]
    dec = [l for l in levels if l.stage.startswith("decoder")]
    head = [l for l in levels if l.stage == "head"]
    fig, ax = plt.subplots(figsize=(12, 5.5))
    xs = {}
    col = 0
    for l in enc + bott + dec + head:
        xs[l.stage] = col
        col += 1
    max_side = max(l.height for l in levels)
    for l in levels:
        x = xs[l.stage]
        depth = 0 if l.stage == "head" else (
            int(l.stage.split()[-1]) - 1 if l.stage != "bottleneck" else 4)
        h = 0.3 + 2.2 * l.height / max_side
        w = 0.25 + 0.12 * np.log2(max(l.channels, 1))
        y = -depth * 1.0
        color = {"e": "#4a90d9", "b": "#8e44ad", "d": "#27ae60", "h": "#e67e22"}[l.stage[0]]
        ax.add_patch(plt.Rectangle((x - w / 2, y - h / 2), w, h, color=color, alpha=0.8))
        ax.text(x, y + h / 2 + 0.08, l.stage, ha="center", va="bottom", fontsize=8)
        ax.text(x, y - h / 2 - 0.08, f"{l.channels}x{l.height}x{l.width}\n{l.parameters:,} p",
                ha="center", va="top", fontsize=7)
    for i in range(1, 5):  # skip connections
        a, b = xs[f"encoder {i}"], xs[f"decoder {i}"]
        y = -(i - 1) * 1.0
        ax.annotate("", xy=(b - 0.4, y), xytext=(a + 0.4, y),
                    arrowprops=dict(arrowstyle="->", color="gray", ls="--", lw=0.8))
    ax.set_xlim(-1, col)
    ax.set_ylim(-5.8, 1.8)
    ax.axis("off")
    ax.set_title(f"U-Net as trained: input 1x{image_size}x{image_size}, base width {base}, "
                 f"{n_params:,} parameters (boxes: output of each level, C x H x W)", fontsize=10)
    return fig


def learning_curves(history: pd.DataFrame):
    """Train loss and validation Dice / IoU per epoch."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    a.plot(history["epoch"], history["train_loss"], label="train loss", color="k")
    if "val_loss" in history:
        a.plot(history["epoch"], history["val_loss"], label="val loss", color="gray", ls="--")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    b.plot(history["epoch"], history["val_dice"], label="val Dice (pooled)", color=TUMOUR)
    b.plot(history["epoch"], history["val_iou"], label="val IoU (pooled)", color="#4a90d9")
    b.set_xlabel("epoch")
    b.set_ylabel("validation score (pooled over pixels, 0-1)")
    b.set_ylim(0, 1)
    b.legend()
    fig.tight_layout()
    return fig


def overlay_panels(images, gts, preds, titles):
    """Fig. 3: one row per case: input, ground truth, prediction over the input."""
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    for row, im, g, p, t in zip(axes, images, gts, preds, titles):
        for ax in row:
            ax.imshow(im, cmap="gray")
            ax.axis("off")
        draw_contours(row[1], g, TUMOUR)
        draw_contours(row[2], g, TUMOUR, lw=0.8)
        draw_contours(row[2], p, PRED)
        note_no_prediction(row[2], p)
        row[0].set_title(t, fontsize=9)
        row[1].set_title("ground truth", fontsize=9)
        row[2].set_title("prediction (cyan) vs truth (red)", fontsize=9)
    fig.tight_layout()
    return fig


def dice_histogram(per_image: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(per_image["f1"], bins=np.linspace(0, 1, 21), color="#4a90d9", edgecolor="white")
    ax.axvline(per_image["f1"].mean(), color="k", ls="--",
               label=f"mean {per_image['f1'].mean():.3f}")
    ax.set_xlabel("per-image Dice (native resolution)")
    ax.set_ylabel("images")
    ax.legend()
    fig.tight_layout()
    return fig


def pr_curve(sweep: pd.DataFrame, threshold: float = 0.5):
    fig, ax = plt.subplots(figsize=(5, 4.5))
    s = sweep[(sweep["tp"] + sweep["fp"]) > 0]
    ax.plot(s["recall"], s["precision"], color="k")
    at = s.iloc[(s["threshold"] - threshold).abs().argmin()]
    ax.scatter([at["recall"]], [at["precision"]], color=TUMOUR, zorder=3,
               label=f"threshold {threshold:g}: P={at['precision']:.3f}, R={at['recall']:.3f}")
    ax.set_xlabel("recall (pooled)")
    ax.set_ylabel("precision (pooled)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def comparison_bars(table: pd.DataFrame,
                    metrics=("F1", "IoU", "Precision", "Recall", "Specificity", "Accuracy"),
                    released: str | None = "auto"):
    """Table I as a dot plot with CIs (``table1_plot.table1_dot_plot``; the name stays, as
    notebook 04 calls it): one panel per metric, the axis zoomed to the data, our rows and the
    paper's on the left, the cited studies apart, the released model marked."""
    from brainseg_lib.report.table1_plot import table1_dot_plot
    return table1_dot_plot(table, metrics=metrics, released=released)


GALLERY_BINS = ((0.99, 1.01, "r >= 0.99"), (0.95, 0.99, "0.95 <= r < 0.99"),
                (0.90, 0.95, "0.90 <= r < 0.95"), (0.80, 0.90, "0.80 <= r < 0.90"))


def pair_gallery(pairs: pd.DataFrame, per_bin: int = 2, root=None):
    """Image pairs from several thumbnail-correlation bins (the first ``per_bin`` of each,
    in the pair table's order), to judge the near-duplicate threshold by eye."""
    from brainseg_lib.data.br35h import split_dir
    from brainseg_lib.data.images import read_grayscale
    picked = []
    for lo, hi, label in GALLERY_BINS:
        sel = pairs[(pairs["corr"] >= lo) & (pairs["corr"] < hi)].head(per_bin)
        picked += [(label, r) for r in sel.itertuples()]
    fig, axes = plt.subplots(len(picked), 2, figsize=(6, 3 * len(picked)), squeeze=False)
    for (label, r), row in zip(picked, axes):
        for ax, name, split in ((row[0], r.a, r.split_a), (row[1], r.b, r.split_b)):
            ax.imshow(read_grayscale(split_dir(split, root) / name), cmap="gray")
            ax.set_title(f"{split}/{name}", fontsize=8)
            ax.axis("off")
        row[0].text(-0.05, 0.5, f"{label}\nr={r.corr:.3f}, pHash d={r.phash_dist}",
                    transform=row[0].transAxes, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def time_to_accuracy(history: pd.DataFrame, f1_at_seconds: dict, target: float):
    """Validation Dice (per epoch) and snapshot test F1 against seconds of training."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(history["train_seconds"], history["val_dice"], color="#4a90d9", marker=".",
            label="validation Dice (model resolution, per epoch)")
    if f1_at_seconds:
        xs = [float(k) for k in f1_at_seconds]
        ax.plot(xs, list(f1_at_seconds.values()), color=TUMOUR, marker="o",
                label="test F1 of the snapshot (native resolution)")
    ax.axhline(target, color="k", ls="--", lw=0.8, label=f"paper's F1 {target}")
    ax.set_xlabel("seconds of training")
    ax.set_ylabel("F1 / Dice")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


CONTRAST_LABELS = {"official_minus_grouped": "official − grouped",
                   "official_minus_grouped_first_draw": "official − grouped (first draw)",
                   "official_minus_grouped_strict": "official − stricter grouped",
                   "grouped_minus_grouped_strict": "grouped (first draw) − stricter grouped",
                   "bce_dice_minus_bce": "BCE+Dice − BCE"}


def contrast_forest(contrasts: dict, within_test: dict | None = None):
    """Each comparison's difference in test F1 with its 95% CI (``seed_spread.contrasts``) as
    a point and a bar against a line at 0, and the within-TEST contrast (per-image Dice) below
    it when given: a CI that crosses the line is no evidence of a difference."""
    rows = [(CONTRAST_LABELS.get(k, k), c["diff"], *c["ci95"], "test F1") for k, c in contrasts.items()]
    if within_test and within_test.get("diff") is not None:
        rows.append(("TEST images with − without\na TRAIN near-duplicate", within_test["diff"],
                     *within_test["ci95"], "per-image Dice"))
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.55 * max(len(rows), 1)))
    for i, (label, d, lo, hi, unit) in enumerate(rows):
        clear = lo > 0 or hi < 0
        ax.plot([lo, hi], [i, i], color="black" if clear else "0.55", lw=2)
        ax.plot(d, i, "o", color="tab:red" if clear else "0.55", ms=7)
        ax.text(1.02, i, f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]\n{unit}", transform=ax.get_yaxis_transform(),
                va="center", fontsize=8)
    ax.axvline(0, color="0.3", ls="--", lw=1)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("difference (95% CI; red: the CI excludes 0)")
    ax.set_title("Which differences survive seeds and test-set sampling?")
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    return fig


def reliability_diagram(summaries: dict[str, dict]):
    """Observed frequency against mean predicted probability per bin (``calibration.summary``'s
    reliability table), one line per labelled summary, with the diagonal of perfect calibration.
    A marker's area grows with its bin's share of the items, so a bin of a few items, whose
    frequency jumps, does not look as certain as a full one."""
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="perfectly calibrated")
    for label, s in summaries.items():
        r = s["reliability"]
        pts = [(m, f, c) for m, f, c in zip(r["mean_p"], r["frequency"], r["count"]) if c and m is not None]
        if pts:
            m, f, c = (np.array(v, dtype=float) for v in zip(*pts))
            line, = ax.plot(m, f, "-", lw=1, label=f"{label} (ECE {s['ece']:.3f})")
            ax.scatter(m, f, s=8 + 300 * np.sqrt(c / c.sum()), color=line.get_color(), alpha=0.8, zorder=3)
    ax.set_xlabel("mean predicted probability (bin; marker area: share of items)")
    ax.set_ylabel("observed frequency")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
