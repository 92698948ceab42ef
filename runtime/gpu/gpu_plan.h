// The planning steps GPU calls share (forward, backward, max_norm): validating offsets and
// indices on the device, the B + 1 offsets layout, and grouping positions by row. Each step is
// a Halide kernel from generators/plan_generator.cpp (or CUB's sort, gpu_session.h).
#pragma once

#include "forward_plan.h"
#include "gpu_session.h"
#include "kernel_call.h"

namespace embag::internal::gpu {

// The kernel for `key` on `isa`, or an Unsupported status naming what is missing.
Status need_kernel(const KernelKey& key, Isa isa, const KernelEntry** kernel);

// The sizes a CUDA call's kernels can launch over (the launch-limit tests check them): every
// kernel puts its unbounded dimension (bags, positions, rows) on blockIdx.x, up to 2^31 - 1
// blocks, but Halide computes each block count as (extent + block - 1) / block in 32-bit
// arithmetic, which wraps past 2^31 - 256 (seen with the fake CUDA driver: N = 2^31 - 1
// launched 4,286,578,688 blocks), and the layout has B + 1 entries; columns go on blockIdx.y in
// blocks of 32 (at most 65,535 of them). Calls past these are refused with a message naming the
// size, on CUDA only (OpenCL's work sizes are not bounded this way).
constexpr int64_t kMaxCudaExtent = (int64_t{1} << 31) - 512;
constexpr int64_t kMaxCudaColumns = int64_t{65535} * 32;
Status check_cuda_sizes(const Device& device, const ForwardPlan& plan);

// A call's bags in device memory.
struct DeviceBags {
  explicit DeviceBags(CallContext& call) : indices(call), layout(call) {}
  DeviceArray indices;        // the caller's N indices (a one-element stand-in when N = 0)
  DeviceArray layout;         // B + 1 offsets in the indices' dtype
  int64_t positions_end = 0;  // positions past it are in no bag (include_last_offset)
};

// Checks the offsets and every index a bag reads on the device (one kernel, one
// synchronisation) unless execution.index_check is kNone, reporting the first broken rule in the
// CPU's words, then builds the layout. Writes nothing of the caller's.
Status prepare_bags(CallContext& call, Isa isa, const ForwardInputs& in, const Options& opt,
                    const Execution& execution, const ForwardPlan& plan, DeviceBags* bags);

// The bag of each of the N positions (-1: in no bag), and the positions grouped by row; with
// `exclude_padding` the padding index's positions are left out (backward), otherwise they count
// like any row (max_norm renormalises the padding row too).
Status group_positions(CallContext& call, Isa isa, const ForwardPlan& plan, DeviceBags& bags,
                       bool exclude_padding, DeviceArray* position_bag, DeviceRowGroups* groups);

// Valid (non-padding) positions per bag, into `counts` (B, int64 for kBagCount, int32 for
// kBagDivisor).
Status count_bag_positions(CallContext& call, Isa isa, Pipeline pipeline, const ForwardPlan& plan,
                           DeviceBags& bags, DeviceArray* counts);

}  // namespace embag::internal::gpu
