// embag::batched_backward (per-table gradients) and embag::batched_fused_backward (the optimizer
// applied to the touched rows in place), for the table-batched calls of include/embag/batched.h.
//
// Per-table gradients are, by construction, the single-table backward's: each table's features
// are gathered into one single-table call (their bags one after another, in feature order, so
// every row's terms keep their input order) and embag::backward computes it.
//
// The fused path never holds more gradient than a task's one row: the valid positions are
// grouped by (table, row) with a stable LSD radix sort (as backward.cpp groups by row, so each
// row's terms stay in input order), the groups are cut into chunks of about equal positions,
// and each task folds one row's gradient into a D-float scratch and updates that row and its
// optimizer state before the next. Each row belongs to one task: results do not depend on the
// thread count. The updates are plain C++ compiled without FMA contraction (-ffp-contract=off in
// runtime/CMakeLists.txt), one float32 operation per step of the formulas in batched.h, as
// tests/reference computes them.
//
// A call whose tensors are on a GPU is validated and grouped here too, and its update runs in
// the fused optimizer kernels (runtime/gpu/gpu_batched.cpp): the same formulas, the same bits.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "api_guard.h"
#include "batched_plan.h"
#include "forward_plan.h"
#include "gpu/gpu_batched.h"
#include "half_float.h"
#include "kernel_thread_pool.h"
#include "status_macros.h"

