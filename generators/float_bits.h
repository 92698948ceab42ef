// NaN-exact helpers shared by the generators: NaN tests on bits, and float16 widening and
// narrowing that keep NaNs NaN on targets without F16C.
//
// Why: kernels are compiled with LLVM fast-math flags, under which LLVM may assume values are
// never NaN. With F16C the hardware conversions keep NaNs regardless; without it (SSE4.1) Halide
// emulates float16 conversions with arithmetic that, under those flags, turns NaN into infinity
// (measured: the differential tests saw 0x7e00 come out as 0x7c00). Integer operations on the
// bits carry no such assumptions.
#pragma once

#include <cstdint>

#include "Halide.h"

namespace embag_generators {

// The bits of |v| and of infinity in `v`'s type, as unsigned integers of its width.
inline Halide::Expr magnitude_bits(const Halide::Expr& v) {
  using namespace Halide;
  const Type bits = UInt(v.type().bits());
  return reinterpret(bits, v) & Internal::make_const(bits, (uint64_t{1} << (bits.bits() - 1)) - 1);
}
inline Halide::Expr infinity_bits(const Halide::Type& t) {
  uint64_t value = 0x7ff0000000000000;
  if (t.is_bfloat()) {
    value = 0x7f80;
  } else if (t.bits() == 16) {
    value = 0x7c00;
  } else if (t.bits() == 32) {
    value = 0x7f800000;
  }
  return Halide::Internal::make_const(Halide::UInt(t.bits()), value);
}

// True where `v` (any float type) is a NaN, decided with integer operations on its bits.
inline Halide::Expr is_nan_by_bits(const Halide::Expr& v) {
  return magnitude_bits(v) > infinity_bits(v.type());
}

// True when float16 conversions on `target` are emulated and so need the NaN fix-ups below. Only
// x86 with F16C converts in hardware here: Halide emulates the conversions on SSE4.1 and on ARM
// too (arm-64-linux without the arm_fp16 feature turned float16 NaNs into infinities, under
// qemu-aarch64, before ARM took these fix-ups).
inline bool float16_conversions_emulated(const Halide::Type& t, const Halide::Target& target) {
  return t.is_float() && !t.is_bfloat() && t.bits() == 16 &&
         !(target.arch == Halide::Target::X86 && target.has_feature(Halide::Target::F16C));
}

// `raw` converted to `wide`, with a float16 NaN becoming the float32 NaN of the same sign and
// payload where conversions are emulated.
inline Halide::Expr widen_float(const Halide::Expr& raw, const Halide::Type& wide,
                                const Halide::Target& target) {
  using namespace Halide;
  Expr converted = cast(wide, raw);
  if (!float16_conversions_emulated(raw.type(), target) || wide != Float(32)) return converted;
  Expr h = cast<uint32_t>(reinterpret(UInt(16), raw));
  Expr nan = reinterpret(Float(32), ((h & 0x8000) << 16) | 0x7fc00000 | ((h & 0x3ff) << 13));
  return select(is_nan_by_bits(raw), nan, converted);
}

// `value` rounded to `narrow`, with a float32 NaN becoming a quiet float16 NaN of the same sign
// where conversions are emulated.
inline Halide::Expr narrow_float(const Halide::Expr& value, const Halide::Type& narrow,
                                 const Halide::Target& target) {
  using namespace Halide;
  Expr converted = cast(narrow, value);
  if (!float16_conversions_emulated(narrow, target) || value.type() != Float(32)) {
    return converted;
  }
  Expr u = reinterpret(UInt(32), value);
  Expr h = cast<uint16_t>(((u >> 16) & 0x8000) | 0x7e00 | ((u >> 13) & 0x3ff));
  return select(is_nan_by_bits(value), reinterpret(Float(16), h), converted);
}

}  // namespace embag_generators
