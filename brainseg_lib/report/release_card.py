"""Words and tables about the released model, generated from ``results/metrics/release_eval.json``
(``study.release_eval``): the summary table of every set, the breakdowns by site and type, and
the plain statement of where the model should not be used. Notebook 10, the model card, the
README headline and ``predict --help`` all read these, so no figure is typed by hand."""
from __future__ import annotations

import json
from pathlib import Path

from brainseg_lib import paths

ROWS = (("br35h_test", None, "Br35H TEST (official split)"),
        ("lgg", "test", "TCGA-LGG FLAIR, test half"), ("lgg", "dev", "TCGA-LGG FLAIR, dev half"),
        ("figshare", "test", "Figshare T1 contrast-enhanced, test half"),
        ("figshare", "dev", "Figshare T1 contrast-enhanced, dev half"),
        ("lgg_held_out_sites", None, "TCGA-LGG held-out site(s), both halves"))
FAIL_DICE = 0.55          # a group whose mean tumour Dice is below this is named as a failure
FAIL_MISSED = 0.25        # ... or whose share of tumour slices missed is above this


def load(path=None) -> dict | None:
    path = path or paths.metrics_dir() / "release_eval.json"
    return json.loads(path.read_text()) if path.is_file() else None


def from_study_run(models_dir=None) -> bool:
    """Whether the released model is the study's cpu run (``release.json``'s ``from_run``), not a
    trial a round of lever trials adopted (``from_plan``); True without a release.json."""
    path = Path(models_dir or paths.models_dir()) / "release.json"
    return not path.is_file() or "from_plan" not in json.loads(path.read_text())


def _ci(s: dict, key: str) -> str:
    ci = (s.get("ci95_by_patient") or {}).get(key)
    v = s.get(key)
    if v is None:
        return "n/a"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else f"{v:.3f}"


def _part(ev: dict, key: str, half: str | None) -> dict | None:
    part = ev.get(key)
    if part is None or "skipped" in (part or {}):
        return None
    return part.get(half) if half else part


def release_summary_table(ev: dict) -> str:
    head = ("| set | pooled F1 | mean Dice, tumour slices | tumour slices missed | clean slices marked |\n"
            "|---|---|---|---|---|\n")
    rows = []
    for key, half, label in ROWS:
        s = _part(ev, key, half)
        if not s:
            continue
        clean = f"{s['clean_marked']} of {s['n_clean_slices']}" if s.get("n_clean_slices") else "(no clean slices)"
        rows.append(f"| {label} | {_ci(s, 'pooled_f1')} | {_ci(s, 'mean_dice_tumour')} | "
                    f"{s['tumour_slices_missed']} of {s['n_tumour_slices']} ({s['missed_share']:.0%}) | {clean} |")
    h = ev.get("healthy_report") or {}
    if h:
        lo, hi = h["ci95_wilson"]
        rows.append(f"| Br35H healthy report scans (no tumour) | | | | {h['marked']} of {h['n_scans']} "
                    f"({h['marked_share']:.1%}, CI {lo:.1%} to {hi:.1%}) |")
    return head + "\n".join(rows) + "\n\nCIs: 95%, resampling near-duplicate groups (Br35H), patients (LGG) or index blocks (Figshare).\n"


def breakdown_table(groups: dict, title: str) -> str:
    head = f"| {title} | tumour slices | pooled F1 | mean Dice, tumour slices | missed |\n|---|---|---|---|---|\n"
    rows = [f"| {k} | {s['n_tumour_slices']} | {_ci(s, 'pooled_f1')} | {_ci(s, 'mean_dice_tumour')} | "
            f"{s['tumour_slices_missed']} ({(s['missed_share'] or 0):.0%}) |" for k, s in groups.items()]
    return head + "\n".join(rows) + "\n"


def failing_groups(ev: dict) -> list[tuple[str, dict]]:
    """(label, figures) of every test-half group (type, site, size quartile) that fails."""
    labels = {"Figshare types": "{} tumours (Figshare T1 contrast-enhanced)", "TCGA-LGG sites": "TCGA-LGG site {}",
              "TCGA-LGG size quartiles": "TCGA-LGG tumour-size quartile {}",
              "Figshare size quartiles": "Figshare tumour-size quartile {}"}
    by_of = {kind: (key, by) for key, by, kind in KINDS}
    return [(labels[kind].format(n), _part(ev, by_of[kind][0], "test")[by_of[kind][1]][n])
            for kind, names in failing_kinds(ev).items() for n in names]


KINDS = (("figshare", "by_label", "Figshare types"), ("figshare", "by_size_quartile", "Figshare size quartiles"),
         ("lgg", "by_site", "TCGA-LGG sites"), ("lgg", "by_size_quartile", "TCGA-LGG size quartiles"))


def failing_kinds(ev: dict) -> dict[str, list[str]]:
    """{kind: failing names} over the test halves, e.g. {"TCGA-LGG sites": ["DU"]}."""
    out = {}
    for key, by, kind in KINDS:
        for name, s in ((_part(ev, key, "test") or {}).get(by) or {}).items():
            dice, missed = s.get("mean_dice_tumour"), s.get("missed_share")
            if dice is not None and (dice < FAIL_DICE or (missed or 0) > FAIL_MISSED):
                out.setdefault(kind, []).append(name)
    return out


