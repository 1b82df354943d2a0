#!/usr/bin/env bash
# Build the two folders that carry the data and the missing Python packages to a lent GPU
# machine (this workplace's `device` tool), which sends at most 64 MiB per call and has no
# network. See tools/gpu_kit/README.md for the whole procedure.
#   BRAINSEG_DATA=... BRAINSEG_EXTERNAL=... tools/gpu_kit/make_kit.sh
# .gpu_a/: Br35H-Mask-RCNN/, pred/, the external set and its checksums, wheels_a/ (run_paper.sh)
# .gpu_b/: no/, yes/y801..y1499 (y0..y800 are byte-identical to the annotated images and are
#          re-made there as hard links), wheels_b/ (debugpy, jedi), stash.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
data="${BRAINSEG_DATA:?set BRAINSEG_DATA}"; ext="${BRAINSEG_EXTERNAL:?set BRAINSEG_EXTERNAL}"
ext_sums="${BRAINSEG_EXTERNAL_SHA256:-$ext.sha256}"
rm -rf .gpu_a .gpu_b
mkdir -p .gpu_a/br35h .gpu_b/br35h/yes .gpu_a/wheels_a .gpu_b/wheels_b
cp -r "$data/Br35H-Mask-RCNN" "$data/pred" .gpu_a/br35h/
cp -r "$ext" .gpu_a/lgg_external && cp "$ext_sums" .gpu_a/lgg_external.sha256
cp -r "$data/no" .gpu_b/br35h/
cp "$data"/yes/y{801..1499}.jpg .gpu_b/br35h/yes/
# the packages the device image lacks (tools/gpu_kit/wheels.txt), for its Python 3.12
dl() { .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$1" "${@:2}"; }
mapfile -t pkgs < <(grep -v '^#' tools/gpu_kit/wheels.txt | grep .)
big=(); small=()
for p in "${pkgs[@]}"; do case "$p" in debugpy==*|jedi==*) big+=("$p") ;; *) small+=("$p") ;; esac; done
dl .gpu_a/wheels_a "${small[@]}"
dl .gpu_b/wheels_b "${big[@]}"
cp tools/gpu_kit/run_paper.sh .gpu_a/ && cp tools/gpu_kit/stash.sh .gpu_b/
tracked=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
for d in .gpu_a .gpu_b; do
  s=$(du -sb "$d" | cut -f1)
  echo "$d: $((s / 1048576)) MiB + tracked tree $((tracked / 1048576)) MiB (limit 64 MiB per call)"
done
