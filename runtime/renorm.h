// max_norm: renormalising, in place, the distinct table rows that a call's bags reference.
#pragma once

#include "bag_layout.h"
#include "call_context.h"
#include "kernel_registry.h"

namespace embag::internal {

// The fold the renorm kernel runs for p = norm_type.
kernels::NormKind norm_kind_for(double p);

// Finds the distinct rows read by positions [0, plan.positions_end), runs the renorm kernel on
// them, and writes back only the rows it changed. Call only after validation has passed.
Status renormalize_referenced_rows(CallContext& call, const TensorView& weight,
                                   const BagLayout& layout, const ForwardPlan& plan,
                                   double max_norm, double norm_type, const KernelEntry& kernel);

}  // namespace embag::internal