namespace embag {
namespace {

using internal::BatchedPlan;
using internal::BatchedRowGroups;

Status invalid(const std::string& message) { return Status(StatusCode::kInvalidArgument, message); }

Status refuse_max_tables(const BatchedInputs& in, const BatchedPlan& plan) {
  for (int64_t f = 0; f < plan.num_features; ++f) {
    const int64_t t = plan.feature_table[f];
    if (in.tables[t].mode == Mode::kMax) {
      return invalid("feature " + std::to_string(f) + " (table " + std::to_string(t) +
                     "): batched backward has no max pooling (FBGEMM's TBE has none either); "
                     "use single-table embag::backward for max tables");
    }
  }
  return Status::Ok();
}

// grad_output must not overlap what a call writes; `writes` are named views.
Status check_writes_apart(const BatchedInputs& in, const TensorView& grad_output,
                          const std::vector<std::pair<const TensorView*, std::string>>& writes) {
  std::vector<std::pair<const TensorView*, std::string>> reads = {
      {&grad_output, "grad_output"}, {&in.indices, "indices"}, {&in.offsets, "offsets"}};
  if (in.per_sample_weights) reads.push_back({in.per_sample_weights, "per_sample_weights"});
  for (size_t i = 0; i < writes.size(); ++i) {
    for (const auto& r : reads) {
      EMBAG_RETURN_IF_ERROR(internal::check_no_overlap(
          {{writes[i].first, writes[i].second.c_str()}}, {{r.first, r.second.c_str()}}));
    }
    for (size_t j = i + 1; j < writes.size(); ++j) {
      EMBAG_RETURN_IF_ERROR(
          internal::check_no_overlap({{writes[i].first, writes[i].second.c_str()},
                                      {writes[j].first, writes[j].second.c_str()}},
                                     {}));
    }
  }
  return Status::Ok();
}

// ---- Per-table gradients ---------------------------------------------------------------------

// One table's features as a single-table backward call: gathered indices, offsets
// (include_last_offset form), per-sample weights and grad_output rows, in feature order.
struct GatheredTable {
  std::vector<int64_t> indices;
  std::vector<int64_t> offsets;
  std::vector<unsigned char> psw;   // the tables' dtype
  std::vector<unsigned char> grad;  // (k*B, D), the tables' dtype
  TensorView indices_view, offsets_view, psw_view, grad_view;
  Options options;
};

void gather_table(const BatchedInputs& in, const TensorView& grad_output, const BatchedPlan& plan,
                  int64_t t, GatheredTable* g) {
  const int64_t B = plan.num_bags, D = in.tables[t].weight.shape[1];
  const size_t element = dtype_size(plan.dtype);
  g->offsets.push_back(0);
  int64_t bags = 0;
  for (int64_t f = 0; f < plan.num_features; ++f) {
    if (plan.feature_table[f] != t) continue;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t begin = plan.offset(f * B + b), end = plan.offset(f * B + b + 1);
      for (int64_t p = begin; p < end; ++p) {
        g->indices.push_back(plan.index(p));
        if (in.per_sample_weights) {
          const unsigned char* src =
              static_cast<const unsigned char*>(in.per_sample_weights->data) + p * element;
          g->psw.insert(g->psw.end(), src, src + element);
        }
      }
      g->offsets.push_back(static_cast<int64_t>(g->indices.size()));
      const unsigned char* row =
          static_cast<const unsigned char*>(grad_output.data) +
          static_cast<size_t>(b * grad_output.strides[0] + plan.columns[f]) * element;
      g->grad.insert(g->grad.end(), row, row + static_cast<size_t>(D) * element);
      ++bags;
    }
  }
  // Views need memory even when empty (a null pointer with no elements is fine for embag).
  g->indices_view =
      make_view_1d(g->indices.data(), DType::kInt64, static_cast<int64_t>(g->indices.size()));
  g->offsets_view =
      make_view_1d(g->offsets.data(), DType::kInt64, static_cast<int64_t>(g->offsets.size()));
  g->psw_view = make_view_1d(g->psw.data(), plan.dtype, static_cast<int64_t>(g->indices.size()));
  g->grad_view = make_view_2d(g->grad.data(), plan.dtype, bags, D);
  g->options.mode = in.tables[t].mode;
  g->options.include_last_offset = true;
  if (plan.padding[t] >= 0) g->options.padding_idx = plan.padding[t];
}

BackwardInputs single_table_inputs(const BatchedInputs& in, int64_t t, const GatheredTable& g) {
  BackwardInputs b;
  b.weight = in.tables[t].weight;
  b.input = g.indices_view;
  b.offsets = &g.offsets_view;
  b.per_sample_weights = in.per_sample_weights ? &g.psw_view : nullptr;
  b.grad_output = g.grad_view;
  return b;
}

// Validates a per-table gradient call and gathers every table's single-table call.
Status prepare_table_gradients(const BatchedInputs& in, const TensorView& grad_output,
                               const std::vector<BatchedTableGradient>* grads, bool sparse,
                               BatchedPlan* plan, std::vector<GatheredTable>* gathered) {
  EMBAG_RETURN_IF_ERROR(internal::validate_batched_inputs(in, plan, /*copy=*/true));
  EMBAG_RETURN_IF_ERROR(internal::validate_batched_output(grad_output, "grad_output", *plan));
  EMBAG_RETURN_IF_ERROR(refuse_max_tables(in, *plan));
  if (grads != nullptr && static_cast<int64_t>(grads->size()) != plan->num_tables) {
    return invalid("grads has " + std::to_string(grads->size()) + " entries, but there are " +
                   std::to_string(plan->num_tables) + " tables");
  }
  gathered->resize(static_cast<size_t>(plan->num_tables));
  for (int64_t t = 0; t < plan->num_tables; ++t) {
    GatheredTable& g = (*gathered)[t];
    gather_table(in, grad_output, *plan, t, &g);
    g.options.sparse = sparse;
    if (grads == nullptr) continue;
    const BatchedTableGradient& out = (*grads)[t];
    const std::string table = "table " + std::to_string(t) + ": ";
    if (sparse && (out.grad_weight_rows == nullptr || out.grad_weight_values == nullptr)) {
      return invalid(table + "a sparse gradient needs grad_weight_rows and grad_weight_values");
    }
    if (!sparse && out.grad_weight == nullptr) {
      return invalid(table + "a dense gradient needs grad_weight");
    }
    if (sparse && out.grad_weight != nullptr) {
      return invalid(table +
                     "give grad_weight (dense) or grad_weight_rows and "
                     "grad_weight_values (sparse), not both");
    }
    if (!sparse && (out.grad_weight_rows != nullptr || out.grad_weight_values != nullptr)) {
      return invalid(table + "grad_weight_rows / grad_weight_values are for sparse = true");
    }
    BackwardOutputs outputs{out.grad_weight, out.grad_weight_rows, out.grad_weight_values, nullptr};
    if (Status s = validate_backward(single_table_inputs(in, t, g), outputs, g.options); !s.ok()) {
      return Status(s.code(), table + s.message());
    }
  }
  if (grads != nullptr) {
    std::vector<std::pair<const TensorView*, std::string>> writes;
    for (int64_t t = 0; t < plan->num_tables; ++t) {
      const BatchedTableGradient& out = (*grads)[t];
      const std::string table = "table " + std::to_string(t) + "'s ";
      if (out.grad_weight) writes.push_back({out.grad_weight, table + "grad_weight"});
      if (out.grad_weight_rows)
        writes.push_back({out.grad_weight_rows, table + "grad_weight_rows"});
      if (out.grad_weight_values)
        writes.push_back({out.grad_weight_values, table + "grad_weight_values"});
      writes.push_back({&in.tables[t].weight, "table " + std::to_string(t)});
    }
    // (the tables are read, not written, here; listing them among the writes checks that no
    // gradient lands on a table)
    EMBAG_RETURN_IF_ERROR(check_writes_apart(in, grad_output, writes));
  }
  return Status::Ok();
}

// ---- Fused optimizers ------------------------------------------------------------------------

// Element access in the tables' dtype, a template parameter so that the fold's and the
// update's inner loops carry no per-element dtype switch.
template <DType kDType>
float widen(const void* base, int64_t i) {
  if constexpr (kDType == DType::kFloat16) {
    return ref::half_to_float(static_cast<const uint16_t*>(base)[i]);
  } else if constexpr (kDType == DType::kBFloat16) {
    return ref::bfloat16_to_float(static_cast<const uint16_t*>(base)[i]);
  } else {
    return static_cast<const float*>(base)[i];
  }
}

template <DType kDType>
void narrow(void* base, int64_t i, float value) {
  if constexpr (kDType == DType::kFloat16) {
    static_cast<uint16_t*>(base)[i] = ref::float_to_half(value);
  } else if constexpr (kDType == DType::kBFloat16) {
    static_cast<uint16_t*>(base)[i] = ref::float_to_bfloat16(value);
  } else {
    static_cast<float*>(base)[i] = value;
  }
}

}  // namespace

