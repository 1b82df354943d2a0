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
from brainseg_lib.paper import paper_figure
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
            f"({100 * e['clean_marked_share']:.1f}%), HD95 median {e['hd95_median']:.1f} px"
            f"{hd95_missed_note(e)}, NSD at {e['nsd_tolerance_px']:g} px {e['nsd_mean']:.3f}.")
    return "\n".join(lines)


def hd95_missed_note(e: dict) -> str:
    """Why an HD95 median can be the image diagonal: the tumour slices with nothing predicted
    count at the diagonal (``boundary``'s empty-prediction rule). Empty for an older JSON."""
    missed = e.get("tumour_slices_missed")
    if missed is None:
        return ""
    return (f" ({missed} of {e['n_tumour_slices']} tumour slices have no prediction and count at "
            "the image diagonal)")


def plus_minus(mean, sd):
    if mean is None:
        return "n/a"
    return f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


VERDICT_SIDE = {"higher": 1, "lower": -1, "no evidence": 0}


def _side(contrast: dict | None) -> int | None:
    """+1 when A's whole CI of the difference lies above 0, -1 below, 0 when it spans 0
    (``study.verdicts``); None without a CI (no per-image results on a side)."""
    return VERDICT_SIDE[contrast["verdict"]] if contrast else None


def _verdict(contrast: dict | None, a: str, b: str, diff: float | None = None) -> str:
    """'A scores higher than B (d, CI)' or 'no evidence that A and B differ (d, CI)', from the
    hierarchical-bootstrap CI over seeds and near-duplicate groups (``seed_spread.contrasts``);
    no verdict without one."""
    if not contrast:
        d = "" if diff is None else f" ({diff:+.3f})"
        return (f"without per-image results on both sides there is no CI for the difference{d}, so "
                f"no verdict on {a} against {b}")
    lo, hi = contrast["ci95"]
    ci = (f"{contrast['diff']:+.3f} F1, 95% CI {lo:+.3f} to {hi:+.3f}, resampling "
          f"{contrast.get('units', 'seeds x near-duplicate groups')}")
    if 1 in contrast.get("seeds", ()):
        ci += "; one seed on a side, so test-set sampling only there"
    side = _side(contrast)
    if side == 0:
        return f"the difference ({ci}) spans 0, so there is no evidence that {a} and {b} differ"
    top, bottom = (a, b) if side > 0 else (b, a)
    return f"{top} scores higher than {bottom} ({ci})"


RECALL_GAIN = 0.01   # a tuned threshold "raises" recall when it gains more than this


def _near_miss_sentence(rows: list[dict] | None, split: str = "grouped",
                        whose: str = "the near-duplicate") -> str:
    """What a grouped split leaves just below its thresholds (``leakage.near_misses``; ``whose``
    names them), as a sentence over every correlation band and the pHash band; empty without
    the audit's rows."""
    corr = sorted((r for r in rows or [] if r["signal"] == "corr"), key=lambda r: r["from"])
    phash = [r for r in rows or [] if r["signal"] == "phash"]
    if not corr:
        return ""
    hi, lo = corr[-1], corr[0]
    s = (f" Just below {whose} thresholds, {hi['test_images_with_train_partner']} "
         f"(thumbnail correlation {hi['from']:.2f}-{hi['to']:.2f}) to {lo['test_images_with_train_partner']} "
         f"({lo['from']:.2f}-{lo['to']:.2f}) of {hi['test_images']} {split} TEST images still have a TRAIN "
         "partner that neither signal links")
    if phash:
        s += (f", and {phash[0]['test_images_with_train_partner']} have one at pHash distance "
              f"{int(phash[0]['from'])}-{int(phash[0]['to'])}")
    return s + " (notebook 07)."


def strict_verdict_holds(rep: dict) -> bool | None:
    """Whether the official-vs-grouped verdict (higher, lower or no evidence of a difference) is
    the same with the stricter grouped split in the grouped split's place; None when either
    comparison has no CI (no stricter runs, no per-image results)."""
    c = rep.get("contrasts") or {}
    before, after = _side(c.get("official_minus_grouped")), _side(c.get("official_minus_grouped_strict"))
    return None if None in (before, after) else before == after


