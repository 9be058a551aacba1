#!/usr/bin/env bash
# Runs every test of the workspace and ends with one total line, so the last
# word of a run is the whole suite's count rather than the last binary's.
set -uo pipefail
log=$(mktemp)
# the tests get a /tmp of their own: whatever is in it afterwards, a test
# made and did not remove (a test must clean up, also on failure); other
# processes on the machine writing to /tmp meanwhile do not count
test_tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-test-tmp.XXXXXX")
# Each line as it comes, and when each test binary began and ended, so the
# run ends with the binaries that took longest (a CI log then shows where the
# time went).
times=$(mktemp)
trap 'rm -f "$log" "$times"; rm -rf "$test_tmp"' EXIT
timed() {
  local line cur="" t0 now
  while IFS= read -r line; do
    printf '%s\n' "$line"
    if [[ $line =~ ^[[:space:]]*(Running|Doc-tests)[[:space:]](.*)$ ]]; then
      now=$EPOCHREALTIME
      [[ -n $cur ]] && echo "$t0 $now $cur" >>"$times"
      cur=${BASH_REMATCH[2]}
      t0=$now
    fi
  done
  [[ -n $cur ]] && echo "$t0 $EPOCHREALTIME $cur" >>"$times"
  return 0
}
tests_start=$EPOCHREALTIME
TMPDIR=$test_tmp cargo test --workspace --no-fail-fast 2>&1 | timed | tee "$log"
rc=${PIPESTATUS[0]}
tests_secs=$(awk -v a="$tests_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
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
echo "slowest test binaries (seconds):"
awk '{ d = $2 - $1; $1 = ""; $2 = ""; sub(/^ +/, ""); printf "%8.1f  %s\n", d, $0 }' "$times" |
  sort -rn | head -12
# the phases of `make test` (scripts/phase.sh noted them), this one last
if [[ -n ${WEFT_PHASES:-} && -f $WEFT_PHASES ]]; then
  phases=$(awk '{ printf "%s %s s, ", $1, $2 }' "$WEFT_PHASES")
  echo "phases: ${phases}tests ${tests_secs} s"
else
  echo "phases: tests ${tests_secs} s"
fi
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
exit "$rc"
