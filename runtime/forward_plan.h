// ForwardPlan: what validation learns about a forward call, in the normalised form the rest of
// the runtime uses (sizes, normalised padding index, which kernel family).
#pragma once

#include <cstdint>

#include "embag/embag.h"
#include "kernel_registry.h"

namespace embag::internal {

struct ForwardPlan {
  int64_t num_rows = 0;       // V
  int64_t dim = 0;            // D
  int64_t num_bags = 0;       // B
  int64_t num_indices = 0;    // N: elements of the input
  int64_t positions_end = 0;  // positions [0, positions_end) lie in bags; the rest are not read
  int32_t padding_idx = -1;   // normalised to [0, V), or -1 for none
  Pooling pooling = Pooling::kSum;
};

// Validates the inputs and options of a forward call (see SEMANTICS.md's error table) without
// writing anything, and fills `plan` on success.
Status validate_forward_inputs(const ForwardInputs& inputs, const Options& options,
                               ForwardPlan* plan);

// The same, plus the forward outputs' shapes and dtypes.
Status validate_forward(const ForwardInputs& inputs, const ForwardOutputs& outputs,
                        const Options& options, ForwardPlan* plan);

// Validates what a backward call adds to the forward's inputs (grad_output, argmax, the
// gradient outputs), given the plan validate_forward_inputs made of the rest. `sparse_rows` is
// U, the distinct rows the bags reference (used to check sparse outputs).
Status validate_backward_rest(const BackwardInputs& inputs, const BackwardOutputs& outputs,
                              const Options& options, const ForwardPlan& plan, int64_t sparse_rows);

// The errors of the value rules, in PyTorch's words: offsets (first must be 0, last at most N,
// non-decreasing: `decreasing_at` is the first i with offsets[i] = before > offsets[i+1] = after,
// or -1), and an index outside [0, V). Shared by the host checks and the GPU check kernel's
// report, so both say the same thing. offsets_value_error returns Ok when nothing is wrong.
Status offsets_value_error(int64_t first, int64_t last, int64_t num_indices, int64_t decreasing_at,
                           int64_t before, int64_t after);
Status index_value_error(const TensorView& input, int64_t position, int64_t value,
                         int64_t num_rows);

// Reads element `i` of a contiguous int32/int64 view as int64.
inline int64_t load_index(const TensorView& view, int64_t i) {
  return view.dtype == DType::kInt32 ? static_cast<const int32_t*>(view.data)[i]
                                     : static_cast<const int64_t*>(view.data)[i];
}

}  // namespace embag::internal
