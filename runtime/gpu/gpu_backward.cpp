// embag::backward on a GPU: the CPU's steps, each on the device.
//
//   validate shapes (host) -> check offsets and indices (device) -> layout -> bag of each
//   position -> group positions by row (sort; one synchronisation to learn U) -> outputs'
//   shapes (host, they depend on U) -> per-row folds (values) -> per_sample_weights gradient ->
//   sparse: row ids copied / dense: zero the table and write the rows.
//
// Each row's gradient is one left fold over its positions in input order, exactly as on the
// CPU: no atomics, the same bits every run.
#include <algorithm>

#include "gpu_forward.h"
#include "gpu_plan.h"
#include "halide_buffer.h"
#include "runtime_state.h"
#include "status_macros.h"

namespace embag::internal::gpu {
namespace {
const halide_type_t kInt32(halide_type_int, 32);
}  // namespace

Status backward(const BackwardInputs& in, const BackwardOutputs& out, const Options& opt,
                const Execution& execution, const ForwardPlan& plan, int64_t* sparse_rows_out) {
  Isa isa{};
  EMBAG_RETURN_IF_ERROR(select_isa(in.weight.device, &isa));
  EMBAG_RETURN_IF_ERROR(check_cuda_sizes(in.weight.device, plan));
  const DType w = in.weight.dtype, index_dtype = in.input.dtype;
  const KernelEntry *rows_kernel = nullptr, *psw_kernel = nullptr, *scatter = nullptr;
  EMBAG_RETURN_IF_ERROR(
      need_kernel({Pipeline::kBackwardRows, plan.pooling, w, std::nullopt}, isa, &rows_kernel));
  if (out.grad_per_sample_weights != nullptr) {
    EMBAG_RETURN_IF_ERROR(
        need_kernel({Pipeline::kPswGrad, std::nullopt, w, index_dtype}, isa, &psw_kernel));
  }
  if (!opt.sparse) {
    EMBAG_RETURN_IF_ERROR(
        need_kernel({Pipeline::kScatterRows, std::nullopt, w, std::nullopt}, isa, &scatter));
  }

  CallContext call;
  Session session(call);
  EMBAG_RETURN_IF_ERROR(session.open(in.weight.device, execution));
  const ForwardInputs fin{in.weight, in.input, in.offsets, in.per_sample_weights};
  DeviceBags bags(call);
  EMBAG_RETURN_IF_ERROR(prepare_bags(call, isa, fin, opt, execution, plan, &bags));
  DeviceArray position_bag(call);
  DeviceRowGroups groups(call);
  EMBAG_RETURN_IF_ERROR(
      group_positions(call, isa, plan, bags, /*exclude_padding=*/true, &position_bag, &groups));
  const int64_t U = groups.num_rows;
  if (sparse_rows_out != nullptr) {
    *sparse_rows_out = U;
    return Status::Ok();
  }
  EMBAG_RETURN_IF_ERROR(validate_backward_rest(in, out, opt, plan, U));

  const int64_t B = plan.num_bags, D = plan.dim, V = plan.num_rows, N = plan.num_indices;
  DeviceArray grad(call), values(call), divisor(call), argmax(call), psw(call);
  DeviceArray weight(call), grad_psw(call), rows_out(call), table(call);
  if (B > 0 && D > 0) {
    EMBAG_RETURN_IF_ERROR(grad.wrap(in.grad_output.data, w, B, D, in.grad_output.strides[0]));
  }

  // Weight gradient rows: into the caller's sparse values, or scratch for the dense scatter.
  if (U > 0 && D > 0) {
    Status s = opt.sparse ? values.wrap(out.grad_weight_values->data, w, U, D,
                                        out.grad_weight_values->strides[0])
                          : values.allocate(halide_type_of(w), U, D);
    if (!s.ok()) return s;
    const bool scale = opt.scale_grad_by_freq;
    KernelArgs args;
    args.buffer("grad_output", grad.get())
        .buffer("segments", groups.segments.get())
        .buffer("sorted_positions", groups.sorted_positions.get())
        .buffer("position_bag", position_bag.get())
        .scalar("scale_grad_by_freq", &scale)
        .buffer("values", values.get());
    if (plan.pooling == Pooling::kWeightedSum) {
      if (Status st = psw.wrap(in.per_sample_weights->data, w, N); !st.ok()) return st;
      args.buffer("per_sample_weights", psw.get());
    } else if (plan.pooling == Pooling::kMean) {
      if (Status st = divisor.allocate(kInt32, B); !st.ok()) return st;
      if (Status st = count_bag_positions(call, isa, Pipeline::kBagDivisor, plan, bags, &divisor);
          !st.ok()) {
        return st;
      }
      args.buffer("bag_divisor", divisor.get());
    } else if (plan.pooling == Pooling::kMax) {
      if (Status st = argmax.wrap(in.argmax->data, DType::kInt64, B, D, in.argmax->strides[0]);
          !st.ok()) {
        return st;
      }
      args.buffer("argmax", argmax.get()).buffer("rows", groups.rows.get());
    }
    if (Status st = run_kernel(call, *rows_kernel, args); !st.ok()) return st;
  }

  // per_sample_weights gradient, every position (0 outside bags and at padding).
  if (psw_kernel != nullptr && N > 0) {
    EMBAG_RETURN_IF_ERROR(grad_psw.wrap(out.grad_per_sample_weights->data, w, N));
    // Without bags or columns there is nothing to read: stand-ins keep the kernel's arrays valid
    // (every result is then 0).
    if (B == 0 || D == 0) {
      EMBAG_RETURN_IF_ERROR(grad.allocate(halide_type_of(w), 1, D));
    }
    if (V > 0 && D > 0) {
      EMBAG_RETURN_IF_ERROR(weight.wrap(in.weight.data, w, V, D, in.weight.strides[0]));
    } else
      EMBAG_RETURN_IF_ERROR(weight.allocate(halide_type_of(w), 1, D));
    const int32_t padding = plan.padding_idx;
    KernelArgs args;
    args.buffer("grad_output", grad.get())
        .buffer("weight", weight.get())
        .buffer("indices", bags.indices.get())
        .buffer("position_bag", position_bag.get())
        .scalar("padding_idx", &padding)
        .buffer("grad_per_sample_weights", grad_psw.get());
    EMBAG_RETURN_IF_ERROR(run_kernel(call, *psw_kernel, args));
  }

  // Row ids (sparse) or the whole dense table.
  if (opt.sparse) {
    if (U > 0) {
      EMBAG_RETURN_IF_ERROR(rows_out.wrap(out.grad_weight_rows->data, DType::kInt64, U));
      EMBAG_RETURN_IF_ERROR(rows_out.copy_from(groups.rows));
    }
  } else if (V > 0 && D > 0) {
    if (U == 0) {
      EMBAG_RETURN_IF_ERROR(values.allocate(halide_type_of(w), 0, D));
    }
    EMBAG_RETURN_IF_ERROR(table.wrap(out.grad_weight->data, w, V, D, out.grad_weight->strides[0]));
    KernelArgs args;
    args.buffer("rows", groups.rows.get())
        .buffer("values", values.get())
        .buffer("table", table.get());
    EMBAG_RETURN_IF_ERROR(run_kernel(call, *scatter, args));
  }
  record_last_variant(rows_kernel->name);
  return Status::Ok();
}

}  // namespace embag::internal::gpu
