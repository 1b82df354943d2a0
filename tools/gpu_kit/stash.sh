#!/usr/bin/env bash
# GPU call 1 of 2 (tools/gpu_kit/README.md): keep .gpu_b in /tmp, which outlives the call while
# the machine stays warm; a carried folder does not (the next call's carry replaces it).
set -euo pipefail
mkdir -p /tmp/gpu_kit && rm -rf /tmp/gpu_kit/.gpu_b && cp -a .gpu_b /tmp/gpu_kit/
du -sh /tmp/gpu_kit/.gpu_b
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"
