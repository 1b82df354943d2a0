"""The released model's evaluation files and the words written from them (issue 24), on hand-made
inputs: the Wilson interval, size quartiles, NaN-free JSON, the failing groups, the headline line,
and the refusal of a model card without figures for both external sets."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brainseg_lib.evaluation.bootstrap import wilson_ci
from brainseg_lib.report import release_card as rc
from brainseg_lib.study import release_eval as re_


def test_wilson_interval_matches_the_textbook_value():
    lo, hi = wilson_ci(67, 600)           # 11.2%: the Wilson 95% interval, computed by hand
    p, n, z = 67 / 600, 600, 1.959964
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == pytest.approx((centre - half, centre + half))
    assert wilson_ci(0, 10)[0] == pytest.approx(0.0) and wilson_ci(10, 10)[1] == pytest.approx(1.0)
    assert all(np.isnan(wilson_ci(0, 0)))


def test_size_quartiles_cut_tumour_slices_only():
    df = pd.DataFrame({"tumour": [True] * 8 + [False], "tumour_pixels": [1, 2, 3, 4, 5, 6, 7, 8, 0]})
    q = re_.size_quartiles(df)
    assert list(q[:8]) == ["Q1", "Q1", "Q2", "Q2", "Q3", "Q3", "Q4", "Q4"] and pd.isna(q[8])


def test_finite_turns_nan_into_none_everywhere():
    out = re_.finite({"a": float("nan"), "b": [1.0, np.float64("inf")], "c": {"d": np.float32(0.5)}})
    assert out == {"a": None, "b": [1.0, None], "c": {"d": 0.5}}
    json.dumps(out, allow_nan=False)


def _summary(dice, missed, n, f1=0.5):
    return {"pooled_f1": f1, "mean_dice_tumour": dice, "tumour_slices_missed": missed, "n_tumour_slices": n,
            "missed_share": missed / n, "n_clean_slices": 0, "clean_marked": 0,
            "ci95_by_patient": {"pooled_f1": [f1 - 0.1, f1 + 0.1], "mean_dice_tumour": [dice - 0.1, dice + 0.1]},
            "dice_quantiles_tumour": {"0.5": dice}}


def _ev():
    good, bad = _summary(0.8, 1, 40), _summary(0.2, 30, 40)
    return {"image_size": 128, "br35h_test": {**_summary(0.85, 2, 100)},
            "lgg": {"test": {**_summary(0.6, 20, 80), "by_site": {"CS": good, "DU": bad},
                             "by_size_quartile": {"Q1": bad, "Q4": good}}},
            "figshare": {"test": {**_summary(0.3, 50, 90), "by_label": {"glioma": bad, "meningioma": good},
                                  "by_size_quartile": {"Q1": good}}}}


def test_failing_groups_name_each_failure_and_only_those():
    kinds = rc.failing_kinds(_ev())
    assert kinds == {"Figshare types": ["glioma"], "TCGA-LGG sites": ["DU"], "TCGA-LGG size quartiles": ["Q1"]}
    text = rc.where_it_fails(_ev())
    assert "glioma tumours" in text and "TCGA-LGG site DU" in text and "meningioma" not in text
    assert "30 of 40 tumour slices missed" in text


def test_headline_line_puts_the_miss_rate_first():
    line = rc.headline_line(_ev())
    assert "20 of 80 tumour slices (25%) get no prediction at all" in line
    assert "50 of 90 tumour slices (56%)" in line
    assert line.index("get no prediction") < line.index("pooled F1")
    assert "TCGA-LGG sites DU" in line


def test_summary_table_lists_every_set_it_has():
    table = rc.release_summary_table(_ev())
    assert "TCGA-LGG FLAIR, test half" in table and "Figshare T1 contrast-enhanced, test half" in table
    assert "| 0.600 [0.500, 0.700] |" in table and "dev half" not in table


def test_release_without_external_figures_is_refused(tmp_path, monkeypatch):
    from brainseg_lib import paths
    from brainseg_lib.study.release import ReleaseRefused, write_card
    monkeypatch.setenv("BRAINSEG_RESULTS", str(tmp_path))
    models, metrics = tmp_path / "models", tmp_path / "metrics"
    models.mkdir()
    metrics.mkdir()
    (models / "release.json").write_text(json.dumps({"metrics_json": "results/metrics/run.json"}))
    ev = _ev()
    del ev["figshare"]
    (metrics / "release_eval.json").write_text(json.dumps(ev))
    with pytest.raises(ReleaseRefused, match="figshare") as e:
        write_card(models)
    assert "BRAINSEG_FIGSHARE" in str(e.value)
    assert not (models / "MODEL_CARD.md").exists()
    assert paths.metrics_dir() == metrics


def test_card_sections_end_with_how_the_release_was_chosen(tmp_path, monkeypatch):
    from brainseg_lib.report.model_card import _release_sections
    monkeypatch.setenv("BRAINSEG_RELEASE_LEVERS", str(tmp_path))
    (tmp_path / "decision.json").write_text(json.dumps(
        {"plan": "params/release_levers.yaml", "trials": [{"tag": "r1"}], "adopted": [], "inference": [],
         "release_trial": "r0-cpu"}))
    text = _release_sections(_ev())
    assert text.index("### Where the model should not be used") < text.index("### How it was chosen")
    assert text.rstrip().endswith("- round 1 (`params/release_levers.yaml`): 1 verdict; adopted: nothing; "
                                  "the released model stays as it was")


def test_detection_paragraph_gives_both_validation_points_with_their_cis():
    def point(sens, spec):
        return {"sensitivity": sens, "specificity": spec, "auc": 0.96, "positives": 699, "negatives": 600,
                "ci95": {"sensitivity": [sens - 0.02, sens + 0.02], "specificity": [spec - 0.03, spec + 0.01],
                         "auc": [0.95, 0.97]}}
    det = {"primary_score": "area_frac", "scores": {"area_frac": "predicted tumour area"}, "fixed_sensitivity": 0.9,
           "report": {"all": {"area_frac": point(0.934, 0.962)}},
           "report_at_fixed_sensitivity": {"all": {"area_frac": point(0.868, 0.98)}}}
    text = rc.detection_markdown({**_ev(), "detection": det})
    assert "699 unseen tumour scans and 600 unseen tumour-free scans" in text and "AUC 0.960 [0.950, 0.970]" in text
    assert text.index("sensitivity 0.934 [0.914, 0.954], specificity 0.962") < text.index(
        "sensitivity 0.868 [0.848, 0.888], specificity 0.980 [0.950, 0.990]")
    assert "not measured (no yes/ folder)" in rc.detection_markdown({"detection": {"skipped": "no yes/ folder"}})
    assert "not measured" in rc.detection_markdown(_ev()) and "**Detection**" in rc.release_markdown(_ev())


def test_healthy_report_read_off_the_detection_scores_counts_healthy_report_rows_only():
    scores = pd.DataFrame({
        "role": ["report"] * 5 + ["val", "val", "report"],
        "label": [0, 0, 0, 0, 0, 0, 1, 1],
        "area_frac": [0.0, 0.01, 0.0, 0.0, 0.2, 0.5, 0.3, 0.4]})   # 2 of the 5 healthy report scans marked
    out = re_.healthy_report_from_detection(scores)
    assert out["n_scans"] == 5 and out["marked"] == 2 and out["marked_share"] == pytest.approx(0.4)
    assert out["ci95_wilson"] == pytest.approx(list(wilson_ci(2, 5)))
    with pytest.raises(ValueError, match="no healthy report scans"):
        re_.healthy_report_from_detection(scores[scores["role"] == "val"])
