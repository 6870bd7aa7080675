#!/usr/bin/env bash
# NVIDIA's perf_analyzer, from PyPI, for `rir-bench compare` (also `rir-loadtest bench compare`).
# The tritonclient 2.41.0 wheel is the last to ship the binary; it needs
# libb64 (Debian) and the CUDA runtime library (PyPI nvidia-cuda-runtime-cu12,
# loaded even on CPU-only machines). Installed once into .deps/perf-analyzer,
# then this script runs perf_analyzer with the given arguments; with the
# single argument --install it only installs (the test set-up does that,
# so no test downloads anything).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/.deps/perf-analyzer"
if [[ ! -x "$DIR/bin/perf_analyzer" ]]; then
  echo "[perf-analyzer] installing into $DIR (tritonclient 2.41.0 wheel, nvidia-cuda-runtime-cu12, libb64)" >&2
  if [[ "$(ldconfig -p 2>/dev/null)" != *libb64.so.0d* ]]; then
    SUDO=""
    [[ "$(id -u)" == 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libb64-0d >&2
  fi
  tmp="$(mktemp -d)"
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" \
    tritonclient==2.41.0 nvidia-cuda-runtime-cu12==12.4.127 >&2
  rm -rf "$DIR.partial" && mkdir -p "$DIR.partial/bin" "$DIR.partial/lib"
  python3 - "$tmp" "$DIR.partial" <<'PY'
import glob, os, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
for whl in glob.glob(os.path.join(tmp, "*.whl")):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if name.endswith("data/bin/perf_analyzer"):
                dest = os.path.join(out, "bin", "perf_analyzer")
            elif os.path.basename(name) == "libcudart.so.12":
                dest = os.path.join(out, "lib", "libcudart.so.12")
            else:
                continue
            with z.open(name) as src, open(dest, "wb") as dst:
                dst.write(src.read())
            os.chmod(dest, 0o755)
PY
  rm -rf "$tmp" "$DIR" && mv "$DIR.partial" "$DIR"
fi
[[ "${1:-}" == --install && "$#" == 1 ]] && exit 0
export LD_LIBRARY_PATH="$DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$DIR/bin/perf_analyzer" "$@"