namespace internal {

void group_batched_rows(const BatchedInputs& in, const BatchedPlan& plan, BatchedRowGroups* g) {
  const int64_t F = plan.num_features, B = plan.num_bags;
  g->table_base.assign(static_cast<size_t>(plan.num_tables) + 1, 0);
  for (int64_t t = 0; t < plan.num_tables; ++t) {
    g->table_base[t + 1] = g->table_base[t] + static_cast<uint64_t>(in.tables[t].weight.shape[0]);
  }
  g->bag_valid.assign(static_cast<size_t>(F * B), 0);
  std::vector<uint64_t> keys;
  std::vector<int64_t> values, bags;
  keys.reserve(static_cast<size_t>(plan.positions_end));
  values.reserve(static_cast<size_t>(plan.positions_end));
  bags.reserve(static_cast<size_t>(plan.positions_end));
  for (int64_t f = 0; f < F; ++f) {
    const int64_t t = plan.feature_table[f];
    for (int64_t b = 0; b < B; ++b) {
      const int64_t end = plan.offset(f * B + b + 1);
      for (int64_t p = plan.offset(f * B + b); p < end; ++p) {
        const int64_t row = plan.index(p);
        if (row == plan.padding[t]) continue;
        ++g->bag_valid[f * B + b];
        keys.push_back(g->table_base[t] + static_cast<uint64_t>(row));
        values.push_back(p);
        bags.push_back(f * B + b);
      }
    }
  }
  constexpr int kBits = 11;
  constexpr uint64_t kBuckets = uint64_t{1} << kBits;
  const size_t m = keys.size();
  std::vector<uint64_t> keys_out(m);
  std::vector<int64_t> values_out(m), bags_out(m);
  const uint64_t largest = g->table_base.back() > 0 ? g->table_base.back() - 1 : 0;
  for (int shift = 0; shift == 0 || (shift < 64 && (largest >> shift) != 0); shift += kBits) {
    std::vector<size_t> start(kBuckets + 1, 0);
    for (uint64_t k : keys) ++start[((k >> shift) & (kBuckets - 1)) + 1];
    for (uint64_t i = 0; i < kBuckets; ++i) start[i + 1] += start[i];
    for (size_t i = 0; i < m; ++i) {
      const size_t at = start[(keys[i] >> shift) & (kBuckets - 1)]++;
      keys_out[at] = keys[i];
      values_out[at] = values[i];
      bags_out[at] = bags[i];
    }
    keys.swap(keys_out);
    values.swap(values_out);
    bags.swap(bags_out);
  }
  g->sorted_positions = std::move(values);
  g->sorted_bags = std::move(bags);
  for (size_t i = 0; i < m; ++i) {
    if (i == 0 || keys[i] != keys[i - 1]) {
      g->keys.push_back(keys[i]);
      g->segments.push_back(static_cast<int64_t>(i));
    }
  }
  g->segments.push_back(static_cast<int64_t>(m));
}

}  // namespace internal

