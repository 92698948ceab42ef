#!/usr/bin/env bash
# Runs gtest programs under Oclgrind (a simulating OpenCL device that checks every access) with
# EMBAG_TEST_ISAS=opencl, and fails if Oclgrind reported anything (out-of-bounds access, data
# race, invalid API call) or a test failed. Oclgrind's exit status does not say either (and
# Debian's Oclgrind 21.10 aborts in its own teardown after the program ends: "corrupted
# double-linked list"), so its log and the tests' own summary are read instead.
# Usage: run_oclgrind.sh <oclgrind> <test program> <gtest filter> [<program> <filter> ...]
set -u
oclgrind=$1; shift
status=0
while [ $# -ge 2 ]; do
  program=$1 filter=$2; shift 2
  log=$(mktemp)
  out=$(mktemp)
  EMBAG_TEST_ISAS=opencl "$oclgrind" --data-races --check-api --log "$log" \
    "$program" --gtest_filter="$filter" > "$out" 2>&1
  if ! grep -q '^\[  PASSED  \]' "$out" || grep -q '^\[  FAILED  \]' "$out"; then
    echo "FAILED: $(basename "$program") $filter under Oclgrind:"; tail -40 "$out"; status=1
  fi
  if [ -s "$log" ]; then
    echo "FAILED: Oclgrind reported problems in $(basename "$program") $filter:"
    head -60 "$log"; status=1
  else
    echo "clean: $(basename "$program") $filter ($(grep -c '^\[       OK \]' "$out") tests, no Oclgrind report)"
  fi
  rm -f "$log" "$out"
done
exit $status
