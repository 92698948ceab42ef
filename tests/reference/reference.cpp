// The reference embedding_bag forward and backward: SEMANTICS.md and embag.h's pseudocode as plain
// loops (see reference.h).
//
// Compiled with -ffp-contract=off: `acc + psw * w` (and backward's `acc + g * w`) must round the
// product before the sum, as the kernels do, or the differential tests could not compare bit for
// bit.
#include "reference/reference.h"

#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>

#include "reference/element_access.h"
#include "reference/half_float.h"

namespace embag::ref {
namespace {

bool is_index_dtype(DType dtype) { return dtype == DType::kInt32 || dtype == DType::kInt64; }

Status invalid(const std::string& message) {
  return Status(StatusCode::kInvalidArgument, "embag::ref: " + message);
}

// False for a view that claims elements but has no memory (reading it would crash).
bool has_memory(const TensorView* view) {
  if (view == nullptr) return true;
  const int64_t count = view->ndim == 2   ? view->shape[0] * view->shape[1]
                        : view->ndim == 1 ? view->shape[0]
                                          : 1;
  return count <= 0 || view->data != nullptr;
}

// Address of element (row, col) of a 2-D view, or of element `col` of a 1-D view (row ignored).
unsigned char* address(const TensorView& view, int64_t row, int64_t col) {
  int64_t offset =
      view.ndim == 2 ? row * view.strides[0] + col * view.strides[1] : col * view.strides[0];
  return static_cast<unsigned char*>(view.data) +
         offset * static_cast<int64_t>(element_size(view.dtype));
}

// Address of position `pos` of a 1-D or 2-D view flattened in row-major order (how inputs,
// offsets and per_sample_weights are indexed).
unsigned char* flat_address(const TensorView& view, int64_t pos) {
  if (view.ndim != 2) return address(view, 0, pos);
  const int64_t cols = view.shape[1];
  return cols == 0 ? static_cast<unsigned char*>(view.data) : address(view, pos / cols, pos % cols);
}

// Reads a table element into the accumulation type. Only the pairs the accumulation rule allows
// are used: double for float64, float for the three narrower types (all exact widenings).
template <typename Acc>
Acc load_from(const TensorView& view, const unsigned char* p) {
  if constexpr (std::is_same_v<Acc, double>) {
    double v;
    std::memcpy(&v, p, sizeof v);
    return v;
  } else {
    uint16_t h;
    float v;
    switch (view.dtype) {
      case DType::kFloat16:
        std::memcpy(&h, p, sizeof h);
        return half_to_float(h);
      case DType::kBFloat16:
        std::memcpy(&h, p, sizeof h);
        return bfloat16_to_float(h);
      default:
        std::memcpy(&v, p, sizeof v);
        return v;
    }
  }
}

template <typename Acc>
Acc load(const TensorView& view, int64_t row, int64_t col) {
  return load_from<Acc>(view, address(view, row, col));
}

// Rounds an accumulation-type value once to the view's dtype and stores it at `p`.
template <typename Acc>
void store_to(const TensorView& view, unsigned char* p, Acc value) {
  if constexpr (std::is_same_v<Acc, double>) {
    std::memcpy(p, &value, sizeof value);
  } else {
    uint16_t h;
    switch (view.dtype) {
      case DType::kFloat16:
        h = float_to_half(value);
        std::memcpy(p, &h, sizeof h);
        break;
      case DType::kBFloat16:
        h = float_to_bfloat16(value);
        std::memcpy(p, &h, sizeof h);
        break;
      default:
        std::memcpy(p, &value, sizeof value);
        break;
    }
  }
}

template <typename Acc>
void store(const TensorView& view, int64_t row, int64_t col, Acc value) {
  store_to<Acc>(view, address(view, row, col), value);
}

void store_int64(const TensorView& view, int64_t row, int64_t col, int64_t value) {
  std::memcpy(address(view, row, col), &value, sizeof value);
}

// Everything a call needs beyond its raw arguments, worked out once and checked for what the
// loops below rely on to stay in bounds.
struct Plan {
  int64_t num_rows = 0;  // V
  int64_t dim = 0;       // D
  std::vector<Bag> bags;
  std::optional<int64_t> padding;
};

Status make_bags(const TensorView& input, const TensorView* offsets, const Options& options,
                 std::vector<Bag>* out) {
  out->clear();
  if (!is_index_dtype(input.dtype)) return invalid("input must be int32 or int64");
  if (input.ndim == 2) {
    // include_last_offset is ignored for 2-D input, as in PyTorch.
    const int64_t rows = input.shape[0], cols = input.shape[1];
    if (rows < 0 || cols < 0) return invalid("negative input shape");
    for (int64_t b = 0; b < rows; ++b) out->push_back({b * cols, (b + 1) * cols});
    return Status::Ok();
  }
  if (input.ndim != 1) return invalid("input must be 1-D or 2-D");
  if (offsets == nullptr || offsets->ndim != 1 || !is_index_dtype(offsets->dtype)) {
    return invalid("1-D input needs 1-D int32/int64 offsets");
  }
  const int64_t n = input.shape[0];
  const int64_t k = offsets->shape[0];
  if (options.include_last_offset && k < 1) return invalid("include_last_offset needs an offset");
  const int64_t num_bags = options.include_last_offset ? k - 1 : k;
  int64_t previous = 0;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t v = index_at(*offsets, i);
    if ((i == 0 && v != 0) || v < previous || v > n) return invalid("bad offsets");
    previous = v;
  }
  for (int64_t b = 0; b < num_bags; ++b) {
    const int64_t begin = index_at(*offsets, b);
    // Without include_last_offset the last bag runs to the end of the input.
    const int64_t end = b + 1 < k ? index_at(*offsets, b + 1) : n;
    out->push_back({begin, end});
  }
  return Status::Ok();
}

Status make_plan(const TensorView& weight, const TensorView& input, const TensorView* offsets,
                 const Options& options, Plan* plan) {
  if (weight.ndim != 2 || !is_float_dtype(weight.dtype)) {
    return invalid("weight must be a 2-D float tensor");
  }
  if (!has_memory(&weight) || !has_memory(&input) || !has_memory(offsets)) {
    return invalid("a view with elements has a null data pointer");
  }
  plan->num_rows = weight.shape[0];
  plan->dim = weight.shape[1];
  Status status = make_bags(input, offsets, options, &plan->bags);
  if (!status.ok()) return status;
  if (options.padding_idx &&
      (*options.padding_idx < -plan->num_rows || *options.padding_idx >= plan->num_rows)) {
    return invalid("padding_idx out of range");
  }
  plan->padding = normalized_padding_idx(options, plan->num_rows);
  // Only positions inside bags are read, so only they are checked (SEMANTICS.md's choice for
  // include_last_offset with off[B] < N).
  for (const Bag& bag : plan->bags) {
    for (int64_t p = bag.begin; p < bag.end; ++p) {
      const int64_t row = index_at(input, p);
      if (row < 0 || row >= plan->num_rows) return invalid("index out of range");
    }
  }
  return Status::Ok();
}

template <typename Acc>
Acc norm_of_row(const TensorView& weight, int64_t row, double norm_type) {
  const int64_t dim = weight.shape[1];
  Acc acc = 0;
  if (norm_type == 2.0) {
    for (int64_t d = 0; d < dim; ++d) {
      const Acc x = load<Acc>(weight, row, d);
      const Acc square = x * x;
      acc = acc + square;
    }
    return std::sqrt(acc);
  }
  if (norm_type == 1.0) {
    for (int64_t d = 0; d < dim; ++d) acc = acc + std::fabs(load<Acc>(weight, row, d));
    return acc;
  }
  if (norm_type == 0.0) {
    for (int64_t d = 0; d < dim; ++d) acc = acc + (load<Acc>(weight, row, d) != 0 ? 1 : 0);
    return acc;
  }
  if (std::isinf(norm_type)) {
    // A NaN element makes the norm NaN (like every sum-based norm), so the row is left alone.
    const bool want_max = norm_type > 0;
    acc = want_max ? Acc(0) : Acc(INFINITY);
    for (int64_t d = 0; d < dim; ++d) {
      const Acc a = std::fabs(load<Acc>(weight, row, d));
      if (std::isnan(acc)) break;
      if (std::isnan(a) || (want_max ? a > acc : a < acc)) acc = a;
    }
    return acc;
  }
  const Acc p = static_cast<Acc>(norm_type);
  for (int64_t d = 0; d < dim; ++d) {
    const Acc term = std::pow(std::fabs(load<Acc>(weight, row, d)), p);
    acc = acc + term;
  }
  return std::pow(acc, Acc(1) / p);  // 1/p in the accumulation type, like the sum
}

template <typename Acc>
void renorm_rows(const TensorView& weight, const TensorView& input, const Plan& plan,
                 const Options& options) {
  std::vector<bool> seen(static_cast<size_t>(plan.num_rows), false);
  for (const Bag& bag : plan.bags) {
    for (int64_t p = bag.begin; p < bag.end; ++p) {
      const int64_t row = index_at(input, p);
      if (seen[static_cast<size_t>(row)]) continue;
      seen[static_cast<size_t>(row)] = true;
      const Acc norm = norm_of_row<Acc>(weight, row, options.norm_type);
      if (!(norm > *options.max_norm)) continue;  // exactly max_norm (or NaN) is left alone
      // The scale is computed in double whatever the table, then narrowed once.
      const Acc scale = static_cast<Acc>(*options.max_norm / (static_cast<double>(norm) + 1e-7));
      for (int64_t d = 0; d < plan.dim; ++d) {
        const Acc scaled = load<Acc>(weight, row, d) * scale;
        store<Acc>(weight, row, d, scaled);
      }
    }
  }
}

template <typename Acc>
void reduce(const ForwardInputs& inputs, const ForwardOutputs& outputs, const Options& options,
            const Plan& plan) {
  const TensorView& weight = inputs.weight;
  const TensorView* psw = inputs.per_sample_weights;
  const bool is_max = options.mode == Mode::kMax;
  for (size_t b = 0; b < plan.bags.size(); ++b) {
    const Bag& bag = plan.bags[b];
    const int64_t bag_index = static_cast<int64_t>(b);
    int64_t count = 0;
    for (int64_t p = bag.begin; p < bag.end; ++p) {
      if (index_at(inputs.input, p) != plan.padding) ++count;
    }
    if (outputs.bag_count != nullptr) store_int64(*outputs.bag_count, 0, bag_index, count);
    for (int64_t d = 0; d < plan.dim; ++d) {
      Acc acc = 0;  // +0.0: an all -0.0 sum is +0.0, as in PyTorch
      int64_t winner = -1;
      for (int64_t p = bag.begin; p < bag.end; ++p) {
        const int64_t row = index_at(inputs.input, p);
        if (row == plan.padding) continue;
        const Acc w = load<Acc>(weight, row, d);
        if (is_max) {
          // The first valid value is taken as is; later ones only if strictly greater, and a
          // NaN, once held, is never replaced.
          if (winner < 0 || (!std::isnan(acc) && (std::isnan(w) || w > acc))) {
            acc = w;
            winner = row;
          }
        } else if (psw != nullptr) {
          const Acc product =
              load_from<Acc>(*psw, flat_address(*psw, p)) * w;  // rounded before the add
          acc = acc + product;
        } else {
          acc = acc + w;
        }
      }
      if (options.mode == Mode::kMean && count > 0) acc = acc / static_cast<Acc>(count);
      store<Acc>(outputs.output, bag_index, d, acc);
      if (is_max && outputs.argmax != nullptr) {
        store_int64(*outputs.argmax, bag_index, d, winner);
      }
    }
  }
}

// ---- Backward ---------------------------------------------------------------------------------

int64_t load_int64(const TensorView& view, int64_t row, int64_t col) {
  int64_t v;
  std::memcpy(&v, address(view, row, col), sizeof v);
  return v;
}

bool is_matrix(const TensorView* view, DType dtype, int64_t rows, int64_t cols) {
  return view != nullptr && view->ndim == 2 && view->dtype == dtype && view->shape[0] == rows &&
         view->shape[1] == cols;
}

bool is_vector(const TensorView* view, DType dtype, int64_t n) {
  return view != nullptr && view->ndim == 1 && view->dtype == dtype && view->shape[0] == n;
}

// True when `view` has the input's shape and the table's dtype (per_sample_weights and its
// gradient).
bool like_input(const TensorView& view, const TensorView& input, DType dtype) {
  return view.dtype == dtype && view.ndim == input.ndim && view.shape[0] == input.shape[0] &&
         (input.ndim != 2 || view.shape[1] == input.shape[1]);
}

// Checks a backward call's inputs (not its outputs) as far as the loops below rely on them.
Status make_backward_plan(const BackwardInputs& in, const Options& options, Plan* plan) {
  if (options.mode != Mode::kSum && options.mode != Mode::kMean && options.mode != Mode::kMax) {
    return invalid("bad mode");
  }
  Status status = make_plan(in.weight, in.input, in.offsets, options, plan);
  if (!status.ok()) return status;
  if (!has_memory(&in.grad_output) || !has_memory(in.per_sample_weights) ||
      !has_memory(in.argmax)) {
    return invalid("a view with elements has a null data pointer");
  }
  const int64_t num_bags = static_cast<int64_t>(plan->bags.size());
  if (!is_matrix(&in.grad_output, in.weight.dtype, num_bags, plan->dim)) {
    return invalid("grad_output must be (B, D) of the weight's dtype");
  }
  const TensorView* psw = in.per_sample_weights;
  if (psw != nullptr &&
      (options.mode != Mode::kSum || !like_input(*psw, in.input, in.weight.dtype))) {
    return invalid("per_sample_weights must be mode sum, the input's shape, weight's dtype");
  }
  if (options.mode == Mode::kMax) {
    if (options.sparse || options.scale_grad_by_freq) {
      return invalid("max takes neither sparse nor scale_grad_by_freq");
    }
    if (!is_matrix(in.argmax, DType::kInt64, num_bags, plan->dim)) {
      return invalid("max needs argmax, (B, D) int64");
    }
    // Entries are a row the bag holds at a valid position, or -1 for a bag with none (embag.h);
    // anything else did not come from this forward.
    for (int64_t b = 0; b < num_bags; ++b) {
      const Bag& bag = plan->bags[static_cast<size_t>(b)];
      for (int64_t d = 0; d < plan->dim; ++d) {
        const int64_t row = load_int64(*in.argmax, b, d);
        if (row < -1 || row >= plan->num_rows) return invalid("argmax entry out of range");
        bool held = false, any_valid = false;
        for (int64_t p = bag.begin; p < bag.end; ++p) {
          const int64_t r = index_at(in.input, p);
          if (r == plan->padding) continue;
          any_valid = true;
          held = held || r == row;
        }
        if (row == -1 ? any_valid : !held) return invalid("argmax entry not a row of its bag");
      }
    }
  }
  return Status::Ok();
}

// The rows of a sparse gradient: distinct non-padding rows read by positions inside bags, in
// ascending order.
std::vector<int64_t> referenced_rows(const TensorView& input, const Plan& plan) {
  std::vector<bool> seen(static_cast<size_t>(plan.num_rows), false);
  for (const Bag& bag : plan.bags) {
    for (int64_t p = bag.begin; p < bag.end; ++p) {
      const int64_t row = index_at(input, p);
      if (row != plan.padding) seen[static_cast<size_t>(row)] = true;
    }
  }
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < plan.num_rows; ++r) {
    if (seen[static_cast<size_t>(r)]) rows.push_back(r);
  }
  return rows;
}

