#!/usr/bin/env bash
# cargo-deny over the workspace (deny.toml): every dependency's licence,
# banned or duplicated crates, and where crates come from. Installs
# cargo-deny 0.20.2 from crates.io into .deps/cargo-deny the first time
# (it compiles: about 5 minutes on 2 cores). Advisories are not checked: the
# RustSec database they need is fetched from a git host these machines
# cannot reach.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.deps/cargo-deny/bin/cargo-deny"
if [[ ! -x "$BIN" ]]; then
  echo "[deny] cargo install cargo-deny 0.20.2 into .deps/cargo-deny (compiles, about 5 minutes)" >&2
  cargo install -q --locked cargo-deny@0.20.2 --root "$ROOT/.deps/cargo-deny"
fi
cd "$ROOT"
exec "$BIN" check licenses bans sources "$@"