namespace {

// How many sorted positions ahead the fold prefetches grad_output rows.
constexpr int64_t kPrefetchAhead = 8;

struct FusedPass {
  const BatchedInputs* in;
  const BatchedPlan* plan;
  const TensorView* grad_output;
  const OptimizerConfig* config;
  const std::vector<OptimizerState>* state;
  const BatchedRowGroups* groups;
  std::vector<int64_t> chunk_begin;  // tasks + 1 indices into groups->keys
  int64_t max_dim = 0;
  float bias_correction1 = 1, bias_correction2 = 1;  // Adam
};

// One row: fold its gradient (batched.h, "Gradient terms"), then update it.
template <DType kDType>
void update_row(const FusedPass& pass, size_t u, float* g) {
  const BatchedPlan& plan = *pass.plan;
  const BatchedRowGroups& groups = *pass.groups;
  const uint64_t key = groups.keys[u];
  const int64_t t = static_cast<int64_t>(
      std::upper_bound(groups.table_base.begin(), groups.table_base.end(), key) -
      groups.table_base.begin() - 1);
  const int64_t r = static_cast<int64_t>(key - groups.table_base[t]);
  const TensorView& w = pass.in->tables[t].weight;
  const int64_t D = w.shape[1];
  const Mode mode = pass.in->tables[t].mode;
  const TensorView& go = *pass.grad_output;
  for (int64_t d = 0; d < D; ++d) g[d] = 0.0f;
  const int64_t element = static_cast<int64_t>(dtype_size(kDType));
  const int64_t positions = static_cast<int64_t>(groups.sorted_bags.size());
  for (int64_t i = groups.segments[u]; i < groups.segments[u + 1]; ++i) {
    const int64_t p = groups.sorted_positions[i];
    const int64_t fb = groups.sorted_bags[i];
    const int64_t f = fb / plan.num_bags, b = fb % plan.num_bags;
    const int64_t base = b * go.strides[0] + plan.columns[f];
    // The grad_output rows come in bag order scrambled by the sort: fetch a few ahead.
    if (i + kPrefetchAhead < positions) {
      const int64_t ahead = groups.sorted_bags[i + kPrefetchAhead];
      __builtin_prefetch(
          static_cast<const char*>(go.data) +
          ((ahead % plan.num_bags) * go.strides[0] + plan.columns[ahead / plan.num_bags]) *
              element);
    }
    if (pass.in->per_sample_weights) {
      const float weight = widen<kDType>(pass.in->per_sample_weights->data, p);
      for (int64_t d = 0; d < D; ++d) g[d] = g[d] + widen<kDType>(go.data, base + d) * weight;
    } else if (mode == Mode::kMean) {
      const float count = static_cast<float>(groups.bag_valid[fb]);
      for (int64_t d = 0; d < D; ++d) g[d] = g[d] + widen<kDType>(go.data, base + d) / count;
    } else {
      for (int64_t d = 0; d < D; ++d) g[d] = g[d] + widen<kDType>(go.data, base + d);
    }
  }

  const OptimizerConfig& c = *pass.config;
  const float lr = c.learning_rate, eps = c.eps, wd = c.weight_decay;
  void* row = static_cast<unsigned char*>(w.data) +
              static_cast<size_t>(r * w.strides[0]) * dtype_size(kDType);
  const OptimizerState& state = (*pass.state)[t];
  switch (c.optimizer) {
    case Optimizer::kSgd:
      for (int64_t d = 0; d < D; ++d) narrow<kDType>(row, d, widen<kDType>(row, d) - lr * g[d]);
      break;
    case Optimizer::kAdagrad: {
      float* m = static_cast<float*>(state.momentum1.data) + r * D;
      for (int64_t d = 0; d < D; ++d) {
        m[d] = m[d] + g[d] * g[d];
        narrow<kDType>(row, d, widen<kDType>(row, d) - (lr * g[d]) / (std::sqrt(m[d]) + eps));
      }
      break;
    }
    case Optimizer::kRowwiseAdagrad: {
      float* m = static_cast<float*>(state.momentum1.data) + r;
      float sum = 0.0f;
      for (int64_t d = 0; d < D; ++d) {
        const float h =
            c.weight_decay_mode == WeightDecayMode::kL2 ? g[d] + wd * widen<kDType>(row, d) : g[d];
        sum = sum + h * h;
      }
      *m = *m + sum / static_cast<float>(D);
      const float multiplier = lr / (std::sqrt(*m) + eps);
      const float correction = c.weight_decay_mode == WeightDecayMode::kL2 ? 1.0f - multiplier * wd
                               : c.weight_decay_mode == WeightDecayMode::kDecoupled ? 1.0f - lr * wd
                                                                                    : 1.0f;
      for (int64_t d = 0; d < D; ++d) {
        narrow<kDType>(row, d, correction * widen<kDType>(row, d) - g[d] * multiplier);
      }
      break;
    }
    case Optimizer::kAdam: {
      float* m1 = static_cast<float*>(state.momentum1.data) + r * D;
      float* m2 = static_cast<float*>(state.momentum2.data) + r * D;
      const float one_minus_beta1 = 1.0f - c.beta1, one_minus_beta2 = 1.0f - c.beta2;
      for (int64_t d = 0; d < D; ++d) {
        m1[d] = m1[d] * c.beta1 + g[d] * one_minus_beta1;
        m2[d] = m2[d] * c.beta2 + (g[d] * g[d]) * one_minus_beta2;
        const float x = widen<kDType>(row, d);
        const float step =
            (m1[d] / pass.bias_correction1) / (std::sqrt(m2[d] / pass.bias_correction2) + eps) +
            wd * x;
        narrow<kDType>(row, d, x - lr * step);
      }
      break;
    }
  }
}

void run_chunk(void* context, int task) {
  const auto& pass = *static_cast<const FusedPass*>(context);
  std::vector<float> g(static_cast<size_t>(std::max<int64_t>(pass.max_dim, 1)));
  auto update = pass.plan->dtype == DType::kFloat16    ? &update_row<DType::kFloat16>
                : pass.plan->dtype == DType::kBFloat16 ? &update_row<DType::kBFloat16>
                                                       : &update_row<DType::kFloat32>;
  for (int64_t u = pass.chunk_begin[task]; u < pass.chunk_begin[task + 1]; ++u) {
    update(pass, static_cast<size_t>(u), g.data());
  }
}

Status check_config(const OptimizerConfig& c) {
  const bool has_decay_mode = c.optimizer == Optimizer::kRowwiseAdagrad;
  if (c.weight_decay != 0.0f &&
      (c.optimizer == Optimizer::kSgd || c.optimizer == Optimizer::kAdagrad)) {
    return invalid(std::string("weight_decay = ") + std::to_string(c.weight_decay) + " with " +
                   optimizer_name(c.optimizer) +
                   ", which has no weight decay (as in FBGEMM): use 0");
  }
  if (!has_decay_mode && c.weight_decay_mode != WeightDecayMode::kNone) {
    return invalid(std::string("weight_decay_mode is for rowwise_adagrad only, not ") +
                   optimizer_name(c.optimizer));
  }
  if (c.optimizer == Optimizer::kAdam && c.step < 1) {
    return invalid("Adam's step must be >= 1 (1 on the first update), got " +
                   std::to_string(c.step));
  }
  return Status::Ok();
}

Status check_state(const BatchedInputs& in, const BatchedPlan& plan, const OptimizerConfig& c,
                   const std::vector<OptimizerState>& state) {
  if (state.size() != in.tables.size()) {
    return invalid("state has " + std::to_string(state.size()) + " entries, but there are " +
                   std::to_string(in.tables.size()) + " tables");
  }
  for (size_t t = 0; t < state.size(); ++t) {
    const TensorView& w = in.tables[t].weight;
    const OptimizerStateShape shape = optimizer_state_shape(c.optimizer, w.shape[0], w.shape[1]);
    const std::pair<const TensorView*, std::pair<int, const int64_t*>> views[2] = {
        {&state[t].momentum1, {shape.ndim1, shape.shape1}},
        {&state[t].momentum2, {shape.ndim2, shape.shape2}}};
    for (int k = 0; k < 2; ++k) {
      const auto& [view, want] = views[k];
      if (want.first == 0) continue;
      const std::string name =
          "table " + std::to_string(t) + "'s " + (k == 0 ? "momentum1" : "momentum2");
      TensorView expected;
      expected.ndim = want.first;
      expected.shape[0] = want.second[0];
      expected.shape[1] = want.second[1];
      EMBAG_RETURN_IF_ERROR(internal::check_batched_device(*view, name, plan));
      if (view->ndim != want.first || view->shape[0] != want.second[0] ||
          (want.first == 2 && view->shape[1] != want.second[1])) {
        return invalid(name + " must have shape " + expected.shape_string() + " for " +
                       optimizer_name(c.optimizer) + ", but has shape " + view->shape_string());
      }
      if (view->dtype != DType::kFloat32) {
        return invalid(name + " has dtype " + dtype_name(view->dtype) + ", but must be float32");
      }
      EMBAG_RETURN_IF_ERROR(internal::check_view_memory(*view, name.c_str(), true));
    }
  }
  return Status::Ok();
}

// Adam's bias corrections c1 = 1 - beta1^t and c2 = 1 - beta2^t, float32, once per call (1 and 1
// for the other optimizers), for the CPU and GPU updates alike.
void bias_corrections(const OptimizerConfig& config, float* c1, float* c2) {
  *c1 = *c2 = 1.0f;
  if (config.optimizer != Optimizer::kAdam) return;
  const float t = static_cast<float>(config.step);
  *c1 = 1.0f - std::pow(config.beta1, t);
  *c2 = 1.0f - std::pow(config.beta2, t);
}

Status prepare_fused(const BatchedInputs& in, const TensorView& grad_output,
                     const OptimizerConfig& config, const std::vector<OptimizerState>& state,
                     BatchedPlan* plan, bool copy, internal::DeviceArrayReader* device = nullptr) {
  EMBAG_RETURN_IF_ERROR(internal::validate_batched_inputs(in, plan, copy, device));
  EMBAG_RETURN_IF_ERROR(internal::validate_batched_output(grad_output, "grad_output", *plan));
  EMBAG_RETURN_IF_ERROR(refuse_max_tables(in, *plan));
  EMBAG_RETURN_IF_ERROR(check_config(config));
  EMBAG_RETURN_IF_ERROR(check_state(in, *plan, config, state));
  std::vector<std::pair<const TensorView*, std::string>> writes;
  for (size_t t = 0; t < in.tables.size(); ++t) {
    writes.push_back({&in.tables[t].weight, "table " + std::to_string(t)});
    const OptimizerStateShape shape = optimizer_state_shape(
        config.optimizer, in.tables[t].weight.shape[0], in.tables[t].weight.shape[1]);
    if (shape.ndim1 > 0)
      writes.push_back({&state[t].momentum1, "table " + std::to_string(t) + "'s momentum1"});
    if (shape.ndim2 > 0)
      writes.push_back({&state[t].momentum2, "table " + std::to_string(t) + "'s momentum2"});
  }
  return check_writes_apart(in, grad_output, writes);
}

// A GPU fused call: validated on the host (offsets and indices read once), grouped on the host
// as the CPU path groups, then updated on the device (runtime/gpu/gpu_batched.cpp).
Status gpu_fused(const BatchedInputs& in, const TensorView& grad_output,
                 const OptimizerConfig& config, const std::vector<OptimizerState>& state,
                 const Execution& execution, bool run) {
  internal::gpu::BatchedDeviceCall gpu(internal::batched_device(in), execution);
  BatchedPlan plan;
  EMBAG_RETURN_IF_ERROR(prepare_fused(in, grad_output, config, state, &plan, /*copy=*/true, &gpu));
  if (!run) return gpu.check_fused(plan, config.optimizer);
  BatchedRowGroups groups;
  internal::group_batched_rows(in, plan, &groups);
  float c1 = 1.0f, c2 = 1.0f;
  bias_corrections(config, &c1, &c2);
  return gpu.fused_update(in, plan, groups, grad_output, config, state, c1, c2);
}

}  // namespace

