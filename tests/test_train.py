"""brainseg_lib.train: an end-to-end smoke run on synthetic data, checkpoints, exact resume,
and one step of the paper profile on CPU. No real data is read."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from brainseg_lib import inference, paths
from brainseg_lib.data.cache import SplitArrays
from brainseg_lib.data.loaders import resident_tensors
from brainseg_lib.model.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from brainseg_lib.model.unet import count_parameters
from brainseg_lib.study import experiment
from brainseg_lib.study import profiles as experiment_profiles
from brainseg_lib.training import config as train_config
from brainseg_lib.training import engine, memory
from brainseg_lib.training import schedule as train_schedule

from conftest import Stop, small_config, stop_after, synthetic_arrays


@pytest.fixture(scope="module")
def train_arrays():
    return synthetic_arrays(32, seed=0)


@pytest.fixture(scope="module")
def val_arrays():
    return synthetic_arrays(8, seed=1, split="val")


def outputs(model, arrays) -> torch.Tensor:
    return inference.predict_logits(model, torch.from_numpy(arrays.images), torch.device("cpu"),
                                channels_last=False)


# --------------------------------------------------------------------------- smoke
def test_fit_smoke(tmp_path, train_arrays, val_arrays):
    cfg = small_config(augment=False, epochs=6)
    res = engine.fit(cfg, tmp_path / "run", train_arrays=train_arrays, val_arrays=val_arrays,
                    progress=False)
    h = res.history
    assert list(h["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert list(h["step"]) == [4, 8, 12, 16, 20, 24]           # 32 images / batch 8
    # the loss falls and the model learns the bright disks
    assert h["train_loss"].iloc[-1] < 0.8 * h["train_loss"].iloc[0]
    assert h["train_loss"].iloc[-3:].max() < h["train_loss"].iloc[:3].min()
    assert h["val_loss"].iloc[-1] < h["val_loss"].iloc[0]
    assert h["val_dice"].iloc[-1] > 0.7
    assert np.isfinite(h[["val_loss", "val_dice", "val_iou"]].to_numpy()).all()
    assert (h["lr"] == cfg.lr).all()                              # schedule "none"
    assert h["train_seconds"].is_monotonic_increasing
    assert res.peak_gpu_mb is None                                # measured on CUDA only
    run = tmp_path / "run"
    for f in ("best.pt", "last.pt", "history.csv", "train_log.txt"):
        assert (run / f).is_file(), f
    assert res.best_path == run / "best.pt" and res.last_path == run / "last.pt"
    on_disk = pd.read_csv(run / "history.csv")
    assert list(on_disk.columns[:4]) == ["epoch", "step", "train_loss", "lr"]
    np.testing.assert_allclose(on_disk["train_loss"], h["train_loss"])
    assert res.n_parameters == count_parameters(engine.build_model(cfg))
    assert res.device == "cpu"
    assert not list(run.glob("*.tmp"))


def test_checkpoint_round_trip(tmp_path, train_arrays, val_arrays):
    cfg = small_config(augment=False, epochs=3)
    res = engine.fit(cfg, tmp_path / "run", train_arrays=train_arrays, val_arrays=val_arrays,
                    progress=False)
    ck = load_checkpoint(res.last_path)
    assert ck["epoch"] == 3 and ck["train_config"] == cfg.to_dict()
    assert ck["model_config"] == {"in_channels": 1, "base": 4, "out_channels": 1, "depth": 4,
                                  "input_norm": "none"}
    model = model_from_checkpoint(ck, res.last_path, expect={"base": 4})
    assert not model.training
    # the reloaded model reproduces the validation Dice recorded when it was saved
    v = engine.validate(model, *resident_tensors(val_arrays, "cpu"), cfg)
    assert v["val_dice"] == pytest.approx(res.history["val_dice"].iloc[-1], abs=1e-9)
    assert v["val_loss"] == pytest.approx(res.history["val_loss"].iloc[-1], rel=1e-6)
    # save -> load -> identical outputs
    out1 = outputs(model, val_arrays)
    save_checkpoint({"state_dict": model.state_dict(), "model_config": model.config()},
                    tmp_path / "copy.pt")
    model2 = model_from_checkpoint(load_checkpoint(tmp_path / "copy.pt"))
    assert torch.equal(out1, outputs(model2, val_arrays))
    # best.pt is the epoch with the highest validation Dice
    best = load_checkpoint(res.best_path)
    assert best["epoch"] == int(res.history.loc[res.history["val_dice"].idxmax(), "epoch"])


# --------------------------------------------------------------------------- resume
@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_resume_continues_and_matches_uninterrupted_run(tmp_path, train_arrays, val_arrays, ema_decay):
    # with augmentation: resumed randomness must replay too; with EMA its state must resume too
    if ema_decay and "ema_decay" not in train_config.TrainConfig.__dataclass_fields__:
        pytest.skip("this TrainConfig has no ema_decay")
    cfg = small_config(epochs=5, **({"ema_decay": ema_decay} if ema_decay else {}))
    full = engine.fit(cfg, tmp_path / "full", train_arrays=train_arrays, val_arrays=val_arrays,
                     progress=False)

    k = 2
    with pytest.raises(Stop):
        engine.fit(cfg, tmp_path / "cut", train_arrays=train_arrays, val_arrays=val_arrays,
                  callbacks=(stop_after(k),), progress=False)
    partial = pd.read_csv(tmp_path / "cut" / "history.csv")
    assert list(partial["epoch"]) == [1, 2]
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == k

    seen = []
    resumed = engine.fit(cfg, tmp_path / "cut", resume=True, train_arrays=train_arrays,
                        val_arrays=val_arrays, callbacks=(lambda row: seen.append(row["epoch"]),),
                        progress=False)
    assert seen == [k + 1, k + 2, k + 3]                         # continues from epoch k+1
    assert list(resumed.history["epoch"]) == [1, 2, 3, 4, 5]
    assert list(pd.read_csv(tmp_path / "cut" / "history.csv")["epoch"]) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(resumed.history["train_loss"].iloc[:k], partial["train_loss"])
    np.testing.assert_allclose(resumed.history["train_loss"], full.history["train_loss"],
                               rtol=1e-6, atol=1e-7)
    assert list(resumed.history["step"]) == list(full.history["step"])

    a = load_checkpoint(full.last_path)
    b = load_checkpoint(resumed.last_path)
    assert a["epoch"] == b["epoch"] == 5
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in ("state_dict", "train_state_dict", "ema_state"):
        if key not in a:
            continue
        assert a[key].keys() == b[key].keys()
        for name, t in a[key].items():
            assert torch.allclose(t.float(), b[key][name].float(), rtol=1e-6, atol=1e-7), (key, name)
    # and the resumed model predicts what the uninterrupted one does
    assert torch.allclose(outputs(model_from_checkpoint(a), val_arrays),
                          outputs(model_from_checkpoint(b), val_arrays), rtol=1e-5, atol=1e-6)


REAL_VALIDATE = engine.validate


def scripted_val_dice(monkeypatch, dice: list[float], first_epoch: int = 1) -> None:
    """engine.validate reports ``dice[epoch - 1]`` as the val Dice (the rest is measured), so
    which epochs are new bests is fixed by the test, not by the numerics of a torch build."""
    epoch = [first_epoch]

    def validate(*a, **k):
        out = {**REAL_VALIDATE(*a, **k), "val_dice": dice[epoch[0] - 1]}
        epoch[0] += 1
        return out
    monkeypatch.setattr(engine, "validate", validate)


def record_checkpoints(monkeypatch) -> list[int]:
    """The epochs after which fit writes last.pt."""
    written, real = [], engine.run_state.save_checkpoints
    monkeypatch.setattr(engine.run_state, "save_checkpoints",
                        lambda st, *a, **k: written.append(st.epoch) or real(st, *a, **k))
    return written


def test_checkpoint_due_names_each_reason_alone():
    due = engine.run_state.checkpoint_due           # (epoch, epochs, every, is_best, stop)
    assert not due(2, 10, 5, False, False)
    assert due(5, 10, 5, False, False) and due(10, 10, 5, False, False)   # k-th epochs
    assert due(7, 7, 5, False, False)                                      # the last epoch
    assert due(2, 10, 5, True, False)                                      # a new best
    assert due(2, 10, 5, False, True)                                      # a stop (time cut)
    assert all(due(e, 10, 1, False, False) for e in range(1, 11))
    cadence = engine.run_state.check_cadence(np.int64(3))
    assert cadence == 3 and type(cadence) is int


def test_checkpoint_cadence_writes_on_schedule_at_each_best_and_trains_the_same(
        tmp_path, train_arrays, val_arrays, monkeypatch):
    """Val Dice .5 .6 .4 .3 .2 .1 .05 with ``checkpoint_every=3`` over 7 epochs: last.pt after
    epochs 1 and 2 (new bests), 3 and 6 (cadence) and 7 (the last), never after 4 or 5; best.pt
    is epoch 2's; the weights equal those of a run that checkpoints every epoch."""
    dice = [.5, .6, .4, .3, .2, .1, .05]
    written = record_checkpoints(monkeypatch)
    scripted_val_dice(monkeypatch, dice)
    cfg = small_config(epochs=7)
    sparse = engine.fit(cfg, tmp_path / "sparse", train_arrays=train_arrays, val_arrays=val_arrays,
                        progress=False, checkpoint_every=3)
    assert written == [1, 2, 3, 6, 7]
    assert load_checkpoint(sparse.best_path)["epoch"] == 2
    assert load_checkpoint(sparse.last_path)["epoch"] == 7
    assert "checkpoint every 3 epochs" in (tmp_path / "sparse" / "train_log.txt").read_text()
    written.clear()
    scripted_val_dice(monkeypatch, dice)
    every = engine.fit(cfg, tmp_path / "every", train_arrays=train_arrays, val_arrays=val_arrays,
                       progress=False)
    assert written == [1, 2, 3, 4, 5, 6, 7]
    a, b = load_checkpoint(sparse.last_path), load_checkpoint(every.last_path)
    assert all(torch.equal(t, b["state_dict"][n]) for n, t in a["state_dict"].items())


