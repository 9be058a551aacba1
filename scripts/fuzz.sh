#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a short, fixed time and fails on
# the first crash (a panic, an overflow, a hang past 10 s, memory past 1 GiB).
#
#   scripts/fuzz.sh                 every target, FUZZ_SECONDS (default 10) each
#   scripts/fuzz.sh store_log 300   one target, longer
#
# The checked-in corpora (fuzz/corpus/<target>) are read, never written: what
# a run discovers goes to a scratch directory removed at exit, so a run leaves
# nothing in the checkout or in /tmp. A crashing input is kept under
# target/fuzz/crashes/ (build output, ignored by git) with the command that
# replays it; once the bug is fixed, add the input to the target's corpus.
#
# Targets are built with optimizations, debug assertions and overflow checks,
# without AddressSanitizer: every crate they reach forbids `unsafe`, so the
# sanitizer would only halve the executions a run gets.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SECONDS:-10}
if (($# > 1)); then secs=$2; fi

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: the nightly Rust toolchain is missing (libFuzzer needs it); install it with rustup" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is missing; run scripts/setup.sh (or: cargo install cargo-fuzz --locked)" >&2
  exit 1
fi

target_dir=$PWD/target/fuzz
bin_dir=$target_dir/x86_64-unknown-linux-gnu/release
if (($# > 0)); then
  targets=("$1")
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "fuzz: building ${#targets[@]} target(s)" >&2
cargo +nightly fuzz build -O -a -s none --target-dir "$target_dir" ${1:+"$1"} >&2

scratch=$(mktemp -d "${TMPDIR:-/tmp}/weft-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

failed=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  log=$scratch/$t.log
  start=$SECONDS
  # First corpus directory: where new inputs go (scratch); the checked-in
  # seeds follow, read only.
  if "$bin_dir/$t" "$scratch/$t" "fuzz/corpus/$t" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 \
    -artifact_prefix="$scratch/$t-" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
    echo "fuzz: $t: ok, $runs inputs in $((SECONDS - start)) s"
  else
    failed=$((failed + 1))
    keep=$target_dir/crashes/$t
    mkdir -p "$keep"
    echo "fuzz: $t: FAILED; the end of its log:" >&2
    tail -n 40 "$log" >&2
    for a in "$scratch/$t"-*; do
      [[ -e $a ]] || continue
      cp "$a" "$keep/"
      echo "fuzz: replay with: $bin_dir/$t $keep/${a##*/}" >&2
    done
  fi
done

if ((failed)); then
  echo "fuzz: $failed of ${#targets[@]} target(s) crashed" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} target(s), ${secs} s each, no crash"
