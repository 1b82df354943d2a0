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
# # 06 · Beyond the paper: does the segmentation tell tumour scans from healthy ones?
#
# Br35H holds tumour scans in `yes/` and tumour-free scans in `no/`. Only part of the tumour scans
# is annotated (TRAIN/VAL/TEST), and those `yes/` files are byte-identical to the annotated ones, so
# they are set aside (the inventory below counts every group). That leaves **the unannotated tumour
# scans and all the healthy scans, which no model has seen**. Here
# the segmentation U-Net of notebook 02 becomes an image-level detector, without any retraining.
#
# * **Scores**: the predicted tumour area (fraction of pixels with p ≥ 0.5) and the maximum tumour
#   probability. The **primary score is the predicted area**, fixed before any result was seen: it is
#   the segmentation's own decision at the pixel threshold every metric uses, rests on many pixels
#   (one hot pixel cannot flip it), and its threshold reads as a minimum tumour size. Both are reported.
# * **The healthy split.** Training may use tumour-free scans, so `no/` is split once, by whole
#   near-duplicate groups (the links of notebook 07), into `train` (scans a model may train on),
#   `val` and `report` roles: `splits/healthy_seed<k>.csv`, written by
#   `python -m brainseg_lib healthy-split`. No report scan is a twin of a training or validation scan,
#   and the `train` scans are left out here entirely.
# * **Thresholds chosen on validation only.** VAL has no tumour-free image, so the healthy split's
#   `val` scans (listed in `results/metrics/detection.json`) are the negative validation set, with the
#   VAL tumour images as positives. Two operating points are chosen there and used unchanged on the
#   report set: the threshold maximising Youden's J, and the highest threshold whose validation
#   sensitivity is at least 0.90 (a fixed sensitivity).
# * **Report** on the unseen tumour scans and the healthy `report` scans: sensitivity, specificity, accuracy and ROC AUC,
#   each with a 95% bootstrap CI that resamples whole near-duplicate groups within each class: many `no/`
#   scans are near-copies of one another, and a copy is not new evidence. The image-level CI is kept
#   beside it, to show whether and how much the grouping widens the interval. The CIs hold the thresholds fixed
#   (chosen once on validation): they leave out how the thresholds would move with another validation set.
# * **Leakage**: unseen scans that are near-duplicates of TRAIN images, of VAL images (which chose the
#   checkpoint and both thresholds) or of the hold-out scans (the signals of notebook 07: thumbnail
#   correlation ≥ 0.95 or pHash distance ≤ 6) are counted, and the metrics are given with and without them.

# %% jupyter={"source_hidden": true} tags=["parameters"]
# Parameters: plain literals, the smoke profile's values (a test keeps them equal to
# params/smoke.yaml). ./run_all.sh injects the chosen profile's values for these names only.
profile = 'smoke'
seed = 0
loss = 'bce_dice'
healthy_seed = 0
detection_limit = 40
detection_gallery = 4

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
from brainseg_lib.detection import scores as detection_scores
from brainseg_lib.detection import figures as detection_figures
from brainseg_lib.report import findings
from brainseg_lib.detection import tables as detection_tables
from brainseg_lib.detection import summary as detection_summary
from brainseg_lib.report import plots
from brainseg_lib.fileio import write_csv, write_json
from brainseg_lib.study import experiment
from brainseg_lib.inference import load_run_model
PARAMS = dict(profile=profile, seed=seed, loss=loss)
run, per_image, history = experiment.load_run(PARAMS)
net = load_run_model(run)   # its best checkpoint, where notebook 02 trained it
size = run["config"]["image_size"]

print(run["run_name"], "| model input", size, "x", size)

# %% [markdown]
# ## The files: which tumour scans are really unseen?
# SHA-256 of every annotated image against its `yes/` namesake, and of every unseen or `no/` scan against the annotated images.

# %%
# NBVAL_CHECK_OUTPUT
inv = detection_scores.inventory()
for k, v in inv.checks.items():
    print(f"{k}: {v}")

# %% [markdown]
# ## Scores
# Every image is read, resized to the model's input and segmented once; the scores are cached to `results/tables/detection_scores.csv` and everything below is computed from that file.

# %%
scores, info = detection_scores.collect_scores(net, size, limit=detection_limit, healthy_seed=healthy_seed)
scores_csv = write_csv(scores, paths.tables_dir() / "detection_scores.csv")
scores = pd.read_csv(scores_csv)

# %%
# NBVAL_CHECK_OUTPUT
print("healthy validation scans:", info["holdout"]["size"], "| drawn by", info["holdout"]["drawn_by"])
print("healthy training scans left out:", info["healthy_training_scans_excluded"])
print("limit per class:", info["limit_per_class"])
print(scores.groupby(["role", "folder", "label"]).size().to_string())
print("columns:", list(scores.columns))

