// The gather baseline's AVX-512 implementation (F, BW, DQ, VL): 16 floats a vector, up to 16
// accumulators a block (256 columns), so every D up to 256 folds each bag in one pass with its
// accumulators in zmm registers.
#include "gather_kernels.h"

#if EMBAG_BENCH_X86

#include <immintrin.h>

#include <cmath>

#define EMBAG_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))

namespace embag::bench::detail {
namespace {

constexpr int kLanes = 16;
// 16 accumulators leave 16 zmm registers for loads and max's compares: no spills.
constexpr int kMaxBlockVecs = 16;
// Column block of the generic (runtime D) loop.
constexpr int kGenericBlockVecs = 8;

// embag's max rule in one step: take x where x > acc, or where x is NaN and acc is not yet.
// !(x <= acc) is true for x > acc and whenever either is NaN; masking with "acc is ordered"
// keeps a NaN that is already in acc from being replaced.
EMBAG_AVX512 inline __m512 max_step(__m512 acc, __m512 x) {
  const __mmask16 acc_ordered = _mm512_cmp_ps_mask(acc, acc, _CMP_ORD_Q);
  const __mmask16 take = _mm512_mask_cmp_ps_mask(acc_ordered, x, acc, _CMP_NLE_UQ);
  return _mm512_mask_mov_ps(acc, take, x);
}

// Folds positions [begin, end) of one bag into the columns [col, col + NV * 16) of `out`.
// kMasked: lanes past D are masked off (generic loop's last block); masked loads do not touch
// memory. kFirst: the bag's first column block, which checks the indices and prefetches whole
// rows; later blocks of the same bag find those rows in L1/L2.
template <int NV, bool kMasked, bool kFirst, int kDim, GatherMode M, typename IndexT>
EMBAG_AVX512 inline bool fold_block(const GatherChunk<IndexT>& c, int64_t begin, int64_t end,
                                    int64_t last, int64_t col, const __mmask16* masks, float* out) {
  const int64_t dim = kDim > 0 ? kDim : c.dim;
  __m512 acc[NV];
  const __m512 init = M == GatherMode::kMax ? _mm512_set1_ps(-INFINITY) : _mm512_setzero_ps();
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
      const __m512 x = kMasked ? _mm512_maskz_loadu_ps(masks[v], row + v * kLanes)
                               : _mm512_loadu_ps(row + v * kLanes);
      acc[v] = M == GatherMode::kMax ? max_step(acc[v], x) : _mm512_add_ps(acc[v], x);
    }
  }

  const int64_t n = end - begin;
  if (n == 0) {
    // An empty bag is 0 in every mode (max's -inf start must not leak out).
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] = _mm512_setzero_ps();
  } else if (M == GatherMode::kMean) {
    const __m512 count = _mm512_set1_ps(static_cast<float>(n));
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] = _mm512_div_ps(acc[v], count);
  }
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) {
    if (kMasked) {
      _mm512_mask_storeu_ps(out + col + v * kLanes, masks[v], acc[v]);
    } else {
      _mm512_storeu_ps(out + col + v * kLanes, acc[v]);
    }
  }
  return true;
}

// Compile-time D (a multiple of 16): the whole row in kBlocks passes of kBlockVecs registers.
template <int kDim, GatherMode M, typename IndexT>
EMBAG_AVX512 bool gather_fixed(const GatherChunk<IndexT>& c) {
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

// Runtime D: full blocks of kGenericBlockVecs vectors, then one masked block for the rest.
template <GatherMode M, typename IndexT>
EMBAG_AVX512 bool gather_generic(const GatherChunk<IndexT>& c) {
  constexpr int64_t kBlockCols = kGenericBlockVecs * kLanes;
  const int64_t full_blocks = c.dim / kBlockCols;
  const int64_t rest = c.dim % kBlockCols;
  __mmask16 masks[kGenericBlockVecs];
  for (int v = 0; v < kGenericBlockVecs; ++v) {
    const int64_t lanes = rest - v * kLanes;
    masks[v] = lanes >= kLanes ? __mmask16(0xFFFF)
               : lanes <= 0    ? __mmask16(0)
                               : __mmask16((1u << lanes) - 1);
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
    // With no full block the masked block is the first one and must check and prefetch.
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
EMBAG_AVX512 bool gather_by_dim(const GatherChunk<IndexT>& c) {
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
EMBAG_AVX512 bool gather_by_mode(const GatherChunk<IndexT>& c, GatherMode mode) {
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

bool gather_chunk_avx512(const GatherChunk<int64_t>& chunk, GatherMode mode) {
  return gather_by_mode(chunk, mode);
}
bool gather_chunk_avx512(const GatherChunk<int32_t>& chunk, GatherMode mode) {
  return gather_by_mode(chunk, mode);
}

}  // namespace embag::bench::detail

#endif  // EMBAG_BENCH_X86
