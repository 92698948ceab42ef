// The table-batched reference (batched_reference.h): per-feature reference forwards, and the
// fused optimizers' updates as batched.h writes them, one float32 operation at a time.
#include "batched_reference.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "half_float.h"
#include "reference.h"

namespace embag::ref {
namespace {

int64_t index_value(const TensorView& view, int64_t i) {
  return view.dtype == DType::kInt32 ? static_cast<const int32_t*>(view.data)[i]
                                     : static_cast<const int64_t*>(view.data)[i];
}

float load(const TensorView& view, int64_t element) {
  const void* base = view.data;
  switch (view.dtype) {
    case DType::kFloat16:
      return half_to_float(static_cast<const uint16_t*>(base)[element]);
    case DType::kBFloat16:
      return bfloat16_to_float(static_cast<const uint16_t*>(base)[element]);
    default:
      return static_cast<const float*>(base)[element];
  }
}

void store(const TensorView& view, int64_t element, float value) {
  void* base = view.data;
  switch (view.dtype) {
    case DType::kFloat16:
      static_cast<uint16_t*>(base)[element] = float_to_half(value);
      break;
    case DType::kBFloat16:
      static_cast<uint16_t*>(base)[element] = float_to_bfloat16(value);
      break;
    default:
      static_cast<float*>(base)[element] = value;
  }
}

int64_t num_bags_of(const BatchedInputs& in) {
  const int64_t F = static_cast<int64_t>(in.feature_table.size());
  return F == 0 ? 0 : (in.offsets.shape[0] - 1) / F;
}

int64_t column_of(const BatchedInputs& in, int64_t f) {
  if (!in.feature_columns.empty()) return in.feature_columns[f];
  int64_t column = 0;
  for (int64_t g = 0; g < f; ++g) column += in.tables[in.feature_table[g]].weight.shape[1];
  return column;
}

std::optional<int64_t> padding_of(const BatchedTable& table) {
  if (!table.padding_idx) return std::nullopt;
  const int64_t V = table.weight.shape[0];
  return *table.padding_idx < 0 ? *table.padding_idx + V : *table.padding_idx;
}

}  // namespace

Status batched_forward(const BatchedInputs& in, const TensorView& output) {
  const int64_t F = static_cast<int64_t>(in.feature_table.size());
  const int64_t B = num_bags_of(in);
  const size_t element = dtype_size(output.dtype);
  for (int64_t f = 0; f < F; ++f) {
    const BatchedTable& table = in.tables[in.feature_table[f]];
    const int64_t D = table.weight.shape[1];
    const int64_t first = index_value(in.offsets, f * B);
    const int64_t last = index_value(in.offsets, (f + 1) * B);
    std::vector<int64_t> indices, offsets;
    for (int64_t p = first; p < last; ++p) indices.push_back(index_value(in.indices, p));
    for (int64_t b = 0; b <= B; ++b) offsets.push_back(index_value(in.offsets, f * B + b) - first);
    std::vector<unsigned char> out(static_cast<size_t>(B * D) * element + 1);
    TensorView input = make_view_1d(indices.data(), DType::kInt64, last - first);
    TensorView offs = make_view_1d(offsets.data(), DType::kInt64, B + 1);
    TensorView psw;
    if (in.per_sample_weights) {
      psw = make_view_1d(static_cast<unsigned char*>(in.per_sample_weights->data) + first * element,
                         output.dtype, last - first);
    }
    ForwardInputs fin{table.weight, input, &offs, in.per_sample_weights ? &psw : nullptr};
    ForwardOutputs fout{make_view_2d(out.data(), output.dtype, B, D)};
    Options options;
    options.mode = table.mode;
    options.include_last_offset = true;
    options.padding_idx = table.padding_idx;
    if (Status s = ref::forward(fin, fout, options); !s.ok()) return s;
    const int64_t column = column_of(in, f);
    for (int64_t b = 0; b < B; ++b) {
      std::memcpy(static_cast<unsigned char*>(output.data) +
                      static_cast<size_t>(b * output.strides[0] + column) * element,
                  out.data() + static_cast<size_t>(b * D) * element,
                  static_cast<size_t>(D) * element);
    }
  }
  return Status::Ok();
}

void batched_gradients(const BatchedInputs& in, const TensorView& grad_output,
                       std::vector<std::vector<float>>* gradients,
                       std::vector<std::vector<bool>>* touched) {
  const int64_t T = static_cast<int64_t>(in.tables.size());
  const int64_t F = static_cast<int64_t>(in.feature_table.size());
  const int64_t B = num_bags_of(in);
  gradients->assign(static_cast<size_t>(T), {});
  touched->assign(static_cast<size_t>(T), {});
  for (int64_t t = 0; t < T; ++t) {
    const TensorView& w = in.tables[t].weight;
    (*gradients)[t].assign(static_cast<size_t>(w.shape[0] * w.shape[1]), 0.0f);
    (*touched)[t].assign(static_cast<size_t>(w.shape[0]), false);
  }
  // Positions in ascending order: features one after another, each feature's bags in order.
  for (int64_t f = 0; f < F; ++f) {
    const int64_t t = in.feature_table[f];
    const BatchedTable& table = in.tables[t];
    const int64_t D = table.weight.shape[1];
    const std::optional<int64_t> padding = padding_of(table);
    const int64_t column = column_of(in, f);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t begin = index_value(in.offsets, f * B + b);
      const int64_t end = index_value(in.offsets, f * B + b + 1);
      int64_t valid = 0;
      for (int64_t p = begin; p < end; ++p) valid += index_value(in.indices, p) != padding;
      for (int64_t p = begin; p < end; ++p) {
        const int64_t r = index_value(in.indices, p);
        if (r == padding) continue;
        (*touched)[t][r] = true;
        float* g = &(*gradients)[t][static_cast<size_t>(r * D)];
        for (int64_t d = 0; d < D; ++d) {
          const float go = load(grad_output, b * grad_output.strides[0] + column + d);
          float term = go;
          if (in.per_sample_weights) {
            term = go * load(*in.per_sample_weights, p);
          } else if (table.mode == Mode::kMean) {
            term = go / static_cast<float>(valid);
          }
          g[d] = g[d] + term;
        }
      }
    }
  }
}

