// embag: PyTorch's torch.nn.functional.embedding_bag as ahead-of-time compiled Halide kernels.
//
// This is the whole public API. Include it, link embag::embag, call embag::forward().
//
// Semantics (the exact rules, with the deliberate differences from PyTorch, are in
// docs/semantics.md):
//
//   V, D     = weight.shape                        # table of V rows of D columns
//   P        = padding_idx (negative wraps: P += V), or none
//   bags     = 1-D input + offsets:  bag b = positions [off[b], off[b+1]), last ends at N
//                (include_last_offset: len(off)-1 bags, positions past off[-1] are in no bag)
//              2-D input (B, L):     bag b = row b, offsets must be absent
//   if max_norm:                                   # in place, before the lookup
//     for each distinct row r read by a position inside a bag:
//       n = p_norm(W[r], norm_type)                # inf: max|x|, 0: count of non-zeros
//       if n > max_norm: W[r] *= max_norm / (n + 1e-7)
//   for each bag b, column d:                      # positions p in input order, idx[p] != P
//     sum:  out[b][d] = fold(+, 0, psw[p] * W[idx[p]][d])          (psw = 1 when absent)
//     mean: out[b][d] = fold(+, 0, W[idx[p]][d]) / n_b, 0 if n_b = 0 (n_b = valid positions)
//     max:  out[b][d] = first strictly greatest W[idx[p]][d] (a NaN, once met, stays), 0 if empty
//           argmax[b][d] = the row that won, -1 if empty
//   float16 / bfloat16 tables accumulate in float32 and round once at the end.
//
// Every argument is validated before anything is written: a failed call leaves the outputs and
// the weight untouched and returns a Status whose message names the value, position and rule.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "embag/export.h"
#include "embag/quantized.h"
#include "embag/status.h"
#include "embag/tensor.h"

