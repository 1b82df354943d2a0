"""Notebook pages that read as a study (issue 26, item 4; brainseg_lib.report.html_study):
imports folded away, test markers gone, a "what this page shows" box, navigation at the foot."""
from __future__ import annotations

import re

import nbformat
import pytest

from brainseg_lib.report import html_study
from brainseg_lib.report import key_findings as kf
from brainseg_lib.report.html import check_report, render_report

v4 = nbformat.v4


def _write(executed):
    executed.mkdir(parents=True)
    a = v4.new_notebook()
    a.cells = [
        v4.new_markdown_cell("# 01 · Alpha: the data\n\nWe count the files here.\n\n## Details\n\nMore."),
        v4.new_code_cell("# NBVAL_CHECK_OUTPUT\n# the tools\n%matplotlib inline\nimport numpy as np\n"
                         "from brainseg_lib.report import (\n    plots,\n    findings,\n)\n"
                         "pd.set_option('display.precision', 4)\n", execution_count=1),
        v4.new_code_cell("import pandas as pd", execution_count=2),
        v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nimport os\n\nprint(os.sep)", execution_count=3,
                         outputs=[v4.new_output("stream", name="stdout", text="/\n")]),
    ]
    b = v4.new_notebook()
    b.cells = [
        v4.new_markdown_cell("# 02 · Beta: training\n\nThe model trains [as in](01_alpha.ipynb) the "
                             "paper, **quickly**.\n\nA second paragraph stays where it is."),
        v4.new_code_cell("x = 1  # NBVAL_CHECK_OUTPUT stays: not a marker line\nprint(x)", execution_count=1),
    ]
    c = v4.new_notebook()
    c.cells = [v4.new_code_cell("print('no heading, no prose')", execution_count=1),
               v4.new_code_cell("import json", execution_count=2),
               v4.new_code_cell("x = 2", execution_count=3),
               v4.new_code_cell("import csv\nprint(csv)", execution_count=4)]
    for name, nb in (("01_alpha", a), ("02_beta", b), ("03_gamma", c)):
        nbformat.write(nb, executed / f"{name}.ipynb")


FINDING = {"key": "leakage", "sentence": "Half of <TEST> leaks.", "figure": 0.5, "ci95": [0.4, 0.6],
           "page": "01_alpha"}
OTHER = {**FINDING, "key": "seeds", "sentence": "Seeds matter.", "page": "09_elsewhere"}


@pytest.fixture
def pages(tmp_path, monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setenv("BRAINSEG_RESULTS", str(results))
    _write(results / "executed")
    monkeypatch.setattr(kf, "key_findings", lambda results_dir=None: [OTHER, FINDING])
    out = render_report().parent
    assert check_report(out) == []
    return {p.stem: p.read_text() for p in out.glob("0*.html")}


def _main(page):
    """The page without its head and its folded blocks: what a reader sees unfolded."""
    body = page.split("<body", 1)[1]
    return re.sub(r'<details class="bs-fold">.*?</details>', "", body, flags=re.DOTALL)


@pytest.mark.parametrize("source, imports, rest", [
    ("import os\nimport sys", "import os\nimport sys", ""),
    ("# tools\n%matplotlib inline\nfrom a import (\n    b,\n    c)\npd.set_option('x', 1)\n",
     "# tools\n%matplotlib inline\nfrom a import (\n    b,\n    c)\npd.set_option('x', 1)", ""),
    ("import os\n\nfrom a import b\nx = os.sep\n# a note\ny = 2", "import os\n\nfrom a import b",
     "x = os.sep\n# a note\ny = 2"),
    ("x = 1\nimport os", "", "x = 1\nimport os"),               # imports after code stay
    ("# only a comment", "", "# only a comment"),
    ("important = 1\nfrom_x = 2", "", "important = 1\nfrom_x = 2"),
])
def test_split_imports(source, imports, rest):
    assert html_study.split_imports(source) == (imports, rest)


def test_test_markers_are_stripped_but_not_code_mentioning_them():
    src = "# NBVAL_CHECK_OUTPUT\n  #NBVAL_IGNORE_OUTPUT\nx = 1  # NBVAL_CHECK_OUTPUT\nprint(x)"
    assert html_study.strip_test_markers(src) == "x = 1  # NBVAL_CHECK_OUTPUT\nprint(x)"


def test_imports_are_folded_into_collapsed_details(pages):
    alpha = pages["01_alpha"]
    folds = re.findall(r'<details class="bs-fold">(.*?)</details>', alpha, flags=re.DOTALL)
    # cells 2 and 3 (import-only) and cell 4's leading import follow each other: one block
    assert len(folds) == 1 and "code: imports" in folds[0] and "(10 lines" in folds[0]
    assert "<details class=\"bs-fold\" open" not in alpha          # collapsed by default
    text = re.sub(r"<[^>]+>", "", folds[0])
    assert all(w in text for w in ("numpy", "set_option", "pandas", "import os", "# the tools"))
    seen = _main(alpha)
    for hidden in ("numpy", "set_option", "matplotlib", "pandas", "import"):
        assert hidden not in re.sub(r"<[^>]+>", "", seen.split("</style>")[-1]), hidden
    assert "print" in seen and "/\n" in seen                   # the rest of cell 4 and its output
    gamma = re.findall(r'<details class="bs-fold">(.*?)</details>', pages["03_gamma"], flags=re.DOTALL)
    assert len(gamma) == 2 and "json" in gamma[0] and "csv" in gamma[1]   # code between: two blocks


def test_test_markers_are_gone_from_every_page(pages):
    for page in pages.values():
        assert "NBVAL_CHECK_OUTPUT\n" not in page and not re.search(r"#\s*NBVAL_CHECK_OUTPUT\s*<", page)
    assert "not a marker line" in pages["02_beta"]


def test_summary_box_lists_this_pages_findings(pages):
    alpha = pages["01_alpha"]
    box = re.search(r'<aside class="bs-summary".*?</aside>', alpha, flags=re.DOTALL).group(0)
    assert "What this page shows" in box and "Half of &lt;TEST&gt; leaks." in box
    assert '<li value="2">' in box and "Seeds matter" not in box   # numbered as on the index
    assert 'href="index.html#findings"' in box
    body = alpha.split("<body", 1)[1]
    assert body.index("01 · Alpha: the data") < body.index('<aside class="bs-summary"') < body.index(">Details")
    assert "We count the files here." in alpha                 # the intro stays under the box


def test_without_a_finding_the_box_holds_the_first_paragraph(pages):
    beta = pages["02_beta"]
    box = re.search(r'<aside class="bs-summary".*?</aside>', beta, flags=re.DOTALL).group(0)
    assert "<strong>quickly</strong>" in box and 'href="01_alpha.html"' in box   # its link fixed
    assert beta.count("The model trains") == 1                 # moved, not repeated
    assert "A second paragraph stays" not in box and "A second paragraph stays" in beta
    assert "bs-summary\"" not in pages["03_gamma"]              # nothing to say: no box


def test_navigation_at_the_top_and_at_the_foot(pages):
    beta = pages["02_beta"]
    navs = re.findall(r'<nav class="bs-nav[^"]*">.*?</nav>', beta, flags=re.DOTALL)
    assert len(navs) == 2 and "bs-nav-bottom" in navs[1]
    for nav in navs:
        assert 'href="01_alpha.html"' in nav and 'href="03_gamma.html"' in nav and 'href="index.html"' in nav
    assert beta.rindex("bs-nav-bottom") > beta.rindex("not a marker line")   # after the last cell
    assert beta.index("bs-nav-bottom") > beta.index("</main>")
