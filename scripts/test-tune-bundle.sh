#!/usr/bin/env bash
# The ARM tuning round trip, end to end, for CI (make test-tune-bundle): what a user does with a
# board, with qemu-aarch64 standing in for the board. Checks plumbing only; QEMU timings mean
# nothing, so whichever schedule "wins" is fine as long as it checked out bit for bit.
#   1. embag-tune --isa neon --bundle: cross-compile 3 candidates per kernel (forward sum, and its
#      backward row fold and dense scatter) and the static runner
#   2. run the runner under qemu-aarch64 (as on the board), a few seconds; the board's limit
#      between cache-resident and memory-resident tables is set with EMBAG_CACHE_RESIDENT_BYTES
#      so that one tiny shape is warm and the other cold, and the runner must report it
#   3. embag-tune --collect: results -> tuning file
#   4. an aarch64 cross build configured with it (the build's own reader, cmake/EmbagTuning.cmake,
#      checks it against the real versions) builds the tuned kernels of both table classes and
#      the backward row fold, and their registry rows say where their schedules came from
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
(cd "$work/bundle" && EMBAG_CACHE_RESIDENT_BYTES=65536 qemu-aarch64 ./embag-tune-runner \
  --seconds 6 --threads 1 --out "$work/results.txt")
grep -q "$(printf 'table_limit\t65536\t')" "$work/results.txt" \
  || { echo "the runner did not report the board's cache-resident limit"; exit 1; }

echo "== 3. collect"
"$tune" --collect "$work/results.txt" --out "$work/tuning.json"
grep -q '"isa": "neon"' "$work/tuning.json"
for class in cache-resident memory-resident; do
  grep -q "\"table_class\": \"$class\"" "$work/tuning.json" \
    || { echo "no $class entry in the tuning file"; exit 1; }
done
grep -q '"pipeline": "backward_rows"' "$work/tuning.json" || { echo "no backward entry"; exit 1; }

echo "== 4. an aarch64 cross build with it"
"$cmake" --preset aarch64 -B "$work/build-aarch64" \
  -Dembag-halide_generators_DIR="$host_build/cmake" -DEMBAG_TUNING_FILE="$work/tuning.json" \
  -DEMBAG_BUILD_TESTS=OFF -DEMBAG_BUILD_BENCHMARKS=OFF > "$work/configure.log" 2>&1 \
  || { cat "$work/configure.log"; exit 1; }
grep "tuned by" "$work/configure.log"
kernels="embag_forward_sum_f32_i64_neon embag_forward_sum_f32_i64_cache_neon embag_backward_rows_sum_f32_neon"
"$cmake" --build "$work/build-aarch64" --target $kernels > "$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log"; exit 1; }
for kernel in $kernels; do
  grep -q "\"$kernel\".*\"tuning file" "$work/build-aarch64/generated/embag_kernel_table.inc" \
    || { echo "the registry row of $kernel does not say its schedule came from the tuning file"; exit 1; }
done
grep -q '"embag_forward_sum_f32_i64_cache_neon".*TableClass::kCacheResident' \
  "$work/build-aarch64/generated/embag_kernel_table.inc" \
  || { echo "the tuned cache-resident kernel's row is not kCacheResident"; exit 1; }
echo "tune bundle round trip: OK"
