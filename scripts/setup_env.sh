#!/usr/bin/env bash
# Create .venv (if absent) and install the project from its own files.
# Sourced by run_all.sh and run_tests.sh; safe to source from an interactive shell too: it
# changes no shell options (no `set -e`), defines no variables but PATH and the internal
# _brainseg_setup function, and returns non-zero (never exits) when a step fails.
#   source scripts/setup_env.sh [extras]        extras: comma-separated, default "test"
# torch is pinned to 2.13.0 first: on the reference machine that is a local CPU wheel; an
# unpinned torch would pull a multi-GB CUDA build.
# The stamp .venv/.brainseg-installed records pyproject.toml's hash and the extras
# installed, so a second call with the same or fewer extras installs nothing.
_brainseg_setup() {
  local extras="${1:-test}"
  local root py stamp hash have="" missing="" all e
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
  py="$root/.venv/bin/python"
  case ":$PATH:" in *":$root/.venv/bin:"*) ;; *) export PATH="$root/.venv/bin:$PATH" ;; esac
  if [ "${BRAINSEG_SKIP_SETUP:-0}" = 1 ] && [ -x "$py" ]; then
    return 0
  fi
  if [ ! -x "$py" ]; then
    echo "[setup] creating $root/.venv"
    "${PYTHON:-python3}" -m venv "$root/.venv" || { echo "[setup] error: could not create .venv" >&2; return 1; }
  fi
  stamp="$root/.venv/.brainseg-installed"
  hash="$(sha256sum "$root/pyproject.toml" | cut -c1-16)" || return 1
  if [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "$hash" ]; then
    have="$(tail -n +2 "$stamp" | tr '\n' ',')"
  fi
  for e in ${extras//,/ }; do
    case ",$have," in *",$e,"*) ;; *) missing="$missing $e" ;; esac
  done
  if [ -z "$missing" ]; then
    echo "[setup] .venv up to date"
    return 0
  fi
  all="$(printf '%s\n' ${have//,/ } ${extras//,/ } | sort -u | paste -sd, -)"
  echo "[setup] installing torch==2.13.0 and brainseg[$all] into .venv"
  "$py" -m pip install -q --disable-pip-version-check "torch==2.13.0" &&
    "$py" -m pip install -q --disable-pip-version-check -e "$root[$all]" &&
    "$py" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (brainseg)" >/dev/null ||
    { echo "[setup] error: installing the project failed (see the pip output above)" >&2; return 1; }
  printf '%s\n' "$hash" ${all//,/ } > "$stamp"
}
_brainseg_setup "$@"
