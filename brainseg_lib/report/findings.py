"""Every findings sentence of the study, written from data.

Each function takes the numbers a notebook computed (or the JSON it wrote) and returns
Markdown: the notebooks display it, write it to ``results/tables/*.md``, and
``report.readme.update_readme`` copies those files into README.md. No figure in these
sentences is typed by hand.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from brainseg_lib.data.external import HALVES
from brainseg_lib.detection.scores import SCORES
from brainseg_lib.detection.tables import _fmt_ci, _num
from brainseg_lib.report.seed_findings import (  # noqa: F401  (the findings' one import place)
    findings_markdown,
    plus_minus,
    seeds_headline,
    strict_verdict_holds,
    within_test_sentence,
)
from brainseg_lib.xai.attribution import METHODS, MIN_EFFECT
from brainseg_lib.xai.deletion import GROWTH, MEASURES, curves_grew


def external_findings(ext: dict) -> str:
    """The external results in plain sentences, generated from external_validation.json."""
    lines = []
    for h in HALVES:
        e = ext.get(h)
        if not e:
            continue
        ci = e["ci95_by_patient"]
        role = "used for choices" if h == "dev" else "scored once, for the final model"
        lines.append(
            f"- **{h}** ({role}; {e['n_patients']} patients, {e['n_tumour_slices']} tumour and "
            f"{e['n_clean_slices']} clean slices): pooled F1 {e['pooled_f1']:.3f} "
            f"(95% CI {ci['pooled_f1'][0]:.3f}-{ci['pooled_f1'][1]:.3f}), mean Dice on tumour slices "
            f"{e['mean_dice_tumour']:.3f} ({ci['mean_dice_tumour'][0]:.3f}-{ci['mean_dice_tumour'][1]:.3f}), "
            f"{e['clean_marked']} of {e['n_clean_slices']} clean slices marked "
            f"({100 * e['clean_marked_share']:.1f}%), {boundary_sentence(e)}.")
    return "\n".join(lines)


def boundary_sentence(e: dict) -> str:
    """HD95 and NSD of an external half, HD95 as measured only: a tumour slice with nothing
    predicted has no boundary to measure (``boundary`` gives it the image diagonal, which is no
    measurement), so it is counted, not averaged in; HD95 on the common scale of the image
    diagonal, as the sets' images differ in size. An older JSON keeps the pixel figures."""
    missed, share = e.get("tumour_slices_missed"), e.get("hd95_diag_median_detected")
    if missed is None or share is None:
        return (f"HD95 median {e['hd95_median']:.1f} px{hd95_missed_note(e)}, NSD at "
                f"{e['nsd_tolerance_px']:g} px {e['nsd_mean']:.3f}{scale_free_note(e)}")
    n = e["n_tumour_slices"]
    return (f"{missed} of {n} tumour slices get no prediction, so no boundary to measure; over the "
            f"{n - missed} with one, HD95 median {100 * share:.1f}% of the image diagonal; NSD (misses "
            f"scoring 0) at {e['nsd_tolerance_px']:g} px {e['nsd_mean']:.3f}, at "
            f"{100 * e['nsd_tolerance_diag']:g}% of the diagonal {e['nsd_diag_mean']:.3f}")


def hd95_missed_note(e: dict) -> str:
    """Why an HD95 median can be the image diagonal: the tumour slices with nothing predicted
    count at the diagonal (``boundary``'s empty-prediction rule). Empty for an older JSON."""
    missed = e.get("tumour_slices_missed")
    if missed is None:
        return ""
    return (f" ({missed} of {e['n_tumour_slices']} tumour slices have no prediction and count at "
            "the image diagonal)")


def scale_free_note(e: dict) -> str:
    """The boundary figures on a common scale (``evaluation/boundary.py``): HD95 as a share of
    the image diagonal over the tumour slices with a prediction, NSD at a tolerance of a share
    of the diagonal. Empty for an older JSON."""
    if e.get("hd95_diag_median_detected") is None:
        return ""
    return (f"; on a common scale, HD95 median {100 * e['hd95_diag_median_detected']:.1f}% of the image "
            f"diagonal over the tumour slices with a prediction, NSD at {100 * e['nsd_tolerance_diag']:g}% "
            f"of the diagonal {e['nsd_diag_mean']:.3f}")


