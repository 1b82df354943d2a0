"""Notebooks open clean in JupyterLab: each stores the kernelspec the set-up installs (JupyterLab
rewrites ``metadata.kernelspec`` from the running kernel's spec, and ``language_info`` from its
kernel_info reply, and marks the notebook modified when either differs), and executed copies
carry no jupytext pairing, timestamps or random ids (a re-run with identical results rewrites
them byte for byte)."""
from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import nbformat
import pytest

from brainseg_lib import paths
from brainseg_lib.study.notebooks import INJECTED_ID, KERNELSPEC, clean_executed_copy

ROOT = paths.NOTEBOOKS_DIR.parent
SETUP = ROOT / "scripts" / "setup_env.sh"
COMMITTED = sorted(paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
EXECUTED = sorted(p for d in ("results/executed", "results/paper/executed", "results/sweep/executed")
                  for p in (ROOT / d).glob("*.ipynb"))


def installed_spec() -> dict:
    """The kernelspec scripts/setup_env.sh installs (its `ipykernel install` line)."""
    line = next(ln for ln in SETUP.read_text().splitlines() if "ipykernel install" in ln)
    words = shlex.split(line.replace('"$py"', "python").split(">")[0])
    return {"name": words[words.index("--name") + 1],
            "display_name": words[words.index("--display-name") + 1], "language": "python"}


def as_jupyterlab_sets_it(spec_json: dict, name: str) -> dict:
    """What JupyterLab writes into metadata.kernelspec for a kernel (name, display name, language)."""
    return {"name": name, "display_name": spec_json["display_name"], "language": spec_json["language"]}


def test_the_library_and_the_setup_name_the_same_kernel():
    assert installed_spec() == KERNELSPEC


def test_the_installed_kernel_is_the_one_the_notebooks_store():
    kernel_json = Path(sys.prefix) / "share" / "jupyter" / "kernels" / KERNELSPEC["name"] / "kernel.json"
    if not kernel_json.is_file():
        pytest.skip(f"no kernel installed in {sys.prefix} (scripts/setup_env.sh installs it)")
    spec = json.loads(kernel_json.read_text())
    assert as_jupyterlab_sets_it(spec, KERNELSPEC["name"]) == KERNELSPEC, (
        f"{kernel_json} says {spec['display_name']!r}: re-run `source scripts/setup_env.sh`")


@pytest.mark.parametrize("nb", COMMITTED + EXECUTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_opening_in_jupyterlab_changes_no_metadata(nb):
    """The kernelspec and language_info JupyterLab would write on opening are already there
    (language_info's Python version depends on the machine and is not compared)."""
    from ipykernel.ipkernel import IPythonKernel
    meta = json.loads(nb.read_text("utf-8"))["metadata"]
    assert meta.get("kernelspec") == KERNELSPEC, f"{nb.name}: kernelspec {meta.get('kernelspec')}"
    lab = {k: v for k, v in IPythonKernel.language_info.items() if k != "version"}
    have = {k: v for k, v in meta.get("language_info", {}).items() if k != "version"}
    assert have == lab, f"{nb.name}: language_info {have} (the kernel reports {lab})"


@pytest.mark.parametrize("nb", COMMITTED, ids=lambda p: p.name)
def test_the_paired_py_stores_the_same_kernelspec(nb):
    import jupytext
    py = jupytext.read(nb.with_suffix(".py"))
    assert py.metadata.get("kernelspec") == KERNELSPEC


@pytest.mark.parametrize("nb", EXECUTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_executed_copies_are_clean(nb):
    """No jupytext pairing (saving one in JupyterLab would create a stray .py), no timestamps."""
    text = nb.read_text("utf-8")
    n = nbformat.reads(text, as_version=4)
    assert "jupytext" not in n.metadata
    assert set(n.metadata.get("papermill", {})) <= {"parameters"}
    assert not re.search(r'"(start_time|end_time|iopub\.[a-z_.]+|shell\.execute_reply)"', text)
    injected = [c for c in n.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert all(c.id == INJECTED_ID for c in injected)


def test_clean_executed_copy_is_idempotent_and_deterministic(tmp_path):
    v4 = nbformat.v4
    nb = v4.new_notebook()
    nb.metadata.update({"jupytext": {"formats": "ipynb,py:percent"},
                        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                        "papermill": {"duration": 1.5, "end_time": "2026-01-01T00:00:00",
                                      "input_path": "/a/b.ipynb", "parameters": {"profile": "smoke"}}})
    nb.cells = [v4.new_code_cell("profile = 'x'", metadata={"tags": ["parameters"]}),
                v4.new_code_cell("profile = 'smoke'", metadata={
                    "tags": ["injected-parameters"], "papermill": {"duration": 0.1},
                    "execution": {"iopub.status.busy": "2026-01-01T00:00:00Z"}}),
                v4.new_code_cell("print(1)", metadata={"tags": []})]
    a, b = tmp_path / "a.ipynb", tmp_path / "b.ipynb"
    nbformat.write(nb, a)
    nb.cells[1]["id"] = "another-random-id"
    nb.metadata["papermill"]["duration"] = 9.9
    nbformat.write(nb, b)
    assert clean_executed_copy(a) and clean_executed_copy(b)
    assert a.read_text() == b.read_text()
    assert not clean_executed_copy(a)
    out = nbformat.read(a, as_version=4)
    assert out.metadata.papermill == {"parameters": {"profile": "smoke"}}
    assert out.metadata.kernelspec == KERNELSPEC and "jupytext" not in out.metadata
    assert out.cells[1].id == INJECTED_ID and "tags" not in out.cells[2].metadata
