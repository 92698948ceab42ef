// Running embag's GPU path from tests written for host memory: every view of a call is mirrored
// into device memory (OpenCL buffers on the first OpenCL device, POCL's CPU device on machines
// without a GPU; or CUDA memory on cuda:0), the call runs there through the public API with the
// device's command queue (a CUDA stream of the test's own, not the default one),
// and every array it may write (outputs, and the table for max_norm) is copied back over the
// host memory, whole, including the gaps between strided rows, so the tests' byte comparisons
// and "nothing written" checks see exactly what the device did. The CLI's --device uses it too.
// kCPU runs the call as it is. Not part of the library.
#pragma once

#include <string>
#include <vector>

#include "embag/batched.h"
#include "embag/embag.h"

namespace embag::gpu_mirror {

// True when `device` (kCPU, kOpenCL or kCUDA) can run calls (and this build has its kernels);
// otherwise `why` says what is missing.
bool available(DeviceType device, std::string* why = nullptr);

// embag::forward / backward / sparse_gradient_rows / forward_variant_name, with the same
// arguments, run on `device`.
Status forward(DeviceType device, const ForwardInputs& inputs, const ForwardOutputs& outputs,
               const Options& options);
Status backward(DeviceType device, const BackwardInputs& inputs, const BackwardOutputs& outputs,
                const Options& options);
Status sparse_gradient_rows(DeviceType device, const BackwardInputs& inputs, const Options& options,
                            int64_t* rows);
std::string forward_variant_name(DeviceType device, const ForwardInputs& inputs,
                                 const Options& options);

// embag::batched_forward / batched_fused_backward (include/embag/batched.h) on `device`: every
// table, index array, output and optimizer state mirrored; the output, or the tables and the
// state, copied back.
Status batched_forward(DeviceType device, const BatchedInputs& inputs, const TensorView& output);
Status batched_fused_backward(DeviceType device, const BatchedInputs& inputs,
                              const TensorView& grad_output, const OptimizerConfig& config,
                              const std::vector<OptimizerState>& state);

}  // namespace embag::gpu_mirror
