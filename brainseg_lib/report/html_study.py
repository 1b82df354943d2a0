"""What makes a notebook's report page read as a study rather than a code dump (issue 26, item 4).

``prepare_cells`` works on a copy of the executed notebook before nbconvert renders it:

* test markers (``# NBVAL_CHECK_OUTPUT`` and the other ``# NBVAL_...`` comment lines, which
  steer the notebook tests) are removed from the displayed code;
* imports are folded away: a cell whose every non-comment line is an import, ``from ...
  import``, ``%matplotlib`` or ``pd.set_option`` becomes one collapsed ``<details>`` block
  ("code: imports"), adjacent ones merged; the leading import lines of a cell that goes on
  with other code are folded the same way, the rest of the cell staying as it ran;
* a "what this page shows" box follows the page's title: the key findings
  (``report/key_findings.py``) whose ``page`` is this notebook, or, when none is, the
  notebook's first markdown paragraph (moved into the box, not repeated).

Blocks are placed as markdown cells holding one marker paragraph that ``render_notebook``
swaps for their HTML after nbconvert (its markdown renderer mangles raw ``<details>``);
markers and cell ids derive from the content, so the same notebook renders to the same page.
``bottom_nav`` repeats the page's navigation bar at its foot.
"""
from __future__ import annotations

import hashlib
import html
import re

import nbformat

TEST_MARKER = re.compile(r"^[ \t]*#[ \t]*NBVAL_[A-Z_]+[ \t]*$")
IMPORT_LINE = re.compile(r"^\s*(import\s+\S|from\s+\S+\s+import\b|%matplotlib\b|pd\.set_option\s*\()")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+\S")
NOT_PROSE = re.compile(r"\s{0,3}(#|[*+-]\s|\d+\.\s|\||```|<|!\[)")

STUDY_CSS = """
/* folded imports and the page summary (html_study.py) */
details.bs-fold { margin: 2px 0; padding: 2px 10px; border-left: 3px solid #d0d7de; color: #59636e; }
details.bs-fold > summary { cursor: pointer; font: 13px system-ui, sans-serif; }
details.bs-fold .highlight { background: #f6f8fa; padding: 4px 8px; margin-top: 4px; }
aside.bs-summary { margin: 8px 0 16px; padding: 10px 16px; border: 1px solid #b6d4f2;
  border-left: 5px solid #0969da; border-radius: 6px; background: #f1f8ff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
aside.bs-summary .bs-summary-title { margin: 0 0 4px; font-weight: 600; color: #0550ae; }
aside.bs-summary ol { margin: 4px 0; padding-left: 2em; }
aside.bs-summary li { margin: 4px 0; }
aside.bs-summary p { margin: 4px 0; }
aside.bs-summary .bs-summary-more { font-size: 13px; color: #59636e; }
.bs-nav.bs-nav-bottom { position: static; margin: 32px -16px 0; border-top: 1px solid #d0d7de;
  border-bottom: none; }
"""


def code_html(source: str) -> str:
    """``source`` highlighted as Python (pygments, class ``highlight`` as nbconvert's)."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    return highlight(source.rstrip() + "\n", PythonLexer(), HtmlFormatter(cssclass="highlight"))


def strip_test_markers(source: str) -> str:
    """``source`` without its ``# NBVAL_...`` comment lines (test markers, not the study)."""
    return "\n".join(line for line in source.split("\n") if not TEST_MARKER.match(line))


def _statements(source: str) -> list[list[str]]:
    """The lines of ``source`` grouped into statements: a line that opens a bracket it does not
    close (``from x import (``) or ends in a backslash runs on to the lines that close it."""
    out, current, depth = [], [], 0
    for line in source.split("\n"):
        current.append(line)
        code = line.split("#", 1)[0]
        depth += code.count("(") + code.count("[") - code.count(")") - code.count("]")
        if depth <= 0 and not code.rstrip().endswith("\\"):
            out.append(current)
            current, depth = [], 0
    return out + ([current] if current else [])


def _kind(statement: list[str]) -> str:
    first = statement[0].strip()
    if not first:
        return "blank"
    if first.startswith("#"):
        return "comment"
    return "import" if IMPORT_LINE.match(statement[0]) else "code"


def split_imports(source: str) -> tuple[str, str]:
    """``(imports, rest)``: the whole source and ``""`` for an import-only cell (every
    non-comment line an import, ``%matplotlib`` or ``pd.set_option``; at least one);
    else the leading import lines (blank lines among them) and the code after them."""
    statements = _statements(source)
    kinds = [_kind(s) for s in statements]
    if "import" in kinds and "code" not in kinds:
        return source.strip("\n"), ""
    n = 0
    while n < len(kinds) and kinds[n] in ("import", "blank"):
        n += 1
    if "import" not in kinds[:n]:
        return "", source
    join = lambda ss: "\n".join(line for s in ss for line in s).strip("\n")  # noqa: E731
    return join(statements[:n]), join(statements[n:])


def _marker(kind: str, content: str) -> tuple[str, str]:
    digest = hashlib.sha256(f"{kind}\n{content}".encode()).hexdigest()[:16]
    return f"BS{kind.upper()}{digest}", f"bs-{kind}-{digest[:8]}"


