"""Figures that carry what a reader needs (issue 26, item 8): axis labels, a colour bar where
colour carries a value, text of at least 9 pt, legends in words, a note on a blank "no
prediction" panel, and HD95 shown as measured only where a tumour was found."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from brainseg_lib.detection import figures as det_figures  # noqa: E402
from brainseg_lib.report import findings, plots  # noqa: E402
from brainseg_lib.report.seed_findings import findings_markdown  # noqa: E402
from brainseg_lib.study import levers  # noqa: E402
from brainseg_lib.xai import figures as xai_figures  # noqa: E402
from brainseg_lib.xai.checks import Explained  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def texts(fig):
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip()]


def test_learning_curve_panels_both_have_y_labels():
    h = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.7, 0.5],
                      "val_dice": [0.3, 0.6, 0.7], "val_iou": [0.2, 0.4, 0.5]})
    left, right = plots.learning_curves(h).axes
    assert left.get_ylabel() == "loss" and "validation" in right.get_ylabel()


def explained(n=2, empty_last=True):
    rng = np.random.default_rng(0)
    gts = np.zeros((n, 32, 32), np.uint8)
    gts[:, 8:20, 8:20] = 1
    probs = np.zeros((n, 32, 32))
    probs[:, 10:22, 10:22] = 0.9
    if empty_last:
        probs[-1] = 0.1                                       # nothing predicted on the last image
    maps = {m: rng.random((n, 32, 32)) for m in ("Grad-CAM (decoder)", "occlusion")}
    return Explained([f"y{i}.jpg" for i in range(n)], rng.integers(0, 255, (n, 32, 32)).astype(np.uint8),
                     gts, probs, ["pred"] * n, maps)


def test_xai_maps_have_a_colour_bar_and_legible_text():
    fig = xai_figures.overlay_figure(explained(), ["y0.jpg", "y1.jpg"])
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "attribution" in bars[0].get_ylabel()
    assert bars[0].get_ylim() == (0.0, 1.0)
    sizes = [t.get_fontsize() for t in texts(fig)]
    assert sizes and min(sizes) >= 9
    assert any(plots.NO_PREDICTION == t.get_text() for t in texts(fig))    # the empty prediction


def test_blank_prediction_panel_gets_a_note():
    img = np.zeros((32, 32), np.uint8)
    gt = np.zeros((32, 32), bool)
    gt[5:15, 5:15] = True
    fig = plots.overlay_panels([img, img], [gt, gt], [gt, np.zeros_like(gt)], ["found", "missed"])
    notes = [t for t in texts(fig) if t.get_text() == plots.NO_PREDICTION]
    assert len(notes) == 1 and notes[0].axes is fig.axes[5]              # the second row's prediction
    assert plots.note_no_prediction(fig.axes[0], gt) is False


def detection_inputs():
    rng = np.random.default_rng(1)
    label = np.r_[np.ones(40), np.zeros(40)].astype(int)
    scores = pd.DataFrame({"role": "report", "label": label,
                           "area_frac": np.where(label, rng.uniform(0.01, 0.1, 80), rng.uniform(0, 0.02, 80)),
                           "max_prob": np.where(label, rng.uniform(0.6, 1, 80), rng.uniform(0, 0.9, 80))})
    m = {"auc": 0.9, "specificity": 0.8, "sensitivity": 0.85, "tp": 34, "fn": 6, "fp": 8, "tn": 32}
    summary = {"primary_score": "area_frac", "image_size": 64,
               "report": {"all": {"area_frac": {**m, "threshold": 0.0001221},
                                  "max_prob": {**m, "threshold": 0.7}}}}
    return scores, summary


def test_roc_legend_reads_in_words():
    fig = det_figures.roc_figure(*detection_inputs())
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    joined = " ".join(legend)
    assert "area_frac" not in joined and "(primary)" not in joined and "threshold 0.000" not in joined
    assert "predicted tumour area (the score used): AUC 0.900" in legend
    assert any("1 or more of its 64x64 pixels are predicted tumour" in t for t in legend)
    assert any("any pixel's probability reaches 0.7" in t for t in legend)
    title = det_figures.confusion_figure(detection_inputs()[1]).axes[0].get_title()
    assert "area_frac" not in title and "pixels" in title


def test_threshold_words_count_pixels():
    assert det_figures.threshold_words("area_frac", 0.0052490234375, 64).startswith("tumour if 22 or more")
    assert det_figures.threshold_words("area_frac", 0.01).startswith("tumour if 1% or more")


EXT = {"pooled_f1": 0.5, "mean_dice_tumour": 0.4, "clean_marked_share": 0.1, "clean_marked": 3,
       "n_clean_slices": 30, "n_patients": 5, "n_tumour_slices": 40, "tumour_slices_missed": 25,
       "hd95_median": 362.0, "hd95_diag_median_detected": 0.05, "nsd_tolerance_px": 2.0, "nsd_mean": 0.3,
       "nsd_tolerance_diag": 0.01, "nsd_diag_mean": 0.35,
       "ci95_by_patient": {"pooled_f1": [0.4, 0.6], "mean_dice_tumour": [0.3, 0.5]}}


def test_external_hd95_is_given_only_as_measured():
    text = findings.external_findings({"test": EXT})
    assert "362" not in text and " px (" not in text                   # the miss's diagonal is not shown
    assert "25 of 40 tumour slices get no prediction, so no boundary to measure" in text
    assert "over the 15 with one, HD95 median 5.0% of the image diagonal" in text
    old = {k: v for k, v in EXT.items() if k not in ("tumour_slices_missed", "hd95_diag_median_detected")}
    assert "HD95 median 362.0 px" in findings.external_findings({"test": old})   # an older JSON


def test_lever_table_does_not_show_the_diagonal_as_a_median():
    row = {"ext_dev_hd95_median": 362.0, "ext_dev_missed": "21/40"}
    assert levers._hd95_measured(row) == levers.UNMEASURED
    assert levers._hd95_measured({**row, "ext_dev_missed": "19/40"}) == 362.0


def test_recall_figures_are_labelled_seed_means():
    f = {"f1_mean": 0.85, "f1_sd": 0.02, "n_seeds": 3}
    t = {"threshold": 0.5, "f1": 0.85, "precision": 0.93, "recall": 0.78}
    rep = {"official": f, "grouped": f, "official_minus_grouped_f1": None, "loss": {"bce_dice_minus_bce_f1": None},
           "threshold": {"default_0.5": t, "val_best_f1": {**t, "threshold": 0.53},
                         "val_recall_at_precision": {**t, "threshold": 0.69, "recall": 0.74, "precision": 0.95}}}
    md = findings_markdown(rep)
    assert "**Recall** (means over the 3 seeds of the official split)" in md
    assert "the precision floor raises the threshold, so recall falls" in md
