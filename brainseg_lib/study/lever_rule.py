"""The rule that says which lever trials the cpu profile may be built from, as code
(``levers.yaml``'s ``rule``).

Each trial names the trial it changes one thing of (``against``). Its external ``dev`` score is
pooled F1 + mean Dice on tumour slices - share of clean slices marked (``dev_score``). A trial
passes when, against its base, it

* raises the dev score by at least ``min_score_gain``, and
* costs Br35H VAL F1 no more than ``max_val_f1_loss``;

and a profile may be kept only when every trial on its chain (the trial whose settings it has,
then that trial's base, and so on) passes, and its trial marks at most ``max_healthy_marked`` of
the healthy VAL scans. The rule reads VAL, the healthy VAL scans and the external ``dev`` half
only, as the lever table does. It was written down after the trials had run (a post-hoc rule),
and it decides which levers may be kept, not which of two passing alternatives is (the README
gives that reason: training time as a cost; ``allowed`` lists every trial the rule would allow
as a profile). Time is never a limit in it. The VAL F1 limit applies per step; the profile's
change from the first trial is reported beside it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

RULE_KEYS = ("min_score_gain", "max_val_f1_loss", "max_healthy_marked")
PASSING = ("passes", "first trial")     # the verdicts a trial on a kept chain may have
SETTING_KEYS = ("image_size", "healthy_ratio", "input_norm", "augment_level")
RULE_COLUMNS = {"tag": "trial", "against": "against", "dev_score": "ext dev score",
                "score_gain": "score gain", "val_f1_change": "VAL F1 change",
                "healthy_val_marked": "healthy VAL marked", "verdict": "rule", "in_profile": "in profile"}


def rule_of(plan: dict) -> dict:
    """The plan's ``rule`` block, checked: every key present, each a number."""
    rule = plan.get("rule") or {}
    missing = [k for k in RULE_KEYS if not isinstance(rule.get(k), (int, float))]
    if missing:
        raise ValueError(f"params/levers.yaml: the rule lacks {', '.join(missing)} "
                         f"(give each as a number under 'rule:')")
    return {k: float(rule[k]) for k in RULE_KEYS}


def dev_score(table: pd.DataFrame) -> pd.Series:
    """External dev score per trial: pooled F1 + mean Dice on tumour slices - clean slices marked."""
    return table["ext_dev_pooled_f1"] + table["ext_dev_mean_dice"] - table["ext_dev_clean_marked"]


def verdict(gain: float, val_change: float, rule: dict) -> str:
    """'passes', or 'fails: ...' naming each condition it misses (gain and VAL F1 change against
    the trial's base)."""
    if np.isnan(gain) or np.isnan(val_change):
        return "not scored"
    misses = []
    if gain < rule["min_score_gain"] - 1e-12:
        misses.append(f"score gain {gain:+.3f} < {rule['min_score_gain']:g}")
    if val_change < -rule["max_val_f1_loss"] - 1e-12:
        misses.append(f"VAL F1 {val_change:+.3f} < -{rule['max_val_f1_loss']:g}")
    return "passes" if not misses else "fails: " + "; ".join(misses)


def check_plan(plan: dict) -> dict[str, str | None]:
    """Each trial's base by tag, checked: only the first trial has none, and every other names
    an earlier trial (so no trial passes without a comparison, and chains end at the first)."""
    against, seen = {}, []
    for i, t in enumerate(plan["trials"]):
        base = t.get("against")
        if (i == 0) != (base is None) or (base is not None and base not in seen):
            raise ValueError(f"params/levers.yaml: trial {t['tag']!r} must name an earlier trial in 'against'"
                             if i else f"params/levers.yaml: the first trial {t['tag']!r} has no base; "
                             "remove its 'against'")
        against[t["tag"]] = base
        seen.append(t["tag"])
    return against


def chain(tag: str, against: dict[str, str | None]) -> list[str]:
    """The trial and its bases, back to the first trial (which has none)."""
    out = []
    while tag is not None:
        if tag in out or tag not in against:
            raise ValueError(f"params/levers.yaml: 'against' of {out[-1] if out else tag} names "
                             f"{tag!r}, which is not an earlier trial")
        out.append(tag)
        tag = against[tag]
    return out


def profile_trial(table: pd.DataFrame, profile: dict) -> str | None:
    """The trial whose settings (size, healthy ratio, input norm, augmentation) the profile has."""
    for row in table.itertuples(index=False):
        if all(getattr(row, k) == profile.get(k) for k in SETTING_KEYS):
            return row.tag
    return None


