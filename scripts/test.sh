#!/usr/bin/env bash
# Runs every test of the workspace and ends with one total line, so the last
# word of a run is the whole suite's count rather than the last binary's.
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# what the tests leave in /tmp: the names they use (weft-*, wcni-*, wdp-*,
# lab names wt*) that were not there before must not be there after
tmp_ours() { ls -A "${TMPDIR:-/tmp}" 2>/dev/null | grep -E '^(weft|wcni|wdp|wt)' | sort; }
tmp_before=$(tmp_ours)
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
left=$(comm -13 <(echo "$tmp_before") <(tmp_ours))
if [[ -n $left ]]; then
  echo "tests left these in ${TMPDIR:-/tmp} (a test must remove what it makes, also on failure):"
  sed 's/^/  /' <<<"$left"
  [[ $rc == 0 ]] && rc=1
fi
passed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
skipped=$(grep -cE '^skipping .*: needs root' "$log")
echo
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
exit "$rc"
