// The PTX interpreter's instruction semantics, on small hand-written modules.
//
// Every expected value here comes from PTX's definition (the PTX ISA's instruction pages) and
// IEEE 754 arithmetic worked by hand in the comments, never from the interpreter; the f16/bf16
// conversions are also compared with the reference's bit-exact converters (tests/reference/,
// themselves checked against F16C by embag_test_half_float). Every module is also assembled by
// ptxas (HandWrittenModulesAssemble), so each is PTX a GPU would take. The tests are tables:
// one row a case, with the reason in its name.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>

#include "ptx_interpreter.h"
#include "ptx_program.h"
#include "ptx_test_support.h"
#include "reference/half_float.h"

namespace fakecuda {
namespace {

using testing_support::BufferChecker;

// One operation under test: `body` reads %r2, %r3 (width 32) or %rd10, %rd11 (width 64) and
// leaves its result in %r4 or %rd12; each row {a, b, expected} is one thread.
struct Case {
  std::string name;
  int width;
  std::string body;
  std::vector<std::array<uint64_t, 3>> rows;
  std::string target = "sm_86";
  uint32_t ulps = 0;  // allowed distance for the approximate instructions (their documented bound)
};

std::string module_for(const std::string& body, int width, const std::string& target) {
  std::string w = std::to_string(width);
  std::string in_a = width == 32 ? "%r2" : "%rd10", in_b = width == 32 ? "%r3" : "%rd11";
  std::string out = width == 32 ? "%r4" : "%rd12";
  return ".version 7.8\n.target " + target +
         "\n.address_size 64\n\n"
         ".visible .entry k(.param .u64 k_a, .param .u64 k_b, .param .u64 k_out)\n{\n"
         "  .reg .pred %p<8>;\n  .reg .b16 %rs<8>;\n  .reg .b32 %r<16>;\n  .reg .b64 %rd<16>;\n"
         "  ld.param.u64 %rd1, [k_a];\n  ld.param.u64 %rd2, [k_b];\n  ld.param.u64 %rd3, [k_out];\n"
         "  cvta.to.global.u64 %rd1, %rd1;\n  cvta.to.global.u64 %rd2, %rd2;\n"
         "  cvta.to.global.u64 %rd3, %rd3;\n  mov.u32 %r1, %tid.x;\n"
         "  mul.wide.u32 %rd4, %r1, " +
         std::to_string(width / 8) +
         ";\n  add.s64 %rd5, %rd1, %rd4;\n  add.s64 %rd6, %rd2, %rd4;\n  add.s64 %rd7, %rd3, "
         "%rd4;\n"
         "  ld.global.b" +
         w + " " + in_a + ", [%rd5];\n  ld.global.b" + w + " " + in_b + ", [%rd6];\n" + body +
         "\n  st.global.b" + w + " [%rd7], " + out + ";\n  ret;\n}\n";
}

uint64_t ulp_distance(uint64_t x, uint64_t y, int width) {
  // Monotonic integer images of the floats, so adjacent floats differ by one.
  auto key = [width](uint64_t v) -> int64_t {
    if (width == 32) {
      int32_t s = static_cast<int32_t>(static_cast<uint32_t>(v));
      return s < 0 ? -static_cast<int64_t>(s & 0x7fffffff) : s;
    }
    int64_t s = static_cast<int64_t>(v);
    return s < 0 ? -(s & 0x7fffffffffffffffLL) : s;
  };
  int64_t d = key(x) - key(y);
  return static_cast<uint64_t>(d < 0 ? -d : d);
}

// Runs a case and compares every row; the failure names the row and both bit patterns.
::testing::AssertionResult check_case(const Case& c) {
  std::string error;
  auto module = PtxModule::parse(module_for(c.body, c.width, c.target), &error);
  if (!module) return ::testing::AssertionFailure() << c.name << ": parse failed: " << error;
  size_t n = c.rows.size();
  std::vector<uint64_t> a64(n), b64(n), out64(n, 0xdeadbeefdeadbeefull);
  std::vector<uint32_t> a32(n), b32(n), out32(n, 0xdeadbeefu);
  for (size_t i = 0; i < n; ++i) {
    a64[i] = c.rows[i][0];
    b64[i] = c.rows[i][1];
    a32[i] = static_cast<uint32_t>(c.rows[i][0]);
    b32[i] = static_cast<uint32_t>(c.rows[i][1]);
  }
  BufferChecker memory;
  const void *pa, *pb, *po;
  if (c.width == 32) {
    memory.add(a32);
    memory.add(b32);
    memory.add(out32);
    pa = a32.data();
    pb = b32.data();
    po = out32.data();
  } else {
    memory.add(a64);
    memory.add(b64);
    memory.add(out64);
    pa = a64.data();
    pb = b64.data();
    po = out64.data();
  }
  std::vector<const void*> params = {&pa, &pb, &po};
  Dim3 grid, block;
  block.x = static_cast<uint32_t>(n);
  if (!module->launch("k", grid, block, params, memory, &error)) {
    return ::testing::AssertionFailure() << c.name << ": launch failed: " << error;
  }
  for (size_t i = 0; i < n; ++i) {
    uint64_t got = c.width == 32 ? out32[i] : out64[i];
    uint64_t want = c.rows[i][2];
    bool ok = c.ulps ? ulp_distance(got, want, c.width) <= c.ulps : got == want;
    if (!ok) {
      char buf[256];
      std::snprintf(buf, sizeof buf, "%s row %zu (a=0x%llx b=0x%llx): got 0x%llx, want 0x%llx",
                    c.name.c_str(), i, static_cast<unsigned long long>(c.rows[i][0]),
                    static_cast<unsigned long long>(c.rows[i][1]),
                    static_cast<unsigned long long>(got), static_cast<unsigned long long>(want));
      return ::testing::AssertionFailure() << buf;
    }
  }
  return ::testing::AssertionSuccess();
}

constexpr uint64_t kNaN32 = 0x7fc00000, kOne32 = 0x3f800000, kTwo32 = 0x40000000;
constexpr uint64_t kCanon32 = 0x7fffffff;

// ---- rounding modes ------------------------------------------------------------------------
// (1 + 3u) * 1.25 = 1.25 + 3.75u with u = 2^-23, the ulp on [1, 2): nearest and up give
// 1.25 + 4u (0x3fa00004), toward zero and down 1.25 + 3u (0x3fa00003).
// 1 + 2^-30 lies strictly between 1 and 1 + u: only .rp leaves 1.
const std::vector<Case>& rounding_cases() {
  static const std::vector<Case> cases = {
      {"mul.rn.f32 rounds to nearest",
       32,
       "mul.rn.f32 %r4, %r2, %r3;",
       {{0x3f800003, 0x3fa00000, 0x3fa00004}}},
      {"mul.rz.f32 truncates",
       32,
       "mul.rz.f32 %r4, %r2, %r3;",
       {{0x3f800003, 0x3fa00000, 0x3fa00003}}},
      {"mul.rm.f32 rounds down",
       32,
       "mul.rm.f32 %r4, %r2, %r3;",
       {{0x3f800003, 0x3fa00000, 0x3fa00003}, {0xbf800003, 0x3fa00000, 0xbfa00004}}},
      {"mul.rp.f32 rounds up",
       32,
       "mul.rp.f32 %r4, %r2, %r3;",
       {{0x3f800003, 0x3fa00000, 0x3fa00004}, {0xbf800003, 0x3fa00000, 0xbfa00003}}},
      {"add.rn.f32", 32, "add.rn.f32 %r4, %r2, %r3;", {{kOne32, 0x30800000, kOne32}}},
      {"add.rp.f32 goes up past a tiny addend",
       32,
       "add.rp.f32 %r4, %r2, %r3;",
       {{kOne32, 0x30800000, 0x3f800001}, {0xbf800000, 0xb0800000, 0xbf800000}}},
      {"add.rm.f32 goes down past a tiny negative addend",
       32,
       "add.rm.f32 %r4, %r2, %r3;",
       {{kOne32, 0x30800000, kOne32}, {0xbf800000, 0xb0800000, 0xbf800001}}},
      {"add.rz.f32", 32, "add.rz.f32 %r4, %r2, %r3;", {{0xbf800000, 0xb0800000, 0xbf800000}}},
      // x - x is +0 in every mode but toward minus infinity, where it is -0.
      {"sub.rm.f32 of equal values is -0",
       32,
       "sub.rm.f32 %r4, %r2, %r3;",
       {{kOne32, kOne32, 0x80000000}}},
      {"sub.rn.f32 of equal values is +0", 32, "sub.rn.f32 %r4, %r2, %r3;", {{kOne32, kOne32, 0}}},
      // 1/3 = 0x3eaaaaaa.aaa...: nearest rounds up, toward zero does not.
      {"div.rn.f32", 32, "div.rn.f32 %r4, %r2, %r3;", {{kOne32, 0x40400000, 0x3eaaaaab}}},
      {"div.rz.f32", 32, "div.rz.f32 %r4, %r2, %r3;", {{kOne32, 0x40400000, 0x3eaaaaaa}}},
      // sqrt(2) = 1.41421356...; 0x3fb504f3 = 1.41421353... is nearest and below it.
      {"sqrt.rn.f32", 32, "sqrt.rn.f32 %r4, %r2;", {{kTwo32, 0, 0x3fb504f3}}},
      {"sqrt.rp.f32", 32, "sqrt.rp.f32 %r4, %r2;", {{kTwo32, 0, 0x3fb504f4}}},
      // fma rounds once: (1 + u)(1 - u) - 1 = -2^-46 exactly. mul.rn then add.rn round twice: the
      // product 1 - 2^-46 rounds to 1, and 1 - 1 = 0. A fused mul.rn/add.rn pair would give -2^-46.
      {"fma.rn.f32 is fused",
       32,
       "fma.rn.f32 %r4, %r2, %r3, 0fBF800000;",
       {{0x3f800001, 0x3f7ffffe, 0xa8800000}}},
      {"mul.rn + add.rn are never fused",
       32,
       "mul.rn.f32 %r5, %r2, %r3;\n  add.rn.f32 %r4, %r5, 0fBF800000;",
       {{0x3f800001, 0x3f7ffffe, 0}}},
      {"plain mul + add are not fused either",
       32,
       "mul.f32 %r5, %r2, %r3;\n  add.f32 %r4, %r5, 0fBF800000;",
       {{0x3f800001, 0x3f7ffffe, 0}}},
      // Double precision: 1 + 2^-60 and (1 + 2^-52)(1 - 2^-52) - 1 = -2^-104.
      {"add.rz.f64",
       64,
       "add.rz.f64 %rd12, %rd10, %rd11;",
       {{0x3ff0000000000000, 0x3c30000000000000, 0x3ff0000000000000}}},
      {"add.rp.f64",
       64,
       "add.rp.f64 %rd12, %rd10, %rd11;",
       {{0x3ff0000000000000, 0x3c30000000000000, 0x3ff0000000000001}}},
      {"fma.rn.f64 is fused",
       64,
       "fma.rn.f64 %rd12, %rd10, %rd11, 0dBFF0000000000000;",
       {{0x3ff0000000000001, 0x3fefffffffffffff - 1, 0xb970000000000000}}},
      {"mul.rn.f64 + add.rn.f64 are not",
       64,
       "mul.rn.f64 %rd13, %rd10, %rd11;\n  add.rn.f64 %rd12, %rd13, 0dBFF0000000000000;",
       {{0x3ff0000000000001, 0x3fefffffffffffff - 1, 0}}},
      {"fma.rz.f32",
       32,
       "fma.rz.f32 %r4, %r2, %r3, 0f00000000;",
       {{0x3f800003, 0x3fa00000, 0x3fa00003}}},
  };
  return cases;
}

// ---- cvt -----------------------------------------------------------------------------------
const std::vector<Case>& cvt_cases() {
  static const std::vector<Case> cases = {
      // Float to integer: NaN -> 0, clamped to the destination's range. 3e9 = 0x4f32d05e.
      {"cvt.rzi.s32.f32 NaN and out of range",
       32,
       "cvt.rzi.s32.f32 %r4, %r2;",
       {{kNaN32, 0, 0},
        {0x4f32d05e, 0, 0x7fffffff},
        {0xcf32d05e, 0, 0x80000000},
        {0xc0200000, 0, 0xfffffffe}}},
      {"cvt.rzi.u32.f32 of a negative is 0",
       32,
       "cvt.rzi.u32.f32 %r4, %r2;",
       {{0xc0a00000, 0, 0}, {0x4f800000, 0, 0xffffffff}, {0x7f800000, 0, 0xffffffff}}},
      {"cvt.rni.s32.f32 ties to even",
       32,
       "cvt.rni.s32.f32 %r4, %r2;",
       {{0x40200000, 0, 2}, {0x40600000, 0, 4}, {0xc0200000, 0, 0xfffffffe}}},
      {"cvt.rmi.s32.f32 floors", 32, "cvt.rmi.s32.f32 %r4, %r2;", {{0xc0200000, 0, 0xfffffffd}}},
      {"cvt.rpi.s32.f32 ceils", 32, "cvt.rpi.s32.f32 %r4, %r2;", {{0x40066666, 0, 3}}},
      {"cvt.sat.f32.f32 clamps to [0, 1], NaN to 0",
       32,
       "cvt.sat.f32.f32 %r4, %r2;",
       {{kTwo32, 0, kOne32}, {0xbf800000, 0, 0}, {kNaN32, 0, 0}, {0x3f000000, 0, 0x3f000000}}},
      {"cvt.rni.f32.f32 ties to even", 32, "cvt.rni.f32.f32 %r4, %r2;", {{0x40200000, 0, kTwo32}}},
      {"cvt.rmi.f32.f32", 32, "cvt.rmi.f32.f32 %r4, %r2;", {{0xbf000000, 0, 0xbf800000}}},
      {"cvt.rzi.f32.f32 keeps the sign of zero",
       32,
       "cvt.rzi.f32.f32 %r4, %r2;",
       {{0xbf000000, 0, 0x80000000}}},
      // Integer narrowing: .sat clamps, plain truncates; widening sign- or zero-extends.
      {"cvt.sat.s8.s32",
       32,
       "cvt.sat.s8.s32 %rs1, %r2;\n  cvt.s32.s16 %r4, %rs1;",
       {{300, 0, 127}, {static_cast<uint32_t>(-300), 0, 0xffffff80}, {5, 0, 5}}},
      {"cvt.sat.u8.s32",
       32,
       "cvt.sat.u8.s32 %rs1, %r2;\n  cvt.u32.u16 %r4, %rs1;",
       {{static_cast<uint32_t>(-5), 0, 0}, {300, 0, 255}}},
      {"cvt.u8.s32 truncates",
       32,
       "cvt.u8.s32 %rs1, %r2;\n  cvt.u32.u16 %r4, %rs1;",
       {{300, 0, 44}}},
      {"cvt.s32.s16 sign-extends",
       32,
       "cvt.u16.u32 %rs1, %r2;\n  cvt.s32.s16 %r4, %rs1;",
       {{0x18000, 0, 0xffff8000}}},
      // Integer to float: 16777217 = 2^24 + 1 is a tie (even: 2^24); 16777219 a tie (even: +4).
      {"cvt.rn.f32.s32",
       32,
       "cvt.rn.f32.s32 %r4, %r2;",
       {{16777217, 0, 0x4b800000}, {16777219, 0, 0x4b800002}}},
      {"cvt.rz.f32.s32", 32, "cvt.rz.f32.s32 %r4, %r2;", {{16777219, 0, 0x4b800001}}},
      {"cvt.rp.f32.s32", 32, "cvt.rp.f32.s32 %r4, %r2;", {{16777217, 0, 0x4b800001}}},
      {"cvt.rn.f32.u32", 32, "cvt.rn.f32.u32 %r4, %r2;", {{0xffffffff, 0, 0x4f800000}}},
      {"cvt.rz.f32.u32", 32, "cvt.rz.f32.u32 %r4, %r2;", {{0xffffffff, 0, 0x4f7fffff}}},
      // 2^62 + 2^38 + 1 is just above the midpoint of two floats: going through double first
      // would round it to the midpoint and then to even (2^62); the right answer is 2^62 + 2^39.
      {"cvt.rn.f32.s64 rounds once",
       64,
       "cvt.rn.f32.s64 %r5, %rd10;\n  cvt.u64.u32 %rd12, %r5;",
       {{0x4000004000000001, 0, 0x5e800001}}},
      {"cvt.rp.f64.s64",
       64,
       "cvt.rp.f64.s64 %rd12, %rd10;",
       {{0x4000000000000001, 0, 0x43d0000000000001}}},
      {"cvt.rn.f64.s64",
       64,
       "cvt.rn.f64.s64 %rd12, %rd10;",
       {{0x4000000000000001, 0, 0x43d0000000000000}}},
      // f64 -> f32: 1 + 2^-24 + 2^-40 is above the midpoint of 1 and 1 + 2^-23.
      {"cvt.rn.f32.f64",
       64,
       "cvt.rn.f32.f64 %r5, %rd10;\n  cvt.u64.u32 %rd12, %r5;",
       {{0x3ff0000010001000, 0, 0x3f800001}, {0x7ff8000000000000, 0, 0x7fffffff}}},
      {"cvt.rz.f32.f64",
       64,
       "cvt.rz.f32.f64 %r5, %rd10;\n  cvt.u64.u32 %rd12, %r5;",
       {{0x3ff0000010001000, 0, 0x3f800000}}},
      {"cvt.rn.f32.f64 overflows to infinity",
       64,
       "cvt.rn.f32.f64 %r5, %rd10;\n  cvt.u64.u32 %rd12, %r5;",
       {{0x47f0000000000000, 0, 0x7f800000}}},
      {"cvt.rz.f32.f64 overflows to the largest float",
       64,
       "cvt.rz.f32.f64 %r5, %rd10;\n  cvt.u64.u32 %rd12, %r5;",
       {{0x47f0000000000000, 0, 0x7f7fffff}}},
      {"cvt.rni.f64.f64",
       64,
       "cvt.rni.f64.f64 %rd12, %rd10;",
       {{0x4004000000000000, 0, 0x4000000000000000}}},
      {"cvt.rmi.f64.f64",
       64,
       "cvt.rmi.f64.f64 %rd12, %rd10;",
       {{0xc004000000000000, 0, 0xc008000000000000}}},
      {"cvt.rzi.s32.f64 clamps",
       64,
       "cvt.rzi.s32.f64 %r5, %rd10;\n  cvt.u64.u32 %rd12, %r5;",
       {{0xc202a05f20000000, 0, 0x80000000}}},
      {"cvt.rzi.s64.f64 clamps",
       64,
       "cvt.rzi.s64.f64 %rd12, %rd10;",
       {{0x43e158e460913d00, 0, 0x7fffffffffffffff}, {0x7ff8000000000000, 0, 0}}},
      {"cvt.rzi.u64.f64 of a negative is 0",
       64,
       "cvt.rzi.u64.f64 %rd12, %rd10;",
       {{0xbff0000000000000, 0, 0}}},
      {"cvt.f64.f32 widens exactly",
       64,
       "cvt.u32.u64 %r5, %rd10;\n  cvt.f64.f32 %rd12, %r5;",
       {{0x3eaaaaab, 0, 0x3fd5555560000000}, {0x00000001, 0, 0x36a0000000000000}}},
      {"cvt.ftz.f64.f32 flushes a subnormal",
       64,
       "cvt.u32.u64 %r5, %rd10;\n  cvt.ftz.f64.f32 %rd12, %r5;",
       {{0x80000001, 0, 0x8000000000000000}}},
  };
  return cases;
}

// ---- f16 / bf16 ----------------------------------------------------------------------------
const std::vector<Case>& half_cases() {
  static const std::vector<Case> cases = {
      // 65504 is the largest half; 65520 the midpoint to the (absent) next value: ties go to
      // infinity under .rn. 2^-24 is the smallest subnormal; 2^-25 a tie with 0 (even);
      // 1 + 2^-11 a tie between 0x3c00 and 0x3c01 (even: 0x3c00), 1 + 3 * 2^-11 one between
      // 0x3c01 and 0x3c02 (even: 0x3c02). PTX's f16 NaN is 0x7fff.
      {"cvt.rn.f16.f32",
       32,
       "cvt.rn.f16.f32 %rs1, %r2;\n  cvt.u32.u16 %r4, %rs1;",
       {{kOne32, 0, 0x3c00},
        {0x477fe000, 0, 0x7bff},
        {0x477ff000, 0, 0x7c00},
        {0x33800000, 0, 0x0001},
        {0x33000000, 0, 0x0000},
        {0x33400000, 0, 0x0001},
        {0x3f801000, 0, 0x3c00},
        {0x3f803000, 0, 0x3c02},
        {0xc77ff000, 0, 0xfc00},
        {kNaN32, 0, 0x7fff}}},
      {"cvt.rz.f16.f32",
       32,
       "cvt.rz.f16.f32 %rs1, %r2;\n  cvt.u32.u16 %r4, %rs1;",
       {{0x477ff000, 0, 0x7bff}, {0xbf800800, 0, 0xbc00}, {0x7f800000, 0, 0x7c00}}},
      {"cvt.rm.f16.f32",
       32,
       "cvt.rm.f16.f32 %rs1, %r2;\n  cvt.u32.u16 %r4, %rs1;",
       {{0xbf800800, 0, 0xbc01}, {0x3f800800, 0, 0x3c00}, {0x477ff000, 0, 0x7bff}}},
      {"cvt.rp.f16.f32",
       32,
       "cvt.rp.f16.f32 %rs1, %r2;\n  cvt.u32.u16 %r4, %rs1;",
       {{0x3f800800, 0, 0x3c01}, {0x477ff000, 0, 0x7c00}, {0x00000001, 0, 0x0001}}},
      {"cvt.f32.f16",
       32,
       "cvt.u16.u32 %rs1, %r2;\n  cvt.f32.f16 %r4, %rs1;",
       {{0x0001, 0, 0x33800000},
        {0x7c00, 0, 0x7f800000},
        {0xfbff, 0, 0xc77fe000},
        {0x8000, 0, 0x80000000}}},
      // f64 -> f16 directly: 1 + 2^-11 + 2^-40 is above the tie, so rounds up; through f32 it
      // would be a tie and round to even.
      {"cvt.rn.f16.f64 rounds once",
       64,
       "cvt.rn.f16.f64 %rs1, %rd10;\n  cvt.u64.u16 %rd12, %rs1;",
       {{0x3ff0020000001000, 0, 0x3c01}}},
      {"cvt.rn.bf16.f32",
       32,
       "cvt.rn.bf16.f32 %rs1, %r2;\n  cvt.u32.u16 %r4, %rs1;",
       {{0x3f808000, 0, 0x3f80},
        {0x3f818000, 0, 0x3f82},
        {0x7f7fffff, 0, 0x7f80},
        {kNaN32, 0, 0x7fff}},
       "sm_80"},
      {"cvt.rz.bf16.f32",
       32,
       "cvt.rz.bf16.f32 %rs1, %r2;\n  cvt.u32.u16 %r4, %rs1;",
       {{0x7f7fffff, 0, 0x7f7f}, {0x3f80ffff, 0, 0x3f80}},
       "sm_80"},
      {"cvt.f32.bf16",
       32,
       "cvt.u16.u32 %rs1, %r2;\n  cvt.f32.bf16 %r4, %rs1;",
       {{0x3f80, 0, 0x3f800000}, {0x0001, 0, 0x00010000}, {0xff80, 0, 0xff800000}},
       "sm_90"},
  };
  return cases;
}

// ---- integers ------------------------------------------------------------------------------
const std::vector<Case>& integer_cases() {
  static const std::vector<Case> cases = {
      // Shift amounts are unsigned 32-bit and clamp: by the width or more gives 0 (shl, shr.u)
      // or the sign (shr.s).
      {"shl.b32 clamps",
       32,
       "shl.b32 %r4, %r2, %r3;",
       {{1, 31, 0x80000000}, {1, 32, 0}, {1, 33, 0}, {1, 0xffffffff, 0}}},
      {"shr.u32 clamps", 32, "shr.u32 %r4, %r2, %r3;", {{0x80000000, 31, 1}, {0x80000000, 32, 0}}},
      {"shr.s32 fills with the sign",
       32,
       "shr.s32 %r4, %r2, %r3;",
       {{0x80000000, 31, 0xffffffff},
        {0x80000000, 40, 0xffffffff},
        {0x40000000, 100, 0},
        {0xfffffff0, 2, 0xfffffffc}}},
      {"shl.b16 clamps at 16",
       32,
       "cvt.u16.u32 %rs1, %r2;\n  shl.b16 %rs2, %rs1, %r3;\n  cvt.u32.u16 %r4, %rs2;",
       {{1, 15, 0x8000}, {1, 16, 0}}},
      {"shl.b64 clamps at 64",
       64,
       "cvt.u32.u64 %r5, %rd11;\n  shl.b64 %rd12, %rd10, %r5;",
       {{1, 63, 0x8000000000000000}, {1, 64, 0}}},
      {"shr.s64",
       64,
       "cvt.u32.u64 %r5, %rd11;\n  shr.s64 %rd12, %rd10, %r5;",
       {{0x8000000000000000, 63, ~0ull}, {0x8000000000000000, 64, ~0ull}}},
      {"mul.wide.s32",
       64,
       "cvt.u32.u64 %r5, %rd10;\n  cvt.u32.u64 %r6, %rd11;\n  mul.wide.s32 %rd12, %r5, %r6;",
       {{0xfffffffe, 3, 0xfffffffffffffffa}}},
      {"mul.wide.u32",
       64,
       "cvt.u32.u64 %r5, %rd10;\n  cvt.u32.u64 %r6, %rd11;\n  mul.wide.u32 %rd12, %r5, %r6;",
       {{0xfffffffe, 3, 0x2fffffffa}}},
      {"mul.hi.u64", 64, "mul.hi.u64 %rd12, %rd10, %rd11;", {{~0ull, 2, 1}}},
      {"mul.hi.s64", 64, "mul.hi.s64 %rd12, %rd10, %rd11;", {{~0ull, 2, ~0ull}}},
      {"mul.lo.s32 wraps",
       32,
       "mul.lo.s32 %r4, %r2, %r3;",
       {{0x10000, 0x10000, 0}, {0xffffffff, 3, 0xfffffffd}}},
      {"mad.lo.s32", 32, "mad.lo.s32 %r4, %r2, %r3, 5;", {{3, 4, 17}}},
      {"mul.lo.s64",
       64,
       "mul.lo.s64 %rd12, %rd10, %rd11;",
       {{0x100000000, 0x100000001, 0x100000000}}},
      // Division by zero is unspecified in PTX: the fake gives all ones (see ptx_executor.cpp).
      {"div.s32",
       32,
       "div.s32 %r4, %r2, %r3;",
       {{static_cast<uint32_t>(-7), 2, static_cast<uint32_t>(-3)},
        {0x80000000, 0xffffffff, 0x80000000},
        {7, 0, 0xffffffff}}},
      {"div.u32", 32, "div.u32 %r4, %r2, %r3;", {{0xffffffff, 2, 0x7fffffff}}},
      {"rem.s32 takes the dividend's sign",
       32,
       "rem.s32 %r4, %r2, %r3;",
       {{static_cast<uint32_t>(-7), 3, static_cast<uint32_t>(-1)}}},
      {"min.s32 vs min.u32",
       32,
       "min.s32 %r5, %r2, %r3;\n  min.u32 %r6, %r2, %r3;\n  sub.s32 %r4, %r5, %r6;",
       {{0xffffffff, 1, 0xfffffffe}}},
      {"max.s32", 32, "max.s32 %r4, %r2, %r3;", {{0xffffffff, 1, 1}}},
      {"abs.s32 of INT_MIN wraps",
       32,
       "abs.s32 %r4, %r2;",
       {{0x80000000, 0, 0x80000000}, {0xfffffffb, 0, 5}}},
      {"neg.s32", 32, "neg.s32 %r4, %r2;", {{5, 0, 0xfffffffb}}},
      {"bfe.u32",
       32,
       "bfe.u32 %r4, %r2, %r3, 8;",
       {{0xf0f0f0f0, 4, 0x0f}, {0xf0f0f0f0, 28, 0x0f}, {0xffffffff, 32, 0}}},
      {"bfe.s32 sign-extends the field",
       32,
       "bfe.s32 %r4, %r2, %r3, 4;",
       {{0x00000f00, 8, 0xffffffff}, {0x00000700, 8, 7}}},
      {"popc.b32", 32, "popc.b32 %r4, %r2;", {{0xf0f0, 0, 8}}},
      {"clz.b32", 32, "clz.b32 %r4, %r2;", {{1, 0, 31}, {0, 0, 32}}},
      {"and/or/xor/not",
       32,
       "and.b32 %r5, %r2, %r3;\n  or.b32 %r6, %r2, %r3;\n  xor.b32 %r7, %r5, %r6;\n  not.b32 %r4, "
       "%r7;",
       {{0xff00ff00, 0x0ff00ff0, ~0xf0f0f0f0u & 0xffffffffu}}},
      {"setp.lt.u32 vs setp.lt.s32",
       32,
       "setp.lt.u32 %p1, %r2, %r3;\n  setp.lt.s32 %p2, %r2, %r3;\n  selp.u32 %r5, 2, 0, %p1;\n  "
       "selp.u32 %r6, 1, 0, %p2;\n"
       "  or.b32 %r4, %r5, %r6;",
       {{0xffffffff, 1, 1}, {1, 0xffffffff, 2}}},
      {"setp p|q writes both",
       32,
       "setp.eq.s32 %p1|%p2, %r2, %r3;\n  selp.u32 %r5, 2, 0, %p1;\n  selp.u32 %r6, 1, 0, %p2;\n"
       "  or.b32 %r4, %r5, %r6;",
       {{3, 3, 2}, {3, 4, 1}}},
      {"predicate logic",
       32,
       "setp.ne.s32 %p1, %r2, 0;\n  setp.ne.s32 %p2, %r3, 0;\n  and.pred %p3, %p1, %p2;\n  or.pred "
       "%p4, %p1, %p2;\n"
       "  xor.pred %p5, %p1, %p2;\n  not.pred %p6, %p3;\n  selp.u32 %r5, 1, 0, %p3;\n  selp.u32 "
       "%r6, 2, 0, %p4;\n"
       "  selp.u32 %r7, 4, 0, %p5;\n  selp.u32 %r8, 8, 0, %p6;\n  or.b32 %r9, %r5, %r6;\n  or.b32 "
       "%r10, %r7, %r8;\n"
       "  or.b32 %r4, %r9, %r10;",
       {{1, 1, 3}, {1, 0, 14}, {0, 0, 8}}},
      {"mov.b64 pack and unpack",
       64,
       "mov.b64 {%r5, %r6}, %rd10;\n  mov.b64 %rd12, {%r6, %r5};",
       {{0x1122334455667788, 0, 0x5566778811223344}}},
      {"selp.b64 and guards",
       64,
       "setp.gt.u64 %p1, %rd10, %rd11;\n  selp.b64 %rd12, %rd10, %rd11, %p1;\n  @!%p1 add.s64 "
       "%rd12, %rd12, 1;",
       {{5, 3, 5}, {3, 5, 6}}},
  };
  return cases;
}

// ---- comparisons, min/max, ftz, approximations --------------------------------------------
const std::vector<Case>& float_cases() {
  auto setp = [](const std::string& cmp) {
    return "setp." + cmp + ".f32 %p1, %r2, %r3;\n  selp.u32 %r4, 1, 0, %p1;";
  };
  static const std::vector<Case> cases = {
      // Ordered comparisons are false with a NaN operand; unordered (...u) true; num/nan test it.
      {"setp.lt.f32 ordered",
       32,
       setp("lt"),
       {{kNaN32, kOne32, 0}, {kOne32, kTwo32, 1}, {kTwo32, kOne32, 0}}},
      {"setp.ltu.f32 unordered",
       32,
       setp("ltu"),
       {{kNaN32, kOne32, 1}, {kOne32, kTwo32, 1}, {kTwo32, kOne32, 0}}},
      {"setp.ne.f32 ordered",
       32,
       setp("ne"),
       {{kNaN32, kOne32, 0}, {kNaN32, kNaN32, 0}, {kOne32, kTwo32, 1}}},
      {"setp.neu.f32 unordered", 32, setp("neu"), {{kNaN32, kNaN32, 1}, {kOne32, kOne32, 0}}},
      {"setp.equ.f32",
       32,
       setp("equ"),
       {{kNaN32, kOne32, 1}, {kOne32, kOne32, 1}, {kOne32, kTwo32, 0}}},
      {"setp.geu.f32", 32, setp("geu"), {{kNaN32, kOne32, 1}, {kOne32, kTwo32, 0}}},
      {"setp.leu.f32", 32, setp("leu"), {{kNaN32, kOne32, 1}, {kTwo32, kOne32, 0}}},
      {"setp.gtu.f32", 32, setp("gtu"), {{kOne32, kNaN32, 1}, {kOne32, kTwo32, 0}}},
      {"setp.num.f32", 32, setp("num"), {{kNaN32, kOne32, 0}, {kOne32, kTwo32, 1}}},
      {"setp.nan.f32", 32, setp("nan"), {{kOne32, kNaN32, 1}, {kOne32, kTwo32, 0}}},
      {"setp.eq.f32 of zeros", 32, setp("eq"), {{0x80000000, 0, 1}}},
      // min/max: one NaN gives the other operand, two give the canonical NaN; -0 < +0.
      {"min.f32 NaN rules",
       32,
       "min.f32 %r4, %r2, %r3;",
       {{kNaN32, kTwo32, kTwo32},
        {kTwo32, kNaN32, kTwo32},
        {kNaN32, kNaN32, kCanon32},
        {0x80000000, 0, 0x80000000},
        {0, 0x80000000, 0x80000000},
        {kOne32, kTwo32, kOne32}}},
      {"max.f32 NaN rules",
       32,
       "max.f32 %r4, %r2, %r3;",
       {{kTwo32, kNaN32, kTwo32},
        {kNaN32, kNaN32, kCanon32},
        {0x80000000, 0, 0},
        {0, 0x80000000, 0}}},
      {"min.NaN.f32 propagates",
       32,
       "min.NaN.f32 %r4, %r2, %r3;",
       {{kNaN32, kTwo32, kCanon32}, {kOne32, kTwo32, kOne32}},
       "sm_80"},
      {"max.f64 NaN rules",
       64,
       "max.f64 %rd12, %rd10, %rd11;",
       {{0x7ff8000000000000, 0x4000000000000000, 0x4000000000000000}}},
      // .ftz flushes subnormal inputs and results; without it they are kept.
      {"add.f32 keeps subnormals", 32, "add.f32 %r4, %r2, %r3;", {{1, 0, 1}}},
      {"add.ftz.f32 flushes them",
       32,
       "add.ftz.f32 %r4, %r2, %r3;",
       {{1, 0, 0}, {0x80000001, 0, 0}}},
      {"mul.rn.f32 makes a subnormal",
       32,
       "mul.rn.f32 %r4, %r2, %r3;",
       {{0x00800000, 0x3f000000, 0x00400000}}},
      {"mul.rn.ftz.f32 flushes it",
       32,
       "mul.rn.ftz.f32 %r4, %r2, %r3;",
       {{0x00800000, 0x3f000000, 0}}},
      {"add.sat.f32",
       32,
       "add.sat.f32 %r4, %r2, %r3;",
       {{0x3f400000, 0x3f000000, kOne32}, {kNaN32, kOne32, 0}}},
      {"add.f32 NaN is canonical", 32, "add.f32 %r4, %r2, %r3;", {{0xffc00001, kOne32, kCanon32}}},
      {"abs/neg.f32 act on the sign",
       32,
       "abs.f32 %r5, %r2;\n  neg.f32 %r4, %r5;",
       {{0x3f800000, 0, 0xbf800000}}},
      {"abs.f64", 64, "abs.f64 %rd12, %rd10;", {{0xc000000000000000, 0, 0x4000000000000000}}},
      // Approximations, within their documented maximum errors (ulps): rcp.approx 1,
      // ex2.approx 2, lg2.approx and div.full 2.
      {"rcp.approx.ftz.f32",
       32,
       "rcp.approx.ftz.f32 %r4, %r2;",
       {{0x40400000, 0, 0x3eaaaaab}},
       "sm_86",
       1},
      {"rcp.rn.f32", 32, "rcp.rn.f32 %r4, %r2;", {{0x40400000, 0, 0x3eaaaaab}}},
      {"ex2.approx.f32",
       32,
       "ex2.approx.f32 %r4, %r2;",
       {{0x3f000000, 0, 0x3fb504f3}, {0x40400000, 0, 0x41000000}},
       "sm_86",
       2},
      {"lg2.approx.f32", 32, "lg2.approx.f32 %r4, %r2;", {{0x41000000, 0, 0x40400000}}, "sm_86", 2},
      {"div.full.f32",
       32,
       "div.full.f32 %r4, %r2, %r3;",
       {{kOne32, 0x40400000, 0x3eaaaaab}},
       "sm_86",
       2},
      {"sqrt.approx.f32", 32, "sqrt.approx.f32 %r4, %r2;", {{kTwo32, 0, 0x3fb504f3}}, "sm_86", 1},
  };
  return cases;
}

std::vector<const std::vector<Case>*> all_tables() {
  return {&rounding_cases(), &cvt_cases(), &half_cases(), &integer_cases(), &float_cases()};
}

TEST(PtxSemantics, RoundingModes) {
  for (const Case& c : rounding_cases()) EXPECT_TRUE(check_case(c));
}
TEST(PtxSemantics, Conversions) {
  for (const Case& c : cvt_cases()) EXPECT_TRUE(check_case(c));
}
TEST(PtxSemantics, HalfConversions) {
  for (const Case& c : half_cases()) EXPECT_TRUE(check_case(c));
}
TEST(PtxSemantics, Integers) {
  for (const Case& c : integer_cases()) EXPECT_TRUE(check_case(c));
}
TEST(PtxSemantics, ComparisonsMinMaxFtzApprox) {
  for (const Case& c : float_cases()) EXPECT_TRUE(check_case(c));
}

// The tables can fail: a kernel written with the wrong rounding mode, or one expected value
// that is off by one ulp, is reported.
TEST(PtxSemantics, ABrokenKernelFails) {
  Case wrong_mode = rounding_cases()[1];  // expects mul.rz's 0x3fa00003
  ASSERT_EQ(wrong_mode.name, "mul.rz.f32 truncates");
  wrong_mode.body = "mul.rn.f32 %r4, %r2, %r3;";  // the broken kernel: .rn where .rz was meant
  EXPECT_FALSE(check_case(wrong_mode));
  Case unfused = rounding_cases()[15];
  ASSERT_EQ(unfused.name, "mul.rn + add.rn are never fused");
  unfused.body = "fma.rn.f32 %r4, %r2, %r3, 0fBF800000;";  // fused where two roundings were meant
  EXPECT_FALSE(check_case(unfused));
  Case off_by_one = half_cases()[0];
  off_by_one.rows = {{0x3f803000, 0, 0x3c01}};  // the tie rounded away from even
  EXPECT_FALSE(check_case(off_by_one));
}

// Every float16 survives f16 -> f32 -> f16 (NaNs become the canonical one), in one launch of
// 65536 threads; random floats narrow exactly as the reference's converters do.
const char* kHalfRoundTrip = R"(.version 7.8
.target sm_86
.address_size 64

.visible .entry k(.param .u64 k_in, .param .u64 k_out, .param .u64 k_f)
{
  .reg .b16 %rs<4>;
  .reg .b32 %r<8>;
  .reg .b64 %rd<12>;
  ld.param.u64 %rd1, [k_in];
  ld.param.u64 %rd2, [k_out];
  ld.param.u64 %rd3, [k_f];
  mov.u32 %r1, %ctaid.x;
  mov.u32 %r2, %ntid.x;
  mov.u32 %r3, %tid.x;
  mad.lo.s32 %r4, %r1, %r2, %r3;
  mul.wide.u32 %rd4, %r4, 2;
  mul.wide.u32 %rd5, %r4, 4;
  add.s64 %rd6, %rd1, %rd4;
  ld.global.nc.b16 %rs1, [%rd6];
  cvt.f32.f16 %r5, %rs1;
  cvt.rn.f16.f32 %rs2, %r5;
  add.s64 %rd7, %rd2, %rd4;
  st.global.b16 [%rd7], %rs2;
  add.s64 %rd8, %rd3, %rd5;
  ld.global.nc.f32 %r6, [%rd8];
  cvt.rn.f16.f32 %rs3, %r6;
  add.s64 %rd9, %rd1, %rd4;
  st.global.b16 [%rd9], %rs3;
  ret;
}
)";

TEST(PtxSemantics, HalfRoundTripAndNarrowingAgainstReference) {
  std::string error;
  auto module = PtxModule::parse(kHalfRoundTrip, &error);
  ASSERT_TRUE(module) << error;
  std::vector<uint16_t> in(65536), out(65536, 0xdead);
  std::vector<float> floats(65536);
  std::mt19937 rng(17);
  for (size_t i = 0; i < in.size(); ++i) {
    in[i] = static_cast<uint16_t>(i);
    uint32_t bits = rng();
    // Half the samples near f16's range (where rounding happens), half anywhere.
    if (i % 2) bits = (bits & 0x807fffffu) | ((100u + bits % 50u) << 23);
    std::memcpy(&floats[i], &bits, 4);
  }
  std::vector<uint16_t> original = in;
  BufferChecker memory;
  memory.add(in);
  memory.add(out);
  memory.add(floats);
  const void *pi = in.data(), *po = out.data(), *pf = floats.data();
  std::vector<const void*> params = {&pi, &po, &pf};
  ASSERT_TRUE(module->launch("k", Dim3{64, 1, 1}, Dim3{1024, 1, 1}, params, memory, &error))
      << error;
  int mismatches = 0;
  for (size_t i = 0; i < 65536 && mismatches < 10; ++i) {
    uint16_t h = original[i];
    bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
    uint16_t want = nan ? 0x7fff : h;
    if (out[i] != want) {
      ++mismatches;
      ADD_FAILURE() << "f16 0x" << std::hex << h << " came back as 0x" << out[i];
    }
    uint32_t fbits;
    std::memcpy(&fbits, &floats[i], 4);
    bool fnan = (fbits & 0x7fffffffu) > 0x7f800000u;
    uint16_t narrowed = fnan ? 0x7fff : embag::ref::float_to_half(floats[i]);
    if (in[i] != narrowed) {
      ++mismatches;
      ADD_FAILURE() << "float 0x" << std::hex << fbits << " narrowed to 0x" << in[i]
                    << ", reference 0x" << narrowed;
    }
  }
}

// Control flow and calls: a loop with predicated branches, and a .func called with .param
// arguments and a return value, as Halide's pow is.
const char* kLoopAndCall = R"(.version 7.8
.target sm_86
.address_size 64

.func  (.param .b32 func_retval0) twice_plus(
	.param .b32 twice_plus_param_0,
	.param .b32 twice_plus_param_1
)
{
	.reg .b32 	%r<4>;
	ld.param.b32 	%r1, [twice_plus_param_0];
	ld.param.b32 	%r2, [twice_plus_param_1];
	mad.lo.s32 	%r3, %r1, 2, %r2;
	st.param.b32 	[func_retval0], %r3;
	ret;
}

.visible .entry k(.param .u64 k_out)
{
	.reg .pred 	%p<4>;
	.reg .b32 	%r<8>;
	.reg .b64 	%rd<8>;
	ld.param.u64 	%rd1, [k_out];
	cvta.to.global.u64 	%rd1, %rd1;
	mov.u32 	%r1, %tid.x;
	mov.u32 	%r2, 0;
	mov.u32 	%r3, 0;
	setp.eq.s32 	%p1, %r1, 0;
	@%p1 bra 	$L__done;
$L__loop:
	add.s32 	%r2, %r2, 1;
	add.s32 	%r3, %r3, %r2;
	setp.lt.u32 	%p2, %r2, %r1;
	@%p2 bra 	$L__loop;
$L__done:
	{ // callseq 0, 0
	.param .b32 	param0;
	st.param.b32 	[param0], %r3;
	.param .b32 	param1;
	st.param.b32 	[param1], 100;
	.param .b32 	retval0;
	call.uni (retval0), twice_plus, (param0, param1);
	ld.param.b32 	%r4, [retval0];
	} // callseq 0
	mul.wide.u32 	%rd2, %r1, 4;
	add.s64 	%rd3, %rd1, %rd2;
	st.global.b32 	[%rd3], %r4;
	ret;
}
)";

