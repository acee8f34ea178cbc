#!/usr/bin/env bash
# The results table of issue #20, run on the 2-core CPU machine, one benchmark folder per dataset.
# Usage (from a checkout at a fixed commit, with the dataset prepared under its dataset/ folder):
#   OMP_NUM_THREADS=1 bash benchmarks/campaign/table.sh DATASET OUT [PARALLEL] [MODELS]
# Rerunning the same command skips finished runs and resumes an interrupted one from its last epoch.
# RecBole's own SASRec (one row per prefix, ~6x the cost of a whole-sequence run) gets one seed on the CPU,
# in OUT/recbole-sasrec/ once the three-seed rows are done (three seeds where a GPU is lent).
set -euo pipefail
dataset=$1 out=$2 parallel=${3:-1}
models=${4:-SASRecPlus,DiffCLRec-paper-cl=DiffCLRec:props/model/DiffCLRec-paper-cl.yaml,CL4SRec,DuoRec}
common=(--dataset="$dataset" --parallel="$parallel" --show_progress=False)
python -m recbole_diffcl.benchmark --seeds=2020,2021,2022 --models="$models" --reference=SASRecPlus --out="$out" "${common[@]}"
python -m recbole_diffcl.benchmark --seeds=2020 --models=SASRec --reference=SASRec --out="$out/recbole-sasrec" "${common[@]}"
