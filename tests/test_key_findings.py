"""``report.key_findings``: the study's findings, one sentence each, written from the results
files alone. Every file here is hand-made with numbers no real run gives, so each number a
sentence shows can be traced to its file; a missing file leaves its finding out."""
from __future__ import annotations

import json

import pytest

from brainseg_lib.report import key_findings as kf


def write(root, rel, obj):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def run_json(name, f1, lo, hi, dice, n=123, epochs=7, size=48):
    return {"run_name": name, "n_images": n, "global": {"f1": f1}, "per_image_mean": {"f1": dice},
            "bootstrap_ci95": {"f1": [0.0, 1.0]}, "bootstrap_ci95_groups": {"f1": [lo, hi]},
            "epochs_run": epochs, "config": {"image_size": size}}


TABLE1 = ("Study,F1,Dice per image\n[23],0.854,\nKhadra et al. 2026 (paper),0.777,\n"
          '"Ours: cpu profile, official split",0.611,0.5\n')


@pytest.fixture
def results(tmp_path):
    r = tmp_path / "results"
    write(r, "tables/table1.csv", TABLE1)
    write(r, "models/release.json", {"from_run": "cpu-run-x", "metrics_json": "results/metrics/cpu-run-x.json"})
    write(r, "metrics/cpu-run-x.json", run_json("cpu-run-x", 0.611, 0.555, 0.666, 0.543))
    write(r, "paper/metrics/paper-official-bce_dice-seed0.json",
          run_json("paper-official-bce_dice-seed0", 0.912, 0.881, 0.933, 0.888, epochs=77, size=256))
    write(r, "metrics/leakage.json", {
        "images_with_duplicate_in": {"test->train": {"either": 37, "of": 50}},
        "pairs_found": {"either": 4321, "either_without_mirroring": 765}})
    write(r, "metrics/honest_evaluation.json", {
        "official": {"f1_mean": 0.701, "n_seeds": 5}, "grouped": {"f1_mean": 0.602, "n_seeds": 4},
        "contrasts": {"official_minus_grouped": {"diff": 0.099, "ci95": [0.021, 0.177], "verdict": "higher",
                                                 "units": "seeds x near-duplicate groups"}}})
    write(r, "metrics/external_validation.json", {"run_name": "cpu-run-x", "test": {
        "pooled_f1": 0.444, "ci95_by_patient": {"pooled_f1": [0.333, 0.499]}, "tumour_slices_missed": 61,
        "n_tumour_slices": 100, "n_patients": 9, "per_slice_csv": "ext_test.csv"}})
    write(r, "metrics/ext_test.csv", "patient,tumour,dice\nTCGA_AA_1_2,True,0.0\nTCGA_BB_1_2,True,0.25\n"
          "TCGA_BB_3_4,True,0.5\nTCGA_CC_1_2,False,1.0\n")
    write(r, "metrics/failures.json", {"size_matched_gap": 0.234, "size_matched_ci95": [0.111, 0.345]})
    write(r, "metrics/detection.json", {"primary_score": "area_frac", "report": {"all": {"area_frac": {
        "positives": 700, "negatives": 650, "tp": 612, "fp": 13, "sensitivity": 0.874, "specificity": 0.98,
        "ci95": {"sensitivity": [0.85, 0.9], "specificity": [0.961, 0.991]}}}}})
    return r


def by_key(results):
    return {f["key"]: f for f in kf.key_findings(results)}


