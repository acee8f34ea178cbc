#!/usr/bin/env bash
# The views search of issue #25: one seed, every configuration to convergence (early stopping), in the order
# of what each run tells: context views first, then with more weight on them (as training data, a stronger
# InfoNCE, more replaced positions), then the paper's views used as training data, the default, the rest.
# Usage (from a checkout at a fixed commit, amazon-beauty prepared under dataset/):
#   OMP_NUM_THREADS=1 bash benchmarks/views-search/search.sh OUT [PARALLEL]
set -euo pipefail
V=benchmarks/views-search
out=$1 parallel=${2:-1}
models="context=DiffCLRec:$V/context.yaml"
models+=",context-viewrec=DiffCLRec:$V/context.yaml+$V/view-rec.yaml"
models+=",context-cl0.1=DiffCLRec:$V/context.yaml+$V/cl-paper-weight.yaml"
models+=",context-mask0.3=DiffCLRec:$V/context.yaml+$V/mask-0.3.yaml"
models+=",viewrec-nocl=DiffCLRec:$V/view-rec.yaml+$V/no-cl.yaml"
# its control: the same extra sequences with popularity-drawn replacements (the denoiser and its NLL still train)
models+=",viewrec-nocl-popularity=DiffCLRec:$V/view-rec.yaml+$V/no-cl.yaml+props/ablation/aug_source-popularity.yaml"
models+=",DiffCLRec"
models+=",debiased=DiffCLRec:$V/debiased.yaml"
models+=",context-every=DiffCLRec:$V/context.yaml+$V/cl-every.yaml"
exec python -m recbole_diffcl.benchmark --dataset=amazon-beauty --seeds=2020 --models="${MODELS:-$models}" \
    --reference=DiffCLRec --parallel="$parallel" --show_progress=False --out="$out"
