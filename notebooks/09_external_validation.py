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
# # 09 · External validation: TCGA-LGG FLAIR slices from another source
#
# A model that only holds up on its own split is of little use on a user's scans. Here the model of
# notebook 02 meets **TCGA-LGG FLAIR slices** (Buda et al. 2019; Mazurowski et al. 2017): another
# collection, one MRI sequence, skull included, many small tumours. No model trains on them. The set is
# split by patient into a `dev` half (used, with Br35H VAL, to choose the profile: the lever table) and
# a `test` half, **scored here once, for the final choice**.
#
# Figures per half, at the slices' own 256x256 resolution (definitions in `brainseg_lib/evaluation/external.py`):
# pooled F1 over all pixels, mean per-slice Dice over tumour slices, the share of clean slices with any
# pixel marked tumour, and the boundary metrics HD95 and NSD (tolerance in pixels;
# `brainseg_lib/evaluation/boundary.py`, computed with MONAI) over tumour slices. 95% CIs resample **patients**.
# The data is found through `BRAINSEG_EXTERNAL` (default `data/lgg_external`); without it the notebook
# says where to get it and skips.

# %% jupyter={"source_hidden": true} tags=["parameters"]
# Parameters: plain literals, the smoke profile's values (a test keeps them equal to
# params/smoke.yaml). ./run_all.sh injects the chosen profile's values for these names only.
profile = 'smoke'
seed = 0
loss = 'bce_dice'
external_boot = 200

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
from brainseg_lib.data import external as ext_data
from brainseg_lib.report import findings
from brainseg_lib.evaluation import external as ext_eval
from brainseg_lib.report import plots
from brainseg_lib.fileio import write_csv, write_json
from brainseg_lib.study import experiment
from brainseg_lib.inference import load_run_model
PARAMS = dict(profile=profile, seed=seed, loss=loss)
run, per_image, history = experiment.load_run(PARAMS)
net = load_run_model(run)   # its best checkpoint, where notebook 02 trained it
size = run["config"]["image_size"]

ext_ok = ext_data.available()
print(run["run_name"], "| model input", size, "x", size)
print("external set:", "found" if ext_ok else "NOT FOUND - " + ext_data.HOW_TO_GET)

# %% [markdown]
# ## The two halves

# %%
# NBVAL_CHECK_OUTPUT
if ext_ok:
    halves = {h: ext_data.load_half(h, size) for h in ext_data.HALVES}
    for h, half in halves.items():
        t = sum(m.any() for m in half.truths)
        print(f"{h}: {len(half.patients)} slices of {len(set(half.patients))} patients, "
              f"{t} with tumour, {len(half.patients) - t} clean")
    print("patients in both halves:", len(set(halves["dev"].patients) & set(halves["test"].patients)))

# %% [markdown]
# ## Score both halves
# One row per slice, cached to `results/metrics/external_<half>_per_slice.csv`; the summary is `results/metrics/external_validation.json`.

# %%
if ext_ok:
    ext = {"run_name": run["run_name"], "checkpoint": run["checkpoint"], "threshold": run["threshold"]}
    from brainseg_lib.inference import predict_probs
    probs_of = {}
    for h, half in halves.items():
        probs_of[h] = predict_probs(net, half.arrays)     # once: scored here, calibrated below
        per_slice = ext_eval.score_half(net, half, run["threshold"], probs=probs_of[h])
        csv = write_csv(per_slice, paths.metrics_dir() / f"external_{h}_per_slice.csv")
        ext[h] = {**ext_eval.summarize_half(pd.read_csv(csv), n_boot=external_boot), "per_slice_csv": csv.name}
    write_json(ext, paths.metrics_dir() / "external_validation.json")

# %%
if ext_ok:
    figs = ["pooled_f1", "mean_dice_tumour", "clean_marked_share", "hd95_mean", "nsd_mean"]
    rows = {}
    for h in ext_data.HALVES:
        e = ext[h]
        rows[h] = {f: f"{e[f]:.3f} [{e['ci95_by_patient'][f][0]:.3f}, {e['ci95_by_patient'][f][1]:.3f}]" for f in figs}
        rows[h]["hd95_median"] = f"{e['hd95_median']:.1f}"
        rows[h]["clean slices marked"] = f"{e['clean_marked']} of {e['n_clean_slices']}"
    display(pd.DataFrame(rows))

# %% [markdown]
# ## Per-slice Dice on tumour slices, by tumour size
# Small tumours are where a low input resolution and a domain shift hurt first.

# %%
if ext_ok:
    per = pd.read_csv(paths.metrics_dir() / "external_test_per_slice.csv")
    tum = per[per.tumour]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.scatter(tum.tumour_pixels, tum.dice, s=8, alpha=0.6)
    ax.set_xscale("log"); ax.set_xlabel("tumour pixels (of 256x256)"); ax.set_ylabel("Dice"); ax.set_ylim(-0.02, 1.02)
    ax.set_title("external test half: per-slice Dice")
    plots.save_figure(fig, "external_dice_by_size");

