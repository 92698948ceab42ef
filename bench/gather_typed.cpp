// The typed gather baseline (gather_typed.h): AVX-512 and AVX2 sum loops for float64, float16
// (F16C's vcvtph2ps / vcvtps2ph) and bfloat16 (a 16-bit shift; rounding to nearest-even in
// integers). Each machine runs the widest of the two it has, as embag's dispatcher does.
#include "gather_typed.h"

#include <atomic>
#include <cstring>
#include <string>

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
#define EMBAG_TYPED_AVX2 __attribute__((target("avx2,f16c")))
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

// The same three on AVX2: 8 elements a vector (float64: 4), so a row of D = 128 float64 is 32
// vectors, walked as two register tiles of 16 (AVX2 has 16 vector registers).
struct F64Avx2 {
  using Acc = __m256d;
  static constexpr int kLanes = 4;
  EMBAG_TYPED_AVX2 static Acc zero() { return _mm256_setzero_pd(); }
  EMBAG_TYPED_AVX2 static Acc add(Acc a, const void* p) {
    return _mm256_add_pd(a, _mm256_loadu_pd(static_cast<const double*>(p)));
  }
  EMBAG_TYPED_AVX2 static void store(void* p, Acc a) {
    _mm256_storeu_pd(static_cast<double*>(p), a);
  }
};
struct F16Avx2 {
  using Acc = __m256;
  static constexpr int kLanes = 8;
  EMBAG_TYPED_AVX2 static Acc zero() { return _mm256_setzero_ps(); }
  EMBAG_TYPED_AVX2 static Acc add(Acc a, const void* p) {
    return _mm256_add_ps(a, _mm256_cvtph_ps(_mm_loadu_si128(static_cast<const __m128i*>(p))));
  }
  EMBAG_TYPED_AVX2 static void store(void* p, Acc a) {
    _mm_storeu_si128(static_cast<__m128i*>(p),
                     _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
};
struct BF16Avx2 {
  using Acc = __m256;
  static constexpr int kLanes = 8;
  EMBAG_TYPED_AVX2 static Acc zero() { return _mm256_setzero_ps(); }
  EMBAG_TYPED_AVX2 static Acc add(Acc a, const void* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(static_cast<const __m128i*>(p)));
    return _mm256_add_ps(a, _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)));
  }
  // As BF16's: nearest-even in integers, a NaN quieted; the 32-bit lanes hold values below
  // 0x10000, so the unsigned-saturating pack narrows them exactly.
  EMBAG_TYPED_AVX2 static void store(void* p, Acc a) {
    const __m256i bits = _mm256_castps_si256(a);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_srli_epi32(
        _mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(a, a, _CMP_UNORD_Q));
    const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
    const __m256i result = _mm256_blendv_epi8(rounded, quiet, nan);
    _mm_storeu_si128(
        static_cast<__m128i*>(p),
        _mm_packus_epi32(_mm256_castsi256_si128(result), _mm256_extracti128_si256(result, 1)));
  }
};

// One chunk of bags over the columns [column, column + NV vectors): NV accumulators held in
// registers. A row wider than one register tile is walked once per tile (the whole row
// prefetched on the first), as embag's kernels walk it. Defined once and compiled for each ISA:
// the target attribute must sit on the function that inlines the vector helpers, and a template
// cannot take one as a parameter.
#define EMBAG_TYPED_SUM_CHUNK(NAME, TARGET)                                           \
  template <typename T, int NV>                                                       \
  TARGET bool NAME(const TypedGatherProblem& p, int64_t bag_begin, int64_t bag_end,   \
                   int64_t column) {                                                  \
    const int64_t element = static_cast<int64_t>(dtype_size(p.dtype));                \
    const int64_t row_bytes = p.dim * element;                                        \
    const int64_t vector_bytes = T::kLanes * element;                                 \
    const int64_t column_bytes = column * element;                                    \
    const char* table = static_cast<const char*>(p.table);                            \
    const int64_t last = p.offsets[p.bags] - 1;                                       \
    for (int64_t b = bag_begin; b < bag_end; ++b) {                                   \
      typename T::Acc acc[NV];                                                        \
      _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) acc[v] = T::zero();       \
      for (int64_t q = p.offsets[b]; q < p.offsets[b + 1]; ++q) {                     \
        const int64_t idx = p.indices[q];                                             \
        if (idx < 0 || idx >= p.rows) return false;                                   \
        if (column == 0) {                                                            \
          const int64_t ahead =                                                       \
              p.indices[q + kPrefetchDistance < last ? q + kPrefetchDistance : last]; \
          if (ahead >= 0 && ahead < p.rows) {                                         \
            const char* row = table + ahead * row_bytes;                              \
            for (int64_t k = 0; k < row_bytes; k += kCacheLine)                       \
              _mm_prefetch(row + k, _MM_HINT_T0);                                     \
          }                                                                           \
        }                                                                             \
        const char* row = table + idx * row_bytes + column_bytes;                     \
        _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) acc[v] =                \
            T::add(acc[v], row + v * vector_bytes);                                   \
      }                                                                               \
      char* out = static_cast<char*>(p.output) + b * row_bytes + column_bytes;        \
      _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v)                           \
          T::store(out + v * vector_bytes, acc[v]);                                   \
    }                                                                                 \
    return true;                                                                      \
  }
