"""Named parameter profiles: ``params/base.yaml`` plus a small per-profile override.

``params/base.yaml`` holds every parameter of the study at the paper's configuration. A
profile (``params/smoke.yaml``, ``cpu.yaml``, ``paper.yaml``) lists only the keys it changes;
``load_profile`` merges it over the base, and refuses a key the base does not have, so a typo
never passes silently. Everything downstream (papermill, the CLI, the sweep, the lever
trials) sees the merged profile: ``write_profile`` writes it as one flat YAML file for
``papermill -f`` (each planned sweep job gets one).

Both files are read by ``params_yaml.read_params_file`` (safe YAML, size and alias limits)
and checked against ``params_schema.ParamsSchema``, each file on its own and then merged, so
a bad value is refused in one line naming the key and the file before any work starts. The
values are returned as written (the schema checks, it does not convert).
"""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

from brainseg_lib import paths
from brainseg_lib.fileio import atomic_write_text
from brainseg_lib.study.experiment import RUN_KEYS
from brainseg_lib.study.params_schema import check_params
from brainseg_lib.study.params_yaml import read_params_file

BASE = "base"
# params/ files that are not runnable profiles: the base, the lever plans and the release lever rounds
NOT_PROFILES = {BASE, "levers", "release_levers"}
ROUND_PREFIX = "release_levers_"     # release_levers_2.yaml, _3, ...: later release lever rounds


def is_profile_name(stem: str) -> bool:
    return stem not in NOT_PROFILES and not stem.startswith(ROUND_PREFIX)


def params_from_namespace(namespace: dict) -> dict:
    """The run parameters among a notebook's globals: its parameters cell plus whatever
    papermill injected from a profile, so no profile key is silently dropped."""
    return {k: v for k, v in namespace.items() if k in RUN_KEYS}


def known_profiles() -> list[str]:
    """The runnable profiles in ``params/``."""
    return sorted(p.stem for p in paths.PARAMS_DIR.glob("*.yaml") if is_profile_name(p.stem))


def load_profile(name: str) -> dict:
    """``params/base.yaml`` with ``params/<name>.yaml`` merged over it (keys in base order),
    every value checked (see the module docstring)."""
    path = paths.PARAMS_DIR / f"{name}.yaml"
    if not is_profile_name(name) or not path.is_file():
        raise FileNotFoundError(f"no profile {name!r} ({path}); known profiles: {known_profiles()}")
    base_path = paths.PARAMS_DIR / f"{BASE}.yaml"
    base, override = read_params_file(base_path), read_params_file(path)
    unknown = sorted(set(override) - set(base))
    if unknown:
        raise ValueError(f"{path}: unknown parameter(s) {unknown}; every parameter must be "
                         f"declared in {base_path}")
    check_params(base, str(base_path))
    check_params(override, str(path))
    merged = {**base, **override}
    check_params(merged, f"{path} merged over {base_path}")
    return merged


def write_profile(params: dict, path: str | Path) -> Path:
    """One flat YAML file of ``params`` (for ``papermill -f``)."""
    return atomic_write_text(path, yaml.safe_dump(params, sort_keys=False))


def default_profile() -> str:
    """``paper`` when CUDA is present, else ``cpu``."""
    return "paper" if torch.cuda.is_available() else "cpu"