def test_resume_with_a_cadence_replays_from_the_last_checkpoint(tmp_path, train_arrays, val_arrays,
                                                                  monkeypatch):
    """Val Dice falls after epoch 1, so with ``checkpoint_every=10`` a run stopped after epoch 3
    has last.pt at epoch 1; resumed, it retrains epochs 2..5 and ends with the weights of an
    uninterrupted run (deterministic config); best.pt is epoch 1's throughout."""
    dice = [.9, .8, .7, .6, .5]
    cfg = small_config(epochs=5)
    scripted_val_dice(monkeypatch, dice)
    full = engine.fit(cfg, tmp_path / "full", train_arrays=train_arrays, val_arrays=val_arrays,
                      progress=False, checkpoint_every=10)
    scripted_val_dice(monkeypatch, dice)
    with pytest.raises(Stop):
        engine.fit(cfg, tmp_path / "cut", train_arrays=train_arrays, val_arrays=val_arrays,
                   callbacks=(stop_after(3),), progress=False, checkpoint_every=10)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1           # two epochs lost
    assert list(pd.read_csv(tmp_path / "cut" / "history.csv")["epoch"]) == [1, 2, 3]
    seen = []
    scripted_val_dice(monkeypatch, dice, first_epoch=2)
    resumed = engine.fit(cfg, tmp_path / "cut", resume=True, train_arrays=train_arrays,
                         val_arrays=val_arrays, callbacks=(lambda row: seen.append(row["epoch"]),),
                         progress=False, checkpoint_every=10)
    assert seen == [2, 3, 4, 5]
    assert list(resumed.history["epoch"]) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(resumed.history["train_loss"], full.history["train_loss"], rtol=1e-6)
    assert load_checkpoint(resumed.best_path)["epoch"] == load_checkpoint(full.best_path)["epoch"] == 1
    a, b = load_checkpoint(full.last_path), load_checkpoint(resumed.last_path)
    assert a["epoch"] == b["epoch"] == 5
    assert all(torch.allclose(t, b["state_dict"][n], rtol=1e-6, atol=1e-7)
               for n, t in a["state_dict"].items())


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10", None])
def test_checkpoint_cadence_must_be_a_whole_number_of_epochs(tmp_path, train_arrays, val_arrays, bad):
    with pytest.raises(ValueError, match="checkpoint_every"):
        engine.fit(small_config(epochs=1), tmp_path / "r", train_arrays=train_arrays.head(8),
                   val_arrays=val_arrays, progress=False, checkpoint_every=bad)
    assert not (tmp_path / "r").exists()          # refused before anything is set up or written


