// Non-owning tensor views: how callers hand arrays to embag without copying.
//
// A TensorView describes memory the caller owns: a pointer, an element type, a shape of at most
// two dimensions, strides in elements, and the device the memory lives on. embag never frees or
// reallocates it. Views are checked by embag::validate() before any kernel runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "embag/export.h"

namespace EMBAG_API embag {

// Element types embag understands. Index arrays are Int32/Int64; tables, outputs and
// per-sample weights are floating point.
enum class DType : uint8_t { kInt32, kInt64, kFloat16, kBFloat16, kFloat32, kFloat64 };

// "int32", "float16", ... (PyTorch's spelling without the "torch." prefix).
const char* dtype_name(DType dtype);
// Size of one element in bytes.
size_t dtype_size(DType dtype);

// Where memory lives. `data` is a host pointer (kCPU), a CUDA device pointer (kCUDA: a
// CUdeviceptr, as torch.Tensor.data_ptr() gives it), or an OpenCL buffer (kOpenCL: the cl_mem
// handle itself; views start at the buffer's first byte). All tensors of one call must be on one
// device.
enum class DeviceType : uint8_t { kCPU, kCUDA, kOpenCL };

// "cpu", "cuda", "opencl".
const char* device_type_name(DeviceType type);

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;
};

// A view of a 0-, 1- or 2-dimensional array. `strides` are in elements, not bytes.
// embag requires the innermost stride to be 1 (rows are contiguous); a 2-D view may have a row
// stride larger than its row length (a slice of a wider table).
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  int ndim = 0;
  int64_t shape[2] = {0, 0};
  int64_t strides[2] = {0, 0};
  Device device{};

  // Number of elements, or -1 when an extent is negative or the product overflows int64.
  int64_t numel() const;
  bool is_contiguous() const;
  // "(3, 4)" — used in error messages.
  std::string shape_string() const;
};

// Contiguous 1-D view of `n` elements.
TensorView make_view_1d(void* data, DType dtype, int64_t n, Device device = {});
// Contiguous (or row-strided, when row_stride > cols) 2-D view.
TensorView make_view_2d(void* data, DType dtype, int64_t rows, int64_t cols,
                        int64_t row_stride = -1, Device device = {});

}  // namespace embag
