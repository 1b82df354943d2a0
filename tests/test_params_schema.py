"""One schema for every parameter, checked before any work (issue 28, probes 5 and 6).

Each probe is tried through the real entry points: ``load_profile`` on a temp params folder,
``with_overrides`` (``--set``), ``TrainConfig.from_dict`` (what ``run_profile`` calls first,
through ``config_from_params``) and the command line, which must exit 2 with one line naming
the key and the file (or ``--set``) while the cache folder stays empty.
"""
from __future__ import annotations

import shutil
import time

import pytest
import yaml

from brainseg_lib import paths
from brainseg_lib.cli import main as cli_main
from brainseg_lib.cli.common import with_overrides
from brainseg_lib.names import check_name
from brainseg_lib.study import levers
from brainseg_lib.study.experiment import RUN_KEYS, config_from_params, run_profile
from brainseg_lib.study.notebooks import declared_parameters, study_notebooks
from brainseg_lib.study.params_schema import XAI_FILLS, XAI_TARGETS, ParamsSchema, check_params
from brainseg_lib.study.params_yaml import MAX_BYTES, MAX_DEPTH, parse_params_text
from brainseg_lib.study.profiles import known_profiles, load_profile
from brainseg_lib.training.config import TrainConfig
from brainseg_lib.training.schema import AMP_MODES, SCHEDULES, TrainSchema

REAL_PARAMS = paths.PARAMS_DIR
BOMB = "".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"]
               + [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
                  for p, c in zip("abcdefgh", "bcdefghi")])


@pytest.fixture
def params_dir(tmp_path, monkeypatch):
    """A params folder holding the real base.yaml and smoke.yaml; ``add(name, text)`` adds a profile."""
    folder = tmp_path / "params"
    folder.mkdir()
    for name in ("base", "smoke"):
        shutil.copy(REAL_PARAMS / f"{name}.yaml", folder)
    monkeypatch.setattr(paths, "PARAMS_DIR", folder)

    def add(name: str, text: str):
        path = folder / f"{name}.yaml"
        path.write_text(f"profile: {name}\n" + text)
        return path
    return add


def refused_by_cli(argv, capsys, *names) -> str:
    """Run the CLI, check it exits 2 with one line holding every one of ``names``, and that
    nothing was cached or written; return the line."""
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for name in names:
        assert name in err, (name, err)
    assert_no_work_done()
    return err


def assert_no_work_done():
    """No cache built, no checkpoint, metric or table written."""
    assert not any(paths.cache_dir().iterdir()), "a cache was built before the refusal"
    written = [p for p in paths.results_dir().rglob("*")
               if p.is_file() and p.suffix in {".pt", ".json", ".csv", ".npz", ".npy", ".ipynb"}]
    assert not written, f"written before the refusal: {written}"


def refused_at_run_profile(params, key):
    """``run_profile`` (its first step, ``config_from_params``) refuses ``params`` naming ``key``
    before any cache or run folder exists."""
    with pytest.raises(ValueError, match=key) as e:
        run_profile(params)
    assert "\n" not in str(e.value)
    assert_no_work_done()
    assert not paths.runs_dir().exists() or not any(paths.runs_dir().iterdir())


# ------------------------------------------------------------------ probe 5
def test_quoted_false_is_refused(params_dir, capsys):
    path = params_dir("quoted", 'augment: "false"\n')
    with pytest.raises(ValueError, match=r"quoted\.yaml: augment: must be true or false without quotes"):
        load_profile("quoted")
    refused_by_cli(["train", "--profile", "quoted"], capsys, "augment", str(path))
    refused_by_cli(["train", "--profile", "smoke", "--set", 'augment="false"'], capsys, "augment", "--set")
    refused_at_run_profile({**load_profile("smoke"), "augment": "false"}, "augment")
    for value in ("false", "true", "no", 0, 1):    # text or a number: neither is a boolean
        with pytest.raises(ValueError, match="augment"):
            TrainConfig.from_dict({"augment": value})
    params_dir("plain", "augment: false\n")
    assert load_profile("plain")["augment"] is False
    assert config_from_params(load_profile("plain")).augment is False


# ------------------------------------------------------------------ probe 6
def test_epochs_zero_refused_before_work(params_dir, capsys):
    path = params_dir("zero", "epochs: 0\n")
    refused_by_cli(["train", "--profile", "zero"], capsys, "epochs", str(path))
    refused_by_cli(["train", "--profile", "smoke", "--set", "epochs=0"], capsys, "epochs", "--set")
    refused_at_run_profile({**load_profile("smoke"), "epochs": 0}, "epochs")


