"""The index page of the HTML report (``index.html``) and the reading of the executed
notebooks it lists: titles and one-line descriptions from each notebook's first markdown
heading, the headline Table I, the key figures (copied into ``report/figures/``)."""
from __future__ import annotations

import html
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat

from brainseg_lib import fileio
from brainseg_lib.data.files import list_files
from brainseg_lib.report.html_notebook import SCROLL_CSS, profile_of

# (file stem in results/figures, caption): shown on the index when the file exists
KEY_FIGURES = [
    ("fig1_samples", "Fig. 1: Br35H scans with their tumour masks."),
    ("learning_curves", "Learning curves of the training run."),
    ("fig3_best_median_worst", "Best, median and worst TEST predictions."),
    ("table1_comparison", "Table I as a dot plot with 95% CIs: our runs and the paper's row, the cited studies apart."),
    ("xai_cases", "What the U-Net looks at: attribution maps on TEST images."),
    ("detection_roc", "Tumour scans vs healthy scans: ROC of the segmentation used as a detector."),
    ("external_dice_by_size", "External validation on TCGA-LGG FLAIR slices: Dice by tumour size."),
]

INDEX_CSS = """
body { margin: 0; color: #1f2328; background: #fff;
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 24px 20px 64px; }
h1 { font-size: 1.8em; line-height: 1.25; margin: 0.4em 0; }
h2 { font-size: 1.35em; margin-top: 2em; padding-bottom: 0.2em; border-bottom: 1px solid #d8dee4; }
a { color: #0550ae; }
code { font: 0.9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: #f6f8fa; padding: 1px 4px; border-radius: 4px; }
.meta, .note, figcaption { color: #59636e; font-size: 0.92em; }
.table-wrap { overflow-x: auto; margin: 1em 0; border: 1px solid #d8dee4; border-radius: 6px; }
table { border-collapse: collapse; font-size: 0.9em; width: 100%; }
th, td { padding: 6px 10px; border-bottom: 1px solid #e6e9ed; text-align: right;
  white-space: nowrap; font-variant-numeric: tabular-nums; }
th:first-child, td:first-child { text-align: left; white-space: normal; min-width: 16em; }
thead th { background: #f6f8fa; }
tbody tr:hover { background: #f6f8fa; }
figure { margin: 1.6em 0; }
tr.ours td { background: #eef6ff; }
tr.paper td { background: #fff8e6; font-weight: 600; }
figure img { display: block; max-width: 100%; max-height: 680px; width: auto; height: auto;
  margin: 0 auto;
  border: 1px solid #e6e9ed; }
ol.notebooks { padding-left: 0; list-style: none; }
ol.notebooks li { margin: 0.9em 0; }
ol.notebooks .title { font-weight: 600; }
img { max-width: 100%; height: auto; }
""" + SCROLL_CSS


@dataclass
class NotebookInfo:
    path: Path
    nb: object
    title: str
    description: str
    profile: str | None
    duration: float | None
    end_time: str | None

    @property
    def page(self) -> str:
        return self.path.stem + ".html"


# ---- reading the executed notebooks -------------------------------------------------------

_ABBREV = ("Sec", "Fig", "Figs", "Eq", "Eqs", "al", "e.g", "i.e", "cf", "vs", "etc", "approx", "No")


def _first_sentence(text: str, limit: int = 220) -> str:
    text = " ".join(text.split())
    for m in re.finditer(r"([.!?])\s+(?=[A-Z0-9*`(\[])", text):
        word = re.split(r"[\s(]", text[:m.start()])[-1]
        if word.rstrip(".") in _ABBREV or len(word) == 1:
            continue
        text = text[:m.start() + 1]
        break
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"
    return text


def _inline_html(markdown_text: str) -> str:
    """Inline markdown to HTML (code, bold, italics), without links or images: a title or
    one-line description must not carry a notebook's relative links into the index."""
    import mistune

    out = mistune.create_markdown(escape=True)(markdown_text).strip()
    out = re.sub(r"^<p>|</p>$", "", out)
    out = re.sub(r"<img\b[^>]*>", "", out)
    return re.sub(r"</?a\b[^>]*>", "", out)


