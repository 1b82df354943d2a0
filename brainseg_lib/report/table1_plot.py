"""Table I as a dot plot (issue 26, item 2): one panel per metric, the value axis zoomed to
the data, our rows and the paper's own row ("Our" in the paper) on the left, the cited studies
apart on the right (labelled with first author and year, from their reference), the released
model's row marked, error bars from the table's 95% CI columns (``table1.ci_columns``: our
single runs' bootstrap CIs) and the sd over seeds, thinner, for a mean over seeds.

Three colours only: ours, the paper, the cited studies. The cited values come from other
datasets, splits and metric definitions; they are drawn as the paper printed them, apart, and
say "n/r" where a study reports nothing.
"""
from __future__ import annotations

import json
import math
import re

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D

from brainseg_lib import paths
from brainseg_lib.paper import PAPER_ROW

METRICS = ("F1", "IoU", "Precision", "Recall", "Specificity", "Accuracy")
COLOURS = {"ours": "#1f6fb4", "paper": "#d9730d", "cited": "#6e7781"}
MARKERS = {"ours": "o", "paper": "D", "cited": "s"}
OURS = re.compile(r"Ours: (?P<profile>\S+) profile, (?P<split>\S+) split, (?P<loss>[^,]+), "
                  r"(?P<data>[^,\[(]+?)(?: \[[^\]]*\])?(?P<sweep>, seed sweep)? \((?P<seeds>[^)]*)\)$")


def cited_label(study: str, reference) -> str:
    """"Qasem et al. 2019 [23]" from a cited row's reference ("S. N. Qasem et al., ..., 2019")."""
    ref = str(reference) if isinstance(reference, str) else ""
    years = re.findall(r"\b(?:19|20)\d\d\b", ref)
    authors = ref.split(",", 1)[0]
    names = [a.strip().split()[-1] for a in re.split(r"\band\b", authors.replace(" et al.", "")) if a.strip()]
    if not names:
        return study
    who = names[0] + (" et al." if "et al." in authors else "") if len(names) == 1 else " & ".join(names[:2])
    return f"{who} {years[-1] if years else ''} {study}".replace("  ", " ").strip()


def ours_label(study: str) -> str:
    """A Table I row of ours (``table1.run_label``) in a few words: "cpu · official · + healthy
    scans x1 · seed 0" (the loss only when not BCE+Dice; "mean of 3 seeds" for a seed mean)."""
    m = OURS.match(study)
    if not m:
        return study.removeprefix("Ours: ")
    seeds = m["seeds"]
    n = re.search(r"over (\d+) seeds", seeds)
    d = re.search(r"over (\d+) runs: (\d+) split draws", seeds)
    parts = [m["profile"], m["split"].replace("_", " ")]
    parts += [m["loss"]] if m["loss"] != "bce_dice" else []
    what = f"mean of {n[1]} seeds" if n else f"mean of {d[1]} runs, {d[2]} split draws" if d else seeds
    return " · ".join(parts + [m["data"], what])


def released_run(models_dir=None) -> str | None:
    """The run the released model comes from (``release.json``'s ``from_run``), None without it."""
    try:
        info = json.loads(((models_dir or paths.models_dir()) / "release.json").read_text())
        return str(info["from_run"])
    except (OSError, KeyError, ValueError):
        return None


def _rows(table: pd.DataFrame, released: str | None) -> list[dict]:
    """The rows in plotting order (the paper, ours, then the cited), each with its group,
    label, and whether it is the released model's."""
    out = []
    for _, r in table.iterrows():
        study = str(r["Study"])
        group = "paper" if study == PAPER_ROW else "ours" if study.startswith("Ours") else "cited"
        rel = bool(released) and group == "ours" and str(r.get("Runs", "")) == released and \
            "sweep" not in str(r.get("Reference", ""))
        label = {"paper": "Khadra et al. 2026 (the paper)",
                 "ours": ours_label(study) + (" \u2605 released model" if rel else ""),
                 "cited": cited_label(study, r.get("Reference"))}[group]
        out.append({"row": r, "group": group, "label": label, "released": rel})
    order = {"paper": 0, "ours": 1, "cited": 2}
    out.sort(key=lambda d: order[d["group"]])   # stable: the table's order within a group
    for i, d in enumerate(out):
        d["x"] = i + (1 if d["group"] == "cited" else 0)   # a gap before the cited studies
    return out


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _interval(r, metric: str) -> tuple[float, float, str] | None:
    """(low, high, kind) of the row's error bar: its 95% CI ("ci"), else ± sd over seeds ("sd")."""
    lo, hi = _num(r.get(f"{metric}_ci95_lo")), _num(r.get(f"{metric}_ci95_hi"))
    if not (math.isnan(lo) or math.isnan(hi)):
        return lo, hi, "ci"
    v, sd = _num(r.get(metric)), _num(r.get(f"{metric}_sd"))
    return (v - sd, v + sd, "sd") if not (math.isnan(v) or math.isnan(sd)) else None


