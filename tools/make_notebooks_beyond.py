"""Scaffold the two "beyond the paper" notebooks (run once; then edit the .ipynb files).

Writes ONLY notebooks/05_explainability.ipynb and notebooks/06_detection.ipynb, in the
style of tools/make_notebooks.py: a ``parameters``-tagged cell of plain literals whose
defaults come from params/smoke.yaml, and ``# NBVAL_CHECK_OUTPUT`` cells whose output
does not depend on training. Outputs are then produced with papermill (see
tools/refresh_notebooks.sh).

The helpers come from tools/make_notebooks.py (importing it writes nothing).
"""
import sys
from pathlib import Path

import nbformat as nbf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_notebooks import CHECK, ROOT, SETUP, code, md, notebook, params_cell  # noqa: E402,F401


LOAD_RUN = """
from brainseg_lib import experiment
from brainseg_lib.checkpoint import load_checkpoint, model_from_checkpoint
PARAMS = dict(profile=profile, seed=seed, loss=loss)
run, per_image, history = experiment.load_run(PARAMS)
ckpt = paths.resolve_recorded(run["checkpoint"])
net = model_from_checkpoint(load_checkpoint(ckpt), ckpt)
size = run["config"]["image_size"]
"""

nb05 = notebook([
    md("""
# 05 · Beyond the paper: what does the U-Net look at?

The paper shows masks, never why the network drew them. Here the trained U-Net of notebook 02
is explained with three attribution families from **captum** (none hand-written): Grad-CAM on a
decoder level and on the bottleneck, occlusion, and integrated gradients. A segmentation net
outputs a map, so it is wrapped to give one number per image: **the sum of the tumour logits over
the mask the model predicts** on that image (over the ground truth where it predicts nothing).
Everything runs at the model's input size (the run's `image_size`). Definitions and the exact
settings: `brainseg_lib/explain.py`.

Pretty heat maps prove nothing by themselves, so two checks follow, each against a random
baseline: (a) how much of the attribution lies inside the annotated tumour, and (b) whether
deleting the most-attributed pixels first removes the predicted tumour faster than deleting
pixels in random order.
"""),
    params_cell(["profile", "seed", "loss", "xai_images", "xai_ig_steps", "xai_occlusion_frac",
                 "xai_target", "xai_fill"]),
    code(SETUP + "import numpy as np\nfrom brainseg_lib import data, explain, plots\nfrom brainseg_lib.evaluate import write_json" + LOAD_RUN + """
arrays = data.load_split("test", size).head(run["n_images"])
print(run["run_name"], "|", len(arrays), "test images at", size, "x", size)"""),
    code(CHECK + """print("methods:", list(explain.METHODS))
print("reference (not a method):", explain.REFERENCE)
print("deletion fractions:", explain.DELETION_FRACTIONS)
print("target:", xai_target, "| deletion fill:", xai_fill)
print("occlusion window at 64 px:", explain.occlusion_window(64, xai_occlusion_frac))"""),
    md("""
## Maps on a true-positive, a false-positive and a false-negative case
Cases are chosen from the run's per-image CSV (`results/metrics/<run>_per_image.csv`): the
highest Dice, the most false-positive pixels and the most false-negative pixels (counted at model
resolution). Each map is shown as its absolute value scaled to its own maximum; the number above a
map is the fraction of its mass inside the annotated tumour (red contour; white on the maps). The
model's prediction is the cyan contour.
"""),
    code("""cases = explain.pick_cases(per_image)
ex_cases = explain.explain_arrays(net, arrays, [r["name"] for r in cases.values()], xai_target,
                                  xai_ig_steps, xai_occlusion_frac)
titles = [f"{k}\\n{r['name']}: Dice {r['f1']:.3f}" for k, r in cases.items()]
fig = explain.overlay_figure(ex_cases, titles)
plots.save_figure(fig, "xai_cases");"""),
    md("""
## The checks
A seeded sample of `xai_images` TEST images (from those the run evaluated). For every image and
method: the fraction of absolute attribution inside the tumour, against the tumour's area fraction
(what a map that knows nothing gets on average) and an actual uniform-noise map; and the deletion
curve. The paired per-image differences carry a bootstrap 95% CI over images; a method *beats the
random baseline* only when that CI excludes 0 on the good side and the mean difference is at least
`explain.MIN_EFFECT` (0.01 in mass fraction or in AUC), so a negligible difference is not called a win.
"""),
    code("""names = explain.sample_names(per_image, xai_images, seed)
ex = explain.explain_arrays(net, arrays, names, xai_target, xai_ig_steps, xai_occlusion_frac)
checks = explain.run_checks(net, ex, fill=xai_fill, seed=seed)
files = explain.write_checks(checks, paths.tables_dir())
print(len(names), "images; targets used:", pd.Series(ex.targets).value_counts().to_dict())"""),
    code(CHECK + """print("tables:", sorted(files.values()))
print("mass columns:", list(checks.mass.columns))
print("deletion columns:", list(checks.deletion.columns))"""),
    md("### (a) Attribution mass inside the tumour\n`diff_vs_expected` = mass fraction − tumour area fraction, per image, averaged."),
    code("checks.mass.round(4)"),
    code("fig = explain.mass_figure(checks.mass)\nplots.save_figure(fig, 'xai_attribution_mass');"),
    md("""
### (b) Deletion
Pixels are set to the image mean (`xai_fill`) in order of decreasing attribution; the curve is the
predicted tumour area relative to the intact image, and its normalised AUC is lower when the map
found what the prediction rests on. Random order is the mean of three random permutations of the
same image. The summed tumour probability (a soft area, defined even where nothing is predicted)
is scored the same way. The filled pixels are unlike anything the model was trained on; where they
look like tumour to it, the curve *rises* instead of falling (`images_grew` counts images whose
curve exceeds 1.1x the intact value). Such outliers dominate the mean, so the table also gives the
median paired difference and the share of images on which the method beats the random order.
"""),
    code("checks.deletion.round(4)"),
    code("fig = explain.deletion_figure(checks.curves)\nplots.save_figure(fig, 'xai_deletion');"),
    md("## Does any method beat the random baseline?\nThe sentences below are generated from the two tables above."),
    code("""print(checks.text)
write_json({"kind": "explainability", "run_name": run["run_name"], "images": names,
            "targets_used": ex.targets, "ig_steps": xai_ig_steps, "occlusion_frac": xai_occlusion_frac,
            "fill": xai_fill, "tables": files,
            "attribution_mass": explain.records(checks.mass),
            "deletion": explain.records(checks.deletion), "verdict": checks.text},
           paths.metrics_dir() / "xai.json");"""),
    md("""
**Reading the result.** Attribution mass inside the tumour is easy to get when the prediction and
the tumour coincide, and integrated gradients and occlusion are tied to the input pixels, so they
tend to sit on whatever bright structure the model segments. Deletion asks a different question
(does removing those pixels change the output?) and can disagree. Grad-CAM's maps are coarse (the
bottleneck is 1/16 of the input side) and can be all zero after its ReLU. Deletion is confounded
wherever the fill creates tumour-like patches (the caution line above, when present). With the smoke profile
the model is barely trained and the sample is tiny, so no conclusion should be drawn from its
numbers; run the notebook with `-f params/cpu.yaml` after a cpu run.
"""),
])

