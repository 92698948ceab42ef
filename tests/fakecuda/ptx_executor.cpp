// tests/fakecuda/ptx_executor.cpp: runs a decoded PTX program (ptx_program.h), one thread after
// another, with PTX's semantics.
//
// Semantics notes (PTX ISA, "Instructions"), and where the fake chooses:
// - Registers hold bits; each instruction reads its operands at its own type's width (a slot
//   keeps 64 bits, reads truncate) and writes its result zero-extended to the slot.
// - Integer arithmetic wraps; shifts by at least the width give 0 (shl, shr.u) or the sign
//   (shr.s). Integer division by zero is unspecified in PTX: the fake's quotient is all ones and
//   its remainder the dividend (Halide's kernels never divide by zero: Halide defines x / 0 as 0
//   with a select around the division).
// - add/sub/mul/fma/div/sqrt/rcp round as written (.rn default for add/sub/mul); a plain
//   add.f32/mul.f32 (no .rn) is computed unfused, as .rn: on a GPU ptxas may contract such a
//   pair into an fma, which no fake can predict; Halide writes .rn where it matters.
// - .ftz flushes subnormal inputs and results to zero of the same sign; .sat clamps to [0, 1]
//   with NaN -> +0.
// - Single-precision NaN results are the canonical NaN 0x7fffffff; double-precision NaN
//   results are the host's (a quiet NaN, payload propagated), which PTX does not pin down.
// - min/max: one NaN operand gives the other, two give the canonical NaN, .NaN gives the
//   canonical NaN if either is NaN; -0.0 is below +0.0.
// - The approximate instructions (rcp.approx, sqrt.approx, div.approx/.full, ex2.approx,
//   lg2.approx) are computed correctly rounded (ex2/lg2 through the host's exp2/log2, within an
//   ulp): inside their documented error bounds, but not the hardware's exact bits; a test
//   comparing their results bitwise with a GPU needs the same allowance as for POCL.
// - cvt: float -> integer rounds as written (.rni/.rzi/.rmi/.rpi), NaN -> 0, out-of-range values
//   clamp to the destination's range; integer -> integer truncates or extends, clamping with .sat;
//   narrowing float conversions round exactly in software (no double rounding).
// - Every global load and store is checked with MemoryChecker::check_access and must be
//   naturally aligned (a misaligned access faults on a GPU).
#include <algorithm>
#include <cfenv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <type_traits>

#include "ptx_float.h"
#include "ptx_program.h"