const char* optimizer_name(Optimizer optimizer) {
  switch (optimizer) {
    case Optimizer::kSgd:
      return "sgd";
    case Optimizer::kAdagrad:
      return "adagrad";
    case Optimizer::kRowwiseAdagrad:
      return "rowwise_adagrad";
    case Optimizer::kAdam:
      return "adam";
  }
  return "?";
}

std::optional<Optimizer> parse_optimizer(const std::string& name) {
  for (Optimizer o :
       {Optimizer::kSgd, Optimizer::kAdagrad, Optimizer::kRowwiseAdagrad, Optimizer::kAdam}) {
    if (name == optimizer_name(o)) return o;
  }
  return std::nullopt;
}

OptimizerStateShape optimizer_state_shape(Optimizer optimizer, int64_t rows, int64_t dim) {
  OptimizerStateShape s;
  switch (optimizer) {
    case Optimizer::kSgd:
      break;
    case Optimizer::kAdagrad:
      s.ndim1 = 2, s.shape1[0] = rows, s.shape1[1] = dim;
      break;
    case Optimizer::kRowwiseAdagrad:
      s.ndim1 = 1, s.shape1[0] = rows;
      break;
    case Optimizer::kAdam:
      s.ndim1 = 2, s.shape1[0] = rows, s.shape1[1] = dim;
      s.ndim2 = 2, s.shape2[0] = rows, s.shape2[1] = dim;
      break;
  }
  return s;
}

