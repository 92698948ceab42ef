// The reference for table-batched calls (include/embag/batched.h), as plain loops: the batched
// forward as one reference forward per feature, and each fused optimizer's update written out
// once from batched.h's formulas, on a gradient folded position by position in input order.
//
// Like reference.h it assumes validated arguments (it checks only what keeps it in bounds) and
// must be compiled with -ffp-contract=off. It materialises what embag never does (a dense
// float32 gradient per table): obviously right matters here, not memory.
#pragma once

#include <vector>

#include "embag/batched.h"

namespace embag::ref {

// Feature by feature: ref::forward on the feature's bags (its slice of indices and offsets,
// its table, the table's mode and padding_idx), copied into the feature's column block.
Status batched_forward(const BatchedInputs& inputs, const TensorView& output);

// The per-table float32 gradient G_t of batched.h ("Gradient terms"), dense (V_t * D_t), with
// touched[t][r] set for every row that has at least one term.
void batched_gradients(const BatchedInputs& inputs, const TensorView& grad_output,
                       std::vector<std::vector<float>>* gradients,
                       std::vector<std::vector<bool>>* touched);

// One fused step: batched_gradients, then the optimizer's update of every touched row, in place.
Status batched_fused_backward(const BatchedInputs& inputs, const TensorView& grad_output,
                              const OptimizerConfig& config,
                              const std::vector<OptimizerState>& state);

}  // namespace embag::ref