def detection_findings(summary: dict) -> str:
    """The result in plain sentences, generated from the summary."""
    k = summary["primary_score"]
    lines = []
    for subset, label in (("all", "All report scans"),
                          ("without_near_duplicates", "Without near-duplicates of TRAIN, VAL or the hold-out")):
        m = summary["report"][subset][k]
        ci = m["ci95"]
        lines.append(
            f"{label} ({m['positives']} tumour, {m['negatives']} healthy), {k} >= {m['threshold']:.4g}: "
            f"sensitivity {_fmt_ci(m['sensitivity'], ci['sensitivity'])}, "
            f"specificity {_fmt_ci(m['specificity'], ci['specificity'])}, "
            f"accuracy {_fmt_ci(m['accuracy'], ci['accuracy'])}, AUC {_fmt_ci(m['auc'], ci['auc'])}.")
    bg, ci_img = summary["report"]["all"][k]["bootstrap_groups"], summary["report"]["all"][k]["ci95_images"]
    lines.append(f"The CIs resample whole near-duplicate groups within each class ({bg['positives']} tumour "
                 f"and {bg['negatives']} healthy groups on all report scans); counting every scan as "
                 f"independent would give specificity [{_num(ci_img['specificity'][0]):.3f}, "
                 f"{_num(ci_img['specificity'][1]):.3f}] and AUC [{_num(ci_img['auc'][0]):.3f}, "
                 f"{_num(ci_img['auc'][1]):.3f}].")
    a, b = (_num(summary["report"][s][k]["auc"]) for s in ("all", "without_near_duplicates"))
    nd, nv, nh = (summary[f"near_duplicates_of_{s}"] for s in ("train", "val", "holdout"))
    gone = summary["report"]["all"][k]["images"] - summary["report"]["without_near_duplicates"][k]["images"]
    lines.append(f"{nd['total']} of {nd['of']} report scans are near-duplicates of a TRAIN image, "
                 f"{nv['total']} of a VAL image "
                 f"and {nh['total']} of a hold-out scan; leaving out the {gone} scans flagged by any of "
                 f"them changes the AUC by {b - a:+.3f}.")
    lines += [x for x in (fixed_sensitivity_note(summary), shortcut_sentence(summary.get("shortcut_control")))
              if x]
    other = [s for s in SCORES if s != k][0]
    lines.append(f"The secondary score ({other}) has AUC "
                 f"{_fmt_ci(summary['report']['all'][other]['auc'], summary['report']['all'][other]['ci95']['auc'])} "
                 f"on all report scans (threshold {summary['report']['all'][other]['threshold']:.4g}).")
    chance = [s for s in SCORES if not np.isnan(_num(summary["report"]["all"][s]["ci95"]["auc"][0]))
              and _num(summary["report"]["all"][s]["ci95"]["auc"][0]) > 0.5]
    lines.append("Scores whose AUC is above chance (95% CI above 0.5): "
                 + (", ".join(chance) if chance else "none") + ".")
    return "\n".join(lines)


def fixed_sensitivity_note(summary: dict) -> str:
    """A flag when the threshold chosen on validation for sensitivity >= the target misses the
    target on the unseen report scans (all of them, or those without near-duplicates)."""
    k, target = summary["primary_score"], summary.get("fixed_sensitivity")
    misses = []
    for sub, label in (("all", "all unseen tumour scans"),
                       ("without_near_duplicates", "those without near-duplicates")):
        m = (summary.get("report_at_fixed_sensitivity") or {}).get(sub, {}).get(k)
        if m and target is not None and m["sensitivity"] < target:
            misses.append(f"{_fmt_ci(m['sensitivity'], m['ci95']['sensitivity'])} on {label}")
    if not misses:
        return ""
    return (f"**The operating point chosen on validation for sensitivity >= {target:.2f} misses its target on "
            f"unseen scans:** sensitivity " + " and ".join(misses) + ".")


