// The gather baseline's front: asks the CPU which ISA to run (once), splits the bags into one
// contiguous chunk per thread and runs the chunks on a persistent pool.
#include "gather_baseline.h"

#include <atomic>

#include "gather_kernels.h"
#include "thread_pool.h"

namespace embag::bench {
namespace {

using detail::GatherChunk;

GatherIsa detect_best_isa() {
#if EMBAG_BENCH_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
    return GatherIsa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GatherIsa::kAvx2;
#endif
  return GatherIsa::kScalar;
}

GatherIsa resolve(GatherIsa isa) { return isa == GatherIsa::kAuto ? gather_best_isa() : isa; }

template <typename IndexT>
using ChunkKernel = bool (*)(const GatherChunk<IndexT>&, GatherMode);

template <typename IndexT>
ChunkKernel<IndexT> kernel_for(GatherIsa isa) {
  switch (isa) {
#if EMBAG_BENCH_X86
    case GatherIsa::kAvx512:
      return static_cast<ChunkKernel<IndexT>>(&detail::gather_chunk_avx512);
    case GatherIsa::kAvx2:
      return static_cast<ChunkKernel<IndexT>>(&detail::gather_chunk_avx2);
#endif
    case GatherIsa::kScalar:
      return static_cast<ChunkKernel<IndexT>>(&detail::gather_chunk_scalar);
    default:
      return nullptr;
  }
}

ThreadPool& pool() {
  static ThreadPool instance;
  return instance;
}

template <typename IndexT>
bool gather_forward_impl(const GatherProblem<IndexT>& p, int num_threads, GatherIsa isa) {
  isa = resolve(isa);
  if (!gather_isa_supported(isa)) return false;
  const ChunkKernel<IndexT> kernel = kernel_for<IndexT>(isa);
  if (p.bags <= 0) return true;

  // Contiguous chunks of equal bag counts, as FBGEMM's callers (at::parallel_for) split them;
  // with fixed pooling that is also equal work.
  const int64_t threads = num_threads < 1 ? 1 : num_threads > p.bags ? p.bags : num_threads;
  auto chunk = [&](int64_t t) {
    return GatherChunk<IndexT>{p.table,
                               p.rows,
                               p.dim,
                               p.indices,
                               p.offsets,
                               p.bags * t / threads,
                               p.bags * (t + 1) / threads,
                               p.output};
  };
  if (threads == 1) return kernel(chunk(0), p.mode);
  std::atomic<bool> ok{true};
  pool().run(static_cast<int>(threads), [&](int t) {
    if (!kernel(chunk(t), p.mode)) ok.store(false, std::memory_order_relaxed);
  });
  return ok.load(std::memory_order_relaxed);
}

}  // namespace

bool gather_forward(const GatherProblem<int64_t>& problem, int num_threads, GatherIsa isa) {
  return gather_forward_impl(problem, num_threads, isa);
}

bool gather_forward(const GatherProblem<int32_t>& problem, int num_threads, GatherIsa isa) {
  return gather_forward_impl(problem, num_threads, isa);
}

GatherIsa gather_best_isa() {
  static const GatherIsa best = detect_best_isa();
  return best;
}

bool gather_isa_supported(GatherIsa isa) {
  switch (isa) {
    case GatherIsa::kAuto:
    case GatherIsa::kScalar:
      return true;
    case GatherIsa::kAvx2:
      return gather_best_isa() == GatherIsa::kAvx2 || gather_best_isa() == GatherIsa::kAvx512;
    case GatherIsa::kAvx512:
      return gather_best_isa() == GatherIsa::kAvx512;
  }
  return false;
}

const char* gather_isa_name(GatherIsa isa) {
  switch (isa) {
    case GatherIsa::kAuto:
      return "auto";
    case GatherIsa::kAvx512:
      return "avx512";
    case GatherIsa::kAvx2:
      return "avx2";
    case GatherIsa::kScalar:
      return "scalar";
  }
  return "?";
}

const char* gather_mode_name(GatherMode mode) {
  switch (mode) {
    case GatherMode::kSum:
      return "sum";
    case GatherMode::kMean:
      return "mean";
    case GatherMode::kMax:
      return "max";
  }
  return "?";
}

std::string gather_variant_name(GatherMode mode, int index_bits, int64_t dim, GatherIsa isa) {
  isa = resolve(isa);
  std::string name = "baseline_";
  name += gather_mode_name(mode);
  name += "_f32_i" + std::to_string(index_bits) + "_" + gather_isa_name(isa);
  name += detail::gather_has_fixed_dim(isa, dim) ? "_d" + std::to_string(dim) : "_generic";
  return name;
}

namespace detail {

bool gather_has_fixed_dim(GatherIsa isa, int64_t dim) {
  // Must match the switch in gather_avx512.cpp / gather_avx2.cpp; scalar has no fixed D.
  const bool listed = dim == 32 || dim == 64 || dim == 128 || dim == 256;
  return listed && (isa == GatherIsa::kAvx512 || isa == GatherIsa::kAvx2);
}

}  // namespace detail

}  // namespace embag::bench
