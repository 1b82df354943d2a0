"""docs/reporting_checklist.md: every repository path it cites exists, every item of both
checklists is answered (a path, or "not applicable" / "not available" with a reason), both item
lists are complete, and no result figure is typed into it.

The checklist's backticks hold repository paths and nothing else. A path may end in
``#anchor``: the anchor must then name a heading of that Markdown file (GitHub's slug rule), so
a renamed section breaks the test as a renamed file does. A path with glob characters must match
at least one file. The item lists are those of CLAIM 2024 (Tejani et al., Radiology: AI 2024,
44 items) and TRIPOD+AI (Collins et al., BMJ 2024, 27 items numbered as 52 sub-items).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reporting_checklist.md"

CLAIM_ITEMS = [str(k) for k in range(1, 45)]
TRIPOD_ITEMS = (
    "1 2 3a 3b 3c 4 5a 5b 6a 6b 6c 7 8a 8b 8c 9a 9b 9c 10 11 12a 12b 12c 12d 12e 12f 12g "
    "13 14 15 16 17 18a 18b 18c 18d 18e 18f 19 20a 20b 20c 21 22 23a 23b 24 25 26 27a 27b 27c"
).split()

ITEM_ROW = re.compile(r"^\|\s*(\d+[a-z]?)\s*\|(.*)\|\s*$")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
# "Not applicable: <reason>" / "Not available: <reason>", the reason at least four words
EXEMPT = re.compile(r"\bnot (?:applicable|available)\b\s*:\s*\S+(?:\s+\S+){3,}", re.IGNORECASE)
GLOB_CHARS = set("*?[")
# a typed result: a figure such as 0.86 or a percentage (DOIs, years and item numbers pass)
RESULT_FIGURE = re.compile(r"(?<![\w.])0\.\d|\d\s?%")


def slugs(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings (fenced code skipped; a repeated
    heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        m = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not m:
            continue
        text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(text, 0)
        seen[text] = n + 1
        out.add(text if n == 0 else f"{text}-{n}")
    return out


def path_problem(ref: str, root: Path = ROOT) -> str | None:
    """Why a cited ``ref`` (a path, maybe with ``#anchor`` or glob characters) does not resolve
    inside ``root``, or None when it does."""
    path, _, anchor = ref.partition("#")
    if not path or path.startswith(("/", "~")) or ".." in Path(path).parts:
        return f"{ref!r}: not a path inside the repository"
    if GLOB_CHARS & set(path):
        return None if any(root.glob(path)) else f"{ref!r}: the glob matches no file"
    target = root / path
    if not target.exists():
        return f"{ref!r}: no such file or folder"
    if anchor:
        if target.suffix.lower() != ".md" or not target.is_file():
            return f"{ref!r}: an anchor needs a Markdown file"
        if anchor not in slugs(target.read_text(encoding="utf-8")):
            return f"{ref!r}: {path} has no heading with that anchor"
    return None


def cited(text: str) -> list[str]:
    return CODE_SPAN.findall(text)


def section(text: str, title_start: str) -> str:
    """The body of the ``## <title_start>...`` section, up to the next ``## `` heading."""
    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    found = [p for p in parts[1:] if p.startswith(title_start)]
    assert len(found) == 1, f"expected one '## {title_start}' section, found {len(found)}"
    return found[0]


def item_rows(body: str) -> list[tuple[str, str]]:
    """(item id, answer cell) of every table row whose first cell is an item number."""
    rows = []
    for line in body.splitlines():
        m = ITEM_ROW.match(line.strip())
        if m:
            rows.append((m.group(1), m.group(2).split("|")[-1].strip()))
    return rows


def unanswered(answer: str) -> bool:
    """An answer needs a cited path, or an explicit not applicable / not available with a reason."""
    return not cited(answer) and not EXEMPT.search(answer)


@pytest.fixture(scope="module")
def doc() -> str:
    assert DOC.is_file(), f"{DOC.relative_to(ROOT)} is missing"
    return DOC.read_text(encoding="utf-8")


def test_every_cited_path_exists(doc):
    refs = cited(doc)
    assert len(refs) > 100, "the checklist cites almost no files: did the backticks get lost?"
    problems = sorted({p for p in map(path_problem, refs) if p})
    assert not problems, "cited paths that do not resolve:\n" + "\n".join(problems)


@pytest.mark.parametrize("title, expected", [("CLAIM 2024", CLAIM_ITEMS),
                                             ("TRIPOD+AI", TRIPOD_ITEMS)])
def test_the_checklist_lists_every_item_once_in_order(doc, title, expected):
    ids = [i for i, _ in item_rows(section(doc, title))]
    assert ids == expected


def test_the_counts_in_the_headings_are_the_item_counts(doc):
    assert len(CLAIM_ITEMS) == 44
    assert len(TRIPOD_ITEMS) == 52 and len({re.match(r"\d+", i).group() for i in TRIPOD_ITEMS}) == 27
    assert re.search(r"^## CLAIM 2024 \(44 items\)$", doc, re.MULTILINE)
    assert re.search(r"^## TRIPOD\+AI \(27 items, 52 sub-items\)$", doc, re.MULTILINE)


@pytest.mark.parametrize("title", ["CLAIM 2024", "TRIPOD+AI"])
def test_every_item_is_answered(doc, title):
    missing = [i for i, answer in item_rows(section(doc, title)) if unanswered(answer)]
    assert not missing, f"{title} items with neither a path nor a reason: {missing}"


def test_no_result_figure_is_typed_into_the_checklist(doc):
    typed = [line for line in doc.splitlines() if RESULT_FIGURE.search(line)]
    assert not typed, "point at the file that holds a result instead:\n" + "\n".join(typed)


def test_the_checker_flags_wrong_paths_and_anchors():
    assert path_problem("brainseg_lib/evaluation/metrics.py") is None
    assert path_problem("results/metrics/*.json") is None
    assert path_problem("README.md#metrics") is None
    for bad in ["brainseg_lib/evaluation/metric.py", "results/metrics/*.nothing",
                "README.md#no-such-section", "brainseg_lib/paths.py#metrics",
                "../README.md", "/etc/passwd", "#metrics"]:
        assert path_problem(bad), bad


def test_the_checker_flags_an_unanswered_item():
    assert not unanswered("`README.md`")
    assert not unanswered("Not available: Br35H publishes no annotator details")
    assert unanswered("Partly, see the README")
    assert unanswered("Not available")
    assert unanswered("not applicable: none")


def test_slugs_follow_github_and_skip_code():
    md = "# Findings: is the claim real?\n```bash\n# not a heading\n```\n## Metrics\n## Metrics\n"
    assert slugs(md) == {"findings-is-the-claim-real", "metrics", "metrics-1"}
