// embag::backward: validate, sort the valid positions by row (stable, no atomics), run the
// per-row / per-column Halide kernels, and lay the result out dense or sparse.
#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "api_guard.h"
#include "bag_layout.h"
#include "forward_plan.h"
#include "gpu/gpu_forward.h"
#include "halide_buffer.h"
#include "kernel_call.h"
#include "kernel_registry.h"
#include "kernel_thread_pool.h"
#include "runtime_state.h"
#include "status_macros.h"

namespace embag {
namespace {

using internal::BagLayout;
using internal::CallContext;
using internal::ForwardPlan;
using internal::HalideBuffer;
using internal::KernelArgs;
using internal::KernelEntry;
using internal::KernelKey;
using internal::Pipeline;
using internal::Pooling;

ForwardInputs forward_inputs_of(const BackwardInputs& in) {
  return ForwardInputs{in.weight, in.input, in.offsets, in.per_sample_weights};
}

// The valid positions (inside a bag, not padding) grouped by row: rows ascending, and within a
// row the positions in input order. Built by an LSD radix sort on the row, which is stable, so
// each row's gradient is folded in input order whatever the thread count; its cost grows with
// the batch (and the number of digits of V), never with V itself.
struct RowGroups {
  std::vector<int64_t> rows;              // U distinct rows, ascending
  std::vector<int32_t> segments;          // U + 1: row u is sorted_positions[seg[u], seg[u+1])
  std::vector<int32_t> sorted_positions;  // M valid positions
  std::vector<int32_t> position_bag;      // bag of each position in [0, positions_end)
  std::vector<int32_t> bag_valid;         // B: valid positions per bag
};

// Each position's bag and each bag's count of valid positions; with `keys` / `values`, also the
// (row, position) pairs of the valid positions in input order, for the sort.
void assign_bags(const BagLayout& layout, const ForwardPlan& plan, RowGroups* g,
                 std::vector<uint32_t>* keys, std::vector<int32_t>* values) {
  const int64_t B = plan.num_bags;
  const TensorView offsets =
      make_view_1d(const_cast<void*>(layout.offsets), layout.index_dtype, B + 1);
  const TensorView indices =
      make_view_1d(const_cast<void*>(layout.indices), layout.index_dtype, plan.positions_end);

  g->position_bag.assign(static_cast<size_t>(plan.positions_end), -1);
  g->bag_valid.assign(static_cast<size_t>(B), 0);
  if (keys != nullptr) {
    keys->reserve(static_cast<size_t>(plan.positions_end));
    values->reserve(static_cast<size_t>(plan.positions_end));
  }
  for (int64_t b = 0; b < B; ++b) {
    const int64_t end = internal::load_index(offsets, b + 1);
    for (int64_t p = internal::load_index(offsets, b); p < end; ++p) {
      g->position_bag[p] = static_cast<int32_t>(b);
      const int64_t row = internal::load_index(indices, p);
      if (row == plan.padding_idx) continue;
      ++g->bag_valid[b];
      if (keys != nullptr) {
        keys->push_back(static_cast<uint32_t>(row));
        values->push_back(static_cast<int32_t>(p));
      }
    }
  }
}

void group_positions_by_row(const BagLayout& layout, const ForwardPlan& plan, RowGroups* g) {
  std::vector<uint32_t> keys;
  std::vector<int32_t> values;
  assign_bags(layout, plan, g, &keys, &values);

  // LSD radix sort, 11 bits a pass, as many passes as V - 1 has digits.
  constexpr int kBits = 11;
  constexpr uint32_t kBuckets = 1u << kBits;
  const size_t m = keys.size();
  std::vector<uint32_t> keys_out(m);
  std::vector<int32_t> values_out(m);
  const uint64_t largest = plan.num_rows > 0 ? static_cast<uint64_t>(plan.num_rows - 1) : 0;
  for (int shift = 0; shift == 0 || (largest >> shift) != 0; shift += kBits) {
    std::vector<size_t> start(kBuckets + 1, 0);
    for (uint32_t k : keys) ++start[((k >> shift) & (kBuckets - 1)) + 1];
    for (uint32_t i = 0; i < kBuckets; ++i) start[i + 1] += start[i];
    for (size_t i = 0; i < m; ++i) {
      const size_t at = start[(keys[i] >> shift) & (kBuckets - 1)]++;
      keys_out[at] = keys[i];
      values_out[at] = values[i];
    }
    keys.swap(keys_out);
    values.swap(values_out);
  }

  g->sorted_positions = std::move(values);
  g->rows.clear();
  g->segments.clear();
  for (size_t i = 0; i < m; ++i) {
    if (i == 0 || keys[i] != keys[i - 1]) {
      g->rows.push_back(keys[i]);
      g->segments.push_back(static_cast<int32_t>(i));
    }
  }
  g->segments.push_back(static_cast<int32_t>(m));
}

// The kernels a backward call needs on the selected ISA.
struct BackwardKernels {
  const KernelEntry* rows = nullptr;  // the weight gradient, every mode
  const KernelEntry* psw = nullptr;   // the per_sample_weights gradient, when asked for
  // The dense gradient in one pass, where it applies (see dense_scatter_kernel); then `rows`
  // is not run and positions are not sorted.
  const KernelEntry* dense_scatter = nullptr;
};

// The embag_dense_scatter kernel for a validated call where it gives the row fold's bits: a dense
// gradient without scale_grad_by_freq (which needs each row's count: the fold's row groups), of a
// float32 / float64 table (accumulated in place; 16-bit tables accumulate in float32 and round
// once), with something to scatter. Null otherwise, or when none was compiled.
const KernelEntry* dense_scatter_kernel(const BackwardInputs& in, const Options& opt,
                                        const ForwardPlan& plan) {
  const DType w = in.weight.dtype;
  if (opt.sparse || opt.scale_grad_by_freq || (w != DType::kFloat32 && w != DType::kFloat64) ||
      plan.num_bags == 0 || plan.dim == 0 || plan.num_rows == 0 || plan.positions_end == 0) {
    return nullptr;
  }
  Isa isa;
  if (!internal::resolve_isa(&isa).ok()) return nullptr;
  const bool max = plan.pooling == Pooling::kMax;
  return internal::find_kernel({Pipeline::kDenseScatter, plan.pooling, w,
                                max ? std::nullopt : std::optional<DType>(in.input.dtype)},
                               isa);
}

Status select_backward_kernels(const BackwardInputs& in, const BackwardOutputs& out,
                               const Options& opt, const ForwardPlan& plan, BackwardKernels* k) {
  Isa isa;
  EMBAG_RETURN_IF_ERROR(internal::resolve_isa(&isa));
  const DType w = in.weight.dtype;
  auto missing = [&](const KernelKey& key) {
    return Status(StatusCode::kUnsupported,
                  "no " + internal::describe(key) + " kernel was compiled for " + isa_name(isa));
  };
  const KernelKey rows_key{Pipeline::kBackwardRows, plan.pooling, w, std::nullopt};
  k->rows = internal::find_kernel(rows_key, isa);
  if (!k->rows) return missing(rows_key);
  k->dense_scatter = dense_scatter_kernel(in, opt, plan);
  if (out.grad_per_sample_weights) {
    const KernelKey psw_key{Pipeline::kPswGrad, std::nullopt, w, in.input.dtype};
    k->psw = internal::find_kernel(psw_key, isa);
    if (!k->psw) return missing(psw_key);
  }
  return Status::Ok();
}

// Zeroes rows [0, V) of a (V, D) gradient in parallel, except that rows listed in `rows` get
// the matching row of `values` (U x D, contiguous) instead.
struct DenseScatter {
  unsigned char* grad;
  int64_t row_stride_bytes;
  int64_t row_bytes;
  int64_t num_rows;
  const std::vector<int64_t>* rows;
  const unsigned char* values;
  int tasks;
};

void dense_scatter_task(void* context, int task) {
  const auto* s = static_cast<const DenseScatter*>(context);
  const int64_t begin = s->num_rows * task / s->tasks;
  const int64_t end = s->num_rows * (task + 1) / s->tasks;
  // Zeroes rows [from, to): one memset for the whole run when rows are contiguous.
  auto zero_rows = [s](int64_t from, int64_t to) {
    if (from >= to) return;
    if (s->row_stride_bytes == s->row_bytes) {
      std::memset(s->grad + from * s->row_bytes, 0,
                  static_cast<size_t>((to - from) * s->row_bytes));
      return;
    }
    for (int64_t r = from; r < to; ++r) {
      std::memset(s->grad + r * s->row_stride_bytes, 0, static_cast<size_t>(s->row_bytes));
    }
  };
  // rows is ascending: walk the listed rows of this block, zeroing the gaps between them.
  auto next = std::lower_bound(s->rows->begin(), s->rows->end(), begin);
  int64_t zero_from = begin;
  for (; next != s->rows->end() && *next < end; ++next) {
    const int64_t r = *next;
    zero_rows(zero_from, r);
    const size_t u = static_cast<size_t>(next - s->rows->begin());
    std::memcpy(s->grad + r * s->row_stride_bytes,
                s->values + u * static_cast<size_t>(s->row_bytes),
                static_cast<size_t>(s->row_bytes));
    zero_from = r + 1;
  }
  zero_rows(zero_from, end);
}

Status run_rows_kernel(CallContext& call, const KernelEntry& kernel, const BackwardInputs& in,
                       const ForwardPlan& plan, const Options& opt, const RowGroups& groups,
                       void* values, int64_t values_row_stride) {
  const int64_t U = static_cast<int64_t>(groups.rows.size());
  const int64_t D = plan.dim;
  HalideBuffer grad(in.grad_output.data, in.grad_output.dtype, plan.num_bags, D,
                    in.grad_output.strides[0]);
  HalideBuffer segments(groups.segments.data(), DType::kInt32, U + 1);
  HalideBuffer sorted(groups.sorted_positions.data(), DType::kInt32,
                      static_cast<int64_t>(groups.sorted_positions.size()));
  HalideBuffer position_bag(groups.position_bag.data(), DType::kInt32,
                            static_cast<int64_t>(groups.position_bag.size()));
  HalideBuffer out(values, in.weight.dtype, U, D, values_row_stride);
  const bool scale = opt.scale_grad_by_freq;
  KernelArgs args;
  args.buffer("grad_output", grad.get())
      .buffer("segments", segments.get())
      .buffer("sorted_positions", sorted.get())
      .buffer("position_bag", position_bag.get())
      .scalar("scale_grad_by_freq", &scale)
      .buffer("values", out.get());
  std::optional<HalideBuffer> psw, divisor, argmax, rows;
  switch (*kernel.pooling) {
    case Pooling::kWeightedSum:
      psw.emplace(in.per_sample_weights->data, in.per_sample_weights->dtype, plan.positions_end);
      args.buffer("per_sample_weights", psw->get());
      break;
    case Pooling::kMean:
      divisor.emplace(groups.bag_valid.data(), DType::kInt32, plan.num_bags);
      args.buffer("bag_divisor", divisor->get());
      break;
    case Pooling::kMax:
      argmax.emplace(in.argmax->data, DType::kInt64, plan.num_bags, D, in.argmax->strides[0]);
      rows.emplace(groups.rows.data(), DType::kInt64, U);
      args.buffer("argmax", argmax->get()).buffer("rows", rows->get());
      break;
    default:
      break;
  }
  return internal::run_kernel(call, kernel, args);
}

// Everything up to the kernels: validation of inputs and outputs, the layout and the row groups.
// The index arrays are copied into `snapshot` and validated there; the layout, the groups and
// (through snapshot->apply) the kernels use the copies.
Status prepare(const BackwardInputs& in, const BackwardOutputs& out, const Options& opt,
               ForwardPlan* plan, BagLayout* layout, RowGroups* groups,
               internal::IndexSnapshot* snapshot) {
  EMBAG_RETURN_IF_ERROR(
      internal::validate_forward_inputs(forward_inputs_of(in), opt, plan, snapshot));
  const ForwardInputs fin = snapshot->apply(forward_inputs_of(in));
  internal::make_bag_layout(fin, opt, *plan, layout);
  // (the dense scatter needs each position's bag, not the sort; U matters only to sparse
  // outputs)
  if (dense_scatter_kernel(in, opt, *plan) == nullptr) {
    group_positions_by_row(*layout, *plan, groups);
  } else {
    assign_bags(*layout, *plan, groups, nullptr, nullptr);
  }
  return internal::validate_backward_rest(in, out, opt, *plan,
                                          static_cast<int64_t>(groups->rows.size()), snapshot);
}

}  // namespace

Status sparse_gradient_rows(const BackwardInputs& inputs, const Options& options, int64_t* rows,
                            const Execution& execution) {
  return internal::guard_api([&] {
    ForwardPlan plan;
    internal::IndexSnapshot snapshot;
    EMBAG_RETURN_IF_ERROR(
        internal::validate_forward_inputs(forward_inputs_of(inputs), options, &plan, &snapshot));
    if (inputs.weight.device.type != DeviceType::kCPU) {
      return internal::gpu::backward(inputs, BackwardOutputs{}, options, execution, plan, rows);
    }
    const ForwardInputs fin = snapshot.apply(forward_inputs_of(inputs));
    BagLayout layout;
    internal::make_bag_layout(fin, options, plan, &layout);
    RowGroups groups;
    group_positions_by_row(layout, plan, &groups);
    *rows = static_cast<int64_t>(groups.rows.size());
    return Status::Ok();
  });
}

Status validate_backward(const BackwardInputs& inputs, const BackwardOutputs& outputs,
                         const Options& options, const Execution& execution) {
  return internal::guard_api([&] {
    ForwardPlan plan;
    if (inputs.weight.device.type != DeviceType::kCPU) {
      // U (which sizes sparse outputs) is known only after grouping on the device.
      const ForwardInputs fin = forward_inputs_of(inputs);
      EMBAG_RETURN_IF_ERROR(internal::validate_forward_inputs(fin, options, &plan));
      int64_t rows = 0;
      EMBAG_RETURN_IF_ERROR(
          internal::gpu::backward(inputs, outputs, options, execution, plan, &rows));
      return internal::validate_backward_rest(inputs, outputs, options, plan, rows);
    }
    BagLayout layout;
    RowGroups groups;
    internal::IndexSnapshot snapshot;
    EMBAG_RETURN_IF_ERROR(prepare(inputs, outputs, options, &plan, &layout, &groups, &snapshot));
    BackwardKernels kernels;
    return select_backward_kernels(inputs, outputs, options, plan, &kernels);
  });
}

namespace {

// The CPU backward of a validated call. Every allocation comes first; then the kernels, which
// write the sparse values and the per_sample_weights gradient; the copies that cannot fail (row
// ids, the dense scatter, zero tails) come last, so a kernel failure leaves those untouched.
Status cpu_backward(const BackwardInputs& in, const BackwardOutputs& out, const Options& opt,
                    const ForwardPlan& plan, const BagLayout& layout, const RowGroups& groups,
                    const BackwardKernels& kernels) {
  const int64_t V = plan.num_rows, D = plan.dim;
  const size_t element = dtype_size(in.weight.dtype);
  const int64_t U = static_cast<int64_t>(groups.rows.size());
  CallContext call;

  // The dense path's U x D values, scattered into the gradient below. Kept per calling thread
  // and reused: a fresh zero-filled vector each call cost a page fault per 4 KiB and a fill that
  // the kernel overwrites anyway (the values are fully written before they are read).
  thread_local std::vector<unsigned char> t_dense_values;
  std::vector<unsigned char>& dense_values = t_dense_values;
  if (!opt.sparse && V > 0 && D > 0 && kernels.dense_scatter == nullptr) {
    const size_t bytes = static_cast<size_t>(U * D) * element;
    if (dense_values.size() < bytes) dense_values.resize(bytes);
  }

  // Weight gradient rows (unless the dense scatter writes the gradient itself, below).
  if (U > 0 && D > 0 && kernels.dense_scatter == nullptr) {
    void* values = opt.sparse ? out.grad_weight_values->data : dense_values.data();
    const int64_t stride = opt.sparse ? out.grad_weight_values->strides[0] : D;
    Status s = run_rows_kernel(call, *kernels.rows, in, plan, opt, groups, values, stride);
    if (!s.ok()) return s;
  }

  // per_sample_weights gradient: positions in bags from the kernel, the rest 0.
  auto* gp = kernels.psw != nullptr ? static_cast<unsigned char*>(out.grad_per_sample_weights->data)
                                    : nullptr;
  if (gp != nullptr && plan.positions_end > 0 && D > 0) {
    HalideBuffer grad(in.grad_output.data, in.grad_output.dtype, plan.num_bags, D,
                      in.grad_output.strides[0]);
    HalideBuffer weight(in.weight.data, in.weight.dtype, V, D, in.weight.strides[0]);
    HalideBuffer indices(layout.indices, layout.index_dtype, plan.positions_end);
    HalideBuffer position_bag(groups.position_bag.data(), DType::kInt32, plan.positions_end);
    HalideBuffer result(gp, in.weight.dtype, plan.positions_end);
    const int32_t padding = plan.padding_idx;
    KernelArgs args;  // (kernels take their arguments by name, in any order)
    args.scalar("padding_idx", &padding)
        .buffer("grad_output", grad.get())
        .buffer("weight", weight.get())
        .buffer("indices", indices.get())
        .buffer("position_bag", position_bag.get())
        .buffer("grad_per_sample_weights", result.get());
    EMBAG_RETURN_IF_ERROR(internal::run_kernel(call, *kernels.psw, args));
  }

  // The dense gradient in one kernel: zeroed, then every contribution added in order. The last
  // kernel, as it writes the caller's gradient.
  if (kernels.dense_scatter != nullptr) {
    // Zeroed here, by rows in parallel (one large memset a block, which glibc streams past the
    // cache), and then updated in place by the kernel.
    const std::vector<int64_t> no_rows;
    DenseScatter zero{static_cast<unsigned char*>(out.grad_weight->data),
                      out.grad_weight->strides[0] * static_cast<int64_t>(element),
                      D * static_cast<int64_t>(element),
                      V,
                      &no_rows,
                      nullptr,
                      static_cast<int>(std::min<int64_t>(V, 4 * internal::kernel_threads()))};
    internal::parallel_for(zero.tasks, &dense_scatter_task, &zero);
    HalideBuffer grad(in.grad_output.data, in.grad_output.dtype, plan.num_bags, D,
                      in.grad_output.strides[0]);
    HalideBuffer result(out.grad_weight->data, in.weight.dtype, V, D, out.grad_weight->strides[0]);
    std::optional<HalideBuffer> argmax, indices, position_bag, psw, divisor;
    const int32_t padding = plan.padding_idx;
    KernelArgs args;
    args.buffer("grad_output", grad.get()).buffer("grad_weight", result.get());
    if (plan.pooling == Pooling::kMax) {
      argmax.emplace(in.argmax->data, DType::kInt64, plan.num_bags, D, in.argmax->strides[0]);
      args.buffer("argmax", argmax->get());
    } else {
      indices.emplace(layout.indices, layout.index_dtype, plan.positions_end);
      position_bag.emplace(groups.position_bag.data(), DType::kInt32, plan.positions_end);
      args.buffer("indices", indices->get())
          .buffer("position_bag", position_bag->get())
          .scalar("padding_idx", &padding);
      if (plan.pooling == Pooling::kWeightedSum) {
        psw.emplace(in.per_sample_weights->data, in.per_sample_weights->dtype, plan.positions_end);
        args.buffer("per_sample_weights", psw->get());
      } else if (plan.pooling == Pooling::kMean) {
        divisor.emplace(groups.bag_valid.data(), DType::kInt32, plan.num_bags);
        args.buffer("bag_divisor", divisor->get());
      }
    }
    EMBAG_RETURN_IF_ERROR(internal::run_kernel(call, *kernels.dense_scatter, args));
  }

  // The copies that cannot fail.
  if (opt.sparse) {
    // (U = 0: no bytes, and possibly no memory; memcpy may not be given a null pointer)
    if (!groups.rows.empty()) {
      std::memcpy(out.grad_weight_rows->data, groups.rows.data(), groups.rows.size() * 8);
    }
  } else if (V > 0 && D > 0 && kernels.dense_scatter == nullptr) {
    DenseScatter scatter{static_cast<unsigned char*>(out.grad_weight->data),
                         out.grad_weight->strides[0] * static_cast<int64_t>(element),
                         D * static_cast<int64_t>(element), V, &groups.rows, dense_values.data(),
                         // Enough blocks to balance the threads; each is one long run.
                         static_cast<int>(std::min<int64_t>(V, 4 * internal::kernel_threads()))};
    internal::parallel_for(scatter.tasks, &dense_scatter_task, &scatter);
  }
  if (gp != nullptr && plan.num_indices > 0) {
    const int64_t zero_from = D > 0 ? plan.positions_end : 0;
    std::memset(gp + static_cast<size_t>(zero_from) * element, 0,
                static_cast<size_t>(plan.num_indices - zero_from) * element);
  }
  internal::record_last_variant(kernels.dense_scatter != nullptr ? kernels.dense_scatter->name
                                                                 : kernels.rows->name);
  return Status::Ok();
}

}  // namespace

Status backward(const BackwardInputs& in, const BackwardOutputs& out, const Options& opt,
                const Execution& execution) {
  return internal::guard_api([&] {
    ForwardPlan plan;
    if (in.weight.device.type != DeviceType::kCPU) {
      const ForwardInputs fin = forward_inputs_of(in);
      EMBAG_RETURN_IF_ERROR(internal::validate_forward_inputs(fin, opt, &plan));
      return internal::gpu::backward(in, out, opt, execution, plan, nullptr);
    }
    BagLayout layout;
    RowGroups groups;
    internal::IndexSnapshot snapshot;
    EMBAG_RETURN_IF_ERROR(prepare(in, out, opt, &plan, &layout, &groups, &snapshot));
    BackwardKernels kernels;
    EMBAG_RETURN_IF_ERROR(select_backward_kernels(in, out, opt, plan, &kernels));
    // The kernels read the validated copies of the offsets, indices and argmax.
    return cpu_backward(snapshot.apply(in), out, opt, plan, layout, groups, kernels);
  });
}

}  // namespace embag
