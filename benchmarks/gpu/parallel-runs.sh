#!/bin/bash
# Run many trainings at once (on a lent GPU machine) and bring back their logs and result files.
#   usage, from the project root (on the GPU machine after `source .gpu/setup-device.sh`, see
#   docs/results.md):  bash benchmarks/gpu/parallel-runs.sh RUNS_FILE CAP_SECONDS
# RUNS_FILE: one run a line, "NAME ARGS..." (run_recbole_diffcl.py arguments; {root} stands for the project
# root). Each run gets its own folder under $OUT/runs (its saved/ and log/ apart), stdout in stdout.log,
# --result_file result.json, and is killed after CAP_SECONDS (give runs a smaller --max_train_seconds so
# that they stop by themselves and still test their best checkpoint). Small files come back as
# $OUT/runs.tgz (checkpoints and tensorboard files are left out).
set -u
runs=$1; cap=$2; root=$PWD; R=${OUT:-/tmp/out}/runs; mkdir -p "$R"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
while read -r name args; do
  [ -z "$name" ] || [ "${name#\#}" != "$name" ] && continue
  [ -f "$R/$name/result.json" ] && continue  # resumable: a finished run is not repeated
  mkdir -p "$R/$name"
  args=${args//\{root\}/$root}
  ( cd "$R/$name" && echo "$args" > args && timeout "$cap" python3 "$root/run_recbole_diffcl.py" $args \
      --data_path="$root/dataset" --show_progress=False --result_file="$R/$name/result.json" > stdout.log 2>&1
    echo "$name exit $?" ) &
done < "$runs"
wait
( cd "$R" && tar czf "$R/../runs.tgz" --exclude='*/saved' --exclude='*/log_tensorboard' . )
for f in "$R"/*/result.json; do [ -f "$f" ] && python3 -c "import json,sys; r=json.load(open(sys.argv[1])); t={k.lower():v for k,v in r['test_result'].items()}; print(sys.argv[1].split('/')[-2], 'epochs', r.get('epochs_run'), r.get('stopped_by'), 'valid', round(r['best_valid_score'],4), 'test ndcg@10', t.get('ndcg@10'))" "$f"; done
