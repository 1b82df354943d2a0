"""The HTML report (brainseg_lib.report.html): rendered from a tiny fake executed study."""
from __future__ import annotations

import argparse
import base64
import io
import json
import re
import shutil

import nbformat
import pytest
from PIL import Image

from brainseg_lib.report import html as report_html
from brainseg_lib.report import html_notebook
from brainseg_lib.report.html import add_report_parser, check_report, render_report

TABLE1 = """| Study | F1 | IoU |
|---|---|---|
| Khadra et al. 2026 (paper) | 0.826 | 0.74 |
| Ours: smoke profile | 0.123 | 0.456 |
"""


def _png(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), color).save(buf, format="PNG")
    return buf.getvalue()


def _notebooks(executed):
    executed.mkdir(parents=True)
    v4 = nbformat.v4
    a = v4.new_notebook()
    a.cells = [
        v4.new_markdown_cell("# 01 · Alpha: looking at the data\n\nWe count the files. Then more."),
        v4.new_code_cell("plots.show('fig1_samples')", execution_count=1, outputs=[
            v4.new_output("display_data", data={
                "image/png": base64.b64encode(_png()).decode(), "text/plain": "<Figure>"})]),
    ]
    b = v4.new_notebook()
    b.metadata["papermill"] = {"parameters": {"profile": "smoke-test"}, "duration": 75.2,
                               "end_time": "2026-01-02T03:04:05"}
    b.cells = [
        v4.new_markdown_cell("# 02 · Beta: training\n\nThe model follows Sec. III-B of the paper "
                             "and trains [quickly](../params/smoke.yaml). Second sentence, after "
                             "[the data](01_alpha.ipynb)."),
        v4.new_code_cell("# Parameters\nprofile = 'smoke'\nsecret_knob = 1\n",
                         metadata={"tags": ["parameters"]}),
        v4.new_code_cell('# Parameters\nprofile = "smoke-test"\nsecret_knob = 2\nother = 3\n',
                         metadata={"tags": ["injected-parameters"]}),
        v4.new_code_cell("train()", execution_count=3, outputs=[
            v4.new_output("stream", name="stderr", text="epoch 1 loss=0.5\nepoch 2 loss=0.4\n"),
            v4.new_output("stream", name="stdout", text="done 0.123456789\n")]),
    ]
    nbformat.write(a, executed / "01_alpha.ipynb")
    nbformat.write(b, executed / "02_beta.ipynb")


@pytest.fixture
def study(tmp_path, monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setenv("BRAINSEG_RESULTS", str(results))
    _notebooks(results / "executed")
    (results / "tables").mkdir()
    (results / "tables" / "table1.md").write_text(TABLE1)
    (results / "figures").mkdir()
    (results / "figures" / "fig1_samples.png").write_bytes(_png((10, 200, 10)))
    (results / "figures" / "learning_curves.png").write_bytes(_png((10, 10, 200)))
    return results


def _hrefs(page):
    return re.findall(r'(?:href|src)="([^"]*)"', page.read_text())


def test_render_index_links_pages_table_and_figures(study):
    index = render_report()
    assert index == study / "report" / "index.html" and index.is_file()
    text = index.read_text()
    refs = _hrefs(index)
    assert {"01_alpha.html", "02_beta.html"} <= set(refs)
    assert text.index("01_alpha.html") < text.index("02_beta.html")  # the study order
    assert "01 · Alpha: looking at the data" in text and "We count the files." in text
    assert "The model follows Sec. III-B of the paper and trains quickly." in text  # no link
    assert "../params" not in text
    assert "<table>" in text and "0.826" in text and "smoke-test" in text
    assert "figures/fig1_samples.png" in refs and (index.parent / "figures/learning_curves.png").is_file()
    assert '<a href="01_alpha.html">' in text  # fig1_samples is credited to the notebook naming it
    assert check_report(index.parent) == []


def test_notebook_pages(study):
    out = render_report().parent
    alpha, beta = (out / "01_alpha.html").read_text(), (out / "02_beta.html").read_text()
    assert 'src="data:image/png;base64,' in alpha
    assert 'href="index.html"' in alpha and 'href="02_beta.html"' in alpha
    assert 'href="01_alpha.html"' in beta and "cdnjs.cloudflare.com/ajax/libs/require" not in beta
    # links written for the notebooks folder: to a notebook -> its page; elsewhere -> text
    # (the markdown link, and the prev link of the top and of the bottom navigation bar)
    assert beta.count('href="01_alpha.html"') == 3 and 'href="../params' not in beta
    assert 'title="../params/smoke.yaml (not part of the report)">quickly</span>' in beta
    # parameters: one collapsed <details>, no code wall; the profile named in its summary
    details = re.findall(r'<details class="bs-params">.*?</details>', beta, flags=re.DOTALL)
    assert len(details) == 1 and "smoke-test" in re.search(r"<summary>(.*?)</summary>",
                                                           details[0], re.DOTALL).group(1)
    outside = beta.replace(details[0], "")
    assert "secret_knob" not in outside and "secret_knob" in details[0]
    assert "2 values" not in details[0] and "3 values injected" in details[0]
    # logs on stderr: neutral style overrides the pink; tables/number wrapping handled
    assert 'data-mime-type="application/vnd.jupyter.stderr"' in beta
    css = (out / "notebook.css").read_text()           # one stylesheet, shared by every page
    assert '<link rel="stylesheet" href="notebook.css">' in beta and "<style" not in beta.split("</head>")[0]
    assert re.search(r'stderr"\]\s*\{\s*background: #f6f8fa', css)
    assert "white-space: nowrap" in css and "word-break: normal" in css


def test_check_report_finds_broken_links(study):
    out = render_report().parent
    page = out / "02_beta.html"
    page.write_text(page.read_text().replace("</main>", (
        '<a href="missing.html">x</a><img src="data:image/png;base64,@@notbase64@@">'
        '<img src="../figures/fig1_samples.png"><a href="01_alpha.html#no-such-anchor">y</a>'
        '<img src="data:image/png;base64,' + base64.b64encode(b"not a png").decode() + '">'
        '<script src="https://cdn.example.org/x.js"></script>'
        '<a href="https://example.org/">fine</a></main>')))
    problems = check_report(out)
    assert len(problems) == 6, problems
    joined = "\n".join(problems)
    for needle in ("missing.html", "bad base64", "outside the report", "no anchor",
                   "not a image/png", "network"):
        assert needle in joined
    assert all(p.startswith("02_beta.html:") for p in problems)
    assert check_report(out / "nowhere") and check_report(study / "tables")


def test_render_replaces_existing_report_atomically(study, monkeypatch):
    out = study / "report"
    render_report()
    (out / "stale.html").write_text("<p>old</p>")
    render_report()
    assert not (out / "stale.html").exists() and (out / "index.html").is_file()
    assert sorted(p.name for p in study.iterdir() if p.name.startswith(".report")) == []

    before = (out / "index.html").read_text()

    def boom(*a, **k):
        raise RuntimeError("nbconvert failed")

    monkeypatch.setattr(report_html, "render_notebook", boom)
    with pytest.raises(RuntimeError):
        render_report()
    assert (out / "index.html").read_text() == before  # the previous report, untouched
    assert sorted(p.name for p in study.iterdir() if p.name.startswith(".report")) == []


def test_explicit_folders_and_cli(study, tmp_path, capsys, monkeypatch):
    with pytest.raises(FileNotFoundError):
        render_report(executed_dir=tmp_path / "empty", out_dir=tmp_path / "r")
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["report", "--executed", str(study / "executed"),
                              "--out", str(tmp_path / "elsewhere" / "rep")])
    assert args.fn(args) == 0
    assert (tmp_path / "elsewhere" / "rep" / "02_beta.html").is_file()
    assert "index.html" in capsys.readouterr().out
    monkeypatch.setattr(report_html, "check_report", lambda out: ["02_beta.html:1: broken"])
    assert args.fn(args) == 1  # run_all stops on a broken link
    assert "broken: 02_beta.html:1" in capsys.readouterr().err


