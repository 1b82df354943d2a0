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
# # 10 · The released model on other scanners and sequences
#
# The model a user downloads is `results/models/` (its card: `MODEL_CARD.md`). Rounds of release lever
# trials (`params/release_levers*.yaml`, each rule committed before its trials ran), judged on Br35H VAL,
# the healthy VAL scans and the `dev` halves of two external sets, decide what is released (the rounds
# and their verdicts are at the end of this page). This page scores the committed file, through the same
# settings `predict` uses, on every evaluation set:
#
# - **Br35H TEST** (official split; CIs resample near-duplicate groups);
# - **TCGA-LGG FLAIR** (4 TCGA sites; CIs resample patients), both halves, by site;
# - **Figshare T1 contrast-enhanced** (2 hospitals in China, 512x512, three tumour types; CIs resample
#   index blocks), both halves, by tumour type;
# - the LGG **DU** site, both halves together: the plan left it out of every figure the choice read.
#
# A tumour slice with no predicted pixel is **missed** (Dice 0); every Dice below counts it.
# Definitions: `brainseg_lib/study/release_eval.py`. The external `test` halves are scored here once,
# for the final choice.

# %% jupyter={"source_hidden": true} tags=["parameters"]
# Parameters: plain literals, the smoke profile's values (a test keeps them equal to
# params/smoke.yaml). ./run_all.sh injects the chosen profile's values for these names only.
profile = 'smoke'
external_boot = 200
detection_limit = 40

# %%
# NBVAL_CHECK_OUTPUT
from IPython.display import Markdown, display

from brainseg_lib.report.findings import profile_banner

display(Markdown(profile_banner(profile)))

# %%
# %matplotlib inline
import pandas as pd

from brainseg_lib import paths
from brainseg_lib.data import external as ext_data
from brainseg_lib.report import plots, release_plots
from brainseg_lib.report.release_card import (detection_markdown, release_markdown, release_summary_table,
                                              volumes_markdown, where_it_fails)
from brainseg_lib.study import release_eval

ok = all(ext_data.available(which=w) for w in ext_data.SETS)
print("external sets:", {w: ext_data.available(which=w) for w in ext_data.SETS})
if ok:
    ev = release_eval.evaluate_release(n_boot=external_boot, detection_limit=detection_limit)   # writes results/metrics/release_eval.json
    print("released model:", ev["model"], "| input", ev["image_size"], "px | inference", ev["inference"])

# %% [markdown]
# ## Every set at a glance
# Pooled F1 over all pixels, mean Dice over tumour slices, tumour slices with no prediction and clean
# slices marked, each with its 95% CI.

# %%
# NBVAL_CHECK_OUTPUT
if ok:
    display(Markdown(release_summary_table(ev)))

# %% [markdown]
# ## Per-slice Dice, set by set
# Box and points: the tumour slices of each set; under each label, how many got no prediction.

# %%
if ok:
    m = paths.metrics_dir()
    per = {k: pd.read_csv(m / f"release_{k}_per_slice.csv") for k in release_plots.SET_LABELS}
    fig = release_plots.dice_strips({release_plots.SET_LABELS[k]: v for k, v in per.items()},
                                    "Released model: Dice per tumour slice")
    plots.save_figure(fig, "release_dice_by_set");

# %% [markdown]
# ## By tumour type (Figshare), by site (TCGA-LGG) and by tumour size
# Size quartiles are cut within each test half, on the tumour's pixels at native size.

# %%
if ok:
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    release_plots.dice_strips(release_plots.by_column(per["figshare_test"], "label"), "Figshare test: by type", axes[0])
    release_plots.dice_strips(release_plots.by_column(per["lgg_test"], "site"), "TCGA-LGG test: by site", axes[1])
    both = pd.concat([per["lgg_test"].assign(s="LGG"), per["figshare_test"].assign(s="Figshare")])
    both["group"] = both["s"] + " " + both["size_quartile"].astype(str)
    order = [f"{s} Q{q}" for s in ("LGG", "Figshare") for q in range(1, 5)]
    release_plots.dice_strips(release_plots.by_column(both, "group", order), "By tumour-size quartile (Q1 smallest)", axes[2])
    fig.tight_layout()
    plots.save_figure(fig, "release_dice_by_group");

# %% [markdown]
# ## Per patient, in 3-D
# The TCGA-LGG test patients as whole volumes, segmented through `predict` as a user would (the
# same as `python -m brainseg_lib score-volumes`; `results/metrics/external_volumes.json`): per-patient
# Dice and volume error.

# %%
from brainseg_lib.study import external_volumes

vol = (external_volumes.score_volumes(checkpoint=release_eval.released_path(), n_boot=external_boot)
       if external_volumes.available() else None)
display(Markdown(volumes_markdown(vol)))

# %% [markdown]
# ## Tumour or not, per scan
# Image-level detection by the released file with its own settings, by notebook 06's rule: both
# thresholds chosen on the VAL tumour images and the healthy `val` scans, rates on Br35H scans no
# model or threshold has seen (`release_eval.detection`; per-image scores in
# `results/metrics/release_detection_scores.csv`). Issue 24's detection target is read from here.

# %%
if ok:
    display(Markdown(detection_markdown(ev)))

# %% [markdown]
# ## Where the model should not be used
# Generated from the figures above (`report/release_card.py`); the model card and the README repeat it
# (`results/tables/release_eval.md`).

# %%
# NBVAL_CHECK_OUTPUT
if ok:
    from brainseg_lib.fileio import atomic_write_text
    atomic_write_text(paths.tables_dir() / "release_eval.md", release_markdown(ev, vol))
    display(Markdown(where_it_fails(ev)))

# %% [markdown]
# ## How the release was chosen
# The release lever table (`python -m brainseg_lib release-levers`): every trial on Br35H VAL, the healthy
# VAL scans and both external `dev` halves (the LGG DU site left out), seed means, the gain in combined
# score over the reference with its CI over seeds, patients and blocks. TEST and the `test` halves
# played no part in it.

# %%
table_md = paths.release_levers_dir() / "lever_table.md"
table_csv = paths.release_levers_dir() / "lever_table.csv"
display(Markdown(table_md.read_text()) if table_md.is_file() else "no release lever trials recorded yet")
if table_csv.is_file():
    plots.save_figure(release_plots.lever_ci_plot(pd.read_csv(table_csv)), "release_levers_ci");

# %% [markdown]
# **Later rounds** (`params/release_levers_<k>.yaml`) share round 1's trial store and reference. Round 1's absolute false-alarm limits refused every trial, the reference included,
# so from round 2 on the rule, committed before each round's trials, limits the *rise* of each
# false-alarm share over the reference. Every round, with what it adopted:

# %%
from brainseg_lib.report.release_card import later_rounds_markdown

display(Markdown(later_rounds_markdown()))

# %% [markdown]
# ## Issue 24's targets
# Each target for the released model against its measured figure: met, or missed by how much and
# whether the target lies within the CI (`report/release_targets.py`; written to `results/tables/release_targets.md`).

# %%
from brainseg_lib.report.release_targets import study_targets_markdown

if ok:
    targets_md = study_targets_markdown()
    atomic_write_text(paths.tables_dir() / "release_targets.md", targets_md)
    display(Markdown(targets_md.split("\n\n")[0]))
