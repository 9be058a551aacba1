#!/usr/bin/env bash
# Runs one phase of `make test` (`phase.sh NAME CMD...`), says how long it
# took, and notes the time in $WEFT_PHASES for scripts/test.sh's summary, so
# a CI log shows where the run's time went. Exits with the command's status.
set -uo pipefail
name=$1
shift
start=$EPOCHREALTIME
"$@"
rc=$?
secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
echo "== phase ${name}: ${secs} s$([[ $rc != 0 ]] && echo " (failed, exit ${rc})")"
if [[ -n ${WEFT_PHASES:-} ]]; then
  echo "${name} ${secs}" >>"$WEFT_PHASES"
fi
exit "$rc"
