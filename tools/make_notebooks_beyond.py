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
* **The healthy split.** Training may use tumour-free scans, so `no/` is split once, by whole
  near-duplicate groups (the links of notebook 07), into `train` (scans a model may train on),
  `val` and `report` roles: `splits/healthy_seed<k>.csv`, written by
  `python -m brainseg_lib healthy-split`. No report scan is a twin of a training or validation scan,
  and the `train` scans are left out here entirely.
* **Thresholds chosen on validation only.** VAL has no tumour-free image, so the healthy split's
  `val` scans (listed in `results/metrics/detection.json`) are the negative validation set, with the
  VAL tumour images as positives. Two operating points are chosen there and used unchanged on the
  report set: the threshold maximising Youden's J, and the highest threshold whose validation
  sensitivity is at least 0.90 (a fixed sensitivity).
* **Report** on the unseen tumour scans and the healthy `report` scans: sensitivity, specificity, accuracy and ROC AUC,
  each with a 95% bootstrap CI (images resampled within each class).
* **Leakage**: unseen scans that are near-duplicates of TRAIN images (the signals of notebook 07:
  thumbnail correlation ≥ 0.95 or pHash distance ≤ 6) are counted, and the metrics are given with and
  without them.
"""),
    params_cell(["profile", "seed", "loss", "healthy_seed", "detection_limit", "detection_gallery"]),
    code(SETUP + "from brainseg_lib import detection, plots\nfrom brainseg_lib.evaluate import write_csv, write_json" + LOAD_RUN + """
print(run["run_name"], "| model input", size, "x", size)"""),
    md("## The files: which tumour scans are really unseen?\nSHA-256 of every annotated image against its `yes/` namesake, and of every unseen or `no/` scan against the annotated images."),
    code(CHECK + """inv = detection.inventory()
for k, v in inv.checks.items():
    print(f"{k}: {v}")"""),
    md("## Scores\nEvery image is read, resized to the model's input and segmented once; the scores are cached to `results/tables/detection_scores.csv` and everything below is computed from that file."),
    code("""scores, info = detection.collect_scores(net, size, limit=detection_limit, healthy_seed=healthy_seed)
scores_csv = write_csv(scores, paths.tables_dir() / "detection_scores.csv")
scores = pd.read_csv(scores_csv)"""),
    code(CHECK + """print("healthy validation scans:", info["holdout"]["size"], "| drawn by", info["holdout"]["drawn_by"])
print("healthy training scans left out:", info["healthy_training_scans_excluded"])
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
    md("## At a fixed sensitivity of 0.90\nThe threshold is the highest one reaching sensitivity 0.90 on validation; the last column reads the report set's ROC curve at sensitivity 0.90 directly (a property of the scores, like the AUC)."),
    code("""fs = summary["report_at_fixed_sensitivity"]
pd.DataFrame({f"{sub} / {k}": {"threshold": m["threshold"], "sensitivity": m["sensitivity"],
                               "specificity": m["specificity"], "ROC specificity at sens 0.90": m["roc_specificity_at_sensitivity"]}
              for sub, by in fs.items() for k, m in by.items()}).T.round(3)"""),
    md("## Seed to seed\nEvery training run records both operating points of its own model (`detection` in its JSON). The rows below are the official-split BCE+Dice runs of the seed sweep (notebook 08's runs) and this notebook's run; mean and sd over the sweep's seeds."),
    code("""seeds = detection.seed_table(profile, loss)
from brainseg_lib.fileio import atomic_write_text
atomic_write_text(paths.tables_dir() / "detection_seeds.md", detection.seed_markdown(seeds))
if len(seeds):
    evaluate_cols = ["auc", "youden_sensitivity", "youden_specificity", "fixed_sensitivity_sensitivity",
                     "fixed_sensitivity_specificity", "roc_specificity_at_sensitivity"]
    seed_summary = seeds[evaluate_cols].agg(["mean", "std"]).T
    summary["seed_to_seed"] = {"runs": seeds.to_dict("records"),
                               "mean": seed_summary["mean"].to_dict(), "sd": seed_summary["std"].to_dict()}
    write_json(summary, paths.metrics_dir() / "detection.json")
    display(seeds.round(3)); display(seed_summary.round(3))
else:
    print("no sweep runs with detection figures yet: run `python -m brainseg_lib sweep` first")"""),
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