def _strict_sentence(rep: dict, holds: bool | None) -> str:
    """The stricter grouped split's F1 against the grouped and the official split's, and whether
    the official-vs-grouped verdict survives it (``holds``: ``strict_verdict_holds``)."""
    from brainseg_lib.data.duplicates import STRICT_CORR_THRESHOLD as CORR
    from brainseg_lib.data.duplicates import STRICT_PHASH_THRESHOLD as PHASH
    x, c = rep["grouped_strict"], rep.get("contrasts") or {}
    seeds = f"{x['n_seeds']} seed" + ("s" if x["n_seeds"] != 1 else "")
    s = (f"- **A stricter grouped split.** Linking images also at thumbnail correlation >= {CORR:.2f} or "
         f"pHash distance <= {PHASH} (notebook 07), test F1 is {plus_minus(x['f1_mean'], x['f1_sd'])} "
         f"(mean ± sd over {seeds}). Against the other two splits, ")
    gx, ox = rep.get("grouped_minus_grouped_strict_f1"), rep.get("official_minus_grouped_strict_f1")
    s += ("there is no grouped figure" if gx is None else
          _verdict(c.get("grouped_minus_grouped_strict"), "the grouped split", "the stricter one", gx))
    if ox is not None:
        s += ("; and for the official split against the stricter one, "
              + _verdict(c.get("official_minus_grouped_strict"), "the official split", "the stricter one", ox))
        if holds is not None:
            s += (". The official-vs-grouped verdict holds at the stricter thresholds" if holds else
                  ". So the official-vs-grouped verdict does not hold at the stricter thresholds: it depends on "
                  "where they sit, and the two grouped figures together, not the first alone, are the range to "
                  "quote for unseen patients' slices")
    return (s + ". Its TEST set holds other images again, so part of any shift is which images are tested."
            + _near_miss_sentence(rep.get("grouped_strict_near_misses"), "stricter-split", "the stricter split's"))


def within_test_sentence(w: dict) -> str:
    """The within-TEST contrast (``seed_spread.within_test_contrast``): the same models on one
    TEST set, images with and without a TRAIN near-duplicate, by per-image Dice."""
    lo, hi = w["ci95"]
    s = (f"- **Within one TEST set.** The same models (official split, {w['seeds']} seed"
         + ("s" if w["seeds"] != 1 else "") + f"), per-image Dice averaged over seeds: the {w['flagged']} "
         f"TEST images whose near-duplicate group (mirror images included) holds a TRAIN image score "
         f"{w['mean_flagged']:.3f}, the {w['unflagged']} without one {w['mean_unflagged']:.3f} (difference "
         f"{w['diff']:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f} resampling groups, permutation p = "
         f"{w['p_value']:.3g} shuffling the flag over {w['flagged_groups'] + w['unflagged_groups']} groups). ")
    if lo > 0:
        s += ("Images the model has seen as a copy score higher, so the official split's figures rest partly "
              "on memorised slices")
    elif hi < 0:
        s += "Images with a TRAIN copy score lower, which leakage alone does not explain"
    else:
        s += "There is no evidence that a TRAIN copy changes an image's score"
    if min(w["flagged"], w["unflagged"]) < 10:
        s += f"; with {min(w['flagged'], w['unflagged'])} images on one side the contrast is coarse"
    return s + "."


def seeds_headline(h: dict) -> str:
    """The README headline's seeds-and-leakage line from honest_evaluation.json (empty without
    both the official and the grouped figure): F1 mean ± sd per split, the stricter grouped
    split's where the sweep holds it."""
    splits = [(h.get(k) or {}, words) for k, words in (("official", "on the official split"),
              ("grouped", "on a near-duplicate-free grouped split"), ("grouped_strict", "on a stricter one"))]
    if any(r.get("f1_mean") is None for r, _ in splits[:2]):
        return ""
    splits = [(r, words) for r, words in splits if r.get("f1_mean") is not None]
    seeds = [str(r["n_seeds"]) for r, _ in splits]
    return ("- **Seeds and leakage:** F1 " + ", ".join(f"{plus_minus(r['f1_mean'], r['f1_sd'])} {w}" for r, w in splits)
            + " (mean ± sd over " + ", ".join(seeds[:-1]) + " and " + seeds[-1] + " seeds).")


