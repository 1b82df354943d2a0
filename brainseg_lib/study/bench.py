"""Benchmark: how fast we train and infer, against the machine's peak and a naive pipeline.

Everything compared is measured in the same process, one after the other, on
the same device, so the ratios hold even on a noisy machine:

* ``peak_matmul_gflops``: best of several square matmuls in the training's compute dtype
  (``peak_matmul_dtype``: float32 on CPU; on CUDA bfloat16 under bf16 autocast, else tf32; a ceiling for
  convolution throughput on this device), measured before and after the training
  timing; the higher of the two is the peak, so the ratio errs low. On CUDA also
  ``peak_gpu_mb`` (our training step's peak memory) and the step under ``torch.compile``
  (``bench_gpu``);
* ``train_flops_per_image`` / ``infer_flops_per_image``: counted from the model
  with ``torch.utils.flop_counter`` (forward + backward / forward only);
* ``train_images_per_s`` of our training step (the training set resident on the
  device as uint8, tensor augmentation, channels_last, the profile's batch), as
  ``train.fit`` runs it, and the achieved GFLOP/s: the median of ``blocks`` timed
  blocks of ``steps`` steps each, so one burst of noise does not set it. On CPU the same steps are
  first timed with glibc's default malloc, then with ``train.keep_freed_memory``
  (``speedup_from_malloc_tuning``, with minor page faults per step for both). The switch is
  one-way within a process, so the order is fixed: default first, on the already warmed model;
* ``naive_epoch_s``: the pipeline most Br35H notebooks use - a DataLoader that
  opens, decodes and resizes each JPEG and rasterises its mask every epoch,
  fp32, default settings (contiguous NCHW, no augmentation) - timed over a
  fixed number of batches and scaled to the 500 training images;
* ``infer_ms_p50`` / ``p95``: one image at the profile size, batch 1, model
  loaded, ``torch.inference_mode``;
* ``infer_ms_per_image_torch`` / ``infer_ms_per_image_onnx`` (medians, ms per image, batch
  1) and ``onnx_speedup_vs_torch`` (torch ms / onnx ms): the same model exported to ONNX
  (``model.onnx``) and run by onnxruntime's CPU provider with as many intra-op threads as
  torch, timed call by call interleaved with the PyTorch timing above (``infer_ms_per_image_torch``
  is ``infer_ms_p50``). On CPU only; without onnxruntime (or onnx/onnxscript to export)
  ``onnx_skipped`` records why and the onnx keys are absent.
"""
from __future__ import annotations

import platform
import resource
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from brainseg_lib import paths
from brainseg_lib.data.br35h import Annotation, list_split, rasterize
from brainseg_lib.data.cache import load_split
from brainseg_lib.data.images import read_grayscale
from brainseg_lib.data.loaders import augment_config, resident_batches, resident_tensors
from brainseg_lib.fileio import write_json
from brainseg_lib.inference import resolve_device
from brainseg_lib.model.onnx import INPUT_NAME, OUTPUT_NAMES
from brainseg_lib.model.unet import UNet, count_parameters
from brainseg_lib.study.bench_gpu import peak_dtype, peak_matmul, time_compiled
from brainseg_lib.study.bench_gpu import sync as _sync
from brainseg_lib.training import memory
from brainseg_lib.training.config import TrainConfig
from brainseg_lib.training.engine import autocast_dtype
from brainseg_lib.training.losses import get_loss
from brainseg_lib.training.memory import keep_freed_memory


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device | None = None) -> str:
    """The GPU's name for a CUDA device (``cuda:N``: GPU N; ``cuda`` or no device: the
    current GPU when there is one), else the CPU model."""
    cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
    return torch.cuda.get_device_name(device) if cuda else cpu_name()