Status batched_sparse_gradient_rows(const BatchedInputs& inputs,
                                    std::vector<int64_t>* rows_per_table) {
  return internal::guard_api([&] {
    BatchedPlan plan;
    EMBAG_RETURN_IF_ERROR(internal::validate_batched_inputs(inputs, &plan, /*copy=*/true));
    EMBAG_RETURN_IF_ERROR(refuse_max_tables(inputs, plan));
    // Distinct rows per table: mark and count, over the positions only (a sort keeps the work
    // with the batch: no per-row array of the table's size).
    std::vector<std::vector<int64_t>> rows(static_cast<size_t>(plan.num_tables));
    const int64_t B = plan.num_bags;
    for (int64_t f = 0; f < plan.num_features; ++f) {
      const int64_t t = plan.feature_table[f];
      for (int64_t p = plan.offset(f * B); p < plan.offset((f + 1) * B); ++p) {
        const int64_t r = plan.index(p);
        if (r != plan.padding[t]) rows[t].push_back(r);
      }
    }
    rows_per_table->assign(static_cast<size_t>(plan.num_tables), 0);
    for (int64_t t = 0; t < plan.num_tables; ++t) {
      std::sort(rows[t].begin(), rows[t].end());
      (*rows_per_table)[t] = std::unique(rows[t].begin(), rows[t].end()) - rows[t].begin();
    }
    return Status::Ok();
  });
}