Status check_backward_outputs(const BackwardInputs& in, const BackwardOutputs& out,
                              const Options& options, const Plan& plan, int64_t unique_rows) {
  if (!has_memory(out.grad_weight) || !has_memory(out.grad_weight_rows) ||
      !has_memory(out.grad_weight_values) || !has_memory(out.grad_per_sample_weights)) {
    return invalid("a view with elements has a null data pointer");
  }
  const DType dtype = in.weight.dtype;
  if (options.sparse) {
    if (out.grad_weight != nullptr ||
        !is_vector(out.grad_weight_rows, DType::kInt64, unique_rows) ||
        !is_matrix(out.grad_weight_values, dtype, unique_rows, plan.dim)) {
      return invalid("sparse needs (U) int64 rows and (U, D) values, and no dense gradient");
    }
  } else if (out.grad_weight_rows != nullptr || out.grad_weight_values != nullptr ||
             !is_matrix(out.grad_weight, dtype, plan.num_rows, plan.dim)) {
    return invalid("dense needs a (V, D) gradient of the weight's dtype, and no sparse one");
  }
  const TensorView* grad_psw = out.grad_per_sample_weights;
  if (grad_psw != nullptr &&
      (in.per_sample_weights == nullptr || !like_input(*grad_psw, in.input, dtype))) {
    return invalid("grad_per_sample_weights needs per_sample_weights, the input's shape");
  }
  return Status::Ok();
}

