"""Packaging: pyproject.toml and environment.yml name the same dependencies, and every
third-party module the library imports is declared."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

from brainseg_lib import paths

ROOT = paths.PROJECT_ROOT
PYPROJECT = ROOT / "pyproject.toml"
ENVIRONMENT = ROOT / "environment.yml"

CONDA_TO_PYPI = {"pytorch": "torch"}          # conda names that differ from the PyPI name
IGNORED = {"python", "pip"}
# top-level import name -> distribution name, where they differ
IMPORT_TO_DIST = {"PIL": "pillow", "skimage": "scikit-image", "yaml": "pyyaml",
                  "sklearn": "scikit-learn", "tqdm": "tqdm"}


def normalise(name: str) -> str:
    """PEP 503-style: lowercase, runs of '-', '_', '.' become '-'; conda aliases mapped."""
    n = re.sub(r"[-_.]+", "-", name.strip().lower())
    return CONDA_TO_PYPI.get(n, n)


def requirement_name(spec: str) -> str | None:
    """The package name of a pip or conda requirement string; None for options and paths."""
    spec = spec.strip()
    if not spec or spec.startswith(("-", ".", "/", "git+", "http:", "https:", "file:")):
        return None
    spec = spec.split("::")[-1]                      # conda channel prefix: conda-forge::numpy
    name = re.split(r"[\s<>=!~;\[@]", spec, maxsplit=1)[0]
    return normalise(name) if name else None


def pyproject_names(path: Path = PYPROJECT, extras=("test",)) -> set[str]:
    proj = tomllib.loads(path.read_text())["project"]
    specs = list(proj.get("dependencies", []))
    for e in extras:
        specs += proj.get("optional-dependencies", {}).get(e, [])
    return {n for n in map(requirement_name, specs) if n}


def all_declared_names(path: Path = PYPROJECT) -> set[str]:
    proj = tomllib.loads(path.read_text())["project"]
    return pyproject_names(path, extras=tuple(proj.get("optional-dependencies", {})))


def environment_names(path: Path = ENVIRONMENT) -> set[str]:
    """Names of conda and pip dependencies together, without python and pip."""
    env = yaml.safe_load(path.read_text())
    assert isinstance(env, dict) and isinstance(env.get("dependencies"), list), \
        f"{path} has no 'dependencies' list"
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for key, sub in dep.items():
                assert key == "pip", f"{path}: unexpected mapping {key!r} in dependencies"
                names |= {n for n in map(requirement_name, sub or []) if n}
        else:
            n = requirement_name(str(dep))
            if n:
                names.add(n)
    return names - IGNORED


def compare(env_path: Path, pyproject_path: Path = PYPROJECT) -> tuple[set[str], set[str]]:
    """(required but missing from the env, in the env but not declared in pyproject)."""
    env = environment_names(env_path)
    required = pyproject_names(pyproject_path) - IGNORED
    declared = all_declared_names(pyproject_path) - IGNORED
    return required - env, env - declared


# ------------------------------------------------------------------ the real files
def test_environment_yml_matches_pyproject():
    if not ENVIRONMENT.is_file():
        pytest.fail(f"{ENVIRONMENT} is missing: the conda environment must list the same "
                    f"dependencies as pyproject.toml (dependencies + the 'test' extra)")
    missing, undeclared = compare(ENVIRONMENT)
    assert not missing, f"in pyproject.toml (dependencies + test extra) but not in environment.yml: {sorted(missing)}"
    assert not undeclared, f"in environment.yml but not declared in pyproject.toml: {sorted(undeclared)}"


def test_environment_python_satisfies_requires_python():
    if not ENVIRONMENT.is_file():
        pytest.fail(f"{ENVIRONMENT} is missing")
    from packaging.specifiers import SpecifierSet
    env = yaml.safe_load(ENVIRONMENT.read_text())
    pins = [d for d in env["dependencies"] if isinstance(d, str) and requirement_name(d) == "python"]
    requires = tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"]
    for pin in pins:
        m = re.search(r"(\d+\.\d+)", pin)
        if m:
            assert SpecifierSet(requires).contains(m.group(1) + ".0"), (pin, requires)


def test_pyproject_declares_what_the_tests_need():
    names = pyproject_names()
    assert {"pytest", "scikit-learn", "torch", "numpy", "pyyaml", "pillow", "scikit-image"} <= names


# imported lazily, inside the function that needs them, and declared in that extra
OPTIONAL_IMPORTS = {"kagglehub": "kaggle", "onnx": "onnx", "onnxruntime": "onnx", "onnxscript": "onnx"}


def test_library_imports_are_declared():
    declared = pyproject_names(extras=())
    for mod, extra in OPTIONAL_IMPORTS.items():
        if normalise(mod) in pyproject_names(extras=(extra,)):
            declared.add(normalise(mod))
    stdlib = set(sys.stdlib_module_names)
    undeclared = {}
    for py in sorted((ROOT / "brainseg_lib").rglob("*.py")):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                if top in stdlib or top in ("__future__", "brainseg_lib"):
                    continue
                dist = normalise(IMPORT_TO_DIST.get(top, top))
                if dist not in declared:
                    undeclared.setdefault(dist, []).append(py.name)
    assert not undeclared, f"imported by brainseg_lib but not in pyproject dependencies: {undeclared}"


# ------------------------------------------------------------------ the comparison itself
ENV_TEMPLATE = """\
name: brainseg
channels: [conda-forge]
dependencies:
  - python=3.11
  - pip
{conda}  - pip:
{pip}"""


def _write_env(tmp_path, conda: list[str], pip: list[str]) -> Path:
    text = ENV_TEMPLATE.format(conda="".join(f"  - {c}\n" for c in conda),
                               pip="".join(f"    - {p}\n" for p in pip))
    p = tmp_path / "environment.yml"
    p.write_text(text)
    return p


def _pyproject_specs() -> list[str]:
    proj = tomllib.loads(PYPROJECT.read_text())["project"]
    return list(proj["dependencies"]) + list(proj["optional-dependencies"]["test"])


def test_compare_accepts_the_expected_format(tmp_path):
    env = _write_env(tmp_path, [], _pyproject_specs())
    assert compare(env) == (set(), set())
    assert environment_names(env) == pyproject_names()


def test_compare_accepts_conda_names_and_spellings(tmp_path):
    specs = _pyproject_specs()
    conda = ["pytorch>=2.2", "NumPy>=1.24"]
    pip = [s for s in specs if requirement_name(s) not in ("torch", "numpy")]
    pip = [s.replace("scikit-image", "scikit_image") for s in pip] + ["-e ."]
    assert compare(_write_env(tmp_path, conda, pip)) == (set(), set())


def test_compare_reports_a_missing_and_an_extra_name(tmp_path):
    specs = [s for s in _pyproject_specs() if requirement_name(s) != "pandas"] + ["opencv-python"]
    missing, undeclared = compare(_write_env(tmp_path, [], specs))
    assert missing == {"pandas"} and undeclared == {"opencv-python"}


def test_compare_allows_other_declared_extras(tmp_path):
    env = _write_env(tmp_path, ["jupyterlab>=4"], _pyproject_specs())
    assert compare(env) == (set(), set())