def test_each_sentence_takes_its_numbers_from_the_files(results):
    f = by_key(results)
    assert list(f) == ["reproduction", "leakage", "seeds", "external", "size", "paper_config", "detection"]
    s = f["reproduction"]["sentence"]
    assert "cpu-run-x" in s and "pooled F1 0.611 (95% CI 0.555 to 0.666" in s and "per-image Dice 0.543" in s
    assert "123 images" in s and "lower than the paper's F1 0.777, which lies above the CI" in s
    assert f["reproduction"]["figure"] == 0.611 and f["reproduction"]["ci95"] == [0.555, 0.666]
    s = f["leakage"]["sentence"]
    lo, hi = kf.wilson(37, 50)
    assert s.startswith("37 of 50 TEST images (74%") and f"{100 * lo:.0f}% to {100 * hi:.0f}%" in s
    assert "4,321 near-duplicate pairs" in s and "765 of them without mirroring" in s and "mirror" in s
    s = f["seeds"]["sentence"]
    assert "0.701 on the official split" in s and "0.602 on a near-duplicate-free grouped split" in s
    assert "means over 5 and 4 seeds" in s and "+0.099 (95% CI +0.021 to +0.177" in s and "lies above 0" in s
    s = f["external"]["sentence"]
    assert "another collection (TCGA-LGG FLAIR: 3 TCGA sites, 9 patients" in s      # AA, BB, CC
    assert "from 0.611 on Br35H TEST to 0.444 (95% CI 0.333 to 0.499" in s
    assert "61 of 100 tumour slices (61%) get no prediction" in s and "Dice 0.250" in s   # median of 0, .25, .5
    assert f["external"]["page"] == "09_external_validation"
    s = f["size"]["sentence"]
    assert "+0.234" in s and "+0.111 to +0.345" in s and "does not explain" in s
    s = f["paper_config"]["sentence"]
    assert "paper-official-bce_dice-seed0, 77 epochs at 256x256" in s and "0.912 (95% CI 0.881 to 0.933" in s
    assert "higher than the paper's F1 0.777, which lies below the CI" in s and "0.888" in s
    s = f["detection"]["sentence"]
    assert "13 of 650 unseen healthy scans" in s and "specificity 0.980 (95% CI 0.961 to 0.991)" in s
    assert "612 of 700" in s and "sensitivity 0.874 (95% CI 0.850 to 0.900)" in s
    for x in f.values():                          # one sentence each, with its CI and its page
        assert x["sentence"].count(". ") == 0 and x["sentence"].endswith(".") and "95% CI" in x["sentence"]
        assert x["page"] in kf.PAGES.values()


def test_the_released_models_external_scores_come_first_when_there(results):
    write(results, "metrics/release_eval.json", {
        "br35h_test": {"pooled_f1": 0.622},
        "lgg": {"test": {"pooled_f1": 0.411, "ci95_by_patient": {"pooled_f1": [0.301, 0.52]},
                         "tumour_slices_missed": 53, "n_tumour_slices": 100, "n_patients": 12,
                         "dice_quantiles_tumour": {"0.5": 0.0}, "by_site": {"DU": {}, "HT": {}, "FG": {}, "CS": {}}}}})
    f = by_key(results)["external"]
    assert "4 TCGA sites, 12 patients" in f["sentence"] and "from 0.622 on Br35H TEST to 0.411" in f["sentence"]
    assert "53 of 100 tumour slices (53%)" in f["sentence"] and "median tumour slice scores Dice 0.000" in f["sentence"]
    assert f["page"] == "10_released_model" and f["ci95"] == [0.301, 0.52]


def test_missing_or_incomplete_files_skip_their_finding(results):
    (results / "metrics" / "leakage.json").unlink()
    (results / "metrics" / "ext_test.csv").unlink()               # the external finding stays, less detailed
    write(results, "metrics/detection.json", {"primary_score": "area_frac", "report": {}})
    f = by_key(results)
    assert "leakage" not in f and "detection" not in f
    assert "TCGA-LGG FLAIR: 9 patients" in f["external"]["sentence"] and "median" not in f["external"]["sentence"]
    (results / "tables" / "table1.csv").unlink()                 # no paper figure: no comparison with it
    assert set(by_key(results)) == {"seeds", "external", "size"}
    assert kf.key_findings(results.parent / "nothing") == []
    assert kf.key_findings_markdown(results.parent / "nothing") == ""


def test_markdown_is_a_numbered_list_with_pages(results):
    md = kf.key_findings_markdown(results)
    lines = md.strip().splitlines()
    assert 5 <= len(lines) <= 7 and [l.split(". ")[0] for l in lines] == [str(i) for i in range(1, len(lines) + 1)]
    assert lines[1].endswith("(page 07, `07_leakage_audit`)")
    linked = kf.key_findings_markdown(results, page_href="{page}.html").splitlines()
    assert linked[2].endswith("([page 08](08_honest_evaluation.html))")