Status batched_fused_backward(const BatchedInputs& in, const TensorView& grad_output,
                              const OptimizerConfig& c, const std::vector<OptimizerState>& state) {
  std::vector<std::vector<float>> gradients;
  std::vector<std::vector<bool>> touched;
  batched_gradients(in, grad_output, &gradients, &touched);
  const float lr = c.learning_rate, eps = c.eps, wd = c.weight_decay;
  const float step = static_cast<float>(c.step);
  const float c1 = 1.0f - std::pow(c.beta1, step);
  const float c2 = 1.0f - std::pow(c.beta2, step);
  for (size_t t = 0; t < in.tables.size(); ++t) {
    const TensorView& w = in.tables[t].weight;
    const int64_t V = w.shape[0], D = w.shape[1];
    for (int64_t r = 0; r < V; ++r) {
      if (!touched[t][r]) continue;
      const float* g = &gradients[t][static_cast<size_t>(r * D)];
      const int64_t at = r * w.strides[0];
      if (c.optimizer == Optimizer::kSgd) {
        for (int64_t d = 0; d < D; ++d) store(w, at + d, load(w, at + d) - lr * g[d]);
      } else if (c.optimizer == Optimizer::kAdagrad) {
        float* m = static_cast<float*>(state[t].momentum1.data) + r * D;
        for (int64_t d = 0; d < D; ++d) {
          m[d] = m[d] + g[d] * g[d];
          store(w, at + d, load(w, at + d) - (lr * g[d]) / (std::sqrt(m[d]) + eps));
        }
      } else if (c.optimizer == Optimizer::kRowwiseAdagrad) {
        float* m = static_cast<float*>(state[t].momentum1.data) + r;
        const bool l2 = c.weight_decay_mode == WeightDecayMode::kL2;
        float sum = 0.0f;
        for (int64_t d = 0; d < D; ++d) {
          const float h = l2 ? g[d] + wd * load(w, at + d) : g[d];
          sum = sum + h * h;
        }
        *m = *m + sum / static_cast<float>(D);
        const float multiplier = lr / (std::sqrt(*m) + eps);
        float correction = 1.0f;
        if (l2) correction = 1.0f - multiplier * wd;
        if (c.weight_decay_mode == WeightDecayMode::kDecoupled) correction = 1.0f - lr * wd;
        for (int64_t d = 0; d < D; ++d) {
          store(w, at + d, correction * load(w, at + d) - g[d] * multiplier);
        }
      } else {  // Adam
        float* m1 = static_cast<float*>(state[t].momentum1.data) + r * D;
        float* m2 = static_cast<float*>(state[t].momentum2.data) + r * D;
        for (int64_t d = 0; d < D; ++d) {
          m1[d] = m1[d] * c.beta1 + g[d] * (1.0f - c.beta1);
          m2[d] = m2[d] * c.beta2 + (g[d] * g[d]) * (1.0f - c.beta2);
          const float x = load(w, at + d);
          store(w, at + d, x - lr * ((m1[d] / c1) / (std::sqrt(m2[d] / c2) + eps) + wd * x));
        }
      }
    }
  }
  return Status::Ok();
}

}  // namespace embag::ref