EMBAG_TYPED_SUM_CHUNK(sum_chunk_avx512, EMBAG_TYPED_AVX512)
EMBAG_TYPED_SUM_CHUNK(sum_chunk_avx2, EMBAG_TYPED_AVX2)
#undef EMBAG_TYPED_SUM_CHUNK

using Chunk = bool (*)(const TypedGatherProblem&, int64_t, int64_t, int64_t);

template <typename T, bool kAvx512>
Chunk chunk_for(int64_t vectors) {
  switch (vectors) {
    case 1:
      return kAvx512 ? &sum_chunk_avx512<T, 1> : &sum_chunk_avx2<T, 1>;
    case 2:
      return kAvx512 ? &sum_chunk_avx512<T, 2> : &sum_chunk_avx2<T, 2>;
    case 4:
      return kAvx512 ? &sum_chunk_avx512<T, 4> : &sum_chunk_avx2<T, 4>;
    case 8:
      return kAvx512 ? &sum_chunk_avx512<T, 8> : &sum_chunk_avx2<T, 8>;
    default:
      return kAvx512 ? &sum_chunk_avx512<T, 16> : &sum_chunk_avx2<T, 16>;
  }
}

template <typename T, bool kAvx512>
bool run(const TypedGatherProblem& p, int num_threads) {
  constexpr int64_t kTile = 16;  // vectors a register tile
  if (p.dim % T::kLanes != 0 || p.dim > 256) return false;
  const int64_t vectors = p.dim / T::kLanes;
  // Widths of 1, 2, 4, 8 vectors, or whole tiles of 16: the D of the perf shapes.
  if (vectors > kTile ? vectors % kTile != 0 : (vectors & (vectors - 1)) != 0) return false;
  const Chunk chunk = chunk_for<T, kAvx512>(vectors);
  if (p.bags <= 0) return true;
  const auto all_tiles = [&](int64_t bag_begin, int64_t bag_end) {
    for (int64_t v = 0; v < vectors; v += kTile) {
      if (!chunk(p, bag_begin, bag_end, v * T::kLanes)) return false;
    }
    return true;
  };
  const int64_t threads = num_threads < 1 ? 1 : num_threads > p.bags ? p.bags : num_threads;
  if (threads == 1) return all_tiles(0, p.bags);
  static ThreadPool pool;
  std::atomic<bool> ok{true};
  pool.run(static_cast<int>(threads), [&](int t) {
    if (!all_tiles(p.bags * t / threads, p.bags * (t + 1) / threads)) ok.store(false);
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

const char* typed_loop_isa() {
#if EMBAG_BENCH_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("f16c")) {
    return "avx512";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c")) return "avx2";
#endif
  return "none";
}

bool gather_sum_typed(const TypedGatherProblem& p, int num_threads) {
#if EMBAG_BENCH_X86
  const std::string isa = typed_loop_isa();
  const bool avx512 = isa == "avx512";
  const bool avx2 = isa == "avx2";
  switch (p.dtype) {
    case DType::kFloat64:
      return avx512 ? run<F64, true>(p, num_threads) : avx2 && run<F64Avx2, false>(p, num_threads);
    case DType::kFloat16:
      return avx512 ? run<F16, true>(p, num_threads) : avx2 && run<F16Avx2, false>(p, num_threads);
    case DType::kBFloat16:
      return avx512 ? run<BF16, true>(p, num_threads)
                    : avx2 && run<BF16Avx2, false>(p, num_threads);
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
