#!/usr/bin/env bash
# GPU calls 1 and 2 of 3 (tools/gpu_kit/README.md): keep this folder (.gpu_b or .gpu_c) in /tmp,
# which outlives the call while the machine stays warm; a carried folder does not (the next
# call's carry replaces it).
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
name=$(basename "$src")
mkdir -p /tmp/gpu_kit && rm -rf "/tmp/gpu_kit/$name" && cp -a "$src" /tmp/gpu_kit/
du -sh "/tmp/gpu_kit/$name"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"
