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
  // Compared as signed integers (the magnitude's top bit is clear, so the order is the same): x86
  // has a signed vector compare (pcmpgt) but no unsigned one, which LLVM emulates with a max and an
  // equality, one instruction more per vector in max's fold.
  using namespace Halide;
  const Type signed_bits = Int(v.type().bits());
  return cast(signed_bits, magnitude_bits(v)) > cast(signed_bits, infinity_bits(v.type()));
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

// a * b rounded once and never fused with a following add into an FMA, so sums of products have
// the same bits on every target. On CPUs and OpenCL strict_float does that (Halide emits the
// multiply as its own statement, which OpenCL C may not contract); LLVM's NVPTX back end fuses
// a multiply into an add whatever the IR says, so CUDA calls NVVM's round-to-nearest multiply
// intrinsic (PTX mul.rn), which neither LLVM nor ptxas fuses. (libdevice's __nv_fmul_rn would
// flush subnormals: Halide compiles it in flush-to-zero mode.)
inline Halide::Expr exact_product(const Halide::Expr& a, const Halide::Expr& b,
                                  const Halide::Target& target) {
  using namespace Halide;
  if (target.has_feature(Target::CUDA)) {
    const char* multiply = a.type().bits() == 64 ? "llvm.nvvm.mul.rn.d" : "llvm.nvvm.mul.rn.f";
    return Internal::Call::make(a.type(), multiply, {a, b}, Internal::Call::PureExtern);
  }
  return strict_float(a * b);
}

// ---- 16-bit tables on GPUs ------------------------------------------------------------------
//
// GPU kernels take float16 / bfloat16 tables as their uint16 bits and convert in software: the
// CUDA back end cannot compile a bfloat16 conversion (Halide 21 aborts), and OpenCL devices
// without cl_khr_fp16 (POCL's CPU device among them) cannot declare half buffers. One software
// path for both keeps the OpenCL runs, which test the GPU schedules on machines without a GPU,
// exact stand-ins for CUDA. The conversions round exactly as the hardware ones do (nearest,
// ties to even; NaNs stay NaNs with their payload's top bits and the quiet bit set), which is
// also what tests/reference/half_float.h does.

// True when kernels for `target` store 16-bit floats as uint16 bits.
inline bool stores_16bit_floats_as_bits(const Halide::Target& target) {
  return target.has_gpu_feature();
}

// The element type a kernel for `target` declares for data of type `logical`.
inline Halide::Type storage_type(const Halide::Type& logical, const Halide::Target& target) {
  if (logical.is_float() && logical.bits() == 16 && stores_16bit_floats_as_bits(target)) {
    return Halide::UInt(16);
  }
  return logical;
}

namespace detail {

// An unsigned 32-bit constant (Halide's Expr has no unambiguous conversion from unsigned).
inline Halide::Expr u32(uint32_t value) {
  return Halide::Internal::make_const(Halide::UInt(32), value);
}

inline Halide::Expr half_bits_to_float(const Halide::Expr& bits) {
  using namespace Halide;
  Expr h = cast<uint32_t>(bits);
  Expr sign = (h & u32(0x8000)) << 16;
  Expr exponent = (h >> 10) & u32(0x1f);
  Expr mantissa = h & u32(0x3ff);
  Expr normal = sign | ((exponent + u32(112)) << 23) | (mantissa << 13);
  Expr special =
      sign | u32(0x7f800000) | select(mantissa != u32(0), u32(0x400000) | (mantissa << 13), u32(0));
  // A subnormal half is mantissa * 2^-24: exact in float32, and a normal float32.
  Expr subnormal = reinterpret(UInt(32), strict_float(cast<float>(mantissa) *
                                                      Internal::make_const(Float(32), 0x1p-24))) |
                   sign;
  return reinterpret(Float(32),
                     select(exponent == u32(0x1f), special, exponent == u32(0), subnormal, normal));
}

inline Halide::Expr float_to_half_bits(const Halide::Expr& value) {
  using namespace Halide;
  Expr u = reinterpret(UInt(32), value);
  Expr sign = (u >> 16) & u32(0x8000);
  Expr magnitude = u & u32(0x7fffffff);
  Expr exponent = magnitude >> 23;
  Expr is_normal = exponent >= u32(113);
  // Bits dropped from the 24-bit mantissa; past 25 everything rounds to zero anyway.
  Expr shift = select(is_normal, u32(13), min(u32(126) - min(exponent, u32(126)), u32(25)));
  Expr mantissa =
      select(is_normal, magnitude & u32(0x7fffff), (magnitude & u32(0x7fffff)) | u32(0x800000));
  Expr base = select(is_normal, (exponent - u32(112)) << 10, u32(0));
  Expr kept = mantissa >> shift;
  Expr rest = mantissa & ((u32(1) << shift) - u32(1));
  Expr halfway = u32(1) << (shift - u32(1));
  Expr round_up = rest > halfway || (rest == halfway && (kept & u32(1)) == u32(1));
  Expr rounded = base + kept + select(round_up, u32(1), u32(0));
  Expr nan = u32(0x7e00) | ((magnitude >> 13) & u32(0x3ff));
  Expr result =
      select(magnitude > u32(0x7f800000), nan, magnitude >= u32(0x477ff000), u32(0x7c00), rounded);
  return cast<uint16_t>(sign | result);
}

inline Halide::Expr bfloat_bits_to_float(const Halide::Expr& bits) {
  using namespace Halide;
  return reinterpret(Float(32), cast<uint32_t>(bits) << 16);
}

inline Halide::Expr float_to_bfloat_bits(const Halide::Expr& value) {
  using namespace Halide;
  Expr u = reinterpret(UInt(32), value);
  Expr nan = (u >> 16) | u32(0x40);
  Expr rounded = (u + u32(0x7fff) + ((u >> 16) & u32(1))) >> 16;
  return cast<uint16_t>(select((u & u32(0x7fffffff)) > u32(0x7f800000), nan, rounded));
}

}  // namespace detail

// A stored element (of storage_type(logical, target)) read as `wide`.
inline Halide::Expr load_float(const Halide::Expr& stored, const Halide::Type& logical,
                               const Halide::Type& wide, const Halide::Target& target) {
  using namespace Halide;
  if (stored.type() == logical) return widen_float(stored, wide, target);
  Expr f32 = logical.is_bfloat() ? detail::bfloat_bits_to_float(stored)
                                 : detail::half_bits_to_float(stored);
  return wide == Float(32) ? f32 : cast(wide, f32);
}

// `value` (float32 or float64) rounded to `logical`, in storage_type(logical, target).
inline Halide::Expr store_float(const Halide::Expr& value, const Halide::Type& logical,
                                const Halide::Target& target) {
  using namespace Halide;
  const Type stored = storage_type(logical, target);
  if (stored == logical) return narrow_float(value, logical, target);
  // (16-bit tables accumulate in float32, so `value` is float32 here)
  return logical.is_bfloat() ? detail::float_to_bfloat_bits(value)
                             : detail::float_to_half_bits(value);
}

// True where a stored element of type `logical` is a NaN, decided on its bits.
inline Halide::Expr stored_is_nan(const Halide::Expr& stored, const Halide::Type& logical) {
  using namespace Halide;
  if (stored.type() == logical) return is_nan_by_bits(stored);
  const uint32_t infinity = logical.is_bfloat() ? 0x7f80u : 0x7c00u;
  return (cast<uint32_t>(stored) & detail::u32(0x7fff)) > detail::u32(infinity);
}

}  // namespace embag_generators
