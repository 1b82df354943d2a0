"""The benchmark runs end to end on a tiny fake dataset and writes a consistent JSON."""
import json

import pytest
from conftest import has_module

from brainseg_lib.model.unet import UNet
from brainseg_lib.report import readme as bench_readme
from brainseg_lib.study import bench as bench_bench
from brainseg_lib.study.profiles import load_profile

KEYS = {"train_images_per_s", "infer_ms_p50", "infer_ms_p95", "achieved_gflops",
        "peak_matmul_gflops", "ratio_to_peak", "naive_epoch_s", "ours_epoch_s",
        "speedup_vs_naive", "peak_rss_mb", "threads", "device", "torch_version"}


def test_flop_count_scales_with_input_area_and_training_costs_more():
    m = UNet(base=4)
    f32 = bench_bench.count_flops(m, 32, train=False)
    f64 = bench_bench.count_flops(m, 64, train=False)
    assert f64 == pytest.approx(4 * f32, rel=0.01)          # convolutions scale with pixels
    assert bench_bench.count_flops(m, 32, train=True) > 2 * f32   # backward is about twice forward


def test_benchmark_writes_every_key(fake_root, tmp_path):
    params = {**load_profile("smoke"), "image_size": 32, "base_width": 4, "batch_size": 2,
              "profile": "tiny", "threads": 1}
    r = bench_bench.run_benchmark(params, steps=2, infer_runs=5, data_root=fake_root, out_dir=tmp_path,
                            blocks=3)
    assert KEYS <= set(r)
    saved = json.loads((tmp_path / "cpu-tiny.json").read_text())
    assert saved == r
    assert r["train_images_per_s"] > 0 and r["peak_matmul_gflops"] > 0
    assert r["ratio_to_peak"] == pytest.approx(r["achieved_gflops"] / r["peak_matmul_gflops"], abs=2e-3)
    # achieved GFLOP/s: the training FLOPs of one base-4 U-Net image at 32 px times images/s
    assert r["train_flops_per_image"] == bench_bench.count_flops(UNet(base=4), 32, train=True)
    assert r["infer_flops_per_image"] == bench_bench.count_flops(UNet(base=4), 32, train=False)
    assert r["achieved_gflops"] == pytest.approx(              # both figures rounded to 2 decimals
        r["train_flops_per_image"] * r["train_images_per_s"] / 1e9, rel=0.01, abs=0.01)
    assert r["ours_epoch_s"] == pytest.approx(4 / r["train_images_per_s"], abs=0.006)  # 4 TRAIN images, 2 decimals
    assert r["infer_ms_p50"] <= r["infer_ms_p95"]
    assert r["blocks_timed"] == 3 and len(r["train_images_per_s_blocks"]) == 3
    assert min(r["train_images_per_s_blocks"]) <= r["train_images_per_s"] <= max(r["train_images_per_s_blocks"])
    assert "tiny" in bench_readme.benchmarks_readme(tmp_path)
    # onnxruntime against PyTorch, side by side in the same run (or the reason it was skipped)
    assert r["infer_ms_per_image_torch"] == r["infer_ms_p50"]
    if has_module("onnxruntime") and has_module("onnx"):
        assert "onnx_skipped" not in r, r.get("onnx_skipped")
        assert r["infer_ms_per_image_onnx"] > 0 and r["onnx_threads"] == r["threads"] == 1
        assert r["infer_ms_p95_onnx"] >= r["infer_ms_per_image_onnx"]
        assert r["onnx_speedup_vs_torch"] == pytest.approx(
            r["infer_ms_per_image_torch"] / r["infer_ms_per_image_onnx"], rel=0.02, abs=0.002)
    else:
        assert r["onnx_skipped"] and "infer_ms_per_image_onnx" not in r