nb06 = notebook([
    md("""
# 06 · Beyond the paper: does the segmentation tell tumour scans from healthy ones?

Br35H holds tumour scans in `yes/` and tumour-free scans in `no/`. Only part of the tumour scans
is annotated (TRAIN/VAL/TEST), and those `yes/` files are byte-identical to the annotated ones, so
they are set aside (the inventory below counts every group). That leaves **the unannotated tumour
scans and all the healthy scans, which no model has seen**. Here
the segmentation U-Net of notebook 02 becomes an image-level detector, without any retraining.

* **Scores**: the predicted tumour area (fraction of pixels with p ≥ 0.5) and the maximum tumour
  probability. The **primary score is the predicted area**, fixed before any result was seen: it is
  the segmentation's own decision at the pixel threshold every metric uses, rests on many pixels
  (one hot pixel cannot flip it), and its threshold reads as a minimum tumour size. Both are reported.
* **Threshold chosen on validation only.** VAL has no tumour-free image, so a fixed, seeded
  **hold-out of `no/` scans** (its size is the profile's `detection_holdout`; the scans are listed in
  `results/metrics/detection.json`) serves as the negative validation set, with the VAL tumour images
  as positives; the threshold maximising Youden's J
  there is used unchanged on the report set. The hold-out never enters the report. `no/` contains
  near-duplicates of its own scans, so the hold-out is drawn as whole near-duplicate groups (the
  links of notebook 07): no report scan is a twin of a hold-out scan.
* **Report** on all unseen scans minus the hold-out: sensitivity, specificity, accuracy and ROC AUC,
  each with a 95% bootstrap CI (images resampled within each class).
* **Leakage**: unseen scans that are near-duplicates of TRAIN images (the signals of notebook 07:
  thumbnail correlation ≥ 0.95 or pHash distance ≤ 6) are counted, and the metrics are given with and
  without them.
"""),
    params_cell(["profile", "seed", "loss", "detection_limit", "detection_holdout",
                 "detection_holdout_seed", "detection_gallery"]),
    code(SETUP + "from brainseg_lib import detection, plots\nfrom brainseg_lib.evaluate import write_csv, write_json" + LOAD_RUN + """
print(run["run_name"], "| model input", size, "x", size)"""),
    md("## The files: which tumour scans are really unseen?\nSHA-256 of every annotated image against its `yes/` namesake, and of every unseen or `no/` scan against the annotated images."),
    code(CHECK + """inv = detection.inventory()
for k, v in inv.checks.items():
    print(f"{k}: {v}")"""),
    md("## Scores\nEvery image is read, resized to the model's input and segmented once; the scores are cached to `results/tables/detection_scores.csv` and everything below is computed from that file."),
    code("""scores, info = detection.collect_scores(net, size, limit=detection_limit, holdout=detection_holdout,
                                       holdout_seed=detection_holdout_seed)
scores_csv = write_csv(scores, paths.tables_dir() / "detection_scores.csv")
scores = pd.read_csv(scores_csv)"""),
    code(CHECK + """print("hold-out:", info["holdout"]["size"], "no/ scans, seed", info["holdout"]["seed"],
      "| drawn by", info["holdout"]["drawn_by"])
print("limit per class:", info["limit_per_class"])
print(scores.groupby(["role", "folder", "label"]).size().to_string())
print("columns:", list(scores.columns))"""),
    md("## Threshold chosen on validation (VAL tumours + the `no/` hold-out)"),
    code("""summary = detection.summarize(scores, info)
summary.update({"run_name": run["run_name"], "checkpoint": run["checkpoint"], "scores_csv": scores_csv.name})
write_json(summary, paths.metrics_dir() / "detection.json")
pd.DataFrame(summary["validation"]["chosen"]).T"""),
    md("## Near-duplicates of TRAIN among the unseen scans"),
    code("""nd = summary["near_duplicates_of_train"]
print(f"{nd['total']} of {nd['of']} report scans are near-duplicates of a TRAIN image "
      f"({nd['positives']} tumour, {nd['negatives']} healthy; by correlation {nd['by_corr']}, by pHash {nd['by_phash']})")
nh = summary["near_duplicates_of_holdout"]
print(f"{nh['total']} of {nh['of']} report scans are near-duplicates of a hold-out scan "
      f"({nh['positives']} tumour, {nh['negatives']} healthy)")
ng = info["no_groups"]
print(f"no/ itself: {ng['scans_in_such_groups']} scans in {ng['groups_with_duplicates']} near-duplicate groups "
      f"(largest {ng['largest']})")"""),
    md("## Report: all unseen scans, and without the near-duplicates\nValue and 95% bootstrap CI; `primary` marks the pre-specified score."),
    code("detection.metrics_frame(summary).round(4)"),
    code("""table = detection.detection_table(summary)
written = detection.write_table(table, paths.tables_dir())
from IPython.display import Markdown
Markdown(written["md"].read_text())"""),
    md("## In words\nGenerated from the numbers above."),
    code("print(detection.describe(summary))"),
    md("## ROC curves and the confusion matrix (primary score, all report scans)"),
    code("fig = detection.roc_figure(scores, summary)\nplots.save_figure(fig, 'detection_roc');"),
    code("fig = detection.confusion_figure(summary)\nplots.save_figure(fig, 'detection_confusion');"),
    code("fig = detection.score_histogram(scores, summary)\nplots.save_figure(fig, 'detection_score_histogram');"),
    md("## Missed tumours and false alarms\nThe scans the primary score gets most wrong, with the predicted tumour outline (cyan)."),
    code("""missed = detection.gallery_rows(scores, summary, "missed", detection_gallery)
fig = detection.gallery(missed, net, size, f"missed tumours (lowest {summary['primary_score']} first)")
plots.save_figure(fig, "detection_missed");"""),
    code("""alarms = detection.gallery_rows(scores, summary, "false_alarms", detection_gallery)
fig = detection.gallery(alarms, net, size, f"false alarms (highest {summary['primary_score']} first)")
plots.save_figure(fig, "detection_false_alarms");"""),
    md("""
**Caveats.** The positives (`yes/`) and negatives (`no/`) were collected separately, so a detector
can partly separate them by acquisition differences (size, contrast, framing) rather than by the
tumour; this notebook cannot rule that out. VAL positives include near-duplicates of TRAIN images
(notebook 07), which makes the validation positives easier than the unseen ones. Near-duplicates
within `no/` (and within `yes/`) remain inside the report set, so its images are not all
independent and the bootstrap CIs are somewhat too narrow. With the smoke
profile the model is barely trained and only `detection_limit` scans per class are scored.
"""),
])

for name, nb in [("05_explainability", nb05), ("06_detection", nb06)]:
    nbf.write(nb, ROOT / "notebooks" / f"{name}.ipynb")
    print("wrote", name)
