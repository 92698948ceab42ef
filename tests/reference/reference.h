// The reference implementation every embag test compares against: SEMANTICS.md written as plain
// loops, with no vectorisation, no threads and no cleverness, so that it is obviously right.
//
// It folds in exactly the order the kernels are specified to fold in (input order, from +0.0,
// in the accumulation type, multiply and add never fused), so the differential tests can
// compare embag with it bit for bit. It must be compiled with -ffp-contract=off (the
// embag_reference target does that).
//
// The reference assumes its arguments already passed embag::validate() (or validate_backward()).
// It still checks what it needs to stay in bounds and returns kInvalidArgument instead of
// crashing, but its messages are terse and not the ones embag promises.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "embag/embag.h"

namespace embag::ref {

// One bag: positions [begin, end) of the input, flattened in row-major order (a 2-D input's
// position of (b, j) is b * L + j).
struct Bag {
  int64_t begin = 0;
  int64_t end = 0;
};

// The bags a call forms, from the input's shape, the offsets' values and include_last_offset.
// Positions past the last bag's end (include_last_offset with off[B] < N) are in no bag.
// Returns an empty list when the arguments cannot form bags.
std::vector<Bag> bags(const TensorView& input, const TensorView* offsets, const Options& options);

// padding_idx with negative values wrapped into [0, num_rows), or nullopt when unset.
std::optional<int64_t> normalized_padding_idx(const Options& options, int64_t num_rows);

// Element `pos` of an int32/int64 input or offsets view, 1-D or 2-D (flattened row-major,
// honouring the row stride).
int64_t index_at(const TensorView& view, int64_t pos);

// Element (row, col) of a float view of any embag dtype, widened exactly to double (row is 0 for
// 1-D views, col is the position).
double value_at(const TensorView& view, int64_t row, int64_t col);

// The accumulation type's p-norm of one row, as renorm computes it (float for 16- and 32-bit
// tables, double for float64), widened to double.
double row_norm(const TensorView& weight, int64_t row, double norm_type);

// max_norm's in-place renormalisation of every distinct row referenced by a position inside a
// bag (padding positions included, as in PyTorch, whose renorm sees the whole input). Does
// nothing when options.max_norm is unset.
Status renorm(const TensorView& weight, const TensorView& input, const TensorView* offsets,
              const Options& options);

// embedding_bag forward: renorm (when max_norm is set), then the per-bag reduction. Writes
// outputs.output, and outputs.bag_count / outputs.argmax when given.
Status forward(const ForwardInputs& inputs, const ForwardOutputs& outputs, const Options& options);

// U: the number of distinct non-padding rows referenced by positions inside bags (the rows of a
// sparse gradient). Checks the inputs as backward does.
Status sparse_gradient_rows(const BackwardInputs& inputs, const Options& options, int64_t* rows);

// embedding_bag backward, embag.h's pseudocode as loops: every gradient element is a left fold
// in input order (bag order for max) from +0.0 in the accumulation type (double for float64
// tables, float otherwise), divided by count(r) at the end with scale_grad_by_freq, rounded once
// to the table's dtype. Writes the dense gradient (zeros where untouched) or, with
// options.sparse, the ascending referenced rows and their values; and grad_per_sample_weights
// (0 at padding positions and positions in no bag) when given. max follows argmax[b][d] only
// to a row that bag b holds at a valid position (so never for an empty or all-padding bag), and
// the padding row's gradient is 0 in every mode. max_norm is ignored: the weight is the table as
// the forward read it.
Status backward(const BackwardInputs& inputs, const BackwardOutputs& outputs,
                const Options& options);

}  // namespace embag::ref