def where_it_fails(ev: dict) -> str:
    """The plain statement of where the released model should not be used."""
    lines = [f"The released model ({ev['image_size']}x{ev['image_size']} input) should **not** be relied on for:"]
    for label, s in failing_groups(ev):
        lines.append(f"- {label}: mean Dice {s['mean_dice_tumour']:.2f} on tumour slices, "
                     f"{s['tumour_slices_missed']} of {s['n_tumour_slices']} tumour slices missed")
    if len(lines) == 1:
        lines.append(f"- (no test-half group falls below mean Dice {FAIL_DICE} or above "
                     f"{FAIL_MISSED:.0%} missed)")
    lines.append(f"\nA group fails here when its mean Dice on tumour slices is below {FAIL_DICE} or more "
                 f"than {FAIL_MISSED:.0%} of its tumour slices get no prediction. Beyond these sets it "
                 "was never validated: not on sequences other than those here (Br35H: not stated by its "
                 "source; TCGA-LGG: FLAIR; Figshare: T1 with contrast), not on children's scans, not in "
                 "3-D, and not for clinical use; it is a research model.")
    return "\n".join(lines)


def headline_facts(ev: dict) -> dict:
    """The figures the README headline and ``predict --help`` quote."""
    out = {}
    for key in ("lgg", "figshare"):
        s = _part(ev, key, "test")
        if s:
            out[key] = {"pooled_f1": s["pooled_f1"], "mean_dice_tumour": s["mean_dice_tumour"],
                        "missed": s["tumour_slices_missed"], "n_tumour": s["n_tumour_slices"],
                        "missed_share": s["missed_share"]}
    return out


def headline_line(ev: dict) -> str | None:
    """The README headline's line on other scanners: the miss rate first, then the overlap."""
    parts = []
    for key, label in (("lgg", "TCGA-LGG FLAIR (4 TCGA sites)"), ("figshare", "Figshare T1 contrast-enhanced")):
        s = _part(ev, key, "test")
        if not s:
            continue
        median = (s.get("dice_quantiles_tumour") or {}).get("0.5")
        parts.append(f"{label}: **{s['tumour_slices_missed']} of {s['n_tumour_slices']} tumour slices "
                     f"({s['missed_share']:.0%}) get no prediction at all**, median Dice per tumour slice "
                     f"{median:.2f}, pooled F1 {s['pooled_f1']:.3f}, mean Dice on tumour slices "
                     f"{s['mean_dice_tumour']:.3f}")
    if not parts:
        return None
    fails = "; ".join(f"{kind} {', '.join(names)}" for kind, names in failing_kinds(ev).items())
    return ("- **Other scanners and sequences (released model, external test halves, scored once):** "
            + "; ".join(parts) + ". It fails (mean Dice < " + f"{FAIL_DICE} or > {FAIL_MISSED:.0%} missed) on: "
            + (fails or "no group")
            + " (notebook 10, `results/models/MODEL_CARD.md`).")


def volumes_markdown(vol: dict | None) -> str:
    """The per-patient 3-D figures of ``results/metrics/external_volumes.json`` in one paragraph."""
    if not vol:
        return "_Per-patient volumes not scored yet: `python -m brainseg_lib score-volumes`._\n"
    d, e = vol["dice"], vol["abs_volume_error_voxels"]
    buda = (vol.get("cited") or {}).get("buda2019") or {}
    return (f"**Per patient, in 3-D** ({vol['n_patients']} TCGA-LGG test volumes, {vol['n_slices']} slices, "
            f"read through `predict` as a user would): Dice median {d['median']:.3f} (95% CI "
            f"{d['median_ci95'][0]:.3f} to {d['median_ci95'][1]:.3f}), mean {d['mean']:.3f}, quartiles "
            f"{d['q1']:.3f} and {d['q3']:.3f}; absolute volume error median {e['median']:,.0f} voxels "
            f"(voxel spacing {vol['spacing']}). Buda et al. 2019 report {buda.get('figure', 'a mean Dice of about 0.82')} "
            f"({buda.get('status', 'cited')}; {buda.get('caveat', '')}). The goal of a median of at least "
            f"{vol['target_median_dice']:.2f} is {'met' if vol['meets_target'] else 'not met'}.\n")


