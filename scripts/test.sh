#!/usr/bin/env bash
# The whole test suite: set up, check formatting and lints, run every test.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$RIR_ROOT"

# Debian's chromium, for the headless browser test of the web page.
if ! command -v chromium >/dev/null 2>&1; then
  echo "== apt: chromium (the web page's browser test)"
  SUDO=""
  [[ "$(id -u)" == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# NVIDIA's perf_analyzer (PyPI), for the test that drives rir-serve with it.
bash scripts/perf-analyzer.sh --install

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== dependencies: licences, sources and wildcards against deny.toml (the full cargo-deny: scripts/deny.sh)"
python3 scripts/check-licences.py --self-test
python3 scripts/check-licences.py | grep -v '^warning:'
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test --no-run (the test targets and the binaries, built once with the tests' features)"
cargo test --workspace --no-run --quiet 2>&1
echo "== deploy/: manifests against their schemas, the Containerfile, flags and ports against the binaries"
PYTHONPATH="$RIR_PYTHONPATH" python3 scripts/check-deploy.py \
  --serve-bin target/debug/rir-serve --health-bin target/debug/rir-health --train-bin target/debug/rir-train
echo "== cargo test"
cargo test --workspace 2>&1
