#!/usr/bin/env bash
# embag-tune end to end on this machine, on tiny shapes (plumbing, not performance):
#   within-budget  a run finishes inside its --budget, prints the table, and writes a tuning file
#                  the build's reader (cmake/EmbagTuning.cmake) accepts
#   mismatch       a candidate that computes something else (mode=mean posing as a sum schedule)
#                  is rejected loudly by the bitwise check, never timed, and not chosen
#   bad-results    --collect refuses a truncated results file with a message naming it
#   classes        with warm and cold workloads (EMBAG_CACHE_RESIDENT_BYTES puts the tiny shapes'
#                  tables on both sides of the limit, as the runtime would class them), the file
#                  holds forward entries per table class and backward entries, and the build's
#                  reader accepts it
# Usage: test_tune_tool.sh CASE TUNE_EXE SOURCE_DIR WORK_DIR CMAKE EMBAG_VERSION HALIDE_VERSION
set -euo pipefail
case_name=$1 tune=$2 source=$3 work=$4 cmake=$5 embag_version=$6 halide_version=$7
rm -rf "$work" && mkdir -p "$work"
shapes="$source/tests/tuning/tiny-shapes.txt"
fail() { echo "FAIL: $*"; exit 1; }

case "$case_name" in
within-budget)
  budget=20
  start=$(date +%s)
  # (Forward kernels only: the budget planning is the same for every pipeline, and the classes
  # case covers backward tuning; each backward candidate adds a generator run to a 20 s budget.)
  "$tune" --shapes "$shapes" --modes sum,max --pipelines forward --budget ${budget}s \
    --out "$work/t.json" --work "$work/w" > "$work/out.txt" 2> "$work/err.txt" \
    || { cat "$work/err.txt"; fail "embag-tune failed"; }
  elapsed=$(( $(date +%s) - start ))
  cat "$work/out.txt"
  # The budget drives the tool's plan from estimates (a generator run, a timing round) made on a
  # machine that may be busy (seen: 23 s while a benchmark ran beside it): the check is that the
  # tool plans to its budget, within a quarter, not that its estimates are exact.
  [ "$elapsed" -le $((budget + budget / 4)) ] || fail "took ${elapsed}s for a ${budget}s budget"
  grep -q "default GB/s  tuned GB/s" "$work/out.txt" || fail "no table printed"
  grep -q "timing \[" "$work/err.txt" || fail "no progress bar"
  grep -q '"mode": "max"' "$work/t.json" || fail "the tuning file lacks the max kernel"
  "$cmake" -DFILE="$work/t.json" -DISAS="$(sed -n 's/.*"isa": "\(.*\)".*/\1/p' "$work/t.json")" \
    -DEMBAG_VERSION="$embag_version" -DHALIDE_VERSION="$halide_version" \
    -P "$source/cmake/EmbagTuning.cmake" || fail "the build's reader refuses the tuning file"
  ;;
mismatch)
  "$tune" --shapes "$shapes" --modes sum --candidates 2 --candidate "mode=mean" --budget 15s \
    --out "$work/t.json" --work "$work/w" > "$work/out.txt" 2> "$work/err.txt" \
    || { cat "$work/err.txt"; fail "embag-tune failed"; }
  cat "$work/out.txt"
  grep -q "REJECTED sum f32 i64 candidate \[mode=mean\]" "$work/err.txt" \
    || { cat "$work/err.txt"; fail "the mismatching candidate was not rejected loudly"; }
  grep -q "1 candidate(s) rejected" "$work/out.txt" || fail "the table does not report the rejection"
  grep -q '"params": {}' "$work/t.json" || fail "a rejected candidate was chosen"
  if grep -q "^confirm.*mode=mean" "$work/w/results.txt"; then fail "a rejected candidate was timed"; fi
  ;;
classes)
  # 500 x 16 x 4 B = 32000 B: warm; 1000 x 33 x 4 B = 132000 B: cold.
  EMBAG_CACHE_RESIDENT_BYTES=65536 "$tune" --shapes "$shapes" --modes sum --candidates 3 \
    --budget 20s --out "$work/t.json" --work "$work/w" > "$work/out.txt" 2> "$work/err.txt" \
    || { cat "$work/err.txt"; fail "embag-tune failed"; }
  cat "$work/out.txt"
  grep -q "$(printf 'table_limit\t65536\tEMBAG_CACHE_RESIDENT_BYTES')" "$work/w/results.txt" \
    || fail "the runner did not report the limit it classed by"
  grep -q "warm = cache-resident (table <= 65536 bytes" "$work/out.txt" || fail "no limit in the table"
  for pattern in '"pipeline": "forward", "mode": "sum".*' '"pipeline": "backward_rows", "mode": "sum"' \
                 '"pipeline": "dense_scatter", "mode": "sum"'; do
    grep -q "$pattern" "$work/t.json" || fail "no entry $pattern"
  done
  grep -q '"table_class": "cache-resident"' "$work/t.json" || fail "no cache-resident entry"
  grep -q '"table_class": "memory-resident"' "$work/t.json" || fail "no memory-resident entry"
  # Each class was chosen on its own workload (the cold 1000 x 33 is workload 0, the warm 500 x 16
  # workload 1), backward kernels on both.
  python3 - "$work/t.json" <<'PY' || fail "the entries were not chosen on their own class's workloads"
import json, sys
kernels = json.load(open(sys.argv[1]))["kernels"]
want = {("forward", "cache-resident"): [1], ("forward", "memory-resident"): [0],
        ("backward_rows", "any"): [0, 1], ("dense_scatter", "any"): [0, 1]}
got = {(k["pipeline"], k["table_class"]): sorted(k["workloads"]) for k in kernels}
print("entries:", got)
sys.exit(0 if got == want else 1)
PY
  "$cmake" -DFILE="$work/t.json" -DISAS="$(sed -n 's/.*"isa": "\(.*\)".*/\1/p' "$work/t.json")" \
    -DEMBAG_VERSION="$embag_version" -DHALIDE_VERSION="$halide_version" \
    -P "$source/cmake/EmbagTuning.cmake" 2>&1 | tee "$work/reader.txt" || fail "the build's reader refuses the tuning file"
  grep -q "tuning file OK: .*4 kernel(s)" "$work/reader.txt" || fail "expected 4 tuned units (2 classes, 2 backward)"
  ;;
bad-results)
  printf 'embag-tune-results\t1\nisa\tavx512\n' > "$work/results.txt"
  if "$tune" --collect "$work/results.txt" --out "$work/t.json" 2> "$work/err.txt"; then
    fail "--collect accepted a truncated results file"
  fi
  cat "$work/err.txt"
  grep -q "results.txt: truncated (no 'end' line)" "$work/err.txt" || fail "unclear message"
  [ ! -e "$work/t.json" ] || fail "a tuning file was written from bad results"
  ;;
*)
  fail "unknown case $case_name"
  ;;
esac
echo "PASS $case_name"
