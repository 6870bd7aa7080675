#!/usr/bin/env bash
# The latency-bounded search of rir-loadtest beside perf_analyzer's own
# (--latency-threshold with --binary-search), on one rir-serve serving the
# default model: both answers, each with the levels it tried.
#   bash scripts/search-vs-perf-analyzer.sh [BOUND_MS] [MAX_CONCURRENCY]
# Needs the debug binaries (cargo build) and perf_analyzer
# (bash scripts/perf-analyzer.sh --install).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh" >/dev/null
BOUND="${1:-10}"
MAX="${2:-64}"
PORT=18101
OUT="$(mktemp -d)"
"$ROOT/target/debug/rir-serve" --models "$ROOT/models" --grpc-addr "127.0.0.1:$PORT" \
  --http-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 >"$OUT/serve.log" 2>&1 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null; rm -rf "$OUT"' EXIT
for _ in $(seq 100); do
  grep -q "gRPC on" "$OUT/serve.log" 2>/dev/null && break
  sleep 0.1
done
echo "== rir-loadtest --latency-threshold $BOUND --percentile 99 (closed loop, up to $MAX)"
"$ROOT/target/debug/rir-loadtest" -u "127.0.0.1:$PORT" -m rir-fashion-mnist -w 1 -d 3 -q \
  --latency-threshold "$BOUND" --percentile 99 --search-max "$MAX" || true
echo
echo "== perf_analyzer --binary-search --latency-threshold $BOUND --percentile 99 (concurrency 1:$MAX)"
bash "$ROOT/scripts/perf-analyzer.sh" -m rir-fashion-mnist -u "127.0.0.1:$PORT" -i grpc \
  --concurrency-range "1:$MAX" --binary-search --latency-threshold "$BOUND" --percentile 99 \
  --measurement-interval 3000 >"$OUT/pa.log" 2>&1 || true
# Its own account: the levels it tried, why each missed, its answer.
grep -E "^Request concurrency|went over|stable|^Concurrency" "$OUT/pa.log" || tail -n 20 "$OUT/pa.log"
