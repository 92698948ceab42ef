// Table-batched calls on a GPU (CUDA or OpenCL), after the host validated them.
//
// Validation reads the offsets and indices to the host once (two copies, one synchronisation
// each) and checks them there, as the CPU path does, so its messages name feature and table
// exactly as on the CPU; what was checked is what the kernels use.
//
// Forward: per feature, the single-table GPU forward kernel (the one embag::forward runs on the
// device) on that feature's B bags, whose B + 1 offsets are uploaded from the host copy; it reads
// the caller's indices and table in place and writes the feature's column block: on CUDA
// directly (the block's address is a device pointer), on OpenCL into scratch that one rectangle
// copy places (a cl_mem cannot be offset). A bag's result does not depend on the other bags of
// the kernel call, so the output is bitwise that of one embag::forward call per feature. Every
// kernel and copy is issued on the caller's stream / queue.
//
// Fused backward: the valid positions are grouped by (table, row) on the host with the CPU
// path's stable radix sort (group_batched_rows: no GPU sort of (table, row) keys exists here
// yet; the single-table path's CUB sort groups one table's rows), the groups are uploaded, and
// one embag_fused_<optimizer> kernel per touched table folds each row's gradient in input order
// and updates the row and its state in place (generators/fused_update_generator.cpp).
#include "gpu_batched.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>

#include "gpu_plan.h"
#include "gpu_session.h"
#include "halide_buffer.h"
#include "runtime_state.h"
#include "status_macros.h"

