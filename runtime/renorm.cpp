// Renormalisation of referenced rows: distinct-row collection in the runtime, the norm and scale
// in the Halide renorm kernel, and the copy back of changed rows.
#include "renorm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "halide_buffer.h"
#include "kernel_call.h"

namespace embag::internal {
namespace {

// Distinct rows in ascending order. A bitmap over the table is linear in N + V/64 and wins
// while the table is not much larger than the batch; for huge tables sorting the batch is
// cheaper than touching V/8 bytes.
std::vector<int64_t> distinct_rows(const BagLayout& layout, const ForwardPlan& plan) {
  const int64_t n = plan.positions_end;
  std::vector<int64_t> rows;
  rows.reserve(static_cast<size_t>(n));
  const TensorView indices = make_view_1d(const_cast<void*>(layout.indices), layout.index_dtype, n);
  if (plan.num_rows <= 64 * std::max<int64_t>(n, 1024)) {
    std::vector<uint64_t> seen(static_cast<size_t>((plan.num_rows + 63) / 64), 0);
    for (int64_t p = 0; p < n; ++p) {
      const int64_t r = load_index(indices, p);
      seen[r >> 6] |= uint64_t{1} << (r & 63);
    }
    for (size_t word = 0; word < seen.size(); ++word) {
      for (uint64_t bits = seen[word]; bits != 0; bits &= bits - 1) {
        rows.push_back(static_cast<int64_t>(word * 64 + __builtin_ctzll(bits)));
      }
    }
  } else {
    for (int64_t p = 0; p < n; ++p) rows.push_back(load_index(indices, p));
    std::sort(rows.begin(), rows.end());
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  }
  return rows;
}

}  // namespace

kernels::NormKind norm_kind_for(double p) {
  if (p == 2.0) return kernels::NormKind::kL2;
  if (p == 1.0) return kernels::NormKind::kL1;
  if (p == 0.0) return kernels::NormKind::kNonZeros;
  if (std::isinf(p)) return p > 0 ? kernels::NormKind::kMaxAbs : kernels::NormKind::kMinAbs;
  return kernels::NormKind::kGeneralP;
}

Status renormalize_referenced_rows(CallContext& call, const TensorView& weight,
                                   const BagLayout& layout, const ForwardPlan& plan,
                                   double max_norm, double norm_type, const KernelEntry& kernel) {
  const std::vector<int64_t> rows = distinct_rows(layout, plan);
  const int64_t K = static_cast<int64_t>(rows.size());
  const int64_t D = plan.dim;
  if (K == 0 || D == 0) return Status::Ok();

  const size_t element = dtype_size(weight.dtype);
  std::vector<unsigned char> renormed(static_cast<size_t>(K * D) * element);
  std::vector<uint8_t> changed(static_cast<size_t>(K));

  HalideBuffer rows_buffer(rows.data(), DType::kInt64, K);
  HalideBuffer weight_buffer(weight.data, weight.dtype, plan.num_rows, D, weight.strides[0]);
  HalideBuffer renormed_buffer(renormed.data(), weight.dtype, K, D, D);
  halide_buffer_t changed_buffer{};
  halide_dimension_t changed_dim(0, static_cast<int32_t>(K), 1);
  changed_buffer.host = changed.data();
  changed_buffer.type = halide_type_t(halide_type_uint, 8);
  changed_buffer.dimensions = 1;
  changed_buffer.dim = &changed_dim;

  const int32_t norm_kind = static_cast<int32_t>(norm_kind_for(norm_type));
  KernelArgs args;
  args.buffer("weight", weight_buffer.get())
      .buffer("rows", rows_buffer.get())
      .scalar("max_norm", &max_norm)
      .scalar("norm_type", &norm_type)
      .scalar("norm_kind", &norm_kind)
      .scalar("norm_epsilon", &kernels::kMaxNormEpsilon)
      .buffer("renormed", renormed_buffer.get())
      .buffer("changed", &changed_buffer);
  if (Status s = run_kernel(call, kernel, args); !s.ok()) return s;

  // Only now, with every row computed, is the table touched: rows whose norm was within
  // max_norm are never written.
  auto* table = static_cast<unsigned char*>(weight.data);
  const size_t row_bytes = static_cast<size_t>(D) * element;
  for (int64_t k = 0; k < K; ++k) {
    if (!changed[k]) continue;
    std::memcpy(table + static_cast<size_t>(rows[k] * weight.strides[0]) * element,
                renormed.data() + static_cast<size_t>(k) * row_bytes, row_bytes);
  }
  return Status::Ok();
}

}  // namespace embag::internal
