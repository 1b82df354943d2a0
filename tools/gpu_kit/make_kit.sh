#!/usr/bin/env bash
# Build the three folders that carry the data and the missing Python packages to a lent GPU
# machine (this workplace's `device` tool), which sends a limited size per call and has no
# network. See tools/gpu_kit/README.md for the whole procedure.
#   BRAINSEG_DATA=... BRAINSEG_EXTERNAL=... tools/gpu_kit/make_kit.sh
# .gpu_a/: Br35H-Mask-RCNN/, pred/, the external set and its checksums, run_paper.sh (call 3)
# .gpu_b/: no/, yes/y801..y1499 (y0..y800 are byte-identical to the annotated images and are
#          re-made there as hard links), stash.sh (call 1)
# .gpu_c/: wheels/ (tools/gpu_kit/wheels.txt), stash.sh (call 2)
set -euo pipefail
cd "$(dirname "$0")/../.."
data="${BRAINSEG_DATA:?set BRAINSEG_DATA}"; ext="${BRAINSEG_EXTERNAL:?set BRAINSEG_EXTERNAL}"
ext_sums="${BRAINSEG_EXTERNAL_SHA256:-$ext.sha256}"
# what one call may send, as measured on 2026-11-26: 61.5 MB (tree + folder) went, 65.1 MB was
# refused ("the working tree is larger than 64 MiB"); the tool's own count is not documented
limit=${GPU_KIT_LIMIT_BYTES:-62000000}
rm -rf .gpu_a .gpu_b .gpu_c
mkdir -p .gpu_a/br35h .gpu_b/br35h/yes .gpu_c/wheels
cp -r "$data/Br35H-Mask-RCNN" "$data/pred" .gpu_a/br35h/
cp -r "$ext" .gpu_a/lgg_external && cp "$ext_sums" .gpu_a/lgg_external.sha256
cp -r "$data/no" .gpu_b/br35h/
cp "$data"/yes/y{801..1499}.jpg .gpu_b/br35h/yes/
# the packages the device image lacks (tools/gpu_kit/wheels.txt), for its Python 3.12
mapfile -t pkgs < <(grep -v '^#' tools/gpu_kit/wheels.txt | grep .)
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .gpu_c/wheels "${pkgs[@]}"
n=$(find .gpu_c/wheels -name '*.whl' | wc -l)
[ "$n" = "${#pkgs[@]}" ] || { echo "error: $n wheels for ${#pkgs[@]} pinned packages" >&2; exit 1; }
cp tools/gpu_kit/run_paper.sh .gpu_a/
cp tools/gpu_kit/stash.sh .gpu_b/ && cp tools/gpu_kit/stash.sh .gpu_c/
# the tree that travels is what git tracks plus what it does not ignore
tracked=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } \
  | du -cb --files0-from=- | tail -1 | cut -f1)
rc=0
for d in .gpu_a .gpu_b .gpu_c; do
  s=$(( $(du -sb "$d" | cut -f1) + tracked ))
  echo "$d: $((s / 1000000)) MB with the tree (kit limit $((limit / 1000000)) MB per call)"
  [ "$s" -le "$limit" ] || { echo "error: $d is too big for one call: make the tree slimmer" \
    "(README step 1)" >&2; rc=1; }
done
exit "$rc"
