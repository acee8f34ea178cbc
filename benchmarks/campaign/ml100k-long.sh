#!/usr/bin/env bash
# Issue #26: the full ml-100k (943 users, no length cap, MAX_ITEM_LIST_LENGTH 50), one seed each:
# SASRecPlus before (BEFORE: a checkout before the windows) and after (this checkout), and RecBole's SASRec.
# Rerunning it skips finished runs and resumes an interrupted one from its last epoch checkpoint.
#   OMP_NUM_THREADS=1 bash benchmarks/campaign/ml100k-long.sh BEFORE_CHECKOUT OUT
set -euo pipefail
before=$1 out=$2
mkdir -p "$out"
common=(--dataset=ml-100k "--user_inter_num_interval=[0,inf)" --seed=2020 --show_progress=False)
out=$(cd "$out" && pwd)
run() {  # label, checkout, model; an interrupted run continues from its last epoch (log appended)
  local last resume=()
  last=$(ls -t "$out/checkpoints/$1"/*-last.pth 2>/dev/null | head -n 1 || true)
  [ -n "$last" ] && resume=(--resume="$last")
  (cd "$2" && python run_recbole_diffcl.py --model="$3" "${common[@]}" --checkpoint_dir="$out/checkpoints/$1" \
      --result_file="$out/$1.json" "${resume[@]}" >> "$out/$1.log" 2>&1)
}
[ -f "$out/SASRecPlus-after.json" ] || run SASRecPlus-after "$PWD" SASRecPlus
[ -f "$out/SASRecPlus-before.json" ] || run SASRecPlus-before "$before" SASRecPlus
[ -f "$out/SASRec.json" ] || run SASRec "$PWD" SASRec
