#!/usr/bin/env bash
# Back here after GPU call 3: replace results/paper/ and results/benchmarks/cuda-paper.json
# with what the run packed.   tools/gpu_kit/unpack.sh <files_at folder of the reply>
set -euo pipefail
from="${1:?give the files_at folder of the reply}"
cd "$(dirname "$0")/../.."
ls "$from"/paper.tgz.part-* >/dev/null
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat "$from"/paper.tgz.part-* | tar xzf - -C "$tmp"
[ -d "$tmp/results/paper/metrics" ] \
  || { echo "no results/paper/metrics in the parts: the run did not finish (see $from/log.txt)"; exit 2; }
rm -rf results/paper && mv "$tmp/results/paper" results/paper
[ -f "$tmp/results/benchmarks/cuda-paper.json" ] && mv "$tmp/results/benchmarks/cuda-paper.json" results/benchmarks/
echo "unpacked into results/paper and results/benchmarks; now: python -m brainseg_lib update-readme"
