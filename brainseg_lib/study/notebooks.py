"""The study's notebooks: their parameters, running them with papermill, keeping them clean.

* ``notebooks/NN_*.py`` (jupytext ``py:percent``) is the reviewed source of each notebook;
  ``notebooks/NN_*.ipynb`` is its paired copy holding the outputs nbval checks in CI.
* ``declared_parameters`` reads a notebook's tagged ``parameters`` cell (plain literals).
* ``run_notebooks`` executes every notebook in study order with papermill, injecting only
  the parameters that notebook declares (from a merged profile), and writes
  ``executed/<notebook>.ipynb`` plus ``timings/run_all_<profile>.json`` under one folder.
* ``strip_execution_metadata`` removes papermill's timestamps and durations from a
  notebook (and, for the committed copies, every output nbval does not check), so the
  committed notebooks change only when their content does.
* ``clean_executed_copy`` does the same for an executed copy (``results/executed/``), keeps
  only the parameters papermill injected, gives that injected cell a fixed id and drops the
  jupytext pairing (saving the copy in JupyterLab must not create a stray ``.py``): a re-run
  with identical results rewrites it byte for byte. Run times live in ``timings/`` only.
* Every notebook stores ``KERNELSPEC``, the kernel ``scripts/setup_env.sh`` installs, so
  JupyterLab does not mark it modified on opening (``tests/test_notebook_kernelspec.py``).
"""
from __future__ import annotations

import ast
import datetime
import json
import logging
import os
import time
from pathlib import Path

import nbformat

from brainseg_lib import paths
from brainseg_lib.fileio import atomic_write_text

log = logging.getLogger(__name__)
KERNEL = "python3"
# the kernel scripts/setup_env.sh installs (`ipykernel install --name ... --display-name ...`)
KERNELSPEC = {"display_name": "Python 3 (brainseg)", "language": "python", "name": KERNEL}
INJECTED_ID = "injected-parameters"   # the id of the cell papermill injects (else random)


def _kernel_config():
    """Kernel-manager config for papermill: CurveZMQ encryption of the kernel's sockets where
    the kernel supports it, so the kernel does not warn, once per notebook, that it runs over
    TCP without encryption."""
    from traitlets.config import Config
    return Config({"KernelManager": {"transport_encryption": "auto"}})


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names it and where its partial copy was kept."""

    def __init__(self, message: str, notebook: str = "", summary: str = ""):
        super().__init__(message)
        self.notebook, self.summary = notebook, summary or message


def study_notebooks(folder: Path | None = None) -> list[Path]:
    """``NN_*.ipynb`` in study order."""
    return sorted(Path(folder or paths.NOTEBOOKS_DIR).glob("[0-9][0-9]_*.ipynb"))


def parameters_cell(nb) -> nbformat.NotebookNode:
    """The code cell tagged ``parameters`` (exactly one per notebook)."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"expected one cell tagged 'parameters', found {len(cells)}")
    return cells[0]


def parse_parameters(source: str, where: str = "the cell") -> dict:
    """``{name: value}`` of a parameters cell's source (the tagged ``parameters`` cell, or the
    ``injected-parameters`` cell papermill writes); only ``name = literal`` lines are allowed."""
    try:
        body = ast.parse(source).body
    except SyntaxError as e:
        raise ValueError(f"{where}: not valid Python ({e.msg})") from None
    out = {}
    for node in body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{where}: the parameters cell may hold only `name = literal` lines")
        try:
            out[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise ValueError(f"{where}: the parameters cell may hold only `name = literal` lines "
                             f"(line {node.lineno} is not a literal)") from None
    return out


def declared_parameters(path: str | Path) -> dict:
    """``{name: value}`` of the notebook's parameters cell; its values must be literals."""
    return parse_parameters(parameters_cell(nbformat.read(str(path), as_version=4)).source, str(path))


def notebook_parameters(path: str | Path, profile: dict) -> dict:
    """The profile's values for the parameters this notebook declares, and nothing else."""
    declared = declared_parameters(path)
    return {k: profile[k] for k in declared if k in profile}


def machine_description() -> str:
    """Cores, CPU model and GPU (if any): recorded beside every timing."""
    import torch

    from brainseg_lib.study.bench import cpu_name, device_name
    gpu = f", {device_name()}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()} cores, {cpu_name()}{gpu}"


def run_notebook(path: Path, params: dict, out_path: Path) -> float:
    """Execute one notebook with papermill (kernel ``python3``, working directory
    ``notebooks/``); returns its wall seconds. On failure the partial copy stays at
    ``out_path`` and ``NotebookFailed`` says so."""
    import papermill as pm
    logging.getLogger("papermill").setLevel(logging.WARNING)   # one line per notebook is ours
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(path), str(out_path), parameters=params, kernel_name=KERNEL,
                            cwd=str(paths.NOTEBOOKS_DIR), progress_bar=False, log_output=False,
                            config=_kernel_config())
    except pm.PapermillExecutionError as e:
        summary = f"{path.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}"
        raise NotebookFailed(f"{summary}\nthe executed copy, with the failing cell, is {out_path}",
                             out_path.name, summary) from None
    seconds = time.perf_counter() - t0
    clean_executed_copy(out_path)
    return seconds


