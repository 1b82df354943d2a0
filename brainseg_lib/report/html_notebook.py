"""One HTML page per executed notebook, through nbconvert's ``lab`` template.

On top of nbconvert's page:

* the papermill ``parameters`` and ``injected-parameters`` cells become one collapsed
  ``<details>`` block whose summary names the profile (the values stay one click away);
* stderr stream outputs (the training log) show in a neutral grey, not the error pink;
  real errors are ``error`` outputs and keep their style;
* wide tables and long text outputs scroll sideways instead of running off the page, and
  numbers never wrap mid-digit;
* relative links to other notebooks point to their pages; other relative links (to
  files outside the report) become plain text;
* a top bar links back to ``index.html`` and to the previous/next notebook, and shows again
  at the foot of the page;
* test markers are removed from the code, imports folded away and a "what this page shows"
  box follows the title (``html_study.py``);
* the scripts nbconvert adds to the head (require.js, MathJax, mermaid, all from a CDN) are
  dropped so the page opens offline (``move_head_css``).
"""
from __future__ import annotations

import copy
import hashlib
import html
import logging
import re
from urllib.parse import urlsplit

import nbformat

from brainseg_lib.report.html_study import STUDY_CSS, bottom_nav, code_html, prepare_cells, put_blocks
from brainseg_lib.study.notebooks import parse_parameters

PARAM_TAGS = ("parameters", "injected-parameters")

# boxes that scroll sideways show a scrollbar that stays visible (macOS and headless Chromium
# hide plain ones until the reader scrolls, so a cut-off table looked complete): WebKit and
# Blink draw these styled bars always; Firefox gets a coloured standard one
SCROLL_CSS = """
.bs-scroll::-webkit-scrollbar, .jp-OutputArea-output::-webkit-scrollbar,
.jp-RenderedHTMLCommon::-webkit-scrollbar, .jp-RenderedMarkdown table::-webkit-scrollbar,
.table-wrap::-webkit-scrollbar { height: 12px; width: 12px; }
.bs-scroll::-webkit-scrollbar-thumb, .jp-OutputArea-output::-webkit-scrollbar-thumb,
.jp-RenderedHTMLCommon::-webkit-scrollbar-thumb, .jp-RenderedMarkdown table::-webkit-scrollbar-thumb,
.table-wrap::-webkit-scrollbar-thumb { background: #8c959f; border-radius: 6px;
  border: 2px solid #eaeef2; }
.bs-scroll::-webkit-scrollbar-track, .jp-OutputArea-output::-webkit-scrollbar-track,
.jp-RenderedHTMLCommon::-webkit-scrollbar-track, .jp-RenderedMarkdown table::-webkit-scrollbar-track,
.table-wrap::-webkit-scrollbar-track { background: #eaeef2; }
@supports (-moz-appearance: none) {
  .bs-scroll, .jp-OutputArea-output, .jp-RenderedHTMLCommon, .jp-RenderedMarkdown table,
  .table-wrap { scrollbar-color: #8c959f #eaeef2; } }
"""

PAGE_CSS = SCROLL_CSS + """
/* brainseg report: overrides of nbconvert's lab template */
body.jp-Notebook { max-width: 1200px; margin: 0 auto; padding: 0 16px 48px; }
.bs-nav { position: sticky; top: 0; z-index: 100; display: flex; flex-wrap: wrap; gap: 4px 18px;
  align-items: baseline; margin: 0 -16px 12px; padding: 8px 16px; background: #f6f8fa;
  border-bottom: 1px solid #d0d7de;
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.bs-nav a { color: #0550ae; text-decoration: none; }
.bs-nav a:hover { text-decoration: underline; }
.bs-nav .bs-here { color: #59636e; }
.bs-nav .bs-prev { margin-left: auto; }
/* logs on stderr are not errors: neutral grey, not pink */
.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"] {
  background: #f6f8fa; border-left: 3px solid #d0d7de; padding-left: 6px; color: #3d444d; }

/* wide outputs (DataFrames, long lines) scroll sideways inside the page, never past it:
   min-width 0 lets the flex item shrink to the page, so its own scrollbar takes over */
.jp-OutputArea-output { overflow-x: auto; max-width: 100%; min-width: 0; }
.jp-OutputArea-child, .jp-Cell-outputWrapper, .jp-OutputArea { min-width: 0; max-width: 100%; }
.jp-RenderedHTMLCommon { overflow-x: auto; max-width: 100%; }
/* text wraps at spaces, never inside a number (lab's break-all did); only a token longer
   than the line is broken */
.jp-OutputArea-output pre { white-space: pre-wrap; word-break: normal; overflow-wrap: anywhere; }
.jp-RenderedHTMLCommon table { table-layout: auto; }
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { white-space: nowrap; }
/* the label column may wrap at spaces so that the number columns fit */
.jp-RenderedHTMLCommon td:first-child, .jp-RenderedHTMLCommon th:first-child {
  white-space: normal; min-width: 10em; text-align: left; }
.jp-RenderedMarkdown table { display: block; overflow-x: auto; max-width: 100%; }
.jp-OutputArea-output img, .jp-RenderedMarkdown img { max-width: 100%; height: auto; }
/* the collapsed parameters */
details.bs-params { margin: 4px 0; padding: 6px 10px; border: 1px solid #d0d7de;
  border-radius: 6px; background: #f6f8fa; }
details.bs-params > summary { cursor: pointer; font-family: system-ui, sans-serif; }
details.bs-params[open] > summary { margin-bottom: 6px; }
details.bs-params[open] > summary small { display: none; }
details.bs-params p { margin: 8px 0 4px; font-family: system-ui, sans-serif; }
details.bs-params .highlight { background: #fff; border: 1px solid #e6e9ed; padding: 4px 8px; }
"""


