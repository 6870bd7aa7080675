#!/usr/bin/env bash
# Runs a command with a folder on a nearly full disk, to see what it does
# when a write fails with "No space left on device":
#
#   bash scripts/with-full-disk.sh DIR FREE_KIB COMMAND [ARGS...]
#
# In a private mount namespace (nothing outside it sees the mount; as a
# non-root user, a user namespace too) a tmpfs is mounted over DIR, DIR's
# files are copied onto it, and all of it but FREE_KIB is filled. COMMAND
# runs there; afterwards DIR's files as COMMAND left them (the filler left
# out) are copied to DIR.after/, since DIR itself is untouched outside the
# namespace. The exit status is COMMAND's.
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: $0 DIR FREE_KIB COMMAND [ARGS...]" >&2
  exit 2
fi
dir="$(cd "$1" && pwd)"
free="$2"
shift 2
ns=(unshare --mount --propagation private)
[ "$(id -u)" = 0 ] || ns=(unshare --user --map-root-user --mount --propagation private)
exec "${ns[@]}" bash -euo pipefail -c '
  dir="$1" free="$2"
  shift 2
  seed="$(mktemp -d)"
  cp -r --preserve=mode,timestamps "$dir"/. "$seed"/
  mount -t tmpfs -o size=64m tmpfs "$dir"
  cp -r --preserve=mode,timestamps "$seed"/. "$dir"/
  rm -rf "$seed"
  dd if=/dev/zero of="$dir/.filler" bs=64k 2>/dev/null || true
  truncate -s "-${free}K" "$dir/.filler"
  set +e
  "$@"
  status=$?
  set -e
  rm -f "$dir/.filler"
  rm -rf "$dir.after"
  mkdir -p "$dir.after"
  cp -r --preserve=mode,timestamps "$dir"/. "$dir.after"/
  exit "$status"
' with-full-disk "$dir" "$free" "$@"
