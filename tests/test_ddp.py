"""Data-parallel training (brainseg_lib/training/distributed.py) on CPU over gloo, 2 processes.

* ``torchrun --nproc-per-node 2 -m brainseg_lib train`` on a tiny fake Br35H tree writes one
  set of results and trains what one process trains with the same global batch;
* one DDP step gives the single-process loss and gradients (global-batch Dice and BatchNorm);
* a DDP run stopped by a callback resumes on every rank and ends where an uninterrupted
  DDP run ends; every rank returns rank 0's history; only rank 0 writes.

Both multi-process tests take about 20 to 40 s each on a busy 2-core machine.
"""
from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from brainseg_lib.study import experiment, profiles
from brainseg_lib.training import distributed, engine
from brainseg_lib.training.losses import get_loss

dist = torch.distributed
if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available in this torch build",
                allow_module_level=True)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Tolerance on the per-epoch train loss, DDP (2 processes) vs one process, same global batch.
# Measured on the run below: at most 1.6e-7 relative (2.4e-7 absolute) over its 3 epochs; on
# the real smoke profile (64 px, 2 epochs) at most 1.2e-5 relative. What remains is float
# summation order: the gradient all-reduce, the all-reduced Dice and BatchNorm sums, and
# convolutions over 4-image shards instead of 8-image batches. Adam amplifies it: the
# convolution biases in front of a BatchNorm have a true gradient of zero, so their updates
# are lr * sign(rounding noise), which moves every later step a little (and VAL losses, read
# through the BatchNorm running means, more: 4e-4 here, which is why they are not compared).
# The tolerance still catches the two ways of getting the global batch wrong: BatchNorm with
# per-rank statistics gave up to 1.3e-3 here, a per-rank soft Dice up to 1.2e-3.
LOSS_RTOL = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on timeout kill the group (torchrun's workers too)."""
    p = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        pytest.fail(f"timed out after {timeout} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, p.returncode, out)


def fake_tree(via, root: Path, n_train: int = 16, n_val: int = 4, n_test: int = 4) -> Path:
    """A Br35H-shaped tree with enough TRAIN images for a few global batches of 8."""
    def split(first, n):
        return {f"y{first + i}.png": (32, 32, "L", [via.circle(8 + (3 * i) % 16, 10 + (5 * i) % 12, 4 + i % 3)])
                for i in range(n)}
    return via.build_fake_br35h(root, {"train": split(0, n_train), "val": split(500, n_val),
                                       "test": split(700, n_test)})


SETS = {"image_size": 32, "epochs": 3, "batch_size": 8, "threads": 1, "tune_allocator": False,
        "external_dev": False, "detection_points": False, "limit_train": None, "limit_val": None,
        "limit_test": None}


# --------------------------------------------------------------------------- torchrun, end to end
def test_torchrun_trains_one_run_like_a_single_process(tmp_path, via, isolated_dirs):
    root = fake_tree(via, tmp_path / "br35h")
    # one process, in this one: the reference
    params = {**profiles.load_profile("smoke"), **SETS}
    single = experiment.run_profile(params, data_root=root, progress=False)
    # two processes under torchrun, writing into their own results folder
    out = tmp_path / "ddp_results"
    env = {**os.environ, "BRAINSEG_RESULTS": str(out), "BRAINSEG_RUNS": str(out / "runs"),
           "OMP_NUM_THREADS": "1", "BRAINSEG_PROGRESS": "0"}
    sets = [a for k, v in SETS.items() for a in ("--set", f"{k}={'null' if v is None else v}")]
    r = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
              "-m", "brainseg_lib", "--data", str(root), "train", "--profile", "smoke", *sets], env)
    assert r.returncode == 0, r.stdout[-6000:]
    name = experiment.name_for(params)
    assert single["json_path"].endswith(f"{name}.json")
    # exactly one set of results, written once, in the smoke profile's own folder
    metrics = out / "smoke" / "metrics"
    assert sorted(p.name for p in metrics.iterdir()) == [f"{name}.json", f"{name}_per_image.csv"]
    assert [p.name for p in (out / "runs").iterdir()] == [name]
    run = out / "runs" / name
    assert {"history.csv", "last.pt", "best.pt", "train_log.txt", "timing.json"} <= {p.name for p in run.iterdir()}
    log = (run / "train_log.txt").read_text()
    assert "distributed: 2 processes (gloo), 4 images per process per step" in log
    for epoch in (1, 2, 3):
        assert log.count(f"epoch {epoch:3d}  loss") == 1, log
    assert "(tune_allocator: off)" in log
    timing = json.loads((run / "timing.json").read_text())
    assert timing["processes"] == 2 and timing["device"] == "cpu"
    # the same training as one process with the same global batch, up to float summation order
    a = pd.read_csv(isolated_dirs["runs"] / name / "history.csv")
    b = pd.read_csv(run / "history.csv")
    assert list(a["step"]) == list(b["step"]) == [2, 4, 6]              # 16 images / global batch 8
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=LOSS_RTOL)
    assert a["train_loss"].iloc[-1] != a["train_loss"].iloc[0]          # it trained


