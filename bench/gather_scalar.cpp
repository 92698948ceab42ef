// The gather baseline in plain C++: what runs where neither AVX-512 nor AVX2 is available (and
// the implementation the SIMD ones are checked against). The compiler may vectorise across
// columns; it may not reorder a column's fold, so the result is the same left fold.
#include <cmath>

#include "gather_kernels.h"

namespace embag::bench::detail {
namespace {

template <GatherMode M, typename IndexT>
bool gather_scalar(const GatherChunk<IndexT>& c) {
  const int64_t dim = c.dim;
  const int64_t last = static_cast<int64_t>(c.offsets[c.bag_end]) - 1;
  for (int64_t b = c.bag_begin; b < c.bag_end; ++b) {
    const int64_t begin = c.offsets[b];
    const int64_t end = c.offsets[b + 1];
    float* out = c.output + b * dim;
    const float init = M == GatherMode::kMax ? -INFINITY : 0.0f;
    for (int64_t d = 0; d < dim; ++d) out[d] = init;
    for (int64_t p = begin; p < end; ++p) {
      const int64_t idx = c.indices[p];
      if (!index_in_range(idx, c.rows)) return false;
      prefetch_row<0>(c, p + kPrefetchDistance, last);
      const float* row = c.table + idx * dim;
      for (int64_t d = 0; d < dim; ++d) {
        if (M == GatherMode::kMax) {
          // First strictly greater wins; a NaN replaces a number and then stays.
          if (!(row[d] <= out[d]) && !std::isnan(out[d])) out[d] = row[d];
        } else {
          out[d] += row[d];
        }
      }
    }
    const int64_t n = end - begin;
    if (n == 0) {
      for (int64_t d = 0; d < dim; ++d) out[d] = 0.0f;
    } else if (M == GatherMode::kMean) {
      const float count = static_cast<float>(n);
      for (int64_t d = 0; d < dim; ++d) out[d] /= count;
    }
  }
  return true;
}

template <typename IndexT>
bool gather_scalar_by_mode(const GatherChunk<IndexT>& c, GatherMode mode) {
  switch (mode) {
    case GatherMode::kSum:
      return gather_scalar<GatherMode::kSum>(c);
    case GatherMode::kMean:
      return gather_scalar<GatherMode::kMean>(c);
    case GatherMode::kMax:
      return gather_scalar<GatherMode::kMax>(c);
  }
  return false;
}

}  // namespace

bool gather_chunk_scalar(const GatherChunk<int64_t>& chunk, GatherMode mode) {
  return gather_scalar_by_mode(chunk, mode);
}
bool gather_chunk_scalar(const GatherChunk<int32_t>& chunk, GatherMode mode) {
  return gather_scalar_by_mode(chunk, mode);
}

}  // namespace embag::bench::detail
