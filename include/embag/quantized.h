// Quantized tables: rows of 8-, 4- or 2-bit codes with a per-row scale and bias, or of 8-bit
// floats, in PyTorch's and FBGEMM's byte layouts, so that callers hand embag the bytes they
// already have.
//
// A quantized table is a view of bytes plus a format (QuantizedTable). embag::forward takes one
// in ForwardInputs::quantized_weight in place of a float table; quantize_rows() and
// dequantize_rows() convert float tables to and from every format, byte for byte as PyTorch's
// prepack ops and FBGEMM's quantizers do (docs/quantized.md lists what was checked, NaN and
// infinity included).
//
// One row of each format (bytes; produced by):
//   kInt8        [D codes][scale f32][bias f32], D + 8 (torch embedding_bag_byte_prepack)
//   kInt4        [ceil(D/2) codes][scale f16][bias f16], ceil(D/2) + 4 (embedding_bag_4bit_prepack)
//   kInt2        [ceil(D/4) codes][scale f16][bias f16], ceil(D/4) + 4 (embedding_bag_2bit_prepack)
//   kTbeInt8     [scale f16][bias f16][D codes], D + 4 (FBGEMM inference TBE, INT8)
//   kTbeInt4     [scale f16][bias f16][ceil(D/2) codes], ceil(D/2) + 4 (FBGEMM TBE, INT4)
//   kTbeInt2     [scale f16][bias f16][ceil(D/4) codes], ceil(D/4) + 4 (FBGEMM TBE, INT2)
//   kFp8E4M3FN   [D float8_e4m3fn], D (a torch.float8_e4m3fn tensor's bytes)
//   kFp8E5M2     [D float8_e5m2], D (a torch.float8_e5m2 tensor's bytes)
//   kHfp8        [D HFP8], D (FBGEMM inference TBE, SparseType.FP8 with its default config)
//
// Codes are unsigned and packed lowest bits first (element i of a 4-bit row is the low nibble of
// byte i/2 when i is even). Every integer format dequantises an element as
//   w = scale * q + bias          in float32, the product rounded before the add (no FMA);
// an 8-bit float is the float32 it denotes: float8_e4m3fn (exponent bias 7, 0x7F / 0xFF NaN, no
// infinity, largest 448), float8_e5m2 (bias 15, IEEE infinities and NaNs, largest 57344) and
// HFP8 (e4m3, bias 7, no special codes: 0x7F / 0xFF are +-480).
// embag pools w exactly as it pools a float32 table's element: forward on a quantized table
// gives bitwise what forward gives on dequantize_rows() of it (float32 output). FBGEMM's TBE pads
// each row to a row alignment (16 bytes for its GPU tables); that is a row stride here, so any
// stride >= the row's bytes is accepted.
//
// Quantized tables are inference tables: max_norm (which would rewrite rows) and backward are
// refused, as PyTorch and FBGEMM have neither.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "embag/export.h"
#include "embag/status.h"
#include "embag/tensor.h"

namespace EMBAG_API embag {

enum class QuantFormat : uint8_t {
  kInt8,
  kInt4,
  kInt2,
  kTbeInt8,
  kTbeInt4,
  kTbeInt2,
  kFp8E4M3FN,
  kFp8E5M2,
  kHfp8
};

// "int8", "int4", "int2", "tbe_int8", "tbe_int4", "tbe_int2", "fp8_e4m3fn", "fp8_e5m2", "hfp8".
const char* quant_format_name(QuantFormat format);
std::optional<QuantFormat> parse_quant_format(const std::string& name);
// Every format's name in enum order, comma-separated ("int8, int4, ..."), for messages.
std::string quant_format_names();
// Bits of one code: 8, 4 or 2 (8 for the 8-bit floats).
int quant_format_bits(QuantFormat format);
// Bytes of one row of D columns (codes and qparams, no padding); -1 when D < 0 or overflows.
int64_t quantized_row_bytes(QuantFormat format, int64_t dim);

// A table of `rows` rows of `dim` columns, row r at data + r * row_stride bytes, each row
// quantized_row_bytes(format, dim) bytes long (row_stride may be larger: padding, or a slice).
struct QuantizedTable {
  const void* data = nullptr;
  QuantFormat format = QuantFormat::kInt8;
  int64_t rows = 0;
  int64_t dim = 0;
  int64_t row_stride = 0;  // in bytes
  Device device{};
};

// Quantizes a float32 / float16 / bfloat16 table `weight` (V, D) into `out` (V rows of
// out.row_stride bytes; out.rows and out.dim must be V and D, out.format says which format),
// as PyTorch's prepack ops and FBGEMM's quantizers do (bfloat16 is widened exactly first).
// The 8-bit floats round to nearest even as torch 2.14's Tensor.to(torch.float8_e4m3fn /
// float8_e5m2) does (NaN gives NaN; what rounds past the largest finite value saturates to 448
// in e4m3fn, which has no infinity, and gives infinity in e5m2; infinities likewise), and HFP8
// as FBGEMM's FloatToHFP8Quantized with its default config (magnitudes, infinities and NaN
// clamped to 240).
// Only a row's own bytes are written (padding past them is left as it is). Runs on
// num_threads() threads; rows are independent, so the bytes do not depend on the count.
Status quantize_rows(const TensorView& weight, const QuantizedTable& out);

// Dequantizes `table` into `out` (V, D) of float32, float16 or bfloat16 (float32 values
// w = scale * q + bias, or an 8-bit float's value, rounded once to out's dtype).
Status dequantize_rows(const QuantizedTable& table, const TensorView& out);

}  // namespace embag
