// PyTorch 2.x and FBGEMM's TBE as benchmark peers (see torch_peer.h): the one file that includes
// libtorch's headers. Compiled as C++20 (libtorch 2.14's headers need it) against the torch
// package of .venv-torch, and linked with its libtorch_cpu and libc10 only. fbgemm_gpu's
// libraries are dlopen'ed on first use of the TBE rows (they need the wheel's libtorch.so, which
// loads its CUDA libraries; no GPU is needed or touched).
#include "torch_peer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <dlfcn.h>
#include <torch/version.h>

#include <cstring>
#include <exception>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

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

// ---- FBGEMM's TBE ----------------------------------------------------------------------------

namespace {

// fbgemm::split_embedding_codegen_forward_cpu, the CPU forward
// SplitTableBatchedEmbeddingBagsCodegen runs (schema in fbgemm_gpu_tbe_common.so, kernel in
// fbgemm_gpu_tbe_training_forward.so). (The kernel is registered with its tensors by value, and
// typed() wants that exact signature.)
using TbeForward = at::Tensor(at::Tensor weights, at::Tensor weights_offsets, at::Tensor D_offsets,
                              c10::SymInt total_D, at::Tensor hash_size_cumsum, at::Tensor indices,
                              at::Tensor offsets, int64_t pooling_mode, at::Tensor indice_weights,
                              int64_t output_dtype);

struct Tbe {
  std::string error;  // why there is no operator (empty: `op` is set)
  std::optional<c10::TypedOperatorHandle<TbeForward>> op;
};

// Loads fbgemm_gpu's libraries once: libtorch.so first (fbgemm_gpu's libraries name it, and the
// benchmarks link only libtorch_cpu), then those the forward operator needs, in the order
// fbgemm_gpu/__init__.py loads them.
const Tbe& tbe() {
  static Tbe* const state = [] {
    auto* t = new Tbe;
#ifdef EMBAG_BENCH_FBGEMM_GPU_DIR
    const std::string torch_lib = std::string(EMBAG_BENCH_TORCH_LIB_DIR) + "/libtorch.so";
    if (dlopen(torch_lib.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
      t->error = std::string("cannot load ") + torch_lib + ": " + dlerror();
      return t;
    }
    for (const char* library : {"fbgemm_gpu_config", "fbgemm_gpu_tbe_utils",
                                "fbgemm_gpu_tbe_common", "fbgemm_gpu_tbe_training_forward"}) {
      const std::string path = std::string(EMBAG_BENCH_FBGEMM_GPU_DIR) + "/" + library + ".so";
      if (dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
        t->error = "cannot load " + path + ": " + dlerror();
        return t;
      }
    }
    try {
      t->op.emplace(c10::Dispatcher::singleton()
                        .findSchemaOrThrow("fbgemm::split_embedding_codegen_forward_cpu", "")
                        .typed<TbeForward>());
    } catch (const std::exception& e) {
      // (the first line: c10's messages go on with a stack trace)
      const std::string what = e.what();
      t->error = "fbgemm::split_embedding_codegen_forward_cpu: " + what.substr(0, what.find('\n'));
    }
#else
    t->error = "fbgemm_gpu was not found beside torch when the benchmarks were configured";
#endif
    return t;
  }();
  return *state;
}

// The module's buffers for one table of (rows, dim): weights_offsets {0}, D_offsets {0, D}
// (int32), hash_size_cumsum {0, rows}; kept for the last shape so a timed call allocates nothing
// of its own. No per-sample weights is an undefined tensor, as the module's CPU lookup passes:
// an empty but defined one is read as weights (a segfault, seen with fbgemm-gpu-cpu 1.9.0).
struct TbeBuffers {
  int64_t rows = -1, dim = -1;
  at::Tensor weights_offsets, d_offsets, hash_size_cumsum, no_weights;
};

const TbeBuffers& tbe_buffers(int64_t rows, int64_t dim) {
  static TbeBuffers buffers;
  static std::mutex mutex;
  const std::lock_guard<std::mutex> lock(mutex);
  if (buffers.rows != rows || buffers.dim != dim) {
    buffers.rows = rows;
    buffers.dim = dim;
    buffers.weights_offsets = at::zeros({1}, at::kLong);
    buffers.d_offsets = at::tensor({0, static_cast<int32_t>(dim)}, at::kInt);
    buffers.hash_size_cumsum = at::tensor({int64_t{0}, rows}, at::kLong);
  }
  return buffers;
}

}  // namespace

std::string tbe_version(std::string* why) {
  const Tbe& t = tbe();
  if (!t.error.empty()) {
    *why = t.error;
    return "";
  }
#ifdef EMBAG_BENCH_FBGEMM_GPU_VERSION
  return EMBAG_BENCH_FBGEMM_GPU_VERSION;
#else
  return "?";
#endif
}

std::string tbe_forward(const Call& call, void* output) {
  const Tbe& t = tbe();
  if (!t.error.empty()) return "TBE: " + t.error;
  if (call.dtype != Dtype::kFloat32 || call.mode == Mode::kMax) {
    return "TBE: float32 sum or mean only";
  }
  return guarded([&] {
    // The module's CPU lookup is an autograd function: it runs under no_grad, not inference
    // mode (which it rejects), and so does this.
    at::NoGradGuard no_grad;
    const TbeBuffers& b = tbe_buffers(call.rows, call.dim);
    const at::Tensor weights = at::from_blob(const_cast<void*>(call.table), {call.rows * call.dim},
                                             at::TensorOptions().dtype(at::kFloat));
    const at::Tensor indices =
        at::from_blob(const_cast<int64_t*>(call.indices), {call.positions}, at::kLong);
    const at::Tensor offsets =
        at::from_blob(const_cast<int64_t*>(call.offsets), {call.bags + 1}, at::kLong);
    // PoolingMode: SUM 0, MEAN 1; output_dtype: SparseType.FP32 is 0.
    const at::Tensor result = t.op->call(
        weights, b.weights_offsets, b.d_offsets, c10::SymInt(call.dim), b.hash_size_cumsum, indices,
        offsets, call.mode == Mode::kMean ? 1 : 0, b.no_weights, /*output_dtype=*/0);
    if (output != nullptr) copy_out(result, call.dtype, output);
  });
}

// ---- Quantized tables -----------------------------------------------------------------------

namespace {

at::Tensor table_bytes(const void* table, int64_t rows, int64_t row_bytes) {
  return at::from_blob(const_cast<void*>(table), {rows, row_bytes}, at::kByte);
}

// FBGEMM's inference operator (fbgemm_gpu_tbe_inference.so, after the libraries tbe() loads),
// called boxed: its schema has optional arguments that a typed() signature would have to match
// exactly.
struct TbeInference {
  std::string error;
  std::optional<c10::OperatorHandle> op;
};

const TbeInference& tbe_inference() {
  static TbeInference* const state = [] {
    auto* t = new TbeInference;
    const Tbe& base = tbe();
    if (!base.error.empty()) {
      t->error = base.error;
      return t;
    }
#ifdef EMBAG_BENCH_FBGEMM_GPU_DIR
    const std::string path =
        std::string(EMBAG_BENCH_FBGEMM_GPU_DIR) + "/fbgemm_gpu_tbe_inference.so";
    if (dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
      t->error = "cannot load " + path + ": " + dlerror();
      return t;
    }
    try {
      t->op.emplace(c10::Dispatcher::singleton().findSchemaOrThrow(
          "fbgemm::int_nbit_split_embedding_codegen_lookup_function", ""));
    } catch (const std::exception& e) {
      const std::string what = e.what();
      t->error = "fbgemm::int_nbit_split_embedding_codegen_lookup_function: " +
                 what.substr(0, what.find('\n'));
    }
#endif
    return t;
  }();
  return *state;
}

}  // namespace

std::string quantized_forward(QuantBits bits, const void* table, int64_t rows, int64_t row_bytes,
                              const Call& call, void* output) {
  return guarded([&] {
    c10::InferenceMode inference;
    static const c10::OperatorHandle byte_op = c10::Dispatcher::singleton().findSchemaOrThrow(
        "quantized::embedding_bag_byte_rowwise_offsets", "");
    static const c10::OperatorHandle four_bit_op = c10::Dispatcher::singleton().findSchemaOrThrow(
        "quantized::embedding_bag_4bit_rowwise_offsets", "");
    const at::Tensor indices =
        at::from_blob(const_cast<int64_t*>(call.indices), {call.positions}, at::kLong);
    const at::Tensor offsets =
        at::from_blob(const_cast<int64_t*>(call.offsets), {call.bags + 1}, at::kLong);
    // (weight, indices, offsets, scale_grad_by_freq, mode 0 = sum, pruned_weights,
    //  per_sample_weights, compressed_indices_mapping, include_last_offset)
    std::vector<c10::IValue> stack{table_bytes(table, rows, row_bytes),
                                   indices,
                                   offsets,
                                   false,
                                   int64_t{0},
                                   false,
                                   c10::IValue(),
                                   c10::IValue(),
                                   true};
    (bits == QuantBits::k8 ? byte_op : four_bit_op).callBoxed(stack);
    if (output != nullptr) copy_out(stack[0].toTensor(), Dtype::kFloat32, output);
  });
}

std::string tbe_inference_version(std::string* why) {
  const TbeInference& t = tbe_inference();
  if (!t.error.empty()) {
    *why = t.error;
    return "";
  }
  return tbe_version(why);
}

std::string tbe_quantized_forward(QuantBits bits, const void* table, int64_t rows,
                                  int64_t row_bytes, const Call& call, void* output) {
  const TbeInference& t = tbe_inference();
  if (!t.error.empty()) return "TBE inference: " + t.error;
  return guarded([&] {
    at::NoGradGuard no_grad;
    // The module's buffers for one HOST table: SparseType INT8 is 2, INT4 3
    // (SparseType.as_int()); EmbeddingLocation.HOST 3; D_offsets {0, D}.
    static const at::Tensor placements = at::tensor({3}, at::kInt);
    static const at::Tensor weights_offsets = at::zeros({1}, at::kLong);
    static const at::Tensor uvm = at::empty({0}, at::kByte);
    static const at::Tensor cache_weights = at::empty({0, 0}, at::kByte);
    static const at::Tensor cache_locations = at::empty({0}, at::kInt);
    const at::Tensor types = at::tensor({bits == QuantBits::k8 ? 2 : 3}, at::kByte);
    const at::Tensor d_offsets = at::tensor({0, static_cast<int32_t>(call.dim)}, at::kInt);
    const at::Tensor weights =
        at::from_blob(const_cast<void*>(table), {rows * row_bytes}, at::kByte);
    const at::Tensor indices =
        at::from_blob(const_cast<int64_t*>(call.indices), {call.positions}, at::kLong);
    const at::Tensor offsets =
        at::from_blob(const_cast<int64_t*>(call.offsets), {call.bags + 1}, at::kLong);
    const int64_t d = call.dim;
    std::vector<c10::IValue> stack{weights,
                                   uvm,
                                   placements,
                                   weights_offsets,
                                   types,
                                   d_offsets,
                                   c10::SymInt(d),
                                   /*max_int2_D=*/int64_t{0},
                                   /*max_int4_D=*/bits == QuantBits::k4 ? d : int64_t{0},
                                   /*max_int8_D=*/bits == QuantBits::k8 ? d : int64_t{0},
                                   /*max_float16_D=*/int64_t{0},
                                   /*max_float32_D=*/int64_t{0},
                                   indices,
                                   offsets,
                                   /*pooling_mode SUM=*/int64_t{0},
                                   /*indice_weights=*/c10::IValue(),
                                   /*output_dtype FP32=*/int64_t{0},
                                   cache_weights,
                                   cache_locations,
                                   /*row_alignment=*/int64_t{1},
                                   /*max_float8_D=*/int64_t{0},
                                   /*fp8_exponent_bits=*/int64_t{-1},
                                   /*fp8_exponent_bias=*/int64_t{-1}};
    t.op->callBoxed(stack);
    if (output != nullptr) copy_out(stack[0].toTensor(), Dtype::kFloat32, output);
  });
}

}  // namespace embag::bench::torch_peer
