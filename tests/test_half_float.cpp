// Exhaustive tests of the reference's float16 / bfloat16 conversions (reference/half_float.h).
//
// Every other test trusts these conversions to define "the right answer" for 16-bit tables, so
// they are checked against models that share no code with them: the value formula of each
// format for widening, and "nearest representable value, ties to even" found by searching a
// table of all values for narrowing. The float16 conversions are also compared bit for bit (NaN
// payloads included) with the hardware's: F16C on x86-64, FCVT on 64-bit ARM.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "reference/half_float.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define EMBAG_TEST_HAVE_F16C 1
#elif defined(__aarch64__)
#include <cstring>
#define EMBAG_TEST_HAVE_ARM_FP16 1
#endif

namespace embag::ref {
namespace {

std::string hex(uint32_t v) {
  char buffer[16];
  std::snprintf(buffer, sizeof buffer, "0x%08x", v);
  return buffer;
}

bool is_nan_half(uint16_t h) { return (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu) != 0; }
bool is_nan_bf16(uint16_t b) { return (b & 0x7F80u) == 0x7F80u && (b & 0x7Fu) != 0; }

// float16's value from its definition: (-1)^s * 2^(e-15) * 1.m, or 2^-14 * 0.m when e == 0.
double half_value_model(uint16_t h) {
  const int exp = (h >> 10) & 0x1F;
  const int mant = h & 0x3FF;
  const double magnitude = exp == 0x1F ? HUGE_VAL
                           : exp == 0  ? std::ldexp(mant, -24)
                                       : std::ldexp(1024 + mant, exp - 25);
  return (h & 0x8000u) ? -magnitude : magnitude;
}

// bfloat16's value from its definition: 8 exponent bits (bias 127), 7 mantissa bits.
double bf16_value_model(uint16_t b) {
  const int exp = (b >> 7) & 0xFF;
  const int mant = b & 0x7F;
  const double magnitude = exp == 0xFF ? HUGE_VAL
                           : exp == 0  ? std::ldexp(mant, -133)
                                       : std::ldexp(128 + mant, exp - 134);
  return (b & 0x8000u) ? -magnitude : magnitude;
}

// Round-to-nearest-even by search: `values[i]` is the magnitude encoded by bit pattern i, for
// every finite non-negative pattern plus one more standing for infinity at the value the next
// binade would start at (that is where IEEE overflow rounding puts the threshold).
class NearestEven {
 public:
  explicit NearestEven(std::vector<double> values) : values_(std::move(values)) {}

  uint16_t operator()(float f) const {
    const uint16_t sign = std::signbit(f) ? 0x8000u : 0;
    const double a = std::fabs(static_cast<double>(f));
    if (a >= values_.back()) return static_cast<uint16_t>(sign | (values_.size() - 1));
    const size_t hi =
        static_cast<size_t>(std::upper_bound(values_.begin(), values_.end(), a) - values_.begin());
    const size_t lo = hi - 1;  // values_[0] == 0 <= a, so hi >= 1
    const double below = a - values_[lo], above = values_[hi] - a;
    size_t pick = below < above ? lo : above < below ? hi : (lo % 2 == 0 ? lo : hi);
    return static_cast<uint16_t>(sign | pick);
  }

