"""The study's key findings, generated: a short numbered list, one sentence each, with its
figure, its 95% CI and the page (notebook) that shows it.

Every number is read from the results files (``results/`` by default, or the ``results_dir``
given), never typed here:

1. **reproduction**: the released model against the paper (``models/release.json``, the run's
   ``metrics/<run>.json``, the paper's row of ``tables/table1.csv``), page 04;
2. **leakage**: TEST images with a TRAIN near-duplicate, mirror images included
   (``metrics/leakage.json``), page 07;
3. **seeds and splits**: official against near-duplicate-free split, seed means and the
   hierarchical-bootstrap CI of their difference (``metrics/honest_evaluation.json``), page 08;
4. **another collection**: the drop on TCGA-LGG FLAIR and its tumour slices with no prediction
   (``metrics/release_eval.json`` where the released model was scored on it, page 10; else
   ``metrics/external_validation.json`` and its per-slice CSV, page 09);
5. **size does not explain it**: the size-matched Dice gap (``metrics/failures.json``), page 09;
6. **the paper's configuration**: the paper profile's GPU run (``paper/metrics/paper-*.json``)
   against the paper (``tables/table1.csv``), page 04;
7. **healthy scans**: detection of tumour scans against healthy ones (``metrics/detection.json``),
   page 06.

A finding whose files are missing (or lack a field it needs) is left out, never an error.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from brainseg_lib import paths
from brainseg_lib.report.seed_findings import runs_words

PAGES = {"reproduction": "04_comparison_table", "leakage": "07_leakage_audit",
         "seeds": "08_honest_evaluation", "external": "09_external_validation",
         "external_release": "10_released_model", "size": "09_external_validation",
         "paper_config": "04_comparison_table", "detection": "06_detection"}
MISSING = (OSError, KeyError, ValueError, TypeError, IndexError, ZeroDivisionError, StopIteration)


def _folders(results_dir) -> dict[str, Path]:
    """The results sub-folders the findings read: ``paths``' own, or the same names under
    ``results_dir``."""
    if results_dir is None:
        return {"metrics": paths.metrics_dir(), "tables": paths.tables_dir(), "models": paths.models_dir(),
                "paper": paths.profile_results_dir(paths.GPU_PROFILE) / paths.metrics_dir().name}
    root = Path(results_dir)
    return {"metrics": root / paths.metrics_dir().name, "tables": root / paths.tables_dir().name,
            "models": root / paths.models_dir().name,
            "paper": root / paths.GPU_PROFILE / paths.metrics_dir().name}


def _json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _ci(lo: float, hi: float, signed: bool = False) -> str:
    f = "+.3f" if signed else ".3f"
    return f"95% CI {lo:{f}} to {hi:{f}}"


def _finding(key: str, sentence: str, figure: float, ci95, page: str | None = None) -> dict:
    return {"key": key, "sentence": sentence, "figure": float(figure),
            "ci95": [float(ci95[0]), float(ci95[1])], "page": page or PAGES[key]}


def paper_f1(d: dict) -> float:
    """The paper's F1, from its row of Table I (``tables/table1.csv``)."""
    with open(d["tables"] / "table1.csv", newline="", encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["Study"].endswith("(paper)"))
    return float(row["F1"])


def _against_paper(lo: float, hi: float, paper: float) -> str:
    if lo > paper:
        return f"higher than the paper's F1 {paper:.3f}, which lies below the CI"
    if hi < paper:
        return f"lower than the paper's F1 {paper:.3f}, which lies above the CI"
    return f"consistent with the paper's F1 {paper:.3f}, which lies inside the CI"


def _run_sentence(run: dict, paper: float) -> tuple[float, list, str, str]:
    """(F1, its CI, 'pooled F1 ... (CI; per-image Dice ...)', the comparison with the paper)
    of a run's metrics JSON."""
    f1 = run["global"]["f1"]
    lo, hi = run.get("bootstrap_ci95_groups", run["bootstrap_ci95"])["f1"]
    dice = run["per_image_mean"]["f1"]
    return f1, [lo, hi], (f"pooled F1 {f1:.3f} ({_ci(lo, hi)}, resampling near-duplicate groups; "
                          f"per-image Dice {dice:.3f})"), _against_paper(lo, hi, paper)


