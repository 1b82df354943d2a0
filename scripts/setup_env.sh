#!/usr/bin/env bash
# Create .venv (if absent) and install the project from its own files.
# Sourced by run_all.sh and run_tests.sh. Usage: source scripts/setup_env.sh [extras]
# torch is pinned to 2.13.0 first: on the reference machine that is a local CPU
# wheel; an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
_extras="${1:-test}"
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$_root/.venv/bin/python"
if [ ! -x "$PY" ]; then
  echo "[setup] creating $_root/.venv"
  "${PYTHON:-python3}" -m venv "$_root/.venv"
fi
_stamp="$_root/.venv/.brainseg-installed"
_want="$(cat "$_root/pyproject.toml" | sha256sum | cut -c1-16)-$_extras"
if [ ! -f "$_stamp" ] || [ "$(cat "$_stamp")" != "$_want" ]; then
  echo "[setup] installing torch==2.13.0 and brainseg[$_extras] into .venv"
  "$PY" -m pip install -q --disable-pip-version-check "torch==2.13.0"
  "$PY" -m pip install -q --disable-pip-version-check -e "$_root[$_extras]"
  "$PY" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (brainseg)" >/dev/null
  echo "$_want" > "$_stamp"
else
  echo "[setup] .venv up to date"
fi
export PATH="$_root/.venv/bin:$PATH"
