#!/usr/bin/env bash
# Runs the rir-train binary built on a CPU machine against a GPU host's own
# libtorch 2.11 (the `torch/lib` of its python torch 2.11 installation), for
# a short training, and prints the device and the throughput.
#
#   scripts/gpu-train.sh [RIR_TRAIN_BINARY] [DATA_DIR]
#
# RIR_TRAIN_BINARY defaults to target/debug/rir-train; DATA_DIR to Debian's
# Fashion-MNIST folder (copy the four .gz files along when the host has none).
# PYTHON selects the interpreter whose torch to use (default: python3).
set -euo pipefail
BIN="${1:-target/debug/rir-train}"
DATA="${2:-/usr/share/datasets/fashion-mnist}"
PY="${PYTHON:-python3}"

TORCH_LIB="$("$PY" -c 'import os, torch; assert torch.__version__.startswith("2.11"), torch.__version__; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
echo "using libtorch from $TORCH_LIB"
# The CUDA libraries torch's wheel depends on live in nvidia/*/lib beside it.
NV_LIBS="$(find "$(dirname "$(dirname "$TORCH_LIB")")/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | paste -sd: || true)"
export LD_LIBRARY_PATH="$TORCH_LIB${NV_LIBS:+:$NV_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

"$BIN" info
OUT="$(mktemp -d)"
for flags in "" "--bf16 --channels-last"; do
  echo "== rir-train --device cuda --preset small $flags"
  # shellcheck disable=SC2086
  "$BIN" train --device cuda --dataset fashion-mnist --data-dir "$DATA" --preset small \
    --epochs 2 --batch-size 256 --schedule one-cycle --quiet $flags --out "$OUT/run$RANDOM"
done
"$BIN" bench --device cuda --dataset cifar10 --presets small,paper --batch 256 --steps 30 --python "$PY"
