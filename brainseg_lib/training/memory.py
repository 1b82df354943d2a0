"""Allocator tuning for CPU training: an explicit option (``tune_allocator``) that keeps
freed activation memory in the process (glibc ``mallopt``), recorded as ``malloc_tuned``.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


MALLOC_TUNED = False  # set once keep_freed_memory() has taken effect in this process


def keep_freed_memory() -> bool:
    """Stop glibc's malloc from handing freed activation buffers back to the kernel.

    By default glibc serves large blocks with fresh ``mmap``s and trims the heap top after
    large ``free``s, so training steps keep re-faulting activation and gradient pages.
    Raising the mmap and trim thresholds keeps those pages in the process and reuses them.
    ``python -m brainseg_lib bench`` measures the effect in one run (minor page faults per
    step and images/s, default allocator then tuned: ``speedup_from_malloc_tuning``).
    Process-wide and one-way. Returns whether it took effect: False off glibc (macOS,
    Windows, musl) and when another allocator is preloaded (glibc's ``mallopt`` would then
    accept the call and change nothing).
    """
    import ctypes
    import platform
    global MALLOC_TUNED
    if MALLOC_TUNED:
        return True
    if platform.libc_ver()[0] != "glibc" or any(
            a in os.environ.get("LD_PRELOAD", "") for a in ("jemalloc", "tcmalloc", "mimalloc")):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mmap_max = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)  # DEFAULT_MMAP_THRESHOLD_MAX
    MALLOC_TUNED = bool(mallopt(m_mmap_threshold, mmap_max)
                        & mallopt(m_trim_threshold, 1 << 30)
                        & mallopt(m_top_pad, 64 << 20))
    return MALLOC_TUNED


def tune_allocator(requested: bool, device) -> str:
    """Apply ``keep_freed_memory`` when asked for on CPU (a ``torch.device``); what happened, for the log."""
    if not requested:
        return "off"
    if device.type != "cpu":
        return f"off ({device.type})"
    return "applied" if keep_freed_memory() else "unavailable (not glibc's malloc)"