def profile_of(nb) -> str | None:
    """The profile papermill ran the notebook with (``metadata.papermill.parameters.profile``)."""
    params = (nb.metadata.get("papermill") or {}).get("parameters") or {}
    value = params.get("profile")
    return str(value) if value is not None else None


def collapse_parameters(nb):
    """``(copy of nb, details_html)``: the ``parameters``/``injected-parameters`` cells are
    replaced, at the position of the first, by a markdown cell holding only a marker paragraph,
    and ``details_html`` is the collapsed ``<details>`` block to put in its place once rendered
    (nbconvert's markdown renderer mangles raw ``<details>``). ``(nb, None)`` when the notebook
    has no parameters cell."""
    nb = copy.deepcopy(nb)
    found = {tag: None for tag in PARAM_TAGS}
    first = None
    for i, cell in enumerate(nb.cells):
        tags = cell.get("metadata", {}).get("tags") or []
        for tag in PARAM_TAGS:
            if tag in tags and cell.cell_type == "code":
                found[tag] = found[tag] or cell
                first = i if first is None else first
    if first is None:
        return nb, None
    injected, defaults = found["injected-parameters"], found["parameters"]
    profile = profile_of(nb)
    if injected is not None:
        try:
            n = len(parse_parameters(injected.source))
            what = f"{n} value{'s' if n != 1 else ''} injected by papermill"
        except ValueError:
            what = "values injected by papermill"
    else:
        what = "the notebook's defaults (nothing injected)"
    summary = ("Parameters: " + (f"profile <code>{html.escape(profile)}</code>, " if profile else "")
               + f"{what} <small>(click to show)</small>")
    parts = [f'<details class="bs-params"><summary>{summary}</summary>']
    if injected is not None:
        parts += ["<p>Injected by papermill (these override the defaults below):</p>",
                  code_html(injected.source)]
    if defaults is not None:
        parts += ["<p>The notebook's defaults (its <code>parameters</code> cell):</p>",
                  code_html(defaults.source)]
    # fixed, content-derived marker and cell id: the same notebook renders to the same page
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    marker = f"BSPARAMS{digest}"
    cells = []
    for i, c in enumerate(nb.cells):
        if i == first:
            cells.append(nbformat.v4.new_markdown_cell(marker, id=f"bs-params-{digest[:8]}"))
        if c is injected or c is defaults:
            continue
        cells.append(c)
    nb.cells = cells
    return nb, (marker, "\n".join(parts) + "</details>")


def _short(title: str, limit: int = 46) -> str:
    if len(title) <= limit:
        return title
    return title[:limit].rsplit(" ", 1)[0].rstrip(",;:·") + "…"


def nav_bar(position: str, prev: tuple[str, str] | None, nxt: tuple[str, str] | None) -> str:
    """The top bar: back to the index, where this page stands (``position``, e.g. "notebook 2
    of 9") and the previous and next notebook (``(href, title)`` pairs; long titles are
    shortened, the full one shows as a tooltip)."""
    e = html.escape

    def link(pair, rel, text):
        return (f'<a class="bs-{rel}" href="{e(pair[0])}" rel="{rel}" title="{e(pair[1])}">'
                f"{text}</a>")

    parts = ['<nav class="bs-nav"><a href="index.html">&#8962; Report index</a>',
             f'<span class="bs-here">{e(position)}</span>']
    if prev:
        parts.append(link(prev, "prev", f"&larr; {e(_short(prev[1]))}"))
    if nxt:
        parts.append(link(nxt, "next", f"{e(_short(nxt[1]))} &rarr;"))
    return "".join(parts) + "</nav>"


