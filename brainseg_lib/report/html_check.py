"""Link check of a rendered HTML report (``check_report``).

Every ``href``/``src`` of every ``*.html`` file under the report folder is checked:

* a relative link must name a file that exists **inside** the report folder (the report is
  moved as one folder, so ``../figures/x.png`` counts as broken), and a ``#fragment`` on an
  HTML page must name an ``id`` (or ``name``) of that page;
* a ``data:`` URI must be well formed (``data:<type>[;base64],<payload>``, the base64 payload
  decodable, a PNG/JPEG/GIF payload starting with its signature);
* an absolute file path or ``file:`` URL is broken (it only works on the machine that wrote it);
* a resource the page *loads* (``img``/``script``/``iframe``/``source`` ``src``, a stylesheet
  ``link``) from the network is reported too: the report must open offline. Plain hyperlinks
  to web pages (``<a href="https://...">``) are fine.
"""
from __future__ import annotations

import base64
import binascii
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

_SIGNATURES = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
    "image/gif": b"GIF8",
}
_LOADED = {("img", "src"), ("script", "src"), ("iframe", "src"), ("source", "src"),
           ("video", "src"), ("audio", "src"), ("embed", "src"), ("input", "src")}


class _Refs(HTMLParser):
    """Collects (tag, attribute, value, line) of every link and every id of one page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str, str, int]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        for key in ("href", "src"):
            if a.get(key) is not None:
                if tag == "link" and "stylesheet" not in (a.get("rel") or "").lower() \
                        and "icon" not in (a.get("rel") or "").lower():
                    continue
                self.refs.append((tag, key, a[key], self.getpos()[0]))

    handle_startendtag = handle_starttag


def _parse(page: Path) -> _Refs:
    p = _Refs()
    p.feed(page.read_text(encoding="utf-8", errors="replace"))
    p.close()
    return p


def check_data_uri(uri: str) -> str | None:
    """None if ``uri`` is a well-formed ``data:`` URI, else why not."""
    head, sep, payload = uri[5:].partition(",")
    if not sep:
        return "data: URI without a comma"
    parts = head.split(";")
    mime = parts[0].strip().lower()
    if mime and not re.fullmatch(r"[\w.+-]+/[\w.+-]+", mime):
        return f"data: URI with a malformed media type {parts[0]!r}"
    if "base64" in (p.strip().lower() for p in parts[1:]):
        try:
            raw = base64.b64decode(re.sub(r"\s+", "", unquote(payload)), validate=True)
        except (binascii.Error, ValueError) as e:
            return f"data: URI with a bad base64 payload ({e})"
        if not raw:
            return "data: URI with an empty payload"
        sig = _SIGNATURES.get(mime)
        if sig and not raw.startswith(sig):
            return f"data: URI payload is not a {mime} image"
    elif not payload:
        return "data: URI with an empty payload"
    return None


def check_report(out_dir: str | Path) -> list[str]:
    """Every broken link or image of the report in ``out_dir``, as ``page:line: tag attr='value':
    why`` strings; ``[]`` when every link and image resolves. A missing or empty report folder
    is reported as a problem too."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return [f"{out_dir}: no report folder"]
    pages = sorted(out_dir.rglob("*.html"))
    if not pages:
        return [f"{out_dir}: no HTML page"]
    root = out_dir.resolve()
    parsed = {p.resolve(): _parse(p) for p in pages}
    problems = []
    for page, refs in parsed.items():
        name = page.relative_to(root).as_posix()
        for tag, attr, value, line in refs.refs:
            why = _check_one(page, root, parsed, tag, attr, value.strip())
            if why:
                shown = value if len(value) <= 80 else value[:60] + "..."
                problems.append(f"{name}:{line}: <{tag} {attr}={shown!r}>: {why}")
    return problems


def _check_one(page: Path, root: Path, parsed: dict, tag: str, attr: str, value: str) -> str | None:
    if not value:
        return "empty link"
    if value.lower().startswith("data:"):
        return check_data_uri(value)
    url = urlsplit(value)
    scheme = url.scheme.lower()
    if scheme == "file" or value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", value):
        return "absolute file path (only works on the machine that wrote it)"
    if scheme or value.startswith("//"):
        loaded = (tag, attr) in _LOADED or tag == "link"
        if loaded and scheme in ("http", "https", ""):
            return "loaded from the network (the report must open offline)"
        return None  # a hyperlink to a web page, mailto:, javascript:
    target = page if not url.path else (page.parent / unquote(url.path)).resolve()
    try:
        target.relative_to(root)
    except ValueError:
        return "points outside the report folder"
    if not target.exists():
        return "no such file"
    if target.is_dir():
        target = target / "index.html"
        if not target.exists():
            return "folder without index.html"
    if url.fragment and target.suffix == ".html":
        ids = parsed[target].ids if target in parsed else _parse(target).ids
        if unquote(url.fragment) not in ids and url.fragment not in ids:
            return f"no anchor #{url.fragment} in {target.name}"
    return None
