// PyTorch 2.x as a peer in the benchmarks: its CPU embedding_bag (FBGEMM inside) and its
// backward, and FBGEMM's table-batched embedding operator (fbgemm_gpu), called on exactly the
// memory the embag and gather-loop rows use.
//
// Built only when CMake is given EMBAG_BENCH_TORCH_DIR (the torch package of .venv-torch, see
// `make bench-venv`); then EMBAG_BENCH_HAVE_TORCH is defined and the benchmarks register
// pytorch/... rows. The interface holds no torch type, so the benchmarks compile without
// libtorch's headers; torch_peer.cpp is the one file that includes them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace embag::bench::torch_peer {

enum class Mode : uint8_t { kSum, kMean, kMax };
// Table element types (the indices and offsets are always int64).
enum class Dtype : uint8_t { kFloat32, kFloat64, kFloat16, kBFloat16 };

// One embedding_bag call: a contiguous (rows, dim) table, int64 indices, and bags + 1 int64
// offsets (include_last_offset=True), no padding_idx, no per_sample_weights.
struct Call {
  const void* table = nullptr;
  Dtype dtype = Dtype::kFloat32;
  int64_t rows = 0, dim = 0;
  const int64_t* indices = nullptr;
  int64_t positions = 0;
  const int64_t* offsets = nullptr;
  int64_t bags = 0;
  Mode mode = Mode::kSum;
};

// The call over a float32 (rows, dim) table, one index batch and bags + 1 offsets: what every
// benchmark row passes.
inline Call float32_call(const float* table, int64_t rows, int64_t dim,
                         const std::vector<int64_t>& batch, const std::vector<int64_t>& offsets,
                         Mode mode) {
  Call call;
  call.table = table;
  call.rows = rows;
  call.dim = dim;
  call.indices = batch.data();
  call.positions = static_cast<int64_t>(batch.size());
  call.offsets = offsets.data();
  call.bags = static_cast<int64_t>(offsets.size()) - 1;
  call.mode = mode;
  return call;
}

// "2.15.0" and whether this libtorch has FBGEMM, e.g. "2.15.0 (FBGEMM)".
std::string version();
// torch.set_num_threads: the intra-op threads PyTorch's kernels use.
void set_num_threads(int threads);

// Errors are returned as text (empty: success); libtorch's exceptions never leave this file.

// torch.nn.functional.embedding_bag under inference mode (no autograd state: PyTorch's fastest
// forward, which for max still computes max_indices). When `output` is not null the (bags, dim)
// result is copied there as float32 (float64 as float64; 16-bit types as their float32 values),
// outside what a timed row measures if it passes null.
std::string forward(const Call& call, void* output);

// The state a backward needs from its forward (offset2bag, bag_size, max_indices), from
// torch.ops.aten._embedding_bag, the forward autograd runs in training.
class ForwardState {
 public:
  ForwardState();
  ~ForwardState();
  ForwardState(const ForwardState&) = delete;
  ForwardState& operator=(const ForwardState&) = delete;
  struct Impl;
  Impl* impl() const { return impl_; }

 private:
  Impl* impl_;
};
std::string training_forward(const Call& call, ForwardState* state);

// aten._embedding_bag_backward for a float32 (bags, dim) grad_output: a dense (rows, dim)
// gradient, or a sparse one followed by coalesce() (the form an optimizer consumes). When
// `dense` / `sparse_rows` + `sparse_values` are not null the result is copied there.
std::string backward(const Call& call, const ForwardState& state, const float* grad_output,
                     bool sparse, std::vector<float>* dense, std::vector<int64_t>* sparse_rows,
                     std::vector<float>* sparse_values);

// One training step's embedding work: training_forward then backward, nothing copied out.
std::string training_step(const Call& call, const float* grad_output, bool sparse);

// ---- FBGEMM's table-batched embedding operator (TBE) --------------------------------------
// The forward of fbgemm_gpu's SplitTableBatchedEmbeddingBagsCodegen for one float32 table on the
// host (EmbeddingLocation.HOST, ComputeDevice.CPU): the module's CPU lookup runs
// fbgemm::split_embedding_codegen_forward_cpu inside its autograd function, and this calls that
// operator through the c10 dispatcher (under NoGradGuard, as the module runs under no_grad)
// on the caller's memory. fbgemm_gpu's libraries (PyPI fbgemm-gpu-cpu, beside torch in
// .venv-torch) are loaded on first use; only in builds where CMake found them
// (EMBAG_BENCH_FBGEMM_GPU_DIR).

// fbgemm-gpu-cpu's version ("1.9.0") if its operator is loaded and found, else empty with the
// reason in *why.
std::string tbe_version(std::string* why);

// The TBE forward of `call` (sum or mean; TBE has no max pooling): as forward() above, the
// (bags, dim) float32 result copied to `output` when it is not null.
std::string tbe_forward(const Call& call, void* output);

// ---- Quantized tables ---------------------------------------------------------------------
// The sum over a quantized table of `rows` rows of `row_bytes` bytes (contiguous), on the indices
// and offsets of `call` (its table and dtype are not used; call.dim is D). Results are float32,
// copied to `output` when it is not null.
enum class QuantBits : uint8_t { k8, k4 };

// PyTorch's quantized::embedding_bag_byte_rowwise_offsets (8 bits) or
// embedding_bag_4bit_rowwise_offsets (4 bits) on bytes in the layout of PyTorch's prepack ops
// (embag's kInt8 / kInt4), mode sum, include_last_offset.
std::string quantized_forward(QuantBits bits, const void* table, int64_t rows, int64_t row_bytes,
                              const Call& call, void* output);

// FBGEMM's inference TBE: fbgemm::int_nbit_split_embedding_codegen_lookup_function, the CPU
// operator IntNBitTableBatchedEmbeddingBagsCodegen runs, for one table of SparseType INT8 or
// INT4 on bytes in its layout (embag's kTbeInt8 / kTbeInt4: qparams first, row alignment 1 as
// the module uses on CPU), SUM pooling, float32 output. Loaded as tbe_version() says; empty
// version: no such rows.
std::string tbe_inference_version(std::string* why);
std::string tbe_quantized_forward(QuantBits bits, const void* table, int64_t rows,
                                  int64_t row_bytes, const Call& call, void* output);

}  // namespace embag::bench::torch_peer
