// Quantized tables: the format table, quantize_rows / dequantize_rows on hand-worked rows, and the
// randomized differential test of every format x mode x option x D x index dtype on every ISA
// compiled in and supported here, bitwise against the reference (tests/reference/
// quantized_reference.h), with guard bytes around every output and strided, unaligned rows.
// Byte-identity of quantize_rows with PyTorch's and FBGEMM's quantizers is checked against the
// real ops in tests/python/test_quantized_torch.py and against recorded bytes in test_golden.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "differential_support.h"
#include "embag/embag.h"
#include "reference/half_float.h"
#include "reference/quantized_reference.h"

namespace embag {
namespace {

using difftest::chance;
using difftest::GuardedBuffer;
using difftest::uniform;

constexpr QuantFormat kFormats[] = {
    QuantFormat::kInt8,      QuantFormat::kInt4,    QuantFormat::kInt2,
    QuantFormat::kTbeInt8,   QuantFormat::kTbeInt4, QuantFormat::kTbeInt2,
    QuantFormat::kFp8E4M3FN, QuantFormat::kFp8E5M2, QuantFormat::kHfp8};

bool is_fp8(QuantFormat f) {
  return f == QuantFormat::kFp8E4M3FN || f == QuantFormat::kFp8E5M2 || f == QuantFormat::kHfp8;
}

uint16_t u16_at(const std::vector<uint8_t>& b, size_t at) {
  return static_cast<uint16_t>(b[at] | (b[at + 1] << 8));
}
float f32_at(const std::vector<uint8_t>& b, size_t at) {
  float v;
  std::memcpy(&v, b.data() + at, 4);
  return v;
}

std::vector<uint8_t> quantize(const std::vector<float>& w, int64_t rows, int64_t dim,
                              QuantFormat format, int64_t stride = -1) {
  if (stride < 0) stride = quantized_row_bytes(format, dim);
  std::vector<uint8_t> bytes(static_cast<size_t>(rows * stride), 0xAB);
  const QuantizedTable t{bytes.data(), format, rows, dim, stride, {}};
  const Status s =
      quantize_rows(make_view_2d(const_cast<float*>(w.data()), DType::kFloat32, rows, dim), t);
  EXPECT_TRUE(s.ok()) << s.message();
  return bytes;
}

TEST(QuantizedFormats, NamesAndRowBytes) {
  for (QuantFormat f : kFormats) EXPECT_EQ(parse_quant_format(quant_format_name(f)), f);
  EXPECT_FALSE(parse_quant_format("int3").has_value());
  // [D codes][f32 scale][f32 bias]; [ceil(D*bits/8) codes] + two float16s.
  EXPECT_EQ(quantized_row_bytes(QuantFormat::kInt8, 3), 11);
  EXPECT_EQ(quantized_row_bytes(QuantFormat::kInt4, 3), 6);
  EXPECT_EQ(quantized_row_bytes(QuantFormat::kInt4, 128), 68);
  EXPECT_EQ(quantized_row_bytes(QuantFormat::kInt2, 5), 6);
  EXPECT_EQ(quantized_row_bytes(QuantFormat::kTbeInt8, 3), 7);
  EXPECT_EQ(quantized_row_bytes(QuantFormat::kTbeInt4, 1), 5);
  EXPECT_EQ(quantized_row_bytes(QuantFormat::kTbeInt2, 8), 6);
  EXPECT_EQ(quantized_row_bytes(QuantFormat::kInt8, -1), -1);
  // 8-bit floats: one byte per element, nothing else.
  EXPECT_EQ(quantized_row_bytes(QuantFormat::kFp8E4M3FN, 3), 3);
  EXPECT_EQ(quantized_row_bytes(QuantFormat::kFp8E5M2, 0), 0);
  EXPECT_EQ(quantized_row_bytes(QuantFormat::kHfp8, 128), 128);
  EXPECT_EQ(quant_format_names(),
            "int8, int4, int2, tbe_int8, tbe_int4, tbe_int2, fp8_e4m3fn, fp8_e5m2, hfp8");
}

// 8-bit floats, worked by hand from each format's definition (sign, exponent, mantissa, bias;
// docs/quantized.md): the rounding (nearest even, subnormals included) and what each does with
// overflow, infinities and NaN. That these are torch's and FBGEMM's bytes is checked against the
// real conversions in tests/python/test_quantized_torch.py.
TEST(QuantizeRows, EightBitFloatsByHand) {
  const float inf = INFINITY, nan = NAN;
  struct Case {
    QuantFormat format;
    float value;
    uint8_t code;
  };
  const Case cases[] = {
      // float8_e4m3fn: bias 7, 3 mantissa bits, largest 448 (0x7E), 0x7F NaN, no infinity:
      // what rounds past 448 saturates to it (torch 2.14).
      {QuantFormat::kFp8E4M3FN, 1.0f, 0x38},
      {QuantFormat::kFp8E4M3FN, -2.0f, 0xC0},
      {QuantFormat::kFp8E4M3FN, 1.0625f, 0x38},  // halfway 1 / 1.125: to even (1)
      {QuantFormat::kFp8E4M3FN, 1.1875f, 0x3A},  // halfway 1.125 / 1.25: to even (1.25)
      {QuantFormat::kFp8E4M3FN, 448.0f, 0x7E},
      {QuantFormat::kFp8E4M3FN, 464.0f, 0x7E},  // halfway 448 / 480: to even (448)
      {QuantFormat::kFp8E4M3FN, 464.5f, 0x7E},  // rounds past 448: saturates
      {QuantFormat::kFp8E4M3FN, -1e9f, 0xFE},
      {QuantFormat::kFp8E4M3FN, inf, 0x7E},
      {QuantFormat::kFp8E4M3FN, -inf, 0xFE},
      {QuantFormat::kFp8E4M3FN, nan, 0x7F},
      {QuantFormat::kFp8E4M3FN, -nan, 0xFF},
      {QuantFormat::kFp8E4M3FN, std::ldexp(1.0f, -9), 0x01},    // smallest subnormal
      {QuantFormat::kFp8E4M3FN, std::ldexp(1.0f, -10), 0x00},   // halfway 0 / 2^-9: to 0
      {QuantFormat::kFp8E4M3FN, std::ldexp(3.0f, -10), 0x02},   // 1.5 steps: to 2
      {QuantFormat::kFp8E4M3FN, std::ldexp(15.0f, -10), 0x08},  // 7.5 steps: to 2^-6
      {QuantFormat::kFp8E4M3FN, -0.0f, 0x80},
      // float8_e5m2: bias 15, 2 mantissa bits, largest 57344 (0x7B), IEEE infinity and NaN:
      // what rounds past 57344 is infinity.
      {QuantFormat::kFp8E5M2, 1.0f, 0x3C},
      {QuantFormat::kFp8E5M2, -1.5f, 0xBE},
      {QuantFormat::kFp8E5M2, 57344.0f, 0x7B},
      {QuantFormat::kFp8E5M2, 61439.0f, 0x7B},
      {QuantFormat::kFp8E5M2, 61440.0f, 0x7C},  // halfway 57344 / 65536: to even (infinity)
      {QuantFormat::kFp8E5M2, 1e9f, 0x7C},
      {QuantFormat::kFp8E5M2, -inf, 0xFC},
      {QuantFormat::kFp8E5M2, nan, 0x7F},
      {QuantFormat::kFp8E5M2, std::ldexp(1.0f, -16), 0x01},
      {QuantFormat::kFp8E5M2, std::ldexp(1.0f, -17), 0x00},
      // HFP8 (FBGEMM, default config): e4m3, bias 7, clamped to max_position 240 (0x77).
      {QuantFormat::kHfp8, 1.0f, 0x38},
      {QuantFormat::kHfp8, 240.0f, 0x77},
      {QuantFormat::kHfp8, 300.0f, 0x77},
      {QuantFormat::kHfp8, -inf, 0xF7},
      {QuantFormat::kHfp8, nan, 0x77},
      {QuantFormat::kHfp8, -nan, 0xF7},
      {QuantFormat::kHfp8, std::ldexp(1.0f, -9), 0x01},
      {QuantFormat::kHfp8, std::ldexp(3.0f, -10), 0x02},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(quant_format_name(c.format)) + " " + std::to_string(c.value));
    EXPECT_EQ(quantize({c.value}, 1, 1, c.format)[0], c.code);
  }
  // Decoding: every code against the definition's special values.
  struct Decoded {
    QuantFormat format;
    uint8_t code;
    float value;  // NaN: any NaN
  };
  const Decoded decoded[] = {
      {QuantFormat::kFp8E4M3FN, 0x7E, 448.0f},
      {QuantFormat::kFp8E4M3FN, 0x7F, nan},
      {QuantFormat::kFp8E4M3FN, 0xFF, nan},
      {QuantFormat::kFp8E4M3FN, 0x78, 256.0f},
      {QuantFormat::kFp8E4M3FN, 0x01, std::ldexp(1.0f, -9)},
      {QuantFormat::kFp8E4M3FN, 0x87, -std::ldexp(7.0f, -9)},
      {QuantFormat::kFp8E5M2, 0x7B, 57344.0f},
      {QuantFormat::kFp8E5M2, 0x7C, inf},
      {QuantFormat::kFp8E5M2, 0xFC, -inf},
      {QuantFormat::kFp8E5M2, 0x7D, nan},
      {QuantFormat::kFp8E5M2, 0x03, std::ldexp(3.0f, -16)},
      {QuantFormat::kHfp8, 0x7F, 480.0f},
      {QuantFormat::kHfp8, 0xFF, -480.0f},
      {QuantFormat::kHfp8, 0x78, 256.0f},
      {QuantFormat::kHfp8, 0x80, -0.0f},
  };
  for (const Decoded& d : decoded) {
    SCOPED_TRACE(std::string(quant_format_name(d.format)) + " code " + std::to_string(d.code));
    uint8_t code = d.code;
    float got = 0;
    ASSERT_TRUE(
        dequantize_rows({&code, d.format, 1, 1, 1, {}}, make_view_2d(&got, DType::kFloat32, 1, 1))
            .ok());
    const float want = ref::dequantize({&code, d.format, 1, 1, 1, {}})[0];
    if (std::isnan(d.value)) {
      EXPECT_TRUE(std::isnan(got));
      EXPECT_TRUE(std::isnan(want));
    } else {
      EXPECT_EQ(ref::float_bits(got), ref::float_bits(d.value));
      EXPECT_EQ(ref::float_bits(want), ref::float_bits(d.value));
    }
  }
}

// Rows whose bytes follow from the formulas by hand.
TEST(QuantizeRows, HandWorkedRows) {
  // 8-bit: 0..255 has range 255, scale 1, bias 0, and 255 / (255 + 1e-8f) is 1.0f: codes = values.
  std::vector<float> ramp(256);
  for (int i = 0; i < 256; ++i) ramp[static_cast<size_t>(i)] = static_cast<float>(i);
  std::vector<uint8_t> q = quantize(ramp, 1, 256, QuantFormat::kInt8);
  for (int i = 0; i < 256; ++i) ASSERT_EQ(q[static_cast<size_t>(i)], i);
  EXPECT_EQ(f32_at(q, 256), 1.0f);
  EXPECT_EQ(f32_at(q, 260), 0.0f);

  // A constant row: 8-bit scale 0, codes 0; n-bit scale 1.0 (float16 0x3C00), bias f16(3) 0x4200.
  const std::vector<float> constant = {3, 3, 3};
  q = quantize(constant, 1, 3, QuantFormat::kInt8);
  EXPECT_EQ((std::vector<uint8_t>(q.begin(), q.begin() + 3)), (std::vector<uint8_t>{0, 0, 0}));
  EXPECT_EQ(f32_at(q, 3), 0.0f);
  EXPECT_EQ(f32_at(q, 7), 3.0f);
  q = quantize(constant, 1, 3, QuantFormat::kInt4);
  EXPECT_EQ(q[0], 0);
  EXPECT_EQ(q[1], 0);
  EXPECT_EQ(u16_at(q, 2), 0x3C00);
  EXPECT_EQ(u16_at(q, 4), 0x4200);

  // 4-bit 0..15: scale 1, bias 0; byte i holds elements 2i (low nibble) and 2i + 1.
  std::vector<float> nibbles(16);
  for (int i = 0; i < 16; ++i) nibbles[static_cast<size_t>(i)] = static_cast<float>(i);
  q = quantize(nibbles, 1, 16, QuantFormat::kInt4);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(q[static_cast<size_t>(i)], (2 * i) | ((2 * i + 1) << 4));
  EXPECT_EQ(u16_at(q, 8), 0x3C00);
  EXPECT_EQ(u16_at(q, 10), 0x0000);
  // The same row in FBGEMM's TBE layout: qparams first, then the same codes.
  std::vector<uint8_t> tbe = quantize(nibbles, 1, 16, QuantFormat::kTbeInt4);
  EXPECT_EQ(u16_at(tbe, 0), 0x3C00);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(tbe[static_cast<size_t>(4 + i)], q[static_cast<size_t>(i)]);

  // 2-bit [0, 1, 2, 3, 3]: scale 1; byte 0 = 0 | 1 << 2 | 2 << 4 | 3 << 6, byte 1 = 3.
  q = quantize({0, 1, 2, 3, 3}, 1, 5, QuantFormat::kInt2);
  EXPECT_EQ(q[0], 0xE4);
  EXPECT_EQ(q[1], 0x03);

  // TBE INT8: the 8-bit codes with float16 qparams in front: [0, 2] has scale 2/255.
  q = quantize({0, 2}, 1, 2, QuantFormat::kTbeInt8);
  EXPECT_EQ(u16_at(q, 0), ref::float_to_half(2.0f / 255.0f));
  EXPECT_EQ(u16_at(q, 2), 0);
  EXPECT_EQ(q[4], 0);
  EXPECT_EQ(q[5], 255);
}

// Only a row's own bytes are written: padding in a wider stride stays as it was.
TEST(QuantizeRows, LeavesRowPaddingAlone) {
  const std::vector<float> w = {1, 2, 3, 4, 5, 6};
  for (QuantFormat f : kFormats) {
    SCOPED_TRACE(quant_format_name(f));
    const int64_t row = quantized_row_bytes(f, 3);
    const std::vector<uint8_t> q = quantize(w, 2, 3, f, row + 5);
    for (int64_t r = 0; r < 2; ++r) {
      for (int64_t i = row; i < row + 5; ++i)
        EXPECT_EQ(q[static_cast<size_t>(r * (row + 5) + i)], 0xAB);
    }
  }
}

// dequantize_rows is the reference's dequantisation, bit for bit, on random bytes (NaN and
// infinite qparams included) and into every float dtype; and a quantized row dequantises to
// within half a step of the float row it came from.
TEST(QuantizeRows, DequantizeMatchesReferenceAndRoundTrips) {
  std::mt19937_64 rng(19);
  for (QuantFormat f : kFormats) {
    for (int64_t dim : {1, 2, 3, 7, 8, 33, 64, 130}) {
      SCOPED_TRACE(std::string(quant_format_name(f)) + " D=" + std::to_string(dim));
      const int64_t rows = 9, stride = quantized_row_bytes(f, dim) + uniform(rng, 0, 3);
      std::vector<uint8_t> bytes(static_cast<size_t>(rows * stride));
      for (auto& b : bytes) b = static_cast<uint8_t>(uniform(rng, 0, 255));
      const QuantizedTable table{bytes.data(), f, rows, dim, stride, {}};
      const std::vector<float> want = ref::dequantize(table);
      std::vector<float> got(static_cast<size_t>(rows * dim));
      ASSERT_TRUE(
          dequantize_rows(table, make_view_2d(got.data(), DType::kFloat32, rows, dim)).ok());
      for (size_t i = 0; i < got.size(); ++i) {
        if (std::isnan(want[i])) {
          EXPECT_TRUE(std::isnan(got[i])) << i;
        } else {
          EXPECT_EQ(ref::float_bits(got[i]), ref::float_bits(want[i])) << i;
        }
      }
      std::vector<uint16_t> half(static_cast<size_t>(rows * dim));
      ASSERT_TRUE(
          dequantize_rows(table, make_view_2d(half.data(), DType::kFloat16, rows, dim)).ok());
      for (size_t i = 0; i < half.size(); ++i) {
        if (!std::isnan(want[i])) {
          EXPECT_EQ(half[i], ref::float_to_half(want[i])) << i;
        }
      }

      // Round trip of a finite table.
      std::vector<float> w(static_cast<size_t>(rows * dim));
      for (auto& v : w) v = std::uniform_real_distribution<float>(-2.0f, 3.0f)(rng);
      const std::vector<uint8_t> q = quantize(w, rows, dim, f);
      const QuantizedTable qt{q.data(), f, rows, dim, quantized_row_bytes(f, dim), {}};
      const std::vector<float> back = ref::dequantize(qt);
      const int bits = quant_format_bits(f);
      if (is_fp8(f)) {
        // Within half a unit in the last place of the value (3 or 2 mantissa bits): the values
        // are well inside every format's normal range.
        const float relative = f == QuantFormat::kFp8E5M2 ? 0.125f : 0.0625f;
        for (size_t i = 0; i < w.size(); ++i) {
          EXPECT_LE(std::fabs(back[i] - w[i]), relative * std::fabs(w[i]) + 1e-3f) << i;
        }
        continue;
      }
      for (int64_t r = 0; r < rows; ++r) {
        float lo = w[static_cast<size_t>(r * dim)], hi = lo;
        for (int64_t d = 0; d < dim; ++d) {
          lo = std::min(lo, w[static_cast<size_t>(r * dim + d)]);
          hi = std::max(hi, w[static_cast<size_t>(r * dim + d)]);
        }
        // half a step, plus the float16 rounding of scale and bias for the n-bit formats
        const float step = (hi - lo) / static_cast<float>((1 << bits) - 1);
        const float allowed =
            0.5f * step + (f == QuantFormat::kInt8 ? 1e-5f : 0.01f * (hi - lo) + 2e-3f);
        for (int64_t d = 0; d < dim; ++d) {
          const size_t i = static_cast<size_t>(r * dim + d);
          EXPECT_LE(std::fabs(back[i] - w[i]), allowed) << "row " << r << " column " << d;
        }
      }
    }
  }
}

// Quantizing from float16 and bfloat16 tables quantizes their exact float32 values.
TEST(QuantizeRows, SixteenBitTablesQuantizeTheirValues) {
  std::mt19937_64 rng(7);
  const int64_t rows = 5, dim = 37;
  std::vector<uint16_t> half(static_cast<size_t>(rows * dim)), bf(half.size());
  std::vector<float> from_half(half.size()), from_bf(half.size());
  for (size_t i = 0; i < half.size(); ++i) {
    const float v = std::uniform_real_distribution<float>(-4.0f, 4.0f)(rng);
    half[i] = ref::float_to_half(v);
    bf[i] = ref::float_to_bfloat16(v);
    from_half[i] = ref::half_to_float(half[i]);
    from_bf[i] = ref::bfloat16_to_float(bf[i]);
  }
  for (QuantFormat f : kFormats) {
    SCOPED_TRACE(quant_format_name(f));
    const int64_t stride = quantized_row_bytes(f, dim);
    for (auto [data, dtype, widened] : {std::tuple{half.data(), DType::kFloat16, &from_half},
                                        std::tuple{bf.data(), DType::kBFloat16, &from_bf}}) {
      std::vector<uint8_t> got(static_cast<size_t>(rows * stride));
      ASSERT_TRUE(quantize_rows(make_view_2d(data, dtype, rows, dim),
                                {got.data(), f, rows, dim, stride, {}})
                      .ok());
      EXPECT_EQ(got, quantize(*widened, rows, dim, f));
    }
  }
}

TEST(QuantizeRows, RefusesMismatchedTables) {
  std::vector<float> w(6, 1.0f);
  std::vector<uint8_t> q(64);
  const TensorView view = make_view_2d(w.data(), DType::kFloat32, 2, 3);
  auto fails_with = [](const Status& s, const std::string& fragment) {
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find(fragment), std::string::npos) << s.message();
  };
  fails_with(quantize_rows(view, {q.data(), QuantFormat::kInt8, 3, 3, 11, {}}), "has 3 rows");
  fails_with(quantize_rows(view, {q.data(), QuantFormat::kInt8, 2, 3, 10, {}}), "row stride 10");
  fails_with(quantize_rows(make_view_2d(w.data(), DType::kInt32, 2, 3),
                           {q.data(), QuantFormat::kInt8, 2, 3, 11, {}}),
             "float32, float16 or bfloat16");
  fails_with(dequantize_rows({q.data(), QuantFormat::kInt4, 2, 4, 6, {}}, view), "D = 4");
}

