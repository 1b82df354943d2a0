"""Table I as a dot plot with CIs (issue 26, item 2; brainseg_lib.report.table1_plot) and the
CI columns of Table I's reproduction rows it draws from (brainseg_lib.study.table1)."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from brainseg_lib.report import plots, table1_plot  # noqa: E402
from brainseg_lib.study import table1  # noqa: E402

METRICS = ["F1", "IoU", "Precision", "Recall", "Specificity", "Accuracy"]


def run(name, profile="cpu", split="official", seed=0, f1=0.8, ci=(0.75, 0.85), groups=True):
    values = {"f1": f1, "iou": f1 - 0.1, "precision": 0.93, "recall": f1 - 0.05,
              "specificity": 0.996, "accuracy": 0.98}
    boot = {k: [v - (f1 - ci[0]), v + (ci[1] - f1)] for k, v in values.items()}
    out = {"kind": "segmentation_run", "run_name": name, "profile": profile, "loss": "bce_dice",
           "split_scheme": split, "seed": seed, "per_image_mean": {"f1": f1 - 0.03}, "global": values,
           "bootstrap_ci95": {k: [v[0] - 0.01, v[1] + 0.01] for k, v in boot.items()}}
    return {**out, "bootstrap_ci95_groups": boot} if groups else out


RUNS = [run("cpu-official-bce_dice-seed0", f1=0.817, ci=(0.75, 0.87)),
        run("paper-official-bce_dice-seed0", profile="paper", f1=0.90, ci=(0.87, 0.92), groups=False),
        run("cpu-grouped-bce_dice-seed0", split="grouped", f1=0.76),
        run("cpu-grouped-bce_dice-seed1", split="grouped", seed=1, f1=0.79)]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def table():
    return table1.build_table1(RUNS)


def test_single_runs_carry_their_bootstrap_ci_and_seed_means_none(table, tmp_path):
    t = table.set_index("Study")
    cpu = t.loc["Ours: cpu profile, official split, bce_dice, annotated only (seed 0)"]
    assert (cpu["F1_ci95_lo"], cpu["F1_ci95_hi"]) == pytest.approx((0.75, 0.87))   # near-duplicate groups
    assert cpu["Runs"] == "cpu-official-bce_dice-seed0"
    paper = t.loc["Ours: paper profile, official split, bce_dice, annotated only (seed 0)"]
    assert paper["Recall_ci95_lo"] == pytest.approx(0.85 - 0.03 - 0.01)           # images, without groups
    grouped = t.loc["Ours: cpu profile, grouped split, bce_dice, annotated only (mean ± sd over 2 seeds)"]
    assert math.isnan(grouped["F1_ci95_lo"]) and grouped["F1_sd"] > 0
    assert t.loc[["[23]", table1.PAPER_ROW], "F1_ci95_lo"].isna().all()
    written = table1.write_table1(table, tmp_path)
    assert list(pd.read_csv(written["csv"]).columns) == table1.TABLE_COLUMNS        # table1.csv unchanged
    assert "F1_ci95_hi" in pd.read_csv(written["detail"]).columns


def test_one_panel_per_metric_zoomed_to_the_data(table):
    fig = plots.comparison_bars(table, released=None)
    assert [ax.get_title() for ax in fig.axes] == METRICS
    for ax, metric in zip(fig.axes, METRICS):
        values = table[metric].dropna().astype(float)
        lo, hi = ax.get_ylim()
        assert 0 < lo <= values.min() and hi >= values.max(), metric   # not from 0: the data does not
        assert metric in ax.get_ylabel()


def test_the_axis_starts_at_zero_only_when_the_data_does():
    assert table1_plot._limits([0.0, 0.5])[0] <= 0
    assert 0.5 < table1_plot._limits([0.6, 0.9])[0] < 0.6


def test_error_bars_for_rows_with_cis_and_sd_for_seed_means(table):
    fig = plots.comparison_bars(table, released=None)
    for ax in fig.axes:
        bars = table1_plot.error_bar_rows(ax)
        assert sorted(bars["ci"]) == ["cpu · official · annotated only · seed 0",
                                      "paper · official · annotated only · seed 0"]
        assert bars["sd"] == ["cpu · grouped · annotated only · mean of 2 seeds"]
    f1 = fig.axes[0]
    segments = [c.lines[2][0].get_segments()[0] for c in f1.containers
                if c.get_label() == "_ci:cpu · official · annotated only · seed 0"]
    assert len(segments) == 1 and [y for _, y in segments[0]] == pytest.approx([0.75, 0.87])


def test_cited_studies_apart_with_author_and_year_and_the_released_row_marked(table):
    fig = plots.comparison_bars(table, released="cpu-official-bce_dice-seed0")
    ax, bottom = fig.axes[0], fig.axes[-1]          # the panels share their x axis, labelled below
    ticks = [(t.get_text(), x) for t, x in zip(bottom.get_xticklabels(), bottom.get_xticks())]
    labels = [t for t, _ in ticks]
    assert labels[0] == "Khadra et al. 2026 (the paper)"
    assert "Qasem et al. 2019 [23]" in labels and "Muthulakshmi & Jayalakshmi 2024 [19]" in labels
    assert "Rayhan 2018 [26]" in labels and "Sobhaninia et al. 2018 [25]" in labels
    xs = dict(ticks)
    ours = [x for t, x in ticks if "seed" in t]
    cited = [x for t, x in ticks if t.endswith("]")]
    assert max(ours) + 1 < min(cited)                             # a gap: the cited studies apart
    assert [t for t in labels if "released model" in t] == ["cpu · official · annotated only · seed 0 ★ released model"]
    stars = [l for l in ax.lines if l.get_marker() == "*"]
    assert len(stars) == 1 and stars[0].get_xdata()[0] == xs[labels[1]]
    colours = {l.get_markerfacecolor() for ax_ in fig.axes for l in ax_.lines
               if l.get_marker() not in ("None", "", "_")}                  # the dots, not the bars' caps
    assert len(colours) <= 3                                      # ours, the paper, the cited
    assert any(t.get_text() == "n/r" for t in ax.texts)           # [26] reports no F1


def test_released_row_comes_from_release_json(tmp_path):
    assert table1_plot.released_run(tmp_path) is None
    (tmp_path / "release.json").write_text('{"from_run": "cpu-official-bce_dice-seed0"}')
    assert table1_plot.released_run(tmp_path) == "cpu-official-bce_dice-seed0"