def test_resume_with_other_config_is_refused(tmp_path, train_arrays, val_arrays):
    with pytest.raises(Stop):
        engine.fit(small_config(epochs=3), tmp_path / "r", train_arrays=train_arrays,
                  val_arrays=val_arrays, callbacks=(stop_after(1),), progress=False)
    with pytest.raises(ValueError, match="config differs"):
        engine.fit(small_config(epochs=3, lr=5e-3), tmp_path / "r", resume=True,
                  train_arrays=train_arrays, val_arrays=val_arrays, progress=False)


def test_resume_of_finished_run_adds_nothing(tmp_path, train_arrays, val_arrays):
    cfg = small_config(epochs=2, augment=False)
    first = engine.fit(cfg, tmp_path / "r", train_arrays=train_arrays.head(8),
                      val_arrays=val_arrays, progress=False)
    again = engine.fit(cfg, tmp_path / "r", resume=True, train_arrays=train_arrays.head(8),
                      val_arrays=val_arrays, progress=False)
    assert list(again.history["epoch"]) == [1, 2]
    pd.testing.assert_frame_equal(again.history, first.history)


def test_config_round_trip_and_unknown_keys():
    cfg = small_config()
    assert train_config.TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        train_config.TrainConfig.from_dict({"image_size": 32, "learning_rate": 1})


