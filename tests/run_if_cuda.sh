#!/usr/bin/env bash
# Runs a test program on the CUDA GPU (EMBAG_TEST_ISAS = the CUDA ISA cuda:0 runs), or, where
# there is none, says why and exits 77, which CTest reports as "skipped" (never as passed).
# Usage: run_if_cuda.sh <embag CLI> <test program> [gtest arguments...]
set -u
cli=$1; shift
line=$("$cli" info 2>/dev/null | grep '^CUDA:')
isa=$(printf '%s\n' "$line" | grep -o 'runs cuda_sm[0-9]*' | head -n 1 | cut -d' ' -f2)
if [ -z "$isa" ]; then
  echo "skipped: no usable CUDA device here (${line:-embag info printed no CUDA line})"
  exit 77
fi
echo "running on cuda:0 with EMBAG_TEST_ISAS=$isa ($line)"
EMBAG_TEST_ISAS=$isa exec "$@"
