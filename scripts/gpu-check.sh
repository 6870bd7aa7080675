#!/usr/bin/env bash
# The whole GPU story in one command, on a bare GPU host (nothing is
# downloaded): the trainer against eager PyTorch, a short real training run,
# export and verification on CUDA, a float16 export verified against its
# float32 twin, rir-serve on the CUDA provider with its served accuracy
# (TF32 by default, exact float32, and the float16 export, each held to the
# trainer's record), a load sweep with batching on and off, with each CUDA
# lever (CUDA graphs and bound device buffers among them) and on the float16
# export, eager PyTorch inference in-process for comparison, and a
# summary table. Budget: under 8 minutes on one H200 (measured: about 4.5
# minutes of steps, see README "GPU").
#
#   scripts/gpu-check.sh --ort-dir DIR [--bin DIR] [--data DIR] [--out DIR]
#
#   --ort-dir  folder holding libonnxruntime.so* and its CUDA provider
#              (libonnxruntime_providers_{shared,cuda}.so) from the
#              onnxruntime-gpu 1.31.1 wheel's onnxruntime/capi/
#   --bin      folder with rir-train, rir-export, rir-serve, rir-loadtest,
#              rir-classify (default: target/release)
#   --data     Fashion-MNIST folder (default: Debian's)
#   --out      where logs, JSON and the summary go (default: runs/gpu-check)
#
# PYTHON selects the interpreter whose torch 2.11 (CUDA build) provides
# libtorch, the CUDA 13 libraries (cuDNN, cuBLAS, ...) and the PyTorch
# references (default: python3). QUICK=1 shortens every step (a smoke run).
# DEVICE=cpu runs the same steps on the CPU, to check the script itself
# before a GPU's minutes are spent on it: with PRESET=micro (the network of
# every step; default paper), BENCH_PRESETS=micro (the training bench's;
# default small,paper) and TRAIN_LIMIT=2000 (training images; default all)
# the whole script takes a few minutes on 2 cores. Its figures are not GPU
# figures.
# A failing step is reported and the others still run: the exit status is
# the number of failed steps (0: all passed).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=target/release
DATA=/usr/share/datasets/fashion-mnist
OUT=runs/gpu-check
ORT_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --ort-dir) ORT_DIR="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$ORT_DIR" ] || { echo "--ort-dir is required (see --help)" >&2; exit 2; }
PY="${PYTHON:-python3}"
QUICK="${QUICK:-0}"
DEVICE="${DEVICE:-cuda}"
PRESET="${PRESET:-paper}"
BENCH_PRESETS="${BENCH_PRESETS:-small,paper}"
MODEL="rir-$PRESET"
LIMIT=()
[ -z "${TRAIN_LIMIT:-}" ] || LIMIT=(--train-limit "$TRAIN_LIMIT")
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BIN="$(cd "$BIN" && pwd)"
ORT_LIB="$(ls "$ORT_DIR"/libonnxruntime.so* | head -1)"
step() { printf '\n== %s  (%s)\n' "$*" "$(date +%T)"; }
FAILED=0
check() { # CMD...: runs it; a failure is counted and reported, not fatal
  "$@"
  local rc=$?
  [ "$rc" = 0 ] || { FAILED=$((FAILED + 1)); echo "!! failed ($rc): $*" >&2; }
}
logged() { # FILE CMD...: as check, with the output also written to FILE
  local file="$1"; shift
  "$@" 2>&1 | tee "$file"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { FAILED=$((FAILED + 1)); echo "!! failed ($rc): $*" >&2; }
}

# libtorch and the CUDA 13 libraries from the host's python torch.
source scripts/gpu-env.sh
export LD_LIBRARY_PATH="$ORT_DIR:$LD_LIBRARY_PATH"
export ORT_DYLIB_PATH="$ORT_LIB"
export RIR_SERVE_BIN="$BIN/rir-serve"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
else
  echo "no nvidia-smi on PATH (device: $DEVICE)"
fi

step "rir-train info"
logged "$OUT/info.txt" "$BIN/rir-train" info

STEPS=30; EPOCHS=4; SECS=3
[ "$QUICK" = 1 ] && { STEPS=5; EPOCHS=1; SECS=1; }

step "training throughput: ours against eager PyTorch, fp32 and bf16 + channels-last"
logged "$OUT/train-bench.txt" "$BIN/rir-train" bench --device "$DEVICE" --dataset cifar10 \
  --presets "$BENCH_PRESETS" --batch 256 --steps "$STEPS" --bf16 --python "$PY" --json "$OUT/train-bench.json"