# %% [markdown]
# ## Threshold chosen on validation (VAL tumours + the `no/` hold-out)

# %%
summary = detection_summary.summarize_detection(scores, info)
summary.update({"run_name": run["run_name"], "checkpoint": run["checkpoint"], "scores_csv": scores_csv.name})
write_json(summary, paths.metrics_dir() / "detection.json")
pd.DataFrame(summary["validation"]["chosen"]).T

# %% [markdown]
# ## Near-duplicates of TRAIN, VAL and the hold-out among the unseen scans

# %%
nd = summary["near_duplicates_of_train"]
print(f"{nd['total']} of {nd['of']} report scans are near-duplicates of a TRAIN image "
      f"({nd['positives']} tumour, {nd['negatives']} healthy; by correlation {nd['by_corr']}, by pHash {nd['by_phash']})")
nv = summary["near_duplicates_of_val"]
print(f"{nv['total']} of {nv['of']} report scans are near-duplicates of a VAL image "
      f"({nv['positives']} tumour, {nv['negatives']} healthy)")
nh = summary["near_duplicates_of_holdout"]
print(f"{nh['total']} of {nh['of']} report scans are near-duplicates of a hold-out scan "
      f"({nh['positives']} tumour, {nh['negatives']} healthy)")
ng = info["no_groups"]
print(f"no/ itself: {ng['scans_in_such_groups']} scans in {ng['groups_with_duplicates']} near-duplicate groups "
      f"(largest {ng['largest']})")
for cls, rg in info["report_groups"].items():
    print(f"report {cls}: {rg['groups']} near-duplicate groups, the bootstrap's units "
          f"({rg['scans_in_such_groups']} scans in {rg['groups_with_duplicates']} groups of two or more; largest {rg['largest']})")
print("unseen tumour scans that are near-duplicates of a healthy report scan:", info["cross_class_near_duplicates"])

# %% [markdown]
# ## Report: all unseen scans, and without the near-duplicates
# Value and 95% bootstrap CI; `primary` marks the pre-specified score.

# %%
detection_tables.metrics_frame(summary).round(4)

# %%
table = detection_tables.detection_table(summary)
written = detection_tables.write_table(table, paths.tables_dir())
from IPython.display import Markdown
Markdown(written["md"].read_text())

# %% [markdown]
# ### What the grouping does to the intervals
# The same figures with the CI of the image bootstrap (every scan counted as independent) beside the
# group bootstrap reported above; the point values are the same.

# %%
detection_tables.ci_comparison(summary).round(3)

# %% [markdown]
# ## At a fixed sensitivity of 0.90
# The threshold is the highest one reaching sensitivity 0.90 on validation; the last column reads the report set's ROC curve at sensitivity 0.90 directly (a property of the scores, like the AUC).

# %%
fs = summary["report_at_fixed_sensitivity"]
pd.DataFrame({f"{sub} / {k}": {"threshold": m["threshold"], "sensitivity": m["sensitivity"],
                               "specificity": m["specificity"], "ROC specificity at sens 0.90": m["roc_specificity_at_sensitivity"]}
              for sub, by in fs.items() for k, m in by.items()}).T.round(3)

# %% [markdown]
# ## Does the shape or the framing of a scan give its class away?
# Every scan is resized to a square, so a scan that is not square is stretched, and tumour and healthy
# scans differ in shape. Two controls (`brainseg_lib/detection/shortcut.py`): the aspect ratio alone as a
# score (its direction chosen on the validation scans), and the same model scoring every scan padded
# with black to a square first, so nothing is stretched. Thresholds are chosen on validation, CIs
# resample near-duplicate groups.
#
# The healthy scans also show more background around the head than the tumour scans, and padding keeps
# that cue. Two more rows: the share of the frame the head's box covers, alone as a score, and the
# model's AUC counted only over tumour-healthy pairs framed alike (the same quartile of that share).

# %%
from brainseg_lib.detection import shortcut
control, control_scans = shortcut.shortcut_control(net, size, scores,
                                                   model_figures=summary["report"]["all"][summary["primary_score"]])
write_csv(control_scans, paths.tables_dir() / "detection_shortcut.csv")
summary["shortcut_control"] = control
write_json(summary, paths.metrics_dir() / "detection.json")
pd.DataFrame({k: {"AUC": c["auc"], "AUC CI low": c["ci95"]["auc"][0], "AUC CI high": c["ci95"]["auc"][1],
                  "sensitivity": c.get("sensitivity"), "specificity": c.get("specificity")}
              for k, c in control.items() if isinstance(c, dict) and "auc" in c}).T.round(3)

