// embag::forward and embag::validate: validate, plan the bags, renormalise, pick the kernel, run.
#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

#include "api_guard.h"
#include "bag_layout.h"
#include "forward_plan.h"
#include "gpu/gpu_forward.h"
#include "gpu/gpu_session.h"
#include "halide_buffer.h"
#include "kernel_call.h"
#include "kernel_registry.h"
#include "kernel_thread_pool.h"
#include "quantized_format.h"
#include "renorm.h"
#include "runtime_state.h"
#include "table_class.h"

namespace embag {
namespace {

using internal::BagLayout;
using internal::ForwardPlan;
using internal::HalideBuffer;
using internal::KernelEntry;
using internal::Pooling;

// The kernels a validated call needs on the selected ISA, or why they are missing.
struct SelectedKernels {
  const KernelEntry* forward = nullptr;
  const KernelEntry* renorm = nullptr;  // only with max_norm
};

// wants_argmax: whether the call asks for max's winning rows. When it does not, max runs the
// max_values kernel (no argmax output at all) where one was compiled.
Status select_kernels(const ForwardInputs& in, const Options& opt, Pooling pooling,
                      bool wants_argmax, SelectedKernels* kernels) {
  Isa isa;
  if (Status s = internal::resolve_isa(&isa); !s.ok()) return s;
  // A quantized table's kernels are keyed by their codec instead of a weight dtype.
  const QuantizedTable* quantized = in.quantized_weight;
  const std::optional<DType> weight_dtype =
      quantized ? std::nullopt : std::optional<DType>(in.weight.dtype);
  const internal::QuantCodec codec =
      quantized ? internal::quant_layout(quantized->format).codec : internal::QuantCodec::kNone;
  const internal::KernelKey forward_key{
      internal::Pipeline::kForward, pooling, weight_dtype, in.input.dtype, std::nullopt, codec};
  // By D too (a tuning file may give a kernel a schedule per D bucket), and by where the table
  // lives (a cache-resident and a memory-resident variant of each CPU forward kernel; quantized
  // kernels serve every table).
  const int64_t dim = quantized ? quantized->dim : in.weight.shape[1];
  const internal::TableClass table_class =
      quantized ? internal::TableClass::kAny : internal::table_class_of(in.weight);
  if (pooling == Pooling::kMax && !wants_argmax) {
    kernels->forward = internal::find_kernel({internal::Pipeline::kForward, Pooling::kMaxValues,
                                              weight_dtype, in.input.dtype, std::nullopt, codec},
                                             isa, dim, table_class);
  }
  if (kernels->forward == nullptr)
    kernels->forward = internal::find_kernel(forward_key, isa, dim, table_class);
  auto missing = [&](const internal::KernelKey& key) {
    return Status(StatusCode::kUnsupported,
                  "no " + internal::describe(key) + " kernel was compiled for " + isa_name(isa));
  };
  if (kernels->forward == nullptr) return missing(forward_key);
  if (opt.max_norm) {
    const internal::KernelKey renorm_key{internal::Pipeline::kRenorm, std::nullopt, in.weight.dtype,
                                         std::nullopt};
    kernels->renorm = internal::find_kernel(renorm_key, isa);
    if (kernels->renorm == nullptr) return missing(renorm_key);
  }
  return Status::Ok();
}

// Scratch for the argmax when the caller does not ask for it; reused across calls on a thread.
thread_local std::vector<int64_t> t_scratch_argmax;

// Valid (non-padding) positions per bag, for callers that ask for bag_count. Kernels do not
// produce it: most callers do not want it, and a pass over the indices is cheap next to the
// rows.
void count_valid_positions(const ForwardPlan& plan, const BagLayout& layout, int64_t* counts) {
  const TensorView offsets =
      make_view_1d(const_cast<void*>(layout.offsets), layout.index_dtype, plan.num_bags + 1);
  const TensorView indices =
      make_view_1d(const_cast<void*>(layout.indices), layout.index_dtype, plan.positions_end);
  for (int64_t b = 0; b < plan.num_bags; ++b) {
    int64_t count = 0;
    const int64_t end = internal::load_index(offsets, b + 1);
    for (int64_t p = internal::load_index(offsets, b); p < end; ++p) {
      count += internal::load_index(indices, p) != plan.padding_idx;
    }
    counts[b] = count;
  }
}

// Outputs of a call with no columns or no rows, where there is nothing for a kernel to read:
// every bag is empty of data (V = 0 makes every index invalid, so bags hold no positions).
void write_degenerate_outputs(const ForwardOutputs& out, const ForwardPlan& plan,
                              const BagLayout& layout) {
  const int64_t B = plan.num_bags, D = plan.dim;
  const size_t element = dtype_size(out.output.dtype);
  // (D = 0: no bytes, and possibly no memory; memset may not be given a null pointer)
  for (int64_t b = 0; D > 0 && b < B; ++b) {
    std::memset(static_cast<unsigned char*>(out.output.data) +
                    static_cast<size_t>(b * out.output.strides[0]) * element,
                0, static_cast<size_t>(D) * element);
  }
  if (out.argmax) {
    for (int64_t b = 0; b < B; ++b) {
      int64_t* row = static_cast<int64_t*>(out.argmax->data) + b * out.argmax->strides[0];
      for (int64_t d = 0; d < D; ++d) row[d] = -1;
    }
  }
  if (out.bag_count)
    count_valid_positions(plan, layout, static_cast<int64_t*>(out.bag_count->data));
}

Status run_pooling_kernel(internal::CallContext& call, const KernelEntry& kernel,
                          const ForwardInputs& in, const ForwardOutputs& out,
                          const ForwardPlan& plan, const BagLayout& layout) {
  const int64_t B = plan.num_bags, D = plan.dim;
  const QuantizedTable* quantized = in.quantized_weight;
  // A quantized table goes in as its bytes: (row bytes, V) uint8 with the caller's row stride.
  std::optional<HalideBuffer> weight;
  int32_t code_offset = 0, qparam_offset = 0;
  const int32_t dim32 = static_cast<int32_t>(D);
  internal::QuantLayout q{};
  if (quantized) {
    q = internal::quant_layout(quantized->format);
    weight.emplace(quantized->data, halide_type_t(halide_type_uint, 8), plan.num_rows,
                   quantized_row_bytes(quantized->format, D), quantized->row_stride);
    code_offset = static_cast<int32_t>(internal::quant_code_offset(q));
    qparam_offset = static_cast<int32_t>(internal::quant_qparam_offset(q, D));
  } else {
    weight.emplace(in.weight.data, in.weight.dtype, plan.num_rows, D, in.weight.strides[0]);
  }
  HalideBuffer indices(layout.indices, layout.index_dtype, plan.positions_end);
  HalideBuffer offsets(layout.offsets, layout.index_dtype, B + 1);
  HalideBuffer output(out.output.data, out.output.dtype, B, D, out.output.strides[0]);
  const int32_t padding = plan.padding_idx;
  const int32_t bags_per_task = internal::bags_per_task(B, kernel.tasks_per_thread);
  internal::KernelArgs args;
  args.buffer("weight", weight->get())
      .buffer("indices", indices.get())
      .buffer("offsets", offsets.get())
      .scalar("padding_idx", &padding)
      .scalar("bags_per_task", &bags_per_task);
  if (quantized) {
    args.scalar("code_offset", &code_offset)
        .scalar("qparam_offset", &qparam_offset)
        .scalar("dim", &dim32);
    if (q.codec == internal::QuantCodec::kF8) {
      // Which 8-bit float: one f8 kernel serves every FP8 format (kernel_enums.h, Fp8Encoding).
      args.scalar("fp8_mantissa_bits", &q.fp8.mantissa_bits)
          .scalar("fp8_exponent_bias", &q.fp8.exponent_bias)
          .scalar("fp8_special_from", &q.fp8.special_from);
    }
  }

  // Max writes the winning rows too; into scratch when the caller did not ask for them
  // (allocated here, before the kernel writes anything).
  std::optional<HalideBuffer> psw, argmax;
  if (kernel.pooling == Pooling::kWeightedSum) {
    psw.emplace(in.per_sample_weights->data, in.per_sample_weights->dtype, plan.positions_end);
    args.buffer("per_sample_weights", psw->get());
  }
  if (kernel.pooling == Pooling::kMax) {
    void* winners = out.argmax ? out.argmax->data : nullptr;
    const int64_t winners_stride = out.argmax ? out.argmax->strides[0] : D;
    if (winners == nullptr) {
      t_scratch_argmax.resize(static_cast<size_t>(B * D));
      winners = t_scratch_argmax.data();
    }
    argmax.emplace(winners, DType::kInt64, B, D, winners_stride);
    args.buffer("output.0", output.get()).buffer("output.1", argmax->get());
  } else {
    args.buffer("output", output.get());
  }
  return internal::run_kernel(call, kernel, args);
}

Status run_forward_kernel(internal::CallContext& call, const KernelEntry& kernel,
                          const ForwardInputs& in, const ForwardOutputs& out,
                          const ForwardPlan& plan, const BagLayout& layout) {
  Status s = run_pooling_kernel(call, kernel, in, out, plan, layout);
  if (s.ok() && out.bag_count) {
    count_valid_positions(plan, layout, static_cast<int64_t*>(out.bag_count->data));
  }
  return s;
}

// max_norm = NaN or norm_type = NaN renormalises nothing, as in PyTorch: every comparison
// `norm > max_norm` is false then (SEMANTICS.md: a row whose norm is NaN is untouched). The
// call then neither runs the renorm kernel nor counts as writing the table.
Options without_nan_renorm(const Options& options) {
  Options o = options;
  if (o.max_norm && (std::isnan(*o.max_norm) || std::isnan(o.norm_type))) o.max_norm.reset();
  return o;
}

}  // namespace

int64_t num_bags(const TensorView& input, const TensorView* offsets, const Options& options) {
  if (input.ndim == 2) return input.shape[0];
  if (input.ndim != 1 || offsets == nullptr || offsets->ndim != 1) return 0;
  const int64_t n = offsets->shape[0];
  if (options.include_last_offset) return n > 0 ? n - 1 : 0;
  return n;
}

Status validate(const ForwardInputs& inputs, const ForwardOutputs& outputs,
                const Options& caller_options, const Execution& /*execution*/) {
  return internal::guard_api([&] {
    const Options options = without_nan_renorm(caller_options);
    ForwardPlan plan;
    if (Status s = internal::validate_forward(inputs, outputs, options, &plan); !s.ok()) return s;
    if (inputs.weight.device.type != DeviceType::kCPU) {
      return internal::gpu::validate(inputs, options, plan);
    }
    SelectedKernels kernels;
    return select_kernels(inputs, options, plan.pooling, outputs.argmax != nullptr, &kernels);
  });
}

Status forward(const ForwardInputs& caller_inputs, const ForwardOutputs& outputs,
               const Options& caller_options, const Execution& execution) {
  return internal::guard_api([&] {
    const Options options = without_nan_renorm(caller_options);
    ForwardPlan plan;
    internal::IndexSnapshot snapshot;
    if (Status s = internal::validate_forward(caller_inputs, outputs, options, &plan, &snapshot);
        !s.ok())
      return s;
    if (caller_inputs.weight.device.type != DeviceType::kCPU) {
      return internal::gpu::forward(caller_inputs, outputs, options, execution, plan);
    }
    // From here on the offsets and indices are the validated private copies.
    const ForwardInputs inputs = snapshot.apply(caller_inputs);
    SelectedKernels kernels;
    if (Status s =
            select_kernels(inputs, options, plan.pooling, outputs.argmax != nullptr, &kernels);
        !s.ok())
      return s;

    // Everything that can fail for want of memory is allocated before the first write (the
    // renormalised rows are written back to the caller's table).
    BagLayout layout;
    internal::make_bag_layout(inputs, options, plan, &layout);
    if (kernels.forward->pooling == Pooling::kMax && outputs.argmax == nullptr) {
      t_scratch_argmax.resize(static_cast<size_t>(plan.num_bags * plan.dim));
    }
    internal::CallContext call;
    if (options.max_norm) {
      Status s = internal::renormalize_referenced_rows(
          call, inputs.weight, layout, plan, *options.max_norm, options.norm_type, *kernels.renorm);
      if (!s.ok()) return s;
    }
    if (plan.num_bags == 0) {
      internal::record_last_variant(kernels.forward->name);
      return Status::Ok();
    }
    if (plan.dim == 0 || plan.num_rows == 0) {
      write_degenerate_outputs(outputs, plan, layout);
      internal::record_last_variant(kernels.forward->name);
      return Status::Ok();
    }
    return run_forward_kernel(call, *kernels.forward, inputs, outputs, plan, layout);
  });
}

std::string forward_variant_name(const ForwardInputs& inputs, const Options& options) {
  const internal::Pooling pooling =
      internal::pooling_for(options.mode, inputs.per_sample_weights != nullptr);
  if (inputs.quantized_weight == nullptr && inputs.weight.device.type != DeviceType::kCPU) {
    Isa isa{};
    if (!internal::gpu::select_isa(inputs.weight.device, &isa).ok()) return "";
    const KernelEntry* kernel = internal::find_kernel(
        {internal::Pipeline::kForward, pooling, inputs.weight.dtype, inputs.input.dtype}, isa);
    return kernel != nullptr ? kernel->name : "";
  }
  SelectedKernels kernels;
  if (!select_kernels(inputs, options,
                      internal::pooling_for(options.mode, inputs.per_sample_weights != nullptr),
                      /*wants_argmax=*/true, &kernels)
           .ok())
    return "";
  return kernels.forward->name;
}

}  // namespace embag