def test_lr_factor():
    assert train_schedule.lr_factor(small_config(), 5, 10, 1.0) == 1.0
    oc = small_config(schedule="onecycle", warmup_frac=0.1)
    assert train_schedule.lr_factor(oc, 0, 100, 0) == pytest.approx(0.05)
    assert train_schedule.lr_factor(oc, 10, 100, 0) == pytest.approx(1.0)
    assert train_schedule.lr_factor(oc, 100, 100, 0) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="max_train_seconds"):
        train_schedule.lr_factor(small_config(schedule="time_cosine"), 0, 10, 0.0)
    with pytest.raises(ValueError, match="unknown schedule"):
        train_schedule.lr_factor(small_config(schedule="step"), 0, 10, 0.0)


def _tree(folder):
    """Every file under ``folder`` with its modification time (ns)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_outputs_stay_in_tmp(isolated_dirs, train_arrays, val_arrays):
    assert paths.runs_dir() == isolated_dirs["runs"]
    assert paths.PROJECT_ROOT not in paths.runs_dir().parents
    project_results = paths.PROJECT_ROOT / "results"
    before = _tree(project_results)
    res = engine.fit(small_config(epochs=1), paths.runs_dir() / "tiny", progress=False,
                     train_arrays=train_arrays.head(8), val_arrays=val_arrays)
    assert _tree(project_results) == before                    # the project's results untouched
    written = [p for d in isolated_dirs.values() for p in d.rglob("*") if p.is_file()]
    assert {"history.csv", "last.pt", "best.pt", "train_log.txt"} <= {p.name for p in written}
    assert all(isolated_dirs["runs"] in p.parents for p in (res.best_path, res.last_path))


# --------------------------------------------------------------------------- paper profile
def test_paper_profile_values():
    params = experiment_profiles.load_profile("paper")
    cfg = experiment.config_from_params(params)
    assert cfg.lr == 1e-4
    assert cfg.batch_size == 50
    assert cfg.epochs == 100
    assert cfg.schedule == "none"
    assert cfg.image_size == 256
    assert cfg.base_width == 64
    assert cfg.loss == "bce_dice"
    with pytest.raises(FileNotFoundError, match="known profiles"):
        experiment_profiles.load_profile("no-such-profile")


def test_paper_profile_one_epoch_on_cpu(tmp_path):
    cfg = experiment.config_from_params(experiment_profiles.load_profile("paper"))
    cfg = dataclasses.replace(cfg, image_size=32, batch_size=2, epochs=1, device="cpu",
                              snapshot_epochs=[])
    assert cfg.base_width == 64 and cfg.lr == 1e-4
    arrays = synthetic_arrays(2, size=32, seed=3)
    res = engine.fit(cfg, tmp_path / "paper", train_arrays=arrays, val_arrays=arrays, progress=False)
    assert list(res.history["epoch"]) == [1] and list(res.history["step"]) == [1]
    assert np.isfinite(res.history["train_loss"]).all()
    assert res.n_parameters == 31_042_369
    assert res.best_path.is_file()
    ck = load_checkpoint(res.last_path)
    assert ck["model_config"]["base"] == 64 and ck["train_config"]["lr"] == 1e-4


def test_resident_batches_match_the_dataloader_exactly():
    """fit() draws batches from device-resident tensors; they must be the very batches the
    DataLoader factory gives for the same (seed, epoch), augmentation included."""
    from brainseg_lib.data.loaders import AugmentConfig, make_loader, resident_batches
    rng = np.random.default_rng(0)
    n, s = 21, 32
    arrays = SplitArrays("train", s, rng.integers(0, 256, (n, s, s), dtype=np.uint8),
                         (rng.random((n, s, s)) > 0.8).astype(np.uint8), [f"{i}" for i in range(n)],
                         np.full((n, 2), s), np.zeros(n))
    images = torch.from_numpy(arrays.images).unsqueeze(1)
    masks = torch.from_numpy(arrays.masks).unsqueeze(1)
    for epoch in (0, 3):
        a = list(make_loader(arrays, 4, train=True, seed=7, epoch=epoch, augment=AugmentConfig()))
        b = list(resident_batches(images, masks, 4, 7, epoch, AugmentConfig()))
        assert len(a) == len(b) == 5
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    c = list(resident_batches(images, masks, 4, 7, 1, AugmentConfig()))
    assert not torch.equal(c[0][0], b[0][0])           # another epoch, other batches


FAULTS_PER_STEP = """
import resource, sys, torch
from brainseg_lib.model.unet import UNet
from brainseg_lib.training import memory
torch.set_num_threads(2)
torch.manual_seed(0)
if sys.argv[1] == "tuned":
    assert memory.keep_freed_memory()
