// tests/fakecuda/ptx_float.h: the floating-point pieces of PTX's semantics the host does not give
// directly: directed rounding of one operation, exact conversion to narrower formats (f16, bf16,
// f32) under any rounding mode, flush-to-zero, and the canonical NaN.
//
// Directed rounding of arithmetic uses the host's rounding mode (fesetround), which SSE/AVX
// arithmetic, cvtsi2ss/sd, sqrtss/sd and glibc's fma all honour; the operands and the result go
// through volatile variables so that the compiler can neither fold the operation nor move it
// outside the region where the mode is set (this file needs no -frounding-math). Narrowing
// conversions are done in software from the exact double value, so that no double rounding can
// occur (f32 and f64 -> f16/bf16 would double-round through float otherwise).
#pragma once

#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "ptx_program.h"

namespace fakecuda::ptx {

inline float f32_of(uint64_t bits) {
  uint32_t u = static_cast<uint32_t>(bits);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline double f64_of(uint64_t bits) {
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}
inline uint64_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline uint64_t bits_of(double d) {
  uint64_t u;
  std::memcpy(&u, &d, 8);
  return u;
}

// PTX: single-precision operations that produce a NaN produce the canonical NaN 0x7fffffff
// (payloads are not propagated). Double precision: the host's NaN is kept (see ptx_executor.cpp).
constexpr uint32_t kCanonicalNanF32 = 0x7fffffffu;
constexpr uint16_t kCanonicalNanF16 = 0x7fffu;
constexpr uint16_t kCanonicalNanBF16 = 0x7fffu;

inline uint64_t canon_f32(float f) { return std::isnan(f) ? kCanonicalNanF32 : bits_of(f); }

// .ftz: subnormal inputs and results become zero of the same sign.
inline float flush(float f) {
  return std::fpclassify(f) == FP_SUBNORMAL ? std::copysign(0.0f, f) : f;
}
inline double flush(double d) {
  return std::fpclassify(d) == FP_SUBNORMAL ? std::copysign(0.0, d) : d;
}

inline int host_mode(uint8_t rnd) {
  switch (rnd) {
    case kRz:
      return FE_TOWARDZERO;
    case kRm:
      return FE_DOWNWARD;
    case kRp:
      return FE_UPWARD;
    default:
      return FE_TONEAREST;
  }
}

class ScopedRounding {
 public:
  explicit ScopedRounding(uint8_t rnd) : old_(std::fegetround()) {
    std::fesetround(host_mode(rnd));
  }
  ~ScopedRounding() { std::fesetround(old_); }
  ScopedRounding(const ScopedRounding&) = delete;
  ScopedRounding& operator=(const ScopedRounding&) = delete;

 private:
  int old_;
};

enum class FOp { kAdd, kSub, kMul, kDiv, kSqrt, kFma };

// One operation rounded with `rnd` (kRn included: the caller's environment is the default one).
template <typename T>
T rounded(FOp op, T a, T b, T c, uint8_t rnd) {
  ScopedRounding mode(rnd);
  volatile T x = a, y = b, z = c;
  volatile T r;
  switch (op) {
    case FOp::kAdd:
      r = x + y;
      break;
    case FOp::kSub:
      r = x - y;
      break;
    case FOp::kMul:
      r = x * y;
      break;
    case FOp::kDiv:
      r = x / y;
      break;
    case FOp::kSqrt:
      r = std::sqrt(static_cast<T>(x));
      break;
    case FOp::kFma:
      r = std::fma(static_cast<T>(x), static_cast<T>(y), static_cast<T>(z));
      break;
  }
  return r;
}

// Rounds the exact value `x` to the binary format with `ebits` exponent and `mbits` fraction
// bits, under PTX rounding `rnd` (kRn/kRz/kRm/kRp), and returns its bits. NaN gives `nan_bits`.
// Every step is exact in double: frexp/ldexp scale by powers of two, floor of a double below
// 2^53 is exact, and the formats are at most f32 (mbits <= 23).
inline uint32_t round_to_format(double x, int ebits, int mbits, uint8_t rnd, uint32_t nan_bits) {
  const uint32_t sign = std::signbit(x) ? 1u : 0u;
  const uint32_t sign_bit = sign << (ebits + mbits);
  const uint32_t inf_bits = ((1u << ebits) - 1u) << mbits;
  if (std::isnan(x)) return nan_bits;
  if (std::isinf(x)) return sign_bit | inf_bits;
  double a = std::fabs(x);
  const int bias = (1 << (ebits - 1)) - 1;
  const int emin = 1 - bias;
  const int qmin = emin - mbits;  // the exponent of the smallest subnormal
  int e = emin;
  if (a != 0) {
    int k;
    std::frexp(a, &k);
    e = k - 1;
  }
  int qexp = (e > emin ? e : emin) - mbits;
  double scaled = std::ldexp(a, -qexp);  // < 2^(mbits + 1)
  double whole = std::floor(scaled);
  double frac = scaled - whole;
  uint64_t n = static_cast<uint64_t>(whole);
  bool inexact = frac != 0;
  switch (rnd) {
    case kRz:
      break;
    case kRm:
      n += (sign && inexact) ? 1 : 0;
      break;
    case kRp:
      n += (!sign && inexact) ? 1 : 0;
      break;
    default:  // nearest, ties to even
      n += (frac > 0.5 || (frac == 0.5 && (n & 1))) ? 1 : 0;
      break;
  }
  // n * 2^qexp encodes as ((qexp - qmin) << mbits) + n for subnormals, normals and a carry into
  // the next binade alike.
  uint64_t bits = (static_cast<uint64_t>(qexp - qmin) << mbits) + n;
  if (bits >= inf_bits) {
    bool to_inf = rnd == kRn || rnd == kRndNone || (rnd == kRp && !sign) || (rnd == kRm && sign);
    return sign_bit | (to_inf ? inf_bits : inf_bits - 1);
  }
  return sign_bit | static_cast<uint32_t>(bits);
}

// The exact value of a binary16-like format's bits.
inline double from_format(uint32_t bits, int ebits, int mbits) {
  const uint32_t sign = (bits >> (ebits + mbits)) & 1u;
  const uint32_t exp = (bits >> mbits) & ((1u << ebits) - 1u);
  const uint32_t man = bits & ((1u << mbits) - 1u);
  const int bias = (1 << (ebits - 1)) - 1;
  double v;
  if (exp == (1u << ebits) - 1u) {
    v = man ? std::nan("") : HUGE_VAL;
  } else if (exp == 0) {
    v = std::ldexp(static_cast<double>(man), 1 - bias - mbits);
  } else {
    v = std::ldexp(static_cast<double>(man | (1u << mbits)), static_cast<int>(exp) - bias - mbits);
  }
  return sign ? -v : v;
}

// f16 and bf16 NaNs widen to a quiet double NaN keeping their payload; a .f32 destination then
// gets the canonical NaN (ptx_executor.cpp), a .f64 one keeps it.
inline double f16_to_double(uint16_t h) {
  if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) {
    uint64_t b = (static_cast<uint64_t>(h >> 15) << 63) | (0x7ffull << 52) |
                 (static_cast<uint64_t>(h & 0x3ffu) << 42) | (1ull << 51);
    return f64_of(b);
  }
  return from_format(h, 5, 10);
}
inline double bf16_to_double(uint16_t h) {
  if ((h & 0x7f80u) == 0x7f80u && (h & 0x7fu)) {
    uint64_t b = (static_cast<uint64_t>(h >> 15) << 63) | (0x7ffull << 52) |
                 (static_cast<uint64_t>(h & 0x7fu) << 45) | (1ull << 51);
    return f64_of(b);
  }
  return from_format(h, 8, 7);
}

}  // namespace fakecuda::ptx
