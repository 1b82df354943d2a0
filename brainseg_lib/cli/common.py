"""Helpers shared by the command modules."""
from __future__ import annotations

import yaml


def with_overrides(params: dict, sets: list[str] | None, tag_profile: bool = False) -> dict:
    """Apply ``--set KEY=VALUE`` overrides (values parsed as YAML); with ``tag_profile`` the
    profile name records them, so outputs named after the profile do not collide."""
    for kv in sets or []:
        k, _, v = kv.partition("=")
        params[k] = yaml.safe_load(v)
        if tag_profile:
            params["profile"] = f"{params['profile']}+{k}={v}"
    return params
