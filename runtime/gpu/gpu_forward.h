// embag::forward and embag::backward for tensors in GPU memory (see gpu_forward.cpp and
// gpu_backward.cpp). The public entry points validate shapes, then hand GPU calls here.
#pragma once

#include "forward_plan.h"

namespace embag::internal::gpu {

// A forward call whose tensors are on a GPU, validated on the host as far as shapes go.
Status forward(const ForwardInputs& in, const ForwardOutputs& out, const Options& opt,
               const Execution& execution, const ForwardPlan& plan);
// Whether a GPU forward call could run (kernels compiled, device usable); reads no data.
Status validate(const ForwardInputs& in, const Options& opt, const ForwardPlan& plan);

// A backward call whose tensors are on a GPU, validated on the host as far as shapes go.
// `sparse_rows_out`, when set, receives U (the distinct rows) and nothing is computed (the
// sparse_gradient_rows query).
Status backward(const BackwardInputs& in, const BackwardOutputs& out, const Options& opt,
                const Execution& execution, const ForwardPlan& plan, int64_t* sparse_rows_out);

}  // namespace embag::internal::gpu
