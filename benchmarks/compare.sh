#!/usr/bin/env bash
# Train several models one after another on one dataset with the plugin's defaults (one process each)
# and print a table of seconds per training epoch and validation/test metrics from their result files.
#   bash benchmarks/compare.sh OUT_DIR DATASET "SASRec DiffCLRec" [--key=value ...]
# Example (issue 2): bash benchmarks/compare.sh scratch/ml100k ml-100k "DiffCLRec SASRec CL4SRec DuoRec"
set -euo pipefail
out=$1; dataset=$2; models=$3; shift 3
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
for model in $models; do
  echo "[compare] $model on $dataset $* ($(date +%H:%M:%S))" >&2
  # runs inside OUT_DIR (logs, saved/ there); the data stay in the repo's dataset/ unless --data_path is given
  (cd "$out" && python "$root/run_recbole_diffcl.py" --model="$model" --dataset="$dataset" --show_progress=False \
      --data_path="$root/dataset/" --result_file="$model.json" "$@" > "$model.log" 2>&1)
done
python - "$out" $models <<'PY'
import json, statistics, sys
out, models = sys.argv[1], sys.argv[2:]
print("| model | epochs | s / epoch (median) | valid NDCG@10 | test NDCG@10 | test Hit@10 | test MRR@10 | peak RSS (MB) |")
print("|---|---|---|---|---|---|---|---|")
for m in models:
    r = json.load(open(f"{out}/{m}.json"))
    t, v = r["test_result"], r["best_valid_result"]
    print(f"| {m} | {r['epochs_run']} | {statistics.median(r['seconds_per_epoch']):.1f} | {v['ndcg@10']:.4f} | "
          f"{t['ndcg@10']:.4f} | {t['hit@10']:.4f} | {t['mrr@10']:.4f} | {r['peak_rss_mb']:.0f} |")
PY
