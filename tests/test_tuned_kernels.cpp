// Kernels built from a tuning file (embag-tune, cmake -DEMBAG_TUNING_FILE): the registry runs
// the tuned forward kernel of each table-size class for a table of that class (checked by
// last_variant()), and the tuned backward kernels (row fold, dense scatter) run and give the
// default kernels' bits (the reference's, which the default kernels match bit for bit: see
// test_backward_differential.cpp).
//
// Every test here needs a tuned build (`make test TUNING=tuning.json` with a file from warm and
// cold shapes, docs/tuning.md); in an untuned build they are skipped and say so.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "embag/embag.h"
#include "reference/reference.h"
#include "sparse_table_support.h"

namespace {

using embag::DType;

// The selected ISA's variants built from a tuning file's entries for `pipeline` (those whose
// schedule it changed, "tuning file", and those where it kept the default, "tuning file
// (default kept)": both are the file's kernels, with the file's D range and class).
std::vector<embag::VariantInfo> tuned_variants(const std::string& pipeline) {
  std::vector<embag::VariantInfo> out;
  embag::Isa isa{};
  if (!embag::selected_isa(&isa).ok()) return out;
  for (const embag::VariantInfo& v : embag::compiled_variants()) {
    if (v.isa == isa && v.pipeline == pipeline && v.schedule_source.rfind("tuning file", 0) == 0)
      out.push_back(v);
  }
  return out;
}

// A forward call of `mode` (sum, mean, or max without argmax: max_values) on a float32 table of
// rows x dim (sparse_table_support.h). Returns last_variant().
std::string forward_on(const std::string& mode, int64_t rows, int64_t dim) {
  const embag::Mode m = mode == "sum"    ? embag::Mode::kSum
                        : mode == "mean" ? embag::Mode::kMean
                                         : embag::Mode::kMax;
  std::string variant;
  embag::testing_support::forward_on_sparse_table(m, rows, dim, &variant);
  return variant;
}

// A tuning file from warm and cold shapes gives each class its own tuned kernels: a table inside
// the cache-resident limit runs the tuned cache-resident kernel of its D, one past it the tuned
// memory-resident kernel.
TEST(TunedKernels, EachTableClassRunsItsTunedKernel) {
  const int64_t limit = embag::table_size_rule().cache_resident_max_bytes;
  int checked_cache = 0, checked_memory = 0;
  for (const embag::VariantInfo& v : tuned_variants("forward")) {
    if (v.weight_dtype != DType::kFloat32 || v.index_dtype != DType::kInt64) continue;
    if (v.mode != "sum" && v.mode != "mean" && v.mode != "max_values") continue;
    if (v.table_class != "cache-resident" && v.table_class != "memory-resident") continue;
    // A D the variant serves, small enough for a table inside the limit to hold a row.
    const int64_t dim =
        v.dim_max == 0 ? 64 : std::min<int64_t>(std::max<int64_t>(v.dim_min, 16), v.dim_max);
    const int64_t row_bytes = dim * 4;
    const bool warm = v.table_class == "cache-resident";
    if (warm && row_bytes > limit) continue;
    const int64_t rows = warm ? std::max<int64_t>(limit / row_bytes, 1) : limit / row_bytes + 1;
    const std::string ran = forward_on(v.mode == "max_values" ? "max" : v.mode, rows, dim);
    EXPECT_EQ(ran, v.name) << v.mode << " on a " << rows << " x " << dim << " table ("
                           << rows * row_bytes << " B, limit " << limit << " B): the tuned "
                           << v.table_class << " kernel [" << v.schedule << "] should run";
    std::cout << v.table_class << ": a " << rows * row_bytes << " B table (D " << dim << ") ran "
              << ran << " [" << v.schedule << "]\n";
    (warm ? checked_cache : checked_memory) += 1;
  }
  if (checked_cache == 0 || checked_memory == 0)
    GTEST_SKIP() << "this build has no tuned float32/int64 sum, mean or max_values kernels of "
                    "both table classes (build with a tuning file from warm and cold shapes: "
                    "make test TUNING=...); checked "
                 << checked_cache << " cache-resident and " << checked_memory << " memory-resident";
}

// The tuned backward kernels run (last_variant()) and give the reference's bits, which are the
// default kernels' bits: a schedule may change the speed, never a bit.
TEST(TunedKernels, TunedBackwardKernelsRunAndMatchTheDefaultBits) {
  std::vector<embag::VariantInfo> tuned = tuned_variants("backward");
  for (const embag::VariantInfo& v : tuned_variants("dense_scatter")) tuned.push_back(v);
  int checked = 0;
  for (const embag::VariantInfo& v : tuned) {
    if (v.weight_dtype != DType::kFloat32) continue;
    if (v.index_dtype && v.index_dtype != DType::kInt64) continue;
    const bool dense = v.pipeline == "dense_scatter";
    // A float32 max gradient is dense (max has no sparse gradient), which the dense scatter
    // computes: the row fold's max runs for float16 / bfloat16 tables only.
    if (!dense && v.mode == "max") continue;
    // A batch with repeated rows, an empty bag and a vector tail (D = 37).
    const int64_t V = 50, D = 37;
    std::vector<int64_t> idx, off;
    for (int64_t b = 0; b < 9; ++b) {
      off.push_back(static_cast<int64_t>(idx.size()));
      if (b == 4) continue;
      for (int64_t k = 0; k < 5; ++k) idx.push_back((b * 7 + k * 13) % V);
    }
    const int64_t N = static_cast<int64_t>(idx.size()), B = static_cast<int64_t>(off.size());
    std::vector<float> table(static_cast<size_t>(V * D)), grad(static_cast<size_t>(B * D)),
        psw(static_cast<size_t>(N));
    for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<float>(i % 29) * 0.125f - 1;
    for (size_t i = 0; i < grad.size(); ++i) grad[i] = static_cast<float>(i % 31) * 0.3f - 2;
    for (size_t i = 0; i < psw.size(); ++i) psw[i] = static_cast<float>(i % 5) * 0.7f - 1;
    embag::Options options;
    options.mode = v.mode == "mean"  ? embag::Mode::kMean
                   : v.mode == "max" ? embag::Mode::kMax
                                     : embag::Mode::kSum;
    options.sparse = !dense;
    embag::BackwardInputs in;
    in.weight = embag::make_view_2d(table.data(), DType::kFloat32, V, D);
    in.input = embag::make_view_1d(idx.data(), DType::kInt64, N);
    const embag::TensorView offsets = embag::make_view_1d(off.data(), DType::kInt64, B);
    in.offsets = &offsets;
    const embag::TensorView psw_view = embag::make_view_1d(psw.data(), DType::kFloat32, N);
    if (v.mode == "wsum") in.per_sample_weights = &psw_view;
    in.grad_output = embag::make_view_2d(grad.data(), DType::kFloat32, B, D);
    // max's argmax from a forward call.
    std::vector<int64_t> argmax(static_cast<size_t>(B * D), -1);
    std::vector<float> pooled(static_cast<size_t>(B * D));
    const embag::TensorView argmax_view = embag::make_view_2d(argmax.data(), DType::kInt64, B, D);
    if (v.mode == "max") {
      embag::ForwardInputs fin;
      fin.weight = in.weight;
      fin.input = in.input;
      fin.offsets = &offsets;
      embag::ForwardOutputs fout;
      fout.output = embag::make_view_2d(pooled.data(), DType::kFloat32, B, D);
      fout.argmax = &argmax_view;
      ASSERT_TRUE(embag::forward(fin, fout, options).ok());
      in.argmax = &argmax_view;
    }
    // The tuned kernel's result and the reference's, dense or sparse.
    std::vector<float> got, want;
    std::vector<int64_t> got_rows, want_rows;
    std::string ran;
    for (const bool reference : {false, true}) {
      std::vector<float>& values = reference ? want : got;
      std::vector<int64_t>& rows = reference ? want_rows : got_rows;
      embag::BackwardOutputs outs;
      embag::TensorView grad_weight, row_view, value_view;
      int64_t U = V;
      if (!dense) {
        ASSERT_TRUE(embag::sparse_gradient_rows(in, options, &U).ok());
        rows.assign(static_cast<size_t>(U), -7);
        row_view = embag::make_view_1d(rows.data(), DType::kInt64, U);
        outs.grad_weight_rows = &row_view;
      }
      values.assign(static_cast<size_t>(U * D), -3.0f);
      if (dense) {
        grad_weight = embag::make_view_2d(values.data(), DType::kFloat32, V, D);
        outs.grad_weight = &grad_weight;
      } else {
        value_view = embag::make_view_2d(values.data(), DType::kFloat32, U, D);
        outs.grad_weight_values = &value_view;
      }
      const embag::Status status =
          reference ? embag::ref::backward(in, outs, options) : embag::backward(in, outs, options);
      ASSERT_TRUE(status.ok()) << status.message();
      if (!reference) ran = embag::last_variant();
    }
    EXPECT_EQ(ran, v.name) << "the tuned " << v.pipeline << " " << v.mode << " kernel ["
                           << v.schedule << "] should run";
    EXPECT_EQ(got_rows, want_rows);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
        << v.name << " [" << v.schedule << "] differs from the default bits";
    std::cout << v.name << " [" << v.schedule << "]: ran, bitwise equal\n";
    ++checked;
  }
  if (checked == 0)
    GTEST_SKIP() << "this build has no tuned float32 backward kernels (build with a tuning file "
                    "from embag-tune, which tunes backward_rows and dense_scatter by default: "
                    "make test TUNING=...)";
}

}  // namespace
