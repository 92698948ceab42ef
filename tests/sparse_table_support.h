// A forward call on a float32 table whose memory is allocated but only the rows the call reads
// are written: the table-class tests size tables on both sides of the cache-resident limit (a
// table past it can be larger than a test wants to fill) and read which variant ran.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "embag/embag.h"

namespace embag::testing_support {

// Pools rows {0, rows-1, rows/2} and {0, rows-1} of a rows x dim table with `mode` (max runs
// without argmax). Returns the (2, dim) output; the variant that ran goes to `variant`.
inline std::vector<float> forward_on_sparse_table(Mode mode, int64_t rows, int64_t dim,
                                                  std::string* variant) {
  std::unique_ptr<float[]> table(new float[static_cast<size_t>(rows * dim)]);
  const std::vector<int64_t> idx = {0, rows - 1, rows / 2, 0, rows - 1}, off = {0, 2};
  for (int64_t r : idx) {
    for (int64_t d = 0; d < dim; ++d) table[r * dim + d] = static_cast<float>(r % 97 + d) * 0.25f;
  }
  std::vector<float> out(static_cast<size_t>(2 * dim), -1.0f);
  ForwardInputs in;
  in.weight = make_view_2d(table.get(), DType::kFloat32, rows, dim);
  in.input = make_view_1d(const_cast<int64_t*>(idx.data()), DType::kInt64, 5);
  const TensorView offsets = make_view_1d(const_cast<int64_t*>(off.data()), DType::kInt64, 2);
  in.offsets = &offsets;
  ForwardOutputs outs;
  outs.output = make_view_2d(out.data(), DType::kFloat32, 2, dim);
  Options options;
  options.mode = mode;
  const Status status = forward(in, outs, options);
  EXPECT_TRUE(status.ok()) << status.message();
  *variant = last_variant();
  return out;
}

}  // namespace embag::testing_support
