#!/usr/bin/env bash
# The sparsity rows of issue #20 on the 2-core CPU machine: train_keep_ratio 0.25, 0.5, 0.75, one seed,
# one benchmark folder per ratio (OUT/keep-<ratio>); ratio 1.0 is the main table's seed-2020 row.
# Usage (from a checkout at a fixed commit, with the dataset prepared under its dataset/ folder):
#   OMP_NUM_THREADS=1 bash benchmarks/campaign/sparsity.sh DATASET OUT MODELS [RATIOS]
# e.g. MODELS=SASRecPlus now, DiffCLRec once issue #25 has set its defaults. Rerunning the same command
# skips finished runs and resumes an interrupted one from its last epoch.
set -euo pipefail
dataset=$1 out=$2 models=$3 ratios=${4:-0.25 0.5 0.75}
for r in $ratios; do
  python -m recbole_diffcl.benchmark --dataset="$dataset" --seeds=2020 --models="$models" \
      --reference="${models%%[,=]*}" --train_keep_ratio="$r" --show_progress=False --out="$out/keep-$r"
done
