#!/usr/bin/env bash
# Runs every test of the workspace and ends with one total line, so the last
# word of a run is the whole suite's count rather than the last binary's.
set -uo pipefail
log=$(mktemp)
# the tests get a /tmp of their own: whatever is in it afterwards, a test
# made and did not remove (a test must clean up, also on failure); other
# processes on the machine writing to /tmp meanwhile do not count
test_tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-test-tmp.XXXXXX")
trap 'rm -f "$log"; rm -rf "$test_tmp"' EXIT
TMPDIR=$test_tmp cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
left=$(ls -A "$test_tmp")
if [[ -n $left ]]; then
  echo "tests left these in their /tmp (a test must remove what it makes, also on failure):"
  sed 's/^/  /' <<<"$left"
  [[ $rc == 0 ]] && rc=1
fi
passed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
skipped=$(grep -cE '^skipping .*: needs root' "$log")
echo
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
exit "$rc"
