#!/usr/bin/env bash
# Unpacks ONNX Runtime's shared libraries from its PyPI wheel into a folder:
# what scripts/setup.sh installs into .deps/ and what the container image
# carries, one recipe for both.
#   bash scripts/fetch-onnxruntime.sh WHEEL DEST LIB...
#   bash scripts/fetch-onnxruntime.sh onnxruntime==1.31.1 .deps/onnxruntime libonnxruntime.so
# Each LIB is taken from the wheel's onnxruntime/capi/ (libonnxruntime.so from
# libonnxruntime.so.1.31.1); the libraries must stay together in DEST (the
# main library finds its execution providers beside itself). DEST is written
# whole or not at all.
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: $0 WHEEL DEST LIB..." >&2
  exit 2
fi
wheel="$1"
dest="$2"
shift 2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp" "$dest.partial"' EXIT
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" "$wheel"
rm -rf "$dest.partial"
mkdir -p "$dest.partial"
python3 - "$tmp" "$dest.partial" "$@" <<'PY'
import glob, os, shutil, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "onnxruntime*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for want in sys.argv[3:]:
        names = [n for n in z.namelist() if f"/capi/{want}" in n]
        if not names:
            sys.exit(f"{os.path.basename(wheel)} has no {want}")
        lib = max(names, key=len)  # libonnxruntime.so.1.31.1 for libonnxruntime.so
        with z.open(lib) as src, open(os.path.join(sys.argv[2], want), "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
rm -rf "$dest"
mv "$dest.partial" "$dest"
