"""Two sanity checks on the explanation maps, beyond beating a random map.

* **Model randomisation** (Adebayo et al., *Sanity checks for saliency maps*, NeurIPS 2018): the
  same method on the same images, once with the trained model and once with the same network
  with every weight re-drawn from its initialisation (BatchNorm statistics reset). A map that
  explains the model must change when the model's weights are destroyed. Per image, the
  Spearman rank correlation of the two maps' absolute values; per method, its mean with a
  bootstrap 95% CI over images. A method **passes** when the whole CI lies below
  ``MAX_RANK_CORR`` (0.5, fixed before any result was seen): its maps depend on what the model
  learnt rather than on the image or the architecture alone. Both maps explain the trained
  model's target region, so only the weights differ.
* **Against the model's own probability map** (``REFERENCE``): a map that puts less of its mass
  inside the tumour than the prediction itself adds nothing a user could not read off the
  output. Per method, the paired difference in mass fraction (method - probability map) with its
  bootstrap CI; the method **beats the reference** when the whole CI lies above 0 by at least
  ``MIN_EFFECT``.
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from brainseg_lib.xai.attribution import MIN_EFFECT, REFERENCE, attribute, paired_ci

MAX_RANK_CORR = 0.5


def randomized_copy(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A copy of ``model`` with every layer's parameters re-initialised (``reset_parameters``)
    under ``seed``, and BatchNorm running statistics reset: the architecture without what it
    learnt."""
    torch.manual_seed(seed)
    rand = copy.deepcopy(model)
    for m in rand.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
    return rand.eval()


def rank_correlations(maps_a: dict[str, np.ndarray], maps_b: dict[str, np.ndarray],
                      names: list[str]) -> pd.DataFrame:
    """One row per (image, method): Spearman correlation of |map a| and |map b| over pixels
    (NaN where either map is constant)."""
    rows = []
    for method, a in maps_a.items():
        b = maps_b[method]
        for i, name in enumerate(names):
            x, y = np.abs(a[i]).ravel(), np.abs(b[i]).ravel()
            r = float(spearmanr(x, y)[0]) if x.std() > 0 and y.std() > 0 else float("nan")
            rows.append({"name": name, "method": method, "rank_corr": r})
    return pd.DataFrame(rows)


def randomisation_test(model, x: torch.Tensor, regions: np.ndarray, trained_maps: dict[str, np.ndarray],
                       names: list[str], ig_steps: int = 32, occlusion_frac: float = 0.125,
                       seed: int = 0, n_boot: int = 2000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-image rank correlations, per-method summary) of the model-randomisation test for
    the methods of ``trained_maps`` (computed on the trained ``model`` for the same ``x`` and
    target ``regions``)."""
    rand_maps = attribute(randomized_copy(model, seed), x, regions, list(trained_maps), ig_steps,
                          occlusion_frac)
    per_image = rank_correlations(trained_maps, rand_maps, names)
    rows = []
    for method, g in per_image.groupby("method", sort=False):
        mean, lo, hi = paired_ci(g["rank_corr"].to_numpy(), n_boot, seed)
        rows.append({"method": method, "images": int(g["rank_corr"].notna().sum()), "rank_corr_mean": mean,
                     "ci_low": lo, "ci_high": hi, "max_rank_corr": MAX_RANK_CORR,
                     "passes": bool(np.isfinite(hi) and hi < MAX_RANK_CORR)})
    return per_image, pd.DataFrame(rows)


def against_reference(mass_per_image: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per method: the paired difference in mass inside the tumour between the method and the
    model's probability map (``REFERENCE``), with its bootstrap CI over images."""
    wide = mass_per_image.pivot(index="name", columns="method", values="mass_inside_gt")
    if REFERENCE not in wide:
        return pd.DataFrame(columns=["method", "images", "diff_vs_reference", "ci_low", "ci_high",
                                     "beats_reference"])
    rows = []
    for method in [m for m in wide.columns if m != REFERENCE]:
        diff = (wide[method] - wide[REFERENCE]).to_numpy()
        d, lo, hi = paired_ci(diff, n_boot, seed)
        rows.append({"method": method, "images": int(np.isfinite(diff).sum()),
                     "mass_inside_gt": float(wide[method].mean()), "reference_mass": float(wide[REFERENCE].mean()),
                     "diff_vs_reference": d, "ci_low": lo, "ci_high": hi,
                     "beats_reference": bool(np.isfinite(lo) and lo > 0 and d >= MIN_EFFECT)})
    return pd.DataFrame(rows)


def sanity_sentence(randomisation: pd.DataFrame, reference: pd.DataFrame) -> str:
    """Both checks in two sentences, from their tables."""
    def names(df, col):
        return ", ".join(df.loc[df[col], "method"]) or "none"
    fails = randomisation.loc[~randomisation["passes"], "method"]
    return (f"Model randomisation (Adebayo et al. 2018; maps of the trained model against the same network "
            f"with re-drawn weights): methods whose maps change, the 95% CI of the mean rank correlation "
            f"below {MAX_RANK_CORR}: {names(randomisation, 'passes')}; not shown to depend on the weights: "
            f"{', '.join(fails) or 'none'}. Against the model's own probability map, methods that put more of "
            f"their mass inside the tumour (95% CI above 0, by at least {MIN_EFFECT}): "
            f"{names(reference, 'beats_reference')}.")