Status validate_batched_backward(const BatchedInputs& inputs, const TensorView& grad_output,
                                 const std::vector<BatchedTableGradient>& grads, bool sparse) {
  return internal::guard_api([&] {
    BatchedPlan plan;
    std::vector<GatheredTable> gathered;
    return prepare_table_gradients(inputs, grad_output, &grads, sparse, &plan, &gathered);
  });
}

Status batched_backward(const BatchedInputs& inputs, const TensorView& grad_output,
                        const std::vector<BatchedTableGradient>& grads, bool sparse) {
  return internal::guard_api([&] {
    BatchedPlan plan;
    std::vector<GatheredTable> gathered;
    EMBAG_RETURN_IF_ERROR(
        prepare_table_gradients(inputs, grad_output, &grads, sparse, &plan, &gathered));
    for (int64_t t = 0; t < plan.num_tables; ++t) {
      const BatchedTableGradient& out = grads[t];
      BackwardOutputs outputs{out.grad_weight, out.grad_weight_rows, out.grad_weight_values,
                              nullptr};
      if (Status s =
              backward(single_table_inputs(inputs, t, gathered[t]), outputs, gathered[t].options);
          !s.ok()) {
        return Status(s.code(), "table " + std::to_string(t) + ": " + s.message());
      }
    }
    return Status::Ok();
  });
}

