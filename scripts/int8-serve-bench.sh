#!/usr/bin/env bash
# rir-serve on the shipped fp32 model and its int8 quantization side by side
# (versions 1 and 2 of one model in one repository, one server), driven by
# rir-loadtest at concurrency 1 and 64; the two versions alternate over
# ROUNDS rounds of DURATION seconds and the table gives medians, so that the
# machine's drift hits both. A benchmark, not a test.
#
#   bash scripts/int8-serve-bench.sh            # ROUNDS=3 DURATION=8 PORT=18471
#   SERVE_ARGS="--session-per-bucket true" bash scripts/int8-serve-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh >/dev/null
source scripts/server-lib.sh
ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-8}" PORT="${PORT:-18471}"
BIN="${BIN:-./target/debug}"
TMP="$(mktemp -d)"
REPO="$TMP/models/rir-fashion-mnist"
mkdir -p "$REPO/1" "$REPO/2"
cp models/rir-fashion-mnist/1/model.onnx "$REPO/1/"
{ cat models/rir-fashion-mnist/config.pbtxt; echo 'version_policy { all { } }'; } >"$REPO/config.pbtxt"
"$BIN/rir-export" quantize "$REPO/1/model.onnx" -o "$REPO/2/model.onnx"
RIR_SERVE_BIN="$BIN/rir-serve" start_server "$PORT" "$TMP/serve.log" --models "$TMP/models" \
  --grpc-addr "127.0.0.1:$PORT" --http-addr off --metrics-addr 127.0.0.1:0 ${SERVE_ARGS:-}
for r in $(seq 1 "$ROUNDS"); do
  for c in 1 64; do
    for v in 1 2; do
      "$BIN/rir-loadtest" -q -u "127.0.0.1:$PORT" -m rir-fashion-mnist --model-version "$v" \
        -c "$c" -w 2 -d "$DURATION" --json "$TMP/r$r-c$c-v$v.json" >/dev/null
    done
  done
done
echo "rir-serve arguments: ${SERVE_ARGS:-(defaults)}"
python3 - "$TMP" "$ROUNDS" <<'PY'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
def point(r, c, v):
    return json.load(open(f"{tmp}/r{r}-c{c}-v{v}.json"))[0]
def med(c, v, f):
    return statistics.median(f(point(r, c, v)) for r in range(1, rounds + 1))
print(f"rir-serve (ONNX Runtime CPU), rir-loadtest closed loop, medians over {rounds} alternating rounds")
print(f"{'concurrency':>11} {'version':<10} {'images/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
for c in (1, 64):
    rows = {}
    for v, name in ((1, "fp32"), (2, "int8")):
        rows[v] = (med(c, v, lambda p: p["inferences_per_s"]), med(c, v, lambda p: p["latency_ms"]["p50"]),
                   med(c, v, lambda p: p["latency_ms"]["p99"]), sum(sum(point(r, c, v)["errors"].values()) for r in range(1, rounds + 1)))
        print(f"{c:>11} {name:<10} {rows[v][0]:>9.0f} {rows[v][1]:>8.3f} {rows[v][2]:>8.3f} {rows[v][3]:>7}")
    print(f"{c:>11} int8/fp32  {rows[2][0] / rows[1][0]:>8.2f}x")
PY