# --------------------------------------------------------------------------- in-process workers
def _worker(rank: int, world: int, port: int, out: str) -> None:
    """One rank: a DDP step's gradients, then fit / interrupted fit / resumed fit."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    # a short timeout: a rank left waiting fails the test instead of hanging it
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    out = Path(out)
    x, y = _one_batch()
    ctx = distributed.setup(torch.device("cpu"))
    torch.manual_seed(0)
    model = ctx.prepare_model(engine.UNet(base=4), seed=0)
    net = ctx.wrap(model).train()
    b = x.shape[0] // world
    loss = ctx.loss("bce_dice")(net(x[rank * b:(rank + 1) * b]), y[rank * b:(rank + 1) * b])
    loss.backward()
    mean_loss = ctx.sum(float(loss.detach()))[0] / world     # every rank takes part in the sum
    if rank == 0:
        torch.save({"loss": mean_loss, "grads": {n: p.grad for n, p in model.named_parameters()},
                    "buffers": dict(model.named_buffers())}, out / "step.pt")

    from conftest import Stop, small_config, stop_after, synthetic_arrays
    tr, va = synthetic_arrays(32, seed=0), synthetic_arrays(8, seed=1, split="val")
    cfg = small_config(epochs=3, ema_decay=0.9, snapshot_epochs=[2])
    full = engine.fit(cfg, out / "full", train_arrays=tr, val_arrays=va, progress=False)
    full.history.to_csv(out / f"returned_rank{rank}.csv", index=False)
    stopped, resumed_epochs = False, []
    try:
        engine.fit(cfg, out / "cut", train_arrays=tr, val_arrays=va, progress=False,
                   callbacks=(stop_after(1),))
    except Stop:
        stopped = True
    engine.fit(cfg, out / "cut", resume=True, train_arrays=tr, val_arrays=va, progress=False,
               callbacks=(lambda row: resumed_epochs.append(row["epoch"]),))
    (out / f"cut_rank{rank}.json").write_text(json.dumps({"stopped": stopped,
                                                          "resumed_epochs": resumed_epochs}))
    # max_train_seconds: the ranks share one clock, so they stop at the same step
    engine.fit(small_config(epochs=50, max_train_seconds=1e-9), out / "timed", train_arrays=tr,
               val_arrays=va, progress=False)
    dist.destroy_process_group()


def _one_batch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 32, 32, generator=g)
    return x, (torch.rand(8, 1, 32, 32, generator=g) > 0.8).float()


def test_ddp_step_fit_and_resume_on_two_processes(tmp_path):
    import torch.multiprocessing as mp
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")

    # one step: the loss and gradients of the global batch, BatchNorm statistics included
    torch.manual_seed(0)
    ref = engine.UNet(base=4).train()
    x, y = _one_batch()
    loss = get_loss("bce_dice")(ref(x), y)
    loss.backward()
    got = torch.load(tmp_path / "step.pt", weights_only=True)
    assert got["loss"] == pytest.approx(float(loss.detach()), rel=1e-6)
    for n, p in ref.named_parameters():
        if p.grad.abs().max() < 1e-6:          # convolution biases before a BatchNorm: zero in theory
            assert got["grads"][n].abs().max() < 1e-6, n
        else:
            torch.testing.assert_close(got["grads"][n], p.grad, rtol=0, atol=1e-4 * float(p.grad.abs().max()))
    for n, t in ref.named_buffers():
        torch.testing.assert_close(got["buffers"][n], t, rtol=1e-5, atol=1e-6)

    # every rank returned rank 0's history; only rank 0 wrote (one log line per epoch)
    from brainseg_lib.training.run_state import read_history
    full = read_history(tmp_path / "full")                 # history.csv with its clock columns
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "returned_rank1.csv"), full)
    log = (tmp_path / "full" / "train_log.txt").read_text()
    assert [log.count(f"epoch {e:3d}  loss") for e in (1, 2, 3)] == [1, 1, 1]
    assert (tmp_path / "full" / "snapshots" / "epoch_2.pt").is_file()
    # the interrupted DDP run was stopped after epoch 1 and resumed there on both ranks ...
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"cut_rank{rank}.json").read_text())
        assert seen == {"stopped": True, "resumed_epochs": [2, 3]}, rank
    assert "resumed from" in (tmp_path / "cut" / "train_log.txt").read_text()
    # ... and ends where the uninterrupted one does
    cut = pd.read_csv(tmp_path / "cut" / "history.csv")
    assert list(cut["epoch"]) == [1, 2, 3]
    np.testing.assert_allclose(cut["train_loss"], full["train_loss"], rtol=1e-6)
    np.testing.assert_allclose(cut["val_dice"], full["val_dice"], rtol=1e-6)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    for key in ("state_dict", "ema_state"):
        for n, t in a[key].items():
            torch.testing.assert_close(b[key][n], t, rtol=1e-5, atol=1e-6)
    timed = torch.load(tmp_path / "timed" / "last.pt", weights_only=True)
    assert timed["cut_by_time"] and timed["epoch"] == 1 and timed["step"] == 1


# --------------------------------------------------------------------------- no processes
def test_a_world_of_one_changes_nothing():
    ctx = distributed.DistContext(torch.device("cpu"))
    batches = [(torch.zeros(3, 1, 2, 2), torch.ones(3, 1, 2, 2))]
    assert ctx.shard(batches) is batches
    assert ctx.broadcast({"a": 1}) == {"a": 1} and ctx.sum(1.5, 2) == [1.5, 2]
    assert ctx.max(2.5) == 2.5
    m = engine.UNet(base=2)
    assert ctx.prepare_model(m, 0) is m and ctx.wrap(m) is m
    assert ctx.loss("bce_dice") is get_loss("bce_dice")
    ctx.check_batch(7, 3)                       # anything goes with one process


def test_shards_are_disjoint_slices_of_the_global_batch():
    x = torch.arange(8.0).view(8, 1, 1, 1)
    shards = [list(distributed.DistContext(torch.device("cpu"), 2, r).shard([(x, x + 100)]))
              for r in range(2)]
    assert [s[0][0].flatten().tolist() for s in shards] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert torch.equal(shards[1][0][1], x[4:] + 100)
    two = distributed.DistContext(torch.device("cpu"), 2, 0)
    with pytest.raises(ValueError, match="does not split evenly over 2 processes"):
        two.check_batch(100, 7)
    with pytest.raises(ValueError, match="does not split evenly"):
        two.check_batch(5, 8)                   # a training set smaller than one batch
    two.check_batch(100, 8)


def test_a_multi_gpu_runs_checkpoint_loads_into_the_plain_unet(tmp_path):
    """The CUDA branch of prepare_model (SyncBatchNorm), run on CPU where only its conversion
    and eval mode are possible: every BatchNorm2d becomes a SyncBatchNorm with the same
    parameters and buffers, and a checkpoint written from it (as rank 0 writes one) loads into
    the inference U-Net and predicts what the unconverted model predicts."""
    from brainseg_lib.model.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from brainseg_lib.training import run_state
    from conftest import small_config
    torch.manual_seed(0)
    plain = engine.UNet(base=4)
    with torch.no_grad():                       # running statistics that are not the defaults
        plain.train()(torch.rand(4, 1, 32, 32))
    reference = {k: v.clone() for k, v in plain.state_dict().items()}
    ctx = distributed.DistContext(torch.device("cuda"), world_size=2, rank=0)
    synced = ctx.prepare_model(plain, seed=0)
    norms = [type(m) for m in synced.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and set(norms) == {torch.nn.SyncBatchNorm}
    assert synced.state_dict().keys() == reference.keys()
    assert all(torch.equal(synced.state_dict()[k], v) for k, v in reference.items())
    cfg = small_config()
    opt = torch.optim.Adam(synced.parameters())
    state = run_state.checkpoint_state(synced, opt, cfg, 1, 1, 0.0, 0.0, [{"val_dice": 0.5}], {})
    save_checkpoint(state, tmp_path / "last.pt")
    loaded = model_from_checkpoint(load_checkpoint(tmp_path / "last.pt"))
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in loaded.modules())
    x = torch.rand(2, 1, 32, 32)
    fresh = engine.UNet(base=4)
    fresh.load_state_dict(reference)
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(x), fresh.eval()(x), atol=1e-6)
        assert torch.allclose(synced.eval()(x), fresh(x), atol=1e-6)   # SyncBatchNorm in eval