Status validate_batched_fused_backward(const BatchedInputs& inputs, const TensorView& grad_output,
                                       const OptimizerConfig& config,
                                       const std::vector<OptimizerState>& state,
                                       const Execution& execution) {
  return internal::guard_api([&] {
    if (internal::batched_device(inputs).type != DeviceType::kCPU) {
      return gpu_fused(inputs, grad_output, config, state, execution, /*run=*/false);
    }
    BatchedPlan plan;
    return prepare_fused(inputs, grad_output, config, state, &plan, /*copy=*/false);
  });
}

Status batched_fused_backward(const BatchedInputs& inputs, const TensorView& grad_output,
                              const OptimizerConfig& config,
                              const std::vector<OptimizerState>& state,
                              const Execution& execution) {
  return internal::guard_api([&] {
    if (internal::batched_device(inputs).type != DeviceType::kCPU) {
      return gpu_fused(inputs, grad_output, config, state, execution, /*run=*/true);
    }
    BatchedPlan plan;
    EMBAG_RETURN_IF_ERROR(prepare_fused(inputs, grad_output, config, state, &plan, /*copy=*/true));
    BatchedRowGroups groups;
    internal::group_batched_rows(inputs, plan, &groups);
    FusedPass pass{&inputs, &plan, &grad_output, &config, &state, &groups, {}, 0, 1, 1};
    for (const BatchedTable& t : inputs.tables)
      pass.max_dim = std::max(pass.max_dim, t.weight.shape[1]);
    bias_corrections(config, &pass.bias_correction1, &pass.bias_correction2);
    // Chunks of rows with about equal positions (each position is one row of D terms).
    const int64_t U = static_cast<int64_t>(groups.keys.size());
    const int64_t M = groups.segments.empty() ? 0 : groups.segments.back();
    const int64_t wanted = 4 * static_cast<int64_t>(internal::kernel_threads());
    const int64_t grain = std::max<int64_t>((M + wanted - 1) / wanted, 1);
    pass.chunk_begin.push_back(0);
    for (int64_t u = 0; u < U; ++u) {
      if (groups.segments[u + 1] - groups.segments[pass.chunk_begin.back()] >= grain || u + 1 == U)
        pass.chunk_begin.push_back(u + 1);
    }
    const int tasks = static_cast<int>(pass.chunk_begin.size()) - 1;
    if (tasks > 0) internal::parallel_for(tasks, &run_chunk, &pass);
    return Status::Ok();
  });
}

}  // namespace embag
