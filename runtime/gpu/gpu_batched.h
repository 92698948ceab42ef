// Table-batched calls (include/embag/batched.h) whose tensors are on a GPU: the batched forward
// and the fused-optimizer backward. runtime/batched_forward.cpp and runtime/batched_backward.cpp
// validate (reading the offsets and indices to the host through this class) and hand the call
// here; see gpu_batched.cpp for how each runs.
#pragma once

#include <memory>
#include <vector>

#include "batched_plan.h"

namespace embag::internal::gpu {

// One batched call on a GPU: its session (context and stream, opened on first use, so that a
// call refused for its shapes or devices touches no device), the device reads validation needs,
// and the kernels.
class BatchedDeviceCall : public DeviceArrayReader {
 public:
  BatchedDeviceCall(const Device& device, const Execution& execution);
  ~BatchedDeviceCall() override;
  BatchedDeviceCall(const BatchedDeviceCall&) = delete;
  BatchedDeviceCall& operator=(const BatchedDeviceCall&) = delete;

  Status read(const TensorView& view, int64_t count, void* host) override;

  // Whether the forward kernels of every table were compiled for the device (reads no data).
  Status check_forward(const BatchedPlan& plan);
  // The forward of a validated call: per feature, the single-table GPU forward kernel on that
  // feature's bags, into its column block.
  Status forward(const BatchedInputs& inputs, const BatchedPlan& plan, const TensorView& output);

  // Whether the fused kernel of `optimizer` was compiled for the device.
  Status check_fused(const BatchedPlan& plan, Optimizer optimizer);
  // The fused update of a validated call, from its rows grouped on the host.
  Status fused_update(const BatchedInputs& inputs, const BatchedPlan& plan,
                      const BatchedRowGroups& groups, const TensorView& grad_output,
                      const OptimizerConfig& config, const std::vector<OptimizerState>& state,
                      float bias_correction1, float bias_correction2);

 private:
  struct Open;
  Status open();

  Device device_;
  Execution execution_;
  std::unique_ptr<Open> open_;
};

}  // namespace embag::internal::gpu
