// embag::batched_forward: every feature of every table in one parallel pass on embag's pool.
//
// Each task is a run of consecutive bags of one feature, and runs the very kernel the
// single-table forward would pick for that feature's table (same key, D and table class) on
// just those bags; the kernel's own parallel loop then runs inline (kernel_thread_pool.cpp), so
// the task is the unit of parallel work. A bag's result does not depend on which bags share its
// kernel call, so the output is bitwise that of one embag::forward call per feature.
//
// Balance: tasks are cut by estimated cost, (positions + 1) x D per bag (the rows gathered, plus
// the output row written), about four tasks per thread in all, never across features; the
// pool hands them out dynamically, so a huge table's feature is spread over every thread while
// a tiny one's is one task.
//
// A call whose tensors are on a GPU is validated here (its offsets and indices read to the host
// once) and then runs the single-table GPU forward kernel per feature
// (runtime/gpu/gpu_batched.cpp).
#include <algorithm>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "api_guard.h"
#include "batched_plan.h"
#include "call_context.h"
#include "forward_plan.h"
#include "gpu/gpu_batched.h"
#include "halide_buffer.h"
#include "kernel_call.h"
#include "kernel_registry.h"
#include "kernel_thread_pool.h"
#include "runtime_state.h"
#include "table_class.h"

