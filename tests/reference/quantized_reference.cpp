// The quantized-table reference: quantized_reference.h says what it fixes and why.
#include "reference/quantized_reference.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "reference/half_float.h"
#include "reference/reference.h"

namespace embag::ref {
namespace {

// The 8-bit float formats, restated from their definitions (include/embag/quantized.h): which
// codes are not numbers.
enum class Fp8Kind {
  kNone,      // an integer format
  kE4M3FN,    // torch.float8_e4m3fn: exponent 4 bits, bias 7, 0x7F / 0xFF NaN, no infinity
  kE5M2,      // torch.float8_e5m2: exponent 5 bits, bias 15, IEEE infinities and NaNs
  kHfp8E4M3,  // FBGEMM's HFP8 (SparseType.FP8, its default config): e4m3, bias 7, every code a
              // number
};

// Each format's row, restated from include/embag/quantized.h's table: code width, whether the
// scale and bias are float32 (else float16), whether they come before the codes, and for the
// 8-bit floats (no scale or bias) which float.
struct RowLayout {
  int bits;
  bool float32_qparams;
  bool qparams_first;
  Fp8Kind fp8 = Fp8Kind::kNone;
};

RowLayout layout_of(QuantFormat format) {
  switch (format) {
    case QuantFormat::kInt8:
      return {8, true, false};
    case QuantFormat::kInt4:
      return {4, false, false};
    case QuantFormat::kInt2:
      return {2, false, false};
    case QuantFormat::kTbeInt8:
      return {8, false, true};
    case QuantFormat::kTbeInt4:
      return {4, false, true};
    case QuantFormat::kTbeInt2:
      return {2, false, true};
    case QuantFormat::kFp8E4M3FN:
      return {8, false, false, Fp8Kind::kE4M3FN};
    case QuantFormat::kFp8E5M2:
      return {8, false, false, Fp8Kind::kE5M2};
    case QuantFormat::kHfp8:
      return {8, false, false, Fp8Kind::kHfp8E4M3};
  }
  return {8, true, false};
}

float float32_at(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

float float16_at(const uint8_t* p) {
  return half_to_float(static_cast<uint16_t>(p[0] | (p[1] << 8)));
}

// An 8-bit float's value by the definition: sign s, exponent field e, mantissa field m of
// mantissa_bits bits: (-1)^s 2^(e - bias) (1 + m / 2^mantissa_bits) for e > 0, and
// (-1)^s 2^(1 - bias) m / 2^mantissa_bits for e = 0 (ldexp is exact on these).
float fp8_value(uint8_t code, Fp8Kind kind) {
  const int exponent_bits = kind == Fp8Kind::kE5M2 ? 5 : 4;
  const int mantissa_bits = 7 - exponent_bits;
  const int bias = kind == Fp8Kind::kE5M2 ? 15 : 7;
  const bool negative = (code & 0x80) != 0;
  const int e = (code & 0x7F) >> mantissa_bits;
  const int m = code & ((1 << mantissa_bits) - 1);
  const int e_max = (1 << exponent_bits) - 1;
  float magnitude;
  if (kind == Fp8Kind::kE4M3FN && e == e_max && m == (1 << mantissa_bits) - 1) {
    magnitude = std::numeric_limits<float>::quiet_NaN();
  } else if (kind == Fp8Kind::kE5M2 && e == e_max) {
    magnitude =
        m == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
  } else if (e == 0) {
    magnitude = std::ldexp(static_cast<float>(m), 1 - bias - mantissa_bits);
  } else {
    magnitude = std::ldexp(static_cast<float>((1 << mantissa_bits) + m), e - bias - mantissa_bits);
  }
  return negative ? -magnitude : magnitude;
}

}  // namespace

std::vector<float> dequantize(const QuantizedTable& table) {
  const RowLayout layout = layout_of(table.format);
  const int64_t codes_per_byte = 8 / layout.bits;
  const int64_t code_bytes = (table.dim + codes_per_byte - 1) / codes_per_byte;
  const int64_t qparam_bytes = layout.float32_qparams ? 8 : 4;
  std::vector<float> out(static_cast<size_t>(table.rows * table.dim));
  for (int64_t r = 0; r < table.rows; ++r) {
    const uint8_t* row = static_cast<const uint8_t*>(table.data) + r * table.row_stride;
    if (layout.fp8 != Fp8Kind::kNone) {
      // [D codes], nothing else
      for (int64_t d = 0; d < table.dim; ++d)
        out[static_cast<size_t>(r * table.dim + d)] = fp8_value(row[d], layout.fp8);
      continue;
    }
    const uint8_t* codes = layout.qparams_first ? row + qparam_bytes : row;
    const uint8_t* qparams = layout.qparams_first ? row : row + code_bytes;
    const float scale = layout.float32_qparams ? float32_at(qparams) : float16_at(qparams);
    const float bias = layout.float32_qparams ? float32_at(qparams + 4) : float16_at(qparams + 2);
    for (int64_t d = 0; d < table.dim; ++d) {
      const uint8_t byte = codes[d / codes_per_byte];
      const int shift = static_cast<int>((d % codes_per_byte) * layout.bits);
      const int q = (byte >> shift) & ((1 << layout.bits) - 1);
      const float product = scale * static_cast<float>(q);
      out[static_cast<size_t>(r * table.dim + d)] = product + bias;
    }
  }
  return out;
}

Status forward_quantized(const ForwardInputs& inputs, const ForwardOutputs& outputs,
                         const Options& options) {
  if (inputs.quantized_weight == nullptr) {
    return Status(StatusCode::kInvalidArgument, "forward_quantized needs a quantized_weight");
  }
  const QuantizedTable& table = *inputs.quantized_weight;
  std::vector<float> weights = dequantize(table);
  ForwardInputs float_inputs = inputs;
  float_inputs.quantized_weight = nullptr;
  float_inputs.weight = make_view_2d(weights.data(), DType::kFloat32, table.rows, table.dim);
  return ref::forward(float_inputs, outputs, options);
}

}  // namespace embag::ref