// ---- Differential ----------------------------------------------------------------------------

// 40 and 72: multiples of 8 (4- and 2-bit codes taken a word at a time) whose last register tile
// overlaps the one before it, so it starts at D - width rather than at a multiple of the width.
constexpr int64_t kDims[] = {1,  2,  3,  4,  5,  7,  8,  9,  15,  16,
                             17, 31, 32, 33, 40, 64, 72, 85, 128, 163};

struct Variant {
  Mode mode;
  bool weighted;  // sum with per_sample_weights
  bool argmax;    // max: ask for the winning rows (else the max_values kernel runs)
};
constexpr Variant kVariants[] = {{Mode::kSum, false, false},
                                 {Mode::kSum, true, false},
                                 {Mode::kMean, false, false},
                                 {Mode::kMax, false, true},
                                 {Mode::kMax, false, false}};

// The kernel codec a format runs (its kernels' names carry it).
std::string codec_of(QuantFormat f) {
  switch (f) {
    case QuantFormat::kInt8:
      return "u8f32";
    case QuantFormat::kTbeInt8:
      return "u8f16";
    case QuantFormat::kInt4:
    case QuantFormat::kTbeInt4:
      return "u4f16";
    case QuantFormat::kInt2:
    case QuantFormat::kTbeInt2:
      return "u2f16";
    case QuantFormat::kFp8E4M3FN:
    case QuantFormat::kFp8E5M2:
    case QuantFormat::kHfp8:
      return "f8";
  }
  return "?";
}