model, x = UNet(base=16), torch.rand(16, 1, 64, 64)
y = (torch.rand(16, 1, 64, 64) > 0.9).float()
opt = torch.optim.Adam(model.parameters())
def step():
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
for _ in range(6):   # warm-up: the heap grows to the step's working set
    step()
faults = []
for _ in range(9):   # per step; the median ignores a step that grows the heap once more
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults)[len(faults) // 2])
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc"
                    or any(a in __import__("os").environ.get("LD_PRELOAD", "")
                           for a in ("jemalloc", "tcmalloc", "mimalloc")),
                    reason="glibc's own malloc only")
def test_keep_freed_memory_stops_refaulting_a_training_steps_buffers():
    """The cpu profile's training step (base 16, 64x64, batch 16), each allocator in a fresh
    process (the setting is process-wide, and a test process's heap history would decide the
    outcome). The median over 9 steps after warm-up: glibc's defaults fault in thousands of
    pages in every step, the tuned allocator in 0 or 1. (The mean was flaky: a tuned step that
    grows the heap once more faults a few hundred pages, once 1,030 a step over 5 steps in CI.)"""
    import os
    import subprocess
    import sys
    # glibc's defaults: no malloc settings from the environment
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}

    def faults(mode: str) -> float:
        r = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode], capture_output=True,
                           text=True, timeout=120, cwd=paths.PROJECT_ROOT, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        return float(r.stdout.split()[-1])

    default, tuned = faults("default"), faults("tuned")
    assert default > 1000, default          # the pattern the tuning is for does happen
    assert tuned < default / 20, (tuned, default)


def test_fit_tunes_the_allocator_only_when_asked(tmp_path, train_arrays, val_arrays, monkeypatch):
    """``keep_freed_memory`` is process-wide and one-way: ``fit`` calls it only with
    ``tune_allocator=True`` (on CPU), and its log says what happened."""
    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(1) or True)
    cfg = small_config(epochs=1, augment=False)
    for name, tune in (("off", False), ("on", True)):
        engine.fit(cfg, tmp_path / name, train_arrays=train_arrays.head(8), val_arrays=val_arrays,
                   progress=False, **({"tune_allocator": True} if tune else {}))
        log = (tmp_path / name / "train_log.txt").read_text()
        assert calls == ([1] if tune else [])
        assert f"(tune_allocator: {'applied' if tune else 'off'})" in log