def fold_html(imports: str) -> str:
    n = len([l for l in imports.split("\n") if l.strip()])
    return (f'<details class="bs-fold"><summary>code: imports <small>({n} line{"s" if n != 1 else ""}, '
            f"click to show)</small></summary>{code_html(imports)}</details>")


def _fold_cells(cells) -> tuple[list, dict[str, str]]:
    """The cells with test markers stripped and imports folded (see the module docstring)."""
    out, blocks, pending = [], {}, []

    def flush():
        if pending:
            imports = "\n\n".join(pending)
            marker, cell_id = _marker("fold", imports)
            blocks[marker] = fold_html(imports)
            out.append(nbformat.v4.new_markdown_cell(marker, id=cell_id))
            pending.clear()

    for cell in cells:
        if cell.cell_type != "code":
            flush()
            out.append(cell)
            continue
        cell.source = strip_test_markers(cell.source)
        imports, rest = split_imports(cell.source)
        if imports:
            pending.append(imports)
        if rest.strip() or cell.get("outputs"):
            flush()
            cell.source = rest.strip("\n")
            if not cell.source:   # an import-only cell that printed something: its outputs stay
                cell.metadata.setdefault("transient", {})["remove_source"] = True
            out.append(cell)
    flush()
    return out, blocks


def _take_paragraph(text: str) -> tuple[str, str]:
    """``(first prose paragraph, text without it)`` of a markdown text; ``("", text)`` if none."""
    lines = text.split("\n")
    start = next((i for i, l in enumerate(lines) if l.strip() and not NOT_PROSE.match(l)), None)
    if start is None:
        return "", text
    end = start
    while end < len(lines) and lines[end].strip() and not NOT_PROSE.match(lines[end]):
        end += 1
    return "\n".join(lines[start:end]), "\n".join(lines[:start] + lines[end:]).strip("\n")


def _markdown_html(text: str) -> str:
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    return markdown2html_mistune(text)


def summary_html(findings: list[tuple[int, dict]], paragraph: str = "") -> str:
    """The "what this page shows" box: the numbered findings (``(number, finding)`` pairs, their
    numbers as on the index), else ``paragraph`` (markdown); ``""`` when both are empty."""
    title = '<p class="bs-summary-title">What this page shows</p>'
    if findings:
        items = "".join(f'<li value="{i}">{html.escape(f["sentence"])}</li>' for i, f in findings)
        return (f'<aside class="bs-summary" id="what-this-page-shows">{title}<ol>{items}</ol>'
                '<p class="bs-summary-more">Key findings of the study, numbered as on the '
                '<a href="index.html#findings">report index</a>.</p></aside>')
    if paragraph.strip():
        return f'<aside class="bs-summary" id="what-this-page-shows">{title}{_markdown_html(paragraph)}</aside>'
    return ""


def _add_summary(cells, findings: list[tuple[int, dict]]) -> tuple[list, dict[str, str]]:
    """The cells with the summary box after the first heading (at the top without one)."""
    at, head, rest = 0, None, None
    for i, cell in enumerate(cells):
        if cell.cell_type == "markdown" and HEADING.match(cell.source.lstrip("\n")):
            lines = cell.source.lstrip("\n").split("\n")
            at, head, rest = i, lines[0], "\n".join(lines[1:]).strip("\n")
            break
    paragraph = ""
    if not findings and rest is not None:
        paragraph, rest = _take_paragraph(rest)
    box = summary_html(findings, paragraph)
    if not box:
        return cells, {}
    marker, cell_id = _marker("summary", box)
    inserted = [nbformat.v4.new_markdown_cell(marker, id=cell_id)]
    if head is None:
        return inserted + list(cells), {marker: box}
    first = cells[at]
    first.source = head
    if rest:
        inserted.append(nbformat.v4.new_markdown_cell(rest, id=f"{cell_id}-rest"))
    return list(cells[:at + 1]) + inserted + list(cells[at + 1:]), {marker: box}


def prepare_cells(nb, page: str, findings=()) -> tuple[object, dict[str, str]]:
    """``(nb, blocks)``: ``nb`` (changed in place: pass a copy) with test markers stripped,
    imports folded and the summary box placed; ``blocks`` maps each marker paragraph to the
    HTML that replaces it once rendered. ``page``: the notebook's stem (``04_comparison_table``);
    ``findings``: every key finding of the study, in order (those of this page are shown)."""
    cells, blocks = _fold_cells(nb.cells)
    mine = [(i, f) for i, f in enumerate(findings, 1) if f.get("page") == page]
    cells, box = _add_summary(cells, mine)
    nb.cells = cells
    return nb, {**blocks, **box}


def put_blocks(body: str, blocks: dict[str, str]) -> str:
    """``body`` with each marker paragraph replaced by its block's HTML."""
    for marker, block in blocks.items():
        body, n = re.subn(r"<p>\s*" + marker + r"\s*</p>", lambda m: block, body, count=1)
        if not n:
            raise ValueError(f"the marker {marker} did not survive nbconvert")
    return body


def bottom_nav(nav: str) -> str:
    """The navigation bar ``nav`` (``nav_bar``) again, for the foot of the page."""
    return nav.replace('class="bs-nav"', 'class="bs-nav bs-nav-bottom"', 1)