def count_flops(model: torch.nn.Module, size: int, train: bool) -> float:
    """FLOPs for one image: forward (+ backward when ``train``)."""
    x = torch.randn(1, 1, size, size)
    model = model.cpu()
    with FlopCounterMode(display=False) as fc:
        out = model(x)
        if train:
            out.sum().backward()
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def time_train_steps(model, batches, cfg: TrainConfig, device, channels_last: bool,
                     steps: int, blocks: int = 1, warmup: int = 2) -> list[float]:
    """Images per second of optimiser steps, one figure per block of ``steps`` steps, after
    ``warmup`` untimed steps. ``batches`` is an iterator that does not run out."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = get_loss(cfg.loss)
    amp = autocast_dtype(cfg, device)
    model.train()

    def step(x, y):
        x, y = x.to(device), y.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return x.shape[0]

    for _ in range(warmup):
        step(*next(batches))
    rates = []
    for _ in range(blocks):
        _sync(device)
        t0, n = time.perf_counter(), 0
        for _ in range(steps):
            n += step(*next(batches))
        _sync(device)
        rates.append(n / (time.perf_counter() - t0))
    return rates


class NaiveJPEGDataset(Dataset):
    """The usual notebook pipeline: decode, convert, resize and rasterise on every access."""

    def __init__(self, anns: list[Annotation], folder, size: int):
        self.anns, self.folder, self.size = anns, folder, size

    def __len__(self):
        return len(self.anns)

    def __getitem__(self, i):
        from PIL import Image
        a = self.anns[i]
        img = read_grayscale(self.folder / a.filename)
        mask = rasterize(a.regions, *img.shape)
        img = np.array(Image.fromarray(img).resize((self.size, self.size), Image.BILINEAR))
        mask = np.array(Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (self.size, self.size), Image.NEAREST)) > 127
        return (torch.from_numpy(img).float().div(255).unsqueeze(0),
                torch.from_numpy(mask.astype(np.float32)).unsqueeze(0))


def _check_counts(steps: int, blocks: int, infer_runs: int) -> None:
    if steps < 1 or blocks < 1 or infer_runs < 1:
        raise ValueError(f"steps, blocks and infer_runs must be >= 1 (got {steps}, {blocks}, "
                         f"{infer_runs})")


def _new_model(cfg: TrainConfig, device) -> torch.nn.Module:
    model = UNet(base=cfg.base_width, input_norm=cfg.input_norm).to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def _time_ours(cfg: TrainConfig, device, train, steps: int, blocks: int) -> dict:
    """Our training step (in-RAM uint8, tensor augmentation, channels_last): images/s per block
    and minor page faults per step, with glibc's default malloc first when still untouched, then
    tuned as train.fit does (process-wide and one-way, so the naive pipeline gets it too)."""
    model = _new_model(cfg, device)
    images, masks = resident_tensors(train, device)
    batches = (b for epoch in range(10**6) for b in resident_batches(
        images, masks, cfg.batch_size, cfg.seed, epoch,
        augment_config(cfg.augment_level) if cfg.augment else None))

    def timed():
        """Images/s per block of our steps, and minor page faults per step (2 warm-up steps)."""
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        rates = time_train_steps(model, batches, cfg, device, cfg.channels_last, steps, blocks)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        return rates, faults / (steps * blocks + 2)

    out = {"model": model, "batches": batches, "default_rates": None, "default_faults": None}
    if device.type == "cpu" and not memory.MALLOC_TUNED:
        out["default_rates"], out["default_faults"] = timed()
    out["malloc_tuned"] = keep_freed_memory() if device.type == "cpu" else False
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out["rates"], out["faults"] = timed()
    if device.type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def _time_naive(cfg: TrainConfig, device, data_root, steps: int, blocks: int) -> float:
    """Images/s of the notebook pipeline: decode + resize JPEGs every epoch, default
    DataLoader, NCHW fp32."""
    anns, folder = list_split("train", data_root)
    loader = DataLoader(NaiveJPEGDataset(anns, folder, cfg.image_size), batch_size=cfg.batch_size,
                        shuffle=True)
    naive_cfg = TrainConfig(**{**cfg.to_dict(), "amp": "off"})
    batches = (b for _ in range(10**6) for b in loader)
    return median(time_train_steps(UNet(base=cfg.base_width).to(device), batches,
                                   naive_cfg, device, False, steps, blocks))


def onnx_session_for(model: torch.nn.Module, size: int, threads: int):
    """(onnxruntime CPU session of ``model``'s ONNX export, info dict), or (None, {"onnx_skipped":
    reason}) when onnxruntime or the exporter's packages are missing or the export fails."""
    try:
        import onnxruntime
    except ImportError:
        return None, {"onnx_skipped": "onnxruntime is not installed (pip install onnxruntime)"}
    import copy

    from brainseg_lib.apply.onnx_runtime import make_session
    from brainseg_lib.model.onnx import OnnxExportError, export_model_proto
    plain = copy.deepcopy(model).cpu().float().to(memory_format=torch.contiguous_format).eval()
    try:
        proto, exporter = export_model_proto(plain, size)
    except OnnxExportError as e:
        return None, {"onnx_skipped": str(e)}
    except Exception as e:  # noqa: BLE001 - an optional comparison must not sink the benchmark
        return None, {"onnx_skipped": f"ONNX export failed: {type(e).__name__}: {e}"}
    session = make_session(proto.SerializeToString(), threads=threads)
    return session, {"onnxruntime_version": onnxruntime.__version__, "onnx_exporter": exporter,
                     "onnx_threads": threads}


def _call_ms(fn, device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - t) * 1000


def time_inference(model, cfg: TrainConfig, device, infer_runs: int, onnx: bool = True,
                   warmup: int = 5) -> tuple[list[float], list[float], dict]:
    """ms per image (batch 1, ``torch.inference_mode``) of the PyTorch model and, on CPU, of its
    ONNX export in onnxruntime with as many threads, interleaved call by call (alternating which
    goes first) so that both see the same machine; (torch ms, onnx ms, onnx info)."""
    model.eval()
    size = cfg.image_size
    x = torch.rand(1, 1, size, size, device=device)
    x_np = x.cpu().numpy()                       # onnxruntime takes contiguous NCHW
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if device.type != "cpu":
        session, info = None, {"onnx_skipped": f"onnxruntime is timed on the CPU only (device {device.type})"}
    elif not onnx:
        session, info = None, {"onnx_skipped": "not asked for (onnx=False)"}
    else:
        session, info = onnx_session_for(model, size, torch.get_num_threads())
    calls = [("torch", lambda: model(x))]
    if session is not None:
        calls.append(("onnx", lambda: session.run([OUTPUT_NAMES[0]], {INPUT_NAME: x_np})))
    times = {"torch": [], "onnx": []}
    with torch.inference_mode():
        for i in range(infer_runs + warmup):
            for name, fn in (calls if i % 2 == 0 else calls[::-1]):
                ms = _call_ms(fn, device)
                if i >= warmup:
                    times[name].append(ms)
    return times["torch"], times["onnx"], info


