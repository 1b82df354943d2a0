# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (brainseg)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Beyond the paper: what does the U-Net look at?
#
# The paper shows masks, never why the network drew them. Here the trained U-Net of notebook 02
# is explained with three attribution families from **captum** (none hand-written): Grad-CAM on a
# decoder level and on the bottleneck, occlusion, and integrated gradients. A segmentation net
# outputs a map, so it is wrapped to give one number per image: **the sum of the tumour logits over
# the mask the model predicts** on that image (over the ground truth where it predicts nothing).
# Everything runs at the model's input size (the run's `image_size`). Definitions and the exact
# settings: `brainseg_lib/xai/`.
#
# Pretty heat maps prove nothing by themselves, so two checks follow, each against a random
# baseline: (a) how much of the attribution lies inside the annotated tumour, and (b) whether
# deleting the most-attributed pixels first removes the predicted tumour faster than deleting
# pixels in random order.

# %% jupyter={"source_hidden": true} tags=["parameters"]
# Parameters: plain literals, the smoke profile's values (a test keeps them equal to
# params/smoke.yaml). ./run_all.sh injects the chosen profile's values for these names only.
profile = 'smoke'
seed = 0
loss = 'bce_dice'
xai_images = 4
xai_ig_steps = 16
xai_occlusion_frac = 0.125
xai_target = 'pred'
xai_fill = 'mean'

# %%
# NBVAL_CHECK_OUTPUT
from IPython.display import Markdown, display

from brainseg_lib.report.findings import profile_banner

display(Markdown(profile_banner(profile)))

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import pandas as pd
pd.set_option("display.precision", 4)
from brainseg_lib import paths
import numpy as np
from brainseg_lib.data import cache
from brainseg_lib.xai import deletion as xai_deletion
from brainseg_lib.xai import attribution as xai_attribution
from brainseg_lib.xai import figures
from brainseg_lib.xai import checks as xai_checks
from brainseg_lib.report import plots
from brainseg_lib.fileio import write_csv, write_json
from brainseg_lib.study import experiment
from brainseg_lib.inference import load_run_model
PARAMS = dict(profile=profile, seed=seed, loss=loss)
run, per_image, history = experiment.load_run(PARAMS)
net = load_run_model(run)   # its best checkpoint, where notebook 02 trained it
size = run["config"]["image_size"]

arrays = cache.load_split("test", size).head(run["n_images"])
print(run["run_name"], "|", len(arrays), "test images at", size, "x", size)

# %%
# NBVAL_CHECK_OUTPUT
print("methods:", list(xai_attribution.METHODS))
print("reference (not a method):", xai_deletion.REFERENCE)
print("deletion fractions:", xai_deletion.DELETION_FRACTIONS)
print("target:", xai_target, "| deletion fill:", xai_fill)
print("occlusion window at 64 px:", xai_attribution.occlusion_window(64, xai_occlusion_frac))

# %% [markdown]
# ## Maps on a true-positive, a false-positive and a false-negative case
# Cases are chosen from the run's per-image CSV (`results/metrics/<run>_per_image.csv`): the
# highest Dice, the most false-positive pixels and the most false-negative pixels (counted at model
# resolution). Each map is shown as its absolute value scaled to its own maximum; the number above a
# map is the fraction of its mass inside the annotated tumour (red contour; white on the maps). The
# model's prediction is the cyan contour.

# %%
cases = xai_checks.pick_cases(per_image)
ex_cases = xai_checks.explain_arrays(net, arrays, [r["name"] for r in cases.values()], xai_target,
                                  xai_ig_steps, xai_occlusion_frac)
titles = [f"{k}\n{r['name']}: Dice {r['f1']:.3f}" for k, r in cases.items()]
fig = figures.overlay_figure(ex_cases, titles)
plots.save_figure(fig, "xai_cases");

# %% [markdown]
# ## The checks
# A seeded sample of `xai_images` TEST images (from those the run evaluated). For every image and
# method: the fraction of absolute attribution inside the tumour, against the tumour's area fraction
# (what a map that knows nothing gets on average) and an actual uniform-noise map; and the deletion
# curve. The paired per-image differences carry a bootstrap 95% CI over images; a method *beats the
# random baseline* only when that CI excludes 0 on the good side and the mean difference is at least
# `brainseg_lib.xai.attribution.MIN_EFFECT` (0.01 in mass fraction or in AUC), so a negligible difference is not called a win.