def apply_rule(table: pd.DataFrame, plan: dict, profile: dict) -> tuple[pd.DataFrame, dict]:
    """The rule table (one row per finished trial: its base, dev score, gain, VAL F1 change,
    verdict and whether the profile's chain holds it) and the profile's check: its trial, its
    chain, whether every trial on it passes and whether it marks few enough healthy VAL scans."""
    rule = rule_of(plan)
    against = check_plan(plan)
    t = table.set_index("tag")
    score, rows = dev_score(t), []
    p_tag = profile_trial(table, profile)
    p_chain = chain(p_tag, against) if p_tag else []
    for tag in t.index:
        base = against.get(tag)
        gain = score[tag] - score[base] if base in t.index else np.nan
        change = t.loc[tag, "val_f1"] - t.loc[base, "val_f1"] if base in t.index else np.nan
        rows.append({"tag": tag, "against": base or "", "dev_score": score[tag], "score_gain": gain,
                     "val_f1_change": change, "healthy_val_marked": t.loc[tag, "healthy_val_marked"],
                     "verdict": "first trial" if base is None else verdict(gain, change, rule),
                     "in_profile": "yes" if tag in p_chain else ""})
    out = pd.DataFrame(rows, columns=list(RULE_COLUMNS))
    ok = set(out.loc[out["verdict"].isin(PASSING), "tag"])
    marked = float(t.loc[p_tag, "healthy_val_marked"]) if p_tag else np.nan
    marked = None if np.isnan(marked) else marked
    check = {"profile_trial": p_tag, "chain": p_chain, "rule": rule,
             "chain_passes": bool(p_chain) and set(p_chain) <= ok,
             "healthy_val_marked": marked,
             "healthy_ok": marked is not None and marked <= rule["max_healthy_marked"]}
    check["kept"] = check["chain_passes"] and check["healthy_ok"]
    first = table["tag"].iloc[0] if len(table) else None
    check["val_f1_change_from_first"] = (float(t.loc[p_tag, "val_f1"] - t.loc[first, "val_f1"])
                                         if p_tag and first else None)
    check["allowed"] = allowed(ok, t, against, rule)
    return out, check


def allowed(ok: set[str], t: pd.DataFrame, against: dict, rule: dict) -> list[str]:
    """Every trial the rule would allow as a profile: its whole chain is in ``ok`` (the trials
    that pass) and it marks at most ``max_healthy_marked`` of the healthy VAL scans (``t``:
    the lever table by tag)."""
    return [tag for tag in t.index if set(chain(tag, against)) <= ok
            and t.loc[tag, "healthy_val_marked"] <= rule["max_healthy_marked"]]


def _signed(v) -> str:
    return "not scored" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:+.3f}"


def rule_markdown(rules: pd.DataFrame, check: dict, profile_name: str) -> str:
    """The rule table as Markdown, with a sentence that states the rule and the profile's check."""
    r = check["rule"]
    head = ("| " + " | ".join(RULE_COLUMNS.values()) + " |\n|" + "---|" * len(RULE_COLUMNS) + "\n")

    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:+.3f}" if v < 0 else f"{v:.3f}"
        return str(v)
    body = "\n".join("| " + " | ".join(cell(v) for v in row) + " |" for row in rules.itertuples(index=False))
    chain_text = " <- ".join(check["chain"]) if check["chain"] else "none"
    marked = "not scored" if check["healthy_val_marked"] is None else f"{check['healthy_val_marked']:.3f}"
    sentence = (f"The rule (`params/levers.yaml`, applied by `study/lever_rule.py`): a trial passes when, "
                f"against the trial it changes (`against`), it raises the ext dev score (F1 + Dice on "
                f"tumour slices - clean slices marked) by at least {r['min_score_gain']:g} and costs "
                f"VAL F1 no more than {r['max_val_f1_loss']:g}; a profile may be kept when every trial "
                f"on its chain passes and it marks at most {r['max_healthy_marked'] * 100:g}% of the healthy "
                f"VAL scans. The `{profile_name}` profile is trial {check['profile_trial'] or 'none'} "
                f"(chain {chain_text}); every trial on it passes: {'yes' if check['chain_passes'] else 'no'}; "
                f"healthy VAL marked {marked}: {'within' if check['healthy_ok'] else 'not within'} the limit; "
                f"VAL F1 change from the first trial {_signed(check['val_f1_change_from_first'])}. "
                f"Trials the rule allows as a profile: {', '.join(check['allowed']) or 'none'} (the README "
                f"says how the profile was chosen among them).")
    return head + body + "\n\n" + sentence + "\n"
