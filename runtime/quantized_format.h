// Where a quantized format keeps its codes and qparams, and which kernel codec decodes it: the
// one table that maps the public QuantFormat (include/embag/quantized.h) onto the kernels'
// QuantCodec (generators/kernel_enums.h) and the byte offsets the kernels take at run time.
#pragma once

#include <cstdint>

#include "embag/quantized.h"
#include "kernel_enums.h"

namespace embag::internal {

struct QuantLayout {
  kernels::QuantCodec codec;
  int bits;                    // of one code
  int qparam_bytes;            // scale + bias: 8 (two float32), 4 (two float16) or 0 (8-bit floats)
  bool qparams_front;          // FBGEMM TBE: [scale][bias][codes]; otherwise [codes][scale][bias]
  kernels::Fp8Encoding fp8{};  // codec kF8: which 8-bit float
};

// Every format's row: its name, its layout. quant_layout(), quant_format_name() and
// parse_quant_format() read it; a format missing here is refused as unknown.
struct QuantFormatInfo {
  QuantFormat format;
  const char* name;
  QuantLayout layout;
};
inline constexpr QuantFormatInfo kQuantFormatTable[] = {
    {QuantFormat::kInt8, "int8", {kernels::QuantCodec::kU8F32, 8, 8, false}},
    {QuantFormat::kInt4, "int4", {kernels::QuantCodec::kU4F16, 4, 4, false}},
    {QuantFormat::kInt2, "int2", {kernels::QuantCodec::kU2F16, 2, 4, false}},
    {QuantFormat::kTbeInt8, "tbe_int8", {kernels::QuantCodec::kU8F16, 8, 4, true}},
    {QuantFormat::kTbeInt4, "tbe_int4", {kernels::QuantCodec::kU4F16, 4, 4, true}},
    {QuantFormat::kTbeInt2, "tbe_int2", {kernels::QuantCodec::kU2F16, 2, 4, true}},
    // mantissa bits, exponent bias, first special magnitude (kernel_enums.h, Fp8Encoding)
    {QuantFormat::kFp8E4M3FN, "fp8_e4m3fn", {kernels::QuantCodec::kF8, 8, 0, false, {3, 7, 0x7F}}},
    {QuantFormat::kFp8E5M2, "fp8_e5m2", {kernels::QuantCodec::kF8, 8, 0, false, {2, 15, 0x7C}}},
    {QuantFormat::kHfp8, "hfp8", {kernels::QuantCodec::kF8, 8, 0, false, {3, 7, 0x80}}},
};

// The row of `format`, or null for a value outside the enum (a cast from a caller's integer).
inline const QuantFormatInfo* quant_format_info(QuantFormat format) {
  for (const QuantFormatInfo& row : kQuantFormatTable) {
    if (row.format == format) return &row;
  }
  return nullptr;
}

QuantLayout quant_layout(QuantFormat format);

// Bytes of a row's codes: ceil(D * bits / 8).
inline int64_t quant_code_bytes(const QuantLayout& layout, int64_t dim) {
  const int64_t per_byte = 8 / layout.bits;
  return (dim + per_byte - 1) / per_byte;
}
inline int64_t quant_code_offset(const QuantLayout& layout) {
  return layout.qparams_front ? layout.qparam_bytes : 0;
}
inline int64_t quant_qparam_offset(const QuantLayout& layout, int64_t dim) {
  return layout.qparams_front ? 0 : quant_code_bytes(layout, dim);
}

}  // namespace embag::internal