step "a short real training run: $PRESET preset, Fashion-MNIST, bf16 + channels-last"
RUN="$OUT/run"
rm -rf "$RUN"
logged "$OUT/train.log" "$BIN/rir-train" train --device "$DEVICE" --dataset fashion-mnist --data-dir "$DATA" \
  --preset "$PRESET" "${LIMIT[@]}" --epochs "$EPOCHS" --batch-size 256 --schedule cosine --label-smoothing 0.1 --bf16 \
  --channels-last --quiet --out "$RUN"

# tract runs the paper preset on one CPU core: 1,000 images keep the check
# under a minute (the whole split took 6 minutes); the served accuracy below
# is the whole split against the trainer's record.
step "export and verify on $DEVICE (ONNX Runtime vs tract, 1,000 test images)"
REPO="$OUT/models"
rm -rf "$REPO"
mkdir -p "$REPO/$MODEL/1"
check "$BIN/rir-export" "$RUN/best.safetensors" -o "$REPO/$MODEL/1/model.onnx"
logged "$OUT/verify.txt" "$BIN/rir-export" verify "$REPO/$MODEL/1/model.onnx" --device "$DEVICE" \
  --images 1000 --data-dir "$DATA" --ort-lib "$ORT_LIB"

# float16 on the GPU's tensor cores, against its float32 twin on the whole
# split; tract (float16 in software, seconds an image for this preset) sees 2
# random inputs only.
step "half precision: export fp16, verify on $DEVICE against its float32 twin (10,000 test images)"
REPO16="$OUT/models-fp16"
rm -rf "$REPO16"
mkdir -p "$REPO16/$MODEL/1"
check "$BIN/rir-export" "$RUN/best.safetensors" -o "$REPO16/$MODEL/1/model.onnx" --precision fp16
logged "$OUT/verify-fp16.txt" "$BIN/rir-export" verify "$REPO16/$MODEL/1/model.onnx" --device "$DEVICE" \
  --random 2 --images 10000 --data-dir "$DATA" --ort-lib "$ORT_LIB"

source scripts/server-lib.sh
PORT=8101
serve() { # NAME ARGS...: start rir-serve on the CUDA provider with ARGS (models: $SERVE_REPO or $REPO)
  local name="$1"; shift
  start_server "$PORT" "$OUT/serve-$name.log" --models "${SERVE_REPO:-$REPO}" --device "$DEVICE" \
    --grpc-addr "127.0.0.1:$PORT" --metrics-addr 127.0.0.1:0 --http-addr off "$@"
  grep -m1 -o 'engine=[a-z-]*' "$OUT/serve-$name.log" || true
}
sweep() { # NAME ARGS...: a closed-loop sweep against the running server
  local name="$1"; shift
  logged "$OUT/load-$name.txt" "$BIN/rir-loadtest" -u "127.0.0.1:$PORT" -m "$MODEL" -w 1 \
    -d "$SECS" --connections 8 -q --json "$OUT/load-$name.json" "$@"
}

served_accuracy() { # NAME MODEL_FILE: the whole test split through the running server, against the trainer's record
  logged "$OUT/served-accuracy-$1.txt" "$BIN/rir-classify" -u "127.0.0.1:$PORT" -m "$MODEL" \
    --eval fashion-mnist --data-dir "$DATA" --model-file "$2" --outputs "$OUT/served-outputs-$1.csv"
}

step "rir-serve --device $DEVICE: served accuracy against the trainer's"
check serve default
served_accuracy default "$REPO/$MODEL/1/model.onnx"

step "load: default server (batching on, power-of-two buckets, a session per bucket, TF32, NHWC), concurrency 1..64"
sweep default -c 1,8,64
step "load: client batches of 64 (peak throughput)"
sweep default-b64 -b 64 -c 2,4,8
stop_server

configuration() { # NAME ARGS...: serve with ARGS, sweep concurrency $CONC (default 1..64; B64=1: and client batches of 64; EVAL=1: served accuracy first), stop
  local name="$1"; shift
  if serve "$name" "$@"; then
    [ "${EVAL:-0}" = 0 ] || served_accuracy "$name" "${SERVE_REPO:-$REPO}/$MODEL/1/model.onnx"
    sweep "$name" -c "${CONC:-1,8,64}"
    [ "${B64:-0}" = 0 ] || sweep "$name-b64" -b 64 -c 2,4,8
    stop_server
  else
    FAILED=$((FAILED + 1))
    echo "!! $name did not start; its log:" >&2
    tail -5 "$OUT/serve-$name.log" >&2
  fi
}
for cfg in "shared-session:--session-per-bucket false" \
           "batching-off:--max-batch 1"; do
  name="${cfg%%:*}"; args="${cfg#*:}"
  step "load: $name ($args)"
  # shellcheck disable=SC2086
  configuration "$name" $args
