// tests/fakecuda/host_group_rows.cpp: grouping positions by row on the host, in place of CUB
// (runtime/gpu/cuda_group_rows.cu), for the test programs that run embag's CUDA path on the fake
// CUDA driver.
//
// Why: CUB is linked with the static CUDA runtime, which asks the driver for private tables no
// fake can give, so under the fake the grouping step is this file instead: the same four
// functions, the same results (a stable sort by key, the run-length encoding, the exclusive
// scan), computed on the fake's device memory, which is host memory. It replaces CUB at link
// time: these definitions come before libembag.a on the link line, so the archive's CUB object
// is never pulled in. CUB itself runs only on a real GPU (tests/run_if_cuda.sh).
#include <algorithm>
#include <numeric>
#include <vector>

#include "gpu/cuda_group_rows.h"

namespace embag::internal::cuda {

size_t group_rows_scratch_bytes(int32_t n, int key_bits) {
  (void)n;
  (void)key_bits;
  return 1;  // no scratch; the caller still allocates one byte
}

int sort_and_encode(const GroupRowsBuffers& b, int32_t n, int key_bits, void* stream) {
  (void)stream;  // the fake's streams have finished all earlier work when a call returns
  (void)key_bits;
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t x, int32_t y) { return b.keys[x] < b.keys[y]; });
  int32_t runs = 0;
  for (int32_t i = 0; i < n; ++i) {
    const int64_t key = b.keys[order[i]];
    b.sorted_keys[i] = key;
    b.sorted_positions[i] = b.positions[order[i]];
    if (runs == 0 || b.unique_keys[runs - 1] != key) {
      b.unique_keys[runs] = key;
      b.counts[runs] = 0;
      ++runs;
    }
    ++b.counts[runs - 1];
  }
  *b.num_runs = runs;
  return 0;
}

int segment_starts(const GroupRowsBuffers& b, int32_t num_counts, void* stream) {
  (void)stream;
  int32_t sum = 0;
  for (int32_t i = 0; i < num_counts; ++i) {
    const int32_t count = b.counts[i];
    b.segments[i] = sum;
    sum += count;
  }
  return 0;
}

int zero_int32(int32_t* where, void* stream) {
  (void)stream;
  *where = 0;
  return 0;
}

}  // namespace embag::internal::cuda