namespace embag::internal::gpu {
namespace {

const halide_type_t kInt32(halide_type_int, 32), kInt64(halide_type_int, 64),
    kFloat32(halide_type_float, 32);

Status too_large(const std::string& what, int64_t value, int64_t limit) {
  return Status(StatusCode::kUnsupported, "the call has " + std::to_string(value) + " " + what +
                                              ", but embag's GPU kernels take at most " +
                                              std::to_string(limit));
}

// The launch sizes CUDA's grids allow (gpu_plan.h), for every table and the batch.
Status check_sizes(const BatchedInputs& in, const BatchedPlan& plan) {
  const bool cuda = plan.device.type == DeviceType::kCUDA;
  const int64_t extent = cuda ? kMaxCudaExtent : std::numeric_limits<int32_t>::max();
  const int64_t columns = cuda ? kMaxCudaColumns : std::numeric_limits<int32_t>::max();
  if (plan.num_bags + 1 > extent) return too_large("bags", plan.num_bags, extent - 1);
  if (plan.num_indices > extent) return too_large("indices", plan.num_indices, extent);
  if (plan.num_features * plan.num_bags > extent) {
    return too_large("bags in all features", plan.num_features * plan.num_bags, extent);
  }
  for (const BatchedTable& t : in.tables) {
    if (t.weight.shape[0] > extent) return too_large("table rows", t.weight.shape[0], extent);
    if (t.weight.shape[1] > columns) return too_large("columns", t.weight.shape[1], columns);
  }
  return Status::Ok();
}

Pipeline fused_pipeline(Optimizer optimizer) {
  switch (optimizer) {
    case Optimizer::kAdagrad:
      return Pipeline::kFusedAdagrad;
    case Optimizer::kRowwiseAdagrad:
      return Pipeline::kFusedRowwiseAdagrad;
    case Optimizer::kAdam:
      return Pipeline::kFusedAdam;
    case Optimizer::kSgd:
      break;
  }
  return Pipeline::kFusedSgd;
}

// A host array of int32 values uploaded into new scratch (at least one element).
Status upload_int32(const std::vector<int32_t>& values, DeviceArray* array) {
  const std::vector<int32_t> one = {0};
  const std::vector<int32_t>& data = values.empty() ? one : values;
  EMBAG_RETURN_IF_ERROR(array->allocate(kInt32, static_cast<int64_t>(data.size())));
  return array->write(data.data());
}

}  // namespace

struct BatchedDeviceCall::Open {
  CallContext call;
  Session session{call};
  Isa isa{};
};

BatchedDeviceCall::BatchedDeviceCall(const Device& device, const Execution& execution)
    : device_(device), execution_(execution) {}

BatchedDeviceCall::~BatchedDeviceCall() = default;

Status BatchedDeviceCall::open() {
  if (open_ != nullptr) return Status::Ok();
  Isa isa{};
  EMBAG_RETURN_IF_ERROR(select_isa(device_, &isa));
  auto opened = std::make_unique<Open>();
  opened->isa = isa;
  EMBAG_RETURN_IF_ERROR(opened->session.open(device_, execution_));
  open_ = std::move(opened);
  return Status::Ok();
}

Status BatchedDeviceCall::read(const TensorView& view, int64_t count, void* host) {
  EMBAG_RETURN_IF_ERROR(open());
  DeviceArray array(open_->call);
  EMBAG_RETURN_IF_ERROR(array.wrap(view.data, view.dtype, count));
  return array.read(host);
}

Status BatchedDeviceCall::check_forward(const BatchedPlan& plan) {
  EMBAG_RETURN_IF_ERROR(open());
  for (int64_t t = 0; t < plan.num_tables; ++t) {
    const KernelEntry* kernel = nullptr;
    Status s = need_kernel({Pipeline::kForward, plan.pooling[t], plan.dtype, plan.index_dtype},
                           open_->isa, &kernel);
    if (!s.ok()) return Status(s.code(), "table " + std::to_string(t) + ": " + s.message());
  }
  return Status::Ok();
}

Status BatchedDeviceCall::forward(const BatchedInputs& in, const BatchedPlan& plan,
                                  const TensorView& output) {
  EMBAG_RETURN_IF_ERROR(check_forward(plan));
  EMBAG_RETURN_IF_ERROR(check_sizes(in, plan));
  CallContext& call = open_->call;
  const int64_t B = plan.num_bags, N = plan.num_indices;
  const KernelEntry* last = nullptr;
  if (B == 0) return Status::Ok();
  const halide_type_t index_type = plan.index_dtype == DType::kInt32 ? kInt32 : kInt64;
  const halide_type_t value_type = halide_type_of(plan.dtype);
  DeviceArray indices(call), psw(call);
  // (with no index, one-element stand-ins: no bag reads them)
  EMBAG_RETURN_IF_ERROR(N > 0 ? indices.wrap(in.indices.data, plan.index_dtype, N)
                              : indices.allocate(index_type, 1));
  if (in.per_sample_weights != nullptr) {
    EMBAG_RETURN_IF_ERROR(N > 0 ? psw.wrap(in.per_sample_weights->data, plan.dtype, N)
                                : psw.allocate(value_type, 1));
  }
  const size_t element = dtype_size(plan.dtype), index_size = dtype_size(plan.index_dtype);
  const int64_t row_stride = output.strides[0];
  for (int64_t f = 0; f < plan.num_features; ++f) {
    const int64_t t = plan.feature_table[f], D = plan.dims[f];
    if (D == 0) continue;
    const KernelEntry* kernel = nullptr;
    EMBAG_RETURN_IF_ERROR(need_kernel(
        {Pipeline::kForward, plan.pooling[t], plan.dtype, plan.index_dtype}, open_->isa, &kernel));
    const TensorView& w = in.tables[t].weight;
    DeviceArray layout(call), weight(call), out(call), argmax(call);
    // The feature's B + 1 offsets (absolute positions into the whole indices array).
    EMBAG_RETURN_IF_ERROR(layout.allocate(index_type, B + 1));
    EMBAG_RETURN_IF_ERROR(layout.write(static_cast<const unsigned char*>(plan.offsets) +
                                       static_cast<size_t>(f * B) * index_size));
    // A table with no rows has only empty bags (validated); the kernel reads a stand-in, never.
    EMBAG_RETURN_IF_ERROR(w.shape[0] > 0 ? weight.wrap(w.data, w.dtype, w.shape[0], D, w.strides[0])
                                         : weight.allocate(value_type, 1, D));
    const bool in_place = device_.type == DeviceType::kCUDA;
    if (in_place) {
      const auto* block = static_cast<const unsigned char*>(output.data) +
                          static_cast<size_t>(plan.columns[f]) * element;
      EMBAG_RETURN_IF_ERROR(out.wrap(block, plan.dtype, B, D, row_stride));
    } else {
      EMBAG_RETURN_IF_ERROR(out.allocate(value_type, B, D));
    }
    const int32_t padding = plan.padding[t];
    const int32_t bags_per_task = 1;  // (a CPU schedule knob; GPU kernels ignore it)
    KernelArgs args;
    args.buffer("weight", weight.get())
        .buffer("indices", indices.get())
        .buffer("offsets", layout.get())
        .scalar("padding_idx", &padding)
        .scalar("bags_per_task", &bags_per_task);
    if (plan.pooling[t] == Pooling::kWeightedSum) args.buffer("per_sample_weights", psw.get());
    if (plan.pooling[t] == Pooling::kMax) {
      // (batched calls return no argmax: the GPU max kernel writes it into scratch)
      EMBAG_RETURN_IF_ERROR(argmax.allocate(kInt64, B, D));
      args.buffer("output.0", out.get()).buffer("output.1", argmax.get());
    } else {
      args.buffer("output", out.get());
    }
    EMBAG_RETURN_IF_ERROR(run_kernel(call, *kernel, args));
    if (!in_place) {
      EMBAG_RETURN_IF_ERROR(
          copy_into_columns(call, out, output.data, B, D, row_stride, plan.columns[f]));
    }
    last = kernel;
  }
  if (last != nullptr) record_last_variant(last->name);
  return Status::Ok();
}

Status BatchedDeviceCall::check_fused(const BatchedPlan& plan, Optimizer optimizer) {
  EMBAG_RETURN_IF_ERROR(open());
  const KernelEntry* kernel = nullptr;
  return need_kernel({fused_pipeline(optimizer), std::nullopt, plan.dtype, std::nullopt},
                     open_->isa, &kernel);
}

Status BatchedDeviceCall::fused_update(const BatchedInputs& in, const BatchedPlan& plan,
                                       const BatchedRowGroups& groups,
                                       const TensorView& grad_output, const OptimizerConfig& config,
                                       const std::vector<OptimizerState>& state,
                                       float bias_correction1, float bias_correction2) {
  EMBAG_RETURN_IF_ERROR(check_fused(plan, config.optimizer));
  EMBAG_RETURN_IF_ERROR(check_sizes(in, plan));
  const KernelEntry* kernel = nullptr;
  EMBAG_RETURN_IF_ERROR(
      need_kernel({fused_pipeline(config.optimizer), std::nullopt, plan.dtype, std::nullopt},
                  open_->isa, &kernel));
  const int64_t U = static_cast<int64_t>(groups.keys.size());
  if (U == 0) {
    record_last_variant(kernel->name);
    return Status::Ok();
  }
  CallContext& call = open_->call;
  // The groups as the kernel reads them (int32: every count fits, check_sizes).
  std::vector<int32_t> segments(groups.segments.begin(), groups.segments.end());
  std::vector<int32_t> positions(groups.sorted_positions.begin(), groups.sorted_positions.end());
  std::vector<int32_t> bags(groups.sorted_bags.begin(), groups.sorted_bags.end());
  std::vector<int32_t> rows(static_cast<size_t>(U)), group_table(static_cast<size_t>(U));
  for (int64_t u = 0; u < U; ++u) {
    const uint64_t key = groups.keys[u];
    const int64_t t = static_cast<int64_t>(
        std::upper_bound(groups.table_base.begin(), groups.table_base.end(), key) -
        groups.table_base.begin() - 1);
    group_table[u] = static_cast<int32_t>(t);
    rows[u] = static_cast<int32_t>(key - groups.table_base[t]);
  }
  std::vector<int32_t> columns(plan.columns.begin(), plan.columns.end());
  DeviceArray d_segments(call), d_positions(call), d_bags(call), d_rows(call), d_columns(call),
      d_divisor(call), grad(call), psw(call);
  EMBAG_RETURN_IF_ERROR(upload_int32(segments, &d_segments));
  EMBAG_RETURN_IF_ERROR(upload_int32(positions, &d_positions));
  EMBAG_RETURN_IF_ERROR(upload_int32(bags, &d_bags));
  EMBAG_RETURN_IF_ERROR(upload_int32(rows, &d_rows));
  EMBAG_RETURN_IF_ERROR(upload_int32(columns, &d_columns));
  EMBAG_RETURN_IF_ERROR(upload_int32(groups.bag_valid, &d_divisor));
  // (positions exist, so B > 0 and grad_output has rows)
  EMBAG_RETURN_IF_ERROR(grad.wrap(grad_output.data, plan.dtype, plan.num_bags, grad_output.shape[1],
                                  grad_output.strides[0]));
  EMBAG_RETURN_IF_ERROR(in.per_sample_weights != nullptr && plan.num_indices > 0
                            ? psw.wrap(in.per_sample_weights->data, plan.dtype, plan.num_indices)
                            : psw.allocate(halide_type_of(plan.dtype), 1));

  const int32_t num_bags = static_cast<int32_t>(plan.num_bags);
  const float learning_rate = config.learning_rate, eps = config.eps, beta1 = config.beta1,
              beta2 = config.beta2, weight_decay = config.weight_decay;
  const bool l2_decay = config.weight_decay_mode == WeightDecayMode::kL2;
  const bool decoupled_decay = config.weight_decay_mode == WeightDecayMode::kDecoupled;
  const bool rowwise = config.optimizer == Optimizer::kRowwiseAdagrad;
  // (one float32 multiply, then the subtraction, as the CPU path computes it)
  const float product = learning_rate * weight_decay;
  const float decoupled_correction = 1.0f - product;
  // Groups are sorted by (table, row): each table's are one run, one launch each.
  for (int64_t begin = 0; begin < U;) {
    const int64_t t = group_table[begin];
    int64_t end = begin;
    while (end < U && group_table[end] == t) ++end;
    const TensorView& w = in.tables[t].weight;
    const int64_t V = w.shape[0], D = w.shape[1];
    const int32_t first_row = static_cast<int32_t>(begin);
    const int32_t num_rows = static_cast<int32_t>(end - begin);
    begin = end;
    if (D == 0) continue;  // no column to fold or update
    DeviceArray weight_in(call), weight(call), m1_in(call), m1(call), m2_in(call), m2(call);
    EMBAG_RETURN_IF_ERROR(weight_in.wrap(w.data, w.dtype, V, D, w.strides[0]));
    EMBAG_RETURN_IF_ERROR(weight.wrap(w.data, w.dtype, V, D, w.strides[0]));
    // The kernel's intermediate stages, in stream-ordered scratch (see the generator).
    DeviceArray gradient(call), row_sum(call), new_m1(call), new_m2(call);
    EMBAG_RETURN_IF_ERROR(gradient.allocate(kFloat32, num_rows, D));
    const int32_t pooling = static_cast<int32_t>(plan.pooling[t]);
    KernelArgs args;
    args.buffer("segments", d_segments.get())
        .buffer("sorted_positions", d_positions.get())
        .buffer("sorted_bags", d_bags.get())
        .buffer("rows", d_rows.get())
        .buffer("feature_columns", d_columns.get())
        .buffer("bag_divisor", d_divisor.get())
        .scalar("first_row", &first_row)
        .scalar("num_rows", &num_rows)
        .scalar("num_bags", &num_bags)
        .scalar("pooling", &pooling)
        .scalar("learning_rate", &learning_rate)
        .scalar("eps", &eps)
        .scalar("beta1", &beta1)
        .scalar("beta2", &beta2)
        .scalar("weight_decay", &weight_decay)
        .scalar("l2_decay", &l2_decay)
        .scalar("decoupled_decay", &decoupled_decay)
        .scalar("decoupled_correction", &decoupled_correction)
        .scalar("bias_correction1", &bias_correction1)
        .scalar("bias_correction2", &bias_correction2)
        .buffer("grad_output", grad.get())
        .buffer("per_sample_weights", psw.get())
        .buffer("weight_in", weight_in.get())
        .buffer("weight", weight.get())
        .buffer("gradient", gradient.get());
    if (config.optimizer != Optimizer::kSgd) {
      const TensorView& m = state[t].momentum1;
      if (rowwise) {
        EMBAG_RETURN_IF_ERROR(m1_in.wrap(m.data, DType::kFloat32, V));
        EMBAG_RETURN_IF_ERROR(m1.wrap(m.data, DType::kFloat32, V));
        EMBAG_RETURN_IF_ERROR(row_sum.allocate(kFloat32, num_rows));
        EMBAG_RETURN_IF_ERROR(new_m1.allocate(kFloat32, num_rows));
        args.buffer("row_sum", row_sum.get());
      } else {
        EMBAG_RETURN_IF_ERROR(m1_in.wrap(m.data, DType::kFloat32, V, D, D));
        EMBAG_RETURN_IF_ERROR(m1.wrap(m.data, DType::kFloat32, V, D, D));
        EMBAG_RETURN_IF_ERROR(new_m1.allocate(kFloat32, num_rows, D));
      }
      args.buffer("momentum1_in", m1_in.get())
          .buffer("momentum1", m1.get())
          .buffer("new_momentum1", new_m1.get());
    }
    if (config.optimizer == Optimizer::kAdam) {
      const TensorView& m = state[t].momentum2;
      EMBAG_RETURN_IF_ERROR(m2_in.wrap(m.data, DType::kFloat32, V, D, D));
      EMBAG_RETURN_IF_ERROR(m2.wrap(m.data, DType::kFloat32, V, D, D));
      EMBAG_RETURN_IF_ERROR(new_m2.allocate(kFloat32, num_rows, D));
      args.buffer("momentum2_in", m2_in.get())
          .buffer("momentum2", m2.get())
          .buffer("new_momentum2", new_m2.get());
    }
    EMBAG_RETURN_IF_ERROR(run_kernel(call, *kernel, args));
  }
  record_last_variant(kernel->name);
  return Status::Ok();
}

}  // namespace embag::internal::gpu
