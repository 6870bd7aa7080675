#!/usr/bin/env bash
# docs/benchmarks.md's comparison: RiR, ResNet and CNN at the same width, depth and
# parameter count, trained with one recipe on Fashion-MNIST on the CPU.
# Usage: bash scripts/results.sh [-j N] [EPOCHS] [SEEDS...]   (default: 1 at a time, 10 epochs, seeds 0 1)
#   -j N   train N runs at once (each with cores/N libtorch threads)
# It is one `rir-train sweep` (variants x seeds, no grid) into runs/results:
# trials land in runs/results/c00-<variant>-s<seed>/ (logs in
# runs/results/logs/); finished trials are kept, interrupted ones resumed,
# and the ranked report with the paired comparison is printed at the end.
# The same sweep runs as a Kubernetes Indexed Job
# (deploy/kubernetes/sweep-job.yaml), and `rir-train report` merges the
# trials wherever they ran.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$RIR_ROOT"

jobs=(-j 1)
if [ "${1:-}" = -j ]; then
  jobs=(-j "${2:?-j needs a number}")
  shift 2
fi
epochs="${1:-10}"
shift || true
seeds="${*:-0 1}"

cargo build --bin rir-train --quiet
target/debug/rir-train sweep all "${jobs[@]}" --dir runs/results \
  --variants rir,resnet,cnn --seeds "${seeds// /,}" --epochs "$epochs" -- \
  --schedule cosine --warmup-epochs 1 --lr 0.1 --nesterov --weight-decay 5e-4 \
  --label-smoothing 0.1 --crop-pad 2