def run_notebooks(profile: dict, out_dir: Path, notebooks: list[Path] | None = None,
                  before: dict | None = None) -> dict:
    """Run the study's notebooks in order into ``out_dir/executed``; write and return the
    timings (``out_dir/timings/run_all_<profile>.json``), with the seconds of any step run
    ``before`` them (e.g. ``{"sweep": s}``) beside the notebooks'."""
    executed = paths.ensure(Path(out_dir) / "executed")
    seconds = {}
    for nb in notebooks or study_notebooks():
        log.info("[run_all] %s ...", nb.name)
        seconds[nb.stem] = round(run_notebook(nb, notebook_parameters(nb, profile),
                                              executed / nb.name))
        log.info("[run_all] %s done in %.0f s", nb.name, seconds[nb.stem])
    timings = {"profile": profile["profile"], "total_seconds": sum(seconds.values()) + sum((before or {}).values()),
               "notebooks": seconds, **({"before_notebooks": before} if before else {}),
               "machine": machine_description(),
               "date": datetime.date.today().isoformat()}
    path = paths.ensure(Path(out_dir) / "timings") / f"run_all_{profile['profile']}.json"
    atomic_write_text(path, json.dumps(timings, indent=1) + "\n")
    return timings


CHECK_MARKER = "NBVAL_CHECK_OUTPUT"


def _strip_cells(nb) -> None:
    """Drop papermill's and the kernel's per-cell timestamps and durations, and empty tags."""
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.metadata.get("tags") == []:
            del cell.metadata["tags"]


def _write_if_changed(path: str | Path, nb, before: str) -> bool:
    after = nbformat.writes(nb)
    if after != before:
        atomic_write_text(path, after)
    return after != before


def strip_execution_metadata(path: str | Path, keep_unchecked_outputs: bool = True) -> bool:
    """Remove papermill/execution timestamps from a notebook in place; True if it changed.

    With ``keep_unchecked_outputs=False`` (the committed ``notebooks/*.ipynb``) the outputs
    of every cell not marked ``# NBVAL_CHECK_OUTPUT`` are removed too: the committed copies
    keep only what nbval compares, so nobody reads the smoke model's numbers as the study."""
    nb = nbformat.read(str(path), as_version=4)
    before = nbformat.writes(nb)
    nb.metadata.pop("papermill", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    for cell in nb.cells:
        if (not keep_unchecked_outputs and cell.cell_type == "code"
                and CHECK_MARKER not in cell.source):
            cell.outputs, cell.execution_count = [], None
    _strip_cells(nb)
    return _write_if_changed(path, nb, before)


def clean_executed_copy(path: str | Path) -> bool:
    """Make an executed copy reproducible byte for byte (see the module docstring): no
    timestamps, durations or paths, ``metadata.papermill`` reduced to the injected
    ``parameters``, a fixed id for the injected cell, no jupytext pairing, and ``KERNELSPEC``.
    True if the file changed."""
    nb = nbformat.read(str(path), as_version=4)
    before = nbformat.writes(nb)
    params = (nb.metadata.get("papermill") or {}).get("parameters")
    nb.metadata.pop("papermill", None)
    if params is not None:
        nb.metadata["papermill"] = {"parameters": params}
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = INJECTED_ID
    _strip_cells(nb)
    return _write_if_changed(path, nb, before)