def test_onnx_comparison_is_skipped_with_the_reason_without_onnxruntime(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    session, info = bench_bench.onnx_session_for(UNet(base=4), 32, threads=1)
    assert session is None and "onnxruntime is not installed" in info["onnx_skipped"]
    keys = bench_bench._inference_keys([1.0, 2.0, 3.0], [], info)
    assert keys["infer_ms_per_image_torch"] == keys["infer_ms_p50"] == 2.0
    assert not any(k.endswith("_onnx") for k in keys) and keys["onnx_skipped"] == info["onnx_skipped"]


def test_onnx_session_of_the_benchmarked_model_matches_it():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import numpy as np
    import torch
    model = UNet(base=4, input_norm="zscore").to(memory_format=torch.channels_last).eval()
    session, info = bench_bench.onnx_session_for(model, 32, threads=1)
    assert session is not None, info
    x = torch.rand(1, 1, 32, 32)
    with torch.inference_mode():
        ref = torch.sigmoid(model(x)).numpy()
    assert np.abs(session.run(["probability"], {"image": x.numpy()})[0] - ref).max() <= 1e-4
    assert info["onnx_threads"] == 1 and info["onnxruntime_version"]


def test_profile_trials_table_reads_each_trial(tmp_path):
    """The trials table takes validation Dice at a mark from the last finished epoch and the
    snapshot scores, mark to target and final F1 from the run's JSON."""
    import pandas as pd
    trials = tmp_path / "profile_trials"
    (trials / "t1").mkdir(parents=True)
    pd.DataFrame({"trial": ["t1"], "note": ["a note"]}).to_csv(trials / "trials.csv", index=False)
    pd.DataFrame({"epoch": [1, 2, 3], "train_seconds": [50.0, 110.0, 130.0],
                  "val_dice": [0.5, 0.7, 0.8]}).to_csv(trials / "t1" / "history.csv", index=False)
    run = {"config": {"base_width": 16, "image_size": 64, "lr": 0.001}, "epochs_run": 3,
           "train_seconds": 130.4, "best_val_dice": 0.8, "seconds_to_target": 120.0,
           "test_f1_at_seconds": {"60": 0.81, "120": 0.85}, "global": {"f1": 0.861}}
    (trials / "t1" / "metrics.json").write_text(json.dumps(run))
    row = bench_readme.profile_trials_markdown(trials).splitlines()[-1]
    assert row == ("| `t1` | 16 @ 64 | 0.001 | 3 | 130 | 0.500 / 0.700 / 0.800 | 0.810 / 0.850 | 1, 0.850-0.850 | "
                   "120.0 | 0.861 | - | - | a note |")
    assert "Speed trials that chose the previous cpu profile" in bench_readme.benchmarks_readme(tmp_path)
    assert bench_readme.profile_trials_markdown(tmp_path / "none") == ""


@pytest.mark.parametrize("tunes", [True, False])
def test_malloc_comparison_is_reported_only_when_tuning_took_effect(fake_root, tmp_path, monkeypatch, tunes):
    """The default-vs-tuned allocator figures appear only when the default allocator was timed
    first and the tuning then took effect (never on macOS/musl, never twice in one process)."""
    monkeypatch.setattr(bench_bench.memory, "MALLOC_TUNED", False)
    monkeypatch.setattr(bench_bench, "keep_freed_memory", lambda: tunes)
    params = {**load_profile("smoke"), "image_size": 32, "base_width": 4, "batch_size": 2,
              "profile": "tiny", "threads": 1}
    r = bench_bench.run_benchmark(params, steps=1, blocks=1, infer_runs=2, data_root=fake_root,
                            out_dir=tmp_path, onnx=False)
    keys = {"default_malloc_images_per_s", "default_malloc_page_faults_per_step",
            "speedup_from_malloc_tuning"}
    assert r["malloc_tuned"] is tunes
    assert (keys <= set(r)) is tunes and (keys & set(r) == set()) is (not tunes)
    if tunes:
        assert r["speedup_from_malloc_tuning"] == pytest.approx(
            r["train_images_per_s"] / r["default_malloc_images_per_s"], rel=0.01)
    assert "onnx=False" in r["onnx_skipped"] and "infer_ms_per_image_onnx" not in r
    with pytest.raises(ValueError, match="must be >= 1"):
        bench_bench.run_benchmark(params, steps=0, data_root=fake_root, out_dir=tmp_path)


def test_profile_trials_table_has_one_cell_per_column(tmp_path):
    import pandas as pd
    trials = tmp_path / "profile_trials"
    (trials / "t1").mkdir(parents=True)
    pd.DataFrame({"trial": ["t1"], "note": ["n"]}).to_csv(trials / "trials.csv", index=False)
    pd.DataFrame({"epoch": [1], "train_seconds": [50.0], "val_dice": [0.5]}).to_csv(
        trials / "t1" / "history.csv", index=False)
    (trials / "t1" / "metrics.json").write_text(json.dumps({
        "config": {"base_width": 8, "image_size": 96, "lr": 0.002}, "epochs_run": 1,
        "train_seconds": 50.0, "best_val_dice": 0.5, "seconds_to_target": None,
        "test_f1_at_seconds": {}, "global": {"f1": 0.5}}))
    (trials / "t1" / "detection.json").write_text(json.dumps({"report": {"all": {
        "area_frac": {"auc": 0.9216}, "max_prob": {"auc": 0.95}}}}))
    lines = bench_readme.profile_trials_markdown(trials).splitlines()
    assert len({line.count("|") for line in lines}) == 1            # header, rule and row agree
    assert "| 0.922 / 0.950 | - | n |" in lines[-1] and "| none |" in lines[-1]


def test_profile_trials_table_summarises_a_kept_seed_sweep(tmp_path):
    """With sweep/metrics beside a trial, the table gives official vs grouped test F1 as mean ± sd."""
    import pandas as pd

    from brainseg_lib.evaluation.evaluate import RUN_KIND
    from brainseg_lib.evaluation.metrics import METRICS
    trials = tmp_path / "profile_trials"
    sweep_metrics = trials / "t1" / "sweep" / "metrics"
    sweep_metrics.mkdir(parents=True)
    pd.DataFrame({"trial": ["t1"], "note": ["n"]}).to_csv(trials / "trials.csv", index=False)
    pd.DataFrame({"epoch": [1], "train_seconds": [50.0], "val_dice": [0.5]}).to_csv(
        trials / "t1" / "history.csv", index=False)
    (trials / "t1" / "metrics.json").write_text(json.dumps({
        "profile": "cpu", "config": {"base_width": 8, "image_size": 96, "lr": 0.002},
        "epochs_run": 1, "train_seconds": 50.0, "best_val_dice": 0.5, "seconds_to_target": None,
        "test_f1_at_seconds": {}, "global": {"f1": 0.5}}))
    for scheme, f1s in (("official", (0.80, 0.90)), ("grouped", (0.70, 0.70))):
        for seed, f1 in enumerate(f1s):
            run = {"kind": RUN_KIND, "profile": "cpu", "run_name": f"cpu-{scheme}-bce_dice-seed{seed}",
                   "split_scheme": scheme, "loss": "bce_dice", "seed": seed, "n_images": 100,
                   "global": {m: f1 for m in METRICS},
                   "bootstrap_ci95": {m: [f1, f1] for m in METRICS}}
            (sweep_metrics / f"{run['run_name']}.json").write_text(json.dumps(run))
    row = bench_readme.profile_trials_markdown(trials).splitlines()[-1]
    assert "| 0.850 ± 0.071 vs 0.700 ± 0.000 (2/2 seeds) | n |" in row


def test_overlay_timing_has_its_own_line_and_is_left_out_of_the_training_table(tmp_path, monkeypatch):
    import json

    from brainseg_lib import paths
    from brainseg_lib.report import readme as bench_readme
    from brainseg_lib.report import readme as compare
    monkeypatch.setenv("BRAINSEG_RESULTS", str(tmp_path))
    folder = paths.ensure(tmp_path / "benchmarks")
    (folder / "predict_overlay_5000.json").write_text(json.dumps(
        {"kind": "predict_overlay", "side": 5000, "seconds_median": 0.9, "seconds_runs": [0.9, 1.0, 0.8],
         "outline_seconds_median": 0.08, "threads": 2}))
    assert "predict_overlay" not in bench_readme.benchmarks_readme(folder)
    assert "on a 5000x5000 scan** (synthetic; `predict_overlay_5000.json`, 2 threads): 0.9 s" in compare.speed_markdown()
    (folder / "predict_overlay_5000.json").write_text(json.dumps(
        {"kind": "predict_overlay", "side": 5000, "seconds_median": 1.4, "seconds_runs": [1.4, 1.5, 1.3],
         "outline_seconds_median": 0.05, "threads": 2, "scan": "Br35H yes/y0.jpg scaled", "synthetic_seconds_median": 0.7}))
    line = compare.speed_markdown()
    assert "scan** (Br35H yes/y0.jpg scaled; `predict_overlay_5000.json`, 2 threads): 1.4 s" in line
    assert "a flat synthetic image of that size: 0.7 s." in line


def test_peak_dtype_follows_the_training_compute():
    """The ratio to peak is taken against the dtype the convolutions run in."""
    import torch

    from brainseg_lib.study.bench_gpu import peak_dtype, peak_matmul
    cpu = torch.device("cpu")
    assert peak_dtype(None, cpu) == "float32"
    assert peak_dtype(torch.bfloat16, torch.device("cuda")) == "bfloat16"
    assert peak_dtype(None, torch.device("cuda")) == ("tf32" if torch.backends.cudnn.allow_tf32 else "float32")
    before = torch.backends.cuda.matmul.allow_tf32
    assert peak_matmul(cpu, "float32", n=64, repeats=1) > 0
    assert peak_matmul(cpu, "tf32", n=64, repeats=1) > 0
    assert torch.backends.cuda.matmul.allow_tf32 == before      # the switch is put back


def test_compile_is_timed_on_cuda_only():
    import torch

    from brainseg_lib.study.bench_gpu import time_compiled

    def never(*a, **k):
        raise AssertionError("must not be called on CPU")
    out = time_compiled(never, iter(()), None, torch.device("cpu"), 1, 1, never)
    assert set(out) == {"compile_skipped"} and "CUDA only" in out["compile_skipped"]
