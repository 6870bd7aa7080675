#!/usr/bin/env bash
# Installs what rir needs on a fresh Debian machine, idempotently, from the
# package registries only (Debian apt, PyPI, crates.io):
#   - Debian: dataset-fashion-mnist (the real images), fonts-dejavu-core
#     (plot labels);
#   - PyPI: libtorch 2.11.0 (CPU part of the torch wheel plus the two CUDA
#     runtime wheels libtorch_cpu.so links against) into .deps/, ignored by git.
# Source it: it exports LIBTORCH for the tch build.
# Sourced by the other scripts: remember the caller's shell options and give
# them back at the end, so that `set -e` here does not leak into a sourcing shell.
# ($- is read directly: a command substitution does not see errexit.)
_rir_saved_opts="$(set +o)"
_rir_saved_flags="$-"
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
# libb64 for NVIDIA's perf_analyzer (scripts/perf-analyzer.sh, a test and a benchmark).
[[ "$(ldconfig -p 2>/dev/null)" == *libb64.so.0d* ]] || apt_packages+=(libb64-0d)
if [ "${#apt_packages[@]}" -gt 0 ]; then
  log "apt-get install ${apt_packages[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

if [ ! -f "$TORCH_DIR/torch/lib/libtorch_cpu.so" ]; then
  log "pip: libtorch 2.11.0 into $TORCH_DIR (about 1.2 GB)"
  rm -rf "$TORCH_DIR.partial"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --target "$TORCH_DIR.partial" \
    torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  rm -rf "$TORCH_DIR"
  mv "$TORCH_DIR.partial" "$TORCH_DIR"
fi

ORT_DIR="$DEPS/onnxruntime"
if [ ! -f "$ORT_DIR/libonnxruntime.so" ]; then
  log "pip: onnxruntime 1.31.1 wheel, unpacking libonnxruntime.so into $ORT_DIR"
  tmp="$(mktemp -d)"
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" onnxruntime==1.31.1
  mkdir -p "$ORT_DIR"
  python3 - "$tmp" "$ORT_DIR" <<'PY'
import glob, os, shutil, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "onnxruntime-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if "/capi/libonnxruntime.so" in n]
    lib = max(names, key=len)  # libonnxruntime.so.1.31.1
    with z.open(lib) as src, open(os.path.join(sys.argv[2], "libonnxruntime.so"), "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  rm -rf "$tmp"
fi

# Python packages the tests drive as independent references, in their own
# folder: `onnx` (the official checker), NVIDIA's `tritonclient[grpc]` (a
# stock client of the server) and `onnxruntime` (ONNX Runtime's Python API).
PY_DIR="$DEPS/py"
if ! PYTHONPATH="$PY_DIR" python3 -c "import onnx, tritonclient.grpc, onnxruntime" 2>/dev/null; then
  log "pip: onnx, tritonclient[grpc], onnxruntime into $PY_DIR"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$PY_DIR" \
    onnx==1.23.2 "tritonclient[grpc]==2.73.0" onnxruntime==1.31.1
fi

export LIBTORCH="$TORCH_DIR/torch"
export RIR_ORT_DYLIB="$ORT_DIR/libonnxruntime.so"
export RIR_PYTHONPATH="$PY_DIR"
export RIR_ROOT
eval "$_rir_saved_opts"
case "$_rir_saved_flags" in *e*) set -e ;; *) set +e ;; esac
unset _rir_saved_opts _rir_saved_flags
