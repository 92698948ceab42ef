// BatchedPlan: what validation learns about a table-batched call (include/embag/batched.h), in
// the normalised form the batched forward and backward use, with private copies of the offsets
// and indices (as IndexSnapshot does for single-table calls: what was checked is what is used).
#pragma once

#include <cstdint>
#include <vector>

#include "embag/batched.h"
#include "kernel_registry.h"

namespace embag::internal {

struct BatchedPlan {
  int64_t num_tables = 0;              // T
  int64_t num_features = 0;            // F
  int64_t num_bags = 0;                // B per feature
  int64_t num_indices = 0;             // N
  int64_t positions_end = 0;           // offsets[F*B]: positions past it are in no bag
  DType dtype = DType::kFloat32;       // every table's, the output's, per_sample_weights'
  DType index_dtype = DType::kInt64;   // indices' and offsets'
  std::vector<int64_t> feature_table;  // F
  std::vector<int64_t> columns;        // F: first column of each feature's block
  std::vector<int64_t> dims;           // F: D of each feature's table
  std::vector<int32_t> padding;        // T: normalised padding index, or -1
  std::vector<Pooling> pooling;        // T: the forward kernel family of each table
  int64_t output_columns = 0;          // end of the last column block
  // The validated copies: offsets (F*B + 1 entries) and indices ([0, positions_end)), in
  // index_dtype. Valid until the next batched call on this thread.
  const void* offsets = nullptr;
  const void* indices = nullptr;

  int64_t offset(int64_t i) const {
    return index_dtype == DType::kInt32 ? static_cast<const int32_t*>(offsets)[i]
                                        : static_cast<const int64_t*>(offsets)[i];
  }
  int64_t index(int64_t p) const {
    return index_dtype == DType::kInt32 ? static_cast<const int32_t*>(indices)[p]
                                        : static_cast<const int64_t*>(indices)[p];
  }
};

// Validates the inputs (tables, feature map, indices, offsets and their values, per-sample
// weights, column blocks) and fills `plan`. With `copy` the offsets and indices are copied
// first and the copies validated and used (calls that run); without, the caller's arrays are
// read in place (validate_*, which run nothing).
Status validate_batched_inputs(const BatchedInputs& inputs, BatchedPlan* plan, bool copy);

// Validates a (B, C) output or grad_output of the tables' dtype against a validated plan.
Status validate_batched_output(const TensorView& view, const char* name, const BatchedPlan& plan);

}  // namespace embag::internal
