// BatchedPlan: what validation learns about a table-batched call (include/embag/batched.h), in
// the normalised form the batched forward and backward use, with private copies of the offsets
// and indices (as IndexSnapshot does for single-table calls: what was checked is what is used).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "embag/batched.h"
#include "kernel_registry.h"

namespace embag::internal {

struct BatchedPlan {
  Device device;                       // where every tensor of the call is (the tables')
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

// Copies the first `count` elements of a 1-D view in device memory to the host (a GPU call's
// offsets and indices, which validation reads on the host: runtime/gpu/gpu_batched.h).
class DeviceArrayReader {
 public:
  virtual ~DeviceArrayReader() = default;
  virtual Status read(const TensorView& view, int64_t count, void* host) = 0;
};

// The device of a batched call: its tables' (or, with none, its indices').
Device batched_device(const BatchedInputs& inputs);

// Validates the inputs (tables, feature map, indices, offsets and their values, per-sample
// weights, column blocks) and fills `plan`. With `copy` the offsets and indices are copied
// first and the copies validated and used (calls that run); without, the caller's arrays are
// read in place (validate_*, which run nothing). Every tensor must be on one device; for a GPU
// call `device` reads the offsets and indices into the copies (copy or not), and without it GPU
// tensors are refused (kUnsupported: the calls that have no GPU path).
Status validate_batched_inputs(const BatchedInputs& inputs, BatchedPlan* plan, bool copy,
                               DeviceArrayReader* device = nullptr);

// Validates a (B, C) output or grad_output of the tables' dtype against a validated plan.
Status validate_batched_output(const TensorView& view, const char* name, const BatchedPlan& plan);

// `view` (named `name`) is on the call's device, or the message says where it is instead.
Status check_batched_device(const TensorView& view, const std::string& name,
                            const BatchedPlan& plan);

// The valid positions grouped by (table, row), as the fused backward folds them: keys ascending,
// positions in input order within a key (a stable LSD radix sort on key = the table's first
// global row + the row). runtime/batched_backward.cpp.
struct BatchedRowGroups {
  std::vector<uint64_t> keys;             // U distinct keys
  std::vector<int64_t> segments;          // U + 1
  std::vector<int64_t> sorted_positions;  // M
  // The bag (f*B + b) of each sorted position, carried through the sort: looking it up per
  // position afterwards would be a cache miss per position on large batches.
  std::vector<int64_t> sorted_bags;  // M
  std::vector<int32_t> bag_valid;    // F*B
  std::vector<uint64_t> table_base;  // T + 1: first global row of each table
};
void group_batched_rows(const BatchedInputs& inputs, const BatchedPlan& plan,
                        BatchedRowGroups* groups);

}  // namespace embag::internal