TEST(PtxSemantics, LoopsAndCalls) {
  std::string error;
  auto module = PtxModule::parse(kLoopAndCall, &error);
  ASSERT_TRUE(module) << error;
  std::vector<uint32_t> out(40, 0);
  BufferChecker memory;
  memory.add(out);
  const void* po = out.data();
  std::vector<const void*> params = {&po};
  ASSERT_TRUE(module->launch("k", Dim3{}, Dim3{40, 1, 1}, params, memory, &error)) << error;
  for (uint32_t n = 0; n < 40; ++n) EXPECT_EQ(out[n], n * (n + 1) + 100) << "thread " << n;
}

// Special registers over a 3-D grid of 3-D blocks; every thread runs once.
const char* kSpecials = R"(.version 7.8
.target sm_86
.address_size 64

.visible .entry k(.param .u64 k_out)
{
	.reg .b32 	%r<24>;
	.reg .b64 	%rd<8>;
	ld.param.u64 	%rd1, [k_out];
	mov.u32 	%r1, %tid.x;
	mov.u32 	%r2, %tid.y;
	mov.u32 	%r3, %tid.z;
	mov.u32 	%r4, %ntid.x;
	mov.u32 	%r5, %ntid.y;
	mov.u32 	%r6, %ntid.z;
	mov.u32 	%r7, %ctaid.x;
	mov.u32 	%r8, %ctaid.y;
	mov.u32 	%r9, %ctaid.z;
	mov.u32 	%r10, %nctaid.x;
	mov.u32 	%r11, %nctaid.y;
	// block = (ctaid.z * nctaid.y + ctaid.y) * nctaid.x + ctaid.x
	mad.lo.s32 	%r12, %r9, %r11, %r8;
	mad.lo.s32 	%r12, %r12, %r10, %r7;
	// thread in block = (tid.z * ntid.y + tid.y) * ntid.x + tid.x
	mad.lo.s32 	%r13, %r3, %r5, %r2;
	mad.lo.s32 	%r13, %r13, %r4, %r1;
	mul.lo.s32 	%r14, %r4, %r5;
	mul.lo.s32 	%r14, %r14, %r6;
	mad.lo.s32 	%r15, %r12, %r14, %r13;
	// value: tid.x | tid.y << 4 | tid.z << 8 | ctaid.x << 12 | ctaid.y << 16 | ctaid.z << 20
	shl.b32 	%r16, %r2, 4;
	or.b32 	%r16, %r16, %r1;
	shl.b32 	%r17, %r3, 8;
	or.b32 	%r16, %r16, %r17;
	shl.b32 	%r17, %r7, 12;
	or.b32 	%r16, %r16, %r17;
	shl.b32 	%r17, %r8, 16;
	or.b32 	%r16, %r16, %r17;
	shl.b32 	%r17, %r9, 20;
	or.b32 	%r16, %r16, %r17;
	mul.wide.u32 	%rd2, %r15, 4;
	add.s64 	%rd3, %rd1, %rd2;
	st.global.u32 	[%rd3], %r16;
	ret;
}
)";