def findings_markdown(rep: dict) -> str:
    """Sentences stating what holds and what does not, generated from the numbers."""
    o, g = rep["official"], rep["grouped"]
    lines, holds = [], strict_verdict_holds(rep)
    if rep["official_minus_grouped_f1"] is not None:
        d = rep["official_minus_grouped_f1"]
        lines.append(
            f"- **Leakage.** Test F1 is {plus_minus(o['f1_mean'], o['f1_sd'])} on the official split and "
            f"{plus_minus(g['f1_mean'], g['f1_sd'])} on the near-duplicate-free grouped split "
            f"(mean ± sd over {o['n_seeds']} and {g['n_seeds']} seeds): "
            + _verdict((rep.get("contrasts") or {}).get("official_minus_grouped"),
                       "the official (leaky) split", "the grouped split", d)
            + ". The two TEST sets hold different images, so part of a gap can be difficulty "
            "rather than leakage; "
            + ("the next point, a stricter grouped split, says which figure to quote for unseen patients' slices"
               if holds is False else
               "the grouped figure is the one to quote for unseen patients' slices") + "."
            + _near_miss_sentence(rep.get("grouped_near_misses")))
    if (rep.get("grouped_strict") or {}).get("f1_mean") is not None:
        lines.append(_strict_sentence(rep, holds))
    if (rep.get("within_test") or {}).get("diff") is not None:
        lines.append(within_test_sentence(rep["within_test"]))
    l = rep["loss"]
    if l["bce_dice_minus_bce_f1"] is not None:
        d = l["bce_dice_minus_bce_f1"]
        lines.append(
            f"- **Loss.** Under the same budget and seeds, BCE+Dice gives test F1 "
            f"{plus_minus(l['bce_dice']['f1_mean'], l['bce_dice']['f1_sd'])} and plain BCE "
            f"{plus_minus(l['bce']['f1_mean'], l['bce']['f1_sd'])}: "
            + _verdict((rep.get("contrasts") or {}).get("bce_dice_minus_bce"), "BCE+Dice", "plain BCE", d) + ".")
    t = rep["threshold"]
    if "default_0.5" in t and "val_best_f1" in t:
        a, b = t["default_0.5"], t["val_best_f1"]
        s = (f"- **Recall.** At threshold 0.5 test recall is {a['recall']:.3f} (precision "
             f"{a['precision']:.3f}, F1 {a['f1']:.3f}); a threshold tuned on validation for F1 "
             f"(mean {b['threshold']:.2f}) gives recall {b['recall']:.3f}, precision "
             f"{b['precision']:.3f}, F1 {b['f1']:.3f}")
        if "val_recall_at_precision" in t:
            c = t["val_recall_at_precision"]
            s += (f"; tuned for recall at precision >= {paper_figure('Precision'):.3f} "
                  f"(mean {c['threshold']:.2f}) it gives "
                  f"recall {c['recall']:.3f} at precision {c['precision']:.3f}")
        gain = b["recall"] - a["recall"]
        if gain > RECALL_GAIN:
            s += f". A tuned threshold raises test recall by {gain:.3f}"
        else:
            s += f". The F1-tuned threshold does not raise test recall (change {gain:+.3f})"
        lines.append(s + ".")
    return "\n".join(lines) + "\n" if lines else "_No sweep results yet._\n"


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
    other = [s for s in SCORES if s != k][0]
    lines.append(f"The secondary score ({other}) has AUC "
                 f"{_fmt_ci(summary['report']['all'][other]['auc'], summary['report']['all'][other]['ci95']['auc'])} "
                 f"on all report scans (threshold {summary['report']['all'][other]['threshold']:.4g}).")
    chance = [s for s in SCORES if not np.isnan(_num(summary["report"]["all"][s]["ci95"]["auc"][0]))
              and _num(summary["report"]["all"][s]["ci95"]["auc"][0]) > 0.5]
    lines.append("Scores whose AUC is above chance (95% CI above 0.5): "
                 + (", ".join(chance) if chance else "none") + ".")
    return "\n".join(lines)


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
