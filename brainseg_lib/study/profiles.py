"""TODO docstring."""
from __future__ import annotations

import torch
import yaml

from brainseg_lib import paths
from brainseg_lib.study.experiment import RUN_KEYS


def params_from_namespace(namespace: dict) -> dict:
    """The run parameters among a notebook's globals: its parameters cell plus whatever
    papermill injected from a profile, so no profile key is silently dropped."""
    return {k: v for k, v in namespace.items() if k in RUN_KEYS}


def load_profile(name: str) -> dict:
    """The parameters of ``params/<name>.yaml``."""
    path = paths.PARAMS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in paths.PARAMS_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no profile {name!r} ({path}); known profiles: {known}")
    return yaml.safe_load(path.read_text()) or {}


def default_profile() -> str:
    """``paper`` when CUDA is present, else ``cpu``."""
    return "paper" if torch.cuda.is_available() else "cpu"