@pytest.mark.parametrize("extra, expected, every", [({}, True, 1), ({"tune_allocator": False}, False, 1),
                                                    ({"checkpoint_every": 7}, True, 7)])
def test_run_profile_passes_tune_allocator_and_cadence(monkeypatch, extra, expected, every):
    seen = {}

    class Trained(Exception):
        pass

    def fake_fit(*args, **kw):
        seen.update(kw)
        raise Trained

    monkeypatch.setattr(experiment, "fit", fake_fit)
    monkeypatch.setattr(experiment, "split_arrays", lambda *a, **k: {"train": None, "val": None})
    with pytest.raises(Trained):
        experiment.run_profile({"profile": "t", "image_size": 32, "device": "cpu", **extra})
    assert seen["tune_allocator"] is expected and seen["checkpoint_every"] == every
    assert {"tune_allocator", "checkpoint_every"} <= experiment.RUN_KEYS


def test_params_from_namespace_keeps_every_run_key_and_nothing_else():
    """Notebook 02 collects its run parameters this way: a profile key that is not in the
    parameters cell (papermill injects it as a global) still reaches the run."""
    ns = {"image_size": 64, "warmup_frac": 0.1, "split_seed": 3, "profile": "p", "xai_images": 24,
          "pd": object(), "__name__": "__main__"}
    got = experiment_profiles.params_from_namespace(ns)
    assert got == {"image_size": 64, "warmup_frac": 0.1, "split_seed": 3, "profile": "p"}
    assert experiment.config_from_params(got).warmup_frac == 0.1


def test_console_log_shows_about_ten_epoch_lines_and_passes_the_rest():
    import logging

    from brainseg_lib.training.run_state import EpochThinning
    f = EpochThinning(epochs=30)

    def rec(msg, *args):
        return logging.LogRecord("x", logging.INFO, __file__, 1, msg, args, None)
    shown = [e for e in range(1, 31) if f.filter(rec("epoch %3d  loss %.4f%s", e, 0.5, "  *best*"))]
    assert shown == [1, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert f.filter(rec("device=%s amp=%s", "cpu", None))          # other lines always pass
    assert [e for e in range(1, 3) if EpochThinning(2).filter(rec("epoch %3d%s", e, ""))] == [1, 2]


@pytest.mark.parametrize("is_main", [True, False])
def test_a_scoring_failure_on_rank_0_reaches_every_rank(monkeypatch, tmp_path, is_main):
    """Under torchrun, rank 0 scores and writes; if that fails, the other ranks must fail too
    (not wait for a result that never comes)."""
    import contextlib
    from types import SimpleNamespace

    sent = {}

    class FakeDDP:
        def __init__(self):
            self.is_main = is_main

        def main_first(self):
            return contextlib.nullcontext()

        def broadcast(self, obj):            # rank 0's object reaches everyone
            if is_main:
                sent["obj"] = obj
                return obj
            return {"error": "ValueError('disk full')"}

    monkeypatch.setattr(experiment.distributed, "session", lambda device: contextlib.nullcontext(FakeDDP()))
    monkeypatch.setattr(experiment, "split_arrays", lambda *a, **k: {"train": None, "val": None})
    monkeypatch.setattr(experiment, "fit", lambda *a, **k: SimpleNamespace())

    def failing(*a, **k):
        raise ValueError("disk full")
    monkeypatch.setattr(experiment, "score_and_write", failing)
    monkeypatch.setenv("BRAINSEG_RUNS", str(tmp_path))
    params = {**experiment_profiles.load_profile("smoke"), "device": "cpu"}
    with pytest.raises(ValueError if is_main else RuntimeError, match="disk full"):
        experiment.run_profile(params)
    if is_main:
        assert sent["obj"] == {"error": "ValueError('disk full')"}


def test_score_and_write_hands_its_own_val_to_detection_points(monkeypatch, tmp_path):
    """score_and_write hands the run's VAL (a grouped split's, here) to the detection
    operating points, which choose their thresholds on it."""
    from types import SimpleNamespace

    from brainseg_lib.study import levers
    seen = {}
    own_val = SplitArrays("val", 8, np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 8), np.uint8),
                          ["y5.jpg", "y9.jpg"], np.full((2, 2), 8), np.zeros(2))
    ev = SimpleNamespace(summary={"global": {"f1": 0.5}}, probs=None)
    monkeypatch.setattr(experiment, "native_masks_for", lambda names, root=None: {})
    monkeypatch.setattr(experiment, "evaluate_checkpoint", lambda *a, **k: ev)
    monkeypatch.setattr(experiment, "snapshot_scores", lambda *a, **k: [])
    monkeypatch.setattr(experiment, "detection_points",
                        lambda ckpt, cfg, root, limit, val_arrays=None: seen.update(val=val_arrays) or {})
    monkeypatch.setattr(levers, "selection_figures", lambda *a, **k: {})
    monkeypatch.setattr(experiment, "write_evaluation", lambda ev, name, extra: (tmp_path / "m.json", None))
    monkeypatch.setattr(experiment, "write_timing", lambda *a, **k: {})
    result = SimpleNamespace(run_dir=tmp_path / "run", best_path=tmp_path / "best.pt", snapshots={},
                             history=pd.DataFrame({"epoch": [1], "val_dice": [0.4]}), n_parameters=1,
                             device="cpu", cut_by_time=False)
    params = {"profile": "t", "split_scheme": "grouped", "image_size": 16, "device": "cpu"}
    cfg = experiment.config_from_params(params)
    experiment.score_and_write(params, cfg, result, {"train": None, "val": own_val, "test": own_val})
    assert seen["val"].names == own_val.names
    # with limit_val, the VAL the checkpoint was chosen on: its first images
    seen.clear()
    experiment.score_and_write(params, dataclasses.replace(cfg, limit_val=1), result,
                               {"train": None, "val": own_val, "test": own_val})
    assert seen["val"].names == ["y5.jpg"]