std::string variant_name(const Variant& v) {
  if (v.weighted) return "wsum";
  if (v.mode == Mode::kMax) return v.argmax ? "max" : "max_values";
  return mode_name(v.mode);
}

// One random case: a table (quantized from random floats, or random bytes so every code and
// qparam -- NaN and infinity included -- occurs), random bags and options. Returns "" when embag
// and the reference agree bit for bit and nothing outside the outputs was written.
std::string run_case(uint64_t seed, QuantFormat format, int64_t dim, DType index_dtype,
                     const Variant& variant) {
  std::mt19937_64 rng(seed);
  const int64_t rows = uniform(rng, 1, 40);
  const int64_t row_bytes = quantized_row_bytes(format, dim);
  const int64_t stride = chance(rng, 0.5) ? row_bytes : row_bytes + uniform(rng, 1, 17);
  std::vector<unsigned char> table_bytes(static_cast<size_t>(rows * stride));
  if (chance(rng, 0.3)) {
    for (auto& b : table_bytes) b = static_cast<unsigned char>(uniform(rng, 0, 255));
  } else {
    std::vector<float> w(static_cast<size_t>(rows * dim));
    const bool coarse = chance(rng, 0.3);
    for (auto& v : w) v = static_cast<float>(difftest::random_value(rng, coarse, false));
    const QuantizedTable out{table_bytes.data(), format, rows, dim, stride, {}};
    const Status s = quantize_rows(make_view_2d(w.data(), DType::kFloat32, rows, dim), out);
    if (!s.ok()) return "quantize_rows: " + s.message();
  }
  GuardedBuffer table(table_bytes);
  const QuantizedTable qt{table.data(), format, rows, dim, stride, {}};

  Options options;
  options.mode = variant.mode;
  const bool two_d = chance(rng, 0.2);
  if (chance(rng, 0.3)) {
    const int64_t p = uniform(rng, 0, rows - 1);
    options.padding_idx = chance(rng, 0.5) ? p : p - rows;
  }
  options.include_last_offset = !two_d && chance(rng, 0.3);
  int64_t bags = uniform(rng, 0, 12), per_bag = uniform(rng, 0, 9);
  std::vector<int64_t> indices, offsets;
  if (two_d) {
    for (int64_t i = 0; i < bags * per_bag; ++i) indices.push_back(uniform(rng, 0, rows - 1));
  } else {
    for (int64_t b = 0; b < bags; ++b) {
      offsets.push_back(static_cast<int64_t>(indices.size()));
      const int64_t n = uniform(rng, 0, 2 * per_bag);
      for (int64_t i = 0; i < n; ++i) indices.push_back(uniform(rng, 0, rows - 1));
    }
    if (options.include_last_offset) offsets.push_back(static_cast<int64_t>(indices.size()));
  }
  const int64_t n = static_cast<int64_t>(indices.size());
  std::vector<int32_t> indices32(indices.begin(), indices.end());
  std::vector<int32_t> offsets32(offsets.begin(), offsets.end());
  void* index_data = index_dtype == DType::kInt32 ? static_cast<void*>(indices32.data())
                                                  : static_cast<void*>(indices.data());
  void* offset_data = index_dtype == DType::kInt32 ? static_cast<void*>(offsets32.data())
                                                   : static_cast<void*>(offsets.data());
  ForwardInputs in;
  in.quantized_weight = &qt;
  TensorView offsets_view;
  if (two_d) {
    in.input = make_view_2d(index_data, index_dtype, bags, per_bag);
  } else {
    in.input = make_view_1d(index_data, index_dtype, n);
    offsets_view = make_view_1d(offset_data, index_dtype, static_cast<int64_t>(offsets.size()));
    in.offsets = &offsets_view;
  }
  std::vector<float> psw(static_cast<size_t>(n));
  for (auto& v : psw) v = static_cast<float>(difftest::random_value(rng, false, true));
  TensorView psw_view;
  if (variant.weighted) {
    psw_view = two_d ? make_view_2d(psw.data(), DType::kFloat32, bags, per_bag)
                     : make_view_1d(psw.data(), DType::kFloat32, n);
    in.per_sample_weights = &psw_view;
  }
  const int64_t B = num_bags(in.input, in.offsets, options);

  GuardedBuffer output(static_cast<size_t>(B * dim) * sizeof(float));
  GuardedBuffer argmax(static_cast<size_t>(B * dim) * sizeof(int64_t));
  GuardedBuffer count(static_cast<size_t>(B) * sizeof(int64_t));
  TensorView argmax_view = make_view_2d(argmax.data(), DType::kInt64, B, dim);
  TensorView count_view = make_view_1d(count.data(), DType::kInt64, B);
  ForwardOutputs out{make_view_2d(output.data(), DType::kFloat32, B, dim), &count_view,
                     variant.argmax ? &argmax_view : nullptr};

  std::vector<float> want(static_cast<size_t>(B * dim));
  std::vector<int64_t> want_argmax(static_cast<size_t>(B * dim)),
      want_count(static_cast<size_t>(B));
  TensorView want_argmax_view = make_view_2d(want_argmax.data(), DType::kInt64, B, dim);
  TensorView want_count_view = make_view_1d(want_count.data(), DType::kInt64, B);
  const Status r =
      ref::forward_quantized(in,
                             {make_view_2d(want.data(), DType::kFloat32, B, dim), &want_count_view,
                              variant.argmax ? &want_argmax_view : nullptr},
                             options);
  if (!r.ok()) return "reference: " + r.message();

  const Status s = forward(in, out, options);
  if (!s.ok()) return "forward: " + s.message();
  std::string diff =
      difftest::first_difference("output", "bag", DType::kFloat32, output.data(), dim,
                                 reinterpret_cast<const unsigned char*>(want.data()), dim, B, dim);
  if (!diff.empty()) return diff + " (variant " + last_variant() + ")";
  // (memcmp only on non-empty arrays: an empty vector's data() may be null, which memcmp must
  // not be given even for zero bytes)
  if (variant.argmax && argmax.size() != 0 &&
      std::memcmp(argmax.data(), want_argmax.data(), argmax.size()) != 0) {
    return "argmax differs (variant " + last_variant() + ")";
  }
  if (count.size() != 0 && std::memcmp(count.data(), want_count.data(), count.size()) != 0) {
    return "bag_count differs";
  }
  if (!output.guards_intact() || !argmax.guards_intact() || !count.guards_intact()) {
    return "a write outside an output";
  }
  if (!variant.argmax &&
      argmax.contents() != std::vector<unsigned char>(argmax.size(), difftest::kSentinel)) {
    return "argmax written although not asked for";
  }
  if (!table.guards_intact() || table.contents() != table_bytes) return "the table changed";
  const std::string expected_kernel =
      "embag_forward_" + variant_name(variant) + "_" + codec_of(format) + "_";
  if (B > 0 && dim > 0 && last_variant().rfind(expected_kernel, 0) != 0) {
    return "ran " + last_variant() + ", expected a " + expected_kernel + " kernel";
  }
  return "";
}

