#!/usr/bin/env bash
# GPU call 2 of 2 (tools/gpu_kit/README.md): wheels, data assembled and verified against the
# checksums, scripts/gpu_paper_run.sh, and the results packed into $OUT in parts of 15 MB.
#   RUN_S (run_all.sh limit, default 420) and BENCH_S (bench limit, default 120)
set -uo pipefail
PY=${PY:-python3}
t0=$(date +%s)
[ -d /tmp/gpu_kit/.gpu_b ] || { echo "the stash of call 1 is gone (the machine was given back): run call 1 again"; exit 5; }
rm -rf .gpu_b && cp -a /tmp/gpu_kit/.gpu_b .
[ "${SKIP_WHEELS:-0}" = 1 ] || $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target /tmp/site .gpu_a/wheels_a/*.whl .gpu_b/wheels_b/*.whl || { echo "wheel install failed"; exit 3; }
export PYTHONPATH=$PWD:/tmp/site${EXTRA_PYTHONPATH:+:$EXTRA_PYTHONPATH}
[ -e .venv ] || ln -sfn "$($PY -c 'import sys; print(sys.prefix)')" .venv
mkdir -p data/br35h
cp -al .gpu_a/br35h/. data/br35h/ && cp -al .gpu_b/br35h/. data/br35h/
ln -f -t data/br35h/yes/ data/br35h/Br35H-Mask-RCNN/{TRAIN,VAL,TEST}/y*.jpg
ln -sfn ../.gpu_a/lgg_external data/lgg_external
(cd data/br35h && sha256sum -c --quiet ../../references/br35h.sha256) || { echo "Br35H checksums FAILED"; exit 6; }
(cd data/lgg_external && sha256sum -c --quiet ../../.gpu_a/lgg_external.sha256) || { echo "external checksums FAILED"; exit 6; }
echo "data verified after $(( $(date +%s) - t0 )) s"
export BRAINSEG_DATA=data/br35h BRAINSEG_EXTERNAL=data/lgg_external BRAINSEG_SKIP_SETUP=1
bash scripts/gpu_paper_run.sh "${RUN_S:-420}" "${BENCH_S:-120}" 2>&1 | grep --line-buffered -v IPKernelApp | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
tar czf - --exclude='*.pt' results/paper results/benchmarks/cuda-paper.json | split -b 15M - "$OUT/paper.tgz.part-"
ls -la "$OUT"; echo "run_paper done in $(( $(date +%s) - t0 )) s, exit $rc"
exit "$rc"
