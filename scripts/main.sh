#!/usr/bin/env bash
# The main job on the embedded default: set up, build, train a small RiR
# briefly on real Fashion-MNIST images, evaluate the checkpoint, export it to
# ONNX folded and verify the export in two runtimes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$RIR_ROOT"

echo "== build"
cargo build --workspace --bins --quiet

OUT="runs/quickstart"
rm -rf "$OUT"
echo "== train: tiny RiR, 2 epochs on 20k Fashion-MNIST training images (about 1 minute on 2 cores)"
./target/debug/rir-train train --dataset fashion-mnist --preset tiny --variant rir \
  --epochs 2 --train-limit 20000 --schedule one-cycle --crop-pad 2 --out "$OUT"

echo "== evaluate the best checkpoint on the full test split"
./target/debug/rir-train eval "$OUT/best.safetensors"
echo "== export: fold every unit into one convolution, write ONNX, verify it in ONNX Runtime and tract"
./target/debug/rir-export "$OUT/best.safetensors" -o "$OUT/model.onnx" --verify --images 10000

echo "== outputs: $OUT/{best,last}.safetensors, metrics.jsonl, curves.png, model.onnx"