_EXPORTER = None


class _NoAltTextWarning(logging.Filter):
    def filter(self, record):
        return not str(record.msg).startswith("Alternative text is missing")


def _exporter():
    global _EXPORTER
    if _EXPORTER is None:
        from nbconvert import HTMLExporter

        _EXPORTER = HTMLExporter(template_name="lab", theme="light", embed_images=True)
        # nbconvert warns once per page that output images lack alt text: noise in run_all's log
        _EXPORTER.log.addFilter(_NoAltTextWarning())
    return _EXPORTER


_ANCHOR = re.compile(r'<a\b([^>]*?)\bhref="([^"]*)"([^>]*)>(.*?)</a>', re.DOTALL)


def fix_links(body: str, pages: set[str]) -> str:
    """Relative links written for the notebooks folder: ``NN_x.ipynb`` becomes the report page
    ``NN_x.html`` when the report has it; any other relative link (``../params/cpu.yaml``) would
    be broken in the report, so it becomes plain text that names its target in a tooltip."""
    def fix(m):
        pre, href, post, text = m.groups()
        url = urlsplit(html.unescape(href))
        if url.scheme or href.startswith(("#", "//")) or not url.path:
            return m.group(0)
        name = url.path.rsplit("/", 1)[-1]
        page = name[:-len(".ipynb")] + ".html" if name.endswith(".ipynb") else name
        if page in pages:
            frag = f"#{url.fragment}" if url.fragment else ""
            return f'<a{pre}href="{html.escape(page + frag)}"{post}>{text}</a>'
        return f'<span class="bs-unlinked" title="{href} (not part of the report)">{text}</span>'

    return _ANCHOR.sub(fix, body)


def render_notebook(nb, title: str, nav: str, pages: set[str] = frozenset(),
                    source_dir: str | None = None, page: str | None = None, findings=()) -> str:
    """The HTML page of one executed notebook (``nb`` is not modified). ``pages``: the page
    names of the report, for links between notebooks; ``source_dir``: the folder relative
    image paths in markdown cells start from (they are embedded); ``page``: the notebook's
    stem, and ``findings``: the study's key findings, for the page's summary box
    (``html_study.prepare_cells``); ``nav`` shows at the top and again at the foot."""
    exporter = _exporter()
    nb, params = collapse_parameters(nb)
    nb, blocks = prepare_cells(nb, page or "", findings)
    meta = {"name": title, **({"path": str(source_dir)} if source_dir else {})}
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": meta})
    if params is not None:
        blocks = {params[0]: params[1], **blocks}
    body = fix_links(put_blocks(body, blocks), set(pages) | {"index.html"})
    body = body.replace("</head>", f'<style type="text/css">{PAGE_CSS}{STUDY_CSS}</style>\n</head>', 1)
    body, n = re.subn(r"(<body[^>]*>)", lambda m: m.group(1) + "\n" + nav, body, count=1)
    if not n:
        raise ValueError("nbconvert produced a page without <body>")
    head, tail = body.rsplit("</body>", 1)
    return head + bottom_nav(nav) + "\n</body>" + tail


SHARED_CSS = "notebook.css"   # the notebook pages' stylesheet, written once per report


def move_head_css(page: str) -> tuple[str, str]:
    """``page`` with the ``<style>`` blocks of its ``<head>`` (nbconvert's theme and ours,
    the same on every page) replaced by one link to ``notebook.css``, and their CSS in order.
    The head's scripts go too: nbconvert's require.js, MathJax and mermaid loaders fetch from
    a CDN, and the pages (static outputs, no maths, no diagrams) need none of them, so they
    open offline. Styles inside the body (a table's own style) stay where they are."""
    head_end = page.index("</head>")
    head, rest = page[:head_end], page[head_end:]
    css = "\n".join(re.findall(r"<style[^>]*>(.*?)</style>", head, flags=re.DOTALL))
    head = re.sub(r"<(style|script)\b[^>]*>.*?</\1>\s*", "", head, flags=re.DOTALL)
    return head + f'<link rel="stylesheet" href="{SHARED_CSS}">\n' + rest, css
