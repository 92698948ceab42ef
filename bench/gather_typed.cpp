// The typed gather baseline (gather_typed.h): AVX-512 sum loops for float64, float16 (F16C's
// vcvtph2ps / vcvtps2ph) and bfloat16 (a 16-bit shift; rounding to nearest-even in integers).
#include "gather_typed.h"

#include <atomic>
#include <cstring>

#include "gather_kernels.h"
#include "thread_pool.h"

#if EMBAG_BENCH_X86
// GCC 12 warns inside its own vcvtph2ps / vcvtps2ph intrinsics (their _mm512_undefined pass-
// through operand) at -O3; the warning is about the header, not this code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define EMBAG_TYPED_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,f16c")))
#endif

namespace embag::bench {
namespace {

#if EMBAG_BENCH_X86
using detail::kCacheLine;
using detail::kPrefetchDistance;

// Widening loads and narrowing stores of one vector: 16 elements (float64: 8).
struct F64 {
  using Acc = __m512d;
  static constexpr int kLanes = 8;
  EMBAG_TYPED_AVX512 static Acc zero() { return _mm512_setzero_pd(); }
  EMBAG_TYPED_AVX512 static Acc add(Acc a, const void* p) {
    return _mm512_add_pd(a, _mm512_loadu_pd(p));
  }
  EMBAG_TYPED_AVX512 static void store(void* p, Acc a) { _mm512_storeu_pd(p, a); }
};
struct F16 {
  using Acc = __m512;
  static constexpr int kLanes = 16;
  EMBAG_TYPED_AVX512 static Acc zero() { return _mm512_setzero_ps(); }
  EMBAG_TYPED_AVX512 static Acc add(Acc a, const void* p) {
    return _mm512_add_ps(a, _mm512_cvtph_ps(_mm256_loadu_si256(static_cast<const __m256i*>(p))));
  }
  EMBAG_TYPED_AVX512 static void store(void* p, Acc a) {
    _mm256_storeu_si256(static_cast<__m256i*>(p),
                        _mm512_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
};
struct BF16 {
  using Acc = __m512;
  static constexpr int kLanes = 16;
  EMBAG_TYPED_AVX512 static Acc zero() { return _mm512_setzero_ps(); }
  EMBAG_TYPED_AVX512 static Acc add(Acc a, const void* p) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(static_cast<const __m256i*>(p)));
    return _mm512_add_ps(a, _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16)));
  }
  // Round to nearest-even: add 0x7fff plus the lowest kept bit, keep the top 16 bits; a NaN
  // keeps its top bits with the quiet bit set.
  EMBAG_TYPED_AVX512 static void store(void* p, Acc a) {
    const __m512i bits = _mm512_castps_si512(a);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_srli_epi32(
        _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
    const __m512i result = _mm512_mask_mov_epi32(rounded, nan, quiet);
    _mm256_storeu_si256(static_cast<__m256i*>(p), _mm512_cvtepi32_epi16(result));
  }
};

// One chunk of bags, NV vectors a row held in registers.
template <typename T, int NV>
EMBAG_TYPED_AVX512 bool sum_chunk(const TypedGatherProblem& p, int64_t bag_begin, int64_t bag_end) {
  const int64_t element = static_cast<int64_t>(dtype_size(p.dtype));
  const int64_t row_bytes = p.dim * element;
  const int64_t vector_bytes = T::kLanes * element;
  const char* table = static_cast<const char*>(p.table);
  const int64_t last = p.offsets[p.bags] - 1;
  for (int64_t b = bag_begin; b < bag_end; ++b) {
    typename T::Acc acc[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] = T::zero();
    for (int64_t q = p.offsets[b]; q < p.offsets[b + 1]; ++q) {
      const int64_t idx = p.indices[q];
      if (idx < 0 || idx >= p.rows) return false;
      const int64_t ahead = p.indices[q + kPrefetchDistance < last ? q + kPrefetchDistance : last];
      if (ahead >= 0 && ahead < p.rows) {
        const char* row = table + ahead * row_bytes;
        for (int64_t k = 0; k < row_bytes; k += kCacheLine) _mm_prefetch(row + k, _MM_HINT_T0);
      }
      const char* row = table + idx * row_bytes;
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[v] = T::add(acc[v], row + v * vector_bytes);
    }
    char* out = static_cast<char*>(p.output) + b * row_bytes;
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) T::store(out + v * vector_bytes, acc[v]);
  }
  return true;
}

template <typename T>
using Chunk = bool (*)(const TypedGatherProblem&, int64_t, int64_t);

template <typename T>
Chunk<T> chunk_for(int64_t vectors) {
  switch (vectors) {
    case 1:
      return &sum_chunk<T, 1>;
    case 2:
      return &sum_chunk<T, 2>;
    case 4:
      return &sum_chunk<T, 4>;
    case 8:
      return &sum_chunk<T, 8>;
    case 16:
      return &sum_chunk<T, 16>;
    default:
      return nullptr;  // only the D of the perf shapes; others are not compared
  }
}

template <typename T>
bool run(const TypedGatherProblem& p, int num_threads) {
  if (p.dim % T::kLanes != 0) return false;
  const Chunk<T> chunk = chunk_for<T>(p.dim / T::kLanes);
  if (chunk == nullptr) return false;
  if (p.bags <= 0) return true;
  const int64_t threads = num_threads < 1 ? 1 : num_threads > p.bags ? p.bags : num_threads;
  if (threads == 1) return chunk(p, 0, p.bags);
  static ThreadPool pool;
  std::atomic<bool> ok{true};
  pool.run(static_cast<int>(threads), [&](int t) {
    if (!chunk(p, p.bags * t / threads, p.bags * (t + 1) / threads)) ok.store(false);
  });
  return ok.load();
}
#endif

#if EMBAG_BENCH_X86
__attribute__((target("f16c"))) void to_float16(const float* src, int64_t n, uint16_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
}
#endif

}  // namespace

bool convert_floats(const float* src, int64_t n, DType dtype, void* dst) {
  switch (dtype) {
    case DType::kFloat32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return true;
    case DType::kFloat64:
      for (int64_t i = 0; i < n; ++i) static_cast<double*>(dst)[i] = src[i];
      return true;
    case DType::kBFloat16:
      for (int64_t i = 0; i < n; ++i) {
        uint32_t bits;
        std::memcpy(&bits, &src[i], sizeof(bits));
        // (the tables hold no NaN)
        static_cast<uint16_t*>(dst)[i] =
            static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
      }
      return true;
    case DType::kFloat16:
#if EMBAG_BENCH_X86
      __builtin_cpu_init();
      if (!__builtin_cpu_supports("f16c")) return false;
      to_float16(src, n, static_cast<uint16_t*>(dst));
      return true;
#else
      return false;
#endif
    default:
      return false;
  }
}

bool gather_sum_typed(const TypedGatherProblem& p, int num_threads) {
#if EMBAG_BENCH_X86
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512dq") || !__builtin_cpu_supports("avx512vl")) {
    return false;
  }
  switch (p.dtype) {
    case DType::kFloat64:
      return run<F64>(p, num_threads);
    case DType::kFloat16:
      return run<F16>(p, num_threads);
    case DType::kBFloat16:
      return run<BF16>(p, num_threads);
    default:
      return false;
  }
#else
  (void)p;
  (void)num_threads;
  return false;
#endif
}

}  // namespace embag::bench
