"""Helpers shared by the command modules."""
from __future__ import annotations

import difflib
import hashlib
import re

from brainseg_lib.names import MAX_NAME

TAG_UNSAFE = re.compile(r"[^A-Za-z0-9._=,-]")   # what a --set value may keep in a profile tag


def with_overrides(params: dict, sets: list[str] | None, tag_profile: bool = False) -> dict:
    """Apply ``--set KEY=VALUE`` overrides (values parsed as YAML by ``params_yaml``, each checked
    against the parameter schema, then the whole result); with ``tag_profile`` the profile name
    records them, so outputs named after the profile do not collide. A key the profile and the
    run do not know (a typo would otherwise be ignored in silence), an override without ``=``,
    or a value the schema refuses raises ValueError naming it, before any work starts."""
    from brainseg_lib.study.experiment import RUN_KEYS
    from brainseg_lib.study.params_schema import check_params
    from brainseg_lib.study.params_yaml import parse_params_text
    known = set(params) | RUN_KEYS
    for kv in sets or []:
        k, v = _split_override(kv, known)
        params[k] = parse_params_text(v, f"--set {k}")
        check_params({k: params[k]}, "--set")
        if tag_profile:
            params["profile"] = profile_tag(params["profile"], k, v)
    if sets:
        check_params(params, "the profile with its --set values")
    return params


def _split_override(kv: str, known: set[str]) -> tuple[str, str]:
    """(key, value text) of one ``KEY=VALUE``; ValueError for a missing ``=`` or an unknown key."""
    k, eq, v = kv.partition("=")
    if not eq or not k:
        raise ValueError(f"--set {kv!r}: write KEY=VALUE, e.g. --set epochs=5")
    if k not in known:
        near = difflib.get_close_matches(k, sorted(known), n=3)
        raise ValueError(f"--set {k}: no such parameter"
                         + (f" (did you mean {', '.join(near)}?)" if near else "")
                         + "; params/base.yaml lists every one")
    return k, v


def profile_tag(profile: str, key: str, value: str) -> str:
    """``<profile>+<key>=<value>``, the value kept to ASCII letters, digits and ``._=,-`` (every
    other character becomes ``_``), so the tag is one safe file-name part (``names.check_name``);
    a tag longer than ``names.MAX_NAME`` keeps its start and ends in a hash of the whole."""
    tag = f"{profile}+{key}=" + TAG_UNSAFE.sub("_", value)
    if len(tag) <= MAX_NAME:
        return tag
    digest = hashlib.sha256(tag.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"{tag[:MAX_NAME - 13]}-{digest}"
