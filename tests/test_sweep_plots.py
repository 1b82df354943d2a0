"""report.sweep_plots: the sweep's runs and the lever table as figures, on hand-made tables."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

from brainseg_lib.report import sweep_plots  # noqa: E402


def test_one_column_per_split_and_draw_and_a_dot_per_seed():
    runs = pd.DataFrame({"split_scheme": ["official"] * 2 + ["grouped"] * 4 + ["grouped_strict"] * 2,
                         "split_seed": [0, 0, 0, 0, 1, 1, 0, 0], "loss": "bce_dice",
                         "f1": [0.9, 0.8, 0.7, 0.75, 0.6, 0.65, 0.85, 0.86]})
    cols = sweep_plots.run_columns(runs)
    assert [c[0] for c in cols] == ["official", "grouped\ndraw 0", "grouped\ndraw 1", "stricter grouped"]
    assert [len(c[1]) for c in cols] == [2, 2, 2, 2]
    ax = sweep_plots.runs_strip(runs).axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 8
    one_draw = runs[runs.split_seed == 0]
    assert [c[0] for c in sweep_plots.run_columns(one_draw)] == ["official", "grouped", "stricter grouped"]


def test_lever_panels_mark_the_best_trial_of_each_figure():
    t = pd.DataFrame({"tag": ["a", "b"], "val_f1": [0.9, 0.8], "healthy_val_marked": [0.5, 0.1],
                      "ext_dev_pooled_f1": [0.4, 0.6], "ext_dev_missed": ["30/100", "10/100"]})
    fig = sweep_plots.lever_panels(t)
    assert len(fig.axes) == 4
    red = [[tuple(c) for c in ax.collections[-1].get_facecolors()] for ax in fig.axes]
    from matplotlib.colors import to_rgba
    best = [r.index(to_rgba("tab:red")) for r in red]
    assert best == [0, 1, 1, 1]           # VAL F1 highest: a; marked, missed lowest: b; ext F1: b
    assert fig.axes[3].collections[-1].get_offsets()[:, 0].tolist() == [0.3, 0.1]


def test_lever_panels_survive_a_table_without_external_figures():
    t = pd.DataFrame({"tag": ["a", "b"], "val_f1": [0.9, 0.8], "healthy_val_marked": [0.5, 0.1],
                      "ext_dev_pooled_f1": [float("nan")] * 2, "ext_dev_missed": [float("nan")] * 2})
    fig = sweep_plots.lever_panels(t)
    assert "not measured" in fig.axes[3].get_xlabel() and "not measured" in fig.axes[2].get_xlabel()
