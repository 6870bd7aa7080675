# Sourced by the GPU scripts: libtorch and the CUDA 13 libraries (cuDNN,
# cuBLAS, ...) from the host's python torch 2.11, on LD_LIBRARY_PATH, so
# that binaries built elsewhere run on a bare GPU host. Needs PY (the
# interpreter); sets TORCH_LIB.
TORCH_LIB="$("$PY" -c 'import os, torch; assert torch.__version__.startswith("2.11"), torch.__version__; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" \
  || { echo "no torch 2.11 in $PY (set PYTHON)" >&2; exit 2; }
NV_LIBS="$(find "$(dirname "$(dirname "$TORCH_LIB")")/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | paste -sd: || true)"
export LD_LIBRARY_PATH="$TORCH_LIB${NV_LIBS:+:$NV_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
