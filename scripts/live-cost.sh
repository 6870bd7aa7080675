#!/usr/bin/env bash
# What the web page's live view costs the server under load: rir-loadtest
# at concurrency 64 against release rir-serve, in alternating rounds of
#   off      nobody watches (no sampler runs);
#   poller   one client calls /v2/rir/live every second, as the page does;
#   browser  the page itself, open in headless Chromium on the same machine
#            (its drawing competes with the server for these two cores).
# Prints each run's row (req/s ... p99) and each poll's own time.
#
# Usage: bash scripts/live-cost.sh [SECONDS] [ROUNDS] [CONCURRENCY]
#   (defaults 8, 3, 64)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh" >/dev/null
cd "$ROOT"
SECS="${1:-8}"
ROUNDS="${2:-3}"
CONC="${3:-64}"
cargo build --release -q -p rir-server -p rir-loadtest
TMP="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT
HTTP=127.0.0.1:18100
# Each run gets a fresh server: a sampler keeps going a minute after the
# last call, so a server a page just left is not "off".
start_server() {
  target/release/rir-serve --grpc-addr 127.0.0.1:18101 --http-addr "$HTTP" \
    --metrics-addr 127.0.0.1:18102 > "$TMP/serve.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 60); do
    curl -sf "$HTTP/v2/health/ready" >/dev/null && return
    sleep 0.5
  done
  echo "rir-serve did not become ready: $(tail -3 "$TMP/serve.log")" >&2
  exit 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
watch_with() {
  WATCHER=""
  case "$1" in
    off) ;;
    poller)
      (while :; do
        curl -s -o /dev/null -w '%{time_total}\n' "$HTTP/v2/rir/live?since=-1" >> "$TMP/polls.txt"
        sleep 1
      done) &
      WATCHER=$!
      ;;
    browser)
      chromium --headless --no-sandbox --disable-gpu --remote-debugging-port=0 \
        --user-data-dir="$TMP/chromium" "http://$HTTP/" > /dev/null 2>&1 &
      WATCHER=$!
      sleep 2
      ;;
  esac
}
L=(target/release/rir-loadtest -u 127.0.0.1:18101 -m rir-fashion-mnist -c "$CONC" -w 1 -d "$SECS" -q --no-server-stats)
MODES=(off poller browser)
for r in $(seq "$ROUNDS"); do
  # Each round starts with the next mode: no mode always runs first.
  for k in 0 1 2; do
    mode="${MODES[$(((r + k - 1) % 3))]}"
    start_server
    watch_with "$mode"
    out="$("${L[@]}")"
    [[ "$r$k" == 10 ]] && echo "round  mode      $(tail -2 <<<"$out" | head -1)"
    [[ -n "$WATCHER" ]] && stop "$WATCHER"
    stop "$SERVER"
    printf '%-6s %-9s %s\n' "$r" "$mode" "$(tail -1 <<<"$out")" | tee -a "$TMP/rows.txt"
  done
done
awk '$3 == "concurrency" {n[$2]++; s[$2] += $5; p[$2] += $12} END {
  for (m in n) printf "%-8s mean %.1f req/s, p99 %.2f ms over %d runs\n", m, s[m] / n[m], p[m] / n[m], n[m]}' "$TMP/rows.txt" | sort
if [[ -s "$TMP/polls.txt" ]]; then
  sort -n "$TMP/polls.txt" | awk '{a[NR]=$1} END {printf "one /v2/rir/live call under load: median %.2f ms, max %.2f ms (%d calls)\n", 1e3*a[int((NR+1)/2)], 1e3*a[NR], NR}'
fi
