// The gather baseline's AVX2 implementation: 8 floats a vector, up to 8 accumulators a block
// (64 columns). Longer rows fold each bag once per block; the first pass prefetched the whole
// row, so later passes read it from L1/L2 (FBGEMM's AVX2 kernels block the row the same way).
#include "gather_kernels.h"

#if EMBAG_BENCH_X86

#include <immintrin.h>

#include <cmath>

#define EMBAG_AVX2 __attribute__((target("avx2,fma")))

namespace embag::bench::detail {
namespace {

constexpr int kLanes = 8;
// 8 accumulators leave 8 ymm registers for loads, max's compares and the blend.
constexpr int kMaxBlockVecs = 8;
constexpr int kGenericBlockVecs = 8;

// embag's max rule, as in the AVX-512 file: take x where !(x <= acc) and acc is not NaN.
EMBAG_AVX2 inline __m256 max_step(__m256 acc, __m256 x) {
  const __m256 acc_ordered = _mm256_cmp_ps(acc, acc, _CMP_ORD_Q);
  const __m256 take = _mm256_and_ps(_mm256_cmp_ps(x, acc, _CMP_NLE_UQ), acc_ordered);
  return _mm256_blendv_ps(acc, x, take);
}

// Same contract as the AVX-512 fold_block; masks are per-lane sign bits for maskload/store.
template <int NV, bool kMasked, bool kFirst, int kDim, GatherMode M, typename IndexT>
EMBAG_AVX2 inline bool fold_block(const GatherChunk<IndexT>& c, int64_t begin, int64_t end,
                                  int64_t last, int64_t col, const __m256i* masks, float* out) {
  const int64_t dim = kDim > 0 ? kDim : c.dim;
  __m256 acc[NV];
  const __m256 init = M == GatherMode::kMax ? _mm256_set1_ps(-INFINITY) : _mm256_setzero_ps();
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) acc[v] = init;

  for (int64_t p = begin; p < end; ++p) {
    const int64_t idx = c.indices[p];
    if (kFirst) {
      if (!index_in_range(idx, c.rows)) return false;
      prefetch_row<kDim>(c, p + kPrefetchDistance, last);
    }
    const float* row = c.table + idx * dim + col;
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const __m256 x = kMasked ? _mm256_maskload_ps(row + v * kLanes, masks[v])
                               : _mm256_loadu_ps(row + v * kLanes);
      acc[v] = M == GatherMode::kMax ? max_step(acc[v], x) : _mm256_add_ps(acc[v], x);
    }
  }

  const int64_t n = end - begin;
  if (n == 0) {
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] = _mm256_setzero_ps();
  } else if (M == GatherMode::kMean) {
    const __m256 count = _mm256_set1_ps(static_cast<float>(n));
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] = _mm256_div_ps(acc[v], count);
  }
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) {
    if (kMasked) {
      _mm256_maskstore_ps(out + col + v * kLanes, masks[v], acc[v]);
    } else {
      _mm256_storeu_ps(out + col + v * kLanes, acc[v]);
    }
  }
  return true;
}

template <int kDim, GatherMode M, typename IndexT>
EMBAG_AVX2 bool gather_fixed(const GatherChunk<IndexT>& c) {
  static_assert(kDim % kLanes == 0, "fixed D must be whole vectors");
  constexpr int kVecs = kDim / kLanes;
  constexpr int kBlockVecs = kVecs < kMaxBlockVecs ? kVecs : kMaxBlockVecs;
  static_assert(kVecs % kBlockVecs == 0, "fixed D must be whole blocks");
  constexpr int kBlocks = kVecs / kBlockVecs;
  const int64_t last = static_cast<int64_t>(c.offsets[c.bag_end]) - 1;
  for (int64_t b = c.bag_begin; b < c.bag_end; ++b) {
    const int64_t begin = c.offsets[b];
    const int64_t end = c.offsets[b + 1];
    float* out = c.output + b * kDim;
    if (!fold_block<kBlockVecs, false, true, kDim, M>(c, begin, end, last, 0, nullptr, out)) {
      return false;
    }
    for (int blk = 1; blk < kBlocks; ++blk) {
      fold_block<kBlockVecs, false, false, kDim, M>(c, begin, end, last, blk * kBlockVecs * kLanes,
                                                    nullptr, out);
    }
  }
  return true;
}

template <GatherMode M, typename IndexT>
EMBAG_AVX2 bool gather_generic(const GatherChunk<IndexT>& c) {
  constexpr int64_t kBlockCols = kGenericBlockVecs * kLanes;
  const int64_t full_blocks = c.dim / kBlockCols;
  const int64_t rest = c.dim % kBlockCols;
  // Lane i of vector v is on (sign bit set) when column v * 8 + i < rest.
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i masks[kGenericBlockVecs];
  for (int v = 0; v < kGenericBlockVecs; ++v) {
    const int64_t lanes = rest - v * kLanes;
    const int clamped = lanes < 0 ? 0 : lanes > kLanes ? kLanes : static_cast<int>(lanes);
    masks[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(clamped), iota);
  }
  const int64_t last = static_cast<int64_t>(c.offsets[c.bag_end]) - 1;
  for (int64_t b = c.bag_begin; b < c.bag_end; ++b) {
    const int64_t begin = c.offsets[b];
    const int64_t end = c.offsets[b + 1];
    float* out = c.output + b * c.dim;
    for (int64_t blk = 0; blk < full_blocks; ++blk) {
      const bool ok = blk == 0 ? fold_block<kGenericBlockVecs, false, true, 0, M>(
                                     c, begin, end, last, 0, masks, out)
                               : fold_block<kGenericBlockVecs, false, false, 0, M>(
                                     c, begin, end, last, blk * kBlockCols, masks, out);
      if (!ok) return false;
    }
    if (full_blocks == 0) {
      if (!fold_block<kGenericBlockVecs, true, true, 0, M>(c, begin, end, last, 0, masks, out)) {
        return false;
      }
    } else if (rest > 0) {
      fold_block<kGenericBlockVecs, true, false, 0, M>(c, begin, end, last,
                                                       full_blocks * kBlockCols, masks, out);
    }
  }
  return true;
}

template <GatherMode M, typename IndexT>
EMBAG_AVX2 bool gather_by_dim(const GatherChunk<IndexT>& c) {
  switch (c.dim) {
    case 32:
      return gather_fixed<32, M>(c);
    case 64:
      return gather_fixed<64, M>(c);
    case 128:
      return gather_fixed<128, M>(c);
    case 256:
      return gather_fixed<256, M>(c);
    default:
      return gather_generic<M>(c);
  }
}

template <typename IndexT>
EMBAG_AVX2 bool gather_by_mode(const GatherChunk<IndexT>& c, GatherMode mode) {
  switch (mode) {
    case GatherMode::kSum:
      return gather_by_dim<GatherMode::kSum>(c);
    case GatherMode::kMean:
      return gather_by_dim<GatherMode::kMean>(c);
    case GatherMode::kMax:
      return gather_by_dim<GatherMode::kMax>(c);
  }
  return false;
}

}  // namespace

bool gather_chunk_avx2(const GatherChunk<int64_t>& chunk, GatherMode mode) {
  return gather_by_mode(chunk, mode);
}
bool gather_chunk_avx2(const GatherChunk<int32_t>& chunk, GatherMode mode) {
  return gather_by_mode(chunk, mode);
}

}  // namespace embag::bench::detail

#endif  // EMBAG_BENCH_X86