 private:
  std::vector<double> values_;
};

NearestEven half_model() {
  std::vector<double> values;
  for (uint32_t h = 0; h < 0x7C00u; ++h)
    values.push_back(half_value_model(static_cast<uint16_t>(h)));
  values.push_back(65536.0);  // pattern 0x7C00 (infinity)
  return NearestEven(std::move(values));
}

NearestEven bf16_model() {
  std::vector<double> values;
  for (uint32_t b = 0; b < 0x7F80u; ++b)
    values.push_back(bf16_value_model(static_cast<uint16_t>(b)));
  values.push_back(std::ldexp(1.0, 128));  // pattern 0x7F80 (infinity)
  return NearestEven(std::move(values));
}

// Floats that exercise every rounding decision of a 16-bit narrowing whose dropped bits lie at
// or below `low_bits`: every combination of the bits above, with the bits below set to the
// patterns that decide rounding (exact, just above zero, just below / at / just above the
// halfway point, all ones), plus every 16-bit-format value's neighbours and midpoints.
std::vector<float> rounding_probe_floats(int low_bits) {
  const uint32_t half = 1u << (low_bits - 1), all = (1u << low_bits) - 1;
  const uint32_t lows[] = {0, 1, half - 1, half, half + 1, all, half / 2, half + half / 2};
  std::vector<float> out;
  out.reserve((size_t{1} << (32 - low_bits)) * 8);
  for (uint64_t high = 0; high < (uint64_t{1} << (32 - low_bits)); ++high) {
    for (uint32_t low : lows)
      out.push_back(bits_float(static_cast<uint32_t>(high << low_bits) | low));
  }
  return out;
}

TEST(HalfFloat, HalfToFloatMatchesValueFormulaForAll65536Patterns) {
  for (uint32_t h = 0; h <= 0xFFFFu; ++h) {
    const float f = half_to_float(static_cast<uint16_t>(h));
    if (is_nan_half(static_cast<uint16_t>(h))) {
      ASSERT_TRUE(std::isnan(f)) << hex(h);
      ASSERT_EQ(std::signbit(f), (h & 0x8000u) != 0) << hex(h);
      // Quiet bit set, the 10 payload bits kept at the top of float's payload.
      ASSERT_EQ(float_bits(f), ((h & 0x8000u) << 16) | 0x7FC00000u | ((h & 0x3FFu) << 13))
          << hex(h);
      continue;
    }
    const float expected = static_cast<float>(half_value_model(static_cast<uint16_t>(h)));
    ASSERT_EQ(float_bits(f), float_bits(expected)) << hex(h);  // also checks the sign of zero
  }
}

TEST(HalfFloat, HalfRoundTripsThroughFloatForAll65536Patterns) {
  for (uint32_t h = 0; h <= 0xFFFFu; ++h) {
    const uint16_t back = float_to_half(half_to_float(static_cast<uint16_t>(h)));
    // A signalling NaN comes back quieted; everything else comes back unchanged.
    const uint32_t expected = is_nan_half(static_cast<uint16_t>(h)) ? (h | 0x200u) : h;
    ASSERT_EQ(back, expected) << hex(h);
  }
}

TEST(HalfFloat, FloatToHalfRoundsToNearestEven) {
  const NearestEven model = half_model();
  std::vector<float> probes = rounding_probe_floats(13);
  // Midpoints between neighbouring halves and their float neighbours: the exact ties, from
  // the subnormals (where the dropped bits reach far above bit 13) to the overflow threshold.
  for (uint32_t h = 0; h < 0x7C00u; ++h) {
    const double v = half_value_model(static_cast<uint16_t>(h));
    const double next = h + 1 < 0x7C00u ? half_value_model(static_cast<uint16_t>(h + 1)) : 65536.0;
    const float mid = static_cast<float>((v + next) / 2);  // exact: needs 12 significant bits
    for (float f :
         {static_cast<float>(v), mid, std::nextafter(mid, 0.0f), std::nextafter(mid, HUGE_VALF)}) {
      probes.push_back(f);
      probes.push_back(-f);
    }
  }
  std::mt19937 rng(20240611);
  for (int i = 0; i < 1000000; ++i) probes.push_back(bits_float(static_cast<uint32_t>(rng())));
  for (float f : probes) {
    const uint16_t got = float_to_half(f);
    if (std::isnan(f)) {
      // Quiet NaN of the same sign, payload's top 10 bits kept.
      const uint32_t u = float_bits(f);
      ASSERT_EQ(got, ((u >> 16) & 0x8000u) | 0x7E00u | ((u >> 13) & 0x3FFu)) << hex(u);
      continue;
    }
    ASSERT_EQ(got, model(f)) << hex(float_bits(f)) << " = " << f;
  }
}

TEST(BFloat16, WideningMatchesValueFormulaForAll65536Patterns) {
  for (uint32_t b = 0; b <= 0xFFFFu; ++b) {
    const float f = bfloat16_to_float(static_cast<uint16_t>(b));
    ASSERT_EQ(float_bits(f), b << 16) << hex(b);
    if (is_nan_bf16(static_cast<uint16_t>(b))) {
      ASSERT_TRUE(std::isnan(f)) << hex(b);
    } else {
      ASSERT_EQ(static_cast<double>(f), bf16_value_model(static_cast<uint16_t>(b))) << hex(b);
    }
  }
}

TEST(BFloat16, RoundTripsThroughFloatForAll65536Patterns) {
  for (uint32_t b = 0; b <= 0xFFFFu; ++b) {
    const uint16_t back = float_to_bfloat16(bfloat16_to_float(static_cast<uint16_t>(b)));
    const uint32_t expected = is_nan_bf16(static_cast<uint16_t>(b)) ? (b | 0x40u) : b;
    ASSERT_EQ(back, expected) << hex(b);
  }
}

TEST(BFloat16, NarrowingRoundsToNearestEven) {
  const NearestEven model = bf16_model();
  std::vector<float> probes = rounding_probe_floats(16);
  std::mt19937 rng(20240612);
  for (int i = 0; i < 1000000; ++i) probes.push_back(bits_float(static_cast<uint32_t>(rng())));
  for (float f : probes) {
    const uint16_t got = float_to_bfloat16(f);
    if (std::isnan(f)) {
      const uint32_t u = float_bits(f);
      ASSERT_EQ(got, (u >> 16) | 0x40u) << hex(u);
      continue;
    }
    ASSERT_EQ(got, model(f)) << hex(float_bits(f)) << " = " << f;
  }
}

#ifdef EMBAG_TEST_HAVE_F16C
// F16C is VEX-encoded, so it needs the CPU flag and the OS saving YMM state (XCR0 bits 1-2).
bool cpu_has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  const bool f16c = (ecx & bit_F16C) != 0, osxsave = (ecx & bit_OSXSAVE) != 0;
  if (!f16c || !osxsave) return false;
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  return (xcr0_lo & 6u) == 6u;
}

__attribute__((target("f16c"))) float hardware_half_to_float(uint16_t h) {
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}
__attribute__((target("f16c"))) uint16_t hardware_float_to_half(float f) {
  const __m128i h = _mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return static_cast<uint16_t>(_mm_cvtsi128_si32(h) & 0xFFFF);
}
#endif

#ifdef EMBAG_TEST_HAVE_ARM_FP16
// __fp16 is the ARM storage format (IEEE binary16 here: GCC's default -mfp16-format); the
// casts compile to FCVT, which every ARMv8-A CPU has.
float hardware_half_to_float(uint16_t h) {
  __fp16 v;
  std::memcpy(&v, &h, sizeof v);
  return static_cast<float>(v);
}
uint16_t hardware_float_to_half(float f) {
  const __fp16 v = static_cast<__fp16>(f);
  uint16_t h;
  std::memcpy(&h, &v, sizeof h);
  return h;
}
#endif

TEST(HalfFloat, MatchesHardwareConversionsBitForBit) {
#if defined(EMBAG_TEST_HAVE_F16C)
  if (!cpu_has_f16c()) GTEST_SKIP() << "this CPU has no F16C";
#elif !defined(EMBAG_TEST_HAVE_ARM_FP16)
  GTEST_SKIP() << "hardware float16 conversions are tested on x86-64 (F16C) and aarch64 only";
#endif
#if defined(EMBAG_TEST_HAVE_F16C) || defined(EMBAG_TEST_HAVE_ARM_FP16)
  for (uint32_t h = 0; h <= 0xFFFFu; ++h) {
    ASSERT_EQ(float_bits(half_to_float(static_cast<uint16_t>(h))),
              float_bits(hardware_half_to_float(static_cast<uint16_t>(h))))
        << hex(h);
  }
  std::vector<float> probes = rounding_probe_floats(13);
  for (float f : probes) {
    ASSERT_EQ(float_to_half(f), hardware_float_to_half(f)) << hex(float_bits(f));
  }
#endif
}

}  // namespace
}  // namespace embag::ref
