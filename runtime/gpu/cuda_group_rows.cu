// The one step of a CUDA call that is not a Halide kernel: grouping positions by row, with CUB.
//
// Backward (and max_norm) need the valid positions grouped by row, rows ascending and each row's
// positions in input order, so that every row's gradient is one left fold in input order
// (deterministic, no atomics). That is a stable sort of (row, position) pairs by row, which CUB's
// radix sort is; a run-length encoding then gives the distinct rows and their position counts,
// and an exclusive scan of the counts the segment starts. Halide has no sort, so this file is
// compiled by nvcc; the OpenCL path (which tests the GPU schedules) groups on the host instead.
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_run_length_encode.cuh>
#include <cub/device/device_scan.cuh>

#include "cuda_group_rows.h"

namespace embag::internal::cuda {

namespace {

int as_status(cudaError_t error) { return error == cudaSuccess ? 0 : static_cast<int>(error); }

}  // namespace

size_t group_rows_scratch_bytes(int32_t n, int key_bits) {
  size_t sort_bytes = 0, encode_bytes = 0, scan_bytes = 0;
  cub::DeviceRadixSort::SortPairs(
      nullptr, sort_bytes, static_cast<const int64_t*>(nullptr), static_cast<int64_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), n, 0, key_bits);
  cub::DeviceRunLengthEncode::Encode(nullptr, encode_bytes, static_cast<const int64_t*>(nullptr),
                                     static_cast<int64_t*>(nullptr), static_cast<int32_t*>(nullptr),
                                     static_cast<int32_t*>(nullptr), n);
  cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, static_cast<const int32_t*>(nullptr),
                                static_cast<int32_t*>(nullptr), n + 1);
  size_t most = sort_bytes > encode_bytes ? sort_bytes : encode_bytes;
  return most > scan_bytes ? most : scan_bytes;
}

int sort_and_encode(const GroupRowsBuffers& b, int32_t n, int key_bits, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  size_t bytes = b.scratch_bytes;
  if (int e = as_status(cub::DeviceRadixSort::SortPairs(b.scratch, bytes, b.keys, b.sorted_keys,
                                                        b.positions, b.sorted_positions, n, 0,
                                                        key_bits, s))) {
    return e;
  }
  bytes = b.scratch_bytes;
  return as_status(cub::DeviceRunLengthEncode::Encode(b.scratch, bytes, b.sorted_keys,
                                                      b.unique_keys, b.counts, b.num_runs, n, s));
}

int segment_starts(const GroupRowsBuffers& b, int32_t num_counts, void* stream) {
  size_t bytes = b.scratch_bytes;
  return as_status(cub::DeviceScan::ExclusiveSum(b.scratch, bytes, b.counts, b.segments, num_counts,
                                                 static_cast<cudaStream_t>(stream)));
}

int zero_int32(int32_t* where, void* stream) {
  return as_status(cudaMemsetAsync(where, 0, sizeof(int32_t), static_cast<cudaStream_t>(stream)));
}

}  // namespace embag::internal::cuda
