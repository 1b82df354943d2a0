"""The one percentile bootstrap behind every confidence interval in the project.

Every CI is built from three steps, and only the middle one differs between callers:

1. **draw** resample indices from ``np.random.default_rng(seed)``:

   * ``resample_indices(n, n_boot, rng)``: one ``rng.integers(0, n, size=(n_boot, n))``
     draw, row ``b`` holding replicate ``b``: images (``bootstrap_ci``), patients
     (``evaluation.external``), paired differences (``xai.attribution.paired_ci``);
   * ``resample_within_strata(sizes, n_boot, rng)``: replicate by replicate, the
     indices of each stratum in turn (``rng.integers(0, n_k, n_k)``), so that each
     resample keeps every stratum's size;
   * ``bootstrap_clusters_stratified``: the same draw over each stratum's *clusters*
     (near-duplicate groups), every drawn cluster bringing all its rows, so that images
     that are near-copies of one another move together. With one row per cluster, in
     row order, it is the image bootstrap within strata (the classes of ``detection.roc``,
     whose clusters are near-duplicate groups).

2. **statistic** of all replicates at once (``bootstrap_stat`` hands it the resampled
   rows, shape ``(n_boot, n, ...)``; ``bootstrap_clusters_stratified`` a list of
   resamples per stratum): re-pooled counts, per-patient sums, a mean difference,
   sensitivity and AUC.

3. **percentile CI** of the replicates (``percentile_ci``): ``np.quantile``'s default
   (linear) method at the quantiles ``(lo, hi)``.

**Reproducibility.** The committed CIs were computed with exactly these draws, in this
order, and these quantiles, so changing any of them changes committed figures. Two
details matter at the last bit:

* ``ci_quantiles(0.95)`` is ``((1 - 0.95) / 2, 1 - (1 - 0.95) / 2)``, and in floating
  point ``(1 - 0.95) / 2 == 0.025000000000000022``, not ``0.025``. The per-image metric CIs
  (``bootstrap_ci``) and the paired-difference CIs of the explanations use it; the
  patient CIs of the external validation and the detection CIs use the literal
  ``CI95 = (0.025, 0.975)``. The two differ in the last bits of the lower bound, so
  each caller keeps its own.
* The stratified draw order (replicate-major) differs from one block draw per stratum;
  the detection CIs were drawn replicate-major.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from brainseg_lib.evaluation.metrics import COUNTS, metrics_from_counts

N_BOOT = 2000
CI95 = (0.025, 0.975)


# ------------------------------------------------------------------------------- draws
def resample_indices(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n)`` indices into ``n`` units, drawn with replacement in one call."""
    return rng.integers(0, n, size=(n_boot, n))


def resample_within_strata(sizes: Sequence[int], n_boot: int,
                           rng: np.random.Generator) -> list[np.ndarray]:
    """One ``(n_boot, n_k)`` index array per stratum of size ``n_k``: for each replicate,
    stratum 0's ``n_0`` indices are drawn, then stratum 1's, and so on."""
    draws = [[rng.integers(0, n, n) for n in sizes] for _ in range(n_boot)]
    return [np.array([d[k] for d in draws], dtype=np.int64).reshape(n_boot, n)
            for k, n in enumerate(sizes)]


# ------------------------------------------------------------------------- replicates
def bootstrap_stat(sample, statistic: Callable, n_boot: int = N_BOOT, seed: int = 0):
    """``statistic`` of ``n_boot`` resamples of ``sample``'s rows (the resampling unit).

    ``statistic`` is called once with every resample stacked, an array of shape
    ``(n_boot, len(sample), ...)``, and returns one value per resample (an array of
    ``n_boot``, or a dict of such arrays); its result is returned unchanged.
    """
    s = np.asarray(sample)
    rng = np.random.default_rng(seed)
    return statistic(s[resample_indices(len(s), n_boot, rng)])


def cluster_codes(labels) -> np.ndarray:
    """Cluster labels as codes ``0..G-1`` in order of first appearance."""
    lab = np.asarray(labels)
    if lab.size == 0:
        return np.zeros(0, np.int64)
    _, first, inverse = np.unique(lab, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.ravel()]


