// The quantized-table reference: quantized_reference.h says what it fixes and why.
#include "reference/quantized_reference.h"

#include <cstring>

#include "reference/half_float.h"
#include "reference/reference.h"

namespace embag::ref {
namespace {

// Each format's row, restated from include/embag/quantized.h's table: code width, whether the
// scale and bias are float32 (else float16), and whether they come before the codes.
struct RowLayout {
  int bits;
  bool float32_qparams;
  bool qparams_first;
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

}  // namespace

std::vector<float> dequantize(const QuantizedTable& table) {
  const RowLayout layout = layout_of(table.format);
  const int64_t codes_per_byte = 8 / layout.bits;
  const int64_t code_bytes = (table.dim + codes_per_byte - 1) / codes_per_byte;
  const int64_t qparam_bytes = layout.float32_qparams ? 8 : 4;
  std::vector<float> out(static_cast<size_t>(table.rows * table.dim));
  for (int64_t r = 0; r < table.rows; ++r) {
    const uint8_t* row = static_cast<const uint8_t*>(table.data) + r * table.row_stride;
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
