#!/usr/bin/env bash
# RESULTS.md's comparison: RiR, ResNet and CNN at the same width, depth and
# parameter count, trained with one recipe on Fashion-MNIST on the CPU.
# Usage: bash scripts/results.sh [EPOCHS] [SEEDS...]   (default: 10 epochs, seeds 0 1)
# Runs land in runs/results/<variant>-s<seed>/; existing finished runs are kept.
# Seeds are the outer loop so that an interrupted sweep still has every
# variant at the first seed; `bash scripts/results.sh` again resumes it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$RIR_ROOT"

EPOCHS="${1:-10}"
shift || true
SEEDS=("${@:-0 1}")
read -r -a SEEDS <<<"${SEEDS[*]}"

cargo build --bin rir-train --quiet
for seed in "${SEEDS[@]}"; do
  for variant in rir resnet cnn; do
    out="runs/results/$variant-s$seed"
    if [[ -f "$out/last.safetensors" ]]; then
      resume=(--resume)
    else
      resume=()
    fi
    echo "== $variant seed $seed -> $out"
    ./target/debug/rir-train train --dataset fashion-mnist --preset tiny --variant "$variant" \
      --epochs "$EPOCHS" --schedule cosine --warmup-epochs 1 --lr 0.1 --nesterov \
      --weight-decay 5e-4 --label-smoothing 0.1 --crop-pad 2 --seed "$seed" \
      --quiet --out "$out" "${resume[@]}"
  done
done