// G of embag.h's pseudocode, row-major (V, D), in the accumulation type and not yet rounded.
template <typename Acc>
std::vector<Acc> weight_gradient(const BackwardInputs& in, const Options& options,
                                 const Plan& plan) {
  const int64_t dim = plan.dim;
  // Every element starts at +0.0, so an untouched element is +0.0 and a fold of -0.0 terms
  // is +0.0, as PyTorch's zero-initialised gradient gives.
  std::vector<Acc> grad(static_cast<size_t>(plan.num_rows * dim), Acc(0));
  auto element = [&](int64_t row, int64_t d) -> Acc& {
    return grad[static_cast<size_t>(row * dim + d)];
  };
  const TensorView& g = in.grad_output;
  const TensorView* psw = in.per_sample_weights;
  std::vector<int64_t> count(static_cast<size_t>(plan.num_rows), 0);
  for (size_t b = 0; b < plan.bags.size(); ++b) {
    const Bag& bag = plan.bags[b];
    const int64_t bag_index = static_cast<int64_t>(b);
    int64_t valid = 0;
    for (int64_t p = bag.begin; p < bag.end; ++p) {
      if (index_at(in.input, p) != plan.padding) ++valid;
    }
    if (options.mode == Mode::kMax) {
      if (valid == 0) continue;  // an empty or all-padding bag gives no gradient
      for (int64_t d = 0; d < dim; ++d) {
        const int64_t row = load_int64(*in.argmax, bag_index, d);
        // make_backward_plan checked that the row is one this bag holds at a valid position.
        element(row, d) = element(row, d) + load<Acc>(g, bag_index, d);
      }
      continue;
    }
    for (int64_t p = bag.begin; p < bag.end; ++p) {
      const int64_t row = index_at(in.input, p);
      ++count[static_cast<size_t>(row)];  // padding positions count too (only P's count)
      if (row == plan.padding) continue;
      for (int64_t d = 0; d < dim; ++d) {
        Acc term = load<Acc>(g, bag_index, d);
        if (psw != nullptr) {
          term = term * load_from<Acc>(*psw, flat_address(*psw, p));  // rounded before the add
        } else if (options.mode == Mode::kMean) {
          term = term / static_cast<Acc>(valid);
        }
        element(row, d) = element(row, d) + term;
      }
    }
  }
  if (options.scale_grad_by_freq) {
    for (int64_t r = 0; r < plan.num_rows; ++r) {
      const int64_t n = count[static_cast<size_t>(r)];
      if (n == 0 || r == plan.padding) continue;
      for (int64_t d = 0; d < dim; ++d) element(r, d) = element(r, d) / static_cast<Acc>(n);
    }
  }
  return grad;
}

