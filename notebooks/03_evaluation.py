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
# # 03 · Evaluation on the TEST split
#
# Metrics follow Eq. 1-5 of the paper plus specificity (definitions and the empty-mask rule:
# `brainseg_lib/evaluation/metrics.py`). **Pooled** metrics sum TP/FP/FN/TN over all pixels of all test images;
# **per-image** metrics are averaged over images. Table I uses pooled metrics at **native resolution**
# (prediction resized back to each image's size).

# %% jupyter={"source_hidden": true} tags=["parameters"]
# Parameters: plain literals, the smoke profile's values (a test keeps them equal to
# params/smoke.yaml). ./run_all.sh injects the chosen profile's values for these names only.
profile = 'smoke'
seed = 0
loss = 'bce_dice'
n_examples = 4

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
from brainseg_lib.evaluation import evaluate
from brainseg_lib import inference
from brainseg_lib.evaluation import thresholds
from brainseg_lib import fileio
from brainseg_lib.study import experiment
from brainseg_lib.evaluation import metrics
from brainseg_lib.report import plots
from brainseg_lib.data import cache
PARAMS = dict(profile=profile, seed=seed, loss=loss)
run, per_image, history = experiment.load_run(PARAMS)
print(run["run_name"], "|", run["n_images"], "test images | threshold", run["threshold"])

# %%
# NBVAL_CHECK_OUTPUT
# what must hold for any run, whatever its figures (nbval compares these lines)
print(list(per_image.columns[:12]))
for check, ok in evaluate.run_invariants(run, per_image).items():
    print(f"{check}: {ok}")

# %% [markdown]
# ## Pooled and per-image metrics, at native and model resolution

# %%
rows = {
    "pooled, native": run["global"],
    "per-image mean, native": run["per_image_mean"],
    "per-image sd, native": run["per_image_sd"],
    "pooled, model res.": run["model_resolution"]["global"],
    "per-image mean, model res.": run["model_resolution"]["per_image_mean"],
}
tbl = pd.DataFrame(rows).T[list(metrics.METRICS)]
ci = pd.DataFrame(run["bootstrap_ci95"], index=["CI95 low", "CI95 high"])[list(metrics.METRICS)]
pd.concat([tbl, ci]).round(4)

# %% [markdown]
# ## Fig. 3 · Best, median and worst test cases (per-image Dice)

# %%
order = per_image.sort_values("f1").reset_index(drop=True)
picks = {"worst": order.iloc[0], "median": order.iloc[len(order) // 2], "best": order.iloc[-1]}
cases = evaluate.case_predictions(paths.resolve_recorded(run["checkpoint"]), "test",
                                  [r["name"] for r in picks.values()], run["threshold"])
fig = plots.overlay_panels([c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases],
                           [f"{k}: {r['name']} Dice {r['f1']:.3f}" for k, r in picks.items()])
plots.save_figure(fig, "fig3_best_median_worst");

# %% [markdown]
# ## Per-image Dice

# %%
fig = plots.dice_histogram(per_image)
plots.save_figure(fig, 'dice_histogram');

# %% [markdown]
# ## Precision and recall over the threshold
# Computed once at native resolution and cached to CSV; the plot reads the CSV.

# %%
from brainseg_lib.inference import load_run_model
net = load_run_model(run)   # its best checkpoint, where notebook 02 trained it
arrays = cache.load_split("test", run["config"]["image_size"]).head(run["n_images"])
probs = inference.predict_probs(net, arrays)
sweep_path = paths.metrics_dir() / f"{run['run_name']}_threshold_sweep.csv"
fileio.write_csv(thresholds.threshold_sweep(probs, arrays), sweep_path)
sweep = pd.read_csv(sweep_path)
fig = plots.pr_curve(sweep, run["threshold"])
plots.save_figure(fig, "pr_curve");
best = sweep.loc[sweep.f1.idxmax()]
print(f"F1 at the 0.5 threshold: {run['global']['f1']:.3f}; best F1 over thresholds on TEST "
      f"(for reference only, not a tuned result): {best.f1:.3f} at {best.threshold:.2f}")

# %% [markdown]
# ## Are the probabilities calibrated?
# Pixel probabilities at the model's resolution against the resized masks, on TEST: the expected
# calibration error (ECE, 15 equal-width bins) and the Brier score, before and after temperature
# scaling fitted on VAL (one number that divides the logits; it moves no pixel across the 0.5
# threshold, so the segmentation metrics above stay the same). Definitions:
# `brainseg_lib/evaluation/calibration.py`. Notebooks 06 and 09 add the image-level score and the
# external set to the same file.

# %%
from brainseg_lib.evaluation import calibration
val = cache.load_split("val", run["config"]["image_size"]).head(run["config"]["limit_val"])
val_probs = inference.predict_probs(net, val)
temperature = calibration.fit_temperature(calibration.logits_of(val_probs), val.masks)
calib = {"temperature_fitted_on": "VAL pixels", "temperature": temperature,
         "br35h_test_pixels": calibration.summary(probs, arrays.masks, temperature),
         "br35h_val_pixels": calibration.summary(val_probs, val.masks, temperature)}
fileio.write_json(calib, paths.metrics_dir() / "calibration.json")
pd.DataFrame({k: {m: v[m] for m in ("ece", "ece_scaled", "brier", "brier_scaled")}
              for k, v in calib.items() if isinstance(v, dict)}).T.round(4)

# %%
scaled_test = calibration.summary(calibration.scaled(calibration.logits_of(probs), temperature), arrays.masks)
fig = plots.reliability_diagram({"TEST pixels": calib["br35h_test_pixels"],
                                 f"TEST pixels, T = {temperature:.2f}": scaled_test})
plots.save_figure(fig, "calibration_pixels");

