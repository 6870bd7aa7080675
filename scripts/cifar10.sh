#!/usr/bin/env bash
# The whole pipeline on CIFAR-10: fetch the official binary files (md5-checked)
# unless they are already in DATA_DIR, train RiR, export it folded into the
# model repository, verify the export, serve it next to the default model,
# and measure its accuracy through the server.
#
# Usage: bash scripts/cifar10.sh
# Environment: DATA_DIR (default data/cifar-10-batches-bin), PRESET (small),
#   EPOCHS (82, the paper's; 30 is a good CPU compromise), DEVICE (auto),
#   MODELS (models), NAME (rir-cifar10), RIR_GRPC_PORT (8001).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
source "$(dirname "${BASH_SOURCE[0]}")/server-lib.sh"
cd "$RIR_ROOT"

DATA_DIR="${DATA_DIR:-data/cifar-10-batches-bin}"
PRESET="${PRESET:-small}"
EPOCHS="${EPOCHS:-82}"
DEVICE="${DEVICE:-auto}"
MODELS="${MODELS:-models}"
NAME="${NAME:-rir-cifar10}"
PORT="${RIR_GRPC_PORT:-8001}"
RUN="runs/cifar10-$PRESET-rir"

cargo build --workspace --bins --quiet
if [[ ! -f "$DATA_DIR/test_batch.bin" ]]; then
  echo "== fetch CIFAR-10 into $(dirname "$DATA_DIR")"
  ./target/debug/rir-train fetch cifar10 --dir "$(dirname "$DATA_DIR")"
fi

echo "== train RiR ($PRESET) on CIFAR-10 for $EPOCHS epochs -> $RUN"
resume=()
[[ -f "$RUN/last.safetensors" ]] && resume=(--resume)
./target/debug/rir-train train --dataset cifar10 --data-dir "$DATA_DIR" --preset "$PRESET" \
  --variant rir --epochs "$EPOCHS" --device "$DEVICE" --out "$RUN" "${resume[@]}"

echo "== export folded into $MODELS/$NAME/1 and verify on the test split"
mkdir -p "$MODELS/$NAME/1"
./target/debug/rir-export "$RUN/best.safetensors" -o "$MODELS/$NAME/1/model.onnx" \
  --verify --data-dir "$DATA_DIR"

echo "== serve $MODELS and measure $NAME's accuracy through the server"
start_server "$PORT" "$RUN/serve.log" --models "$MODELS" --grpc-addr "127.0.0.1:$PORT" \
  --metrics-addr "127.0.0.1:0" --http-addr off
./target/debug/rir-classify -u "127.0.0.1:$PORT" -m "$NAME" --eval cifar10 --data-dir "$DATA_DIR" \
  --model-file "$MODELS/$NAME/1/model.onnx"
echo "== done: rir-serve --models $MODELS serves $NAME next to the other models"
