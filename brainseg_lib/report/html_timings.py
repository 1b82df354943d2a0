"""The report's run-times page, ``run_times.html``: how long each notebook ran, when, on which
machine, and when the report was rendered.

Everything that changes from one run to the next with identical results lives here and in
``timings/``, never on the index or the notebook pages: a re-run that reproduces the study
changes only timing files (``git status``). The seconds come from the run's timings file
(``timings/run_all_<profile>.json``, written by ``study.notebooks.run_notebooks``), beside the
executed notebooks or in the results folder; executed copies from before the timings file
carry them in their papermill metadata instead.
"""
from __future__ import annotations

import html
import json
from datetime import datetime
from pathlib import Path

from brainseg_lib.report.html_index import INDEX_CSS, NotebookInfo, duration_text

PAGE = "run_times.html"


def _timings_file(notebooks: list[NotebookInfo], results: Path) -> dict:
    """The timings JSON of the notebooks' profile ({} when none is found)."""
    profiles = sorted({n.profile for n in notebooks if n.profile})
    for profile in profiles or ["*"]:
        for folder in (notebooks[0].path.parent.parent / "timings", Path(results) / "timings"):
            for f in sorted(folder.glob(f"run_all_{profile}.json")):
                try:
                    return json.loads(f.read_text("utf-8"))
                except (OSError, ValueError):
                    continue
    return {}


def run_times(notebooks: list[NotebookInfo], results: Path) -> dict:
    """``{"seconds": {stem: s}, "before": {...}, "machine": ..., "date": ...}`` of the run."""
    t = _timings_file(notebooks, results)
    seconds = {n.path.stem: (t.get("notebooks") or {}).get(n.path.stem, n.duration)
               for n in notebooks}
    ends = sorted(n.end_time for n in notebooks if n.end_time)
    return {"seconds": seconds, "before": t.get("before_notebooks") or {},
            "machine": t.get("machine"), "date": t.get("date") or (ends[-1][:10] if ends else None)}


def run_times_html(notebooks: list[NotebookInfo], results: Path) -> str:
    """The whole ``run_times.html`` page."""
    r = run_times(notebooks, results)
    rows = [f'<tr><td><a href="{n.page}">{html.escape(n.title)}</a></td>'
            f"<td>{duration_text(r['seconds'][n.path.stem]) or 'not recorded'}</td></tr>"
            for n in notebooks]
    rows += [f"<tr><td>before the notebooks: {html.escape(k)}</td><td>{duration_text(v)}</td></tr>"
             for k, v in r["before"].items()]
    total = sum(v for v in [*r["seconds"].values(), *r["before"].values()] if v)
    where = ", ".join(html.escape(str(x)) for x in (r["machine"], r["date"]) if x)
    stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>brainseg: run times of the executed study</title>
<style>{INDEX_CSS}</style>
</head>
<body>
<main>
<p class="meta"><a href="index.html">Back to the report</a></p>
<h1>Run times</h1>
<p>How long each notebook ran in <code>./run_all.sh</code>{f" ({where})" if where else ""}:
{duration_text(total) or "not recorded"} in all. These numbers change from run to run; they
are kept on this page (and in <code>timings/</code>) so that every other page changes only
when a result does.</p>
<div class="table-wrap"><table>
<thead><tr><th>notebook</th><th>wall time</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table></div>
<p class="note">Rendered {html.escape(stamp)} by <code>python -m brainseg_lib report</code>.</p>
</main>
</body>
</html>
"""