template <typename Acc>
void psw_gradient(const BackwardInputs& in, const TensorView& out, const Plan& plan) {
  const TensorView& input = in.input;
  const int64_t positions = input.ndim == 2 ? input.shape[0] * input.shape[1] : input.shape[0];
  // Padding positions and positions in no bag stay +0.0.
  for (int64_t p = 0; p < positions; ++p) store_to<Acc>(out, flat_address(out, p), Acc(0));
  for (size_t b = 0; b < plan.bags.size(); ++b) {
    const Bag& bag = plan.bags[b];
    const int64_t bag_index = static_cast<int64_t>(b);
    for (int64_t p = bag.begin; p < bag.end; ++p) {
      const int64_t row = index_at(input, p);
      if (row == plan.padding) continue;
      Acc acc = 0;
      for (int64_t d = 0; d < plan.dim; ++d) {
        const Acc product = load<Acc>(in.grad_output, bag_index, d) * load<Acc>(in.weight, row, d);
        acc = acc + product;
      }
      store_to<Acc>(out, flat_address(out, p), acc);
    }
  }
}

template <typename Acc>
void write_backward(const BackwardInputs& in, const BackwardOutputs& out, const Options& options,
                    const Plan& plan, const std::vector<int64_t>& rows) {
  const std::vector<Acc> grad = weight_gradient<Acc>(in, options, plan);
  const int64_t dim = plan.dim;
  auto element = [&](int64_t row, int64_t d) { return grad[static_cast<size_t>(row * dim + d)]; };
  if (options.sparse) {
    for (size_t i = 0; i < rows.size(); ++i) {
      const int64_t u = static_cast<int64_t>(i);
      store_int64(*out.grad_weight_rows, 0, u, rows[i]);
      for (int64_t d = 0; d < dim; ++d) {
        store<Acc>(*out.grad_weight_values, u, d, element(rows[i], d));
      }
    }
  } else {
    for (int64_t r = 0; r < plan.num_rows; ++r) {
      for (int64_t d = 0; d < dim; ++d) store<Acc>(*out.grad_weight, r, d, element(r, d));
    }
  }
  if (out.grad_per_sample_weights != nullptr) {
    psw_gradient<Acc>(in, *out.grad_per_sample_weights, plan);
  }
}

}  // namespace

