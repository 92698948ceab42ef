// HalideBuffer: caller memory described as halide_buffer_t.
#include "halide_buffer.h"

#include "enum_tables.h"

namespace embag::internal {
namespace {

// Kernels never touch the memory of an empty array, but Halide wants a non-null host pointer
// for every buffer it is handed.
alignas(64) unsigned char g_empty_storage[64];

}  // namespace

halide_type_t halide_type_of(DType dtype) {
  const DTypeInfo* row = find_row(kDTypeTable, &DTypeInfo::dtype, dtype);
  if (row == nullptr) return halide_type_t();
  return halide_type_t(row->halide_code, static_cast<uint8_t>(row->bytes * 8));
}

void HalideBuffer::init(const void* data, halide_type_t type, int dimensions) {
  buffer_.host = static_cast<uint8_t*>(const_cast<void*>(data ? data : g_empty_storage));
  buffer_.type = type;
  buffer_.dimensions = dimensions;
  buffer_.dim = dims_;
}

HalideBuffer::HalideBuffer(const void* data, DType dtype, int64_t n) {
  init(data, halide_type_of(dtype), 1);
  dims_[0] = halide_dimension_t(0, static_cast<int32_t>(n), 1);
}

HalideBuffer::HalideBuffer(const void* data, DType dtype, int64_t rows, int64_t cols,
                           int64_t row_stride)
    : HalideBuffer(data, halide_type_of(dtype), rows, cols, row_stride) {}

HalideBuffer::HalideBuffer(const void* data, halide_type_t type, int64_t rows, int64_t cols,
                           int64_t row_stride) {
  init(data, type, 2);
  dims_[0] = halide_dimension_t(0, static_cast<int32_t>(cols), 1);
  dims_[1] = halide_dimension_t(0, static_cast<int32_t>(rows), static_cast<int32_t>(row_stride));
}

}  // namespace embag::internal
