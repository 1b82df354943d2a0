#!/usr/bin/env bash
# GPU call 3 of 3 (tools/gpu_kit/README.md): wheels, data assembled and verified against the
# checksums, scripts/gpu_paper_run.sh, and the results packed into $OUT in parts of 15 MB.
#   RUN_S (run_all.sh limit, default 420) and BENCH_S (bench limit, default 120)
set -uo pipefail
PY=${PY:-python3}
t0=$(date +%s)
for d in .gpu_b .gpu_c; do
  [ -d "/tmp/gpu_kit/$d" ] || { echo "the stash of $d is gone (the machine was given back):" \
    "run calls 1 and 2 again"; exit 5; }
  rm -rf "$d" && cp -a "/tmp/gpu_kit/$d" .
done
[ "${SKIP_WHEELS:-0}" = 1 ] || $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target /tmp/site .gpu_c/wheels/*.whl || { echo "wheel install failed"; exit 3; }
export PYTHONPATH=$PWD:/tmp/site${EXTRA_PYTHONPATH:+:$EXTRA_PYTHONPATH}
# pip --target puts the wheels' data files (nbconvert's HTML templates) under /tmp/site/share
export JUPYTER_PATH=/tmp/site/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}
[ -e .venv ] || ln -sfn "$($PY -c 'import sys; print(sys.prefix)')" .venv
# the data folders are hard links and a link made by this script; a rerun on a warm machine
# remakes them, but never replaces a dataset it did not make
mark=data/br35h/.made_by_gpu_kit
if [ -e data/br35h ] && [ ! -e "$mark" ]; then
  echo "data/br35h exists and was not made by gpu_kit: refusing to replace it"; exit 7
fi
if { [ -e data/lgg_external ] || [ -L data/lgg_external ]; } \
   && [ "$(readlink data/lgg_external)" != ../.gpu_a/lgg_external ]; then
  echo "data/lgg_external exists and is not gpu_kit's link: refusing to replace it"; exit 7
fi
rm -rf data/br35h && mkdir -p data/br35h && touch "$mark"
cp -al .gpu_a/br35h/. data/br35h/ && cp -al .gpu_b/br35h/. data/br35h/
ln -f -t data/br35h/yes/ data/br35h/Br35H-Mask-RCNN/{TRAIN,VAL,TEST}/y*.jpg
ln -sfn ../.gpu_a/lgg_external data/lgg_external
(cd data/br35h && sha256sum -c --quiet ../../references/br35h.sha256) \
  || { echo "Br35H checksums FAILED"; exit 6; }
(cd data/lgg_external && sha256sum -c --quiet ../../.gpu_a/lgg_external.sha256) \
  || { echo "external checksums FAILED"; exit 6; }
echo "data verified after $(( $(date +%s) - t0 )) s"
export BRAINSEG_DATA=data/br35h BRAINSEG_EXTERNAL=data/lgg_external BRAINSEG_SKIP_SETUP=1
bash scripts/gpu_paper_run.sh "${RUN_S:-420}" "${BENCH_S:-120}" 2>&1 \
  | grep --line-buffered -v IPKernelApp | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
tar czf - --exclude='*.pt' results/paper results/benchmarks/cuda-paper.json | split -b 15M - "$OUT/paper.tgz.part-"
ls -la "$OUT"; echo "run_paper done in $(( $(date +%s) - t0 )) s, exit $rc"
exit "$rc"