def cluster_rows(codes: np.ndarray, draws: np.ndarray) -> list[np.ndarray]:
    """For each row of ``draws`` (cluster codes drawn), the row indices of every drawn
    cluster's members, cluster by cluster in draw order (members in row order)."""
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    out = []
    for d in draws:
        n = sizes[d]
        offsets = np.repeat(np.cumsum(n) - n, n)
        out.append(order[np.repeat(starts[d], n) + np.arange(n.sum()) - offsets])
    return out


def bootstrap_clusters_stratified(strata: Sequence, clusters: Sequence, statistic: Callable,
                                  n_boot: int = N_BOOT, seed: int = 0):
    """``statistic`` of ``n_boot`` cluster resamples within strata: in each stratum as many
    clusters as it has are drawn with replacement (``resample_within_strata`` over the
    cluster counts), each bringing all its rows, so a resample's size varies.

    ``clusters`` holds one label per row of each stratum. ``statistic`` is called once with
    a list holding, per stratum, the ``n_boot`` resamples as a list of arrays. Every
    stratum must be non-empty.
    """
    arrays = [np.asarray(s) for s in strata]
    if any(len(a) == 0 for a in arrays):
        raise ValueError("every stratum needs at least one unit to resample")
    if [len(c) for c in clusters] != [len(a) for a in arrays]:
        raise ValueError("clusters need one label per row of each stratum")
    codes = [cluster_codes(c) for c in clusters]
    rng = np.random.default_rng(seed)
    draws = resample_within_strata([int(c.max()) + 1 for c in codes], n_boot, rng)
    return statistic([[a[r] for r in cluster_rows(c, d)] for a, c, d in zip(arrays, codes, draws)])


# -------------------------------------------------------------------------------- CIs
def ci_quantiles(level: float = 0.95) -> tuple[float, float]:
    """The two quantiles of a central ``level`` interval, as ``(1 - level) / 2`` and its
    complement (0.025000000000000022 at 0.95: see the module docstring)."""
    tail = (1 - level) / 2
    return tail, 1 - tail


def percentile_ci(values, quantiles: tuple[float, float] = CI95,
                  skip_nan: bool = False) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates: ``np.quantile`` (linear) at
    ``quantiles``, NaN replicates dropped with ``skip_nan``; ``(nan, nan)`` for no replicates."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    if skip_nan:
        v = v[~np.isnan(v)]       # every replicate NaN (a figure the set cannot give): (nan, nan)
        if v.size == 0:
            return float("nan"), float("nan")
    return float(np.quantile(v, quantiles[0])), float(np.quantile(v, quantiles[1]))


# --------------------------------------------------------- per-image segmentation metrics
def bootstrap_ci(per_image, metric: str = "f1", n_boot: int = N_BOOT, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of a pooled metric: resample images, re-pool the counts."""
    counts = per_image[list(COUNTS)].to_numpy(dtype=np.float64)

    def pooled(resamples: np.ndarray) -> np.ndarray:
        return np.array([metrics_from_counts(*s)[metric] for s in resamples.sum(axis=1)])

    return percentile_ci(bootstrap_stat(counts, pooled, n_boot, seed), ci_quantiles(level))


def bootstrap_cis_groups(per_image, groups: Sequence, metrics: Sequence[str], n_boot: int = N_BOOT,
                         seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile CIs of pooled metrics resampling whole near-duplicate ``groups`` (one label
    per row of ``per_image``): copies of one slice move together, so they do not count as
    independent evidence (``bootstrap_clusters_stratified`` with one stratum). One draw serves
    every metric."""
    counts = per_image[list(COUNTS)].to_numpy(dtype=np.float64)

    def pooled(strata):
        return [metrics_from_counts(*r.sum(axis=0)) for r in strata[0]]

    reps = bootstrap_clusters_stratified([counts], [list(groups)], pooled, n_boot, seed)
    return {m: percentile_ci([r[m] for r in reps], ci_quantiles(level)) for m in metrics}


def bootstrap_ci_groups(per_image, groups: Sequence, metric: str = "f1", n_boot: int = N_BOOT,
                        seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """``bootstrap_cis_groups`` for one metric."""
    return bootstrap_cis_groups(per_image, groups, [metric], n_boot, seed, level)[metric]



def wilson_ci(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion k/n ((nan, nan) when n is 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
