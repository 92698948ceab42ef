// The hand-written gather loop that stands for this machine's limit in the benchmarks.
//
// It is written the way FBGEMM writes its CPU EmbeddingSpMDM kernels: one explicit-SIMD
// implementation per ISA (AVX-512, AVX2; plain C++ otherwise), accumulators held in registers
// for a compile-time row length (D = 32, 64, 128, 256; any other D takes a masked generic loop),
// the row of the index 16 positions ahead prefetched into L1 line by line, indices checked
// inline, bags split into one contiguous chunk per thread of a persistent pool. embag's Halide
// kernels are measured against it: if embag is slower, the schedule leaves bandwidth unused.
//
// Semantics, per bag b and column d over positions p in [offsets[b], offsets[b+1]):
//   sum:  out[b][d] = fold(+, +0.0f, W[idx[p]][d])        left fold in input order, float32
//   mean: out[b][d] = sum / float(n_b), 0 when n_b = 0    a division, not a reciprocal multiply
//   max:  out[b][d] = first strictly greatest W[idx[p]][d], 0 when the bag is empty; a NaN,
//         once met, stays (embag's rule, so the benchmark can compare max outputs exactly)
// No padding_idx, per-sample weights or max_norm: the benchmarks time the plain lookup.
// Because each column is folded in input order whatever the ISA, block or thread count, the
// output is bitwise identical to a scalar loop and to any other left fold (embag's included).
#pragma once

#include <cstdint>
#include <string>

namespace embag::bench {

enum class GatherMode : uint8_t { kSum, kMean, kMax };

// kAuto picks the best ISA this CPU supports; the others force one (tests use them to compare
// every compiled implementation against the scalar one).
enum class GatherIsa : uint8_t { kAuto, kAvx512, kAvx2, kScalar };

// One call's arrays; the caller owns all memory. Offsets have bags + 1 entries (FBGEMM's
// convention, PyTorch's include_last_offset=True), offsets[0] == 0, non-decreasing.
template <typename IndexT>
struct GatherProblem {
  const float* table = nullptr;  // rows x dim, contiguous
  int64_t rows = 0;
  int64_t dim = 0;
  const IndexT* indices = nullptr;  // offsets[bags] entries
  const IndexT* offsets = nullptr;  // bags + 1 entries
  int64_t bags = 0;
  GatherMode mode = GatherMode::kSum;
  float* output = nullptr;  // bags x dim, contiguous
};

// Runs the lookup on `num_threads` threads (the caller's thread is one of them). Returns false
// when an index is outside [0, rows) (outputs are then partly written, as FBGEMM leaves them)
// or when `isa` is not supported by this CPU or this build.
bool gather_forward(const GatherProblem<int64_t>& problem, int num_threads,
                    GatherIsa isa = GatherIsa::kAuto);
bool gather_forward(const GatherProblem<int32_t>& problem, int num_threads,
                    GatherIsa isa = GatherIsa::kAuto);

// The ISA kAuto resolves to on this CPU (asks the CPU once).
GatherIsa gather_best_isa();
bool gather_isa_supported(GatherIsa isa);
// "avx512", "avx2", "scalar", "auto".
const char* gather_isa_name(GatherIsa isa);
const char* gather_mode_name(GatherMode mode);

// Names the implementation a call would run, in embag's variant style, e.g.
// "baseline_sum_f32_i64_avx512_d64" (compile-time D) or "baseline_max_f32_i32_avx2_generic".
std::string gather_variant_name(GatherMode mode, int index_bits, int64_t dim,
                                GatherIsa isa = GatherIsa::kAuto);

}  // namespace embag::bench
