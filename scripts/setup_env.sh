#!/usr/bin/env bash
# Create .venv (if absent) and install the project from its own files.
# Sourced by run_all.sh and run_tests.sh. Usage: source scripts/setup_env.sh [extras]
# torch is pinned to 2.13.0 first: on the reference machine that is a local CPU
# wheel; an unpinned torch would pull a multi-GB CUDA build.
# The stamp .venv/.brainseg-installed records pyproject.toml's hash and the extras
# installed, so a second call with the same or fewer extras installs nothing.
set -euo pipefail
_extras="${1:-test}"
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$_root/.venv/bin/python"
export PATH="$_root/.venv/bin:$PATH"
if [ "${BRAINSEG_SKIP_SETUP:-0}" = 1 ] && [ -x "$PY" ]; then
  return 0 2>/dev/null || exit 0
fi
if [ ! -x "$PY" ]; then
  echo "[setup] creating $_root/.venv"
  "${PYTHON:-python3}" -m venv "$_root/.venv"
fi
_stamp="$_root/.venv/.brainseg-installed"
_hash="$(sha256sum "$_root/pyproject.toml" | cut -c1-16)"
_have=""
if [ -f "$_stamp" ] && [ "$(head -n1 "$_stamp")" = "$_hash" ]; then
  _have="$(tail -n +2 "$_stamp" | tr '\n' ',')"
fi
_missing=""
for e in ${_extras//,/ }; do
  case ",$_have," in *",$e,"*) ;; *) _missing="$_missing $e" ;; esac
done
if [ -n "$_missing" ]; then
  _all="$(printf '%s\n' ${_have//,/ } ${_extras//,/ } | sort -u | paste -sd, -)"
  echo "[setup] installing torch==2.13.0 and brainseg[$_all] into .venv"
  "$PY" -m pip install -q --disable-pip-version-check "torch==2.13.0"
  "$PY" -m pip install -q --disable-pip-version-check -e "$_root[$_all]"
  "$PY" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (brainseg)" >/dev/null
  printf '%s\n' "$_hash" ${_all//,/ } > "$_stamp"
else
  echo "[setup] .venv up to date"
fi
