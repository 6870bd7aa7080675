#!/usr/bin/env bash
# Builds rir-serve's container image from deploy/Containerfile, and with
# --smoke runs it once to check that it serves.
#
#   bash scripts/image.sh [cpu|cuda] [--prebuilt] [--local-base] [--smoke] [--tag NAME]
#
#   cpu|cuda      which image (default cpu): the CUDA one carries onnxruntime-gpu
#                 and the CUDA 13 libraries it loads
#   --prebuilt    build the four serving binaries here (cargo build --release)
#                 and copy them in, instead of compiling inside a Rust image
#   --local-base  make the Debian bookworm base image from Debian's package
#                 mirror (debootstrap, needs root) instead of pulling
#                 debian:bookworm-slim from a container registry: for
#                 machines that reach package mirrors but no registry
#   --smoke       start the image (gRPC on 127.0.0.1:18001, no HTTP or
#                 metrics ports), wait for rir-health inside it to say
#                 SERVING, classify a sample image, stop it
#   --tag NAME    image name (default rir-serve:cpu or rir-serve:cuda)
#   --ca FILE     a CA bundle pip must trust inside the build (a TLS-inspecting
#                 proxy's), passed as the build secret `pip-ca`, never stored
#                 in the image (default: the host's PIP_CERT, when set)
#
# The builder is docker, podman or buildah, the first one that answers
# `info` (RIR_BUILDER=buildah to choose). buildah runs with chroot isolation and,
# unless STORAGE_DRIVER says otherwise, vfs storage: both work without
# privileges a sandbox may lack. The image's size is printed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target=cpu
prebuilt=0
local_base=0
smoke=0
tag=""
ca="${PIP_CERT:-}"
while [ "$#" -gt 0 ]; do
  case "$1" in
    cpu | cuda) target="$1" ;;
    --prebuilt) prebuilt=1 ;;
    --local-base) local_base=1 ;;
    --smoke) smoke=1 ;;
    --tag)
      tag="${2:?--tag needs a name}"
      shift
      ;;
    --ca)
      ca="${2:?--ca needs a file}"
      shift
      ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "image.sh: unknown argument $1 (see --help)" >&2
      exit 2
      ;;
  esac
  shift
done
tag="${tag:-rir-serve:$target}"
log() { printf '\033[1m[image]\033[0m %s\n' "$*" >&2; }

builder="${RIR_BUILDER:-}"
# A docker client without a daemon (or a podman without its service) does
# not count: `info` must answer.
if [ -z "$builder" ]; then
  for b in docker podman buildah; do
    if command -v "$b" >/dev/null 2>&1 && "$b" info >/dev/null 2>&1; then
      builder="$b"
      break
    fi
  done
fi
if [ -z "$builder" ]; then
  echo "image.sh: no working container builder (docker or podman with its daemon, or buildah; Debian: apt-get install buildah)" >&2
  exit 1
fi
if [ "$builder" = buildah ]; then
  export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}" BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
fi
log "builder: $builder; image $tag (target $target)"

# buildah has no `image inspect`.
image_exists() {
  case "$builder" in
    buildah) buildah inspect --type image "$1" >/dev/null 2>&1 ;;
    *) "$builder" image inspect "$1" >/dev/null 2>&1 ;;
  esac
}
image_size() {
  case "$builder" in
    buildah) buildah images --noheading --format '{{.Size}}' "$1" 2>/dev/null | head -n 1 ;;
    *) "$builder" image inspect --format '{{.Size}}' "$1" 2>/dev/null | awk '{printf "%d MB (%s bytes)", $1 / 1000000, $1}' ;;
  esac
}

args=(-f deploy/Containerfile --target "$target" -t "$tag")
if [ -n "$ca" ]; then
  [ -f "$ca" ] || { echo "image.sh: --ca $ca: no such file" >&2; exit 2; }
  args+=(--secret "id=pip-ca,src=$ca")
fi
# Docker's image format: OCI's has no HEALTHCHECK, and buildah and podman
# would drop it.
[ "$builder" = docker ] || args+=(--format docker)

if [ "$prebuilt" = 1 ]; then
  log "cargo build --release of the serving binaries"
  CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=true \
    cargo build --release --locked -q -p rir-server -p rir-client -p rir-loadtest --bins
  args+=(--build-arg BINARIES=prebuilt)
fi

if [ "$local_base" = 1 ]; then
  base="localhost/rir-base:bookworm"
  if ! image_exists "$base"; then
    command -v debootstrap >/dev/null || {
      echo "image.sh: --local-base needs debootstrap (apt-get install debootstrap)" >&2
      exit 1
    }
    root="$(mktemp -d)"
    trap 'rm -rf "$root"' EXIT
    log "debootstrap --variant=minbase bookworm (Debian's mirror) -> $base"
    debootstrap --variant=minbase bookworm "$root" "${RIR_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    case "$builder" in
      buildah)
        ctr="$(buildah from scratch)"
        buildah copy --quiet "$ctr" "$root/" / >/dev/null
        buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash "$ctr"
        buildah commit --quiet --rm "$ctr" "$base" >/dev/null
        ;;
      *) tar -C "$root" -c . | "$builder" import - "$base" >/dev/null ;;
    esac
    rm -rf "$root"
  fi
  args+=(--build-arg "BASE_IMAGE=$base")
fi

case "$builder" in
  buildah) buildah bud --layers "${args[@]}" . ;;
  *) "$builder" build "${args[@]}" . ;;
esac

log "$tag: $(image_size "$tag" || true), uncompressed"

if [ "$smoke" = 1 ]; then
  port=18001
  log "smoke test: rir-serve in $tag on 127.0.0.1:$port"
  serve=(rir-serve --models /models --grpc-addr "127.0.0.1:$port" --http-addr off
    --metrics-addr 127.0.0.1:0)
  case "$builder" in
    buildah)
      ctr="$(buildah from "$tag")"
      trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
      run() { buildah run "$ctr" -- "$@"; }
      buildah run "$ctr" -- "${serve[@]}" &
      ;;
    *)
      name="rir-smoke-$$"
      trap '"$builder" rm -f "$name" >/dev/null 2>&1 || true' EXIT
      "$builder" run -d --name "$name" --network host --entrypoint rir-serve "$tag" "${serve[@]:1}" >/dev/null
      run() { "$builder" exec "$name" "$@"; }
      ;;
  esac
  for _ in $(seq 1 120); do
    if run rir-health -u "127.0.0.1:$port" --service inference.GRPCInferenceService 2>/dev/null; then
      break
    fi
    sleep 0.5
  done
  run rir-health -u "127.0.0.1:$port" --service inference.GRPCInferenceService
  run id -u
  if [ "$builder" = buildah ]; then
    target/release/rir-classify -u "127.0.0.1:$port" samples/fashion-mnist/01-pullover.png 2>/dev/null ||
      log "(no host rir-classify; health was checked)"
    # Anchored (buildah's own command line holds the same words); inside
    # the container the server runs as /usr/local/bin/rir-serve.
    pkill -TERM -f "^(/usr/local/bin/)?rir-serve --models /models --grpc-addr 127.0.0.1:$port" || true
    wait || true
  else
    target/release/rir-classify -u "127.0.0.1:$port" samples/fashion-mnist/01-pullover.png 2>/dev/null ||
      log "(no host rir-classify; health was checked)"
  fi
  log "smoke test passed"
fi