nb09 = notebook([
    md("""
# 09 · External validation: TCGA-LGG FLAIR slices from another source

A model that only holds up on its own split is of little use on a user's scans. Here the model of
notebook 02 meets **TCGA-LGG FLAIR slices** (Buda et al. 2019; Mazurowski et al. 2017): another
collection, one MRI sequence, skull included, many small tumours. No model trains on them. The set is
split by patient into a `dev` half (used, with Br35H VAL, to choose the profile: the lever table) and
a `test` half, **scored here once, for the final choice**.

Figures per half, at the slices' own 256x256 resolution (definitions in `brainseg_lib/external.py`):
pooled F1 over all pixels, mean per-slice Dice over tumour slices, the share of clean slices with any
pixel marked tumour, and the boundary metrics HD95 and NSD (tolerance in pixels;
`brainseg_lib/boundary.py`, computed with MONAI) over tumour slices. 95% CIs resample **patients**.
The data is found through `BRAINSEG_EXTERNAL` (default `data/lgg_external`); without it the notebook
says where to get it and skips.
"""),
    params_cell(["profile", "seed", "loss", "external_boot"]),
    code(SETUP + """from brainseg_lib import external, plots
from brainseg_lib.evaluate import write_csv, write_json""" + LOAD_RUN + """
ext_ok = external.available()
print(run["run_name"], "| model input", size, "x", size)
print("external set:", "found" if ext_ok else "NOT FOUND - " + external.HOW_TO_GET)"""),
    md("## The two halves"),
    code(CHECK + """if ext_ok:
    halves = {h: external.load_half(h, size) for h in external.HALVES}
    for h, half in halves.items():
        t = sum(m.any() for m in half.truths)
        print(f"{h}: {len(half.patients)} slices of {len(set(half.patients))} patients, "
              f"{t} with tumour, {len(half.patients) - t} clean")
    print("patients in both halves:", len(set(halves["dev"].patients) & set(halves["test"].patients)))"""),
    md("## Score both halves\nOne row per slice, cached to `results/metrics/external_<half>_per_slice.csv`; the summary is `results/metrics/external_validation.json`."),
    code("""if ext_ok:
    ext = {"run_name": run["run_name"], "checkpoint": run["checkpoint"], "threshold": run["threshold"]}
    for h, half in halves.items():
        per_slice = external.score_half(net, half, run["threshold"])
        csv = write_csv(per_slice, paths.metrics_dir() / f"external_{h}_per_slice.csv")
        ext[h] = {**external.summarize_half(pd.read_csv(csv), n_boot=external_boot), "per_slice_csv": csv.name}
    write_json(ext, paths.metrics_dir() / "external_validation.json")"""),
    code("""if ext_ok:
    figs = ["pooled_f1", "mean_dice_tumour", "clean_marked_share", "hd95_mean", "nsd_mean"]
    rows = {}
    for h in external.HALVES:
        e = ext[h]
        rows[h] = {f: f"{e[f]:.3f} [{e['ci95_by_patient'][f][0]:.3f}, {e['ci95_by_patient'][f][1]:.3f}]" for f in figs}
        rows[h]["hd95_median"] = f"{e['hd95_median']:.1f}"
        rows[h]["clean slices marked"] = f"{e['clean_marked']} of {e['n_clean_slices']}"
    display(pd.DataFrame(rows))"""),
    md("## Per-slice Dice on tumour slices, by tumour size\nSmall tumours are where a low input resolution and a domain shift hurt first."),
    code("""if ext_ok:
    per = pd.read_csv(paths.metrics_dir() / "external_test_per_slice.csv")
    tum = per[per.tumour]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.scatter(tum.tumour_pixels, tum.dice, s=8, alpha=0.6)
    ax.set_xscale("log"); ax.set_xlabel("tumour pixels (of 256x256)"); ax.set_ylabel("Dice"); ax.set_ylim(-0.02, 1.02)
    ax.set_title("external test half: per-slice Dice")
    plots.save_figure(fig, "external_dice_by_size");"""),
    md("## Best, median and worst tumour slices, and the worst false alarm (test half)"),
    code("""if ext_ok:
    half = halves["test"]
    idx = {n: i for i, n in enumerate(half.arrays.names)}
    order = tum.sort_values("dice")
    picks = [("worst", order.iloc[0]), ("median", order.iloc[len(order) // 2]), ("best", order.iloc[-1])]
    clean = per[~per.tumour].sort_values("pred_pixels")
    if len(clean) and clean.iloc[-1].pred_pixels > 0:
        picks.append(("false alarm", clean.iloc[-1]))
    from brainseg_lib.evaluate import predict_probs, to_native
    probs = predict_probs(net, half.arrays)
    imgs, truths, preds, titles = [], [], [], []
    for label, r in picks:
        i = idx[r["name"]]
        img = external.read_grayscale(external.check_external() / "test" / "images" / f"{r['name']}.png")
        imgs.append(img); truths.append(half.truths[i])
        preds.append(to_native(probs[i], *img.shape) >= run["threshold"])
        titles.append(f"{label}: Dice {r['dice']:.2f}")
    fig = plots.overlay_panels(imgs, truths, preds, titles)
    plots.save_figure(fig, "external_cases");"""),
    md("## In words\nGenerated from the numbers above, and written to `results/tables/external_validation.md`."),
    code("""from IPython.display import Markdown
from brainseg_lib.fileio import atomic_write_text
if ext_ok:
    atomic_write_text(paths.tables_dir() / "external_validation.md", external.describe(ext) + "\\n")
    display(Markdown(external.describe(ext)))"""),
    md("## How the profile was chosen\nThe lever table (`python -m brainseg_lib levers`, plan in `params/levers.yaml`): each trial changes one thing and is scored on Br35H VAL, the healthy validation scans and this set's `dev` half only. TEST and the external `test` half played no part in it."),
    code("""lever_md = paths.levers_dir() / "lever_table.md"
display(Markdown(lever_md.read_text()) if lever_md.is_file() else "no lever trials recorded yet")"""),
])

for name, nb in [("05_explainability", nb05), ("06_detection", nb06), ("09_external_validation", nb09)]:
    nbf.write(nb, ROOT / "notebooks" / f"{name}.ipynb")
    print("wrote", name)
