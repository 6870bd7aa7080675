#!/usr/bin/env bash
# The latency-bounded search of rir-loadtest beside perf_analyzer's own
# (--latency-threshold), on one rir-serve serving the default model: both
# answers, each with the levels it tried.
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
# Both measure 3 s windows until stable within 50 % (p99 of 3 s windows on
# a 2-core machine moves by more than the default 10 %, and perf_analyzer
# then counts the level as a miss), and step concurrency by one at the end:
# perf_analyzer linearly from 1, rir-loadtest by doubling then bisection.
echo "== rir-loadtest --latency-threshold $BOUND --percentile 99 (closed loop, up to $MAX)"
"$ROOT/target/debug/rir-loadtest" -u "127.0.0.1:$PORT" -m rir-fashion-mnist -w 1 -q \
  --stability 50 --window 3 --no-server-stats \
  --latency-threshold "$BOUND" --percentile 99 --search-max "$MAX" || true
echo
echo "== perf_analyzer --latency-threshold $BOUND --percentile 99 (concurrency 1:$MAX:1)"
bash "$ROOT/scripts/perf-analyzer.sh" -m rir-fashion-mnist -u "127.0.0.1:$PORT" -i grpc \
  --concurrency-range "1:$MAX:1" --latency-threshold "$BOUND" --percentile 99 \
  --measurement-interval 3000 --stability-percentage 50 >"$OUT/pa.log" 2>&1 || true
# Its own account: the levels it tried, the one that went over, its table.
grep -E "^Request concurrency|p99 latency|went over|stable|^Concurrency" "$OUT/pa.log" || tail -n 20 "$OUT/pa.log"
