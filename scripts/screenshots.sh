#!/usr/bin/env bash
# The screenshots in docs/img, taken by headless Chromium from the real
# thing under real traffic:
#   live-view.png    rir-serve's page while rir-loadtest sweeps concurrency
#                    1..32 and a few malformed requests come in.
#   loadtest-report.png, loadtest-schedule.png
#                    rir-loadtest --html reports (kept whole in
#                    docs/results/): a latency-threshold search, and a rate
#                    schedule's over-time section.
#
# Usage: bash scripts/screenshots.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh" >/dev/null
cd "$ROOT"
cargo build --release -q -p rir-server -p rir-loadtest
TMP="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT
HTTP=127.0.0.1:18200
shoot() { # URL FILE WIDTH HEIGHT
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size="$3,$4" --virtual-time-budget=3000 --screenshot="$2" "$1" 2>/dev/null
  echo "wrote $2"
}

target/release/rir-serve --grpc-addr 127.0.0.1:18201 --http-addr "$HTTP" \
  --metrics-addr 127.0.0.1:18202 > "$TMP/serve.log" 2>&1 &
for _ in $(seq 60); do curl -sf "$HTTP/v2/health/ready" >/dev/null && break; sleep 0.5; done
# Watch from the start, as an open page would, so the history fills.
(while :; do curl -s -o /dev/null "$HTTP/v2/rir/live?since=1e9"; sleep 1; done) &
target/release/rir-loadtest -u 127.0.0.1:18201 -m rir-fashion-mnist -c 1..32 -d 6 -q > /dev/null &
LOAD=$!
sleep 20
for _ in $(seq 12); do
  curl -s -o /dev/null -X POST "$HTTP/v2/models/rir-fashion-mnist/infer" -d '{"inputs": []}'
done
wait "$LOAD"
shoot "http://$HTTP/" docs/img/live-view.png 1100 1250

# The load tester's HTML reports, against the same server.
target/release/rir-loadtest -u 127.0.0.1:18201 -m rir-fashion-mnist -d 3 -w 1 -q \
  --latency-threshold 10 --html docs/results/loadtest-report.html > /dev/null || true
target/release/rir-loadtest -u 127.0.0.1:18201 -m rir-fashion-mnist -w 1 -q \
  --rate 300,900,1500,600 --step-seconds 4 --html docs/results/loadtest-schedule.html > /dev/null
shoot "file://$ROOT/docs/results/loadtest-report.html" docs/img/loadtest-report.png 1050 2300
shoot "file://$ROOT/docs/results/loadtest-schedule.html" docs/img/loadtest-schedule.png 1050 1900