def test_collapse_parameters_leaves_notebooks_without_them_alone():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    same, details = html_notebook.collapse_parameters(nb)
    assert same.cells == nb.cells and details is None


def test_a_rerun_with_other_timings_changes_only_the_run_times_page(study):
    """Run times (papermill metadata of old copies, or timings/run_all_<profile>.json) and the
    render time appear on run_times.html only: the index and notebook pages of a re-run with
    identical results are byte-identical."""
    timings = study / "timings"
    timings.mkdir()
    (timings / "run_all_smoke-test.json").write_text(json.dumps(
        {"notebooks": {"01_alpha": 3, "02_beta": 125}, "machine": "2 cores", "date": "2026-01-02"}))
    out = render_report().parent
    first = {p.name: p.read_bytes() for p in out.glob("*.html")}
    assert "2 min 05 s" in (out / "run_times.html").read_text()
    assert 'href="run_times.html"' in (out / "index.html").read_text()
    (timings / "run_all_smoke-test.json").write_text(json.dumps({"notebooks": {"01_alpha": 4, "02_beta": 99}}))
    out = render_report().parent
    changed = {p.name for p in out.glob("*.html") if p.read_bytes() != first.get(p.name)}
    assert changed == {"run_times.html"}
    assert check_report(out) == []


def test_wide_outputs_scroll_with_a_visible_scrollbar(study):
    out = render_report().parent
    css = (out / "notebook.css").read_text()
    assert "min-width: 0" in css and ".jp-RenderedHTMLCommon { overflow-x: auto" in css
    for text in (css, (out / "index.html").read_text()):
        assert "::-webkit-scrollbar-thumb" in text and "scrollbar-color" in text


def test_screenshots_without_chromium_fail_in_one_line(study, monkeypatch, capsys):
    from brainseg_lib.cli import main
    render_report()
    monkeypatch.setenv("PATH", str(study))          # no browser on it
    monkeypatch.delenv("BRAINSEG_CHROMIUM", raising=False)
    assert main(["screenshots"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Chromium not found" in err


@pytest.mark.skipif(not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
                    reason="no headless Chromium here")
def test_screenshots_find_a_page_wider_than_the_window(study):
    from brainseg_lib.report.screenshots import run_screenshots
    out = render_report().parent
    wide = out / "02_beta.html"
    wide.write_text(wide.read_text().replace(
        "</body>", '<div id="too-wide" style="width:3000px">wide</div></body>', 1))
    summary = run_screenshots(out, size=(800, 600))
    assert summary["pages"]["01_alpha.html"]["ok"] and summary["pages"]["index.html"]["ok"]
    assert not summary["pages"]["02_beta.html"]["ok"] and not summary["ok"]
    assert (out / "screenshots" / "01_alpha.png").is_file()
    assert json.loads((out / "screenshots" / "summary.json").read_text())["window"] == "800x600"
