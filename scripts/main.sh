#!/usr/bin/env bash
# The main job on the embedded default: set up, build, serve the RiR model
# in models/ (trained on Fashion-MNIST with this project's trainer, exported
# folded with its exporter), classify real test images shipped as PNG files,
# check the served accuracy on the whole test split against the trainer's,
# classify one over HTTP/REST with curl, run a 10-second load test, and stop
# the server.
# Ports: RIR_GRPC_PORT (default 8001), RIR_HTTP_PORT (default 8000) and
# RIR_METRICS_PORT (default 8002).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
source "$(dirname "${BASH_SOURCE[0]}")/server-lib.sh"
cd "$RIR_ROOT"

GRPC_PORT="${RIR_GRPC_PORT:-8001}"
METRICS_PORT="${RIR_METRICS_PORT:-8002}"
HTTP_PORT="${RIR_HTTP_PORT:-8000}"
URL="127.0.0.1:$GRPC_PORT"
MODEL_FILE="models/rir-fashion-mnist/1/model.onnx"

echo "== build"
cargo build --workspace --bins --quiet

echo "== start rir-serve on models/ (gRPC $URL, HTTP and web page http://127.0.0.1:$HTTP_PORT/, metrics http://127.0.0.1:$METRICS_PORT/metrics)"
LOG="$(mktemp -t rir-serve.XXXXXX.log)"
start_server "$GRPC_PORT" "$LOG" --grpc-addr "$URL" --http-addr "127.0.0.1:$HTTP_PORT" \
  --metrics-addr "127.0.0.1:$METRICS_PORT"
grep -h "ready in" "$LOG" | sed 's/\x1b\[[0-9;]*m//g' || true

echo "== classify 8 real Fashion-MNIST test images (samples/fashion-mnist/<index>-<true label>.png)"
./target/debug/rir-classify -u "$URL" samples/fashion-mnist/*.png

echo "== the same over HTTP/REST: curl --data-binary @samples/fashion-mnist/01-pullover.png .../classify?top_k=3"
if command -v curl >/dev/null; then
  curl -sS --fail-with-body --data-binary @samples/fashion-mnist/01-pullover.png \
    "http://127.0.0.1:$HTTP_PORT/v2/models/rir-fashion-mnist/classify?top_k=3"
  echo
else
  echo "(curl is not installed; skipped)"
fi

echo "== accuracy through the server on the full test split, against the trainer's own evaluation"
./target/debug/rir-classify -u "$URL" --eval fashion-mnist --model-file "$MODEL_FILE"

echo "== load test: 10 seconds of ModelInfer (5 s at concurrency 1, 5 s at concurrency 8)"
./target/debug/rir-loadtest -u "$URL" -m rir-fashion-mnist -c 1,8 -w 1 -d 5