TEST(PtxSemantics, SpecialRegistersAndEveryThread) {
  std::string error;
  auto module = PtxModule::parse(kSpecials, &error);
  ASSERT_TRUE(module) << error;
  Dim3 grid{2, 3, 2}, block{4, 2, 3};
  std::vector<uint32_t> out(2 * 3 * 2 * 4 * 2 * 3, 0xffffffffu);
  BufferChecker memory;
  memory.add(out);
  const void* po = out.data();
  std::vector<const void*> params = {&po};
  ASSERT_TRUE(module->launch("k", grid, block, params, memory, &error)) << error;
  size_t i = 0;
  for (uint32_t bz = 0; bz < grid.z; ++bz)
    for (uint32_t by = 0; by < grid.y; ++by)
      for (uint32_t bx = 0; bx < grid.x; ++bx)
        for (uint32_t tz = 0; tz < block.z; ++tz)
          for (uint32_t ty = 0; ty < block.y; ++ty)
            for (uint32_t tx = 0; tx < block.x; ++tx, ++i) {
              uint32_t want = tx | ty << 4 | tz << 8 | bx << 12 | by << 16 | bz << 20;
              EXPECT_EQ(out[i], want) << "slot " << i;
            }
}

// An access outside every allocation fails the launch, names the thread, the instruction and
// the address, and nothing of that thread after it runs (its store does not happen).
TEST(PtxSemantics, OutOfBoundsLoadIsRefused) {
  std::string error;
  auto module = PtxModule::parse(module_for("add.s32 %r4, %r2, %r3;", 32, "sm_86"), &error);
  ASSERT_TRUE(module) << error;
  std::vector<uint32_t> a = {1, 2, 3}, b = {10, 20};  // b is one element short
  std::vector<uint32_t> out(3, 0xdeadbeefu);
  BufferChecker memory;
  memory.add(a);
  memory.add(b);
  memory.add(out);
  const void *pa = a.data(), *pb = b.data(), *po = out.data();
  std::vector<const void*> params = {&pa, &pb, &po};
  EXPECT_FALSE(module->launch("k", Dim3{}, Dim3{3, 1, 1}, params, memory, &error));
  EXPECT_NE(error.find("thread (2, 0, 0)"), std::string::npos) << error;
  EXPECT_NE(error.find("ld.global.b32 %r3, [%rd6];"), std::string::npos) << error;
  EXPECT_NE(error.find("load of 4 bytes"), std::string::npos) << error;
  EXPECT_EQ(out[0], 11u);
  EXPECT_EQ(out[1], 22u);
  EXPECT_EQ(out[2], 0xdeadbeefu);
}

