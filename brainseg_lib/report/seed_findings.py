"""The seed-and-split findings of notebook 08, written from data: each 'A scores higher than
B' sentence rests on the hierarchical-bootstrap CI of ``study/verdicts.py`` (seeds x
near-duplicate groups), never on a gap between means or a multiple of a seed sd; the
within-TEST contrast; the recall answer; the README's seeds headline.
"""
from __future__ import annotations

from brainseg_lib.paper import paper_figure


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


def runs_words(x: dict) -> str:
    """What a side's mean ± sd is over: '3 seeds', or '5 split draws x 3 seeds' for a side
    trained on several draws of the grouped split (``n_seeds`` counts its runs)."""
    n, d = int(x["n_seeds"]), int(x.get("n_draws") or 1)
    if d > 1:
        return f"{d} split draws × {n // d} seeds" if n % d == 0 else f"{n} runs over {d} split draws"
    return f"{n} seed" + ("s" if n != 1 else "")


def _seed_means(rep: dict) -> str:
    """What the recall figures are: means over the official split's seeds (a released model's
    own figures differ from them)."""
    n = (rep.get("official") or {}).get("n_seeds")
    return f"means over the {n} seeds of the official split" if n else "means over seeds"


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
    grouped = c.get("official_minus_grouped_first_draw") or c.get("official_minus_grouped")
    before, after = _side(grouped), _side(c.get("official_minus_grouped_strict"))
    return None if None in (before, after) else before == after


def _first_draw(rep: dict) -> str:
    """' (its first draw, split seed 0, drawn once like the stricter split)' when the grouped
    split was drawn several times: the comparisons with the stricter split use that draw."""
    n = int((rep.get("grouped") or {}).get("n_draws") or 1)
    return " (its first draw, split seed 0: the stricter split is drawn once)" if n > 1 else ""


def _strict_sentence(rep: dict, holds: bool | None) -> str:
    """The stricter grouped split's F1 against the grouped and the official split's, and whether
    the official-vs-grouped verdict survives it (``holds``: ``strict_verdict_holds``)."""
    from brainseg_lib.data.duplicates import STRICT_CORR_THRESHOLD as CORR
    from brainseg_lib.data.duplicates import STRICT_PHASH_THRESHOLD as PHASH
    x, c = rep["grouped_strict"], rep.get("contrasts") or {}
    seeds = runs_words(x)
    s = (f"- **A stricter grouped split.** Linking images also at thumbnail correlation >= {CORR:.2f} or "
         f"pHash distance <= {PHASH} (notebook 07), test F1 is {plus_minus(x['f1_mean'], x['f1_sd'])} "
         f"(mean ± sd over {seeds}). Against the other two splits, ")
    gx, ox = rep.get("grouped_minus_grouped_strict_f1"), rep.get("official_minus_grouped_strict_f1")
    s += ("there is no grouped figure" if gx is None else
          _verdict(c.get("grouped_minus_grouped_strict"), "the grouped split" + _first_draw(rep),
                   "the stricter one", gx))
    if ox is not None:
        s += ("; and for the official split against the stricter one, "
              + _verdict(c.get("official_minus_grouped_strict"), "the official split", "the stricter one", ox))
        if holds is not None:
            s += (". The official-vs-grouped verdict" + _first_draw(rep).replace(" (its", " (on the grouped split's")
                  + " holds at the stricter thresholds" if holds else
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
    return ("- **Seeds and leakage:** F1 " + ", ".join(f"{plus_minus(r['f1_mean'], r['f1_sd'])} {w}" for r, w in splits)
            + " (mean ± sd over " + _over([r for r, _ in splits]) + ").")


def _over(sides: list[dict]) -> str:
    """'3 and 3 seeds', or '3 seeds and 5 split draws × 3 seeds' where a side has draws."""
    if all(int(r.get("n_draws") or 1) == 1 for r in sides):
        n = [str(r["n_seeds"]) for r in sides]
        return ", ".join(n[:-1]) + " and " + n[-1] + " seeds"
    w = [runs_words(r) for r in sides]
    return ", ".join(w[:-1]) + " and " + w[-1]


def findings_markdown(rep: dict) -> str:
    """Sentences stating what holds and what does not, generated from the numbers."""
    o, g = rep["official"], rep["grouped"]
    lines, holds = [], strict_verdict_holds(rep)
    if rep["official_minus_grouped_f1"] is not None:
        d = rep["official_minus_grouped_f1"]
        lines.append(
            f"- **Leakage.** Test F1 is {plus_minus(o['f1_mean'], o['f1_sd'])} on the official split and "
            f"{plus_minus(g['f1_mean'], g['f1_sd'])} on the near-duplicate-free grouped split "
            f"(mean ± sd over {_over([o, g])}): "
            + _verdict((rep.get("contrasts") or {}).get("official_minus_grouped"),
                       "the official (leaky) split", "the grouped split", d)
            + (". The TEST sets hold different images (one per draw of the grouped split), so part of a gap can "
               "be difficulty rather than leakage; " if int(g.get("n_draws") or 1) > 1 else
               ". The two TEST sets hold different images, so part of a gap can be difficulty "
               "rather than leakage; ")
            + ("the next point, a stricter grouped split, says which figure to quote for unseen patients' slices"
               if holds is False else
               "the grouped figure is the one to quote for unseen patients' slices") + "."
            + _near_miss_sentence(rep.get("grouped_near_misses"),
                                  "grouped" + (" (first draw)" if int(g.get("n_draws") or 1) > 1 else "")))
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
        s = (f"- **Recall** ({_seed_means(rep)}). At threshold 0.5 test recall is {a['recall']:.3f} "
             f"(precision {a['precision']:.3f}, F1 {a['f1']:.3f}); a threshold tuned on validation for F1 "
             f"(mean {b['threshold']:.2f}) gives recall {b['recall']:.3f}, precision "
             f"{b['precision']:.3f}, F1 {b['f1']:.3f}")
        if "val_recall_at_precision" in t:
            c = t["val_recall_at_precision"]
            s += (f"; the threshold with the highest validation recall whose validation precision "
                  f"reaches the paper's {paper_figure('Precision'):.3f} (mean {c['threshold']:.2f}) gives "
                  f"recall {c['recall']:.3f} at precision {c['precision']:.3f}"
                  + (": the precision floor raises the threshold, so recall falls"
                     if c["recall"] < a["recall"] else ""))
        gain = b["recall"] - a["recall"]
        if gain > RECALL_GAIN:
            s += f". A tuned threshold raises test recall by {gain:.3f}"
        else:
            s += f". The F1-tuned threshold does not raise test recall (change {gain:+.3f})"
        lines.append(s + ".")
    return "\n".join(lines) + "\n" if lines else "_No sweep results yet._\n"