namespace embag {
namespace {

using internal::BatchedPlan;
using internal::HalideBuffer;
using internal::KernelEntry;
using internal::Pooling;

// The forward kernel of each table, as select_kernels in forward.cpp picks it for a call that
// asks for no argmax.
Status select_table_kernels(const BatchedInputs& in, const BatchedPlan& plan,
                            std::vector<const KernelEntry*>* kernels) {
  Isa isa;
  if (Status s = internal::resolve_isa(&isa); !s.ok()) return s;
  kernels->assign(static_cast<size_t>(plan.num_tables), nullptr);
  for (int64_t t = 0; t < plan.num_tables; ++t) {
    const TensorView& w = in.tables[t].weight;
    const internal::TableClass table_class = internal::table_class_of(w);
    const internal::KernelKey key{internal::Pipeline::kForward, plan.pooling[t], w.dtype,
                                  plan.index_dtype};
    const KernelEntry* kernel = nullptr;
    if (plan.pooling[t] == Pooling::kMax) {
      kernel = internal::find_kernel(
          {internal::Pipeline::kForward, Pooling::kMaxValues, w.dtype, plan.index_dtype}, isa,
          w.shape[1], table_class);
    }
    if (kernel == nullptr && plan.pooling[t] != Pooling::kMax) {
      kernel = internal::find_kernel(key, isa, w.shape[1], table_class);
    }
    if (kernel == nullptr) {
      return Status(StatusCode::kUnsupported,
                    "table " + std::to_string(t) + ": no " + internal::describe(key) +
                        " kernel (without argmax) was compiled for " + isa_name(isa));
    }
    (*kernels)[t] = kernel;
  }
  return Status::Ok();
}

struct ForwardTask {
  int64_t feature;
  int64_t bag_begin, bag_end;
};

// Cuts every feature's bags into tasks of about total_cost / (4 x threads).
std::vector<ForwardTask> plan_tasks(const BatchedPlan& plan) {
  const int64_t F = plan.num_features, B = plan.num_bags;
  auto bag_cost = [&](int64_t f, int64_t b) {
    return (plan.offset(f * B + b + 1) - plan.offset(f * B + b) + 1) * plan.dims[f];
  };
  int64_t total = 0;
  for (int64_t f = 0; f < F; ++f) {
    total += (plan.offset((f + 1) * B) - plan.offset(f * B) + B) * plan.dims[f];
  }
  const int64_t wanted_tasks = 4 * static_cast<int64_t>(internal::kernel_threads());
  const int64_t grain = std::max<int64_t>(total / wanted_tasks, 1);
  std::vector<ForwardTask> tasks;
  for (int64_t f = 0; f < F; ++f) {
    if (plan.dims[f] == 0 || B == 0) continue;
    int64_t begin = 0, cost = 0;
    for (int64_t b = 0; b < B; ++b) {
      cost += bag_cost(f, b);
      if (cost >= grain || b + 1 == B) {
        tasks.push_back({f, begin, b + 1});
        begin = b + 1;
        cost = 0;
      }
    }
  }
  return tasks;
}

struct ForwardPass {
  const BatchedInputs* in;
  const BatchedPlan* plan;
  const TensorView* output;
  const std::vector<const KernelEntry*>* kernels;
  const std::vector<ForwardTask>* tasks;
  internal::CallContext* call;
  std::mutex mutex;
  Status first_error;
};

Status run_task(ForwardPass& pass, const ForwardTask& task) {
  const BatchedPlan& plan = *pass.plan;
  const int64_t f = task.feature, t = plan.feature_table[f], D = plan.dims[f];
  const int64_t bags = task.bag_end - task.bag_begin;
  const TensorView& w = pass.in->tables[t].weight;
  const size_t element = dtype_size(plan.dtype);
  unsigned char* out =
      static_cast<unsigned char*>(pass.output->data) +
      static_cast<size_t>(task.bag_begin * pass.output->strides[0] + plan.columns[f]) * element;
  if (w.shape[0] == 0) {  // no rows: every bag is empty (validated), as forward.cpp writes it
    for (int64_t b = 0; b < bags; ++b) {
      std::memset(out + static_cast<size_t>(b * pass.output->strides[0]) * element, 0,
                  static_cast<size_t>(D) * element);
    }
    return Status::Ok();
  }
  const KernelEntry& kernel = *(*pass.kernels)[t];
  HalideBuffer weight(w.data, w.dtype, w.shape[0], D, w.strides[0]);
  HalideBuffer indices(plan.indices, plan.index_dtype, plan.positions_end);
  const size_t index_size = dtype_size(plan.index_dtype);
  HalideBuffer offsets(static_cast<const unsigned char*>(plan.offsets) +
                           static_cast<size_t>(f * plan.num_bags + task.bag_begin) * index_size,
                       plan.index_dtype, bags + 1);
  HalideBuffer output(out, plan.dtype, bags, D, pass.output->strides[0]);
  const int32_t padding = plan.padding[t];
  const int32_t bags_per_task = static_cast<int32_t>(bags);  // one task: this one
  internal::KernelArgs args;
  args.buffer("weight", weight.get())
      .buffer("indices", indices.get())
      .buffer("offsets", offsets.get())
      .buffer("output", output.get())
      .scalar("padding_idx", &padding)
      .scalar("bags_per_task", &bags_per_task);
  std::optional<HalideBuffer> psw;
  if (kernel.pooling == Pooling::kWeightedSum) {
    psw.emplace(pass.in->per_sample_weights->data, plan.dtype, plan.positions_end);
    args.buffer("per_sample_weights", psw->get());
  }
  return internal::run_kernel(*pass.call, kernel, args);
}

void run_task_body(void* context, int i) {
  auto& pass = *static_cast<ForwardPass*>(context);
  Status s = run_task(pass, (*pass.tasks)[static_cast<size_t>(i)]);
  if (!s.ok()) {
    std::lock_guard<std::mutex> lock(pass.mutex);
    if (pass.first_error.ok()) pass.first_error = s;
  }
}

Status check_output_overlap(const BatchedInputs& in, const TensorView& output) {
  if (Status s = internal::check_no_overlap({{&output, "output"}},
                                            {{&in.indices, "indices"},
                                             {&in.offsets, "offsets"},
                                             {in.per_sample_weights, "per_sample_weights"}});
      !s.ok())
    return s;
  for (size_t t = 0; t < in.tables.size(); ++t) {
    const std::string name = "table " + std::to_string(t);
    if (Status s = internal::check_no_overlap({{&output, "output"}},
                                              {{&in.tables[t].weight, name.c_str()}});
        !s.ok())
      return s;
  }
  return Status::Ok();
}

Status validate_all(const BatchedInputs& in, const TensorView& output, BatchedPlan* plan, bool copy,
                    std::vector<const KernelEntry*>* kernels) {
  if (Status s = internal::validate_batched_inputs(in, plan, copy); !s.ok()) return s;
  if (Status s = internal::validate_batched_output(output, "output", *plan); !s.ok()) return s;
  if (Status s = check_output_overlap(in, output); !s.ok()) return s;
  return select_table_kernels(in, *plan, kernels);
}

// A GPU call: validated on the host (offsets and indices read once), then run on the device.
Status gpu_forward(const BatchedInputs& inputs, const TensorView& output,
                   const Execution& execution, bool run) {
  internal::gpu::BatchedDeviceCall gpu(internal::batched_device(inputs), execution);
  BatchedPlan plan;
  if (Status s = internal::validate_batched_inputs(inputs, &plan, /*copy=*/true, &gpu); !s.ok())
    return s;
  if (Status s = internal::validate_batched_output(output, "output", plan); !s.ok()) return s;
  if (Status s = check_output_overlap(inputs, output); !s.ok()) return s;
  return run ? gpu.forward(inputs, plan, output) : gpu.check_forward(plan);
}

}  // namespace

int64_t batched_num_bags(const BatchedInputs& inputs) {
  const int64_t F = static_cast<int64_t>(inputs.feature_table.size());
  if (F == 0 || inputs.offsets.ndim != 1 || inputs.offsets.shape[0] < 1) return 0;
  const int64_t entries = inputs.offsets.shape[0];
  return (entries - 1) % F == 0 ? (entries - 1) / F : 0;
}

int64_t batched_output_columns(const BatchedInputs& inputs) {
  const int64_t F = static_cast<int64_t>(inputs.feature_table.size());
  const int64_t T = static_cast<int64_t>(inputs.tables.size());
  if (!inputs.feature_columns.empty() && static_cast<int64_t>(inputs.feature_columns.size()) != F)
    return 0;
  int64_t packed = 0, end = 0;
  for (int64_t f = 0; f < F; ++f) {
    const int64_t t = inputs.feature_table[f];
    if (t < 0 || t >= T || inputs.tables[t].weight.ndim != 2) return 0;
    const int64_t D = inputs.tables[t].weight.shape[1];
    const int64_t column = inputs.feature_columns.empty() ? packed : inputs.feature_columns[f];
    packed += D;
    end = std::max(end, column + D);
  }
  return end;
}

Status validate_batched_forward(const BatchedInputs& inputs, const TensorView& output,
                                const Execution& execution) {
  return internal::guard_api([&] {
    if (internal::batched_device(inputs).type != DeviceType::kCPU) {
      return gpu_forward(inputs, output, execution, /*run=*/false);
    }
    BatchedPlan plan;
    std::vector<const KernelEntry*> kernels;
    return validate_all(inputs, output, &plan, /*copy=*/false, &kernels);
  });
}

Status batched_forward(const BatchedInputs& inputs, const TensorView& output,
                       const Execution& execution) {
  return internal::guard_api([&] {
    if (internal::batched_device(inputs).type != DeviceType::kCPU) {
      return gpu_forward(inputs, output, execution, /*run=*/true);
    }
    BatchedPlan plan;
    std::vector<const KernelEntry*> kernels;
    if (Status s = validate_all(inputs, output, &plan, /*copy=*/true, &kernels); !s.ok()) return s;
    const std::vector<ForwardTask> tasks = plan_tasks(plan);
    internal::CallContext call;
    ForwardPass pass{&inputs, &plan, &output, &kernels, &tasks, &call, {}, Status::Ok()};
    if (!tasks.empty()) {
      internal::parallel_for(static_cast<int>(tasks.size()), &run_task_body, &pass);
    }
    if (!pass.first_error.ok()) return pass.first_error;
    if (plan.num_tables > 0) internal::record_last_variant(kernels[0]->name);
    return Status::Ok();
  });
}

}  // namespace embag
