// quantize_rows / dequantize_rows and the format table: float tables to and from PyTorch's and
// FBGEMM's quantized row layouts, byte for byte as they produce them.
//
// What PyTorch 2.14 runs on an x86 CPU with AVX2 (torch.ops.quantized.embedding_bag_byte_prepack
// and embedding_bag_4bit_prepack / 2bit_prepack call FBGEMM's AVX2 quantizers,
// src/QuantUtilsAvx2.cc) is reproduced here step by step in portable scalar code, so every host
// writes the same bytes:
//
// - min and max of a row: eight lanes over the first D / 8 * 8 columns, each lane folded with
//   x86's minps / maxps (`lane < x ? lane : x`, so a NaN replaces the lane's value and the next
//   number replaces the NaN), the lanes then reduced with std::min / std::max from FLT_MAX /
//   -FLT_MAX (a NaN lane is skipped), and the tail columns folded with std::min / std::max (a
//   NaN is skipped). A row of only -inf therefore has max -FLT_MAX, and NaNs never reach min or
//   max except through a lane they end.
// - 8-bit (float32 qparams): scale = (max - min) / 255.0f, bias = min,
//   q = round((x - min) * (255.0f / (range + 1e-8f))), rounded to nearest even and narrowed as
//   FBGEMM's three loops do: blocks of 32 columns saturate to [0, 255] (packs / packus; NaN and
//   out-of-range products give 0), the next blocks of 8 keep the low byte of the int32
//   (cvtps_epi32: NaN gives 0x80000000, so 0), the tail keeps the low byte of lrintf's long.
// - n-bit (float16 qparams): bias = f16(min), min' = float(bias), range = max - min',
//   scale = f16(range == 0 ? 1 : range / (2^bits - 1)), 1 if that is 0, and scale = 1 where
//   1 / scale overflows; q = clamp(round((x - min') * (1 / scale)), 0, 2^bits - 1) -- blocks of
//   32 columns through the saturating packs (NaN gives 0), the rest through lrintf, narrowed to
//   int (mod 2^32) before the clamp. float16 conversions round to nearest even and keep a NaN's
//   payload (F16C). PyTorch refuses D not a multiple of 8 / bits for 4- and 2-bit; FBGEMM's
//   reference quantizer takes any D with the same arithmetic, and so does embag.
// - FBGEMM's TBE layouts (fbgemm_gpu.tbe.utils.quantize.quantize_embs): INT8 is the 8-bit
//   quantizer's codes with its float32 scale and bias rounded to float16 and moved to the front;
//   INT4 / INT2 are the n-bit quantizer's row with its qparams moved to the front.
// - 8-bit floats, one byte per element: float8_e4m3fn and float8_e5m2 as torch 2.14's
//   Tensor.to(torch.float8_*) converts (torch/headeronly/util/Float8_e4m3fn.h, Float8_e5m2.h):
//   the magnitude rounded to nearest even on the format's grid (subnormals included), a NaN to
//   0x7F with the input's sign, and a magnitude that rounds past the largest finite value to
//   infinity where the format has one (e5m2: 0x7C, from 61440 up, +-inf included), else to the
//   largest finite value (e4m3fn saturates: 448, 0x7E, from 464 exclusive up, +-inf included).
//   HFP8 as FBGEMM's FloatToHFP8Quantized (fbgemm_gpu quantize_ops_utils.h, float_to_hfp8) with
//   SparseType.FP8's default config (4 exponent bits, bias 7, max_position 240): the magnitude
//   clamped to 240 by fminf (so infinities and NaN give +-240), then rounded to nearest even.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "api_guard.h"
#include "embag/quantized.h"
#include "half_float.h"
#include "kernel_thread_pool.h"
#include "quantized_format.h"

