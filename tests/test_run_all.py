"""run_all.sh never leaves a mix of old and new results.

The script runs in a throw-away copy of the project (its scripts, params and
notebook names; the real .venv is linked in, so no install happens) with a
stand-in for papermill (``PAPERMILL``), so these tests take seconds and touch
nothing in the repository.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"

pytestmark = pytest.mark.skipif(not (VENV / "bin" / "python").exists() or sys.platform == "win32",
                                reason="needs the project's .venv (created by run_tests.sh) and bash")

FAKE_PAPERMILL = """#!/usr/bin/env bash
# stand-in for papermill: writes one metrics file per notebook into the staging folder;
# FAIL_ON / HANG_ON name a notebook that fails or hangs.
out="${@: -1}"; nb="$(basename "$out" .ipynb)"
mkdir -p "$BRAINSEG_RESULTS/metrics"
echo new > "$BRAINSEG_RESULTS/metrics/$nb.json"
if [ "$nb" = "${FAIL_ON:-}" ]; then echo "cell 3 failed" >&2; exit 1; fi
if [ "$nb" = "${HANG_ON:-}" ]; then touch "$HANG_FLAG"; sleep 60; fi
cp /dev/null "$out"
"""


@pytest.fixture()
def project(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("run_all.sh", "pyproject.toml"):
        shutil.copy2(ROOT / name, proj / name)
    shutil.copytree(ROOT / "scripts", proj / "scripts")
    shutil.copytree(ROOT / "params", proj / "params")
    (proj / "notebooks").mkdir()
    for nb in ("01_a.ipynb", "02_b.ipynb", "03_c.ipynb"):
        (proj / "notebooks" / nb).write_text("{}")
    (proj / ".venv").symlink_to(VENV)
    old = proj / "results" / "metrics"
    old.mkdir(parents=True)
    (old / "previous.json").write_text("old")
    data = tmp_path / "data"
    for split in ("TRAIN:train", "VAL:val", "TEST:test"):
        d, n = split.split(":")
        (data / "Br35H-Mask-RCNN" / d).mkdir(parents=True)
        (data / "Br35H-Mask-RCNN" / d / f"annotations_{n}.json").write_text("{}")
    fake = tmp_path / "papermill"
    fake.write_text(FAKE_PAPERMILL)
    fake.chmod(0o755)
    env = {**os.environ, "BRAINSEG_DATA": str(data), "PAPERMILL": str(fake),
           "BRAINSEG_SKIP_SETUP": "1"}
    env.pop("BRAINSEG_RESULTS", None)
    return proj, env


def _results(proj: Path) -> dict:
    return {str(p.relative_to(proj / "results")): p.read_text()
            for p in sorted((proj / "results").rglob("*")) if p.is_file()}


def test_failed_notebook_leaves_results_intact(project):
    proj, env = project
    before = _results(proj)
    r = subprocess.run(["bash", "run_all.sh", "smoke"], cwd=proj, env={**env, "FAIL_ON": "02_b"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "FAILED in 02_b.ipynb" in r.stderr
    assert _results(proj) == before                      # nothing new, nothing lost
    assert not list((proj / "results").glob(".staging-*"))


def test_killed_run_leaves_results_intact_and_next_run_starts_clean(project):
    proj, env = project
    before = _results(proj)
    flag = proj / "results" / "hanging"
    p = subprocess.Popen(["bash", "run_all.sh", "smoke"], cwd=proj,
                         env={**env, "HANG_ON": "02_b", "HANG_FLAG": str(flag)},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 60
    while not flag.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert time.time() < deadline, "run_all.sh never reached the second notebook"
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(timeout=30)
    assert p.returncode != 0
    flag.unlink()
    assert _results(proj) == before
    assert not list((proj / "results").glob(".staging-*"))
    # a SIGKILLed run cannot clean up: the next run removes its leftovers first
    stale = proj / "results" / "smoke" / ".staging-dead"
    (stale / "metrics").mkdir(parents=True)
    (stale / "metrics" / "half.json").write_text("partial")
    r = subprocess.run(["bash", "run_all.sh", "smoke"], cwd=proj, env={**env, "FAIL_ON": "01_a"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert not stale.exists()
    assert _results(proj) == before


def test_missing_data_is_reported_before_any_install(project, tmp_path):
    proj, env = project
    r = subprocess.run(["bash", "run_all.sh", "smoke"], cwd=proj,
                       env={**env, "BRAINSEG_DATA": str(tmp_path / "nowhere")},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "ahmedhamada0/brain-tumor-detection" in r.stderr
    assert "[setup]" not in r.stdout