def test_history_keeps_its_clock_columns_in_a_timing_file(tmp_path):
    """Two runs that train the same weights write the same history.csv: the seconds go to
    history_timing.csv, and read_history merges them back (an old inline history reads as is)."""
    from brainseg_lib.training.run_state import read_history, write_history
    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_dice": 0.1 * e, "epoch_seconds": 7.0 + e,
             "train_seconds": 8.0 * e, "wall_seconds": 9.0 * e} for e in (1, 2)]
    write_history(tmp_path, rows)
    plain = (tmp_path / "history.csv").read_text()
    assert "seconds" not in plain
    write_history(tmp_path, [{**r, "train_seconds": r["train_seconds"] * 2} for r in rows])   # a slower machine
    assert (tmp_path / "history.csv").read_text() == plain
    back = read_history(tmp_path)
    assert list(back["train_seconds"]) == [16.0, 32.0] and list(back["val_dice"]) == [0.1, 0.2]
    old = tmp_path / "old"
    old.mkdir()
    pd.DataFrame(rows).to_csv(old / "history.csv", index=False)
    assert list(read_history(old)["wall_seconds"]) == [9.0, 18.0]


def test_epoch_lines_carry_seconds_to_the_log_file_and_a_terminal_only(tmp_path, capsys):
    import logging

    from brainseg_lib.training.run_state import ClockFormatter, run_logger
    rec = logging.LogRecord("x", logging.INFO, "f", 1, "epoch %3d  loss %.4f%s", (3, 0.5, ""), None)
    rec.clock = "  7.5s (train 20s)"
    assert ClockFormatter("%(message)s").format(rec) == "epoch   3  loss 0.5000  7.5s (train 20s)"
    assert ClockFormatter("%(message)s", clock=False).format(rec) == "epoch   3  loss 0.5000"
    log = run_logger(tmp_path, main=True, epochs=3)       # stdout here is captured: not a terminal
    log.info("epoch %3d  loss %.4f%s", 1, 0.25, "  *best*", extra={"clock": "  1.0s (train 1s)"})
    for h in log.handlers:
        h.flush()
    assert capsys.readouterr().out.strip() == "epoch   1  loss 0.2500  *best*"
    assert (tmp_path / "train_log.txt").read_text().rstrip().endswith("*best*  1.0s (train 1s)")
