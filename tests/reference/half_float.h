// Bit-exact conversions between float32 and the two 16-bit float formats embag tables may hold
// (IEEE float16 and bfloat16), for the reference implementation and the tests.
//
// Written with integer bit manipulation instead of hardware instructions so the reference gives
// the same answer on every host (F16C, ARM fp16 or none). Rounding is to nearest, ties to even;
// overflow rounds to infinity; subnormals are produced and read exactly. A NaN stays a NaN of
// the same sign with its quiet bit set and its payload kept (narrowing keeps the payload's top
// bits), as x86 F16C and ARM do, so a NaN can never turn into an infinity by losing its low
// payload bits. bfloat16 widening is the plain 16-bit shift every implementation uses.
#pragma once

#include <cstdint>
#include <cstring>

namespace embag::ref {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// float16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. Every float16 is exactly a float.
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) {
    if (mant == 0) return bits_float(sign | 0x7F800000u);
    return bits_float(sign | 0x7FC00000u | (mant << 13));  // NaN, quieted like F16C does
  }
  if (exp != 0) return bits_float(sign | ((exp + 127 - 15) << 23) | (mant << 13));
  if (mant == 0) return bits_float(sign);  // signed zero
  // Subnormal: shift the mantissa up until its leading one reaches the implicit bit.
  int e = 127 - 15 + 1;
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    --e;
  }
  return bits_float(sign | (static_cast<uint32_t>(e) << 23) | ((mant & 0x3FFu) << 13));
}

inline uint16_t float_to_half(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) {  // NaN: quiet it, keep the payload's top bits
    return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));
  }
  // 65520 = 65504 + half an ulp: that tie and everything above rounds to infinity
  // (the "even" neighbour of 65504 is 65536, which does not exist).
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);
  const int32_t exp = static_cast<int32_t>(abs >> 23);  // biased float exponent
  uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;        // with the implicit bit
  int32_t shift;                                        // bits dropped from the 24-bit mantissa
  uint32_t base;                                        // half exponent field, pre-shifted
  if (exp >= 127 - 14) {                                // normal half
    shift = 13;
    base = static_cast<uint32_t>(exp - 127 + 15) << 10;
    mant &= 0x7FFFFFu;          // the exponent field carries the implicit bit
  } else {                      // subnormal half (or rounds to zero)
    if (exp == 0) return sign;  // float subnormals are far below half's smallest subnormal
    shift = 13 + (127 - 14 - exp);
    if (shift > 24) return sign;  // below half of the smallest subnormal: rounds to zero
    base = 0;
  }
  const uint32_t kept = mant >> shift;
  const uint32_t rest = mant & ((1u << shift) - 1);
  const uint32_t halfway = 1u << (shift - 1);
  uint32_t result = base + kept;
  // A carry out of the mantissa correctly bumps the exponent (or makes a subnormal normal).
  if (rest > halfway || (rest == halfway && (kept & 1u))) ++result;
  return static_cast<uint16_t>(sign | result);
}

// bfloat16: the top 16 bits of a float32.
inline float bfloat16_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

inline uint16_t float_to_bfloat16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) {  // NaN: quiet it, keep the payload's top bits
    return static_cast<uint16_t>((u >> 16) | 0x0040u);
  }
  // Round to nearest even on the low 16 bits; a carry into the exponent is the correct result,
  // including rounding the largest finite values up to infinity.
  const uint32_t rounding = 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

}  // namespace embag::ref
