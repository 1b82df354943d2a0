#!/usr/bin/env bash
# Regenerate every figure, table and metric of the study.
#   ./run_all.sh            profile "cpu", or "paper" when CUDA is present
#   ./run_all.sh smoke|cpu|paper
# Notebooks run in order with papermill; outputs are staged in a temporary folder
# and moved into results/ only when every notebook succeeded. The smoke profile is a
# quick check of the pipeline and writes to results/smoke/ (git-ignored), leaving the
# study's results/ alone.
set -euo pipefail
cd "$(dirname "$0")"
root="$(pwd)"
t_start=$(date +%s)

# 1. the data, checked before installing anything heavy
data="${BRAINSEG_DATA:-data/br35h}"
case "$data" in /*) ;; *) data="$root/$data" ;; esac
missing=""
[ -d "$data" ] || missing="the folder $data"
for s in TRAIN:train VAL:val TEST:test; do
  d="${s%%:*}"; n="${s##*:}"
  [ -n "$missing" ] || [ -f "$data/Br35H-Mask-RCNN/$d/annotations_$n.json" ] \
    || missing="$data/Br35H-Mask-RCNN/$d/annotations_$n.json"
done
if [ -n "$missing" ]; then
  cat >&2 <<MSG
error: Br35H dataset not found: missing $missing
Get it from Kaggle 'ahmedhamada0/brain-tumor-detection'
  (kaggle datasets download -d ahmedhamada0/brain-tumor-detection)
or from GitHub 'AhmedHamada0/Brain-Tumor-Detection-Dataset', unpack it so that
  <folder>/Br35H-Mask-RCNN/TRAIN/annotations_train.json exists,
then run:  BRAINSEG_DATA=<folder> ./run_all.sh
MSG
  exit 2
fi
export BRAINSEG_DATA="$data"

# 2. environment
source scripts/setup_env.sh "test,lab"

# 3. profile
profile="${1:-}"
if [ -z "$profile" ]; then
  profile=$(python -c "import torch; print('paper' if torch.cuda.is_available() else 'cpu')")
fi
[ -f "params/$profile.yaml" ] || { echo "error: no profile params/$profile.yaml" >&2; exit 2; }
echo "[run_all] profile: $profile   data: $BRAINSEG_DATA"

# 4. staging: results go here first; a failed or killed run never touches results/
dest="results"
if [ "$profile" = smoke ]; then
  dest="results/smoke"
  export BRAINSEG_SWEEP="$root/results/smoke/sweep"   # notebook 08 runs its tiny sweep here
fi
mkdir -p "$dest"
rm -rf results/.staging-* results/smoke/.staging-*   # left by a run killed with SIGKILL
stage="$(mktemp -d "$root/$dest/.staging-XXXXXX")"
trap 'rm -rf "$stage"' EXIT
trap 'echo "[run_all] interrupted; $dest/ left as it was" >&2; exit 130' INT TERM
mkdir -p "$stage/executed"
export BRAINSEG_RESULTS="$stage" BRAINSEG_PROGRESS=0 MPLBACKEND=Agg
t_nb0=$(date +%s)

timings=""
for nb in notebooks/[0-9][0-9]_*.ipynb; do
  name="$(basename "$nb")"
  t0=$(date +%s)
  echo "[run_all] $name ..."
  if ! ${PAPERMILL:-papermill} -k python3 -f "params/$profile.yaml" --cwd notebooks \
        "$nb" "$stage/executed/$name" >"$stage/papermill.log" 2>&1; then
    echo "[run_all] FAILED in $name; the executed copy shows the failing cell." >&2
    grep -E "PapermillExecutionError|Exception encountered at|Error|error" "$stage/papermill.log" | tail -n 15 >&2 || true
    tail -n 25 "$stage/papermill.log" >&2
    keep="$root/$dest/failed-$name"
    cp "$stage/executed/$name" "$keep" 2>/dev/null && echo "[run_all] partial notebook kept at $keep" >&2
    exit 1
  fi
  dt=$(( $(date +%s) - t0 ))
  timings="$timings\"${name%.ipynb}\": $dt, "
  echo "[run_all] $name done in $dt s"
done
t_nb=$(( $(date +%s) - t_nb0 ))
rm -f "$stage/papermill.log"

# 5. move the staged results in, folder by folder
for sub in "$stage"/*/; do
  sub="$(basename "$sub")"
  rm -rf "$dest/$sub.old"
  [ -e "$dest/$sub" ] && mv "$dest/$sub" "$dest/$sub.old"
  mv "$stage/$sub" "$dest/$sub"
  rm -rf "$dest/$sub.old"
done
rm -f "$dest"/failed-*.ipynb
mkdir -p results/timings
cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//' || true)"
gpu="$(python -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')")"
cat > "results/timings/run_all_$profile.json" <<JSON
{"profile": "$profile", "total_seconds": $t_nb, "notebooks": {${timings%, }},
 "machine": "$(nproc) cores, ${cpu:-unknown CPU}${gpu:+, $gpu}", "date": "$(date -u +%Y-%m-%d)"}
JSON
export BRAINSEG_RESULTS="$root/$dest"
if [ "$profile" = cpu ]; then
  python -m brainseg_lib release >/dev/null
  echo "[run_all] released results/models/brainseg-cpu.pt (see results/models/MODEL_CARD.md)"
fi
[ "$dest" = results ] && python -m brainseg_lib embed-table >/dev/null

echo
echo "[run_all] finished profile '$profile' in $(( $(date +%s) - t_start )) s"
echo "[run_all] Table I: $dest/tables/table1.md"
python -m brainseg_lib headline --profile "$profile"
