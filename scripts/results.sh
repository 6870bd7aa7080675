#!/usr/bin/env bash
# docs/benchmarks.md's comparison: RiR, ResNet and CNN at the same width, depth and
# parameter count, trained with one recipe on Fashion-MNIST on the CPU.
# Usage: bash scripts/results.sh [-j N] [EPOCHS] [SEEDS...]   (default: 1 at a time, 10 epochs, seeds 0 1)
#   -j N   train N runs at once (each with cores/N libtorch threads)
# Runs land in runs/results/<variant>-s<seed>/ (logs beside them); existing
# finished runs are kept, interrupted ones resumed. The runs are
# scripts/sweep.sh's: the same sweep runs as a Kubernetes Indexed Job
# (deploy/kubernetes/sweep-job.yaml), and `rir-train report` merges the
# runs wherever they ran.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$RIR_ROOT"

jobs=(-j 1)
if [ "${1:-}" = -j ]; then
  jobs=(-j "${2:?-j needs a number}")
  shift 2
fi
export SWEEP_EPOCHS="${1:-10}"
shift || true
export SWEEP_SEEDS="${*:-0 1}"
export SWEEP_OUT=runs/results

cargo build --bin rir-train --quiet
RIR_TRAIN=target/debug/rir-train bash scripts/sweep.sh all "${jobs[@]}"
