#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: build (or reuse a carried build), run the CUDA tests (the
# differential and golden suites on cuda:0, bit for bit against the reference) and the GPU
# benchmark, and print one results table to paste into docs/gpu.md.
#
#   scripts/gpu-check.sh [BUILD_DIR]      (default: build; built with `make build` if absent)
#
# A build made elsewhere can be carried over: it needs the same CUDA-capable configuration
# (EMBAG_GPU_ISAS with cuda_sm86/cuda_sm80), which the default build on a machine with nvcc has.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
if [ ! -x "$build/tools/embag" ]; then
  make build BUILD_DIR="$build" || exit 1
fi
echo "== machine"
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader 2>&1 || true
"$build/tools/embag" info | sed -n '1,8p'
echo
echo "== CUDA tests (ctest -L cuda)"
ctest_bin=$(command -v ctest || echo .venv/bin/ctest)
"$ctest_bin" --test-dir "$build" -L cuda --output-on-failure 2>&1 | tail -15
tests_status=${PIPESTATUS[0]}
echo
echo "== GPU benchmark (bench/bench_gpu)"
if [ -x "$build/bench/bench_gpu" ]; then
  "$build/bench/bench_gpu"
else
  echo "bench_gpu was not built (Google Benchmark or CUDA missing from the build)"
fi
exit "$tests_status"
