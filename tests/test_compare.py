"""brainseg_lib.compare: the cited Table I rows, the table built from runs, its files, README."""
from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest

from brainseg_lib import paths
from brainseg_lib.fileio import write_json
from brainseg_lib.report import readme as compare_readme
from brainseg_lib.study import table1 as compare_table1

CITED = ["[23]", "[24]", "[25]", "[26]", "[27]", "[19]"]
COLUMNS = ["Study", "F1", "IoU", "Precision", "Recall", "Specificity", "Accuracy"]
SHOWN = ["Study", "F1", "Dice per image", "IoU", "Precision", "Recall", "Specificity", "Accuracy"]


def fake_run(name, profile="paper", loss="bce_dice", split="official", f1=0.8, iou=0.7,
             precision=0.9, recall=0.75, specificity=0.99, accuracy=0.98, dice=0.7):
    return {"kind": "segmentation_run", "run_name": name, "profile": profile, "loss": loss,
            "split_scheme": split, "per_image_mean": {"f1": dice},
            "global": {"f1": f1, "iou": iou, "precision": precision, "recall": recall,
                       "specificity": specificity, "accuracy": accuracy}}


RUNS = [
    fake_run("paper-official-bce_dice-seed0", f1=0.80, iou=0.70, dice=0.74),
    fake_run("paper-official-bce_dice-seed1", f1=0.84, iou=0.72, dice=0.78),
    fake_run("cpu-official-bce-seed0", profile="cpu", loss="bce", f1=0.60, iou=0.45),
]


def test_cited_rows():
    df = compare_table1.cited_rows()
    assert list(df["Study"]) == CITED + [compare_table1.PAPER_ROW]
    assert set(COLUMNS) <= set(df.columns) and {"Reference", "Source"} <= set(df.columns)
    by = df.set_index("Study")
    assert by.loc[compare_table1.PAPER_ROW, "F1"] == pytest.approx(0.826)
    assert by.loc[compare_table1.PAPER_ROW, "Precision"] == pytest.approx(0.934)
    assert by.loc["[23]", "Specificity"] == pytest.approx(0.87)
    # blanks stay NaN, never 0
    assert math.isnan(by.loc["[25]", "IoU"]) and math.isnan(by.loc["[26]", "F1"])
    assert math.isnan(by.loc[compare_table1.PAPER_ROW, "Specificity"])
    vals = df[COLUMNS[1:]].to_numpy(dtype=float)
    assert not (vals == 0).any()
    finite = vals[~np.isnan(vals)]
    assert ((finite > 0) & (finite <= 1)).all()
    # exactly the cells left empty in the CSV are NaN
    with open(paths.PAPER_TABLE1_CSV, newline="") as f:
        raw = list(csv.DictReader(f))
    blank = np.array([[r[c].strip() == "" for c in COLUMNS[1:]] for r in raw])
    np.testing.assert_array_equal(np.isnan(vals), blank)
    assert blank.sum() == 20


def test_build_table1_from_runs():
    t = compare_table1.build_table1(RUNS)
    assert set(COLUMNS) <= set(t.columns)
    assert {"Reference", "Source", "n_seeds", "F1_sd", "IoU_sd"} <= set(t.columns)
    assert len(t) == 7 + 2
    assert list(t["Study"][:7]) == CITED + [compare_table1.PAPER_ROW]
    ours = t[t["Study"].str.startswith("Ours")].set_index("Study")
    paper = ours.loc["Ours: paper profile, official split, bce_dice, annotated only (mean ± sd over 2 seeds)"]
    assert paper["n_seeds"] == 2
    assert paper["F1"] == pytest.approx(0.82) and paper["IoU"] == pytest.approx(0.71)
    assert paper["F1_sd"] == pytest.approx(np.std([0.80, 0.84], ddof=1))
    # per-image Dice beside pooled F1, over the same seeds; the cited and paper rows have none
    assert paper["Dice per image"] == pytest.approx(0.76)
    assert paper["Dice per image_sd"] == pytest.approx(np.std([0.74, 0.78], ddof=1))
    assert t.set_index("Study")["Dice per image"].iloc[:7].isna().all()
    # each row names the folder its JSON files are in: results/<profile>/ for a profile other than cpu
    assert paper["Reference"].startswith("this repository, results/paper/metrics/paper-official-bce_dice-seed0.json")
    cpu = ours.loc["Ours: cpu profile, official split, bce, annotated only (seed 0)"]
    assert cpu["n_seeds"] == 1 and cpu["F1"] == pytest.approx(0.60) and math.isnan(cpu["F1_sd"])
    assert cpu["Reference"].startswith("this repository, results/metrics/")
    # cited blanks survive the concatenation as NaN
    assert math.isnan(t.set_index("Study").loc["[25]", "IoU"])


