#!/usr/bin/env bash
# Runs every test of the workspace and ends with one total line, so the last
# word of a run is the whole suite's count rather than the last binary's.
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
passed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
skipped=$(grep -cE '^skipping .*: needs root' "$log")
echo
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
exit "$rc"
