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
  int bits;            // of one code
  int qparam_bytes;    // scale + bias: 8 (two float32) or 4 (two float16)
  bool qparams_front;  // FBGEMM TBE: [scale][bias][codes]; otherwise [codes][scale][bias]
};

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
