// PyTorch 2.x as a benchmark peer (see torch_peer.h): the one file that includes libtorch's
// headers. Compiled as C++20 (libtorch 2.15's headers need it) against the torch package of
// .venv-bench, and linked with its libtorch_cpu and libc10 only (no CUDA library is loaded).
#include "torch_peer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/version.h>

#include <cstring>
#include <exception>
#include <tuple>

namespace embag::bench::torch_peer {
namespace {

at::ScalarType scalar_type(Dtype dtype) {
  switch (dtype) {
    case Dtype::kFloat32:
      return at::kFloat;
    case Dtype::kFloat64:
      return at::kDouble;
    case Dtype::kFloat16:
      return at::kHalf;
    case Dtype::kBFloat16:
      return at::kBFloat16;
  }
  return at::kFloat;
}

// PyTorch's mode numbers (EmbeddingBag.cpp: MODE_SUM, MODE_MEAN, MODE_MAX).
int64_t mode_number(Mode mode) {
  switch (mode) {
    case Mode::kSum:
      return 0;
    case Mode::kMean:
      return 1;
    case Mode::kMax:
      return 2;
  }
  return 0;
}

// Tensors over the caller's memory: no copy, so PyTorch reads exactly what embag reads.
struct Views {
  at::Tensor weight, indices, offsets;
  explicit Views(const Call& c) {
    weight = at::from_blob(const_cast<void*>(c.table), {c.rows, c.dim},
                           at::TensorOptions().dtype(scalar_type(c.dtype)));
    indices = at::from_blob(const_cast<int64_t*>(c.indices), {c.positions}, at::kLong);
    offsets = at::from_blob(const_cast<int64_t*>(c.offsets), {c.bags + 1}, at::kLong);
  }
};

// Copies a (bags, dim) result out: float64 stays float64, everything else becomes float32.
void copy_out(const at::Tensor& result, Dtype dtype, void* output) {
  const at::Tensor out =
      result.to(dtype == Dtype::kFloat64 ? at::kDouble : at::kFloat).contiguous();
  std::memcpy(output, out.data_ptr(), out.nbytes());
}

template <typename F>
std::string guarded(F&& body) {
  try {
    body();
    return "";
  } catch (const std::exception& e) {
    return std::string("PyTorch: ") + e.what();
  }
}

}  // namespace

struct ForwardState::Impl {
  at::Tensor offset2bag, bag_size, max_indices;
};

ForwardState::ForwardState() : impl_(new Impl) {}
ForwardState::~ForwardState() { delete impl_; }

std::string version() {
  std::string text = TORCH_VERSION;
  // PyTorch's CPU embedding_bag calls FBGEMM where it was built with it, which its quantized
  // engines reveal.
  for (at::QEngine engine : at::globalContext().supportedQEngines()) {
    if (engine == at::QEngine::FBGEMM) text += " (FBGEMM)";
  }
  return text;
}

void set_num_threads(int threads) { at::set_num_threads(threads); }

std::string forward(const Call& call, void* output) {
  return guarded([&] {
    c10::InferenceMode inference;
    Views v(call);
    // torch.embedding_bag: without autograd it runs _embedding_bag_forward_only.
    auto result = at::embedding_bag(v.weight, v.indices, v.offsets, /*scale_grad_by_freq=*/false,
                                    mode_number(call.mode), /*sparse=*/false,
                                    /*per_sample_weights=*/std::nullopt,
                                    /*include_last_offset=*/true,
                                    // No padding index is nullopt: a -1 here would be wrapped
                                    // to V - 1, and any padding index takes PyTorch off its
                                    // FBGEMM path (seen: 6x slower, in cpublas axpy).
                                    /*padding_idx=*/std::nullopt);
    if (output != nullptr) copy_out(std::get<0>(result), call.dtype, output);
  });
}

std::string training_forward(const Call& call, ForwardState* state) {
  return guarded([&] {
    c10::InferenceMode inference;
    Views v(call);
    auto result = at::_embedding_bag(v.weight, v.indices, v.offsets, false, mode_number(call.mode),
                                     false, std::nullopt, true, -1);
    state->impl()->offset2bag = std::get<1>(result);
    state->impl()->bag_size = std::get<2>(result);
    state->impl()->max_indices = std::get<3>(result);
  });
}

std::string backward(const Call& call, const ForwardState& state, const float* grad_output,
                     bool sparse, std::vector<float>* dense, std::vector<int64_t>* sparse_rows,
                     std::vector<float>* sparse_values) {
  return guarded([&] {
    c10::InferenceMode inference;
    Views v(call);
    const at::Tensor grad =
        at::from_blob(const_cast<float*>(grad_output), {call.bags, call.dim}, at::kFloat);
    const ForwardState::Impl& s = *state.impl();
    at::Tensor result = at::_embedding_bag_backward(
        grad, v.indices, v.offsets, s.offset2bag, s.bag_size, s.max_indices, call.rows,
        /*scale_grad_by_freq=*/false, mode_number(call.mode), sparse, std::nullopt, -1);
    if (sparse) result = result.coalesce();
    if (dense != nullptr) {
      const at::Tensor d = result.to(at::kFloat).contiguous();
      dense->assign(d.data_ptr<float>(), d.data_ptr<float>() + d.numel());
    }
    if (sparse && sparse_rows != nullptr && sparse_values != nullptr) {
      const at::Tensor rows = result.indices().contiguous();
      const at::Tensor values = result.values().to(at::kFloat).contiguous();
      sparse_rows->assign(rows.data_ptr<int64_t>(), rows.data_ptr<int64_t>() + rows.numel());
      sparse_values->assign(values.data_ptr<float>(), values.data_ptr<float>() + values.numel());
    }
  });
}

std::string training_step(const Call& call, const float* grad_output, bool sparse) {
  ForwardState state;
  std::string error = training_forward(call, &state);
  if (error.empty()) error = backward(call, state, grad_output, sparse, nullptr, nullptr, nullptr);
  return error;
}

}  // namespace embag::bench::torch_peer