def test_build_table1_reads_run_jsons(tmp_path):
    for r in RUNS[:2]:
        write_json(r, tmp_path / f"{r['run_name']}.json")
    write_json({"kind": "something_else"}, tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{not json")
    t = compare_table1.build_table1(metrics_dir=tmp_path)
    assert len(t) == 8 and t["Study"].iloc[-1].startswith("Ours: paper")


def test_differences_from_paper():
    d = compare_table1.differences_from_paper(compare_table1.build_table1(RUNS))
    row = d.set_index("Study").loc["Ours: paper profile, official split, bce_dice, annotated only (mean ± sd over 2 seeds)"]
    assert row["F1"] == pytest.approx(0.82 - 0.826)
    assert "Specificity" not in d.columns                # the paper reports none: no all-empty column


def test_differences_from_paper_show_full_labels_and_no_empty_column():
    """Page 04's "ours − paper" table: pandas cut labels at 50 characters, so two rows that
    differ only at the end looked alike, and the paper's empty Specificity gave a NaN column."""
    runs = RUNS + [fake_run("cpu-official-bce-seed0-x", profile="cpu", loss="bce") | {"run_tag": "x" * 60}]
    d = compare_table1.differences_from_paper(compare_table1.build_table1(runs)).round(3)
    assert list(d.columns) == ["Study", "F1", "IoU", "Precision", "Recall", "Accuracy"]
    assert not d.drop(columns="Study").isna().all().any()
    html, text = d._repr_html_(), repr(d)
    for label in d["Study"]:
        assert len(label) > 50 and label in html and label in text
    assert pd.get_option("display.max_colwidth") == 50    # the notebook's own setting is untouched


def test_write_table1(tmp_path):
    written = compare_table1.write_table1(compare_table1.build_table1(RUNS), tmp_path)
    assert set(written) == {"csv", "detail", "md", "tex"}
    for p in written.values():
        assert p.is_file() and p.parent == tmp_path
    tab = pd.read_csv(tmp_path / "table1.csv")
    assert list(tab.columns) == SHOWN
    assert len(tab) == 9
    header = (tmp_path / "table1.csv").read_text().splitlines()[0]
    assert header == ",".join(SHOWN)
    # a blank stays blank in the CSV, not 0
    line25 = next(l for l in (tmp_path / "table1.csv").read_text().splitlines() if l.startswith("[25]"))
    assert line25 == "[25],0.79,,,,,,"
    assert math.isnan(tab.set_index("Study").loc["[25]", "IoU"])
    md = (tmp_path / "table1.md").read_text().splitlines()
    assert md[0] == "| " + " | ".join(SHOWN) + " |"
    assert len(md) == 2 + 9
    assert "0.820 ± 0.028" in (tmp_path / "table1.md").read_text()
    assert "| [25] | 0.79 |  |" in (tmp_path / "table1.md").read_text()   # cited as printed
    assert "| 0.820 ± 0.028 | 0.760 ± 0.028 |" in (tmp_path / "table1.md").read_text()
    tex = (tmp_path / "table1.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\end{tabular}" in tex
    assert " & ".join(SHOWN) + r" \\" in tex and r"$\pm$" in tex
    assert r"bce\_dice" in tex
    detail = pd.read_csv(tmp_path / "table1_detail.csv")
    assert {"Reference", "n_seeds", "F1_sd"} <= set(detail.columns)


def test_write_table1_default_folder_is_results(isolated_dirs):
    written = compare_table1.write_table1(compare_table1.build_table1(RUNS))
    assert written["csv"] == paths.tables_dir() / "table1.csv"
    assert str(written["csv"]).startswith(str(isolated_dirs["results"]))


def test_embed_in_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nintro\n\n<!-- TABLE1:START -->\nold table\n<!-- TABLE1:END -->\n\nafter\n")
    md = compare_table1.to_markdown(compare_table1.build_table1(RUNS))
    assert compare_readme.embed_in_readme(md, readme) is True
    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n\n<!-- TABLE1:START -->\n| Study | F1 |")
    assert text.endswith("<!-- TABLE1:END -->\n\nafter\n")
    assert "old table" not in text and md in text
    assert compare_readme.embed_in_readme(md, readme) is False       # unchanged the second time
    assert readme.read_text() == text


def test_embed_in_readme_without_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    with pytest.raises(ValueError, match="markers"):
        compare_readme.embed_in_readme("| x |\n", readme)
    assert readme.read_text() == "# no markers here\n"


def test_readme_headline_is_written_from_the_result_files():
    from brainseg_lib.report.readme import HEADLINE_END, HEADLINE_START, headline_markdown, replace_section
    from brainseg_lib.study.experiment import released_run_name
    assert "No finished run yet" in headline_markdown()
    g = {"f1": 0.851, "iou": 0.74, "precision": 0.9, "recall": 0.8}
    write_json({"global": g}, paths.metrics_dir() / f"{released_run_name()}.json")
    half = {"pooled_f1": 0.6123, "mean_dice_tumour": 0.3, "tumour_slices_missed": 17, "n_tumour_slices": 68,
            "missed_share": 0.25, "dice_quantiles_tumour": {"0.5": 0.41},
            "by_site": {"DU": {"mean_dice_tumour": 0.2, "missed_share": 0.5}}}
    write_json({"lgg": {"test": half}, "figshare": {"test": {**half, "pooled_f1": 0.2, "by_site": {}}}},
               paths.metrics_dir() / "release_eval.json")
    text = headline_markdown()
    assert "F1 0.851" in text and "the paper reports F1 0.826" in text
    assert "17 of 68 tumour slices (25%) get no prediction at all" in text and "pooled F1 0.612" in text
    assert "median Dice per tumour slice 0.41" in text and "TCGA-LGG sites DU" in text
    doc = f"top\n{HEADLINE_START}\nold\n{HEADLINE_END}\nbottom\n"
    assert replace_section(doc, text, HEADLINE_START, HEADLINE_END) == \
        f"top\n{HEADLINE_START}\n{text}{HEADLINE_END}\nbottom\n"


def test_readme_profiles_table_is_written_from_params(tmp_path, monkeypatch):
    from brainseg_lib.report.readme import profiles_markdown
    (tmp_path / "base.yaml").write_text(
        "profile: base\nimage_size: 256\nbase_width: 64\nbatch_size: 50\nlr: 0.0001\nschedule: none\n"
        "epochs: 100\nthreads: 0\nloss: bce_dice\nhealthy_ratio: 0.0\ninput_norm: none\n"
        "augment_level: basic\nlimit_train: null\nlimit_val: null\nlimit_test: null\n")
    (tmp_path / "paper.yaml").write_text("profile: paper\n")
    (tmp_path / "tiny.yaml").write_text("profile: tiny\nimage_size: 32\nepochs: 3\nlimit_train: 5\n"
                                        "limit_val: 2\nlimit_test: 1\n")
    monkeypatch.setattr(paths, "PARAMS_DIR", tmp_path)
    rows = profiles_markdown().splitlines()[2:]
    assert rows[0].startswith("| `paper` | the paper's configuration, unchanged | 256x256, base width 64, batch 50;")
    assert "Adam lr 0.0001, schedule none, 100 epochs; threads all" in rows[0]
    assert "32x32" in rows[1] and "3 epochs" in rows[1] and "5/2/1 images" in rows[1]


def test_table1_gains_the_committed_gpu_run_once(isolated_dirs):
    """The paper profile's GPU run (BRAINSEG_GPU_RUN/metrics) is a Table I row of the study;
    reading that folder itself (the paper profile's own notebook 04) does not count it twice."""
    write_json(RUNS[2], paths.metrics_dir() / f"{RUNS[2]['run_name']}.json")
    gpu = paths.gpu_run_dir() / "metrics"
    gpu.mkdir(parents=True)
    write_json(RUNS[0], gpu / f"{RUNS[0]['run_name']}.json")
    labels = [r["run_name"] for r in compare_table1.study_runs()]
    assert labels == [RUNS[2]["run_name"], RUNS[0]["run_name"]]
    assert [r["run_name"] for r in compare_table1.study_runs(gpu)] == [RUNS[0]["run_name"]]
    t = compare_table1.build_table1()
    assert sum(t["Study"].str.startswith("Ours: paper")) == 1
    # run_all.sh paper re-running it: its stage holds the same run name; still one seed, not two
    stage = isolated_dirs["results"] / "paper" / ".staging-x" / "metrics"
    stage.mkdir(parents=True)
    write_json({**RUNS[0], "global": {**RUNS[0]["global"], "f1": 0.5}}, stage / f"{RUNS[0]['run_name']}.json")
    again = compare_table1.study_runs(stage)
    assert len(again) == 1 and again[0]["global"]["f1"] == 0.5


def test_readme_line_of_the_gpu_run_reads_its_files(isolated_dirs):
    """The paper profile's GPU line is built from the run JSON, its history.csv and the CUDA
    benchmark, and is absent until the run is there."""
    from brainseg_lib.report.readme import gpu_run_lines
    assert gpu_run_lines() == []
    name = "paper-official-bce_dice-seed0"
    write_json({**fake_run(name, f1=0.9012, iou=0.8), "seed": 0, "run_tag": "tag", "device": "cpu"},
               paths.gpu_run_dir() / "metrics" / f"{name}.json")
    run_dir = paths.gpu_run_dir() / "runs" / name
    run_dir.mkdir(parents=True)
    (run_dir / "history.csv").write_text("epoch,train_seconds,wall_seconds\n1,1.0,2.0\n100,71.2,158.6\n")
    (line,) = gpu_run_lines()
    assert "TEST F1 0.901" in line and "100 epochs in 159 s" in line and "71 s of it" in line
    assert "TFLOP/s" not in line and "[tag:" in line and "GiB of GPU memory" not in line
    assert "trained on cpu, not a GPU" in line                  # the run's device, said as it is
    for device in ("cuda", "cuda:0"):
        write_json({**fake_run(name, f1=0.9012, iou=0.8), "seed": 0, "device": device},
                   paths.gpu_run_dir() / "metrics" / f"{name}.json")
        assert "trained on a GPU (" in gpu_run_lines()[0]
    write_json({"gpu": "NVIDIA H100 80GB HBM3", "peak_gpu_mb": 10240.0}, run_dir / "timing.json")
    (line,) = gpu_run_lines()
    assert "trained on NVIDIA H100 80GB HBM3 (" in line
    assert "10.0 GiB of GPU memory allocated at its peak in training" in line
    write_json({"device_name": "GPU X", "achieved_gflops": 229725.7, "ratio_to_peak": 0.291,
                "peak_matmul_dtype": "bfloat16", "peak_matmul_gflops": 790095.9, "peak_gpu_mb": 9890.2},
               paths.ensure(paths.benchmarks_dir()) / "cuda-paper.json")
    (line,) = gpu_run_lines()
    assert "GPU X" in line and "230 TFLOP/s, 0.29 of the bfloat16" in line and "9.7 GiB" in line


def test_timings_table_includes_the_gpu_run(isolated_dirs):
    from brainseg_lib.report.readme import timings_markdown
    t = {"total_seconds": 1, "notebooks": {"01_x": 1}, "machine": "m", "date": "d"}
    write_json({**t, "profile": "cpu"}, paths.ensure(paths.timings_dir()) / "run_all_cpu.json")
    write_json({**t, "profile": "paper", "machine": "NVIDIA H200"},
               paths.ensure(paths.gpu_run_dir() / "timings") / "run_all_paper.json")
    table = timings_markdown()
    assert "| `cpu` |" in table and "| `paper` |" in table and "NVIDIA H200" in table


def test_whole_run_wall_times_start_anew_on_a_fresh_clone_and_are_listed(tmp_path):
    import json

    from brainseg_lib.report.timings import record_wall_time, wall_lines
    record_wall_time("smoke", 900, True, True, tmp_path)
    record_wall_time("smoke", 150, False, False, tmp_path)
    w = json.loads((tmp_path / "wall_smoke.json").read_text())
    assert [(r["label"], r["seconds"]) for r in w["runs"]] == [
        ("fresh clone (new .venv, empty cache)", 900), ("a later run (warm cache)", 150)]
    assert "fresh clone (new .venv, empty cache): 900 s; a later run (warm cache): 150 s." in wall_lines(tmp_path)
    record_wall_time("smoke", 800, True, True, tmp_path)                 # a new clone starts the list anew
    assert len(json.loads((tmp_path / "wall_smoke.json").read_text())["runs"]) == 1


def test_clock_figures_go_to_the_timings_page_and_the_readme_points_there(isolated_dirs, tmp_path):
    """update-readme writes results/timings/timings.md (run_all wall times, How fast) and puts a
    fixed pointer in the README: a re-run on a faster machine changes no line of the README."""
    from brainseg_lib.report import readme
    from brainseg_lib.report.timings import POINTER, TIMINGS_PAGE
    t = {"total_seconds": 1234, "notebooks": {"01_x": 1234}, "machine": "m", "date": "d", "profile": "cpu"}
    write_json(t, paths.ensure(paths.timings_dir()) / "run_all_cpu.json")
    target = tmp_path / "README.md"
    target.write_text("\n".join(f"<!-- {m}:START -->\nold\n<!-- {m}:END -->" for m in
                                ("TABLE1", "HEADLINE", "PROFILES", "TIMINGS", "SPEED", "KEY_FINDINGS")) + "\n")
    paths.ensure(paths.tables_dir()).joinpath("table1.md").write_text("| t |\n")
    readme.update_readme(target)
    first = target.read_text()
    page = (paths.timings_dir() / TIMINGS_PAGE).read_text()
    assert "1234 s" in page and "## How fast" in page and "1234" not in first
    assert POINTER["TIMINGS"].strip() in first and POINTER["SPEED"].strip() in first
    write_json({**t, "total_seconds": 617, "notebooks": {"01_x": 617}}, paths.timings_dir() / "run_all_cpu.json")
    assert not readme.update_readme(target)                               # README unchanged
    assert "617 s" in (paths.timings_dir() / TIMINGS_PAGE).read_text()
