#!/usr/bin/env bash
# Profiles rir-serve under load and draws a flame graph: rir-serve (one ONNX
# Runtime thread, one instance) held to core 1 after it starts (so its
# runtime keeps two workers and the inline path), rir-loadtest on core 0,
# `perf record` with DWARF call graphs on the server for SECONDS, then
# inferno's collapse and flame graph.
#
#   bash scripts/profile-server.sh CONCURRENCY SECONDS OUT_PREFIX
#   (writes OUT_PREFIX.svg, .folded, .loadtest.txt, .perf.data)
#
# Needs Debian's linux-perf (`perf`), kernel.perf_event_paranoid <= 2, and
# inferno (`cargo install --locked inferno`). More rir-serve flags in
# SERVER_ARGS.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" >/dev/null
cd "$RIR_ROOT"
c="${1:?concurrency}"; secs="${2:?seconds}"; out="${3:?output prefix}"
for tool in perf inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
cargo build --release -q -p rir-server -p rir-loadtest
target/release/rir-serve --models models --grpc-addr 127.0.0.1:18001 --http-addr off \
  --metrics-addr 127.0.0.1:18002 --threads 1 --instances 1 ${SERVER_ARGS:-} \
  >"$out.serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf 127.0.0.1:18002/metrics >/dev/null 2>&1 && break
  sleep 0.2
done
taskset -a -p -c 1 "$server" >/dev/null
taskset -c 0 target/release/rir-loadtest -u 127.0.0.1:18001 -m rir-fashion-mnist \
  -c "$c" -w 2 -d $((secs + 4)) -q >"$out.loadtest.txt" 2>&1 &
load=$!
sleep 3
perf record -F 499 -g --call-graph dwarf,16384 -p "$server" -o "$out.perf.data" -- sleep "$secs" 2>/dev/null
wait "$load"
perf script -i "$out.perf.data" 2>/dev/null | inferno-collapse-perf >"$out.folded"
inferno-flamegraph --minwidth 0.5 --width 1400 \
  --title "rir-serve CPU, concurrency $c, held to one core (perf, release)" \
  <"$out.folded" >"$out.svg"
awk '{ n = $NF; total += n; if ($0 ~ /libonnxruntime|OrtEngine/) engine += n }
     END { printf "ONNX Runtime %.1f %% of rir-serve'"'"'s samples, everything else %.1f %%\n",
                  100 * engine / total, 100 * (total - engine) / total }' "$out.folded"
echo "$out.svg"
