#!/usr/bin/env bash
# The paper profile on one GPU, as measured for results/paper/ and
# results/benchmarks/cuda-paper.json: ./run_all.sh paper, then bench --profile paper.
#   scripts/gpu_paper_run.sh [run_all seconds] [bench seconds, or "off" to skip the bench]
# Optional time limits per step (default 0: none) let a step that hangs leave the other's
# output and the log behind (tools/gpu_kit passes them on lent machines); a limit stops the
# step, it never shortens training (the profile's 100 epochs are the budget). Runs wherever
# run_all.sh runs; on a machine without CUDA it trains the paper profile on the CPU, for days.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 BRAINSEG_PROGRESS=0
source scripts/setup_env.sh "test,lab" || exit 1   # the project's .venv first on PATH
run_s="${1:-0}"     # timeout 0 = no limit
bench_s="${2:-0}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
t0=$(date +%s)
timeout -k 30 "$run_s" ./run_all.sh paper
rc_run=$?
echo "[gpu_paper_run] run_all.sh paper: exit $rc_run after $(( $(date +%s) - t0 )) s"
rc_bench=0
if [ "$bench_s" != off ]; then
  t1=$(date +%s)
  timeout -k 30 "$bench_s" python -m brainseg_lib bench --profile paper --no-onnx
  rc_bench=$?
  echo "[gpu_paper_run] bench --profile paper: exit $rc_bench after $(( $(date +%s) - t1 )) s"
fi
[ "$rc_run" = 0 ] && [ "$rc_bench" = 0 ]
