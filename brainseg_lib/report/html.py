"""The HTML report of the executed study: ``results/report/``.

``render_report()`` turns ``results/executed/*.ipynb`` into one page per notebook (nbconvert,
see ``html_notebook.py``) plus an ``index.html`` holding the headline Table I, the key figures
(copied into ``report/figures/``) and a link to each notebook page, in the order of the study.
The folder is self-contained (images embedded or next to the pages, no server, no network)
and is built in a temp folder next to its destination, then renamed into place: a failed
render leaves the previous report as it was. ``check_report()`` lists every broken link or
image (``html_check.py``). Command line: ``python -m brainseg_lib report``.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from brainseg_lib import fileio, paths
from brainseg_lib.report.html_check import check_report
from brainseg_lib.report.html_index import (
    KEY_FIGURES,
    NotebookInfo,
    index_html,
    load_notebooks,
)
from brainseg_lib.report.html_notebook import (
    SHARED_CSS,
    move_head_css,
    nav_bar,
    render_notebook,
)
from brainseg_lib.report.html_timings import PAGE as RUN_TIMES_PAGE
from brainseg_lib.report.html_timings import run_times_html

__all__ = [
    "KEY_FIGURES",
    "add_report_parser",
    "check_report",
    "cmd_report",
    "load_notebooks",
    "render_report",
]

# ---- building and publishing --------------------------------------------------------------

def _build(out: Path, notebooks: list[NotebookInfo], results: Path) -> None:
    from brainseg_lib.report.key_findings import key_findings
    findings = key_findings(results)   # each page's "what this page shows"
    sheets = set()
    for i, n in enumerate(notebooks):
        prev = (notebooks[i - 1].page, notebooks[i - 1].title) if i > 0 else None
        nxt = (notebooks[i + 1].page, notebooks[i + 1].title) if i + 1 < len(notebooks) else None
        nav = nav_bar(f"notebook {i + 1} of {len(notebooks)}", prev, nxt)
        page, css = move_head_css(render_notebook(n.nb, n.title, nav, pages={m.page for m in notebooks},
                                                  source_dir=paths.NOTEBOOKS_DIR, page=n.path.stem,
                                                  findings=findings))
        sheets.add(css)
        fileio.atomic_write_text(out / n.page, page)
    if len(sheets) > 1:
        raise ValueError("notebook pages came out with different stylesheets; cannot share one")
    if sheets:
        fileio.atomic_write_text(out / SHARED_CSS, sheets.pop())
    fileio.atomic_write_text(out / "index.html", index_html(notebooks, results, out))
    fileio.atomic_write_text(out / RUN_TIMES_PAGE, run_times_html(notebooks, results))


SCREENSHOTS = "screenshots"   # report/screenshots/: made by hand (``screenshots``), kept


def keep_screenshots(old_report: Path, new_report: Path) -> None:
    """Copy ``old_report/screenshots`` into ``new_report`` when the new one has none: they are
    taken by ``python -m brainseg_lib screenshots``, not by a render, and a re-render must
    not delete the committed ones."""
    old, new = Path(old_report) / SCREENSHOTS, Path(new_report) / SCREENSHOTS
    if old.is_dir() and not new.exists() and Path(new_report).is_dir():
        shutil.copytree(old, new)


def _publish(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``, replacing a previous report (kept until the swap is done)."""
    keep_screenshots(out_dir, tmp)
    old = None
    if out_dir.exists() or out_dir.is_symlink():
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def render_report(executed_dir: Path | None = None, out_dir: Path | None = None) -> Path:
    """Render the report of the executed notebooks in ``executed_dir`` (default
    ``results/executed``) into ``out_dir`` (default ``results/report``), replacing it in one
    rename; Table I and the key figures come from ``paths.results_dir()``. Returns the path
    of ``index.html``."""
    executed_dir = Path(executed_dir) if executed_dir is not None else paths.executed_dir()
    out_dir = Path(out_dir) if out_dir is not None else paths.report_dir()
    notebooks = load_notebooks(executed_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        os.chmod(tmp, 0o777 & ~fileio.UMASK)
        _build(tmp, notebooks, paths.results_dir())
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "index.html"


# ---- command line -------------------------------------------------------------------------

def add_report_parser(subparsers):
    """Add the ``report`` command to ``python -m brainseg_lib`` (``subparsers`` from
    ``ArgumentParser.add_subparsers``)."""
    p = subparsers.add_parser(
        "report", help="render results/report/: index.html + one HTML page per executed notebook")
    p.add_argument("--executed", type=Path, default=None,
                   help="folder of executed notebooks (default: results/executed)")
    p.add_argument("--out", type=Path, default=None,
                   help="report folder, replaced as a whole (default: results/report)")
    p.set_defaults(fn=cmd_report)
    return p


def cmd_report(args) -> int:
    """Render, then check every link and image; exit 1 (report kept) if any is broken."""
    index = render_report(args.executed, args.out)
    problems = check_report(index.parent)
    for problem in problems:
        print(f"broken: {problem}", file=sys.stderr)
    print(f"{index}" + (f"  ({len(problems)} broken links)" if problems else ""))
    return 1 if problems else 0