def _inference_keys(torch_ms: list[float], onnx_ms: list[float], info: dict) -> dict:
    p50 = round(float(np.percentile(torch_ms, 50)), 3)
    out = {"infer_ms_p50": p50, "infer_ms_p95": round(float(np.percentile(torch_ms, 95)), 3),
           "infer_ms_per_image_torch": p50}
    if onnx_ms:
        onnx_p50 = round(float(np.percentile(onnx_ms, 50)), 3)
        out.update({"infer_ms_per_image_onnx": onnx_p50,
                    "infer_ms_p95_onnx": round(float(np.percentile(onnx_ms, 95)), 3),
                    "onnx_speedup_vs_torch": round(float(np.median(torch_ms) / np.median(onnx_ms)), 3)})
    return {**out, **info}


def run_benchmark(params: dict, steps: int = 10, infer_runs: int = 100, data_root=None,
                  out_dir=None, blocks: int = 5, onnx: bool = True) -> dict:
    """Measure everything in the module docstring for a profile's settings; write the JSON."""
    _check_counts(steps, blocks, infer_runs)
    from brainseg_lib.study.experiment import config_from_params
    cfg = config_from_params(params)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = UNet(base=cfg.base_width)
    train_flops = count_flops(model, cfg.image_size, train=True)
    infer_flops = count_flops(model, cfg.image_size, train=False)
    dtype = peak_dtype(autocast_dtype(cfg, device), device)
    peak_before = peak_matmul(device, dtype)
    train = load_split("train", cfg.image_size, root=data_root)
    ours = _time_ours(cfg, device, train, steps, blocks)
    # the higher of two peak measurements, before and after: a conservative ratio
    peak = max(peak_before, peak_matmul(device, dtype))
    compiled = time_compiled(lambda: _new_model(cfg, device), ours["batches"], cfg, device,
                             steps, blocks, time_train_steps)
    naive_ips = _time_naive(cfg, device, data_root, steps, blocks)
    torch_ms, onnx_ms, onnx_info = time_inference(ours["model"], cfg, device, infer_runs, onnx)
    ours_ips = median(ours["rates"])
    achieved = train_flops * ours_ips / 1e9
    result = {
        "profile": params.get("profile", "custom"), "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(), "torch_version": str(torch.__version__),
        "image_size": cfg.image_size, "base_width": cfg.base_width, "batch_size": cfg.batch_size,
        "n_parameters": count_parameters(model),
        "train_flops_per_image": train_flops, "infer_flops_per_image": infer_flops,
        "train_images_per_s": round(ours_ips, 2),
        "achieved_gflops": round(achieved, 2), "peak_matmul_gflops": round(peak, 2),
        "peak_matmul_dtype": dtype,
        "ratio_to_peak": round(achieved / peak, 3),
        "ours_epoch_s": round(len(train) / ours_ips, 2),
        "naive_epoch_s": round(len(train) / naive_ips, 2),
        "speedup_vs_naive": round(naive_ips and ours_ips / naive_ips, 2),
        **_inference_keys(torch_ms, onnx_ms, onnx_info),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "steps_timed": steps, "blocks_timed": blocks,
        "train_images_per_s_blocks": [round(r, 2) for r in ours["rates"]],
        "minor_page_faults_per_step": round(ours["faults"], 1), "malloc_tuned": ours["malloc_tuned"],
    }
    return _finish({**result, **compiled}, ours, ours_ips, device, out_dir)


def _finish(result: dict, ours: dict, ours_ips: float, device, out_dir) -> dict:
    """Add the malloc and GPU-memory figures, write the JSON, return the result."""
    if ours["malloc_tuned"] and ours["default_rates"]:
        # measured before tuning, on the same (already warmed) model and batch stream
        result["default_malloc_images_per_s"] = round(median(ours["default_rates"]), 2)
        result["default_malloc_page_faults_per_step"] = round(ours["default_faults"], 1)
        result["speedup_from_malloc_tuning"] = round(ours_ips / median(ours["default_rates"]), 3)
    if "compiled_train_images_per_s" in result:
        result["compile_speedup"] = round(result["compiled_train_images_per_s"] / ours_ips, 3)
    if "peak_gpu_mb" in ours:
        result["peak_gpu_mb"] = ours["peak_gpu_mb"]
    out = paths.ensure(Path(out_dir) if out_dir else paths.benchmarks_dir())
    write_json(result, out / f"{device.type}-{result['profile']}.json")
    return result


def format_table(result: dict) -> str:
    width = max(len(k) for k in result)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in result.items())
