"""Helpers shared by the command modules."""
from __future__ import annotations

import difflib
import re

import yaml


def with_overrides(params: dict, sets: list[str] | None, tag_profile: bool = False) -> dict:
    """Apply ``--set KEY=VALUE`` overrides (values parsed as YAML); with ``tag_profile`` the
    profile name records them, so outputs named after the profile do not collide. A key the
    profile and the run do not know (a typo would otherwise be ignored in silence), or an
    override without ``=``, raises ValueError naming it."""
    from brainseg_lib.study.experiment import RUN_KEYS
    known = set(params) | RUN_KEYS
    for kv in sets or []:
        k, eq, v = kv.partition("=")
        if not eq or not k:
            raise ValueError(f"--set {kv!r}: write KEY=VALUE, e.g. --set epochs=5")
        if k not in known:
            near = difflib.get_close_matches(k, sorted(known), n=3)
            raise ValueError(f"--set {k}: no such parameter"
                             + (f" (did you mean {', '.join(near)}?)" if near else "")
                             + "; params/base.yaml lists every one")
        params[k] = yaml.safe_load(v)
        if tag_profile:
            # the tag names files: keep it to characters every filesystem accepts
            params["profile"] = f"{params['profile']}+{k}=" + re.sub(r"[^\w.,=-]", "_", v)
    return params