namespace fakecuda::ptx {
namespace {

constexpr int kMaxCallDepth = 64;
// A thread that runs this many instructions is taken to loop forever (a kernel or interpreter
// bug): the launch fails instead of hanging the test. Halide's kernels run thousands a thread.
constexpr uint64_t kMaxThreadInstructions = uint64_t{1} << 32;

template <typename T>
constexpr Ty ty_id() {
  if constexpr (std::is_same_v<T, uint16_t>) return kU16;
  if constexpr (std::is_same_v<T, int16_t>) return kS16;
  if constexpr (std::is_same_v<T, uint32_t>) return kU32;
  if constexpr (std::is_same_v<T, int32_t>) return kS32;
  if constexpr (std::is_same_v<T, uint64_t>) return kU64;
  if constexpr (std::is_same_v<T, int64_t>) return kS64;
  if constexpr (std::is_same_v<T, float>) return kF32;
  return kF64;
}

template <typename T>
inline T get(uint64_t v) {
  if constexpr (std::is_same_v<T, float>) {
    return f32_of(v);
  } else if constexpr (std::is_same_v<T, double>) {
    return f64_of(v);
  } else {
    return static_cast<T>(static_cast<std::make_unsigned_t<T>>(v));
  }
}
template <typename T>
inline uint64_t put(T v) {
  return static_cast<uint64_t>(static_cast<std::make_unsigned_t<T>>(v));
}

inline uint64_t width_mask(int bits) { return bits >= 64 ? ~0ull : (1ull << bits) - 1; }

template <typename T>
inline bool int_compare(uint8_t cmp, T x, T y) {
  switch (cmp) {
    case kEq:
      return x == y;
    case kNe:
      return x != y;
    case kLt:
      return x < y;
    case kLe:
      return x <= y;
    case kGt:
      return x > y;
    default:
      return x >= y;
  }
}

template <typename T>
inline bool float_compare(uint8_t cmp, T x, T y) {
  bool nan = std::isnan(x) || std::isnan(y);
  switch (cmp) {
    case kEq:
      return !nan && x == y;
    case kNe:
      return !nan && x != y;
    case kLt:
      return !nan && x < y;
    case kLe:
      return !nan && x <= y;
    case kGt:
      return !nan && x > y;
    case kGe:
      return !nan && x >= y;
    case kEqu:
      return nan || x == y;
    case kNeu:
      return nan || x != y;
    case kLtu:
      return nan || x < y;
    case kLeu:
      return nan || x <= y;
    case kGtu:
      return nan || x > y;
    case kGeu:
      return nan || x >= y;
    case kNum:
      return !nan;
    default:
      return nan;
  }
}

template <typename T>
inline T ftz_in(T v, uint8_t flags) {
  if constexpr (std::is_same_v<T, float>) {
    return (flags & kFtz) ? flush(v) : v;
  } else {
    return v;  // PTX flushes only single precision (and rcp.approx.ftz.f64, handled there)
  }
}

template <typename T>
inline uint64_t float_result(T v, uint8_t flags) {
  if constexpr (std::is_same_v<T, float>) {
    if (flags & kFtz) v = flush(v);
    if (flags & kSat) v = std::isnan(v) ? 0.0f : std::min(std::max(v, 0.0f), 1.0f);
    return canon_f32(v);
  } else {
    if (flags & kSat) v = std::isnan(v) ? 0.0 : std::min(std::max(v, 0.0), 1.0);
    return bits_of(v);
  }
}

template <typename T>
inline uint64_t float_min_max(bool is_max, T x, T y, uint8_t flags) {
  x = ftz_in(x, flags);
  y = ftz_in(y, flags);
  bool nx = std::isnan(x), ny = std::isnan(y);
  T r;
  if (nx || ny) {
    if ((nx && ny) || (flags & kNanMode)) {
      return std::is_same_v<T, float> ? kCanonicalNanF32
                                      : bits_of(std::numeric_limits<double>::quiet_NaN());
    }
    r = nx ? y : x;
  } else if (x == y) {
    // Equal values differ only in the sign of zero: -0.0 is the smaller.
    r = (std::signbit(x) == is_max) ? y : x;
  } else {
    r = is_max ? (x > y ? x : y) : (x < y ? x : y);
  }
  return bits_of(r);
}

// bfe: PTX's pseudocode (pos and len are the low 8 bits of b and c).
template <typename T>
inline T bit_field_extract(T a, uint32_t b, uint32_t c) {
  using U = std::make_unsigned_t<T>;
  constexpr int msb = sizeof(T) * 8 - 1;
  uint32_t pos = b & 0xff, len = c & 0xff;
  U ua = static_cast<U>(a);
  bool sbit = false;
  if (std::is_signed_v<T> && len != 0) {
    uint32_t at = std::min<uint32_t>(pos + len - 1, msb);
    sbit = (ua >> at) & 1;
  }
  U d = 0;
  for (uint32_t i = 0; i <= static_cast<uint32_t>(msb); ++i) {
    bool bit = (i < len && pos + i <= static_cast<uint32_t>(msb)) ? ((ua >> (pos + i)) & 1) : sbit;
    d |= static_cast<U>(bit) << i;
  }
  return static_cast<T>(d);
}

// The exact value of an integer as a double, or a double that rounds like it to any format of
// at most 52 fraction bits: bits shifted out below the 53rd are kept as one sticky bit.
inline double int_to_double_sticky(uint64_t magnitude) {
  int shift = 0;
  while ((magnitude >> shift) >= (1ull << 53)) ++shift;
  uint64_t kept = magnitude >> shift;
  if (shift && (magnitude & ((1ull << shift) - 1))) kept |= 1;
  return std::ldexp(static_cast<double>(kept), shift);
}

struct Frame {
  std::vector<uint64_t> regs;
  std::vector<uint8_t> params;
};

struct Ctx {
  const Program* prog = nullptr;
  MemoryChecker* memory = nullptr;
  std::string* error = nullptr;
  std::string entry_name;
  uint64_t executed = 0;
  uint64_t specials[12] = {};
  std::vector<Frame> frames;
};

enum class Status { kReturn, kExit, kError };

Status fail(Ctx& cx, const Function& f, size_t pc, const std::string& why) {
  const uint64_t* s = cx.specials;
  *cx.error = cx.entry_name + ": block (" + std::to_string(s[kSlotCtaid]) + ", " +
              std::to_string(s[kSlotCtaid + 1]) + ", " + std::to_string(s[kSlotCtaid + 2]) +
              ") thread (" + std::to_string(s[kSlotTid]) + ", " + std::to_string(s[kSlotTid + 1]) +
              ", " + std::to_string(s[kSlotTid + 2]) + "), " + f.name + " line " +
              std::to_string(f.lines[pc]) + " `" + f.texts[pc] + "`: " + why;
  return Status::kError;
}

// A global access: aligned, and inside an allocation the checker knows.
inline bool global_access(Ctx& cx, uint64_t address, size_t bytes, bool store, std::string* why) {
  if (address & (bytes - 1)) {  // sizes are powers of two
    *why = "misaligned " + std::to_string(bytes) + "-byte " + (store ? "store" : "load") +
           " at 0x" + [&] {
             char buf[32];
             std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(address));
             return std::string(buf);
           }();
    return false;
  }
  return cx.memory->check_access(address, bytes, store, why);
}

inline uint64_t extend_loaded(uint64_t raw, int bits, bool sign, int reg_bits) {
  if (sign && bits < 64 && ((raw >> (bits - 1)) & 1)) raw |= ~width_mask(bits);
  return raw & width_mask(reg_bits);
}

// Float -> integer (cvt.rXi.intType.floatType): round as written, NaN -> 0, saturate.
inline uint64_t float_to_int(double v, uint8_t rnd, Ty dt) {
  if (std::isnan(v)) return 0;
  switch (rnd) {
    case kRni:
      v = std::nearbyint(v);  // the launch runs in the default environment: ties to even
      break;
    case kRzi:
      v = std::trunc(v);
      break;
    case kRmi:
      v = std::floor(v);
      break;
    default:
      v = std::ceil(v);
      break;
  }
  int bits = ty_bits(dt);
  if (ty_signed(dt)) {
    double lo = -std::ldexp(1.0, bits - 1), hi = std::ldexp(1.0, bits - 1);
    int64_t r = v <= lo   ? static_cast<int64_t>(std::numeric_limits<int64_t>::min() >> (64 - bits))
                : v >= hi ? static_cast<int64_t>(std::numeric_limits<int64_t>::max() >> (64 - bits))
                          : static_cast<int64_t>(v);
    return static_cast<uint64_t>(r) & width_mask(bits);
  }
  double hi = std::ldexp(1.0, bits);
  uint64_t r = v <= 0 ? 0 : v >= hi ? width_mask(bits) : static_cast<uint64_t>(v);
  return r;
}

// The value of a float register of type `t` as a double (exact for every type).
inline double float_value(uint64_t v, Ty t, uint8_t flags) {
  switch (t) {
    case kF16:
      return f16_to_double(static_cast<uint16_t>(v));
    case kBF16:
      return bf16_to_double(static_cast<uint16_t>(v));
    case kF32:
      return ftz_in(f32_of(v), flags);
    default:
      return f64_of(v);
  }
}

// Rounds an exact double to float type `t` under `rnd` and applies .ftz/.sat.
inline uint64_t to_float_type(double x, Ty t, uint8_t rnd, uint8_t flags) {
  if (flags & kSat) x = std::isnan(x) ? 0.0 : std::min(std::max(x, 0.0), 1.0);
  switch (t) {
    case kF16:
      return round_to_format(x, 5, 10, rnd, kCanonicalNanF16);
    case kBF16:
      return round_to_format(x, 8, 7, rnd, kCanonicalNanBF16);
    case kF32: {
      float f = f32_of(round_to_format(x, 8, 23, rnd, kCanonicalNanF32));
      return canon_f32((flags & kFtz) ? flush(f) : f);
    }
    default:
      return bits_of(x);
  }
}

Status run(Ctx& cx, uint32_t findex, int depth);

Status call(Ctx& cx, const Function& caller, size_t pc, int depth) {
  const CallSite& site = caller.calls[static_cast<size_t>(caller.code[pc].imm)];
  if (depth + 1 >= kMaxCallDepth) return fail(cx, caller, pc, "call depth over 64 (recursion?)");
  const Function& callee = cx.prog->functions[site.callee];
  Frame& from = cx.frames[depth];
  Frame& to = cx.frames[depth + 1];
  to.regs = callee.init;
  std::copy(cx.specials, cx.specials + 12, to.regs.begin());
  to.params.assign(callee.param_bytes, 0);
  for (const Copy& c : site.args) std::memcpy(&to.params[c.to], &from.params[c.from], c.size);
  Status s = run(cx, site.callee, depth + 1);
  if (s != Status::kReturn) return s;
  for (const Copy& c : site.rets) std::memcpy(&from.params[c.to], &to.params[c.from], c.size);
  return Status::kReturn;
}

#define INT2(FAM, T, EXPR)                  \
  case key(FAM, ty_id<T>()): {              \
    T x = get<T>(r[in.a]);                  \
    r[in.d] = put<T>(static_cast<T>(EXPR)); \
    break;                                  \
  }
#define INT3(FAM, T, EXPR)                      \
  case key(FAM, ty_id<T>()): {                  \
    T x = get<T>(r[in.a]), y = get<T>(r[in.b]); \
    r[in.d] = put<T>(static_cast<T>(EXPR));     \
    break;                                      \
  }
#define INT3_ALL_UNSIGNED(FAM, EXPR) \
  INT3(FAM, uint16_t, EXPR) INT3(FAM, uint32_t, EXPR) INT3(FAM, uint64_t, EXPR)
#define INT3_ALL(FAM, EXPR)    \
  INT3_ALL_UNSIGNED(FAM, EXPR) \
  INT3(FAM, int16_t, EXPR) INT3(FAM, int32_t, EXPR) INT3(FAM, int64_t, EXPR)

__extension__ typedef __int128 Int128;
__extension__ typedef unsigned __int128 UInt128;

template <typename T>
inline T mul_hi(T x, T y) {
  if constexpr (sizeof(T) == 8) {
    using W = std::conditional_t<std::is_signed_v<T>, Int128, UInt128>;
    return static_cast<T>((static_cast<W>(x) * static_cast<W>(y)) >> 64);
  } else {
    using W = std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>;
    return static_cast<T>((static_cast<W>(x) * static_cast<W>(y)) >> (sizeof(T) * 8));
  }
}
template <typename T>
using Wide =
    std::conditional_t<sizeof(T) == 2, std::conditional_t<std::is_signed_v<T>, int32_t, uint32_t>,
                       std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>;
template <typename T>
inline Wide<T> mul_wide(T x, T y) {
  return static_cast<Wide<T>>(static_cast<Wide<T>>(x) * static_cast<Wide<T>>(y));
}
template <typename T>
inline T mul_lo(T x, T y) {
  return static_cast<T>(static_cast<uint64_t>(x) * static_cast<uint64_t>(y));
}
template <typename T>
inline T div_int(T x, T y) {
  if (y == 0) return static_cast<T>(~static_cast<std::make_unsigned_t<T>>(0));
  if (std::is_signed_v<T> && y == static_cast<T>(-1))
    return static_cast<T>(0 - static_cast<std::make_unsigned_t<T>>(x));
  return static_cast<T>(x / y);
}
template <typename T>
inline T rem_int(T x, T y) {
  if (y == 0) return x;
  if (std::is_signed_v<T> && y == static_cast<T>(-1)) return 0;
  return static_cast<T>(x % y);
}
template <typename T>
inline T shl(T x, uint32_t s) {
  using U = std::make_unsigned_t<T>;
  return s >= sizeof(T) * 8
             ? 0
             : static_cast<T>(static_cast<U>(static_cast<uint64_t>(static_cast<U>(x)) << s));
}
template <typename T>
inline T shr(T x, uint32_t s) {
  if (s >= sizeof(T) * 8) return std::is_signed_v<T> && x < 0 ? static_cast<T>(-1) : 0;
  return static_cast<T>(x >> s);
}
template <typename T>
inline T abs_int(T x) {
  using U = std::make_unsigned_t<T>;
  return x < 0 ? static_cast<T>(0 - static_cast<U>(x)) : x;
}

template <typename T>
inline uint64_t float_arith(Fam fam, const Inst& in, const uint64_t* r) {
  T x = ftz_in(get<T>(r[in.a]), in.flags);
  T y = ftz_in(get<T>(r[in.b]), in.flags);
  T res;
  bool nearest = in.rnd == kRn;
  switch (fam) {
    case kFAdd:
      res = nearest ? x + y : rounded(FOp::kAdd, x, y, T(0), in.rnd);
      break;
    case kFSub:
      res = nearest ? x - y : rounded(FOp::kSub, x, y, T(0), in.rnd);
      break;
    case kFMul:
      res = nearest ? x * y : rounded(FOp::kMul, x, y, T(0), in.rnd);
      break;
    case kFDiv:
      res = nearest ? x / y : rounded(FOp::kDiv, x, y, T(0), in.rnd);
      break;
    case kFFma: {
      T z = ftz_in(get<T>(r[in.c]), in.flags);
      res = nearest ? std::fma(x, y, z) : rounded(FOp::kFma, x, y, z, in.rnd);
      break;
    }
    case kFSqrt:
      res = nearest ? std::sqrt(x) : rounded(FOp::kSqrt, x, x, T(0), in.rnd);
      break;
    case kFRcp:
      if constexpr (std::is_same_v<T, double>) {
        if ((in.flags & kApprox) && (in.flags & kFtz)) x = flush(x);
      }
      res = nearest ? T(1) / x : rounded(FOp::kDiv, T(1), x, T(0), in.rnd);
      if constexpr (std::is_same_v<T, double>) {
        if ((in.flags & kApprox) && (in.flags & kFtz)) res = flush(res);
      }
      break;
    case kFEx2:
      res = std::exp2(x);
      break;
    default:  // kFLg2
      res = std::log2(x);
      break;
  }
  return float_result(res, in.flags);
}

Status run(Ctx& cx, uint32_t findex, int depth) {
  const Function& f = cx.prog->functions[findex];
  const Inst* code = f.code.data();
  uint64_t* r = cx.frames[depth].regs.data();
  uint8_t* params = cx.frames[depth].params.data();
  size_t pc = 0;
  uint64_t executed = 0;
  std::string why;
  for (;;) {
    const Inst& in = code[pc];
    ++executed;
    if (!(r[in.guard] ^ in.guard_neg)) {
      ++pc;
      continue;
    }
    switch (in.op) {
      INT3_ALL_UNSIGNED(kAdd, x + y)
      INT3_ALL_UNSIGNED(kSub, x - y)
      INT3_ALL_UNSIGNED(kMulLo, mul_lo(x, y))
      INT3_ALL(kMulHi, mul_hi(x, y))
      INT3_ALL(kDiv, div_int(x, y))
      INT3_ALL(kRem, rem_int(x, y))
      INT3_ALL(kMin, x < y ? x : y)
      INT3_ALL(kMax, x > y ? x : y)
      INT3_ALL_UNSIGNED(kAnd, x & y)
      INT3_ALL_UNSIGNED(kOr, x | y)
      INT3_ALL_UNSIGNED(kXor, x ^ y)
      INT2(kNot, uint16_t, ~x)
      INT2(kNot, uint32_t, ~x)
      INT2(kNot, uint64_t, ~x)
      INT2(kCnot, uint16_t, x == 0 ? 1 : 0)
      INT2(kCnot, uint32_t, x == 0 ? 1 : 0)
      INT2(kCnot, uint64_t, x == 0 ? 1 : 0)
      INT2(kNeg, uint16_t, 0 - x)
      INT2(kNeg, uint32_t, 0 - x)
      INT2(kNeg, uint64_t, 0 - x)
      INT2(kAbs, int16_t, abs_int(x))
      INT2(kAbs, int32_t, abs_int(x))
      INT2(kAbs, int64_t, abs_int(x))
      INT2(kShr, uint16_t, shr(x, static_cast<uint32_t>(r[in.b])))
      INT2(kShr, uint32_t, shr(x, static_cast<uint32_t>(r[in.b])))
      INT2(kShr, uint64_t, shr(x, static_cast<uint32_t>(r[in.b])))
      INT2(kShr, int16_t, shr(x, static_cast<uint32_t>(r[in.b])))
      INT2(kShr, int32_t, shr(x, static_cast<uint32_t>(r[in.b])))
      INT2(kShr, int64_t, shr(x, static_cast<uint32_t>(r[in.b])))
      INT2(kShl, uint16_t, shl(x, static_cast<uint32_t>(r[in.b])))
      INT2(kShl, uint32_t, shl(x, static_cast<uint32_t>(r[in.b])))
      INT2(kShl, uint64_t, shl(x, static_cast<uint32_t>(r[in.b])))
      INT2(kPopc, uint32_t, __builtin_popcount(x))
      INT2(kPopc, uint64_t, __builtin_popcountll(x))
      INT2(kClz, uint32_t, x == 0 ? 32 : __builtin_clz(x))
      INT2(kClz, uint64_t, x == 0 ? 64 : __builtin_clzll(x))

      case key(kMulWide, kU16):
        r[in.d] = mul_wide(get<uint16_t>(r[in.a]), get<uint16_t>(r[in.b]));
        break;
      case key(kMulWide, kS16):
        r[in.d] = put<int32_t>(mul_wide(get<int16_t>(r[in.a]), get<int16_t>(r[in.b])));
        break;
      case key(kMulWide, kU32):
        r[in.d] = mul_wide(get<uint32_t>(r[in.a]), get<uint32_t>(r[in.b]));
        break;
      case key(kMulWide, kS32):
        r[in.d] = put<int64_t>(mul_wide(get<int32_t>(r[in.a]), get<int32_t>(r[in.b])));
        break;
      // mad.wide: the wide product plus c, wrapping at the wide width.
      case key(kMadWide, kU16):
      case key(kMadWide, kS16): {
        uint32_t p =
            (in.op & 31) == kU16
                ? mul_wide(get<uint16_t>(r[in.a]), get<uint16_t>(r[in.b]))
                : static_cast<uint32_t>(mul_wide(get<int16_t>(r[in.a]), get<int16_t>(r[in.b])));
        r[in.d] = static_cast<uint32_t>(p + static_cast<uint32_t>(r[in.c]));
        break;
      }
      case key(kMadWide, kU32):
      case key(kMadWide, kS32): {
        uint64_t p =
            (in.op & 31) == kU32
                ? mul_wide(get<uint32_t>(r[in.a]), get<uint32_t>(r[in.b]))
                : static_cast<uint64_t>(mul_wide(get<int32_t>(r[in.a]), get<int32_t>(r[in.b])));
        r[in.d] = p + r[in.c];
        break;
      }
#define MAD(FAM, T, EXPR)                                     \
  case key(FAM, ty_id<T>()): {                                \
    T x = get<T>(r[in.a]), y = get<T>(r[in.b]);               \
    r[in.d] = put<T>(static_cast<T>(put<T>(EXPR) + r[in.c])); \
    break;                                                    \
  }
        MAD(kMadLo, uint16_t, mul_lo(x, y))
        MAD(kMadLo, uint32_t, mul_lo(x, y))
        MAD(kMadLo, uint64_t, mul_lo(x, y))
        MAD(kMadHi, uint16_t, mul_hi(x, y))
        MAD(kMadHi, uint32_t, mul_hi(x, y))
        MAD(kMadHi, uint64_t, mul_hi(x, y))
        MAD(kMadHi, int16_t, mul_hi(x, y))
        MAD(kMadHi, int32_t, mul_hi(x, y))
        MAD(kMadHi, int64_t, mul_hi(x, y))
#undef MAD

      case key(kBfe, kU32):
        r[in.d] = bit_field_extract(get<uint32_t>(r[in.a]), static_cast<uint32_t>(r[in.b]),
                                    static_cast<uint32_t>(r[in.c]));
        break;
      case key(kBfe, kS32):
        r[in.d] = put<int32_t>(bit_field_extract(
            get<int32_t>(r[in.a]), static_cast<uint32_t>(r[in.b]), static_cast<uint32_t>(r[in.c])));
        break;
      case key(kBfe, kU64):
        r[in.d] = bit_field_extract(r[in.a], static_cast<uint32_t>(r[in.b]),
                                    static_cast<uint32_t>(r[in.c]));
        break;
      case key(kBfe, kS64):
        r[in.d] = put<int64_t>(bit_field_extract(
            get<int64_t>(r[in.a]), static_cast<uint32_t>(r[in.b]), static_cast<uint32_t>(r[in.c])));
        break;

      // Predicate logic: predicates hold 0 or 1.
      case key(kAnd, kPred):
        r[in.d] = r[in.a] & r[in.b];
        break;
      case key(kOr, kPred):
        r[in.d] = r[in.a] | r[in.b];
        break;
      case key(kXor, kPred):
        r[in.d] = r[in.a] ^ r[in.b];
        break;
      case key(kNot, kPred):
      case key(kCnot, kPred):
        r[in.d] = r[in.a] ^ 1;
        break;

      // Floating point.
      case key(kFAdd, kF32):
        if (in.rnd == kRn && !in.flags) {
          r[in.d] = canon_f32(f32_of(r[in.a]) + f32_of(r[in.b]));
        } else {
          r[in.d] = float_arith<float>(kFAdd, in, r);
        }
        break;
      case key(kFMul, kF32):
        if (in.rnd == kRn && !in.flags) {
          r[in.d] = canon_f32(f32_of(r[in.a]) * f32_of(r[in.b]));
        } else {
          r[in.d] = float_arith<float>(kFMul, in, r);
        }
        break;
      case key(kFAdd, kF64):
        if (in.rnd == kRn && !in.flags) {
          r[in.d] = bits_of(f64_of(r[in.a]) + f64_of(r[in.b]));
        } else {
          r[in.d] = float_arith<double>(kFAdd, in, r);
        }
        break;
      case key(kFMul, kF64):
        if (in.rnd == kRn && !in.flags) {
          r[in.d] = bits_of(f64_of(r[in.a]) * f64_of(r[in.b]));
        } else {
          r[in.d] = float_arith<double>(kFMul, in, r);
        }
        break;
      case key(kFFma, kF64):
        if (in.rnd == kRn && !in.flags) {
          r[in.d] = bits_of(std::fma(f64_of(r[in.a]), f64_of(r[in.b]), f64_of(r[in.c])));
        } else {
          r[in.d] = float_arith<double>(kFFma, in, r);
        }
        break;
#define FARITH(FAM)                            \
  case key(FAM, kF32):                         \
    r[in.d] = float_arith<float>(FAM, in, r);  \
    break;                                     \
  case key(FAM, kF64):                         \
    r[in.d] = float_arith<double>(FAM, in, r); \
    break;
        FARITH(kFSub)
        FARITH(kFDiv)
        FARITH(kFSqrt)
        FARITH(kFRcp)
        FARITH(kFEx2)
        FARITH(kFLg2)
#undef FARITH
      case key(kFFma, kF32):
        r[in.d] = float_arith<float>(kFFma, in, r);
        break;
      case key(kFMin, kF32):
        r[in.d] = float_min_max(false, f32_of(r[in.a]), f32_of(r[in.b]), in.flags);
        break;
      case key(kFMax, kF32):
        r[in.d] = float_min_max(true, f32_of(r[in.a]), f32_of(r[in.b]), in.flags);
        break;
      case key(kFMin, kF64):
        r[in.d] = float_min_max(false, f64_of(r[in.a]), f64_of(r[in.b]), in.flags);
        break;
      case key(kFMax, kF64):
        r[in.d] = float_min_max(true, f64_of(r[in.a]), f64_of(r[in.b]), in.flags);
        break;
      // abs/neg act on the sign bit (a NaN keeps its payload); .ftz first flushes subnormals.
      case key(kFAbs, kF32):
        r[in.d] = bits_of(ftz_in(f32_of(r[in.a]), in.flags)) & 0x7fffffffu;
        break;
      case key(kFNeg, kF32):
        r[in.d] = bits_of(ftz_in(f32_of(r[in.a]), in.flags)) ^ 0x80000000u;
        break;
      case key(kFAbs, kF64):
        r[in.d] = r[in.a] & 0x7fffffffffffffffull;
        break;
      case key(kFNeg, kF64):
        r[in.d] = r[in.a] ^ 0x8000000000000000ull;
        break;

      // Compare and select.
      case key(kSetp, kU16):
      case key(kSetp, kS16):
      case key(kSetp, kU32):
      case key(kSetp, kS32):
      case key(kSetp, kU64):
      case key(kSetp, kS64):
      case key(kSetp, kF32):
      case key(kSetp, kF64): {
        bool p;
        switch (in.op & 31) {
          case kU16:
            p = int_compare(in.ty2, get<uint16_t>(r[in.a]), get<uint16_t>(r[in.b]));
            break;
          case kS16:
            p = int_compare(in.ty2, get<int16_t>(r[in.a]), get<int16_t>(r[in.b]));
            break;
          case kU32:
            p = int_compare(in.ty2, get<uint32_t>(r[in.a]), get<uint32_t>(r[in.b]));
            break;
          case kS32:
            p = int_compare(in.ty2, get<int32_t>(r[in.a]), get<int32_t>(r[in.b]));
            break;
          case kU64:
            p = int_compare(in.ty2, r[in.a], r[in.b]);
            break;
          case kS64:
            p = int_compare(in.ty2, get<int64_t>(r[in.a]), get<int64_t>(r[in.b]));
            break;
          case kF32:
            p = float_compare(in.ty2, ftz_in(f32_of(r[in.a]), in.flags),
                              ftz_in(f32_of(r[in.b]), in.flags));
            break;
          default:
            p = float_compare(in.ty2, f64_of(r[in.a]), f64_of(r[in.b]));
            break;
        }
        r[in.d] = p;
        if (in.flags & kSecondDest) r[in.e] = !p;
        break;
      }
      case key(kSelp, kU16):
        r[in.d] = (r[in.c] ? r[in.a] : r[in.b]) & 0xffffu;
        break;
      case key(kSelp, kU32):
      case key(kSelp, kF32):
        r[in.d] = (r[in.c] ? r[in.a] : r[in.b]) & 0xffffffffu;
        break;
      case key(kSelp, kU64):
      case key(kSelp, kF64):
        r[in.d] = r[in.c] ? r[in.a] : r[in.b];
        break;
      case key(kMov, kPred):
      case key(kMov, kU64):
      case key(kMov, kF64):
        r[in.d] = r[in.a];
        break;
      case key(kMov, kU32):
      case key(kMov, kF32):
        r[in.d] = r[in.a] & 0xffffffffu;
        break;
      case key(kMov, kU16):
        r[in.d] = r[in.a] & 0xffffu;
        break;
      case key(kMov, kU8):
        r[in.d] = r[in.a] & 0xffu;
        break;
      case key(kPack2, kU64):
        r[in.d] = (r[in.a] & 0xffffffffu) | (r[in.b] << 32);
        break;
      case key(kPack2, kU32):
        r[in.d] = (r[in.a] & 0xffffu) | ((r[in.b] & 0xffffu) << 16);
        break;
      case key(kUnpack2, kU64): {
        uint64_t v = r[in.a];  // read first: a destination may be the source
        r[in.d] = v & 0xffffffffu;
        r[in.e] = v >> 32;
        break;
      }
      case key(kUnpack2, kU32): {
        uint64_t v = r[in.a];
        r[in.d] = v & 0xffffu;
        r[in.e] = (v >> 16) & 0xffffu;
        break;
      }

      // Conversions.
      case key(kCvtII, kU8):
      case key(kCvtII, kS8):
      case key(kCvtII, kU16):
      case key(kCvtII, kS16):
      case key(kCvtII, kU32):
      case key(kCvtII, kS32):
      case key(kCvtII, kU64):
      case key(kCvtII, kS64): {
        Ty st = static_cast<Ty>(in.ty2), dt = static_cast<Ty>(in.op & 31);
        int sb = ty_bits(st), db = ty_bits(dt);
        uint64_t raw = r[in.a] & width_mask(sb);
        if (ty_signed(st) && sb < 64 && ((raw >> (sb - 1)) & 1)) raw |= ~width_mask(sb);
        Int128 v = ty_signed(st) ? static_cast<Int128>(static_cast<int64_t>(raw))
                                 : static_cast<Int128>(raw);
        if (in.flags & kSat) {
          Int128 lo = ty_signed(dt) ? -(static_cast<Int128>(1) << (db - 1)) : 0;
          Int128 hi = ty_signed(dt) ? (static_cast<Int128>(1) << (db - 1)) - 1
                                    : (static_cast<Int128>(1) << db) - 1;
          v = v < lo ? lo : v > hi ? hi : v;
        }
        // A signed destination narrower than its register is sign-extended into it.
        uint64_t out = static_cast<uint64_t>(v) & width_mask(db);
        if (ty_signed(dt) && db < 64 && ((out >> (db - 1)) & 1)) out |= ~width_mask(db);
        r[in.d] = out & width_mask(in.reg_bits);
        break;
      }
      case key(kCvtIF, kF16):
      case key(kCvtIF, kBF16):
      case key(kCvtIF, kF32):
      case key(kCvtIF, kF64): {
        Ty st = static_cast<Ty>(in.ty2), dt = static_cast<Ty>(in.op & 31);
        int sb = ty_bits(st);
        uint64_t raw = r[in.a] & width_mask(sb);
        bool neg = ty_signed(st) && ((raw >> (sb - 1)) & 1);
        uint64_t sext = neg ? (raw | ~width_mask(sb)) : raw;  // the source's 64-bit value
        uint64_t mag = neg ? 0 - sext : raw;
        if (dt == kF64) {
          double v;
          if (mag < (1ull << 53) || in.rnd == kRn) {
            // Exact, or rounded to nearest by the host's conversion.
            v = ty_signed(st) ? static_cast<double>(static_cast<int64_t>(sext))
                              : static_cast<double>(raw);
          } else {
            ScopedRounding mode(in.rnd);
            if (ty_signed(st)) {
              volatile int64_t sv = static_cast<int64_t>(sext);
              volatile double d = static_cast<double>(sv);
              v = d;
            } else {
              volatile uint64_t uv = raw;
              volatile double d = static_cast<double>(uv);
              v = d;
            }
          }
          r[in.d] = float_result(v, in.flags);
        } else {
          double v = int_to_double_sticky(mag);
          r[in.d] = to_float_type(neg ? -v : v, dt, in.rnd, in.flags);
        }
        break;
      }
      case key(kCvtFI, kU8):
      case key(kCvtFI, kS8):
      case key(kCvtFI, kU16):
      case key(kCvtFI, kS16):
      case key(kCvtFI, kU32):
      case key(kCvtFI, kS32):
      case key(kCvtFI, kU64):
      case key(kCvtFI, kS64): {
        Ty st = static_cast<Ty>(in.ty2), dt = static_cast<Ty>(in.op & 31);
        uint64_t v = float_to_int(float_value(r[in.a], st, in.flags), in.rnd, dt);
        int db = ty_bits(dt);
        if (ty_signed(dt) && db < 64 && ((v >> (db - 1)) & 1)) v |= ~width_mask(db);
        r[in.d] = v & width_mask(in.reg_bits);
        break;
      }
      case key(kCvtFF, kF16):
      case key(kCvtFF, kBF16):
      case key(kCvtFF, kF32):
      case key(kCvtFF, kF64): {
        Ty st = static_cast<Ty>(in.ty2), dt = static_cast<Ty>(in.op & 31);
        double x = float_value(r[in.a], st, in.flags);
        if (in.rnd >= kRni) {
          x = in.rnd == kRni   ? std::nearbyint(x)
              : in.rnd == kRzi ? std::trunc(x)
              : in.rnd == kRmi ? std::floor(x)
                               : std::ceil(x);
        }
        uint8_t rnd = in.rnd >= kRni || in.rnd == kRndNone ? static_cast<uint8_t>(kRn)
                                                           : in.rnd;  // exact when not narrowing
        r[in.d] = to_float_type(x, dt, rnd, in.flags);
        break;
      }

      // Memory.
      case key(kLdParam, kU8):
      case key(kLdParam, kS8):
      case key(kLdParam, kU16):
      case key(kLdParam, kS16):
      case key(kLdParam, kU32):
      case key(kLdParam, kS32):
      case key(kLdParam, kF32):
      case key(kLdParam, kU64):
      case key(kLdParam, kS64):
      case key(kLdParam, kF64): {
        int bits = ty_bits(static_cast<Ty>(in.op & 31));
        uint64_t raw = 0;
        std::memcpy(&raw, params + in.imm, static_cast<size_t>(bits / 8));
        r[in.d] = extend_loaded(raw, bits, in.flags & kSignExt, in.reg_bits);
        break;
      }
      case key(kStParam, kU8):
      case key(kStParam, kS8):
      case key(kStParam, kU16):
      case key(kStParam, kS16):
      case key(kStParam, kU32):
      case key(kStParam, kS32):
      case key(kStParam, kF32):
      case key(kStParam, kU64):
      case key(kStParam, kS64):
      case key(kStParam, kF64): {
        int bits = ty_bits(static_cast<Ty>(in.op & 31));
        uint64_t v = r[in.b];
        std::memcpy(params + in.imm, &v, static_cast<size_t>(bits / 8));
        break;
      }
      case key(kLdGlobal, kU8):
      case key(kLdGlobal, kS8):
      case key(kLdGlobal, kU16):
      case key(kLdGlobal, kS16):
      case key(kLdGlobal, kU32):
      case key(kLdGlobal, kS32):
      case key(kLdGlobal, kF32):
      case key(kLdGlobal, kU64):
      case key(kLdGlobal, kS64):
      case key(kLdGlobal, kF64): {
        int bits = ty_bits(static_cast<Ty>(in.op & 31));
        size_t bytes = static_cast<size_t>(bits / 8);
        uint64_t address = r[in.a] + static_cast<uint64_t>(in.imm);
        // A vector access is one access of count x bytes, aligned to its whole size.
        if (!global_access(cx, address, bytes * in.count, false, &why)) {
          cx.executed += executed;
          return fail(cx, f, pc, why);
        }
        const uint8_t* p = reinterpret_cast<const uint8_t*>(static_cast<uintptr_t>(address));
        for (int k = 0; k < in.count; ++k) {
          uint64_t raw = 0;
          std::memcpy(&raw, p + k * bytes, bytes);
          r[in.count == 1 ? in.d : in.v[k]] =
              extend_loaded(raw, bits, in.flags & kSignExt, in.reg_bits);
        }
        break;
      }
      case key(kStGlobal, kU8):
      case key(kStGlobal, kS8):
      case key(kStGlobal, kU16):
      case key(kStGlobal, kS16):
      case key(kStGlobal, kU32):
      case key(kStGlobal, kS32):
      case key(kStGlobal, kF32):
      case key(kStGlobal, kU64):
      case key(kStGlobal, kS64):
      case key(kStGlobal, kF64): {
        int bits = ty_bits(static_cast<Ty>(in.op & 31));
        size_t bytes = static_cast<size_t>(bits / 8);
        uint64_t address = r[in.a] + static_cast<uint64_t>(in.imm);
        if (!global_access(cx, address, bytes * in.count, true, &why)) {
          cx.executed += executed;
          return fail(cx, f, pc, why);
        }
        uint8_t* p = reinterpret_cast<uint8_t*>(static_cast<uintptr_t>(address));
        for (int k = 0; k < in.count; ++k) {
          uint64_t v = r[in.count == 1 ? in.b : in.v[k]];
          std::memcpy(p + k * bytes, &v, bytes);
        }
        break;
      }

      // Control.
      case key(kBra, kPred):
        if (executed > kMaxThreadInstructions) {
          cx.executed += executed;
          return fail(cx, f, pc, "over 2^32 instructions in one thread (an endless loop?)");
        }
        pc = static_cast<size_t>(in.imm);
        continue;
      case key(kCall, kPred): {
        cx.executed += executed;
        executed = 0;
        Status s = call(cx, f, pc, depth);
        if (s != Status::kReturn) return s;
        // The callee may have grown the frames' storage: reload this frame's pointers.
        r = cx.frames[depth].regs.data();
        params = cx.frames[depth].params.data();
        break;
      }
      case key(kRet, kPred):
        cx.executed += executed;
        return Status::kReturn;
      case key(kExit, kPred):
        cx.executed += executed;
        return Status::kExit;
      case key(kTrap, kPred):
        cx.executed += executed;
        return fail(cx, f, pc, "trap");
      default:
        cx.executed += executed;
        return fail(cx, f, pc, "no implementation for this form (decoder and executor disagree)");
    }
    ++pc;
  }
}

}  // namespace

