"""``python -m brainseg_lib --help``: every command listed once, and answered without importing
torch or the other heavy modules (the commands' parsers that need them are built only when
their command is asked for)."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import subprocess
import sys

import pytest

from brainseg_lib.cli import USER_COMMANDS, build_parser, command_in, user_commands

HEAVY = ("torch", "nbformat", "PIL", "numpy", "pandas", "matplotlib", "onnx")


def _help_text(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser(command_in(argv)).parse_args(argv)
    return out.getvalue()


def _commands() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    return list(sub.choices)


def test_help_lists_each_command_once():
    text = _help_text(["--help"])
    commands = _commands()
    assert len(commands) == len(set(commands)) >= 17
    assert "{" not in text.splitlines()[0], "the usage line spells out every command again"
    for name in commands:
        lines = [ln for ln in text.splitlines() if re.match(rf"\s+{re.escape(name)}(\s|$)", ln)]
        assert len(lines) == 1, f"--help lists {name!r} {len(lines)} times:\n{text}"


def test_user_commands_are_the_ones_registered_lazily():
    """``USER_COMMANDS`` (the stand-ins --help shows) names exactly what user_commands adds."""
    light = next(a for a in build_parser(None)._actions if a.dest == "cmd")
    assert list(light.choices) == _commands()
    added = []

    class Recorder:
        def add_parser(self, name, **kw):
            added.append(name)
            kw.pop("help", None)
            return argparse.ArgumentParser(prog=name, **kw)

    user_commands.register(Recorder())
    assert sorted(added) == sorted(USER_COMMANDS)


def test_command_in_skips_the_data_option():
    assert command_in(["--data", "predict", "table"]) == "table"
    assert command_in(["--data=/x", "predict", "--input", "a"]) == "predict"
    assert command_in(["--help"]) is None


def test_predict_help_names_no_internal_function():
    text = _help_text(["predict", "--help"])
    assert "release_model" not in text and "the released model" in text


def test_help_imports_no_heavy_module():
    code = ("import sys, json\nfrom brainseg_lib.__main__ import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    loaded = json.loads(r.stdout.strip().splitlines()[-1])
    assert not loaded, f"python -m brainseg_lib --help imports {loaded}"


@pytest.mark.parametrize("command, not_loaded", [("predict", ("torch", "nbformat", "onnx")),
                                                 ("fetch-data", ("torch", "nbformat"))])
def test_a_user_commands_help_builds_its_own_parser_only(command, not_loaded):
    """``predict --help`` answers without torch, or the report's nbformat: the other user
    commands' parsers are bare names then (user_commands.register(sub, only))."""
    code = ("import sys, json\nfrom brainseg_lib.__main__ import main\n"
            f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit:\n    pass\n"
            f"print(json.dumps([m for m in {not_loaded!r} if m in sys.modules]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    loaded = json.loads(r.stdout.strip().splitlines()[-1])
    assert not loaded, f"python -m brainseg_lib {command} --help imports {loaded}"
