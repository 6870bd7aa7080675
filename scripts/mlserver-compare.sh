#!/usr/bin/env bash
# rir-serve against MLServer on the same model with the same client
# (rir-loadtest), over gRPC and REST, side by side in one run.
#
# MLServer 1.7 (PyPI) has no ONNX runtime of its own: scripts/mlserver/
# onnx_runtime.py is the smallest custom one (ONNX Runtime's Python API,
# CPU). MLServer runs with parallel_workers 0 (its worker processes crash
# at start on this Python) and lists no inputs in its metadata, hence
# --shape; its REST side has no binary tensor extension, hence
# --json-tensors for both servers there.
#
# Usage: bash scripts/mlserver-compare.sh [SECONDS_PER_POINT] [ROUNDS] [CONCURRENCIES]
#   (defaults 5, 2 and "1 8 64")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
SECS="${1:-5}"
ROUNDS="${2:-2}"
CONC="${3:-1 8 64}"
VENV="$ROOT/.deps/mlserver"
if [[ ! -x "$VENV/bin/mlserver" ]]; then
  echo "[mlserver-compare] pip: mlserver 1.7.1 and onnxruntime 1.31.1 into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check mlserver==1.7.1 onnxruntime==1.31.1
fi
cargo build --release -q -p rir-server -p rir-loadtest
REPO="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$REPO"' EXIT
mkdir -p "$REPO/rir-fashion-mnist"
cp models/rir-fashion-mnist/1/model.onnx scripts/mlserver/onnx_runtime.py "$REPO/rir-fashion-mnist/"
echo '{"parallel_workers": 0}' > "$REPO/settings.json"
cat > "$REPO/rir-fashion-mnist/model-settings.json" <<JSON
{"name": "rir-fashion-mnist", "implementation": "onnx_runtime.OnnxModel",
 "parameters": {"uri": "$REPO/rir-fashion-mnist/model.onnx"}}
JSON
(cd "$REPO" && "$VENV/bin/mlserver" start . > "$REPO/mlserver.log" 2>&1) &
target/release/rir-serve --grpc-addr 127.0.0.1:18001 --http-addr 127.0.0.1:18000 \
  --metrics-addr 127.0.0.1:18002 > "$REPO/rir-serve.log" 2>&1 &
for _ in $(seq 60); do
  curl -sf localhost:8080/v2/models/rir-fashion-mnist/ready >/dev/null &&
    curl -sf localhost:18000/v2/models/rir-fashion-mnist/ready >/dev/null && break
  sleep 1
done
L=(target/release/rir-loadtest -m rir-fashion-mnist -w 1 -d "$SECS" -q --no-server-stats)
row() { local name="$1"; shift; "${L[@]}" "$@" | tail -1 | sed "s/^/$name  /"; }
echo "server / protocol          load           req/s  infer/s  avg ms  stddev    p50    p90    p95    p99  p99.9    max  requests  errors"
# gRPC at each concurrency, the two servers alternating, ROUNDS times: the
# machine drifts between runs by more than a single run can tell.
OUT="$REPO/rows.txt"
for round in $(seq "$ROUNDS"); do
  for c in $CONC; do
    row "rir-serve gRPC  round $round" -i grpc -u 127.0.0.1:18001 -c "$c" | tee -a "$OUT"
    row "MLServer gRPC   round $round" -i grpc -u 127.0.0.1:8081 --shape image:1,28,28 -c "$c" | tee -a "$OUT"
  done
done
# REST once, at the lowest concurrency (MLServer has no binary tensors).
first="${CONC%% *}"
row "rir-serve REST binary   " -i http -u 127.0.0.1:18000 -c "$first"
row "rir-serve REST JSON     " -i http -u 127.0.0.1:18000 --json-tensors -c "$first"
row "MLServer REST JSON      " -i http -u 127.0.0.1:8080 --json-tensors --shape image:1,28,28 -c "$first"
# rir-serve's requests/s over MLServer's in the same round, per concurrency.
echo
awk '{ who = $1; round = $4; c = $6; rps = $7
       if (who == "rir-serve") r[c, round] = rps; else m[c, round] = rps
       cs[c] = 1; rounds[round] = 1 }
     END { for (c in cs) { line = sprintf("gRPC, concurrency %s: rir-serve / MLServer", c)
             for (k in rounds) line = line sprintf("  round %s %.1fx", k, r[c, k] / m[c, k])
             print line } }' "$OUT" | sort -t' ' -k3n