std::vector<Bag> bags(const TensorView& input, const TensorView* offsets, const Options& options) {
  std::vector<Bag> out;
  if (!make_bags(input, offsets, options, &out).ok()) out.clear();
  return out;
}

std::optional<int64_t> normalized_padding_idx(const Options& options, int64_t num_rows) {
  if (!options.padding_idx) return std::nullopt;
  return *options.padding_idx < 0 ? *options.padding_idx + num_rows : *options.padding_idx;
}

int64_t index_at(const TensorView& view, int64_t pos) {
  const unsigned char* p = flat_address(view, pos);
  if (view.dtype == DType::kInt32) {
    int32_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  int64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

double value_at(const TensorView& view, int64_t row, int64_t col) {
  if (view.dtype == DType::kFloat64) return load<double>(view, row, col);
  return load<float>(view, row, col);
}

double row_norm(const TensorView& weight, int64_t row, double norm_type) {
  if (weight.dtype == DType::kFloat64) return norm_of_row<double>(weight, row, norm_type);
  return norm_of_row<float>(weight, row, norm_type);
}

Status renorm(const TensorView& weight, const TensorView& input, const TensorView* offsets,
              const Options& options) {
  Plan plan;
  Status status = make_plan(weight, input, offsets, options, &plan);
  if (!status.ok() || !options.max_norm) return status;
  if (weight.dtype == DType::kFloat64) {
    renorm_rows<double>(weight, input, plan, options);
  } else {
    renorm_rows<float>(weight, input, plan, options);
  }
  return Status::Ok();
}

Status forward(const ForwardInputs& inputs, const ForwardOutputs& outputs, const Options& options) {
  Plan plan;
  Status status = make_plan(inputs.weight, inputs.input, inputs.offsets, options, &plan);
  if (!status.ok()) return status;
  const int64_t num_bags = static_cast<int64_t>(plan.bags.size());
  const TensorView& out = outputs.output;
  if (!has_memory(&out) || !has_memory(outputs.bag_count) || !has_memory(outputs.argmax) ||
      !has_memory(inputs.per_sample_weights)) {
    return invalid("a view with elements has a null data pointer");
  }
  if (out.ndim != 2 || out.dtype != inputs.weight.dtype || out.shape[0] != num_bags ||
      out.shape[1] != plan.dim) {
    return invalid("output must be (B, D) of the weight's dtype");
  }
  if (outputs.bag_count != nullptr &&
      (outputs.bag_count->ndim != 1 || outputs.bag_count->dtype != DType::kInt64 ||
       outputs.bag_count->shape[0] != num_bags)) {
    return invalid("bag_count must be (B) int64");
  }
  if (outputs.argmax != nullptr &&
      (outputs.argmax->ndim != 2 || outputs.argmax->dtype != DType::kInt64 ||
       outputs.argmax->shape[0] != num_bags || outputs.argmax->shape[1] != plan.dim)) {
    return invalid("argmax must be (B, D) int64");
  }
  const TensorView* psw = inputs.per_sample_weights;
  if (psw != nullptr) {
    const TensorView& in = inputs.input;
    if (options.mode != Mode::kSum || psw->dtype != inputs.weight.dtype || psw->ndim != in.ndim ||
        psw->shape[0] != in.shape[0] || (in.ndim == 2 && psw->shape[1] != in.shape[1])) {
      return invalid("per_sample_weights must be mode sum, the input's shape, weight's dtype");
    }
  }
  if (options.max_norm) {
    if (inputs.weight.dtype == DType::kFloat64) {
      renorm_rows<double>(inputs.weight, inputs.input, plan, options);
    } else {
      renorm_rows<float>(inputs.weight, inputs.input, plan, options);
    }
  }
  if (inputs.weight.dtype == DType::kFloat64) {
    reduce<double>(inputs, outputs, options, plan);
  } else {
    reduce<float>(inputs, outputs, options, plan);
  }
  return Status::Ok();
}

Status sparse_gradient_rows(const BackwardInputs& inputs, const Options& options, int64_t* rows) {
  Plan plan;
  Status status = make_backward_plan(inputs, options, &plan);
  if (!status.ok()) return status;
  if (rows != nullptr) *rows = static_cast<int64_t>(referenced_rows(inputs.input, plan).size());
  return Status::Ok();
}

Status backward(const BackwardInputs& inputs, const BackwardOutputs& outputs,
                const Options& options) {
  Plan plan;
  Status status = make_backward_plan(inputs, options, &plan);
  if (!status.ok()) return status;
  const std::vector<int64_t> rows = referenced_rows(inputs.input, plan);
  status =
      check_backward_outputs(inputs, outputs, options, plan, static_cast<int64_t>(rows.size()));
  if (!status.ok()) return status;
  if (inputs.weight.dtype == DType::kFloat64) {
    write_backward<double>(inputs, outputs, options, plan, rows);
  } else {
    write_backward<float>(inputs, outputs, options, plan, rows);
  }
  return Status::Ok();
}

}  // namespace embag::ref
