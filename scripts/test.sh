#!/usr/bin/env bash
# The whole test suite: set up, check formatting and lints, run every test.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$RIR_ROOT"
# Each step says how long the run has taken so far, so that a slow CI run shows where.
step() { echo "== [$(( SECONDS / 60 )) min $(( SECONDS % 60 )) s] $*"; }

# Debian's chromium, for the headless browser test of the web page.
if ! command -v chromium >/dev/null 2>&1; then
  step "apt: chromium (the web page's browser test)"
  SUDO=""
  [[ "$(id -u)" == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# NVIDIA's perf_analyzer (PyPI), for the test that drives rir-serve with it.
bash scripts/perf-analyzer.sh --install

step "cargo fmt --check"
cargo fmt --all -- --check
step "dependencies: licences, sources and wildcards against deny.toml (the full cargo-deny: scripts/deny.sh)"
python3 scripts/check-licences.py --self-test
python3 scripts/check-licences.py | grep -v '^warning:'
step "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "cargo test --no-run (the test targets and the binaries, built once with the tests' features)"
cargo test --workspace --no-run --quiet 2>&1
step "deploy/: manifests against their schemas, the Containerfile, flags and ports against the binaries"
PYTHONPATH="$RIR_PYTHONPATH" python3 scripts/check-deploy.py \
  --serve-bin target/debug/rir-serve --health-bin target/debug/rir-health --train-bin target/debug/rir-train
step "cargo test"
cargo test --workspace 2>&1
step "done"
