"""The house rules: layering of the package, folders named only in paths.py, notebooks whose
jupytext source and committed copy agree, and parameters cells equal to the smoke profile."""
from __future__ import annotations

import ast
from pathlib import Path

import jupytext
import nbformat
import pytest

from brainseg_lib import paths
from brainseg_lib.study.notebooks import (
    CHECK_MARKER,
    declared_parameters,
    study_notebooks,
)
from brainseg_lib.study.profiles import known_profiles, load_profile

PKG = paths.PROJECT_ROOT / "brainseg_lib"
CORE = ("data", "model", "training", "inference", "evaluation")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 350, 60
NOTEBOOKS = study_notebooks()


def _modules():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _imported_layers(path: Path) -> set[str]:
    """The top-level parts of brainseg_lib a module imports, at any depth (function-local
    imports included); a relative import counts as ``<relative>`` (the package imports
    absolutely, so the layering stays visible)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            out.add("<relative>")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("brainseg_lib."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "brainseg_lib":
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("brainseg_lib."))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)
              and str(node.args[0].value).startswith("brainseg_lib.")):
            out.add(str(node.args[0].value).split(".")[1])
    return out


BASE = ("paths", "fileio", "progress", "paper")   # what every layer may import


@pytest.mark.parametrize("module", [m for m in _modules() if _layer(m) in CORE + BASE],
                         ids=lambda m: str(m.relative_to(PKG)))
def test_core_never_imports_study_report_cli_or_applications(module):
    """data, model, training, inference and evaluation are the core: they may use each other,
    paths, fileio, progress and paper, never the layers built on them (nor may those base
    modules, through which core would reach them)."""
    allowed = set(BASE) if _layer(module) in BASE else set(CORE + BASE)
    bad = _imported_layers(module) - allowed
    assert not bad, f"{module.relative_to(PKG)} imports {sorted(bad)}"


def test_the_contract_check_sees_every_form_of_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("from brainseg_lib.study.experiment import run_profile\nfrom brainseg_lib import report\n"
                   "import brainseg_lib.cli.common\nfrom ..xai import checks\n"
                   "def f():\n    from brainseg_lib.apply import predict\n"
                   "    return importlib.import_module('brainseg_lib.detection.roc')\n")
    assert _imported_layers(bad) == {"study", "report", "cli", "<relative>", "apply", "detection"}


@pytest.mark.parametrize("module", _modules(), ids=lambda m: str(m.relative_to(PKG)))
def test_folders_are_named_only_in_paths(module):
    """No module but paths.py builds a folder from the project root or its own location."""
    if module.name == "paths.py":
        return
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Attribute) and node.attr == "PROJECT_ROOT":
            pytest.fail(f"{module.relative_to(PKG)}:{node.lineno} builds a path from PROJECT_ROOT")
        if isinstance(node, ast.Name) and node.id == "__file__":
            pytest.fail(f"{module.relative_to(PKG)}:{node.lineno} uses __file__")


@pytest.mark.parametrize("module", _modules(), ids=lambda m: str(m.relative_to(PKG)))
def test_modules_and_functions_stay_small(module):
    text = module.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{module.name} is over {MAX_MODULE_LINES} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            assert n <= MAX_FUNCTION_LINES, f"{module.name}:{node.name} is {n} lines"


@pytest.mark.parametrize("module", _modules(), ids=lambda m: str(m.relative_to(PKG)))
def test_every_module_says_what_it_is_for(module):
    doc = ast.get_docstring(ast.parse(module.read_text()))
    assert doc and "TODO" not in doc and len(doc) > 20, f"{module.relative_to(PKG)} lacks a docstring"


def test_the_study_has_its_notebooks():
    assert [nb.stem[:2] for nb in NOTEBOOKS] == [f"{i:02d}" for i in range(1, 11)]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_and_its_jupytext_source_agree(nb):
    """notebooks/NN_x.py is the reviewed source; NN_x.ipynb must hold the same cells."""
    source = nb.with_suffix(".py")
    assert source.is_file(), f"{source.name} missing: pair it with `jupytext --set-formats ipynb,py:percent`"
    from_py = jupytext.read(source)
    from_nb = nbformat.read(str(nb), as_version=4)
    cells = lambda n: [(c.cell_type, c.source.strip()) for c in n.cells]  # noqa: E731
    assert cells(from_py) == cells(from_nb), (
        f"{nb.name} and {source.name} differ: edit the .py, then run tools/refresh_notebooks.sh")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_holds_the_smoke_profile(nb):
    smoke = load_profile("smoke")
    declared = declared_parameters(nb)
    assert declared, f"{nb.name} declares no parameters"
    unknown = set(declared) - set(smoke)
    assert not unknown, f"{nb.name} declares {sorted(unknown)}, which params/base.yaml lacks"
    differ = {k: (v, smoke[k]) for k, v in declared.items() if v != smoke[k]}
    assert not differ, f"{nb.name}: parameters differ from params/smoke.yaml: {differ}"


# keys the library reads from the profile file itself (study.sweep.plan), not from a notebook
READ_BY_THE_SWEEP = {"sweep_extra_losses", "sweep_variants", "sweep_split_draws"}


def test_every_profile_key_is_used_by_some_notebook():
    declared = set().union(*(declared_parameters(nb) for nb in NOTEBOOKS)) | READ_BY_THE_SWEEP
    unused = set(load_profile("smoke")) - declared
    assert not unused, f"params/base.yaml keys no notebook declares (they would be dropped): {unused}"


def test_profiles_merge_over_base_and_refuse_unknown_keys(tmp_path, monkeypatch):
    assert set(known_profiles()) >= {"smoke", "cpu", "paper"}
    (tmp_path / "base.yaml").write_text("profile: base\nepochs: 100\nlr: 0.0001\n")
    (tmp_path / "fast.yaml").write_text("profile: fast\nepochs: 2\n")
    (tmp_path / "typo.yaml").write_text("profile: typo\nepochz: 2\n")
    monkeypatch.setattr(paths, "PARAMS_DIR", tmp_path)
    assert load_profile("fast") == {"profile": "fast", "epochs": 2, "lr": 0.0001}
    with pytest.raises(ValueError, match="epochz"):
        load_profile("typo")
    with pytest.raises(FileNotFoundError, match="known profiles"):
        load_profile("base")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_keep_only_checked_outputs_and_no_timestamps(nb):
    n = nbformat.read(str(nb), as_version=4)
    assert n.metadata.kernelspec.name == "python3"
    assert "papermill" not in n.metadata
    for c in n.cells:
        assert "papermill" not in c.metadata and "execution" not in c.metadata
        if c.cell_type == "code" and CHECK_MARKER not in c.source:
            assert not c.outputs, f"{nb.name}: an unchecked cell keeps outputs (run tools/refresh_notebooks.sh)"
    first_code = [c for c in n.cells if c.cell_type == "code"][1]
    assert "profile_banner" in first_code.source, f"{nb.name}: the profile banner must follow the parameters"