# %%
pd.DataFrame(control["model_within_framing_strata"]["strata"])

# %% [markdown]
# ### Is the image-level score a calibrated probability?
# The highest pixel probability of a scan read as the probability that it holds a tumour, on the report
# scans: ECE and Brier score, and the same after the temperature notebook 03 fitted on VAL pixels
# (`results/metrics/calibration.json`; the maximum of the rescaled pixels is the rescaled maximum).

# %%
from brainseg_lib.evaluation import calibration
rep_scans = scores[scores["role"] == "report"]
calib = calibration.add_to_file(paths.metrics_dir() / "calibration.json",
                                {"image_level_report": (rep_scans["max_prob"], rep_scans["label"])})
fig = plots.reliability_diagram({"max_prob, report scans": calib["image_level_report"]})
plots.save_figure(fig, "calibration_image_level")
pd.Series({k: v for k, v in calib["image_level_report"].items() if k != "reliability"}).round(4)

# %% [markdown]
# ## Seed to seed
# Every training run records both operating points of its own model (`detection` in its JSON). The rows below are the official-split BCE+Dice runs of the seed sweep (notebook 08's runs) and this notebook's run; mean and sd over the sweep's seeds.

# %%
seeds = detection_summary.seed_table(profile, loss)
from brainseg_lib.fileio import atomic_write_text
atomic_write_text(paths.tables_dir() / "detection_seeds.md", detection_tables.seed_markdown(seeds))
if len(seeds):
    evaluate_cols = ["auc", "youden_sensitivity", "youden_specificity", "fixed_sensitivity_sensitivity",
                     "fixed_sensitivity_specificity", "roc_specificity_at_sensitivity"]
    seed_summary = seeds[evaluate_cols].agg(["mean", "std"]).T
    summary["seed_to_seed"] = {"runs": seeds.to_dict("records"),
                               "mean": seed_summary["mean"].to_dict(), "sd": seed_summary["std"].to_dict()}
    write_json(summary, paths.metrics_dir() / "detection.json")
    display(seeds.round(3)); display(seed_summary.round(3))
else:
    print("no sweep runs with detection figures yet: run `python -m brainseg_lib sweep` first")

# %% [markdown]
# ## In words
# Generated from the numbers above.

# %%
display(Markdown(findings.detection_findings(summary)))

# %% [markdown]
# ## ROC curves and the confusion matrix (primary score, all report scans)

# %%
fig = detection_figures.roc_figure(scores, summary)
plots.save_figure(fig, 'detection_roc');

# %%
fig = detection_figures.confusion_figure(summary)
plots.save_figure(fig, 'detection_confusion');

# %%
fig = detection_figures.score_histogram(scores, summary)
plots.save_figure(fig, 'detection_score_histogram');

# %% [markdown]
# ## Missed tumours and false alarms
# The scans the primary score gets most wrong, with the predicted tumour outline (cyan), one scan per
# near-duplicate group; the line under each gallery says how many scans each group stands for.

# %%
missed = detection_figures.gallery_rows(scores, summary, "missed", detection_gallery)
fig = detection_figures.gallery(missed, net, size, f"missed tumours (lowest {summary['primary_score']} first)")
plots.save_figure(fig, "detection_missed");
display(Markdown(detection_figures.gallery_note(scores, summary, "missed", detection_gallery)))

# %%
alarms = detection_figures.gallery_rows(scores, summary, "false_alarms", detection_gallery)
fig = detection_figures.gallery(alarms, net, size, f"false alarms (highest {summary['primary_score']} first)")
plots.save_figure(fig, "detection_false_alarms");
display(Markdown(detection_figures.gallery_note(scores, summary, "false_alarms", detection_gallery)))

# %% [markdown]
# **Caveats.** The positives (`yes/`) and negatives (`no/`) were collected separately, so a detector
# can partly separate them by acquisition differences (size, contrast, framing) rather than by the
# tumour; this notebook cannot rule that out. VAL positives include near-duplicates of TRAIN images
# (notebook 07), which makes the validation positives easier than the unseen ones. Near-duplicates
# within `no/` (and within `yes/`) remain inside the report set; the CIs resample them as whole
# groups, but the groups rest on two similarity thresholds (notebook 07), so pairs just below them
# still count as independent. The groups are built differently for the two classes: `no/` scans by
# links over the whole `no/` folder (the healthy split's groups), the unseen tumour scans by links among
# themselves only, so two of them joined only through an annotated image stay apart. A tumour scan and a
# near-copy among the healthy scans could not share a unit of a class-stratified bootstrap; their
# number is printed above. The banner at the top
# names the profile; with `detection_limit` set, only that many scans per class are scored.
