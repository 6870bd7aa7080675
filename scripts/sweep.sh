#!/usr/bin/env bash
# A training sweep, seeds x variants, as numbered runs: one definition of
# which run index N is, shared by the local fan-out (scripts/results.sh -j N)
# and the Kubernetes Indexed Job (deploy/kubernetes/sweep-job.yaml), where
# each pod runs the index in JOB_COMPLETION_INDEX.
#
#   bash scripts/sweep.sh count          how many runs the sweep has
#   bash scripts/sweep.sh list           index, variant, seed, folder of each
#   bash scripts/sweep.sh run [INDEX]    train run INDEX (default: $JOB_COMPLETION_INDEX)
#   bash scripts/sweep.sh all [-j N]     every run, N at a time (default 1), then the report
#
# Seeds are the outer loop (index = seed position x variants + variant
# position), so the first indices hold every variant at the first seed. A
# run whose folder already holds a checkpoint is resumed (finished runs then
# end at once), so a sweep that was interrupted, or a pod that was restarted,
# continues where it was.
#
# Settings (environment):
#   SWEEP_SEEDS="0 1"  SWEEP_VARIANTS="rir resnet cnn"  SWEEP_EPOCHS=10
#   SWEEP_PRESET=tiny  SWEEP_DATASET=fashion-mnist  SWEEP_OUT=runs/results
#   SWEEP_ARGS="..."   more rir-train train arguments (default: the recipe of docs/benchmarks.md's comparison)
#   SWEEP_THREADS=N    libtorch threads per run (default: the cores / N for `all -j N`)
#   RIR_TRAIN=PATH     the rir-train binary (default: on PATH, else target/release or target/debug)
set -euo pipefail

SEEDS=(${SWEEP_SEEDS:-0 1})
VARIANTS=(${SWEEP_VARIANTS:-rir resnet cnn})
EPOCHS="${SWEEP_EPOCHS:-10}"
PRESET="${SWEEP_PRESET:-tiny}"
DATASET="${SWEEP_DATASET:-fashion-mnist}"
OUT="${SWEEP_OUT:-runs/results}"
# The recipe of docs/benchmarks.md's comparison.
ARGS=(${SWEEP_ARGS:---schedule cosine --warmup-epochs 1 --lr 0.1 --nesterov --weight-decay 5e-4 --label-smoothing 0.1 --crop-pad 2})
COUNT=$((${#SEEDS[@]} * ${#VARIANTS[@]}))
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() {
  echo "sweep.sh: $*" >&2
  exit 2
}

train_bin() {
  if [ -n "${RIR_TRAIN:-}" ]; then
    echo "$RIR_TRAIN"
  elif command -v rir-train >/dev/null 2>&1; then
    command -v rir-train
  elif [ -x "$here/target/release/rir-train" ]; then
    echo "$here/target/release/rir-train"
  elif [ -x "$here/target/debug/rir-train" ]; then
    echo "$here/target/debug/rir-train"
  else
    die "no rir-train (set RIR_TRAIN, or cargo build --bin rir-train)"
  fi
}

# "variant seed folder" of run $1.
describe() {
  local i="$1"
  [[ "$i" =~ ^[0-9]+$ ]] && [ "$i" -lt "$COUNT" ] || die "run index $i is not in 0..$((COUNT - 1))"
  local variant="${VARIANTS[$((i % ${#VARIANTS[@]}))]}"
  local seed="${SEEDS[$((i / ${#VARIANTS[@]}))]}"
  echo "$variant $seed $OUT/$variant-s$seed"
}

run_one() {
  local i="$1" variant seed out bin desc
  desc="$(describe "$i")" || exit 2
  read -r variant seed out <<<"$desc"
  bin="$(train_bin)"
  local resume=()
  [ -f "$out/last.safetensors" ] && resume=(--resume)
  local threads=()
  [ -n "${SWEEP_THREADS:-}" ] && threads=(--threads "$SWEEP_THREADS")
  echo "== run $i of $COUNT: $variant seed $seed -> $out" >&2
  "$bin" train --dataset "$DATASET" --preset "$PRESET" --variant "$variant" \
    --epochs "$EPOCHS" --seed "$seed" "${ARGS[@]}" "${threads[@]}" \
    --quiet --out "$out" "${resume[@]}"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  count) echo "$COUNT" ;;
  list)
    for ((i = 0; i < COUNT; i++)); do
      echo "$i $(describe "$i")"
    done
    ;;
  run)
    index="${1:-${JOB_COMPLETION_INDEX:-}}"
    [ -n "$index" ] || die "run needs an INDEX (or JOB_COMPLETION_INDEX)"
    run_one "$index"
    ;;
  all)
    jobs=1
    while [ "$#" -gt 0 ]; do
      case "$1" in
        -j)
          jobs="${2:?-j needs a number}"
          shift
          ;;
        -j*) jobs="${1#-j}" ;;
        *) die "all: unknown argument $1" ;;
      esac
      shift
    done
    [[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die "-j takes a positive number, not $jobs"
    if [ -z "${SWEEP_THREADS:-}" ] && [ "$jobs" -gt 1 ]; then
      cores="$(nproc)"
      export SWEEP_THREADS=$(((cores + jobs - 1) / jobs))
    fi
    mkdir -p "$OUT"
    echo "== $COUNT runs, $jobs at a time${SWEEP_THREADS:+, $SWEEP_THREADS libtorch threads each}; logs in $OUT/*.log" >&2
    declare -A running=()
    failed=()
    # Waits for any one run to end and notes it when it failed.
    reap() {
      local pid=""
      if wait -n -p pid; then
        echo "== finished run ${running[$pid]}" >&2
      else
        echo "== FAILED run ${running[$pid]}" >&2
        failed+=("${running[$pid]}")
      fi
      unset "running[$pid]"
    }
    for ((i = 0; i < COUNT; i++)); do
      while [ "${#running[@]}" -ge "$jobs" ]; do reap; done
      read -r variant seed _ <<<"$(describe "$i")"
      echo "== started run $i ($variant seed $seed)" >&2
      run_one "$i" >"$OUT/$variant-s$seed.log" 2>&1 &
      running[$!]="$i"
    done
    while [ "${#running[@]}" -gt 0 ]; do reap; done
    "$(train_bin)" report "$OUT"
    if [ "${#failed[@]}" -gt 0 ]; then
      for i in "${failed[@]}"; do
        read -r variant seed out <<<"$(describe "$i")"
        echo "sweep.sh: run $i ($variant seed $seed) failed: see $OUT/$variant-s$seed.log" >&2
      done
      exit 1
    fi
    ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; [ -z "$cmd" ] || [ "$cmd" = -h ] || [ "$cmd" = --help ] || exit 2 ;;
esac
