"""Names are data, never paths (issue 28, probe 1).

A run name is built from the profile and the run tag, a sweep adds its variants' names and
the lever trials their tags; each becomes a folder or file name, and a fresh run first
deletes its run folder. Every entry point is tried here with ``..``, absolute paths, the
separators ``/`` and ``\\``, NUL and the empty name: each is refused with one line before any
work, and nothing outside the results root is touched (the victim folders below would be
deleted, or written beside, by the code before this check)."""
from __future__ import annotations

import os

import pytest
import yaml

from brainseg_lib import names, paths
from brainseg_lib.cli import main as cli_main
from brainseg_lib.study import experiment, levers, sweep
from brainseg_lib.study.profiles import load_profile

BAD = ["..", "../x", "../../../../victim", "/tmp/victim", "a/b", "a\\b", "a\0b", ""]
BAD_IN_ARGV = [b for b in BAD if "\0" not in b and b]     # argv holds no NUL; "" is no tag
PREFIX = "smoke-official-bce_dice-seed0-"                 # a smoke run's name before its tag


def tree(root) -> dict:
    """Every file and folder under ``root`` with its content (files) or None (folders)."""
    return {str(p.relative_to(root)): (p.read_text() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def victim(tmp_path_factory):
    """A folder with a file in it, outside every results root, and the base it sits in."""
    base = tmp_path_factory.getbasetemp() / "outside"
    folder = base / "victim"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "precious.txt").write_text("keep me")
    return folder


def assert_intact(victim):
    assert (victim / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("bad", BAD)
def test_check_name_refuses_every_path_like_name(bad):
    with pytest.raises(names.UnsafeName, match="not allowed|must be text"):
        names.check_name(bad, "run_tag")
    for good in ("cpu", "l1-healthy0.5", "annotated-only", "cpu+epochs=5", "seed_0"):
        assert names.check_name(good) == good


@pytest.mark.parametrize("key", ["profile", "run_tag"])
@pytest.mark.parametrize("bad", [b for b in BAD if b])     # an empty run_tag means "no tag"
def test_run_name_refuses_a_path_in_profile_or_tag(key, bad):
    params = {**load_profile("smoke"), key: bad}
    with pytest.raises(names.UnsafeName):
        experiment.name_for(params)


def test_run_tag_cannot_delete_outside_results(victim, isolated_dirs, capsys):
    """The issue's probe: `train --set run_tag=/../../victim` twice. The tag climbs from the
    run folder to the victim (its first component exists, as after a first attempt); the
    code before the check deleted it at once. Now: refused twice, victim and file intact."""
    runs = paths.runs_dir()
    (runs / PREFIX).mkdir()                                  # so the path resolves to the victim
    tag = "/" + os.path.relpath(victim, runs / PREFIX)       # /../../../outside/victim
    assert (runs / (PREFIX + tag)).resolve() == victim.resolve()
    before = tree(victim.parent)
    for _ in range(2):
        assert cli_main(["train", "--profile", "smoke", "--set", "epochs=1", "--set", f"run_tag={tag}"]) == 2
        err = capsys.readouterr().err
        assert "run_tag" in err and len(err.strip().splitlines()) == 1
    assert_intact(victim)
    assert tree(victim.parent) == before
    assert not paths.metrics_dir().exists() or not list(paths.metrics_dir().iterdir())


@pytest.mark.parametrize("bad", BAD_IN_ARGV)
def test_train_refuses_every_unsafe_run_tag(bad, capsys):
    assert cli_main(["train", "--profile", "smoke", "--set", f"run_tag={bad}"]) == 2
    assert "run_tag" in capsys.readouterr().err


def test_set_profile_cannot_write_outside_results(victim, isolated_dirs, capsys):
    """`--set profile=<path>`: an absolute profile made the run folder the victim itself (the
    code before deleted it), a relative one put a run folder outside results/."""
    target = victim.parent / "victim-official-bce_dice-seed0"      # the run folder it would name
    target.mkdir(exist_ok=True)
    (target / "precious.txt").write_text("keep me")
    before = tree(victim.parent)
    for bad in (str(victim), "../../x", "..", "a/b", "a\\b", ""):
        assert cli_main(["train", "--profile", "smoke", "--set", f"profile={bad}"]) == 2
        assert "profile" in capsys.readouterr().err
    assert tree(victim.parent) == before
    assert_intact(target)
    for root in isolated_dirs.values():                            # nothing written anywhere
        assert not [p for p in root.rglob("*") if p.is_file()], root


@pytest.mark.parametrize("bad", ["../params/smoke", "/tmp/smoke", "a/b", "a\\b", ".."])
def test_profile_option_is_a_name(bad, capsys):
    for cmd in (["train"], ["sweep", "--plan"], ["run-study"]):
        assert cli_main([*cmd, "--profile", bad]) == 2
        assert "profile" in capsys.readouterr().err


def test_sweep_variant_cannot_name_a_path(victim, isolated_dirs, monkeypatch, capsys):
    """A profile's `sweep_variants` key becomes a run tag: with `../` in it, `sweep` (and
    `sweep --plan`, which is print-only) wrote a params file beside the victim."""
    for bad in BAD:
        smoke = {**load_profile("smoke"), "sweep_variants": {bad: {"healthy_ratio": 0.0}}}
        monkeypatch.setattr(sweep, "load_profile", lambda name, smoke=smoke: dict(smoke))
        monkeypatch.setattr(sweep, "run_profile", lambda r: pytest.fail("trained an unsafe variant"))
        with pytest.raises(names.UnsafeName, match="sweep_variants"):
            sweep.plan("smoke", seeds=(0,))
        for extra in (["--plan"], ["--plan", "--format", "slurm"], []):
            assert cli_main(["sweep", "--profile", "smoke", "--seeds", "0", *extra]) == 2
            assert "sweep_variants" in capsys.readouterr().err
    assert_intact(victim)
    for root in isolated_dirs.values():
        assert not [p for p in root.rglob("*") if p.is_file()], root
    assert not [p for p in victim.parent.rglob("*.yaml")]


def test_sweep_plan_writes_nothing(isolated_dirs, capsys):
    """`sweep --plan` prints; each printed line writes its own params file when it runs."""
    before = {k: tree(v) for k, v in isolated_dirs.items()}
    assert cli_main(["sweep", "--profile", "smoke", "--seeds", "0", "--plan"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all("papermill" in line and "printf" in line for line in lines)
    assert {k: tree(v) for k, v in isolated_dirs.items()} == before
    assert cli_main(["sweep", "--profile", "smoke", "--seeds", "0", "--plan", "--format", "slurm"]) == 0
    written = [p for root in isolated_dirs.values() for p in root.rglob("*") if p.is_file()]
    assert written == [paths.sweep_dir_for("smoke") / "sweep.sbatch"]


def test_a_planned_line_writes_only_under_its_sweep_folder(tmp_path):
    """The params file a line writes, its notebook and log are all checked under the sweep folder."""
    runs = sweep.plan("smoke", seeds=(0,), schemes=("official",), extra_losses=(), variants={})
    files = sweep.job_files(runs[0], tmp_path)
    assert all(tmp_path in p.parents for p in files.values())
    with pytest.raises(names.UnsafeName):
        sweep.job_files({**runs[0], "run_tag": "../../x"}, tmp_path)


def test_lever_tag_cannot_delete_outside_results(victim, isolated_dirs, monkeypatch, tmp_path, capsys):
    """A lever trial's `tag` names its run: `levers` with a tag climbing to the victim deleted
    it when the trial started (the code before the check)."""
    runs = paths.runs_dir()
    prefix = "cpu-official-bce_dice-seed0-"
    (runs / prefix).mkdir()
    climbing = "/" + os.path.relpath(victim, runs / prefix)
    assert (runs / (prefix + climbing)).resolve() == victim.resolve()
    monkeypatch.setattr(experiment, "fit", lambda *a, **k: pytest.fail("trained an unsafe trial"))
    for bad in [climbing, *BAD]:
        plan = {"base": "cpu", "fixed": {"epochs": 1}, "rule": {},
                "trials": [{"tag": "l0-ok", "lever": "fine", "set": {}},
                           {"tag": bad, "lever": "hostile", "set": {}}]}
        with pytest.raises(names.UnsafeName, match="lever trial tag"):
            levers.run_levers(plan)
        path = tmp_path / "levers.yaml"
        path.write_text(yaml.safe_dump(plan))
        assert cli_main(["levers", "--plan", str(path)]) == 2
        assert "tag" in capsys.readouterr().err
    assert_intact(victim)
    assert not [p for p in paths.levers_dir().rglob("*") if p.is_file()]


def test_remove_tree_never_leaves_its_root(tmp_path, victim):
    root = tmp_path / "runs"
    root.mkdir()
    for path in (victim, root / ".." / victim.name, root, root / "a" / ".." / ".."):
        with pytest.raises(names.UnsafeName):
            names.remove_tree(path, root)
    link = root / "link"
    link.symlink_to(victim)                  # a link to the outside goes as a link
    names.remove_tree(link, root)
    assert not link.exists() and not link.is_symlink()
    assert_intact(victim)
    with pytest.raises(names.UnsafeName):
        names.remove_file(victim / "precious.txt", root)
    assert_intact(victim)
