// Grouping positions by row on a CUDA device (CUB), called by the GPU runtime for CUDA calls.
// Plain C++ interface: the rest of the runtime is not compiled by nvcc.
#pragma once

#include <cstddef>
#include <cstdint>

namespace embag::internal::cuda {

// Device pointers, all on the call's context.
struct GroupRowsBuffers {
  const int64_t* keys;        // n: row per position (V for excluded positions)
  const int32_t* positions;   // n: 0, 1, ..., n-1
  int64_t* sorted_keys;       // n
  int32_t* sorted_positions;  // n: positions grouped by row, input order within a row
  int64_t* unique_keys;       // n: the distinct keys, ascending
  int32_t* counts;            // n + 1: positions per distinct key
  int32_t* segments;          // n + 1: exclusive sum of counts
  int32_t* num_runs;          // 1: number of distinct keys
  void* scratch;
  size_t scratch_bytes;
};

// Scratch CUB needs for n positions whose keys have key_bits significant bits.
size_t group_rows_scratch_bytes(int32_t n, int key_bits);

// Stable sort of (keys, positions) by key, then the distinct keys and their counts. Asynchronous
// on `stream` (a cudaStream_t; the caller's context must be current). 0 or a cudaError_t.
int sort_and_encode(const GroupRowsBuffers& buffers, int32_t n, int key_bits, void* stream);

// segments[0 .. num_counts) = exclusive sum of counts[0 .. num_counts).
int segment_starts(const GroupRowsBuffers& buffers, int32_t num_counts, void* stream);

// *where = 0, on the stream.
int zero_int32(int32_t* where, void* stream);

}  // namespace embag::internal::cuda
