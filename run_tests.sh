#!/usr/bin/env bash
# The test command: library unit tests + every notebook under nbval (smoke profile).
# Usage: ./run_tests.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh test
# notebooks and tests write into throw-away folders, never into the committed results/
scratch="$(mktemp -d -t brainseg-tests.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
export BRAINSEG_RESULTS="$scratch/results" BRAINSEG_SWEEP="$scratch/sweep" BRAINSEG_GPU_RUN="$scratch/gpu_run" MPLBACKEND=Agg BRAINSEG_PROGRESS=0
echo "[tests] BRAINSEG_DATA=${BRAINSEG_DATA:-data/br35h}"
python -m pytest tests notebooks \
  --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
  -p no:cacheprovider "$@"