namespace embag {
namespace internal {

QuantLayout quant_layout(QuantFormat format) {
  const QuantFormatInfo* row = quant_format_info(format);
  return row ? row->layout : QuantLayout{kernels::QuantCodec::kNone, 8, 8, false};
}

}  // namespace internal

namespace {

using internal::quant_code_bytes;
using internal::quant_code_offset;
using internal::quant_layout;
using internal::quant_qparam_offset;
using internal::QuantLayout;
using kernels::Fp8Encoding;

Status invalid(const std::string& message) { return Status(StatusCode::kInvalidArgument, message); }

bool valid_format(QuantFormat format) { return internal::quant_format_info(format) != nullptr; }

// x86's cvtps2dq: round to nearest even; NaN and values outside int32 give INT32_MIN.
int32_t cvtps_epi32(float v) {
  if (!(v >= -2147483648.0f && v < 2147483648.0f)) return std::numeric_limits<int32_t>::min();
  return static_cast<int32_t>(std::nearbyint(v));
}

// lrintf on x86-64 (cvtss2si, 64-bit): NaN and values outside int64 give INT64_MIN.
int64_t x86_lrintf(float v) {
  if (!(v >= -9223372036854775808.0f && v < 9223372036854775808.0f)) {
    return std::numeric_limits<int64_t>::min();
  }
  return static_cast<int64_t>(std::nearbyint(v));
}

// packs_epi32 (to int16, saturating) then packus_epi16 (to uint8, saturating).
uint8_t saturate_to_u8(int32_t v) {
  const int32_t s16 = std::clamp<int32_t>(v, -32768, 32767);
  return static_cast<uint8_t>(std::clamp<int32_t>(s16, 0, 255));
}

// std::min / std::max as the standard defines them (the argument order matters for NaN).
float std_min(float a, float b) { return (b < a) ? b : a; }
float std_max(float a, float b) { return (a < b) ? b : a; }

// FBGEMM's AVX2 min / max of a row (see the file comment).
void row_min_max(const float* x, int64_t dim, float* min_out, float* max_out) {
  constexpr int kLanes = 8;
  float lane_min[kLanes], lane_max[kLanes];
  std::fill(lane_min, lane_min + kLanes, FLT_MAX);
  std::fill(lane_max, lane_max + kLanes, -FLT_MAX);
  const int64_t vector_end = dim / kLanes * kLanes;
  for (int64_t c = 0; c < vector_end; ++c) {
    float& lo = lane_min[c % kLanes];
    float& hi = lane_max[c % kLanes];
    lo = (lo < x[c]) ? lo : x[c];  // minps(lane, x)
    hi = (hi > x[c]) ? hi : x[c];  // maxps(lane, x)
  }
  float lo = FLT_MAX, hi = -FLT_MAX;
  for (int i = 0; i < kLanes; ++i) {
    lo = std_min(lo, lane_min[i]);
    hi = std_max(hi, lane_max[i]);
  }
  for (int64_t c = vector_end; c < dim; ++c) {
    lo = std_min(lo, x[c]);
    hi = std_max(hi, x[c]);
  }
  *min_out = lo;
  *max_out = hi;
}

void put_f32(uint8_t* at, float v) { std::memcpy(at, &v, 4); }
float get_f32(const uint8_t* at) {
  float v;
  std::memcpy(&v, at, 4);
  return v;
}
void put_u16(uint8_t* at, uint16_t v) {
  at[0] = static_cast<uint8_t>(v & 0xff);
  at[1] = static_cast<uint8_t>(v >> 8);
}
uint16_t get_u16(const uint8_t* at) { return static_cast<uint16_t>(at[0] | (at[1] << 8)); }

uint32_t bits_of(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}
float float_of(uint32_t u) {
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

// The largest magnitude FBGEMM's HFP8 quantizer writes (its config's max_position): the largest
// value whose exponent field is below all ones, 2^(2^E - 2 - bias) (2 - 2^-M); 240 for e4m3.
float hfp8_max_position(const Fp8Encoding& f) {
  const int exponent_bits = 7 - f.mantissa_bits;
  return std::ldexp(2.0f - std::ldexp(1.0f, -f.mantissa_bits),
                    (1 << exponent_bits) - 2 - f.exponent_bias);
}

// One float32 to an 8-bit float, rounded to nearest even (the file comment says whose rules).
uint8_t float_to_fp8(float x, const Fp8Encoding& f) {
  const uint32_t sign = (bits_of(x) >> 24) & 0x80;
  float magnitude = std::fabs(x);
  const bool has_specials = f.special_from <= 0x7F;
  if (!has_specials) {
    magnitude = std::fmin(magnitude, hfp8_max_position(f));  // NaN -> max_position, as fminf
  } else if (std::isnan(magnitude)) {
    return static_cast<uint8_t>(0x7F | sign);
  }
  const int shift = 23 - f.mantissa_bits;
  uint32_t code;
  if (magnitude < std::ldexp(1.0f, 1 - f.exponent_bias)) {
    // Subnormal: a multiple of 2^(1 - bias - M), rounded to nearest even (exact division by a
    // power of two, then the default rounding mode); 2^M is the smallest normal's code.
    code = static_cast<uint32_t>(
        std::nearbyint(std::ldexp(magnitude, f.exponent_bias - 1 + f.mantissa_bits)));
  } else {
    // Normal: round float32's mantissa to M bits, nearest even (a carry moves into the
    // exponent), then rebias. Infinity and past the top fall through to the clamp below.
    uint32_t u = bits_of(magnitude);
    u += ((1u << (shift - 1)) - 1) + ((u >> shift) & 1);
    code = (u >> shift) - (static_cast<uint32_t>(127 - f.exponent_bias) << f.mantissa_bits);
  }
  if (has_specials) {
    // Past the top: infinity where the first special code is one (exponent all ones, mantissa
    // 0: e5m2), else the largest finite code (e4m3fn, whose only special code is NaN).
    const auto special = static_cast<uint32_t>(f.special_from);
    const bool has_infinity = (special & ((1u << f.mantissa_bits) - 1)) == 0;
    code = std::min(code, has_infinity ? special : special - 1);
  }
  return static_cast<uint8_t>(code | sign);
}

// An 8-bit float's float32 with the kernels' bits (generators/forward_generator.cpp,
// fp8_to_float), NaNs included: the mantissa in float32's top bits, quiet (as F16C widens e5m2's
// NaNs, and as torch's .float() gives them on x86; e4m3fn's 0x7FF00000 is quiet already).
float fp8_to_float(uint8_t code, const Fp8Encoding& f) {
  const uint32_t magnitude = code & 0x7Fu;
  uint32_t bits;
  if (magnitude < (1u << f.mantissa_bits)) {
    bits = bits_of(static_cast<float>(magnitude) *
                   std::ldexp(1.0f, 1 - f.exponent_bias - f.mantissa_bits));
  } else {
    bits = (magnitude << (23 - f.mantissa_bits)) +
           (static_cast<uint32_t>(127 - f.exponent_bias) << 23);
    if (magnitude >= static_cast<uint32_t>(f.special_from)) {
      bits |= 0x7F800000u;
      if ((bits & 0x007FFFFFu) != 0) bits |= 0x00400000u;  // a NaN: quiet
    }
  }
  return float_of(bits | (static_cast<uint32_t>(code & 0x80) << 24));
}

// One float row (already widened to float32) into one quantized row.
void quantize_row(const float* x, int64_t dim, const QuantLayout& layout, uint8_t* row) {
  if (layout.codec == kernels::QuantCodec::kF8) {
    for (int64_t c = 0; c < dim; ++c) row[c] = float_to_fp8(x[c], layout.fp8);
    return;
  }
  uint8_t* codes = row + quant_code_offset(layout);
  uint8_t* qparams = row + quant_qparam_offset(layout, dim);
  float lo = 0, hi = 0;
  row_min_max(x, dim, &lo, &hi);
  if (layout.codec == kernels::QuantCodec::kU8F32 || layout.codec == kernels::QuantCodec::kU8F16) {
    // The 8-bit quantizer (TBE INT8 rounds its qparams to float16 afterwards).
    const float range = hi - lo;
    const float scale = range / 255.0f;
    const float inverse_scale = 255.0f / (range + 1e-8f);
    const int64_t block32_end = dim / 32 * 32, block8_end = dim / 8 * 8;
    for (int64_t c = 0; c < dim; ++c) {
      const float v = (x[c] - lo) * inverse_scale;
      if (c < block32_end) {
        codes[c] = saturate_to_u8(cvtps_epi32(v));
      } else if (c < block8_end) {
        codes[c] = static_cast<uint8_t>(static_cast<uint32_t>(cvtps_epi32(v)) & 0xff);
      } else {
        codes[c] = static_cast<uint8_t>(static_cast<uint64_t>(x86_lrintf(v)) & 0xff);
      }
    }
    if (layout.qparam_bytes == 8) {
      put_f32(qparams, scale);
      put_f32(qparams + 4, lo);
    } else {
      put_u16(qparams, ref::float_to_half(scale));
      put_u16(qparams + 2, ref::float_to_half(lo));
    }
    return;
  }
  const int bits = layout.bits;
  const int max_code = (1 << bits) - 1;
  const uint16_t bias_half = ref::float_to_half(lo);
  const float bias = ref::half_to_float(bias_half);
  const float range = hi - bias;
  float scale = range == 0 ? 1.0f : range / static_cast<float>(max_code);
  scale = ref::half_to_float(ref::float_to_half(scale));
  if (scale == 0) scale = 1.0f;
  float inverse_scale = 1.0f / scale;
  if (std::isinf(inverse_scale)) {
    scale = 1.0f;
    inverse_scale = 1.0f;
  }
  put_u16(qparams, ref::float_to_half(scale));
  put_u16(qparams + 2, bias_half);
  const int per_byte = 8 / bits;
  std::memset(codes, 0, static_cast<size_t>(quant_code_bytes(layout, dim)));
  // FBGEMM's vector loop covers whole blocks of 32 columns for 4- and 2-bit codes only.
  const int64_t block32_end = bits < 8 ? dim / 32 * 32 : 0;
  for (int64_t c = 0; c < dim; ++c) {
    const float v = (x[c] - bias) * inverse_scale;
    int32_t q;
    if (c < block32_end) {
      q = std::min<int32_t>(saturate_to_u8(cvtps_epi32(v)), max_code);
    } else {
      // std::min<int>(lrintf(v), max): the long narrowed to int, as C++ converts it.
      const auto narrowed = static_cast<int32_t>(static_cast<uint32_t>(x86_lrintf(v)));
      q = std::max(0, std::min(narrowed, max_code));
    }
    codes[c / per_byte] |= static_cast<uint8_t>(q << ((c % per_byte) * bits));
  }
}

float element_as_float(const TensorView& view, int64_t row, int64_t col) {
  const int64_t at = row * view.strides[0] + col;
  switch (view.dtype) {
    case DType::kFloat16:
      return ref::half_to_float(static_cast<const uint16_t*>(view.data)[at]);
    case DType::kBFloat16:
      return ref::bfloat16_to_float(static_cast<const uint16_t*>(view.data)[at]);
    default:
      return static_cast<const float*>(view.data)[at];
  }
}

void store_float(const TensorView& view, int64_t row, int64_t col, float v) {
  const int64_t at = row * view.strides[0] + col;
  switch (view.dtype) {
    case DType::kFloat16:
      static_cast<uint16_t*>(view.data)[at] = ref::float_to_half(v);
      return;
    case DType::kBFloat16:
      static_cast<uint16_t*>(view.data)[at] = ref::float_to_bfloat16(v);
      return;
    default:
      static_cast<float*>(view.data)[at] = v;
  }
}

// The rules both conversions share: a CPU float table (V, D) of float32 / float16 / bfloat16
// with contiguous rows, and a quantized table of the same V and D whose stride holds a row.
Status check_pair(const TensorView& floats, const QuantizedTable& table, const char* float_name,
                  const char* table_name) {
  if (!valid_format(table.format)) {
    return invalid(std::string(table_name) + ": unknown quantized format " +
                   std::to_string(static_cast<int>(table.format)));
  }
  if (floats.ndim != 2) {
    return invalid(std::string(float_name) +
                   " has to be a 2D Tensor, but got Tensor of dimension " +
                   std::to_string(floats.ndim));
  }
  if (floats.dtype != DType::kFloat32 && floats.dtype != DType::kFloat16 &&
      floats.dtype != DType::kBFloat16) {
    return invalid(std::string(float_name) + " must be float32, float16 or bfloat16, but got " +
                   dtype_name(floats.dtype));
  }
  if (floats.device.type != DeviceType::kCPU || table.device.type != DeviceType::kCPU) {
    return Status(StatusCode::kUnsupported,
                  "quantize_rows / dequantize_rows run on CPU memory only");
  }
  if (floats.shape[0] < 0 || floats.shape[1] < 0 ||
      (floats.shape[0] > 1 && floats.strides[0] < floats.shape[1]) ||
      (floats.shape[1] > 1 && floats.strides[1] != 1)) {
    return invalid(std::string(float_name) +
                   " must have contiguous rows of non-negative size, but has shape " +
                   floats.shape_string());
  }
  if (table.rows != floats.shape[0] || table.dim != floats.shape[1]) {
    return invalid(std::string(table_name) + " has " + std::to_string(table.rows) +
                   " rows of D = " + std::to_string(table.dim) + ", but " + float_name +
                   " has shape " + floats.shape_string());
  }
  const int64_t row_bytes = quantized_row_bytes(table.format, table.dim);
  if (table.rows > 1 && table.row_stride < row_bytes) {
    return invalid(std::string(table_name) + ": row stride " + std::to_string(table.row_stride) +
                   " bytes is less than a row of format " + quant_format_name(table.format) +
                   " with D = " + std::to_string(table.dim) + " (" + std::to_string(row_bytes) +
                   " bytes)");
  }
  if (table.rows > 0 && table.dim > 0 && (table.data == nullptr || floats.data == nullptr)) {
    return invalid(std::string("a non-empty ") + float_name + " or " + table_name + " has no data");
  }
  return Status::Ok();
}

// Rows [first, end) of a parallel task: rows are independent, so the split never changes a byte.
template <typename Body>
void for_each_row_parallel(int64_t rows, Body&& body) {
  constexpr int64_t kRowsPerTask = 256;
  const int64_t tasks64 = (rows + kRowsPerTask - 1) / kRowsPerTask;
  if (tasks64 <= 1) {
    body(int64_t{0}, rows);
    return;
  }
  struct Context {
    Body* body;
    int64_t rows;
  } context{&body, rows};
  internal::parallel_for(
      static_cast<int>(std::min<int64_t>(tasks64, std::numeric_limits<int>::max())),
      [](void* raw, int task) {
        auto* c = static_cast<Context*>(raw);
        const int64_t begin = static_cast<int64_t>(task) * kRowsPerTask;
        (*c->body)(begin, std::min(begin + kRowsPerTask, c->rows));
      },
      &context);
}

}  // namespace

const char* quant_format_name(QuantFormat format) {
  const internal::QuantFormatInfo* row = internal::quant_format_info(format);
  return row ? row->name : "unknown";
}

std::optional<QuantFormat> parse_quant_format(const std::string& name) {
  for (const internal::QuantFormatInfo& row : internal::kQuantFormatTable) {
    if (name == row.name) return row.format;
  }
  return std::nullopt;
}

std::string quant_format_names() {
  std::string names;
  for (const internal::QuantFormatInfo& row : internal::kQuantFormatTable) {
    if (!names.empty()) names += ", ";
    names += row.name;
  }
  return names;
}

int quant_format_bits(QuantFormat format) { return quant_layout(format).bits; }

int64_t quantized_row_bytes(QuantFormat format, int64_t dim) {
  if (dim < 0 || dim > (std::numeric_limits<int64_t>::max() >> 1) || !valid_format(format))
    return -1;
  const QuantLayout layout = quant_layout(format);
  return quant_code_bytes(layout, dim) + layout.qparam_bytes;
}

Status quantize_rows(const TensorView& weight, const QuantizedTable& out) {
  return internal::guard_api([&] {
    if (Status s = check_pair(weight, out, "weight", "quantized table"); !s.ok()) return s;
    const QuantLayout layout = quant_layout(out.format);
    const int64_t dim = weight.shape[1];
    auto* bytes = static_cast<uint8_t*>(const_cast<void*>(out.data));
    for_each_row_parallel(weight.shape[0], [&](int64_t begin, int64_t end) {
      std::vector<float> row(static_cast<size_t>(dim));
      for (int64_t r = begin; r < end; ++r) {
        for (int64_t c = 0; c < dim; ++c)
          row[static_cast<size_t>(c)] = element_as_float(weight, r, c);
        quantize_row(row.data(), dim, layout, bytes + r * out.row_stride);
      }
    });
    return Status::Ok();
  });
}

Status dequantize_rows(const QuantizedTable& table, const TensorView& out) {
  return internal::guard_api([&] {
    if (Status s = check_pair(out, table, "output", "quantized table"); !s.ok()) return s;
    const QuantLayout layout = quant_layout(table.format);
    const int64_t dim = table.dim;
    const auto* bytes = static_cast<const uint8_t*>(table.data);
    for_each_row_parallel(table.rows, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const uint8_t* row = bytes + r * table.row_stride;
        if (layout.codec == kernels::QuantCodec::kF8) {
          for (int64_t c = 0; c < dim; ++c)
            store_float(out, r, c, fp8_to_float(row[c], layout.fp8));
          continue;
        }
        const uint8_t* codes = row + quant_code_offset(layout);
        const uint8_t* qparams = row + quant_qparam_offset(layout, dim);
        const float scale =
            layout.qparam_bytes == 8 ? get_f32(qparams) : ref::half_to_float(get_u16(qparams));
        const float bias = layout.qparam_bytes == 8 ? get_f32(qparams + 4)
                                                    : ref::half_to_float(get_u16(qparams + 2));
        const int per_byte = 8 / layout.bits;
        for (int64_t c = 0; c < dim; ++c) {
          const int q =
              (codes[c / per_byte] >> ((c % per_byte) * layout.bits)) & ((1 << layout.bits) - 1);
          // (compiled with -ffp-contract=off: the product is rounded before the add)
          const float product = scale * static_cast<float>(q);
          store_float(out, r, c, product + bias);
        }
      }
    });
    return Status::Ok();
  });
}

}  // namespace embag
