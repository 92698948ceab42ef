// ForwardPlan: what validation learns about a forward call, in the normalised form the rest of
// the runtime uses (sizes, normalised padding index, which kernel family).
#pragma once

#include <cstdint>
#include <initializer_list>

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

// Private copies of the arrays that decide where a CPU call reads and writes: offsets, the
// indices inside bags and (max backward) the argmax. A caller's thread may rewrite its arrays
// while a call runs (Python releases the GIL during the kernels); if the kernels read the
// caller's memory after validation, a value written in between would send them out of bounds.
// So a running call validates these copies, and every later stage (layout, renorm, sort,
// kernels) reads the copies: what was checked is what is used. Values (table, weights,
// gradients) are not copied; a race on them changes numbers, never addresses.
//
// The copies live in buffers kept per calling thread (a fresh allocation each call costs a page
// fault per 4 KiB); a snapshot is valid until the next call on the same thread. The index copy is
// fused with the range check (vectorised with AVX2 where the CPU has it), so it costs about
// nothing next to the check; what remains is a fixed few hundred instructions a call (callgrind,
// instructions per forward call against the same build without the copies: +0.3 to +1.8% on
// the CI shapes with D >= 33, +7 to +12% on its sub-microsecond D = 1 and empty-bag rows,
// -5.5% on a 10k x 64 warm batch of 82k indices).
struct IndexSnapshot {
  bool taken = false;  // false: validation read the caller's arrays (validate(), GPU calls)
  TensorView input;    // [0, positions_end) copied; the rest is never read
  TensorView offsets;  // every entry copied
  bool has_argmax = false;
  TensorView argmax;  // (B, D) contiguous copy, max backward only

  // The call's arguments with the copies in place of the caller's arrays.
  ForwardInputs apply(const ForwardInputs& in) const;
  BackwardInputs apply(const BackwardInputs& in) const;
};

// Validates the inputs and options of a forward call (see SEMANTICS.md's error table) without
// writing anything, and fills `plan` on success. With `snapshot` (CPU calls that will run), the
// offsets and indices are copied first and the copies validated (see IndexSnapshot).
Status validate_forward_inputs(const ForwardInputs& inputs, const Options& options,
                               ForwardPlan* plan, IndexSnapshot* snapshot = nullptr);

// The same, plus the forward outputs' shapes and dtypes.
Status validate_forward(const ForwardInputs& inputs, const ForwardOutputs& outputs,
                        const Options& options, ForwardPlan* plan,
                        IndexSnapshot* snapshot = nullptr);

// Validates what a backward call adds to the forward's inputs (grad_output, argmax, the
// gradient outputs), given the plan validate_forward_inputs made of the rest. `sparse_rows` is
// U, the distinct rows the bags reference (used to check sparse outputs). With a taken
// `snapshot`, the inputs' index arrays must be its copies already, and the argmax is copied
// into it before being checked.
Status validate_backward_rest(const BackwardInputs& inputs, const BackwardOutputs& outputs,
                              const Options& options, const ForwardPlan& plan, int64_t sparse_rows,
                              IndexSnapshot* snapshot = nullptr);

// An array a call writes must not share memory with any array it reads (nor with another one it
// writes): the kernels read and write in parallel, so the result would depend on timing.
// PyTorch's words. `writes` and `reads` are (view, name) pairs; null views are skipped.
struct NamedView {
  const TensorView* view;
  const char* name;
};
Status check_no_overlap(std::initializer_list<NamedView> writes,
                        std::initializer_list<NamedView> reads);

// The errors of the value rules, in PyTorch's words: offsets (first must be 0, last at most N,
// non-decreasing: `decreasing_at` is the first i with offsets[i] = before > offsets[i+1] = after,
// or -1), and an index outside [0, V) at flattened `position` (worded as PyTorch words it for
// `opt`'s mode and padding_idx). Shared by the host checks and the GPU check kernel's report, so
// both say the same thing. offsets_value_error returns Ok when nothing is wrong.
Status offsets_value_error(int64_t first, int64_t last, int64_t num_indices, int64_t decreasing_at,
                           int64_t before, int64_t after);
Status index_value_error(int64_t position, int64_t value, int64_t num_rows, const Options& opt);

// The memory rules every view of a call obeys (extents and strides kernels can address, data
// present, rows contiguous, fully contiguous when asked), in the words of the single-table
// checks, `name` naming the view. For callers that build calls of their own (batched.cpp).
Status check_view_memory(const TensorView& view, const char* name, bool require_contiguous);

// Reads element `i` of a contiguous int32/int64 view as int64.
inline int64_t load_index(const TensorView& view, int64_t i) {
  return view.dtype == DType::kInt32 ? static_cast<const int32_t*>(view.data)[i]
                                     : static_cast<const int64_t*>(view.data)[i];
}

}  // namespace embag::internal