def test_batch_size_zero_refused_in_one_line(params_dir, capsys):
    path = params_dir("nobatch", "batch_size: 0\n")
    refused_by_cli(["train", "--profile", "nobatch"], capsys, "batch_size", str(path))
    refused_at_run_profile({**load_profile("smoke"), "batch_size": 0}, "batch_size")


def test_threads_minus_one_refused_in_one_line(params_dir, capsys):
    path = params_dir("threads", "threads: -1\n")
    refused_by_cli(["train", "--profile", "threads"], capsys, "threads", str(path))
    refused_by_cli(["train", "--profile", "smoke", "--set", "threads=-1"], capsys, "threads", "--set")
    assert [TrainConfig.from_dict({"threads": n}).threads for n in (0, 1, 2)] == [0, 1, 2]


@pytest.mark.parametrize("text, where", [
    ("epochs: [1, 2\n", "line"),                 # an unclosed list
    ("epochs: 2\n  lr: 0.1\n", "line 2"),        # bad indentation
    ("\tepochs: 2\n", "line"),                   # a tab
    ("- epochs\n- 2\n", "mapping"),              # not a mapping
])
def test_invalid_yaml_refused_in_one_line(params_dir, capsys, text, where):
    path = params_dir("broken", "")
    path.write_text(text)
    err = refused_by_cli(["train", "--profile", "broken"], capsys, str(path), where)
    assert "Traceback" not in err
    with pytest.raises(ValueError, match=r"--set lr: not valid parameter YAML"):
        with_overrides(load_profile("smoke"), ["lr=[0.1"])


def test_limit_train_minus_three_refused(params_dir, capsys):
    path = params_dir("limits", "limit_train: -3\n")
    refused_by_cli(["train", "--profile", "limits"], capsys, "limit_train", str(path))
    refused_at_run_profile({**load_profile("smoke"), "limit_train": -3}, "limit_train")
    for key in ("limit_train", "limit_val", "limit_test", "detection_limit"):
        with pytest.raises(ValueError, match=key):     # 0 leaves nothing to train, validate or score
            check_params({key: 0}, "test")
        check_params({key: None}, "test")
        check_params({key: 5}, "test")


def test_image_size_72_refused_before_caches(params_dir, capsys):
    path = params_dir("size72", "image_size: 72\n")
    err = refused_by_cli(["train", "--profile", "size72"], capsys, "image_size", str(path))
    assert "multiple of 16" in err
    refused_by_cli(["train", "--profile", "smoke", "--set", "image_size=72"], capsys, "image_size", "--set")
    refused_at_run_profile({**load_profile("smoke"), "image_size": 72}, "image_size")
    for size in (0, 8, 2048):
        with pytest.raises(ValueError, match="image_size"):
            TrainConfig.from_dict({"image_size": size})
    assert TrainConfig.from_dict({"image_size": 96}).image_size == 96


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "inf", "0", "-1e-3", "true"])
def test_lr_inf_refused_before_training(params_dir, capsys, value):
    refused_by_cli(["train", "--profile", "smoke", "--set", f"lr={value}"], capsys, "lr", "--set")
    with pytest.raises(ValueError, match="lr"):
        TrainConfig.from_dict({"lr": yaml.safe_load(value)})
    refused_at_run_profile({**load_profile("smoke"), "lr": float("inf")}, "lr")


def test_alias_bomb_refused_quickly(params_dir, capsys, tmp_path):
    path = params_dir("bomb", BOMB)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"bomb\.yaml: .*anchors and aliases"):
        load_profile("bomb")
    refused_by_cli(["run-study", "--profile", "bomb"], capsys, str(path), "aliases")
    with pytest.raises(ValueError, match=r"--set sweep_seeds: .*aliases"):
        with_overrides(load_profile("smoke"), ["sweep_seeds=" + BOMB.replace("\n", ", ").join("{}")])
    plan = tmp_path / "plan.yaml"
    plan.write_text(BOMB)
    with pytest.raises(ValueError, match="aliases"):
        levers.load_plan(plan)
    assert time.perf_counter() - t0 < 10


# ------------------------------------------------------------------ the YAML reader's limits
@pytest.mark.parametrize("text, message", [
    ("epochs: 2\nepochs: 3\n", "given twice"),
    ("1: 2\n", "plain name"),
    ("<<: {epochs: 2}\n", "plain name"),
    ("epochs: !!python/object/apply:os.system [echo]\n", "not valid parameter YAML"),
    ("sweep_variants: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n", "nested"),
    ("a: 1\n---\nb: 2\n", "single document"),
    ("epochs: " + "9" * 5000 + "\n", "not valid parameter YAML"),
])
def test_params_yaml_is_read_safely(text, message):
    with pytest.raises(ValueError, match=message) as e:
        parse_params_text(text, "some.yaml")
    assert str(e.value).startswith("some.yaml: ") and "\n" not in str(e.value)