def reproduction(d: dict) -> dict:
    """Table I's run on Br35H TEST against the paper: the released model, or the study's cpu run when the
    release came from a round of lever trials."""
    from brainseg_lib.study.experiment import released_run_name
    info = _json(d["models"] / "release.json")
    if "from_run" in info:
        run, who = _json(d["metrics"] / Path(info["metrics_json"]).name), f"The released model ({info['from_run']})"
    else:                       # released from a round of lever trials: Table I's run is the study's
        run = _json(d["metrics"] / f"{released_run_name()}.json")
        who = f"The study's cpu run ({released_run_name()}, Table I's row; not the released model)"
    f1, ci, words, paper = _run_sentence(run, paper_f1(d))
    return _finding("reproduction", f"{who} scores {words} on "
                    f"Br35H TEST ({run['n_images']} images, official split): {paper}.", f1, ci)


def paper_configuration(d: dict) -> dict:
    """The paper profile's run (its configuration, trained on a GPU) against the paper."""
    run = _json(sorted(d["paper"].glob(f"{paths.GPU_PROFILE}-official-*-seed*.json"))[0])
    f1, ci, words, paper = _run_sentence(run, paper_f1(d))
    return _finding("paper_config", f"Trained in the paper's own configuration ({run['run_name']}, "
                    f"{run['epochs_run']} epochs at {run['config']['image_size']}x"
                    f"{run['config']['image_size']}), the U-Net scores {words} on the same TEST set: "
                    f"{paper}.", f1, ci)


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score 95% interval of the share k/n."""
    from brainseg_lib.evaluation.bootstrap import wilson_ci
    return wilson_ci(int(k), int(n))


def leakage(d: dict) -> dict:
    """TEST images with a near-duplicate in TRAIN, mirror images included."""
    lk = _json(d["metrics"] / "leakage.json")
    t = lk["images_with_duplicate_in"]["test->train"]
    k, n = t["either"], t["of"]
    lo, hi = wilson(k, n)
    pairs = lk["pairs_found"]
    return _finding("leakage", (
        f"{k} of {n} TEST images ({100 * k / n:.0f}%, Wilson 95% CI {100 * lo:.0f}% to {100 * hi:.0f}%) "
        f"have a near-duplicate in TRAIN once mirror images are compared, as training flips them "
        f"({pairs['either']:,} near-duplicate pairs in all, {pairs['either_without_mirroring']:,} of them "
        f"without mirroring)."), k / n, [lo, hi])


VERDICT_WORDS = {
    "higher": "lies above 0: the official split's near-duplicates raise its score",
    "lower": "lies below 0: the official split scores lower, which leakage does not explain",
    "no evidence": "spans 0, so there is no evidence that the near-duplicates raise the official score"}


def _seed_means(o: dict, g: dict) -> str:
    if int(o.get("n_draws") or 1) == int(g.get("n_draws") or 1) == 1:
        a, b = o["n_seeds"], g["n_seeds"]
        return f"means over {a} seeds each" if a == b else f"means over {a} and {b} seeds"
    return f"means over {runs_words(o)} and {runs_words(g)}"


def seeds_and_splits(d: dict) -> dict:
    """Official against near-duplicate-free split: seed means and the CI of the difference."""
    h = _json(d["metrics"] / "honest_evaluation.json")
    o, g = h["official"], h["grouped"]
    c = h["contrasts"]["official_minus_grouped"]
    lo, hi = c["ci95"]
    return _finding("seeds", (
        f"Test F1 is {o['f1_mean']:.3f} on the official split and {g['f1_mean']:.3f} on a "
        f"near-duplicate-free grouped split ({_seed_means(o, g)}); their "
        f"difference, {c['diff']:+.3f} ({_ci(lo, hi, signed=True)}, resampling "
        f"{c.get('units', 'seeds x near-duplicate groups')}), {VERDICT_WORDS[c['verdict']]}."),
        c["diff"], [lo, hi])


def _collection(n_sites: int | None, n_patients: int) -> str:
    sites = f"{n_sites} TCGA sites, " if n_sites else ""
    return f"another collection (TCGA-LGG FLAIR: {sites}{n_patients} patients, test half)"


def _external_sentence(where: str, ref_f1: float, e: dict, median: float | None, page: str) -> dict:
    lo, hi = e["ci95_by_patient"]["pooled_f1"]
    missed, n = e["tumour_slices_missed"], e["n_tumour_slices"]
    tail = (f"; the median tumour slice scores Dice {median:.3f}" if median is not None else "")
    return _finding("external", (
        f"On {where}, pooled F1 falls from {ref_f1:.3f} on Br35H TEST to {e['pooled_f1']:.3f} "
        f"({_ci(lo, hi)}, resampling patients), and {missed} of {n} tumour slices "
        f"({100 * missed / n:.0f}%) get no prediction at all{tail}."), e["pooled_f1"], [lo, hi], page)


def external_from_release(d: dict) -> dict:
    """The released model on the TCGA-LGG test half (``release_eval.json``)."""
    r = _json(d["metrics"] / "release_eval.json")
    e = r["lgg"]["test"]
    median = (e.get("dice_quantiles_tumour") or {}).get("0.5")
    where = _collection(len(e.get("by_site") or {}) or None, e["n_patients"])
    return _external_sentence(where, r["br35h_test"]["pooled_f1"], e, median, PAGES["external_release"])


def external_from_validation(d: dict) -> dict:
    """Notebook 09's run on the TCGA-LGG test half (``external_validation.json`` and, when
    present, its per-slice CSV for the sites and the median tumour-slice Dice)."""
    ext = _json(d["metrics"] / "external_validation.json")
    e = ext["test"]
    run = _json(d["metrics"] / f"{ext['run_name']}.json")
    n_sites = median = None
    try:
        import pandas as pd
        from brainseg_lib.study.release_rule import site_of
        per = pd.read_csv(d["metrics"] / e["per_slice_csv"], usecols=["patient", "tumour", "dice"])
        n_sites = per["patient"].map(site_of).replace("", pd.NA).nunique() or None
        median = float(per.loc[per["tumour"].astype(bool), "dice"].median())
    except MISSING:
        pass
    return _external_sentence(_collection(n_sites, e["n_patients"]), run["global"]["f1"], e,
                              None if median is None or math.isnan(median) else median, PAGES["external"])


def external(d: dict) -> dict:
    """The released model's external figures where it was scored, else notebook 09's."""
    try:
        return external_from_release(d)
    except MISSING:
        return external_from_validation(d)


def size_matched(d: dict) -> dict:
    """The Br35H-minus-external Dice gap within the same tumour-size bins (``failures.json``)."""
    f = _json(d["metrics"] / "failures.json")
    gap, (lo, hi) = f["size_matched_gap"], f["size_matched_ci95"]
    verdict = ("so tumour size alone does not explain the drop" if lo > 0 else
               "so there is no evidence of a drop beyond tumour size")
    return _finding("size", (
        f"Compared within the same tumour-size bins, Br35H TEST's mean Dice is {gap:+.3f} above the "
        f"external test half's ({_ci(lo, hi, signed=True)}, resampling near-duplicate groups and "
        f"patients), {verdict}."), gap, [lo, hi])


def detection(d: dict) -> dict:
    """Tumour scans against healthy ones, from the segmentation (``detection.json``)."""
    s = _json(d["metrics"] / "detection.json")
    m = s["report"]["all"][s["primary_score"]]
    (slo, shi), (plo, phi) = m["ci95"]["sensitivity"], m["ci95"]["specificity"]
    return _finding("detection", (
        f"Used as a detector (a scan is called tumour when enough of its pixels are, the cut-off chosen "
        f"on validation), the model flags {m['fp']} of {m['negatives']:,} unseen healthy scans, "
        f"specificity {m['specificity']:.3f} ({_ci(plo, phi)}), and finds {m['tp']} of "
        f"{m['positives']:,} unseen tumour scans, sensitivity {m['sensitivity']:.3f} ({_ci(slo, shi)})."),
        m["specificity"], [plo, phi])


FINDINGS = (reproduction, leakage, seeds_and_splits, external, size_matched, paper_configuration, detection)


def key_findings(results_dir=None) -> list[dict]:
    """The findings whose files are there, in order: each a dict with ``key``, ``sentence``
    (one sentence, its figures from the files), ``figure`` (the headline number), ``ci95``
    ([low, high]) and ``page`` (the notebook that shows it)."""
    d = _folders(results_dir)
    out = []
    for make in FINDINGS:
        try:
            out.append(make(d))
        except MISSING:
            continue
    return out


def page_label(page: str) -> str:
    return f"page {page[:2]}"


def key_findings_markdown(results_dir=None, page_href: str | None = None) -> str:
    """The findings as a numbered Markdown list, each ending with its page: ``page_href``, a
    format string with ``{page}`` (e.g. ``"{page}.html"``), links it; empty without findings."""
    lines = []
    for i, f in enumerate(key_findings(results_dir), 1):
        label = page_label(f["page"])
        where = f"[{label}]({page_href.format(page=f['page'])})" if page_href else f"{label}, `{f['page']}`"
        lines.append(f"{i}. {f['sentence']} ({where})")
    return "\n".join(lines) + ("\n" if lines else "")
