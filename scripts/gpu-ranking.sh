#!/usr/bin/env bash
# One slice of the paper's ranking: RiR against ResNet and the plain CNN at
# equal size (paper preset, Fashion-MNIST, one recipe, seeds 0-2), as one
# `rir-train sweep`. GPU time comes in slices of minutes, so each slice
# trains for at most --budget seconds the trials not yet in the kept folder
# (default docs/results/paper-ranking, in the repository), then packs every
# finished trial (plan and logs, no checkpoints: `rir-train sweep pack`)
# into OUT/paper-ranking.tgz and prints the report. Unpack that archive
# over the kept folder and commit it, and the next slice goes on from there:
#
#   tar -xzf OUT/paper-ranking.tgz -C docs/results/paper-ranking
#   rir-train report docs/results/paper-ranking
#
#   scripts/gpu-ranking.sh --budget SECONDS [--bin DIR] [--data DIR] [--kept DIR] [--out DIR]
#
#   --budget   seconds of training in this slice; a trial still running
#              then is stopped and left out of the pack (trained again next
#              slice)
#   --bin      folder with rir-train (default: target/release)
#   --data     Fashion-MNIST folder (default: Debian's)
#   --kept     the sweep kept so far (default: docs/results/paper-ranking)
#   --out      where the archive, the report and the log go
#              (default: runs/gpu-ranking)
#
# PYTHON selects the interpreter whose torch 2.11 provides libtorch and the
# CUDA libraries (default: python3). DEVICE (default cuda), PRESET (paper),
# EPOCHS (15), SEEDS (0,1,2), JOBS (trials at once, 1) and TRAIN_LIMIT
# (training images; default all) size the sweep; a kept folder holds one
# sweep, so change them only with a new --kept. DEVICE=cpu PRESET=micro
# EPOCHS=1 TRAIN_LIMIT=2000 checks the script on any machine in a minute.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
BIN=target/release
DATA=/usr/share/datasets/fashion-mnist
KEPT=docs/results/paper-ranking
OUT=runs/gpu-ranking
BUDGET=""
while [ $# -gt 0 ]; do
  case "$1" in
    --budget) BUDGET="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --kept) KEPT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$BUDGET" =~ ^[0-9]+$ ]] || { echo "--budget SECONDS is required (see --help)" >&2; exit 2; }
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BIN="$(cd "$BIN" && pwd)"
DATA="$(cd "$DATA" && pwd)"
source scripts/gpu-env.sh

# The sweep trains in a scratch folder made from the kept one. The recipe
# reads its data through a link of a fixed name, so that the plan the sweep
# records is the same on every host.
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/sweep"
[ -d "$KEPT" ] && cp -r "$KEPT/." "$WORK/sweep/"
ln -s "$DATA" "$WORK/data"
LIMIT=()
[ -z "${TRAIN_LIMIT:-}" ] || LIMIT=(--train-limit "$TRAIN_LIMIT")
cd "$WORK"
echo "== slice of at most $BUDGET s on $DEVICE ($(date +%T)); kept before: $(ls -d sweep/c* 2>/dev/null | wc -l) trials"
timeout --signal=INT --kill-after=60 "$BUDGET" \
  "$BIN/rir-train" sweep all -j "${JOBS:-1}" --device "$DEVICE" --dir sweep \
  --variants rir,resnet,cnn --seeds "${SEEDS:-0,1,2}" --epochs "${EPOCHS:-15}" -- \
  --preset "${PRESET:-paper}" --dataset fashion-mnist --data-dir data "${LIMIT[@]}" \
  --batch-size 256 --schedule cosine --warmup-epochs 1 --lr 0.1 --nesterov \
  --weight-decay 5e-4 --label-smoothing 0.1 --crop-pad 2 --bf16 --channels-last \
  2>&1 | tee "$OUT/slice.log"
echo "== sweep ended ($(date +%T)), status ${PIPESTATUS[0]} (124: the budget ran out)"
[ -f sweep/sweep.json ] || { echo "the sweep did not start (see above)" >&2; exit 1; }
"$BIN/rir-train" sweep pack --dir sweep --to pack | tee -a "$OUT/slice.log"
tar -czf "$OUT/paper-ranking.tgz" -C pack .
"$BIN/rir-train" report pack 2>&1 | tee "$OUT/report.md"
echo "archive: $OUT/paper-ranking.tgz (unpack over $KEPT, relative to $ROOT)"
