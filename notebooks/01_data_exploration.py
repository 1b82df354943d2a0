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
# # 01 · Data exploration: Br35H as it is on disk
#
# Khadra et al. (2026) train on Br35H's annotated subset (they report a 500 / 200 / 100 split).
# Here we count what the files actually hold, check how the VIA annotations turn into masks,
# and draw **Fig. 1**. All numbers below are computed from the files in `$BRAINSEG_DATA`;
# the rules (image modes, mask rasterisation, resizing) are documented in `brainseg_lib/data/br35h.py` and `brainseg_lib/data/images.py`.

# %% jupyter={"source_hidden": true} tags=["parameters"]
# Parameters: plain literals, the smoke profile's values (a test keeps them equal to
# params/smoke.yaml). ./run_all.sh injects the chosen profile's values for these names only.
profile = 'smoke'
n_examples = 4
seed = 0

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
from brainseg_lib.data import br35h
from brainseg_lib.study import explore
from brainseg_lib.report import plots
root = br35h.check_dataset()
print('dataset found')

# %% [markdown]
# ## Images per split
# The paper says 200 validation images; the counts below are what the files hold.

# %%
# NBVAL_CHECK_OUTPUT
counts = {s: len(br35h.list_split(s)[0]) for s in br35h.SPLITS}
print(counts)
print('matches expected:', counts == br35h.EXPECTED_COUNTS)

# %% [markdown]
# ## Sizes, modes and annotation shapes
# Every annotated image is read and its mask rasterised at native size (a few seconds).

# %%
inv = explore.image_inventory()
paths.ensure(paths.tables_dir())
inv.to_csv(paths.tables_dir() / "dataset_inventory.csv", index=False)
summary = explore.split_summary(inv)
summary.to_csv(paths.tables_dir() / "dataset_summary.csv")

# %%
# NBVAL_CHECK_OUTPUT
print(summary.to_string())

# %%
# NBVAL_CHECK_OUTPUT
sides = pd.concat([inv.width, inv.height])
print(f"distinct (width, height) sizes: {inv[['width', 'height']].drop_duplicates().shape[0]}")
print(f"smallest side: {sides.min()} px, largest side: {sides.max()} px")
print("modes:", inv['mode'].value_counts().to_dict())

# %% [markdown]
# Images are not square and come in many sizes, so every model input is a resize to the
# profile's square side; metrics in Table I are computed after resizing the prediction back
# to each image's native size (see notebook 03).
#
# ## Tumour area
# Fraction of the image covered by the tumour mask, at native resolution.

# %%
# NBVAL_CHECK_OUTPUT
print(explore.area_quantiles(inv).to_string())

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
for s in br35h.SPLITS:
    ax.hist(inv.loc[inv.split == s, "tumour_fraction"], bins=30, alpha=0.5, label=s, density=True)
ax.set_xlabel("tumour fraction of image"); ax.set_ylabel("density"); ax.legend()
plots.save_figure(fig, "tumour_area_by_split");

# %% [markdown]
# ## Fig. 1 · Samples with their mask contours

# %%
ex = explore.pick_examples(inv, n_examples, seed)
samples = {}
for s in br35h.SPLITS:
    anns, folder = br35h.list_split(s)
    for a in anns:
        if a.filename in set(ex.name):
            samples[a.filename] = br35h.load_sample(a, folder)
ordered = [samples[n] for n in ex.name]
fig = plots.sample_grid([x.image for x in ordered], [x.mask for x in ordered],
                        [f"{r.split}/{r.name} ({r.width}x{r.height})" for r in ex.itertuples()])
plots.save_figure(fig, "fig1_samples");

# %% [markdown]
# ## Does the ellipse rotation point the right way?
# VIA stores `theta` clockwise on screen (image y points down); scikit-image's `ellipse`
# takes `rotation` in its (row, col) frame. We rasterise with `rotation=-theta` (cyan contour) and
# draw, independently, the ellipse's `rx` axis as VIA draws it: from the centre along
# (cos theta, sin theta) in image coordinates (red line). The three annotations shown are the
# most visibly rotated ellipses in the dataset. With the right convention the red line is an axis
# of symmetry of the cyan ellipse (its long axis when rx > ry, its short axis otherwise); with the
# wrong sign it would cut the ellipse obliquely.

# %%
import numpy as np
rot = explore.rotated_ellipse_examples(inv, n=3)
fig, axes = plt.subplots(1, len(rot), figsize=(4 * len(rot), 4), squeeze=False)
for ax, (split, s) in zip(axes[0], rot):
    ax.imshow(s.image, cmap="gray"); plots.draw_contours(ax, s.mask, plots.PRED)
    anns, _ = br35h.list_split(split)
    regions = next(a.regions for a in anns if a.filename == s.name)
    for r in regions:
        if r["name"] == "ellipse":
            t = float(r.get("theta", 0) or 0)
            dx, dy = r["rx"] * np.cos(t), r["rx"] * np.sin(t)
            ax.plot([r["cx"] - dx, r["cx"] + dx], [r["cy"] - dy, r["cy"] + dy], color="red")
    ax.set_title(f"{split}/{s.name}"); ax.axis("off")
plots.save_figure(fig, "ellipse_rotation_check");
