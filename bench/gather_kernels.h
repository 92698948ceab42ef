// Internal to the gather baseline: one thread's share of a call, the per-ISA kernel entry
// points, and the pieces every ISA shares (index check, row prefetch).
//
// Each ISA lives in its own file (gather_avx512.cpp, gather_avx2.cpp, gather_scalar.cpp) with
// its target attribute on every function, so one build runs on any x86-64 CPU and
// gather_baseline.cpp picks the kernel from what the CPU reports.
#pragma once

#include <cstdint>

#include "gather_baseline.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define EMBAG_BENCH_X86 1
#else
#define EMBAG_BENCH_X86 0
#endif

namespace embag::bench::detail {

// Bags [bag_begin, bag_end) of one call: what one thread of the pool computes.
template <typename IndexT>
struct GatherChunk {
  const float* table;
  int64_t rows;
  int64_t dim;
  const IndexT* indices;
  const IndexT* offsets;
  int64_t bag_begin;
  int64_t bag_end;
  float* output;
};

// FBGEMM's default: far enough ahead to cover DRAM latency at ~40-row bags, near enough that
// the prefetched lines are still in L1 when the loop reaches them.
constexpr int64_t kPrefetchDistance = 16;
constexpr int64_t kCacheLine = 64;

// Unsigned compare: a negative index becomes huge and fails the same test.
inline bool index_in_range(int64_t idx, int64_t rows) {
  return static_cast<uint64_t>(idx) < static_cast<uint64_t>(rows);
}

// Prefetches into L1 every cache line of the row that position `p` (clamped to the chunk's
// last position, so no thread pulls another thread's rows) refers to. kDim > 0 makes the line
// count a constant the compiler unrolls. A bad index is not prefetched: forming its address
// would be undefined, and the loop reports it when it gets there.
// always_inline is load-bearing: GCC 12's pure-const pass counts a prefetch as having no
// effect, marks an out-of-line prefetch_row "pure", and then deletes every call to it (seen at
// -O2 and -O3: the kernels came out with no prefetch instruction at all).
template <int kDim, typename IndexT>
__attribute__((always_inline)) inline void prefetch_row(const GatherChunk<IndexT>& c, int64_t p,
                                                        int64_t last) {
  const int64_t idx = c.indices[p < last ? p : last];
  if (!index_in_range(idx, c.rows)) return;
  const int64_t dim = kDim > 0 ? kDim : c.dim;
  const int64_t bytes = dim * static_cast<int64_t>(sizeof(float));
  const char* row = reinterpret_cast<const char*>(c.table + idx * dim);
  const int64_t lines = (bytes + kCacheLine - 1) / kCacheLine;
  for (int64_t k = 0; k < lines; ++k) {
#if EMBAG_BENCH_X86
    _mm_prefetch(row + k * kCacheLine, _MM_HINT_T0);
#else
    __builtin_prefetch(row + k * kCacheLine, 0, 3);
#endif
  }
  // A row that does not start on a line boundary straddles one line more than `lines`.
  if ((reinterpret_cast<uintptr_t>(row) & (kCacheLine - 1)) != 0 && bytes > 0) {
#if EMBAG_BENCH_X86
    _mm_prefetch(row + bytes - 1, _MM_HINT_T0);
#else
    __builtin_prefetch(row + bytes - 1, 0, 3);
#endif
  }
}

// Kernel entry points. Each returns false when an index is out of range. The AVX ones exist
// only in x86 builds; the dispatcher calls them only when the CPU has the ISA.
bool gather_chunk_scalar(const GatherChunk<int64_t>& chunk, GatherMode mode);
bool gather_chunk_scalar(const GatherChunk<int32_t>& chunk, GatherMode mode);
#if EMBAG_BENCH_X86
bool gather_chunk_avx512(const GatherChunk<int64_t>& chunk, GatherMode mode);
bool gather_chunk_avx512(const GatherChunk<int32_t>& chunk, GatherMode mode);
bool gather_chunk_avx2(const GatherChunk<int64_t>& chunk, GatherMode mode);
bool gather_chunk_avx2(const GatherChunk<int32_t>& chunk, GatherMode mode);
#endif

// Whether an ISA's kernels have a compile-time-D instance for `dim` (only for variant names).
bool gather_has_fixed_dim(GatherIsa isa, int64_t dim);

}  // namespace embag::bench::detail
