// Wraps caller memory in a halide_buffer_t without copying, for calling generated kernels.
#pragma once

#include <HalideRuntime.h>

#include <cstdint>

#include "embag/tensor.h"

namespace embag::internal {

// The element type Halide calls `dtype`.
halide_type_t halide_type_of(DType dtype);

// A halide_buffer_t over existing memory. Halide orders dimensions innermost first, so a
// (rows, cols) matrix is Halide's (cols, rows). Holds a pointer into itself: not copyable.
class HalideBuffer {
 public:
  // A 1-D array of n elements.
  HalideBuffer(const void* data, DType dtype, int64_t n);
  // A (rows, cols) matrix whose rows are row_stride elements apart.
  HalideBuffer(const void* data, DType dtype, int64_t rows, int64_t cols, int64_t row_stride);
  // The same for element types embag has no DType for (a quantized table's bytes: uint8).
  HalideBuffer(const void* data, halide_type_t type, int64_t rows, int64_t cols,
               int64_t row_stride);

  HalideBuffer(const HalideBuffer&) = delete;
  HalideBuffer& operator=(const HalideBuffer&) = delete;

  halide_buffer_t* get() { return &buffer_; }

 private:
  void init(const void* data, halide_type_t type, int dimensions);

  halide_buffer_t buffer_{};
  halide_dimension_t dims_[2]{};
};

}  // namespace embag::internal