TEST(QuantizedDifferential, EveryFormatModeDimAndIndexTypeMatchesTheReference) {
  difftest::RestoreGlobals restore;
  for (const std::optional<Isa>& isa : difftest::isas_to_test()) {
    if (isa && isa_device(*isa) != DeviceType::kCPU) {
      // (EMBAG_TEST_ISAS may name a GPU ISA: quantized tables have no GPU kernels yet.)
      std::printf("[ SKIPPED  ] %s: quantized tables have no GPU kernels\n", isa_name(*isa));
      continue;
    }
    ASSERT_TRUE(difftest::select(isa));
    int failures = 0;
    uint64_t case_number = 0;
    for (QuantFormat format : kFormats) {
      for (int64_t dim : kDims) {
        for (DType index_dtype : {DType::kInt32, DType::kInt64}) {
          for (const Variant& variant : kVariants) {
            for (int repeat = 0; repeat < 3; ++repeat) {
              const uint64_t seed = difftest::mix(0x19u ^ difftest::mix(case_number++));
              if (difftest::only_seed() && *difftest::only_seed() != seed) continue;
              const std::string failure = run_case(seed, format, dim, index_dtype, variant);
              if (failure.empty()) continue;
              ADD_FAILURE() << difftest::isa_label(isa) << " " << quant_format_name(format)
                            << " D=" << dim << " " << dtype_name(index_dtype) << " "
                            << variant_name(variant) << " seed " << seed << ": " << failure;
              if (++failures >= difftest::kMaxFailingCases) return;
            }
          }
        }
      }
    }
  }
}

