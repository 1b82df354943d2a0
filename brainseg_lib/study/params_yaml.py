"""Reading parameter YAML safely: every params file the project reads and every ``--set`` value.

``params/base.yaml``, a profile, ``params/levers.yaml`` (or a ``levers --plan`` file) and each
``--set KEY=VALUE`` value go through ``parse_params_text``: PyYAML's safe loader (plain data
only, no Python objects), with limits a parameter file never comes near:

* at most ``MAX_BYTES`` of text (a profile is under 2 KB, the lever plan under 5 KB);
* no anchors and no aliases (``&a``, ``*a``, ``<<:``): a parameter file never needs them, and a
  few lines of nested aliases ("billion laughs") expand to gigabytes once the values are
  copied, serialised or injected into a notebook;
* nesting at most ``MAX_DEPTH`` levels deep;
* every mapping key is plain text, written once (a repeated key would silently drop one
  setting).

Whatever breaks a rule, or is not YAML at all, raises ValueError in one line naming the
file (or ``--set``) and the line.
"""
from __future__ import annotations

from pathlib import Path

import yaml

MAX_BYTES = 256 * 1024
MAX_DEPTH = 10
STR_TAG = "tag:yaml.org,2002:str"


class _ParamsLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors, aliases, deep nesting and odd keys."""

    depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (&, *) are not allowed "
                                              "in a parameter file", event.start_mark)
        if self.depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                              event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag != STR_TAG:
                raise yaml.constructor.ConstructorError(None, None, "a key must be a plain name "
                                                        "(no number, boolean, null or merge key <<)",
                                                        key.start_mark)
            if key.value in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key.value!r} is given twice",
                                                        key.start_mark)
            seen.add(key.value)
        return super().construct_mapping(node, deep=deep)


def _yaml_message(e: yaml.YAMLError) -> str:
    """One line from a PyYAML error: its problem and the line it is on."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        where = f"line {e.problem_mark.line + 1}: " if e.problem_mark else ""
        return f"{where}{e.problem}" + (f" ({e.context})" if e.context else "")
    return " ".join(str(e).split())


def parse_params_text(text: str, source: str):
    """The data of one YAML document ``text`` (see the module docstring); ``source`` names it in
    errors (a file path, or ``--set KEY=VALUE``)."""
    if len(text.encode("utf-8", "surrogateescape")) > MAX_BYTES:
        raise ValueError(f"{source}: over {MAX_BYTES} bytes; a parameter file is a few kilobytes")
    try:
        return yaml.load(text, Loader=_ParamsLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise ValueError(f"{source}: not valid parameter YAML: {_yaml_message(e)}") from None
    except (ValueError, RecursionError) as e:     # e.g. an integer of more digits than int() takes
        raise ValueError(f"{source}: not valid parameter YAML: {' '.join(str(e).split())}") from None


def read_params_file(path: str | Path) -> dict:
    """The mapping in a parameter file (an empty file is ``{}``); ValueError in one line naming
    ``path`` when it is too large, not UTF-8, not valid YAML or not a mapping. A missing file
    raises FileNotFoundError."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror or e})") from None
    if len(raw) > MAX_BYTES:
        raise ValueError(f"{path}: over {MAX_BYTES} bytes; a parameter file is a few kilobytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None
    data = parse_params_text(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of parameter: value, not a {type(data).__name__}")
    return data
