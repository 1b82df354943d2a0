"""study.failures: the failure analysis tables on hand-made per-image frames."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainseg_lib.study import failures


def _br35h(n=8):
    """Tumours of growing size on 100x100 images; the two smallest are missed."""
    tumour = np.arange(1, n + 1) * 100
    pred = np.where(np.arange(n) < 2, 0, tumour)
    f1 = np.where(pred == 0, 0.0, 0.9)
    return pd.DataFrame({"name": [f"y{k}.jpg" for k in range(n)], "native_h": 100, "native_w": 100,
                         "tumour_pixels": tumour, "pred_pixels": pred, "f1": f1,
                         "tp": np.where(pred == 0, 0, 90), "fp": 10, "fn": np.where(pred == 0, tumour, 10)})


def _external():
    rows = []
    for k, (patient, pixels, marked, dice) in enumerate([
            ("TCGA_DU_1_2000", 50, False, 0.0), ("TCGA_DU_1_2000", 300, True, 0.5),
            ("TCGA_CS_2_2001", 700, True, 0.7), ("TCGA_CS_2_2001", 0, False, 1.0),
            ("TCGA_HT_3_2002", 900, True, 0.8)]):
        rows.append({"name": f"s{k}", "patient": patient, "tumour": pixels > 0, "tumour_pixels": pixels,
                     "marked": marked, "dice": dice, "tp": int(pixels * dice), "fp": 5,
                     "fn": pixels - int(pixels * dice), "tn": 10000 - pixels - 5})
    return pd.DataFrame(rows)


def test_frames_keep_tumour_images_with_a_scale_free_size():
    br = failures.br35h_frame(_br35h(), {"y0.jpg": 3, "y1.jpg": 3})
    assert br["tumour_share"].tolist() == pytest.approx([k / 100 for k in range(1, 9)])
    assert br["missed"].tolist()[:3] == [True, True, False] and br["unit"].tolist()[:3] == ["g3", "g3", "y2.jpg"]
    ex = failures.external_frame(_external())
    assert len(ex) == 4 and ex["site"].tolist() == ["DU", "DU", "CS", "HT"]
    assert ex["tumour_share"].iloc[0] == pytest.approx(50 / 10000) and ex["missed"].tolist() == [True, False, False, False]
    assert failures.site_of("TCGA_FG_7_x") == "FG" and failures.site_of("other") == "?"


def test_by_size_cuts_at_quartiles_and_counts_misses():
    t = failures.by_size(failures.br35h_frame(_br35h()))
    assert t["images"].tolist() == [2, 2, 2, 2]
    assert t.loc["Q1", "missed"] == 2 and t.loc["Q1", "mean_dice"] == 0.0 and t.loc["Q4", "mean_dice"] == pytest.approx(0.9)


def test_size_matched_gap_is_zero_for_the_same_set_and_weights_the_external_mix():
    br = failures.br35h_frame(_br35h())
    same = failures.size_matched(br, br.assign(site="?"), n_boot=50)
    assert same["gap"] == pytest.approx(0.0) and same["ci95"][0] <= 0 <= same["ci95"][1]
    worse = br.assign(dice=br["dice"] - 0.2)
    got = failures.size_matched(br, worse, n_boot=50)
    assert got["gap"] == pytest.approx(0.2) and list(got["table"].columns)[:2] == ["external_images", "br35h_images"]


def test_by_site_pools_each_sites_slices():
    s = failures.by_site(failures.external_frame(_external())).set_index("site")
    assert s.loc["DU", "patients"] == 1 and s.loc["DU", "tumour_slices"] == 2 and s.loc["DU", "missed_share"] == 0.5
    tp, fp, fn = 0 + 150, 10, 50 + 150
    assert s.loc["DU", "pooled_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_worst_cases_break_dice_ties_by_the_larger_tumour():
    br = failures.br35h_frame(_br35h())
    worst, common = failures.worst_cases(br, k=1)
    assert worst["name"].tolist() == ["y1.jpg"]                # both misses score 0; y1's tumour is larger
    assert common["dice_zero"] == 2 and common["missed_worst"] == 1
    text = failures.failure_sentence("Br35H TEST", failures.by_size(br), common)
    assert "2 of 8 tumour images score Dice 0" in text and "2 of 2 missed outright" in text