def detection_markdown(ev: dict) -> str:
    """A paragraph on image-level detection by the released file with its own settings
    (``release_eval.detection``): both operating points chosen on validation, on the report scans."""
    d = ev.get("detection") or {}
    if "report_at_fixed_sensitivity" not in d:
        return f"**Detection** (tumour yes/no per scan): not measured ({d.get('skipped', 'no figures')}).\n"
    k = d["primary_score"]
    y, f = d["report"]["all"][k], d["report_at_fixed_sensitivity"]["all"][k]

    def point(m):
        ci = m["ci95"]
        return (f"sensitivity {m['sensitivity']:.3f} [{ci['sensitivity'][0]:.3f}, {ci['sensitivity'][1]:.3f}], "
                f"specificity {m['specificity']:.3f} [{ci['specificity'][0]:.3f}, {ci['specificity'][1]:.3f}]")
    limit = f", the first {d['limit_per_class']} per class" if d.get("limit_per_class") else ""
    return (f"**Detection** (tumour yes/no per scan, by the released file with its settings; score: "
            f"{d['scores'][k]}; {y['positives']} unseen tumour scans and {y['negatives']} unseen "
            f"tumour-free scans of Br35H{limit}; thresholds chosen on VAL and the healthy VAL scans; "
            f"95% CIs resample near-duplicate groups): AUC {y['auc']:.3f} [{y['ci95']['auc'][0]:.3f}, "
            f"{y['ci95']['auc'][1]:.3f}]; at the point that maximises Youden's J on validation, "
            f"{point(y)}; at the threshold chosen for validation sensitivity >= {d['fixed_sensitivity']}, "
            f"{point(f)}.\n")


def release_markdown(ev: dict, vol: dict | None = None) -> str:
    """Everything a reader needs about the released model on other data, in one Markdown text."""
    parts = [release_summary_table(ev)]
    for key, by, title in (("figshare", "by_label", "Figshare test half, by tumour type"),
                           ("lgg", "by_site", "TCGA-LGG test half, by acquisition site")):
        groups = (_part(ev, key, "test") or {}).get(by)
        if groups:
            parts.append(f"**{title}**\n\n" + breakdown_table(groups, by.removeprefix("by_")))
    parts.append(volumes_markdown(vol))
    parts.append(detection_markdown(ev))
    parts.append(where_it_fails(ev) + "\n")
    return "\n".join(parts)


def help_text() -> str:
    """``predict --help``'s paragraph on how the released model does on other scanners, read from
    release_eval.json (empty when it is absent)."""
    try:
        ev = load()
    except (OSError, ValueError):          # no readable results folder: the help stays plain
        return ""
    facts = headline_facts(ev) if ev else {}
    if not facts:
        return ""
    names = {"lgg": "TCGA-LGG FLAIR", "figshare": "Figshare T1 contrast-enhanced"}
    said = "; ".join(f"{names[k]}: {f['missed']} of {f['n_tumour']} tumour slices ({f['missed_share']:.0%}) "
                     f"get no prediction, mean Dice on tumour slices {f['mean_dice_tumour']:.2f}"
                     for k, f in facts.items())
    kinds = "; ".join(f"{k} {', '.join(v)}" for k, v in failing_kinds(ev).items())
    return ("\n\nOn scans from elsewhere the released model often finds nothing (external test halves, "
            f"results/models/MODEL_CARD.md): {said}. It fails on: {kinds or 'no group'}. "
            "A mask without tumour is not evidence of no tumour.")


def rounds_markdown(folder=None) -> str:
    """One line per release lever round (``decision*.json`` under ``folder``, default
    ``paths.release_levers_dir()``): its plan, the verdicts it gave and what it adopted."""
    from brainseg_lib.study.release_rule import is_pending
    from brainseg_lib.study.release_seeds import round_order
    folder = Path(folder) if folder else paths.release_levers_dir()
    files = sorted(folder.glob("decision*.json"), key=round_order)
    lines = []
    for i, f in enumerate(files, 1):
        d = json.loads(f.read_text())
        adopted = [*d.get("adopted", []), *(v["tag"] for v in d.get("inference", []) if v.get("adopted"))]
        waiting = [v["tag"] for v in d.get("trials", []) if is_pending(v)]
        n = len(d.get("trials", [])) + len(d.get("inference", [])) - len(waiting)
        outcome = (f"release trial `{d.get('release_trial')}`" if adopted else
                   "the released model stays as it was") + (
            f"; pending (passed the screen, seeds still to train): {', '.join(waiting)}" if waiting else "")
        lines.append(f"- round {i} (`{d.get('plan') or f.name}`): {n} verdict{'' if n == 1 else 's'}; adopted: {', '.join(adopted) or 'nothing'}; {outcome}")
    return "\n".join(lines) + "\n" if lines else "_No release lever round recorded yet._\n"


def later_rounds_markdown(folder=None) -> str:
    """``rounds_markdown`` followed by the table of every round after the first
    (``lever_table-<name>.md``) and the seed-by-seed table (``seed_by_seed.md``), for the README."""
    from brainseg_lib.study.release_seeds import round_order
    folder = Path(folder) if folder else paths.release_levers_dir()
    tables = [f"**{p.stem.removeprefix('lever_table-')}**\n\n{p.read_text()}"
              for p in sorted(folder.glob("lever_table-*.md"), key=round_order)]
    spread = folder / "seed_by_seed.md"
    if spread.is_file():
        tables.append("**The same recipes, seed by seed** (`seed_by_seed.md`: how far the seed alone "
                      f"moves each figure)\n\n{spread.read_text()}")
    return "\n".join([rounds_markdown(folder), *tables])
