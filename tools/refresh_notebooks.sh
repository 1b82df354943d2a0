#!/usr/bin/env bash
# Re-execute the notebooks in place with their stored (smoke) defaults, so the outputs
# committed in notebooks/ are the ones nbval compares against in CI.
# Results go to a throw-away folder; results/ is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh test
scratch="$(mktemp -d -t brainseg-refresh.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
export BRAINSEG_RESULTS="$scratch/results" BRAINSEG_SWEEP="$scratch/sweep" BRAINSEG_PROGRESS=0 MPLBACKEND=Agg
for nb in notebooks/[0-9][0-9]_*.ipynb; do
  echo "[refresh] $nb"
  papermill -k python3 --cwd notebooks "$nb" "$nb" --log-level WARNING
done