def _limits(values: list[float]) -> tuple[float, float]:
    """The value axis zoomed to the data (with a margin), starting at 0 only if the data does."""
    lo, hi = min(values), max(values)
    pad = max(0.01, 0.08 * (hi - lo))
    return max(lo - pad, 0.0) if lo > 0 else lo - pad, min(hi + pad, max(hi, 1.0) + 0.005)


def _panel(ax, rows: list[dict], metric: str) -> None:
    seen = []
    for d in rows:
        r, g = d["row"], d["group"]
        v = _num(r.get(metric))
        if math.isnan(v):
            ax.text(d["x"], 0.02, "n/r", transform=ax.get_xaxis_transform(), ha="center", fontsize=9,
                    color=COLOURS["cited"])
            continue
        seen.append(v)
        bar = _interval(r, metric)
        if bar:
            lo, hi, kind = bar
            seen += [lo, hi]
            ax.errorbar([d["x"]], [v], yerr=[[v - lo], [hi - v]], fmt="none", ecolor=COLOURS[g],
                        elinewidth=1.6 if kind == "ci" else 0.8, capsize=4 if kind == "ci" else 0,
                        label=f"_{kind}:{d['label']}", zorder=2)
        ax.plot(d["x"], v, ls="none", marker="*" if d["released"] else MARKERS[g], zorder=3,
                ms=15 if d["released"] else 7, color=COLOURS[g], mec="black" if d["released"] else COLOURS[g])
        if g == "paper":
            right = max((e["x"] for e in rows if e["group"] == "ours"), default=d["x"])
            ax.plot([d["x"], right + 0.4], [v, v], color=COLOURS["paper"], ls=":", lw=1, zorder=1)
    if seen:
        ax.set_ylim(*_limits(seen))
    cited = [d["x"] for d in rows if d["group"] == "cited"]
    if cited:
        ax.axvspan(min(cited) - 0.6, max(cited) + 0.6, color="#f3f4f6", zorder=0)
    ax.set_title(metric, fontsize=12)
    ax.set_ylabel(f"{metric} (0-1)", fontsize=10)
    ax.grid(axis="y", color="#e5e7eb", lw=0.8)
    ax.tick_params(labelsize=9)


def _legend(fig) -> None:
    def dot(g, label, marker=None, ms=7, mec=None):
        return Line2D([], [], ls="none", marker=marker or MARKERS[g], ms=ms, color=COLOURS[g],
                      mec=mec or COLOURS[g], label=label)
    handles = [dot("paper", "the paper (dotted line: its value, for comparison)"),
               dot("ours", "our runs (pooled native-resolution TEST pixels)"),
               dot("ours", "the released model", "*", 14, "black"),
               dot("cited", "cited studies (other data and definitions; n/r: not reported)"),
               Line2D([], [], color="black", lw=1.6, marker="_", ms=10, label="bar: 95% bootstrap CI"),
               Line2D([], [], color="black", lw=0.8, label="thin bar: ± sd over seeds")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 0.0))


def table1_dot_plot(table: pd.DataFrame, metrics=METRICS, released: str | None = "auto"):
    """Table I (``table1.build_table1``) as a dot plot, one panel per metric in ``metrics``;
    ``released``: the released model's run name (default: ``release.json``'s; None: no mark)."""
    rows = _rows(table, released_run() if released == "auto" else released)
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.4 * nrows + 3.2), sharex=True,
                             squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.remove()
    for ax, metric in zip(axes.flat, metrics):
        _panel(ax, rows, metric)
    for ax in axes.flat[:len(metrics)]:
        ax.set_xticks([d["x"] for d in rows], [d["label"] for d in rows], rotation=90, fontsize=9)
        ax.set_xlim(-0.7, max(d["x"] for d in rows) + 0.7)
    fig.suptitle("Table I as a dot plot: the paper and our runs (left); the cited studies as the "
                 "paper printed them (right, shaded)", fontsize=12)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    _legend(fig)
    return fig


def error_bar_rows(ax) -> dict[str, list[str]]:
    """The rows with an error bar on a panel of ``table1_dot_plot``, by kind ("ci", "sd")."""
    out = {"ci": [], "sd": []}
    for c in ax.containers:
        kind, _, label = str(c.get_label()).lstrip("_").partition(":")
        if kind in out:
            out[kind].append(label)
    return out