def shortcut_sentence(control: dict | None) -> str:
    """The shortcut control (``detection.shortcut``) in a sentence; empty without it."""
    if not control:
        return ""
    a, m, p = (control[x] for x in ("aspect_ratio_only", "model", "model_padded_to_square"))
    return (f"Shortcut control: the aspect ratio alone ({a['score']}) separates the classes with AUC "
            f"{_fmt_ci(a['auc'], a['ci95']['auc'])}; the model scores AUC {_fmt_ci(m['auc'], m['ci95']['auc'])} "
            f"on the scans as they are and {_fmt_ci(p['auc'], p['ci95']['auc'])} on the same scans padded to a "
            "square, where no scan is stretched"
            + ("; with the stretch removed, its AUC's 95% CI still lies above what the aspect ratio alone "
               "reaches." if p["ci95"]["auc"][0] > a["auc"] else
               "; with the stretch removed, its AUC's 95% CI reaches down to what the aspect ratio alone "
               "reaches, so part of its detection may rest on the stretch.")
            + framing_sentence(control))


def framing_sentence(control: dict) -> str:
    """The framing control (``detection.shortcut``'s second cue) in a sentence; empty without it
    (a summary written before it existed)."""
    f, w = control.get("framing_only"), control.get("model_within_framing_strata")
    if not f or not w:
        return ""
    med = control["head_box_share_median"]
    return (f" Framing control: the head's box covers a median {med['tumour']:.2f} of a tumour scan's frame "
            f"and {med['healthy']:.2f} of a healthy one's, and that share alone ({f['score']}) separates the "
            f"classes with AUC {_fmt_ci(f['auc'], f['ci95']['auc'])}; padding keeps this cue. Compared only "
            f"with scans framed alike (the same quartile of that share: {w['pairs']} of {w['all_pairs']} "
            f"tumour-healthy pairs), the model scores AUC {_fmt_ci(w['auc'], w['ci95']['auc'])}"
            + ("; its CI lies above what the framing alone reaches." if w["ci95"]["auc"][0] > f["auc"] else
               "; its CI reaches down to what the framing alone reaches, so part of its detection may "
               "rest on the framing."))


# ----------------------------------------------------------------------- verdict
def xai_findings(mass: pd.DataFrame, deletion_tables: list[pd.DataFrame]) -> str:
    """Plain sentences, generated from the summary tables: which methods beat random."""
    def fmt(lst):
        return ", ".join(lst) if lst else "none"

    def winners(df):
        df = df[df["method"].isin(METHODS)]
        return [m for m, b in zip(df["method"], df["beats_random"]) if b]

    mass_m = mass[mass["method"].isin(METHODS)]
    wins = {"mass": winners(mass)}
    lines = [
        f"Attribution mass inside the tumour ({int(mass_m['images'].max()) if len(mass_m) else 0} "
        f"images): methods whose mass fraction exceeds the random baseline (the tumour's area "
        f"fraction, on average {mass_m['expected_random'].mean():.3f}; a uniform-noise map gets "
        f"{mass_m['random_map'].mean():.3f}) by at least {MIN_EFFECT} with a 95% CI above 0: "
        f"{fmt(wins['mass'])}; "
        f"not shown to beat it: {fmt([m for m in mass_m['method'] if m not in wins['mass']])}."]
    for dt in deletion_tables:
        d = dt[dt["method"].isin(METHODS)]
        if not len(d):
            continue
        measure = d["measure"].iloc[0]
        n = int(d["images"].max())
        if n == 0:
            lines.append(f"Deletion, {MEASURES[measure]}: no image has a non-empty intact value "
                         f"({int(d['images_left_out'].max())} left out), so this check is not possible here.")
            continue
        wins[measure] = winners(dt)
        lines.append(
            f"Deletion, {MEASURES[measure]} ({n} images, {int(d['images_left_out'].max())} left out): "
            f"methods whose deletion AUC is below that of random deletion orders (on average "
            f"{d['random_order_auc'].mean():.3f}) by at least {MIN_EFFECT} with a 95% CI below 0: "
            f"{fmt(wins[measure])}; "
            f"not shown to beat it: {fmt([m for m in d['method'] if m not in wins[measure]])}.")
        grew = curves_grew(d)
        if grew:
            lines.append(
                f"  Caution: deleting the most-attributed pixels made the {MEASURES[measure]} grow above "
                f"{GROWTH}x its intact value in some images ({grew}): the filled pixels themselves look "
                "like tumour to the model, which confounds this check (see median_diff and "
                "share_below_random in the table).")
    any_win = sorted({m for w in wins.values() for m in w}, key=METHODS.index)
    all_win = [m for m in METHODS if all(m in w for w in wins.values())]
    if not any_win:
        lines.append("Verdict: no method beats the random baseline on any check.")
    elif all_win:
        lines.append(f"Verdict: {fmt(all_win)} beat{'s' if len(all_win) == 1 else ''} the random "
                     f"baseline on every check made ({len(wins)}).")
    else:
        lines.append(f"Verdict: {fmt(any_win)} beat{'s' if len(any_win) == 1 else ''} the random "
                     "baseline on some checks, but no method beats it on every check made.")
    return "\n".join(lines)


