#!/usr/bin/env bash
# Regenerate every figure, table and metric of the study, and its HTML report.
#   ./run_all.sh [--fetch] [smoke|cpu|paper]
#     profile: cpu by default, paper when CUDA is present; smoke is a quick pipeline check.
#     cpu writes to results/, paper to results/paper/, smoke to results/smoke/ (git-ignored).
#     --fetch: download and verify Br35H first when it is missing (python -m brainseg_lib fetch-data).
# The work itself is `python -m brainseg_lib run-study` (brainseg_lib/study/run_all.py): the
# notebooks run with papermill into a staging folder, and results/ is replaced in one
# crash-safe swap only when everything succeeded; a second run on the same folder is refused.
set -euo pipefail
cd "$(dirname "$0")"
root="$(pwd)"
t_start=$(date +%s)

fetch=0
profile=""
for arg in "$@"; do
  case "$arg" in
    --fetch) fetch=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $arg (see ./run_all.sh --help)" >&2; exit 2 ;;
    *) profile="$arg" ;;
  esac
done

# 1. the data: checked before installing anything heavy
data="${BRAINSEG_DATA:-data/br35h}"
case "$data" in   # a leading ~ or ~user is expanded, as the Python side does (paths._from_env)
  "~"|"~/"*) data="$HOME${data#\~}" ;;
  "~"*) user="${data%%/*}"; user="${user#\~}"
        if [[ "$user" =~ ^[A-Za-z0-9._][A-Za-z0-9._-]*$ ]]; then   # a plain user name only
          home=$(eval "printf '%s' ~$user")       # an unknown user stays ~user, as in Python
          data="$home${data#\~"$user"}"
        fi ;;
esac
case "$data" in /*) ;; *) data="$root/$data" ;; esac
if [ ! -f "$data/Br35H-Mask-RCNN/TRAIN/annotations_train.json" ] && [ "$fetch" = 0 ]; then
  cat >&2 <<MSG
error: Br35H dataset not found at $data
Download and verify it (about 100 MB) with:   ./run_all.sh --fetch ${profile}
or get it by hand (Kaggle 'ahmedhamada0/brain-tumor-detection', or GitHub
'AhmedHamada0/Brain-Tumor-Detection-Dataset'), unpack it so that
  <folder>/Br35H-Mask-RCNN/TRAIN/annotations_train.json exists,
and run:  BRAINSEG_DATA=<folder> ./run_all.sh
MSG
  exit 2
fi
export BRAINSEG_DATA="$data"

# 2. environment (the project's own files install everything); a first run in a fresh clone
#    also creates .venv and every cache: its whole wall time is recorded apart (wall_<profile>.json)
fresh_venv=0; [ -x .venv/bin/python ] || fresh_venv=1
cache="${BRAINSEG_CACHE:-.cache}"; case "$cache" in /*) ;; *) cache="$root/$cache" ;; esac
cold_cache=0; [ -n "$(ls -A "$cache" 2>/dev/null)" ] || cold_cache=1
source scripts/setup_env.sh "test,lab"
if [ "$fetch" = 1 ]; then
  python -m brainseg_lib fetch-data --dest "$data"
fi

# 3. profile
if [ -z "$profile" ]; then
  profile=$(python -c "from brainseg_lib.study.profiles import default_profile; print(default_profile())")
fi
echo "[run_all] profile: $profile   data: $BRAINSEG_DATA"

# 4. notebooks -> staging -> release/export (cpu) -> report -> one swap into results/
export BRAINSEG_PROGRESS=0 MPLBACKEND=Agg
python -m brainseg_lib run-study --profile "$profile"

wall=$(( $(date +%s) - t_start ))
python -c "import sys; from brainseg_lib.report.timings import record_wall_time; from brainseg_lib.study.run_all import destination; from brainseg_lib import paths; p = sys.argv[1]; print('[run_all] wall time recorded in', record_wall_time(p, int(sys.argv[2]), sys.argv[3] == '1', sys.argv[4] == '1', paths.ensure(destination(p) / 'timings')))" "$profile" "$wall" "$fresh_venv" "$cold_cache"
echo
echo "[run_all] finished profile '$profile' in $wall s"
python -m brainseg_lib headline --profile "$profile"
