#!/usr/bin/env bash
# Installs what rir needs on a fresh Debian machine, idempotently, from the
# package registries only (Debian apt, PyPI, crates.io):
#   - Debian: dataset-fashion-mnist (the real images), fonts-dejavu-core
#     (plot labels);
#   - PyPI: libtorch 2.11.0 (CPU part of the torch wheel plus the two CUDA
#     runtime wheels libtorch_cpu.so links against) into .deps/, ignored by git.
# Source it: it exports LIBTORCH for the tch build.
set -euo pipefail

RIR_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$RIR_ROOT/.deps"
TORCH_DIR="$DEPS/torch-2.11.0"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1; fi
}

apt_packages=()
[ -d /usr/share/datasets/fashion-mnist ] || apt_packages+=(dataset-fashion-mnist)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || apt_packages+=(fonts-dejavu-core)
if [ "${#apt_packages[@]}" -gt 0 ]; then
  log "apt-get install ${apt_packages[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

if [ ! -f "$TORCH_DIR/torch/lib/libtorch_cpu.so" ]; then
  log "pip: libtorch 2.11.0 into $TORCH_DIR (about 1.2 GB)"
  rm -rf "$TORCH_DIR.partial"
  python3 -m pip install -q --disable-pip-version-check --no-deps --target "$TORCH_DIR.partial" \
    torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  rm -rf "$TORCH_DIR"
  mv "$TORCH_DIR.partial" "$TORCH_DIR"
fi

export LIBTORCH="$TORCH_DIR/torch"
export RIR_ROOT
