"""The GPU half of ``bench``: the matmul peak in the training's compute dtype, the training
step's peak GPU memory, and whether ``torch.compile`` pays for the profile's training step.

* ``peak_matmul(device, dtype)``: the best of several square matmuls in ``dtype`` (bf16 on
  CUDA when the profile trains under bf16 autocast, so the ratio is taken against the tensor
  cores' bf16 ceiling, not fp32's); 8192-square on CUDA, 2048 on CPU.
* ``time_compiled``: the same training step as ``bench._time_ours`` on a fresh model wrapped
  in ``torch.compile``; the first (compiling) step is timed on its own, and a failure is
  recorded as ``compile_skipped`` with its reason instead of sinking the benchmark. CUDA only:
  on a 2-core CPU the compile costs more than the whole training it would speed up.
"""
from __future__ import annotations

import time
from statistics import median

import torch


def sync(device) -> None:
    """Wait for the device (CUDA) so that a wall-clock timer measures its work."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_dtype(amp_dtype, device: torch.device) -> str:
    """The compute dtype the training's convolutions run in, as ``peak_matmul`` takes it: the
    autocast dtype, else ``tf32`` for float32 on CUDA while cuDNN may use TF32 (its default),
    else ``float32``."""
    if amp_dtype is not None:
        return str(amp_dtype).removeprefix("torch.")
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "float32"


def peak_matmul(device: torch.device, dtype: str = "float32", n: int | None = None,
                repeats: int = 12) -> float:
    """GFLOP/s of the best of ``repeats`` n x n matmuls in ``dtype`` (a ``peak_dtype`` name;
    ``tf32``: float32 tensors with TF32 matmuls allowed), after one warm-up."""
    n = n or (8192 if device.type == "cuda" else 2048)
    tf32 = dtype == "tf32"
    dtype = torch.float32 if tf32 else getattr(torch, dtype)
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32 or old_tf32
    try:
        return _best_matmul(device, dtype, n, repeats)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_tf32


def _best_matmul(device, dtype, n: int, repeats: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def time_compiled(model_factory, batches, cfg, device, steps: int, blocks: int,
                  time_train_steps) -> dict:
    """Images/s of the training step under ``torch.compile`` (median of ``blocks`` blocks), the
    seconds of the first compiled step, or ``compile_skipped`` with the reason."""
    if device.type != "cuda":
        return {"compile_skipped": f"timed on CUDA only (device {device.type})"}
    try:
        model = torch.compile(model_factory())
        t0 = time.perf_counter()
        time_train_steps(model, batches, cfg, device, cfg.channels_last, steps=1, blocks=1, warmup=0)
        first_step_s = time.perf_counter() - t0
        rates = time_train_steps(model, batches, cfg, device, cfg.channels_last, steps, blocks)
    except Exception as e:  # noqa: BLE001 - an optional comparison must not sink the benchmark
        return {"compile_skipped": f"torch.compile failed: {type(e).__name__}: {str(e)[:300]}"}
    finally:
        model = None                  # free its memory before the timings that follow
        torch.cuda.empty_cache()
    return {"compiled_train_images_per_s": round(median(rates), 2),
            "compile_first_step_s": round(first_step_s, 2)}