TEST(PtxSemantics, OutOfBoundsStoreAndMisalignedLoadAreRefused) {
  std::string error;
  auto module = PtxModule::parse(
      module_for("add.s32 %r4, %r2, %r3;\n  st.global.b32 [%rd7+4], %r4;", 32, "sm_86"), &error);
  ASSERT_TRUE(module) << error;
  std::vector<uint32_t> a = {1}, b = {2}, out(1, 0);
  BufferChecker memory;
  memory.add(a);
  memory.add(b);
  memory.add(out);
  const void *pa = a.data(), *pb = b.data(), *po = out.data();
  std::vector<const void*> params = {&pa, &pb, &po};
  EXPECT_FALSE(module->launch("k", Dim3{}, Dim3{}, params, memory, &error));
  EXPECT_NE(error.find("store of 4 bytes"), std::string::npos) << error;

  auto misaligned =
      PtxModule::parse(module_for("ld.global.b32 %r4, [%rd5+2];", 32, "sm_86"), &error);
  ASSERT_TRUE(misaligned) << error;
  std::vector<uint32_t> big(4, 0);
  memory.add(big);
  const void* pbig = big.data();
  params = {&pbig, &pb, &po};
  EXPECT_FALSE(misaligned->launch("k", Dim3{}, Dim3{}, params, memory, &error));
  EXPECT_NE(error.find("misaligned"), std::string::npos) << error;
}

