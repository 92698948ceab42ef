#!/usr/bin/env bash
# The ARM tuning round trip, end to end, for CI (make test-tune-bundle): what a user does with a
# board, with qemu-aarch64 standing in for the board. Checks plumbing only; QEMU timings mean
# nothing, so whichever schedule "wins" is fine as long as it checked out bit for bit.
#   1. embag-tune --isa neon --bundle: cross-compile 3 candidates and the static runner
#   2. run the runner under qemu-aarch64 (as on the board), a few seconds
#   3. embag-tune --collect: results -> tuning file
#   4. an aarch64 cross build configured with it (the build's own reader, cmake/EmbagTuning.cmake,
#      checks it against the real versions) builds a tuned kernel, and the kernel's registry row
#      says where its schedule came from
# Usage: scripts/test-tune-bundle.sh [HOST_BUILD_DIR]   (the host build that has embag-tune)
set -euo pipefail
cd "$(dirname "$0")/.."
host_build=$(realpath "${1:-build}")
work="$host_build/tune-bundle-test"
rm -rf "$work" && mkdir -p "$work"
tune="$host_build/tools/tune/embag-tune"
cmake=.venv/bin/cmake

echo "== 1. bundle for neon"
"$tune" --isa neon --bundle "$work/bundle" --shapes tests/tuning/tiny-shapes.txt --modes sum \
  --candidates 3 --budget 5s --out "$work/tuning.json"
file "$work/bundle/embag-tune-runner" | grep -q "ARM aarch64.*statically linked" \
  || { echo "the runner is not a static aarch64 program"; exit 1; }

echo "== 2. run it under qemu-aarch64 (the board)"
(cd "$work/bundle" && qemu-aarch64 ./embag-tune-runner --seconds 4 --threads 1 \
  --out "$work/results.txt")

echo "== 3. collect"
"$tune" --collect "$work/results.txt" --out "$work/tuning.json"
grep -q '"isa": "neon"' "$work/tuning.json"

echo "== 4. an aarch64 cross build with it"
"$cmake" --preset aarch64 -B "$work/build-aarch64" \
  -Dembag-halide_generators_DIR="$host_build/cmake" -DEMBAG_TUNING_FILE="$work/tuning.json" \
  -DEMBAG_BUILD_TESTS=OFF -DEMBAG_BUILD_BENCHMARKS=OFF > "$work/configure.log" 2>&1 \
  || { cat "$work/configure.log"; exit 1; }
grep "tuned by" "$work/configure.log"
"$cmake" --build "$work/build-aarch64" --target embag_forward_sum_f32_i64_neon > "$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log"; exit 1; }
grep -q 'embag_forward_sum_f32_i64_neon.*"tuning file' "$work/build-aarch64/generated/embag_kernel_table.inc" \
  || { echo "the registry row does not say the schedule came from the tuning file"; exit 1; }
echo "tune bundle round trip: OK"