namespace EMBAG_API embag {

enum class Mode : uint8_t { kSum, kMean, kMax };

// "sum", "mean", "max".
const char* mode_name(Mode mode);
// Parses "sum" / "mean" / "max"; nullopt otherwise.
std::optional<Mode> parse_mode(const std::string& name);

// PyTorch's keyword arguments, with PyTorch's defaults.
struct Options {
  Mode mode = Mode::kMean;
  std::optional<double> max_norm;      // renormalise referenced rows in place when set (NaN, or
                                       // a NaN norm_type: no row changes, as in PyTorch)
  double norm_type = 2.0;              // p of the p-norm used by max_norm
  bool scale_grad_by_freq = false;     // backward only; validated here (rejected with max)
  bool sparse = false;                 // backward only; validated here (rejected with max)
  bool include_last_offset = false;    // offsets has B+1 entries, the last one ends the last bag
  std::optional<int64_t> padding_idx;  // in [-V, V-1]; positions holding it are skipped
};

// How a call runs, beyond what it computes. The default runs on the CPU tensors' memory, or on
// a GPU device's default stream.
enum class IndexCheck : uint8_t {
  // Every offset and every index a bag reads is checked before anything is written. On a GPU
  // this is a small kernel whose verdict is copied back: one synchronisation of the stream.
  kFull,
  // GPU only: the caller guarantees valid offsets and indices (as FBGEMM's BoundsCheckMode::NONE),
  // and the call never waits for the device. A bad index then reads or writes out of bounds. CPU
  // calls always check (a pass over the indices, small next to the rows).
  kNone,
};

struct Execution {
  // The queue the kernels are issued on, and so the context they run in:
  //   kCUDA: a CUstream (cudaStream_t) of the caller's; nullptr = the legacy default stream of
  //          the context current on the calling thread (or, if none is, the device's primary
  //          context). Kernels are asynchronous on that stream, as CUDA kernels are.
  //   kOpenCL: the cl_command_queue to use (required); the call finishes before it returns.
  //   kCPU: unused.
  void* stream = nullptr;
  IndexCheck index_check = IndexCheck::kFull;
};

// Everything a forward call reads. Optional arrays are null pointers when absent.
struct ForwardInputs {
  TensorView weight;                               // (V, D); modified in place iff max_norm
  TensorView input;                                // (N) or (B, L), int32 / int64
  const TensorView* offsets = nullptr;             // (B) or (B+1), int32 / int64; 1-D input only
  const TensorView* per_sample_weights = nullptr;  // input's shape, weight's dtype; mode sum only
  // A quantized table (include/embag/quantized.h) in place of `weight`, which must then be left
  // empty (a default TensorView). The call computes what it computes on the dequantised float32
  // table: output and per_sample_weights are float32. No max_norm (CPU only).
  const QuantizedTable* quantized_weight = nullptr;
};

// Where a forward call writes. `output` is required; the auxiliary outputs (what backward
// needs) are optional.
struct ForwardOutputs {
  TensorView output;                      // (B, D), weight's dtype, rows contiguous
  const TensorView* bag_count = nullptr;  // (B) int64: valid (non-padding) positions per bag
  const TensorView* argmax = nullptr;     // (B, D) int64, mode max only: winning row, -1 if empty
};

// Number of bags a call produces, from the input/offsets shapes alone (0 if they are invalid).
int64_t num_bags(const TensorView& input, const TensorView* offsets, const Options& options);

// Checks every rule without running anything: shapes, dtypes, devices, offsets, index range,
// padding_idx, option combinations, and that the outputs have the right shapes and dtypes.
Status validate(const ForwardInputs& inputs, const ForwardOutputs& outputs, const Options& options,
                const Execution& execution = {});

// Runs embedding_bag forward. Validates first; on error nothing is written.
Status forward(const ForwardInputs& inputs, const ForwardOutputs& outputs, const Options& options,
               const Execution& execution = {});

// ---- Backward -----------------------------------------------------------------------------
//
//   valid p = positions inside bags whose index is not the padding index; b = bag(p), r = idx[p]
//   term(p)[d] = g[b][d]                 (sum)
//              = g[b][d] * psw[p]        (sum with per_sample_weights)
//              = g[b][d] / n_b           (mean; n_b = valid positions of bag b)
//   G[r][d]    = fold(+, 0, term(p)[d]) over the valid p with idx[p] = r, in input order
//                then, with scale_grad_by_freq, G[r][d] / count(r), where count(r) counts the
//                positions inside bags holding r (padding positions included)
//   max:         G[r][d] = fold(+, 0, g[b][d]) over the non-empty bags b that hold r with
//                argmax[b][d] = r (argmax as forward produced it; an entry naming a row its bag
//                does not hold at a valid position, or -1 for a bag that has one, is refused)
//   grad_psw[p]  = fold(+, 0, g[b][d] * W[r][d]) over d; 0 at padding positions and at
//                  positions in no bag
//   float16 / bfloat16: every fold is in float32, rounded once. Results are bitwise identical
//   for every thread count.

// Everything a backward call reads. The table, input, offsets and per_sample_weights are those
// of the forward call (the table as the forward read it, i.e. after max_norm).
struct BackwardInputs {
  TensorView weight;                               // (V, D)
  TensorView input;                                // (N) or (B, L)
  const TensorView* offsets = nullptr;             // 1-D input only
  const TensorView* per_sample_weights = nullptr;  // mode sum only
  TensorView grad_output;                          // (B, D), the weight's dtype
  const TensorView* argmax = nullptr;              // (B, D) int64: required for mode max
};

// Where a backward call writes. Give either grad_weight (dense) or, with options.sparse,
// grad_weight_rows + grad_weight_values; grad_per_sample_weights only with per_sample_weights.
struct BackwardOutputs {
  const TensorView* grad_weight = nullptr;              // (V, D), the weight's dtype
  const TensorView* grad_weight_rows = nullptr;         // (U) int64: strictly ascending rows
  const TensorView* grad_weight_values = nullptr;       // (U, D), the weight's dtype
  const TensorView* grad_per_sample_weights = nullptr;  // input's shape, the weight's dtype
};

// U: the number of distinct non-padding rows the bags reference, which sizes a sparse
// gradient. Validates the inputs (not the outputs).
Status sparse_gradient_rows(const BackwardInputs& inputs, const Options& options, int64_t* rows,
                            const Execution& execution = {});

// Checks a backward call without running it.
Status validate_backward(const BackwardInputs& inputs, const BackwardOutputs& outputs,
                         const Options& options, const Execution& execution = {});

// Computes the gradients. Validates first; on error nothing is written.
Status backward(const BackwardInputs& inputs, const BackwardOutputs& outputs,
                const Options& options, const Execution& execution = {});

// ---- Variants, ISA selection and threads -------------------------------------------------

// Instruction sets a variant can be compiled for, best first within a device and architecture:
// CPU: x86-64 (avx512, avx2, sse41), 64-bit ARM (neon) and 32-bit ARM (armv7: ARMv7-A with NEON,
// hard-float); one build holds the CPU ISAs of one architecture (see compiled_isas()).
// GPU: CUDA PTX for compute capability 8.6 and 8.0 (cuda_sm86, cuda_sm80; newer GPUs run the
// sm86 PTX, compiled by the driver), and OpenCL C (opencl). A GPU call's ISA follows from its
// tensors' device, never from set_isa().
enum class Isa : uint8_t { kAvx512, kAvx2, kSse41, kNeon, kArmv7, kCudaSm86, kCudaSm80, kOpenCL };

// Every ISA embag knows, in the order above, whether or not this build contains it.
const std::vector<Isa>& known_isas();
// "avx512", "avx2", "sse41", "neon", "armv7", "cuda_sm86", "cuda_sm80", "opencl".
const char* isa_name(Isa isa);
std::optional<Isa> parse_isa(const std::string& name);
// The device an ISA's kernels run on.
DeviceType isa_device(Isa isa);

// CPU ISAs this CPU can run (asks the CPU once), best first.
std::vector<Isa> supported_isas();
// ISAs this build of embag contains kernels for, best first (CPU, then GPU).
std::vector<Isa> compiled_isas();
// Whether CUDA calls can run here, in one line: the devices found ("cuda:0 NVIDIA H100 (sm_90,
// runs cuda_sm86 PTX)"), or why not ("no driver: libcuda.so.1 not found", "no device", "this
// build has no CUDA kernels"). Loads the driver on first use; never fails.
std::string cuda_status();
// The CPU features embag looks at that this CPU has, e.g. "sse4.1 avx avx2 fma f16c avx512f".
std::string cpu_features();

// Forces every later call onto one ISA (nullopt returns to automatic choice: the best ISA that
// is both compiled in and supported). Fails, changing nothing, when the ISA is not compiled in
// or this CPU lacks it. The environment variable EMBAG_ISA=avx512|avx2|sse41|neon|armv7 sets the
// initial value; a bad EMBAG_ISA makes every call fail with a message saying so.
Status set_isa(std::optional<Isa> isa);
// The ISA later calls will use.
Status selected_isa(Isa* isa);

// Name of the kernel variant that the most recent successful call on this thread ran, e.g.
// "embag_forward_sum_f32_i64_avx2"; empty before any call.
const std::string& last_variant();
// Name of the kernel variant a forward call with these arguments would run (no validation of
// the data itself). For max it names the kernel that writes the argmax; a CPU call that asks for
// no argmax runs the "max_values" kernel of the same dtypes and ISA.
std::string forward_variant_name(const ForwardInputs& inputs, const Options& options);

// One compiled kernel, as listed by `embag info`.
struct VariantInfo {
  std::string name;  // C symbol of the kernel
  // "forward", "renorm", "backward", "dense_scatter", "psw_grad", ... (see embag info)
  std::string pipeline;
  // "sum", "wsum" (with per_sample_weights), "mean", "max", "max_values" (forward max without
  // the argmax); "" for pipelines without a pooling
  std::string mode;
  std::optional<DType> weight_dtype;  // unset for pipelines without a table (GPU planning) and
                                      // for quantized-table kernels (see quant_codec)
  // Quantized-table forward kernels: what they decode, "u8f32" (8-bit codes, float32 scale and
  // bias), "u8f16", "u4f16", "u2f16" (float16 scale and bias), "f8" (8-bit floats); "" for every
  // other kernel.
  std::string quant_codec;
  std::optional<DType> index_dtype;  // set for pipelines that read the caller's indices
  DeviceType device;
  Isa isa;
  std::string target;  // the Halide target string it was compiled for
  // Schedule parameters beyond the generator's defaults ("" if none, e.g.
  // "prefetch_distance=8 tasks_per_thread=2") and where they came from: "default", "cmake"
  // (EMBAG_FORWARD_PARAMS_*) or "tuning file" (EMBAG_TUNING_FILE, written by embag-tune).
  std::string schedule;
  std::string schedule_source;
  // The embedding dimensions D it serves, [dim_min, dim_max]; both 0 for every D (a tuning file
  // with schedules per D bucket compiles one forward variant per bucket).
  int64_t dim_min = 0;
  int64_t dim_max = 0;
  // The tables it serves: "cache-resident" or "memory-resident" for the two variants of each CPU
  // forward kernel (see table_size_rule()), "any" for every other kernel.
  std::string table_class;
};
const std::vector<VariantInfo>& compiled_variants();

// ---- Tables in cache, tables in memory ---------------------------------------------------

// A CPU forward call runs one of two variants of its kernel, picked by where its table lives: a
// table of at most `cache_resident_max_bytes` (rows x row stride x element size) runs the
// cache-resident variant, which issues no software prefetch; a larger one runs the
// memory-resident variant, which prefetches each row ahead of the gather (with the T0 hint). The
// limit is a quarter of one core's L2 (past it, rows come from L3 or DRAM at a latency only the
// prefetch hides; runtime/table_class.cpp has the measurements), four times the L1d where no L2
// is reported, 64 KiB where no cache is, or the environment variable EMBAG_CACHE_RESIDENT_BYTES,
// or set_cache_resident_bytes(). Both variants give bitwise the same results; only their speed
// differs.
struct TableSizeRule {
  int64_t l1d_bytes = 0;  // this CPU's caches as read (0: not reported)
  int64_t l2_bytes = 0;
  int64_t l3_bytes = 0;
  std::string cache_source;  // "sysfs", "cpuid" or "none"
  int64_t cache_resident_max_bytes = 0;
  // Where the limit came from: "L2 / 4", "L1d x 4" (no L2 reported), "default" (no cache
  // reported: 64 KiB), "EMBAG_CACHE_RESIDENT_BYTES" or "set_cache_resident_bytes".
  std::string limit_source;
};
TableSizeRule table_size_rule();
// Sets the limit for later calls (a table whose rows stay hot although it is large, such as a
// zipf-accessed one, may run faster with a larger limit); a negative value returns to the rule
// from the caches. Results never depend on it.
void set_cache_resident_bytes(int64_t bytes);

// Threads used by the kernels (the calling thread included; embag's own pool runs the kernels'
// parallel loops on exactly this many). The environment variable
// EMBAG_NUM_THREADS sets the initial value (clamped to [1, max_num_threads()]); default is the
// number of cores. Results are bitwise identical for every thread count.
// n must be in [1, max_num_threads()]: kInvalidArgument otherwise. All or nothing: when the
// system refuses a new thread (a thread or memory limit), the threads this call started are
// stopped again, the count stays as it was, and the Status (kUnsupported) says why.
// The pool survives fork(): a child process keeps the count and starts its own threads on its
// first parallel call (the parent's threads do not exist there).
Status set_num_threads(int n);
int num_threads();
// The most threads set_num_threads accepts: 1024, or four per hardware thread on machines with
// more than 256 of them. A bound, not advice: beyond the cores, threads only share them.
int max_num_threads();

// Asks Linux to back [data, data + bytes) with transparent huge pages (madvise MADV_HUGEPAGE on
// the whole 2 MiB pages inside the range). A gather from a table far larger than the TLB's reach
// misses the TLB on nearly every row; with 2 MiB pages it mostly does not (measured: about 10%
// more GB/s on cold 1M-row tables, docs/benchmarks.md). The table is the caller's memory, so
// embag only offers this: call it right after allocating the table, before filling it (pages
// already populated become huge only when the kernel's khugepaged gets to them), ideally on a
// 2 MiB-aligned allocation. Ok when there is nothing whole to advise (bytes below 2 MiB);
// kInvalidArgument for a null data with bytes > 0; kUnsupported where madvise refuses (no
// transparent huge pages in this kernel) or the system is not Linux. Results never depend on it.
Status advise_huge_pages(void* data, size_t bytes);

}  // namespace embag