def test_params_yaml_size_is_limited(params_dir):
    path = params_dir("huge", "# " + "x" * MAX_BYTES + "\n")
    with pytest.raises(ValueError, match=r"huge\.yaml: over"):
        load_profile("huge")


# ------------------------------------------------------------------ what stays as it was
def test_every_committed_profile_validates_and_merges_unchanged():
    """The committed profiles pass, with the same values and types as a plain merge (the
    study regenerates identically), and so do their configs and the lever trials'."""
    base = yaml.safe_load((REAL_PARAMS / "base.yaml").read_text())
    assert set(known_profiles()) >= {"smoke", "cpu", "paper"}
    for name in known_profiles():
        plain = {**base, **(yaml.safe_load((REAL_PARAMS / f"{name}.yaml").read_text()) or {})}
        merged = load_profile(name)
        assert merged == plain and [type(v) for v in merged.values()] == [type(v) for v in plain.values()]
        cfg = config_from_params(merged)
        assert isinstance(cfg.lr, float) and isinstance(cfg.snapshot_epochs, list)
    plan = levers.load_plan()
    assert plan == yaml.safe_load((REAL_PARAMS / "levers.yaml").read_text())
    for params in levers.trial_params(plan):
        config_from_params(params)


@pytest.mark.parametrize("nb", study_notebooks(), ids=lambda p: p.stem)
def test_notebook_parameters_cells_validate(nb):
    check_params(declared_parameters(nb), nb.name)


def test_numbers_written_as_text_still_work_but_booleans_are_not_numbers(params_dir):
    params_dir("text", "lr: 1e-3\nmax_train_seconds: 3e2\n")    # YAML 1.1 reads both as text
    p = load_profile("text")
    assert p["lr"] == "1e-3"                                     # kept as written
    cfg = config_from_params(p)
    assert (cfg.lr, cfg.max_train_seconds) == (1e-3, 300.0) and isinstance(cfg.lr, float)
    for key, value in (("epochs", True), ("batch_size", False), ("lr", True), ("epochs", 2.5),
                       ("lr", "1e-3x"), ("snapshot_epochs", 5), ("snapshot_epochs", [0])):
        with pytest.raises(ValueError, match=key):
            TrainConfig.from_dict({key: value})


def test_lever_plan_is_checked(tmp_path):
    plan = yaml.safe_load((REAL_PARAMS / "levers.yaml").read_text())
    plan["trials"][1]["set"]["healthy_ratio"] = -0.5
    plan["trials"][2]["sets"] = {}
    bad = tmp_path / "plan.yaml"
    bad.write_text(yaml.safe_dump(plan))
    with pytest.raises(ValueError) as e:
        levers.load_plan(bad)
    assert str(e.value).startswith(str(bad)) and "trials.1.set.healthy_ratio" in str(e.value)
    assert "trials.2.sets: no such parameter" in str(e.value)


def test_set_tags_the_profile_with_a_safe_name():
    tagged = with_overrides(load_profile("smoke"), ["run_tag=été/../x y", "seed=3"], tag_profile=True)
    assert check_name(tagged["profile"]) == "smoke+run_tag=_t__.._x_y+seed=3"
    long = with_overrides(load_profile("smoke"), ["run_tag=" + "x" * 300], tag_profile=True)
    assert check_name(long["profile"]).startswith("smoke+run_tag=xxx")


# ------------------------------------------------------------------ the schema covers the code
def test_the_schema_covers_every_parameter_and_choice():
    from brainseg_lib.training.schedule import lr_factor
    from brainseg_lib.xai.attribution import TARGETS
    from brainseg_lib.xai.deletion import FILLS
    assert set(TrainSchema.model_fields) == set(TrainConfig.__dataclass_fields__)
    base = yaml.safe_load((REAL_PARAMS / "base.yaml").read_text())
    assert set(base) | RUN_KEYS <= set(ParamsSchema.model_fields)
    assert (XAI_TARGETS, XAI_FILLS) == (tuple(TARGETS), tuple(FILLS))
    for schedule in SCHEDULES:
        lr_factor(TrainConfig(schedule=schedule, max_train_seconds=10.0), 1, 10, 1.0)
    with pytest.raises(ValueError):
        lr_factor(TrainConfig(schedule="cosine"), 1, 10, 1.0)
    assert set(AMP_MODES) == {"auto", "off", "bf16"}
    with pytest.raises(ValueError, match="time_cosine' needs max_train_seconds"):
        check_params({**load_profile("smoke"), "schedule": "time_cosine"}, "test")
