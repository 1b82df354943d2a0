"""The recorded table of the release lever trials: one row per training trial and per inference
lever (seed means over the seeds it ran), the tumour slices missed beside every F1 and Dice, and
the verdict (gain in combined score with its 95% CI, adopted or not)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from brainseg_lib.study import release_rule as rr

COLUMNS = {
    "tag": "trial", "lever": "lever", "seeds": "seeds", "val_f1": "VAL F1",
    "val_dice_image": "VAL Dice/image", "val_missed": "VAL missed",
    "healthy_marked": "healthy VAL marked",
    "lgg_pooled_f1": "LGG dev F1", "lgg_mean_dice_tumour": "LGG dev Dice (tumour)",
    "lgg_missed": "LGG dev missed", "lgg_clean_marked_share": "LGG dev clean marked",
    "figshare_pooled_f1": "Figshare dev F1", "figshare_mean_dice_tumour": "Figshare dev Dice (tumour)",
    "figshare_missed": "Figshare dev missed", "combined": "combined score",
    "gain": "gain vs against", "ci95": "95% CI", "verdict": "verdict",
}


def _verdict_text(v: dict | None, reference: bool = True) -> str:
    """A verdict in words; a trial without one is a ``reference`` (the round's first trial, or
    what another trial is judged against) or was not judged in this round (figures only)."""
    if v is None:
        return "reference" if reference else "not judged in this round (figures only)"
    if v.get("screened_out"):
        return "screened out (seed 0 gain < screen gain)"
    if v["adopted"]:
        return "adopted"
    failed = [k for k, ok in v["checks"].items() if not ok] + (
        ["all_seeds_of_release"] if v.get("all_seeds_of_release") is False else [])
    reach = v.get("beyond_reach")
    if rr.is_pending(v):
        return ("pending: passed the screen on seed 0; its other seeds are not trained yet "
                "(a run of the round's plan without --screen-only trains them), so no verdict")
    return "not adopted: " + ", ".join(failed) + (
        f" (seed 0 alone puts the seed mean of {', '.join(reach)} over its limit: other seeds not trained)"
        if reach else "")


def _is_reference(plan: dict, tag: str) -> bool:
    return tag == plan["trials"][0]["tag"] or any(t.get("against") == tag for t in plan["trials"])


def _row(tag: str, lever: str, plan: dict, v: dict | None, out_dir=None) -> dict:
    seeds = rr.seeds_of(tag, plan, out_dir)
    f = rr.arm_figures(tag, seeds, out_dir)
    row = {k: f.get(k, np.nan) for k in COLUMNS if k in f}
    for w in rr.EXTERNAL + ("val",):
        n = f.get(f"{w}_tumour_slices") if w != "val" else None
        if n is not None:
            row[f"{w}_missed"] = f"{f[f'{w}_missed']:.1f}/{int(n)}" if len(seeds) > 1 else f"{int(f[f'{w}_missed'])}/{int(n)}"
    has_ci = v is not None and "ci95" in v
    return {**row, "tag": tag, "lever": lever, "seeds": ",".join(map(str, seeds)),
            "gain": v["gain"] if has_ci else np.nan,
            "ci95": f"[{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]" if has_ci else "",
            "verdict": _verdict_text(v, _is_reference(plan, tag))}


def lever_table(plan: dict, decision: dict, out_dir=None) -> pd.DataFrame:
    rr.use_plan(plan)       # the plan's held-out sites, whatever plan was read before
    verdicts = {v["tag"]: v for v in decision.get("trials", [])}
    if "combined" in decision:
        verdicts[decision["combined"]["tag"]] = decision["combined"]
    rows = [_row(t["tag"], t.get("lever", ""), plan, verdicts.get(t["tag"]), out_dir)
            for t in plan["trials"] if rr.seeds_of(t["tag"], plan, out_dir)]
    for v in decision.get("inference", []):
        rows.append(_row(v["tag"], v["lever"], plan, v, out_dir))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def table_markdown(table: pd.DataFrame, source: str = "params/release_levers.yaml") -> str:
    head = ("| " + " | ".join(COLUMNS[c] for c in table.columns) + " |\n|"
            + "---|" * len(table.columns) + "\n")

    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:.3f}"
        return str(v)
    body = "\n".join("| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False))
    note = ("\nFigures are means over the seeds listed; `missed` counts tumour slices with no "
            "predicted pixel (seed mean / tumour slices). Combined score: the mean over the LGG and "
            "Figshare dev halves of (pooled F1 + mean Dice on tumour slices) / 2 minus the share of "
            f"clean slices marked ({source}). The CI resamples seeds, LGG patients "
            "and Figshare blocks. TEST and the external test halves were not read.\n")
    return head + body + "\n" + note
