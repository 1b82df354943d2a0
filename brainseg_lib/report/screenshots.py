"""Screenshots of the HTML report in headless Chromium, and a check in the browser that nothing
is wider than the page without a scrollbar: ``python -m brainseg_lib screenshots``.

Every page of ``results/report/`` (or ``--report``) is opened at 1366x900 (``--size``):

* its first screen is saved as ``<report>/screenshots/<page>.png`` (``--full-page``: the whole
  page, as tall as it is, up to ``MAX_HEIGHT`` pixels);
* a copy of the page with ``CHECK_JS`` added runs in Chromium (``--dump-dom``): the script lists
  every element that reaches past the right edge of the window and is not inside a box that
  scrolls sideways, every box that cuts its content off without a scrollbar
  (``overflow: hidden`` / ``clip``), and whether the page itself scrolls sideways; boxes that
  do scroll are listed too, with whether their scrollbar takes room (is visible);
* ``<report>/screenshots/summary.json`` holds the findings per page and ``ok``.

Exit status 0 when no page overflows, 1 when some does (each named on stderr), 2 when the
report or Chromium is missing (one line says which). Chromium is found as ``$BRAINSEG_CHROMIUM``
or ``chromium``, ``chromium-browser``, ``google-chrome`` on the PATH (Debian: ``apt-get install
chromium``). Only the standard library is used; the report itself is never modified (the
checked copies live in a temporary folder).
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SIZE = (1366, 900)
MAX_HEIGHT = 16000
TIMEOUT_S = 120

# runs in the page after it loads; writes its findings as JSON into <pre id="bs-overflow">
CHECK_JS = r"""
(function () {
  function run() {
    var vw = document.documentElement.clientWidth, out = {viewport: vw,
      page_width: document.documentElement.scrollWidth,
      page_height: document.documentElement.scrollHeight, overflowing: [], clipped: [], scrolling: []};
    function name(el) {
      var s = el.tagName.toLowerCase();
      if (el.id) s += "#" + el.id;
      if (typeof el.className === "string" && el.className.trim())
        s += "." + el.className.trim().split(/\s+/).slice(0, 2).join(".");
      var t = (el.innerText || el.getAttribute("alt") || "").trim().replace(/\s+/g, " ");
      return t ? s + " \"" + t.slice(0, 60) + "\"" : s;
    }
    function scroller(el) {
      for (var p = el.parentElement; p && p !== document.body; p = p.parentElement) {
        var ox = getComputedStyle(p).overflowX;
        if (ox === "auto" || ox === "scroll") return p;
      }
      return null;
    }
    var all = document.body.getElementsByTagName("*");
    for (var i = 0; i < all.length; i++) {
      var el = all[i], cs = getComputedStyle(el);
      if (cs.display === "none" || cs.visibility === "hidden" || el.id === "bs-overflow") continue;
      var r = el.getBoundingClientRect();
      if ((cs.overflowX === "hidden" || cs.overflowX === "clip") && el.scrollWidth > el.clientWidth + 1)
        out.clipped.push({element: name(el), width: el.scrollWidth, shown: el.clientWidth});
      if ((cs.overflowX === "auto" || cs.overflowX === "scroll") && el.scrollWidth > el.clientWidth + 1)
        out.scrolling.push({element: name(el), width: el.scrollWidth, shown: el.clientWidth,
          scrollbar_px: el.offsetHeight - el.clientHeight
            - parseFloat(cs.borderTopWidth) - parseFloat(cs.borderBottomWidth)});
      if (r.width > 0 && r.right > vw + 1 && !scroller(el) && el.tagName !== "HTML")
        out.overflowing.push({element: name(el), right: Math.round(r.right)});
    }
    var pre = document.createElement("pre");
    pre.id = "bs-overflow"; pre.style.display = "none";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  if (document.readyState === "complete") run(); else window.addEventListener("load", run);
})();
"""


class NoBrowser(RuntimeError):
    """No headless Chromium on this machine."""


def find_browser() -> str:
    """The Chromium to run, or NoBrowser with the one line that says how to get one."""
    for name in filter(None, (os.environ.get("BRAINSEG_CHROMIUM"), *BROWSERS)):
        found = shutil.which(name)
        if found:
            return found
    raise NoBrowser("headless Chromium not found (install it, e.g. `apt-get install chromium`, "
                    "or set BRAINSEG_CHROMIUM); no screenshot taken")


def _chromium(browser: str, size: tuple[int, int], *args: str) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu",
           "--no-first-run", "--disable-extensions", f"--window-size={size[0]},{size[1]}",
           "--virtual-time-budget=5000", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    if r.returncode:
        raise RuntimeError(f"chromium failed ({r.returncode}): {r.stderr.strip()[-300:]}")
    return r.stdout


def check_page(browser: str, page: Path, size: tuple[int, int] = SIZE) -> dict:
    """The overflow findings of one page (a copy in ``page``'s own folder is what runs)."""
    text = page.read_text("utf-8")
    script = f"<script>{CHECK_JS}</script>"
    text = text.replace("</body>", script + "</body>", 1) if "</body>" in text else text + script
    probe = page.with_name(f".bs-check-{page.name}")
    probe.write_text(text, "utf-8")
    try:
        dom = _chromium(browser, size, "--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    m = re.search(r'<pre id="bs-overflow"[^>]*>(.*?)</pre>', dom, re.DOTALL)
    if not m:
        raise RuntimeError(f"{page.name}: the check script did not report (page did not load?)")
    found = json.loads(html.unescape(m.group(1)))
    found["ok"] = (not found["overflowing"] and not found["clipped"]
                   and found["page_width"] <= found["viewport"])
    return found


def screenshot(browser: str, page: Path, png: Path, size: tuple[int, int] = SIZE) -> Path:
    """Save the page as seen in a window of ``size`` (its first screen) to ``png``."""
    png.parent.mkdir(parents=True, exist_ok=True)
    _chromium(browser, size, f"--screenshot={png}", page.as_uri())
    if not png.is_file():
        raise RuntimeError(f"{page.name}: chromium wrote no screenshot")
    return png


def _problems(page: str, found: dict) -> list[str]:
    out = [f"{page}: {o['element']} reaches x={o['right']} past the {found['viewport']} px window"
           for o in found["overflowing"][:5]]
    out += [f"{page}: {c['element']} cuts off {c['width'] - c['shown']} px with no scrollbar"
            for c in found["clipped"][:5]]
    if found["page_width"] > found["viewport"]:
        out.append(f"{page}: the page itself is {found['page_width']} px wide")
    out += [f"{page}: {s['element']} scrolls sideways without a visible scrollbar"
            for s in found["scrolling"] if s["scrollbar_px"] <= 0][:5]
    return out


def run_screenshots(report_dir: Path, full_page: bool = False, size: tuple[int, int] = SIZE) -> dict:
    """Screenshot and check every page of ``report_dir``; writes and returns the summary."""
    browser = find_browser()
    pages = sorted(Path(report_dir).glob("*.html"))
    if not pages:
        raise FileNotFoundError(f"no HTML page in {report_dir} (run python -m brainseg_lib report)")
    shots = Path(report_dir) / "screenshots"
    summary = {"window": f"{size[0]}x{size[1]}", "full_page": full_page, "pages": {}, "problems": []}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "report"
        shutil.copytree(report_dir, copy, ignore=shutil.ignore_patterns("screenshots"))
        for page in pages:
            found = check_page(browser, copy / page.name, size)
            # a visible scrollbar takes room; a box whose bar takes none hides its overflow
            found["ok"] = found["ok"] and all(s["scrollbar_px"] > 0 for s in found["scrolling"])
            tall = (size[0], min(MAX_HEIGHT, max(size[1], found["page_height"])))
            png = screenshot(browser, copy / page.name, shots / f"{page.stem}.png",
                             tall if full_page else size)
            found["screenshot"] = png.relative_to(report_dir).as_posix()
            summary["pages"][page.name] = found
            summary["problems"] += _problems(page.name, found)
    summary["ok"] = not summary["problems"]
    (shots / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", "utf-8")
    return summary


def add_screenshots_parser(subparsers) -> None:
    """Add ``screenshots`` to the CLI (stdlib only: importing this module stays light)."""
    p = subparsers.add_parser(
        "screenshots", help="screenshot every report page in headless Chromium and check that "
        "nothing is wider than the page without a scrollbar")
    p.add_argument("--report", type=Path, default=None,
                   help="the report folder (default: results/report)")
    p.add_argument("--full-page", action="store_true",
                   help="whole pages instead of their first screen")
    p.add_argument("--size", default=f"{SIZE[0]}x{SIZE[1]}", metavar="WxH",
                   help="window size (default %(default)s)")
    p.set_defaults(fn=cmd_screenshots)


def cmd_screenshots(args) -> int:
    """0: every page fits; 1: some page overflows (listed on stderr); 2: no report or browser."""
    from brainseg_lib import paths
    report = Path(args.report) if args.report else paths.report_dir()
    try:
        w, h = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        print(f"error: --size {args.size!r}: write WIDTHxHEIGHT, e.g. 1366x900", file=sys.stderr)
        return 2
    try:
        summary = run_screenshots(report, args.full_page, (w, h))
    except NoBrowser as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in summary["problems"]:
        print(f"overflow: {line}", file=sys.stderr)
    print(f"{len(summary['pages'])} pages at {summary['window']}: "
          + ("nothing wider than the page without a scrollbar" if summary["ok"]
             else f"{len(summary['problems'])} problems")
          + f"; screenshots and summary.json in {report / 'screenshots'}")
    return 0 if summary["ok"] else 1
