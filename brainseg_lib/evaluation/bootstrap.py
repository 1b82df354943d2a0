"""TODO docstring."""
from __future__ import annotations

import numpy as np

from brainseg_lib.evaluation.metrics import COUNTS, metrics_from_counts


def bootstrap_ci(per_image, metric: str = "f1", n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of a pooled metric: resample images, re-pool the counts."""
    rng = np.random.default_rng(seed)
    c = per_image[list(COUNTS)].to_numpy(dtype=np.float64)
    idx = rng.integers(0, len(c), size=(n_boot, len(c)))
    sums = c[idx].sum(axis=1)
    vals = np.array([metrics_from_counts(*s)[metric] for s in sums])
    a = (1 - level) / 2
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))
