#!/usr/bin/env bash
# Mutation testing of the pure-logic modules: cargo-mutants changes one
# operator or return value at a time and reports each change the tests did
# not notice. A command, not part of CI (tens of minutes on 2 cores); the
# scores and the survivors explained are in docs/testing.md.
#
#   bash scripts/mutants.sh            # the whole scoped set
#   bash scripts/mutants.sh loadtest   # one package's files
#
# Needs cargo-mutants (`cargo install --locked cargo-mutants`). Each file's
# results go to mutants.out/<package>/<file>/ (outcomes.json, missed.txt).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" >/dev/null
cd "$RIR_ROOT"
command -v cargo-mutants >/dev/null || {
  echo "cargo-mutants is not installed: cargo install --locked cargo-mutants" >&2
  exit 1
}

# package  file  test selection (cargo test arguments after --; empty: all)
SET=(
  "rir-loadtest loadtest/src/search.rs --lib"
  "rir-loadtest loadtest/src/merge.rs --lib"
  "rir-loadtest loadtest/src/thresholds.rs --lib"
  "rir-loadtest loadtest/src/load.rs --lib"
  "rir-loadtest loadtest/src/breakdown.rs --lib"
  "rir-loadtest loadtest/src/plan.rs --lib"
  "rir-loadtest loadtest/src/session.rs --lib"
  "rir-trainer trainer/src/stats.rs --lib"
  "rir-trainer trainer/src/sweep/halving.rs --lib"
  "rir-trainer trainer/src/sweep/space.rs --lib"
  "rir-trainer trainer/src/optim.rs --lib"
  "rir-trainer trainer/src/recipe.rs --lib"
  "rir-exporter exporter/src/quantize/grid.rs --lib"
  "rir-exporter exporter/src/quantize/plan.rs --lib"
  "rir-exporter exporter/src/quantize/calibrate.rs --lib"
  "rir-exporter exporter/src/quantize/rewrite.rs --lib"
  "rir-exporter exporter/src/verdict.rs --lib"
  "rir-server server/src/stall.rs --lib"
  "rir-server server/src/core/budget.rs --lib"
  "rir-server server/src/trace.rs --lib"
  "rir-client client/src/server_counters.rs --lib"
)

only="${1:-}"
for entry in "${SET[@]}"; do
  read -r pkg file selection <<<"$entry"
  [[ -z "$only" || "$pkg" == *"$only"* ]] || continue
  out="mutants.out/${pkg}/$(basename "$file" .rs)"
  mkdir -p "$out"
  echo "== $pkg $file"
  # --in-place: no copy of the 13 GB target dir; the file is restored after
  # each mutant. Exit 2 (mutants missed) is a finding, not a failure here.
  cargo mutants --in-place -p "$pkg" --file "$file" --output "$out" \
    --timeout 300 -- $selection || [[ $? == 2 || $? == 3 ]]
  tail -n 1 "$out/mutants.out/outcomes.json" >/dev/null 2>&1 || true
  for kind in caught missed timeout unviable; do
    f="$out/mutants.out/$kind.txt"
    printf '  %-9s %s\n' "$kind" "$( [[ -f $f ]] && wc -l <"$f" || echo 0)"
  done
done
