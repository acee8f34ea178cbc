#!/usr/bin/env bash
# Issue #21's checks on a lent GPU machine, in one call (about 6 minutes on an H200 by our estimate):
#   1. the CUDA tests (python -m pytest -q tests/test_cuda.py),
#   2. milliseconds and host synchronisations per training step of SASRecPlus and DiffCLRec, each with and
#      without sync_free_steps (perf/step_speed.py),
#   3. seconds per epoch of SASRecPlus and DiffCLRec, the defaults and sync_free_steps=True (perf/speed.py):
#      the target is DiffCLRec's epoch at most 1.3x SASRecPlus's.
# Prepare here (the project root), then carry .gpu, dataset and .gpu-wheels-test to the device:
#   echo /.gpu/ >> .git/info/exclude; echo /.gpu-wheels-test/ >> .git/info/exclude
#   cp -r ../shared/gpu .gpu && python -m recbole_diffcl.prepare amazon-beauty
#   pip download -q --only-binary=:all: --python-version 3.12 -d .gpu-wheels-test pytest   # if the image lacks pytest
# and run there: bash perf/gpu_check.sh  (each part has its own time limit; results in $OUT).
# STEPS, WARMUP and EPOCHS shorten it (a smoke test on a CPU: STEPS=1 WARMUP=1, with a .gpu/setup-device.sh of one line).
set -u
out=${OUT:-/tmp/gpu-check}; mkdir -p "$out"
steps=${STEPS:-40} warmup=${WARMUP:-10} epochs=${EPOCHS:-4}
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; lscpu | grep "Model name"; } \
    > "$out/machine.txt" 2>&1
source .gpu/setup-device.sh > "$out/setup.txt" 2>&1 || { echo "setup failed: $out/setup.txt"; exit 1; }
if ! python3 -c "import pytest" 2>/dev/null && [ -d .gpu-wheels-test ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/recbole-site .gpu-wheels-test/*.whl >> "$out/setup.txt" 2>&1
fi
git rev-parse HEAD > "$out/commit.txt" 2>/dev/null
timeout 240 python3 -m pytest -q tests/test_cuda.py > "$out/test_cuda.txt" 2>&1
echo "test_cuda exit $?" >> "$out/test_cuda.txt"
timeout 240 python3 perf/step_speed.py --dataset=amazon-beauty --steps=$steps --warmup=$warmup \
    --only="SASRecPlus whole, auto;DiffCLRec whole, auto;SASRecPlus whole, sync-free;DiffCLRec whole, sync-free" \
    > "$out/step_speed.txt" 2>&1
echo "step_speed exit $?" >> "$out/step_speed.txt"
for sync_free in False True; do
  timeout 240 python3 perf/speed.py --dataset=amazon-beauty --models=SASRecPlus,DiffCLRec --epochs=$epochs --devices=cuda \
      --sync_free_steps=$sync_free --out="$out/speed_sync_free_$sync_free.md" > "$out/speed_sync_free_$sync_free.txt" 2>&1
  echo "speed exit $?" >> "$out/speed_sync_free_$sync_free.txt"
done
tail -n 3 "$out"/*.txt
