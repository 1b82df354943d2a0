"""Table I's boundary companion on a common scale: missed tumours apart, HD95 as a share of the
image diagonal, recovered from a per-image table for runs scored before those figures existed."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from brainseg_lib.evaluation.boundary import boundary_metrics, scale_free_from_per_image, summarize_boundary


def test_scale_free_figures_from_a_per_image_table_match_the_summary():
    rng = np.random.default_rng(0)
    rows = []
    for i, (h, w) in enumerate(((60, 80), (120, 90), (200, 150), (64, 64))):
        gt = np.zeros((h, w), bool)
        gt[h // 4: h // 2, w // 4: w // 2] = True
        pred = np.zeros_like(gt) if i == 3 else np.roll(gt, int(rng.integers(1, 6)), axis=1)
        rows.append({"name": f"im{i}", "native_h": h, "native_w": w, "tumour_pixels": int(gt.sum()),
                     "pred_pixels": int(pred.sum()), **boundary_metrics(pred, gt)})
    rows.append({"name": "clean", "native_h": 50, "native_w": 50, "tumour_pixels": 0, "pred_pixels": 3,
                 "hd95": math.nan, "nsd": math.nan, "hd95_diag": math.nan, "nsd_diag": math.nan})
    df = pd.DataFrame(rows)
    full = summarize_boundary(df)
    derived = scale_free_from_per_image(df.drop(columns=["hd95_diag", "nsd_diag"]))
    assert derived["missed"] == full["missed"] == 1
    assert derived["hd95_diag"]["median"] == pytest.approx(full["hd95_diag"]["median"], rel=1e-6)
    assert derived["hd95_diag"]["n_images"] == 3


def test_boundary_rows_lead_with_the_common_scale_and_say_what_is_missing(isolated_dirs):
    from brainseg_lib.study import table1
    per = pd.DataFrame({"name": ["a", "b"], "native_h": [30, 40], "native_w": [40, 30],
                        "tumour_pixels": [10, 10], "pred_pixels": [5, 0], "hd95": [5.0, 50.0]})
    (isolated_dirs["results"] / "metrics").mkdir(parents=True, exist_ok=True)
    per.to_csv(isolated_dirs["results"] / "metrics" / "old_per_image.csv", index=False)
    old = {"profile": "cpu", "split_scheme": "official", "loss": "bce_dice", "seed": 0, "run_name": "old",
           "per_image_csv": "old_per_image.csv",
           "boundary": {"hd95": {"median": 27.5, "mean": 27.5, "n_images": 2}, "nsd": {"mean": 0.2}}}
    t = table1.boundary_rows([old]).iloc[0]
    assert t["Missed (no prediction)"] == 1 and t["HD95 median (% of diagonal, found tumours)"] == pytest.approx(10.0)
    assert math.isnan(t["NSD mean (tolerance 1% of diagonal)"]) and t["HD95 median (px)"] == 27.5
    md = table1.write_boundary_table([old])["md"].read_text()
    assert "| 2 | 1 | 10.0 | n/a | 27.5 | 27.5 | 0.200 |" in md and "counted apart" in md


def test_a_summary_without_figures_reads_as_not_available():
    from brainseg_lib.study import table1
    run = {"profile": "cpu", "split_scheme": "official", "loss": "bce_dice", "seed": 0, "run_name": "r",
           "boundary": {"hd95": {"median": None, "mean": None, "n_images": 3}, "nsd": {"mean": None},
                        "hd95_diag": {"median": None}, "nsd_diag": {"mean": None}, "missed": 3}}
    t = table1.boundary_rows([run]).iloc[0]
    assert t["Missed (no prediction)"] == 3 and math.isnan(t["HD95 median (px)"])
    assert math.isnan(t["HD95 median (% of diagonal, found tumours)"])
