"""The rule of ``params/release_levers.yaml`` applied to the trials' per-slice files.

``arm_sums``: per seed, the per-unit sums of the LGG and Figshare dev halves (units: LGG
patients, Figshare blocks). ``paired_gain``: the gain in combined score of one arm over
another with a 95% CI from a bootstrap that draws, in each replicate, the units of each set
once for both arms (paired) and each arm's seeds with replacement. ``screen`` and ``decide``
follow the plan's comments word for word; ``lever_table`` is the recorded table, one row per
trial or inference lever (seed means), with the tumour slices missed beside every F1 and Dice.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from brainseg_lib.study.release_levers import folder, per_slice_path, trial
from brainseg_lib.study.release_scoring import SUM_COLUMNS, set_figures, unit_sums

EXTERNAL = ("lgg", "figshare")
COMBINED = "combined"


def seeds_of(tag: str, plan: dict, out_dir=None) -> list[int]:
    return [s for s in plan["seeds"]
            if all(per_slice_path(tag, s, w, out_dir).is_file() for w in ("val", "healthy", *EXTERNAL))]


HELD_OUT_SITES: tuple[str, ...] = ()


def site_of(patient: str) -> str:
    """The acquisition site of a TCGA-LGG patient (``TCGA_DU_5853_19950823`` -> ``DU``)."""
    parts = str(patient).split("_")
    return parts[1] if len(parts) > 2 and parts[0] == "TCGA" else ""


def read(tag: str, seed: int, which: str, out_dir=None, held_out=None) -> pd.DataFrame:
    """One per-slice file; LGG rows of the held-out sites (the plan's ``lgg_held_out_sites``,
    set by ``use_plan``) are left out."""
    df = pd.read_csv(per_slice_path(tag, seed, which, out_dir))
    held = HELD_OUT_SITES if held_out is None else tuple(held_out)
    if which == "lgg" and held:
        df = df[~df["unit"].map(site_of).isin(held)].reset_index(drop=True)
    return df


def use_plan(plan: dict) -> None:
    """Take the plan's held-out LGG sites for every later ``read``."""
    global HELD_OUT_SITES
    HELD_OUT_SITES = tuple((plan.get("rule") or {}).get("lgg_held_out_sites") or ())


def arm_sums(tag: str, seeds, out_dir=None) -> dict[str, tuple[list[str], np.ndarray]]:
    """{set: (units, sums (n_seeds, n_units, len(SUM_COLUMNS)))} for LGG and Figshare dev."""
    out = {}
    for which in EXTERNAL:
        tables = [unit_sums(read(tag, s, which, out_dir)) for s in seeds]
        units = list(tables[0].index)
        out[which] = (units, np.stack([t.loc[units, list(SUM_COLUMNS)].to_numpy(float) for t in tables]))
    return out


def combined_score(per_set: dict[str, np.ndarray]) -> np.ndarray:
    """The plan's combined score from each set's summed columns (any leading shape)."""
    return np.mean([set_figures(per_set[w])["score"] for w in EXTERNAL], axis=0)


def paired_gain(tag: str, against: str, seeds_a, seeds_b, n_boot: int = 2000, seed: int = 0,
                out_dir=None) -> dict:
    """Gain in combined score of ``tag`` over ``against`` (seed means) with its 95% CI."""
    a, b = arm_sums(tag, seeds_a, out_dir), arm_sums(against, seeds_b, out_dir)
    point = (combined_score({w: a[w][1].sum(1) for w in EXTERNAL}).mean()
             - combined_score({w: b[w][1].sum(1) for w in EXTERNAL}).mean())
    rng = np.random.default_rng(seed)
    weights = {w: rng.multinomial(len(a[w][0]), np.full(len(a[w][0]), 1 / len(a[w][0])), size=n_boot)
               for w in EXTERNAL}

    def boot_scores(arm, n_seeds):
        per_seed = combined_score({w: np.einsum("bu,muk->bmk", weights[w], arm[w][1]) for w in EXTERNAL})
        draws = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
        return np.take_along_axis(per_seed, draws, axis=1).mean(1)
    diff = boot_scores(a, len(seeds_a)) - boot_scores(b, len(seeds_b))
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return {"gain": float(point), "ci95": [float(lo), float(hi)], "n_boot": n_boot,
            "seeds": list(seeds_a), "seeds_against": list(seeds_b)}


def arm_figures(tag: str, seeds, out_dir=None) -> dict:
    """Seed means of every figure of the table (VAL, healthy VAL, each external dev half)."""
    rows = []
    for s in seeds:
        val, healthy = read(tag, s, "val", out_dir), read(tag, s, "healthy", out_dir)
        tp, fp, fn = (val[k].sum() for k in ("tp", "fp", "fn"))
        row = {"val_f1": 2 * tp / (2 * tp + fp + fn), "val_dice_image": val["dice"].mean(),
               "val_missed": int((val["tumour"] & ~val["marked"]).sum()),
               "healthy_marked": healthy["marked"].mean()}
        per_set = {}
        for w in EXTERNAL:
            df = read(tag, s, w, out_dir)
            per_set[w] = unit_sums(df)[list(SUM_COLUMNS)].to_numpy(float).sum(0)
            f = set_figures(per_set[w])
            row.update({f"{w}_{k}": float(v) for k, v in f.items()})
            row[f"{w}_missed"] = int(per_set[w][SUM_COLUMNS.index("missed_t")])
            row[f"{w}_tumour_slices"] = int(per_set[w][SUM_COLUMNS.index("n_t")])
        row[COMBINED] = float(combined_score(per_set))
        rows.append(row)
    means = pd.DataFrame(rows).mean().to_dict()
    return {**means, "n_seeds": len(rows), "seeds": list(seeds)}


