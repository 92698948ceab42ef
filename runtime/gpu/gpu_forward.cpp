// embag::forward on a GPU (CUDA, or OpenCL): the CPU's steps, each on the device.
//
//   validate shapes (host) -> check offsets and indices (device kernel; one synchronisation
//   unless IndexCheck::kNone) -> layout -> [max_norm: group rows, renorm kernel, write back the
//   changed rows] -> forward kernel -> [bag_count kernel]
//
// Every kernel is issued on the caller's stream in the caller's context; nothing is copied to
// the host but the check's 8-number verdict (and, for max_norm, the number of distinct rows).
#include "gpu_forward.h"

#include "gpu_plan.h"
#include "halide_buffer.h"
#include "renorm.h"
#include "runtime_state.h"
#include "status_macros.h"

namespace embag::internal::gpu {
namespace {

const halide_type_t kInt64(halide_type_int, 64), kUInt8(halide_type_uint, 8);

// max_norm on the device: the distinct rows the bags reference, their renormalised copies, and
// the changed ones written back into the caller's table.
Status renormalize_on_device(CallContext& call, Isa isa, const ForwardInputs& in,
                             const Options& opt, const ForwardPlan& plan, DeviceBags& bags,
                             DeviceArray& weight) {
  const KernelEntry *renorm = nullptr, *write_back = nullptr;
  const DType w = in.weight.dtype;
  EMBAG_RETURN_IF_ERROR(
      need_kernel({Pipeline::kRenorm, std::nullopt, w, std::nullopt}, isa, &renorm));
  EMBAG_RETURN_IF_ERROR(
      need_kernel({Pipeline::kWriteBackRows, std::nullopt, w, std::nullopt}, isa, &write_back));
  DeviceArray position_bag(call);
  DeviceRowGroups groups(call);
  EMBAG_RETURN_IF_ERROR(
      group_positions(call, isa, plan, bags, /*exclude_padding=*/false, &position_bag, &groups));
  const int64_t K = groups.num_rows, D = plan.dim;
  if (K == 0 || D == 0) return Status::Ok();
  DeviceArray renormed(call), changed(call);
  EMBAG_RETURN_IF_ERROR(renormed.allocate(weight.get()->type, K, D));
  EMBAG_RETURN_IF_ERROR(changed.allocate(kUInt8, K));
  const double max_norm = *opt.max_norm, norm_type = opt.norm_type;
  const int32_t norm_kind = static_cast<int32_t>(norm_kind_for(norm_type));
  KernelArgs args;
  args.buffer("weight", weight.get())
      .buffer("rows", groups.rows.get())
      .scalar("max_norm", &max_norm)
      .scalar("norm_type", &norm_type)
      .scalar("norm_kind", &norm_kind)
      .scalar("norm_epsilon", &kernels::kMaxNormEpsilon)
      .buffer("renormed", renormed.get())
      .buffer("changed", changed.get());
  EMBAG_RETURN_IF_ERROR(run_kernel(call, *renorm, args));
  KernelArgs back;
  back.buffer("rows", groups.rows.get())
      .buffer("values", renormed.get())
      .buffer("mask", changed.get())
      .buffer("table", weight.get());
  return run_kernel(call, *write_back, back);
}

// The device's ISA and its forward kernel for this call, after the sizes CUDA's launches take.
Status select_forward_kernel(const ForwardInputs& in, const ForwardPlan& plan, Isa* isa,
                             const KernelEntry** kernel) {
  EMBAG_RETURN_IF_ERROR(select_isa(in.weight.device, isa));
  EMBAG_RETURN_IF_ERROR(check_cuda_sizes(in.weight.device, plan));
  return need_kernel({Pipeline::kForward, plan.pooling, in.weight.dtype, in.input.dtype}, *isa,
                     kernel);
}

}  // namespace

Status forward(const ForwardInputs& in, const ForwardOutputs& out, const Options& opt,
               const Execution& execution, const ForwardPlan& plan) {
  Isa isa{};
  const KernelEntry* forward_kernel = nullptr;
  EMBAG_RETURN_IF_ERROR(select_forward_kernel(in, plan, &isa, &forward_kernel));
  CallContext call;
  Session session(call);
  EMBAG_RETURN_IF_ERROR(session.open(in.weight.device, execution));

  DeviceBags bags(call);
  EMBAG_RETURN_IF_ERROR(prepare_bags(call, isa, in, opt, execution, plan, &bags));
  const int64_t B = plan.num_bags, D = plan.dim, V = plan.num_rows;
  if (B == 0) {
    record_last_variant(forward_kernel->name);
    return Status::Ok();
  }

  DeviceArray weight(call), output(call), argmax(call), psw(call), bag_count(call);
  if (V > 0 && D > 0) {
    EMBAG_RETURN_IF_ERROR(weight.wrap(in.weight.data, in.weight.dtype, V, D, in.weight.strides[0]));
  }
  if (opt.max_norm && V > 0 && D > 0) {
    EMBAG_RETURN_IF_ERROR(renormalize_on_device(call, isa, in, opt, plan, bags, weight));
  }

  if (D > 0) {
    EMBAG_RETURN_IF_ERROR(
        output.wrap(out.output.data, out.output.dtype, B, D, out.output.strides[0]));
    // A table with no rows: every bag is empty (the check refused any index), and the kernel
    // still writes the empty bags' zeros and -1s; it reads a one-row stand-in, never.
    if (V == 0) {
      EMBAG_RETURN_IF_ERROR(weight.allocate(halide_type_of(in.weight.dtype), 1, D));
    }
    const int32_t padding = plan.padding_idx;
    const int32_t bags_per_task = 1;  // (a CPU schedule knob; GPU kernels ignore it)
    KernelArgs args;
    args.buffer("weight", weight.get())
        .buffer("indices", bags.indices.get())
        .buffer("offsets", bags.layout.get())
        .scalar("padding_idx", &padding)
        .scalar("bags_per_task", &bags_per_task);
    if (plan.pooling == Pooling::kWeightedSum) {
      // (with no index, a one-element stand-in like the indices')
      Status s = plan.num_indices > 0
                     ? psw.wrap(in.per_sample_weights->data, in.per_sample_weights->dtype,
                                plan.num_indices)
                     : psw.allocate(halide_type_of(in.per_sample_weights->dtype), 1);
      if (!s.ok()) return s;
      args.buffer("per_sample_weights", psw.get());
    }
    if (plan.pooling == Pooling::kMax) {
      Status s = out.argmax != nullptr
                     ? argmax.wrap(out.argmax->data, DType::kInt64, B, D, out.argmax->strides[0])
                     : argmax.allocate(kInt64, B, D);
      if (!s.ok()) return s;
      args.buffer("output.0", output.get()).buffer("output.1", argmax.get());
    } else {
      args.buffer("output", output.get());
    }
    EMBAG_RETURN_IF_ERROR(run_kernel(call, *forward_kernel, args));
  }
  if (out.bag_count != nullptr) {
    EMBAG_RETURN_IF_ERROR(bag_count.wrap(out.bag_count->data, DType::kInt64, B));
    EMBAG_RETURN_IF_ERROR(
        count_bag_positions(call, isa, Pipeline::kBagCount, plan, bags, &bag_count));
  }
  record_last_variant(forward_kernel->name);
  return Status::Ok();
}

Status validate(const ForwardInputs& in, const Options& opt, const ForwardPlan& plan) {
  Isa isa{};
  const KernelEntry* kernel = nullptr;
  EMBAG_RETURN_IF_ERROR(select_forward_kernel(in, plan, &isa, &kernel));
  if (opt.max_norm) {
    return need_kernel({Pipeline::kRenorm, std::nullopt, in.weight.dtype, std::nullopt}, isa,
                       &kernel);
  }
  return Status::Ok();
}

}  // namespace embag::internal::gpu