done
step "served accuracy and load: exact-fp32 (--cuda-tf32 false --cuda-nhwc false), what TF32 costs in accuracy"
EVAL=1 configuration exact-fp32 --cuda-tf32 false --cuda-nhwc false
step "load: inline-off (--run-inline false: every request handed to an engine thread), concurrency 1"
CONC=1 configuration inline-off --run-inline false
step "served accuracy and load: the fp16 export on the default server (and client batches of 64)"
SERVE_REPO="$REPO16" B64=1 EVAL=1 configuration fp16
step "load: bound buffers alone (--io-binding true: per-bucket device buffers, explicit copies), concurrency 1"
CONC=1 configuration io-binding --io-binding true
if [ "$DEVICE" = cpu ]; then
  echo "CUDA graphs: skipped on the CPU (rir-serve refuses --cuda-graph with --device cpu)"
else
  step "served accuracy and load: CUDA graphs (--cuda-graph true, a graph per bucket), concurrency 1..64"
  EVAL=1 configuration cuda-graph --cuda-graph true
fi

step "eager PyTorch in-process (the reference): batch-1 latency, batch-64 throughput"
PLAN="$("$BIN/rir-train" plan --preset "$PRESET" --dataset fashion-mnist)"
for mixed in false true; do
  logged "$OUT/torch-infer-$mixed.json" "$PY" trainer/bench/torch_reference.py \
    "{\"plan\": $PLAN, \"mode\": \"infer\", \"batch\": 64, \"device\": \"$DEVICE\", \"mixed\": $mixed, \"seconds\": $SECS}"
done

step "summary"
"$PY" - "$OUT" <<'PY' | tee "$OUT/summary.md"
import glob, json, os, sys
out = sys.argv[1]
print("| server config | load | req/s | img/s | p50 ms | p99 ms | errors |")
print("|---|---|---|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(out, "load-*.json"))):
    name = os.path.basename(path)[5:-5]
    data = json.load(open(path))
    for r in data if isinstance(data, list) else data.get("reports", [data]):
        l = r["latency_ms"]
        errs = sum(r["errors"].values())
        print(f"| {name} | {r['load']} x{r['batch']} | {r['requests_per_s']:.0f} | {r['inferences_per_s']:.0f} "
              f"| {l['p50']:.3f} | {l['p99']:.3f} | {errs} |")
for mixed in ("false", "true"):
    p = os.path.join(out, f"torch-infer-{mixed}.json")
    if os.path.exists(p):
        t = json.loads(open(p).read().strip().splitlines()[-1])
        print(f"| eager PyTorch in-process{' bf16' if mixed == 'true' else ''} | batch 1 / batch {t['batch']} "
              f"| | {t['img_per_s']:.0f} (b{t['batch']}) | {t['batch1_p50_ms']:.3f} (b1) | {t['batch1_p99_ms']:.3f} (b1) | |")
print()
print("| served | accuracy on the test split |")
print("|---|---|")
for path in sorted(glob.glob(os.path.join(out, "served-accuracy-*.txt"))):
    name = os.path.basename(path)[len("served-accuracy-"):-4]
    lines = [l for l in open(path) if "top-1" in l]
    print(f"| {name} | {lines[-1].split(': ', 1)[-1].strip() if lines else 'no figure (see the log)'} |")

# Image by image against exact float32: how many predictions each serving
# changes, and the largest score difference.
def outputs(name):
    path = os.path.join(out, f"served-outputs-{name}.csv")
    if not os.path.exists(path):
        return None
    rows = [l.rstrip("\n").split(",") for l in open(path)][1:]
    return [(int(r[2]), [float(v) for v in r[3:]]) for r in rows]
exact = outputs("exact-fp32")
if exact:
    print()
    print("| served | predictions unlike exact fp32 | largest score difference |")
    print("|---|---|---|")
    for name in ("default", "fp16", "cuda-graph"):
        other = outputs(name)
        if other is None and name == "cuda-graph":
            continue
        if other is None or len(other) != len(exact):
            print(f"| {name} | no comparison (see the log) | |")
            continue
        changed = sum(a[0] != b[0] for a, b in zip(exact, other))
        apart = max(abs(x - y) for a, b in zip(exact, other) for x, y in zip(a[1], b[1]))
        print(f"| {name} | {changed} of {len(exact)} | {apart:.3g} |")
PY
echo "failed steps: $FAILED"
exit "$FAILED"
