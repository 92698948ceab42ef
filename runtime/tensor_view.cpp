// TensorView helpers: element sizes, names, shapes in messages, view constructors.
#include <sstream>

#include "embag/tensor.h"
#include "enum_tables.h"

namespace embag {

const char* dtype_name(DType dtype) {
  const internal::DTypeInfo* row =
      internal::find_row(internal::kDTypeTable, &internal::DTypeInfo::dtype, dtype);
  return row ? row->name : "unknown";
}

const char* device_type_name(DeviceType type) {
  return internal::name_in(internal::kDeviceTypeTable, type, "unknown");
}

size_t dtype_size(DType dtype) {
  const internal::DTypeInfo* row =
      internal::find_row(internal::kDTypeTable, &internal::DTypeInfo::dtype, dtype);
  return row ? row->bytes : 0;
}

// -1 for a negative extent or a product that does not fit int64 (a caller's shape such as
// (3, 0x5555555555555556) must not wrap to a small, plausible count).
int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim && i < 2; ++i) {
    if (shape[i] < 0 || __builtin_mul_overflow(n, shape[i], &n)) return -1;
  }
  return n;
}

bool TensorView::is_contiguous() const {
  if (ndim <= 0) return true;
  if (ndim == 1) return strides[0] == 1 || shape[0] <= 1;
  return (strides[1] == 1 || shape[1] <= 1) && (strides[0] == shape[1] || shape[0] <= 1);
}

std::string TensorView::shape_string() const {
  std::ostringstream out;
  out << '[';
  for (int i = 0; i < ndim && i < 2; ++i) out << (i ? ", " : "") << shape[i];
  if (ndim > 2) out << ", ...";
  out << ']';
  return out.str();
}

TensorView make_view_1d(void* data, DType dtype, int64_t n, Device device) {
  TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.ndim = 1;
  v.shape[0] = n;
  v.strides[0] = 1;
  v.device = device;
  return v;
}

TensorView make_view_2d(void* data, DType dtype, int64_t rows, int64_t cols, int64_t row_stride,
                        Device device) {
  TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.ndim = 2;
  v.shape[0] = rows;
  v.shape[1] = cols;
  v.strides[0] = row_stride < 0 ? cols : row_stride;
  v.strides[1] = 1;
  v.device = device;
  return v;
}

}  // namespace embag