def screen(plan: dict, tag: str, out_dir=None) -> bool:
    """Whether ``tag``'s seed 0 beats its ``against``'s seed 0 by the plan's screen gain."""
    use_plan(plan)
    t, first = trial(plan, tag), plan["seeds"][0]
    if t.get("against") is None:
        return True
    mine, theirs = arm_figures(tag, [first], out_dir), arm_figures(t["against"], [first], out_dir)
    return mine[COMBINED] - theirs[COMBINED] >= plan["rule"]["screen_gain"]


LIMITS = (("healthy_marked", "max_healthy_marked"), ("lgg_clean_marked_share", "max_lgg_clean_marked"))


def beyond_reach(plan: dict, tag: str, out_dir=None) -> list[str]:
    """The absolute limits (on seed means) that the seeds already run break whatever the missing
    seeds give (their sum alone exceeds limit x number of seeds; shares are never below 0): such
    a trial cannot be adopted, so its missing seeds are not trained."""
    use_plan(plan)
    seeds = seeds_of(tag, plan, out_dir)
    n, rule = len(plan["seeds"]), plan["rule"]
    out = []
    for figure, limit in LIMITS:
        if rule.get(limit) is None:
            continue
        total = sum(arm_figures(tag, [s], out_dir)[figure] for s in seeds)
        if total > rule[limit] * n:
            out.append(figure)
    return out


def limit_checks(rule: dict, fa: dict, fb: dict) -> dict[str, bool]:
    """The false-alarm limits of the rule on the seed means ``fa`` of a trial against ``fb``
    of its ``against``: absolute (``max_<figure>``) and as a rise (``max_<figure>_rise``); a
    limit the rule leaves out (None) passes."""
    out = {}
    for (figure, limit), name in zip(LIMITS, ("healthy_marked", "lgg_clean_marked")):
        absolute, rise = rule.get(limit), rule.get(limit + "_rise")
        out[name] = ((absolute is None or fa[figure] <= absolute)
                     and (rise is None or fa[figure] <= fb[figure] + rise))
    return out


def verdict(plan: dict, tag: str, against: str, out_dir=None, require_all_seeds: bool = True) -> dict:
    """The plan's step-2 verdict on ``tag`` against ``against``."""
    use_plan(plan)
    rule = plan["rule"]
    sa, sb = seeds_of(tag, plan, out_dir), seeds_of(against, plan, out_dir)
    # the limits compare seed means over the same seeds (a one-seed trial against the
    # reference's same seed, not its mean over three); the CI below uses every seed of each
    same = [s for s in sa if s in sb] or sb
    fa, fb = arm_figures(tag, sa, out_dir), arm_figures(against, same, out_dir)
    g = paired_gain(tag, against, sa, sb, int(rule.get("n_boot", 2000)), out_dir=out_dir)
    checks = {"all_seeds": len(sa) == len(plan["seeds"]) or not require_all_seeds,
              "ci_above_0": g["ci95"][0] > 0,
              "val_f1": fa["val_f1"] >= fb["val_f1"] - rule["max_val_f1_loss"],
              **limit_checks(rule, fa, fb)}
    out = {"tag": tag, "against": against, **g, "checks": checks, "adopted": all(checks.values())}
    if not checks["all_seeds"]:
        out["beyond_reach"] = beyond_reach(plan, tag, out_dir)
    return out


def is_pending(v: dict) -> bool:
    """A verdict that passed the screen but lacks seeds, none of its limits already out of reach:
    no verdict yet (``release_table`` and the round list say so, not "not adopted")."""
    checks = v.get("checks") or {}
    return not v.get("adopted") and checks.get("all_seeds") is False and not v.get("beyond_reach")


def decide(plan: dict, out_dir=None) -> dict:
    """Every trial's verdict (those whose screen failed are reported as screened out) and the
    training levers adopted."""
    use_plan(plan)
    out = {"trials": [], "adopted": [], "lgg_held_out_sites": list(HELD_OUT_SITES)}
    for t in plan["trials"]:
        if t.get("against") is None or not seeds_of(t["tag"], plan, out_dir):
            continue
        if not screen(plan, t["tag"], out_dir):
            out["trials"].append({"tag": t["tag"], "against": t["against"], "adopted": False,
                                  "screened_out": True})
            continue
        v = verdict(plan, t["tag"], t["against"], out_dir)
        out["trials"].append(v)
        if v["adopted"]:
            out["adopted"].append(t["tag"])
    return out
