#!/usr/bin/env bash
# Refresh the committed notebooks after editing their jupytext sources (notebooks/NN_*.py):
#   1. sync each .py into its paired .ipynb (jupytext --sync: the newer file wins);
#   2. execute each notebook in place with its stored parameters (the smoke profile);
#   3. strip papermill timestamps and every output nbval does not check
#      (cells without `# NBVAL_CHECK_OUTPUT`), so readers never take smoke numbers for the study.
# Results go to a throw-away folder; results/ is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh test
scratch="$(mktemp -d -t brainseg-refresh.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
export BRAINSEG_RESULTS="$scratch/results" BRAINSEG_SWEEP="$scratch/sweep" BRAINSEG_PROGRESS=0 MPLBACKEND=Agg
jupytext --sync notebooks/[0-9][0-9]_*.py
for nb in notebooks/[0-9][0-9]_*.ipynb; do
  echo "[refresh] $nb"
  papermill -k python3 --cwd notebooks "$nb" "$nb" --log-level WARNING --no-progress-bar
  python -c "import sys; from brainseg_lib.study.notebooks import strip_execution_metadata as s; s(sys.argv[1], keep_unchecked_outputs=False)" "$nb"
done