# %% [markdown]
# ## Are the probabilities calibrated on another source?
# Pixel probabilities of each half against its masks, at the model's resolution: ECE and Brier score,
# before and after the temperature fitted on Br35H VAL (notebook 03, `results/metrics/calibration.json`).

# %%
if ext_ok:
    from brainseg_lib.evaluation import calibration
    calib = calibration.add_to_file(paths.metrics_dir() / "calibration.json",
                                    {f"external_{h}_pixels": (probs_of[h], half.arrays.masks) for h, half in halves.items()})
    shown = {"br35h_test_pixels": "Br35H TEST pixels", "external_dev_pixels": "external dev pixels",
             "external_test_pixels": "external test pixels"}
    fig = plots.reliability_diagram({label: calib[k] for k, label in shown.items() if k in calib})
    plots.save_figure(fig, "calibration_external")
    display(pd.DataFrame({k: {m: v.get(m) for m in ("ece", "ece_scaled", "brier", "brier_scaled")}
                          for k, v in calib.items() if isinstance(v, dict)}).T.round(4))

# %% [markdown]
# ## Where the model fails
# On tumour images only: Dice and the share missed outright (nothing predicted) by tumour size (the
# tumour's share of the image, cut at each set's quartiles), Br35H TEST against the external test half
# in the same size bins (the gap standardised to the external size mix, CI resampling Br35H
# near-duplicate groups and external patients), the external slices by acquisition site, and what the
# worst images share. Definitions: `brainseg_lib/study/failures.py`.

# %%
if ext_ok:
    from brainseg_lib.data.splits import audit_groups
    from brainseg_lib.study import failures
    fa = failures.analyse(per_image, per, audit_groups(), n_boot=external_boot)
    matched = fa["matched"]
    write_csv(fa["by_size"], paths.tables_dir() / "failures_by_size.csv")
    write_csv(matched["table"].reset_index(), paths.tables_dir() / "failures_size_matched.csv")
    write_csv(fa["sites"], paths.tables_dir() / "failures_by_site.csv")
    write_csv(fa["worst"], paths.tables_dir() / "failures_worst.csv")
    write_json(fa["json"], paths.metrics_dir() / "failures.json")
    display(fa["by_size"].round(3), matched["table"].round(3), fa["sites"].round(3), Markdown("\n\n".join(fa["sentences"])))
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    matched["table"][["br35h_dice", "external_dice"]].set_axis(["Br35H TEST", "external test half"], axis=1).plot.bar(
        ax=ax, rot=0)
    ax.set_xlabel("tumour size bin (quartiles of the external test half)"); ax.set_ylabel("mean Dice")
    ax.set_ylim(0, 1); ax.set_title("Same tumour sizes, two sources")
    plots.save_figure(fig, "failures_size_matched");

# %% [markdown]
# ## Best, median and worst tumour slices, and the worst false alarm (test half)

# %%
if ext_ok:
    half = halves["test"]
    idx = {n: i for i, n in enumerate(half.arrays.names)}
    order = tum.sort_values("dice")
    picks = [("worst", order.iloc[0]), ("median", order.iloc[len(order) // 2]), ("best", order.iloc[-1])]
    clean = per[~per.tumour].sort_values("pred_pixels")
    if len(clean) and clean.iloc[-1].pred_pixels > 0:
        picks.append(("false alarm", clean.iloc[-1]))
    from brainseg_lib.inference import to_native
    probs = probs_of["test"]
    imgs, truths, preds, titles = [], [], [], []
    for label, r in picks:
        i = idx[r["name"]]
        img = ext_data.read_grayscale(ext_data.check_external() / "test" / "images" / f"{r['name']}.png")
        imgs.append(img); truths.append(half.truths[i])
        preds.append(to_native(probs[i], *img.shape) >= run["threshold"])
        titles.append(f"{label}: Dice {r['dice']:.2f}")
    fig = plots.overlay_panels(imgs, truths, preds, titles)
    plots.save_figure(fig, "external_cases");

# %% [markdown]
# ## In words
# Generated from the numbers above, and written to `results/tables/external_validation.md`.

# %%
from IPython.display import Markdown
from brainseg_lib.fileio import atomic_write_text
if ext_ok:
    atomic_write_text(paths.tables_dir() / "external_validation.md", findings.external_findings(ext) + "\n")
    display(Markdown(findings.external_findings(ext)))

# %% [markdown]
# ## How the profile was chosen
# The lever table (`python -m brainseg_lib levers`, plan in `params/levers.yaml`): each trial changes one thing and is scored on Br35H VAL, the healthy validation scans and this set's `dev` half only. TEST and the external `test` half played no part in it.

# %%
lever_md = paths.levers_dir() / "lever_table.md"
display(Markdown(lever_md.read_text()) if lever_md.is_file() else "no lever trials recorded yet")

# %%
lever_csv = paths.levers_dir() / "lever_table.csv"
if lever_csv.is_file():
    from brainseg_lib.report import sweep_plots
    fig = sweep_plots.lever_panels(pd.read_csv(lever_csv))
    plots.save_figure(fig, "lever_table");
