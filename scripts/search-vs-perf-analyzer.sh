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
  --http-addr off --metrics-addr off >"$OUT/serve.log" 2>&1 &
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
  --measurement-interval 3000 -f "$OUT/pa.csv" >"$OUT/pa.log" 2>&1 || true
python3 - "$OUT/pa.csv" "$BOUND" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
bound_us = float(sys.argv[2]) * 1000
tried = sorted((int(r["Concurrency"]), float(r["p99 latency"])) for r in rows)
for c, p99 in tried:
    print(f"concurrency {c}: p99 {p99 / 1000:.3f} ms {'met' if p99 <= bound_us else 'missed'}")
met = [c for c, p99 in tried if p99 <= bound_us]
print(f"perf_analyzer: highest concurrency with p99 at most {sys.argv[2]} ms: {max(met) if met else 'none'}")
PY