def _describe(nb, fallback: str) -> tuple[str, str]:
    """(title, one-line description) from the notebook's first markdown heading and the
    paragraph after it."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
            if not m:
                continue
            para = []
            for rest in lines[i + 1:]:
                if not rest.strip():
                    if para:
                        break
                    continue
                if re.match(r"\s{0,3}(#|[*+-]\s|\d+\.\s|\||```|<)", rest) and not para:
                    break
                para.append(rest)
            return m.group(1), _first_sentence(" ".join(para))
    return fallback, ""


def load_notebooks(executed_dir: Path) -> list[NotebookInfo]:
    """The executed notebooks, in the study order (their ``NN_`` file names)."""
    files = list_files(executed_dir, {".ipynb"}) if Path(executed_dir).is_dir() else []
    if not files:
        raise FileNotFoundError(f"no executed notebook in {executed_dir} (run ./run_all.sh first)")
    out = []
    for p in files:
        nb = nbformat.read(p, as_version=4)
        title, desc = _describe(nb, p.stem)
        pm = nb.metadata.get("papermill") or {}
        out.append(NotebookInfo(p, nb, title, desc, profile_of(nb), pm.get("duration"),
                                pm.get("end_time")))
    return out


def _producer(stem: str, notebooks: list[NotebookInfo]) -> NotebookInfo | None:
    """The first notebook whose code names ``stem`` (the one that writes that figure/table)."""
    pat = re.compile(r"\b" + re.escape(stem) + r"\b")
    for info in notebooks:
        if any(c.cell_type == "code" and pat.search(c.source) for c in info.nb.cells):
            return info
    return None


# ---- the index page -----------------------------------------------------------------------

def duration_text(seconds: float | None) -> str:
    """``7 s`` or ``4 min 58 s``; "" for None."""
    if seconds is None:
        return ""
    s = round(seconds)
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def _table1_html(results: Path, notebooks: list[NotebookInfo]) -> str:
    md_path = results / "tables" / "table1.md"
    if not md_path.is_file():
        return f'<p class="note">Table I not found ({html.escape(str(md_path))}).</p>'
    import mistune

    table = mistune.create_markdown(escape=True, plugins=["table"])(md_path.read_text("utf-8"))
    table = re.sub(r"<tr>(\s*<td[^>]*>\s*)(Ours\b)", r'<tr class="ours">\1\2', table)
    table = re.sub(r"<tr>(\s*<td[^>]*>[^<]*\(paper\))", r'<tr class="paper">\1', table)
    src = _producer("table1", notebooks)
    where = (f' Regenerated in <a href="{src.page}">{html.escape(src.title)}</a>,'
             if src else "")
    return (f'<div class="table-wrap">{table}</div>\n<p class="note">Pooled pixel metrics on the '
            f"TEST split; our rows are shaded blue, the paper's own row yellow; empty cells: not "
            f"reported by that study.{where} from "
            f"<code>results/tables/table1.md</code>.</p>")


def _figures_html(results: Path, notebooks: list[NotebookInfo], out: Path) -> str:
    items = []
    for stem, caption in KEY_FIGURES:
        src = results / "figures" / f"{stem}.png"
        if not src.is_file():
            continue
        with open(src, "rb") as f:
            fileio.atomic_write(out / "figures" / src.name, lambda dst: shutil.copyfileobj(f, dst))
        nb = _producer(stem, notebooks)
        origin = f' From <a href="{nb.page}">{html.escape(nb.title)}</a>.' if nb else ""
        items.append(f'<figure><a href="figures/{src.name}"><img src="figures/{src.name}" '
                     f'alt="{html.escape(caption)}" loading="lazy"></a>'
                     f"<figcaption>{html.escape(caption)}{origin}</figcaption></figure>")
    if not items:
        return '<p class="note">No key figure found in <code>results/figures/</code>.</p>'
    return "\n".join(items)


def _intro_html(notebooks: list[NotebookInfo]) -> str:
    profiles = sorted({n.profile for n in notebooks if n.profile})
    if len(profiles) == 1:
        prof = (f"with the profile <code>{html.escape(profiles[0])}</code> "
                f"(<code>params/{html.escape(profiles[0])}.yaml</code> over <code>params/base.yaml</code>)")
    elif profiles:
        prof = "with the profiles " + ", ".join(f"<code>{html.escape(p)}</code>" for p in profiles)
    else:
        prof = "outside papermill (no profile recorded)"
    return (
        "<p>This is the executed study of <strong>brainseg</strong>, a reproduction of Khadra "
        "et al. (2026): a plain U-Net that segments brain tumours in the Br35H MRI dataset, "
        "checked against the paper's Table I and taken beyond it (explanations, detection, "
        "a leakage audit, seeds and confidence intervals, external validation). "
        f"The {len(notebooks)} notebooks below were run by <code>./run_all.sh</code> "
        f"{prof}; each page shows their code and outputs exactly as they ran "
        '(how long each took: <a href="run_times.html">run times</a>).</p>')


def _findings_html(results: Path, notebooks: list[NotebookInfo]) -> str:
    """The study's key findings (``key_findings``), each linked to the page that shows it."""
    from brainseg_lib.report.key_findings import key_findings, page_label
    pages = {n.page.removesuffix(".html") for n in notebooks}
    items = []
    for f in key_findings(results):
        link = (f' (<a href="{html.escape(f["page"])}.html">{html.escape(page_label(f["page"]))}</a>)'
                if f["page"] in pages else "")
        items.append(f"<li>{_inline_html(f['sentence'])}{link}</li>")
    return (f'<ol class="findings">{"".join(items)}</ol>' if items
            else '<p class="note">No results yet: run <code>./run_all.sh</code>.</p>')


def index_html(notebooks: list[NotebookInfo], results: Path, out: Path) -> str:
    rows = []
    mixed = len({n.profile for n in notebooks}) > 1  # name the profile only where it varies
    for n in notebooks:
        meta = f"profile {n.profile or 'unknown'}" if mixed else ""
        rows.append(f'<li><a class="title" href="{n.page}">{_inline_html(n.title)}</a>'
                    + (f"<br>{_inline_html(n.description)}" if n.description else "")
                    + (f' <span class="meta">({html.escape(meta)})</span>' if meta else "")
                    + "</li>")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>brainseg: report of the executed study</title>
<style>{INDEX_CSS}</style>
</head>
<body>
<main>
<h1>Brain tumour segmentation on Br35H: report of the executed study</h1>
<h2 id="findings">What the study found</h2>
{_findings_html(results, notebooks)}
{_intro_html(notebooks)}
<p class="meta">Contents: <a href="#findings">Findings</a> · <a href="#table1">Table I</a>
 · <a href="#figures">Key figures</a> · <a href="#notebooks">The notebooks</a></p>
<h2 id="table1">Table I: segmentation results against the paper</h2>
{_table1_html(results, notebooks)}
<h2 id="figures">Key figures</h2>
{_figures_html(results, notebooks, out)}
<h2 id="notebooks">The notebooks, in the order of the study</h2>
<ol class="notebooks">
{chr(10).join(rows)}
</ol>
<p class="note">Rendered by <code>python -m brainseg_lib report</code>; run times and the
date of the run: <a href="run_times.html">run times</a>.</p>
</main>
</body>
</html>
"""