// Forms the interpreter does not implement are refused when the module is parsed, with the
// line and its text: never run approximately, never skipped.
TEST(PtxSemantics, UnknownFormsAreRefusedWithTheirText) {
  struct Refusal {
    const char* line;
    const char* why;  // a part of the message
  };
  const Refusal refusals[] = {
      {"frobnicate.b32 %r4, %r2;", "unknown instruction 'frobnicate'"},
      {"add.sat.s32 %r4, %r2, %r3;", "unsupported modifier '.sat'"},
      {"add.cc.u32 %r4, %r2, %r3;", "unsupported modifier '.cc'"},
      {"mul.rn.f16 %rs1, %rs2, %rs3;", "16-bit float arithmetic"},
      {"bar.sync 0;", "not supported"},
      {"atom.global.add.u32 %r4, [%rd1], 1;", "not supported"},
      {"ld.shared.u32 %r4, [%rd1];", ".shared state space"},
      {"mov.u32 %r4, %laneid;", "unknown register"},
      {"cvt.f32.s32 %r4, %r2;", "int-to-float cvt needs"},
      {"fma.f32 %r4, %r2, %r3, %r2;", "missing rounding modifier"},
      {"add.s32 %r4, %r2, %r99;", "'%r99'"},
      {"setp.lt.and.s32 %p1, %r2, %r3, %p2;", "combining predicate"},
      {"bra $L__nowhere;", "unknown label"},
  };
  for (const Refusal& r : refusals) {
    std::string error;
    auto module = PtxModule::parse(module_for(r.line, 32, "sm_86"), &error);
    EXPECT_FALSE(module) << r.line;
    EXPECT_NE(error.find(r.why), std::string::npos) << r.line << " -> " << error;
    if (std::string(r.why) != "unknown label") {
      EXPECT_NE(error.find(std::string("`") + r.line + "`"), std::string::npos) << error;
    }
    EXPECT_EQ(error.rfind("line ", 0), 0u) << error;
  }
  std::string error;
  EXPECT_FALSE(PtxModule::parse(
      ".version 7.8\n.target sm_86\n.address_size 64\n.shared .b32 s[4];\n", &error));
  EXPECT_NE(error.find("line 4"), std::string::npos) << error;
}

// Every hand-written module above is PTX that ptxas assembles (for the target it names).
TEST(PtxSemantics, HandWrittenModulesAssemble) {
  if (testing_support::ptxas_path().empty()) {
    GTEST_SKIP() << "ptxas not found at configure time (no CUDA toolkit): the modules are not "
                    "assembled";
  }
  std::set<std::string> modules = {kHalfRoundTrip, kLoopAndCall, kSpecials};
  for (const auto* table : all_tables()) {
    for (const Case& c : *table) modules.insert(module_for(c.body, c.width, c.target));
  }
  for (const std::string& m : modules) {
    std::string message = testing_support::ptxas_check(m);
    EXPECT_EQ(message, "") << m;
  }
}

}  // namespace
}  // namespace fakecuda