// What the reference promises, checked on embag directly: a quantized table's forward is the
// float32 forward on its dequantised table, every mode, bitwise; and any thread count gives the
// same bits.
TEST(QuantizedDifferential, EqualsFloatForwardOnTheDequantisedTableForAnyThreadCount) {
  difftest::RestoreGlobals restore;
  std::mt19937_64 rng(1919);
  const int64_t rows = 300, dim = 72, bags = 97;
  std::vector<float> w(static_cast<size_t>(rows * dim));
  for (auto& v : w) v = std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng);
  std::vector<int64_t> indices, offsets;
  for (int64_t b = 0; b < bags; ++b) {
    offsets.push_back(static_cast<int64_t>(indices.size()));
    for (int64_t i = uniform(rng, 0, 30); i > 0; --i) indices.push_back(uniform(rng, 0, rows - 1));
  }
  for (QuantFormat f : kFormats) {
    SCOPED_TRACE(quant_format_name(f));
    const std::vector<uint8_t> q = quantize(w, rows, dim, f);
    const QuantizedTable qt{q.data(), f, rows, dim, quantized_row_bytes(f, dim), {}};
    std::vector<float> deq(w.size());
    ASSERT_TRUE(dequantize_rows(qt, make_view_2d(deq.data(), DType::kFloat32, rows, dim)).ok());
    for (Mode mode : {Mode::kSum, Mode::kMean, Mode::kMax}) {
      SCOPED_TRACE(mode_name(mode));
      Options options;
      options.mode = mode;
      TensorView off = make_view_1d(offsets.data(), DType::kInt64, bags);
      ForwardInputs fin;
      fin.weight = make_view_2d(deq.data(), DType::kFloat32, rows, dim);
      fin.input = make_view_1d(indices.data(), DType::kInt64, static_cast<int64_t>(indices.size()));
      fin.offsets = &off;
      std::vector<float> want(static_cast<size_t>(bags * dim));
      ASSERT_TRUE(
          forward(fin, {make_view_2d(want.data(), DType::kFloat32, bags, dim)}, options).ok());
      ForwardInputs qin = fin;
      qin.weight = TensorView{};
      qin.quantized_weight = &qt;
      for (int threads : {1, 3}) {
        ASSERT_TRUE(set_num_threads(threads).ok());
        std::vector<float> got(want.size());
        const Status s =
            forward(qin, {make_view_2d(got.data(), DType::kFloat32, bags, dim)}, options);
        ASSERT_TRUE(s.ok()) << s.message();
        EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float)))
            << threads << " threads";
      }
    }
  }
}

TEST(QuantizedKernels, EveryFormatHasItsKernelsOnEveryCompiledCpuIsa) {
  for (Isa isa : compiled_isas()) {
    if (isa_device(isa) != DeviceType::kCPU) continue;
    for (const char* codec : {"u8f32", "u8f16", "u4f16", "u2f16", "f8"}) {
      for (const char* mode : {"sum", "wsum", "mean", "max", "max_values"}) {
        int found = 0;
        for (const VariantInfo& v : compiled_variants()) {
          found +=
              v.isa == isa && v.pipeline == "forward" && v.quant_codec == codec && v.mode == mode;
        }
        EXPECT_EQ(found, 2) << isa_name(isa) << " " << codec << " " << mode << " (int32, int64)";
      }
    }
  }
}

}  // namespace
}  // namespace embag