# %%
names = xai_checks.sample_names(per_image, xai_images, seed)
ex = xai_checks.explain_arrays(net, arrays, names, xai_target, xai_ig_steps, xai_occlusion_frac)
checks = xai_checks.run_checks(net, ex, fill=xai_fill, seed=seed)
files = xai_checks.write_checks(checks, paths.tables_dir())
print(len(names), "images; targets used:", pd.Series(ex.targets).value_counts().to_dict())

# %%
# NBVAL_CHECK_OUTPUT
# what must hold for any run of the checks, whatever the maps (nbval compares these lines)
print("tables:", sorted(files.values()))
for check, ok in xai_checks.check_invariants(checks, ex).items():
    print(f"{check}: {ok}")

# %% [markdown]
# ### (a) Attribution mass inside the tumour
# `diff_vs_expected` = mass fraction − tumour area fraction, per image, averaged.

# %%
checks.mass.round(4)

# %%
fig = figures.mass_figure(checks.mass)
plots.save_figure(fig, 'xai_attribution_mass');

# %% [markdown]
# ### (b) Deletion
# Pixels are set to the image mean (`xai_fill`) in order of decreasing attribution; the curve is the
# predicted tumour area relative to the intact image, and its normalised AUC is lower when the map
# found what the prediction rests on. Random order is the mean of three random permutations of the
# same image. The summed tumour probability (a soft area, defined even where nothing is predicted)
# is scored the same way. The filled pixels are unlike anything the model was trained on; where they
# look like tumour to it, the curve *rises* instead of falling (`images_grew` counts images whose
# curve exceeds 1.1x the intact value). Such outliers dominate the mean, so the table also gives the
# median paired difference and the share of images on which the method beats the random order.

# %%
checks.deletion.round(4)

# %%
fig = figures.deletion_figure(checks.curves)
plots.save_figure(fig, 'xai_deletion');

# %% [markdown]
# ## Does any method beat the random baseline?
# The sentences below are generated from the two tables above.

# %%
display(Markdown(checks.text))

# %% [markdown]
# ## Sanity checks: does a map depend on what the model learnt, and does it beat the prediction itself?
# Beating a random map is a low bar. The model-randomisation test (Adebayo et al. 2018) recomputes each
# method's maps with the same network after re-drawing every weight, for the same images and target
# regions: a method whose maps hardly change (mean Spearman rank correlation with a 95% CI not below
# 0.5) explains the image or the architecture, not the model. The second table compares each method's
# mass inside the tumour with that of the model's own probability map, which any user already has.
# Rules and thresholds: `brainseg_lib/xai/sanity.py`.

# %%
from brainseg_lib.xai import sanity
regions, _ = xai_attribution.target_regions(ex.probs, ex.gts, xai_target)
rand_per_image, randomisation = sanity.randomisation_test(
    net, xai_attribution.as_input(ex.images), regions, ex.maps, ex.names, xai_ig_steps, xai_occlusion_frac, seed)
reference = sanity.against_reference(checks.mass_per_image)
write_csv(randomisation, paths.tables_dir() / "xai_randomisation.csv")
write_csv(rand_per_image, paths.tables_dir() / "xai_randomisation_per_image.csv")
write_csv(reference, paths.tables_dir() / "xai_against_reference.csv")
sanity_text = sanity.sanity_sentence(randomisation, reference)
display(randomisation.round(3), reference.round(3), Markdown(sanity_text))
write_json({"kind": "explainability", "run_name": run["run_name"], "images": names,
            "targets_used": ex.targets, "ig_steps": xai_ig_steps, "occlusion_frac": xai_occlusion_frac,
            "fill": xai_fill, "tables": files,
            "attribution_mass": xai_checks.records(checks.mass),
            "deletion": xai_checks.records(checks.deletion), "verdict": checks.text,
            "randomisation": xai_checks.records(randomisation),
            "against_reference": xai_checks.records(reference), "sanity": sanity_text},
           paths.metrics_dir() / "xai.json");

# %% [markdown]
# **Reading the result.** Attribution mass inside the tumour is easy to get when the prediction and
# the tumour coincide, and integrated gradients and occlusion are tied to the input pixels, so they
# tend to sit on whatever bright structure the model segments. Deletion asks a different question
# (does removing those pixels change the output?) and can disagree. Grad-CAM's maps are coarse (the
# bottleneck is 1/16 of the input side) and can be all zero after its ReLU. Deletion is confounded
# wherever the fill creates tumour-like patches (the caution line above, when present). The banner at the top
# names the profile that produced these numbers; read them only for a trained profile (cpu or paper).
