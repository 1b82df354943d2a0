"""cli.common.with_overrides: --set KEY=VALUE on a profile, refusing what it cannot apply."""
from __future__ import annotations

import pytest

from brainseg_lib.cli import main as cli_main
from brainseg_lib.cli.common import with_overrides
from brainseg_lib.study.experiment import config_from_params
from brainseg_lib.study.profiles import load_profile
from brainseg_lib.training.config import TrainConfig


def test_values_are_parsed_as_yaml_and_tagged_when_asked():
    p = with_overrides(load_profile("smoke"), ["epochs=3", "lr=0.001", "ema_decay=null", "augment=false"])
    assert (p["epochs"], p["lr"], p["ema_decay"], p["augment"]) == (3, 1e-3, None, False)
    tagged = with_overrides(load_profile("smoke"), ["epochs=3"], tag_profile=True)
    assert tagged["profile"] == "smoke+epochs=3"
    unsafe = with_overrides(load_profile("smoke"), ["device=cuda:0", "run_tag=a/b c"], tag_profile=True)
    assert unsafe["profile"] == "smoke+device=cuda_0+run_tag=a_b_c"          # a file-name part
    assert (unsafe["device"], unsafe["run_tag"]) == ("cuda:0", "a/b c")        # values unchanged


@pytest.mark.parametrize("bad, message", [
    ("batchsize=48", r"--set batchsize: no such parameter \(did you mean batch_size\?\)"),
    ("epochs", r"write KEY=VALUE"),
    ("=5", r"write KEY=VALUE"),
])
def test_a_typo_is_refused_not_ignored(bad, message):
    with pytest.raises(ValueError, match=message):
        with_overrides(load_profile("smoke"), [bad])


def test_cli_exits_2_before_training(capsys):
    assert cli_main(["train", "--profile", "smoke", "--set", "batchsize=48"]) == 2
    assert "did you mean batch_size" in capsys.readouterr().err


def test_numbers_yaml_reads_as_text_reach_the_config_as_numbers():
    # YAML 1.1 (PyYAML, papermill) reads 1e-3 as the string "1e-3"
    p = with_overrides(load_profile("smoke"), ["lr=1e-3", "epochs=2"])
    assert p["lr"] == "1e-3"
    cfg = config_from_params(p)
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float) and cfg.epochs == 2
    assert TrainConfig(image_size="64", max_train_seconds="3e2").image_size == 64
    assert TrainConfig(max_train_seconds="3e2").max_train_seconds == 300.0
    assert TrainConfig(epochs="1e2").epochs == 100 and isinstance(TrainConfig(epochs="1e2").epochs, int)
    for field, text in (("lr", "fast"), ("lr", "nan"), ("lr", "inf"), ("epochs", "2.5")):
        with pytest.raises(ValueError, match=f"{field} must be a finite number"):
            TrainConfig(**{field: text})