def profile_banner(profile: str) -> str:
    """One line at the top of every notebook saying which profile produced its numbers."""
    from brainseg_lib.study.profiles import load_profile
    try:
        p = load_profile(profile)
    except (FileNotFoundError, ValueError):
        return f"> Profile **{profile}** (not a file in `params/`: parameters set by hand)."
    size = (f"{p['epochs']} epochs, U-Net base width {p['base_width']}, {p['image_size']}x"
            f"{p['image_size']} inputs")
    if profile == "smoke":
        n = p["limit_train"]
        return ("> **Smoke profile: these numbers are not the study's results.** A pipeline check "
                f"run by CI ({size}, {n} training images); only the outputs CI compares are kept "
                "in `notebooks/`. The study's results are in `results/report/index.html` and "
                "`results/executed/` (regenerate with `./run_all.sh`).")
    return f"> Profile **{profile}** (`params/{profile}.yaml` over `params/base.yaml`): {size}."


def leakage_findings(counts: pd.DataFrame) -> str:
    """The leakage audit's key fact: how many TEST and VAL images have a TRAIN near-duplicate."""
    c = counts.set_index(["query", "reference"])
    parts = []
    for q in ("test", "val"):
        if (q, "train") in c.index:
            r = c.loc[(q, "train")]
            parts.append(f"**{int(r['dup'])} of {int(r['query_images'])} {q.upper()} images** have a "
                         "near-duplicate in TRAIN")
    if not parts:
        return ""
    return ("; ".join(parts) + " (thumbnail correlation >= 0.95 or pHash distance <= 6, against "
            "the image or its left-right, up-down or both-ways mirror image: training flips "
            "images, so a mirrored copy is the same training example). A model scored on them is "
            "partly scored on images it has already seen; the grouped split below keeps each "
            "group of near-duplicates inside one split.")


def same_name_note(main_runs: list[dict], sweep_runs: list[dict]) -> str:
    """Why a sweep run can report another F1 than notebook 02's run of the same name: the
    thread count changes float summation order, so the same seed trains other weights."""
    main = {r["run_name"]: r for r in main_runs}
    lines = []
    for r in sweep_runs:
        m = main.get(r["run_name"])
        if m is None or m["global"]["f1"] == r["global"]["f1"]:
            continue
        lines.append(f"- `{r['run_name']}`: TEST F1 {m['global']['f1']:.3f} in notebook 02 "
                     f"({m.get('threads')} threads), {r['global']['f1']:.3f} in this sweep "
                     f"({r.get('threads')} threads)")
    if not lines:
        return ""
    return ("Runs of the same name can differ between notebook 02 and the sweep: the sweep's jobs "
            "may run with another thread count, and the thread count changes the order of float "
            "sums, so the same seed trains slightly different weights. Table I uses notebook 02's "
            "runs; this notebook compares runs of the sweep only.\n" + "\n".join(lines))