bool execute(const Program& program, uint32_t entry, Dim3 grid, Dim3 block,
             const std::vector<const void*>& params, MemoryChecker& memory, std::string* error,
             uint64_t* instructions) {
  const Function& f = program.functions[entry];
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0) {
    *error = f.name + ": a grid or block dimension is 0";
    return false;
  }
  uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads > 1024) {
    *error = f.name + ": " + std::to_string(threads) + " threads per block (over 1024)";
    return false;
  }
  if (f.maxntid[0]) {
    uint64_t limit = uint64_t{f.maxntid[0]} * f.maxntid[1] * f.maxntid[2];
    bool ok = f.reqntid
                  ? (block.x == f.maxntid[0] && block.y == f.maxntid[1] && block.z == f.maxntid[2])
                  : threads <= limit;
    if (!ok) {
      *error = f.name + ": block size outside its .maxntid/.reqntid";
      return false;
    }
  }
  if (params.size() != f.params.size()) {
    *error = f.name + ": " + std::to_string(params.size()) + " parameters given, " +
             std::to_string(f.params.size()) + " declared";
    return false;
  }
  Ctx cx;
  cx.prog = &program;
  cx.memory = &memory;
  cx.error = error;
  cx.entry_name = f.name;
  cx.frames.resize(kMaxCallDepth);
  Frame& top = cx.frames[0];
  top.params.assign(f.param_bytes, 0);
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i]) {
      *error = f.name + ": parameter " + std::to_string(i) + " is null";
      return false;
    }
    std::memcpy(&top.params[f.params[i].offset], params[i], f.params[i].size);
  }
  // The kernel runs in the default floating-point environment (round to nearest, no flush to
  // zero) whatever the caller's is, and leaves the caller's as it was.
  std::fenv_t saved;
  std::fegetenv(&saved);
  std::fesetenv(FE_DFL_ENV);
  uint64_t* s = cx.specials;
  s[kSlotNtid] = block.x;
  s[kSlotNtid + 1] = block.y;
  s[kSlotNtid + 2] = block.z;
  s[kSlotNctaid] = grid.x;
  s[kSlotNctaid + 1] = grid.y;
  s[kSlotNctaid + 2] = grid.z;
  bool ok = true;
  for (uint32_t bz = 0; ok && bz < grid.z; ++bz) {
    for (uint32_t by = 0; ok && by < grid.y; ++by) {
      for (uint32_t bx = 0; ok && bx < grid.x; ++bx) {
        s[kSlotCtaid] = bx;
        s[kSlotCtaid + 1] = by;
        s[kSlotCtaid + 2] = bz;
        for (uint32_t tz = 0; ok && tz < block.z; ++tz) {
          for (uint32_t ty = 0; ok && ty < block.y; ++ty) {
            for (uint32_t tx = 0; ok && tx < block.x; ++tx) {
              s[kSlotTid] = tx;
              s[kSlotTid + 1] = ty;
              s[kSlotTid + 2] = tz;
              // Every thread starts from the same registers (zero), not the last thread's.
              top.regs = f.init;
              std::copy(s, s + 12, top.regs.begin());
              ok = run(cx, entry, 0) != Status::kError;
            }
          }
        }
      }
    }
  }
  std::fesetenv(&saved);
  *instructions += cx.executed;
  return ok;
}

}  // namespace fakecuda::ptx
