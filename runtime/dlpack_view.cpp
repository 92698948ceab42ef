// DLTensor -> TensorView conversion.
#include "embag/dlpack.h"

#include <cstdint>
#include <limits>
#include <optional>
#include <string>

namespace embag {
namespace {

std::optional<DType> dtype_from_dlpack(DLDataType t) {
  if (t.lanes != 1) return std::nullopt;
  if (t.code == kDLInt && t.bits == 32) return DType::kInt32;
  if (t.code == kDLInt && t.bits == 64) return DType::kInt64;
  if (t.code == kDLFloat && t.bits == 16) return DType::kFloat16;
  if (t.code == kDLFloat && t.bits == 32) return DType::kFloat32;
  if (t.code == kDLFloat && t.bits == 64) return DType::kFloat64;
  if (t.code == kDLBfloat && t.bits == 16) return DType::kBFloat16;
  return std::nullopt;
}

// A DLPack dtype as NumPy / PyTorch spell it ("int8", "uint64", "complex64", "bool"), or its
// codes where there is no common name.
std::string dlpack_dtype_name(DLDataType t) {
  std::string base;
  switch (t.code) {
    case kDLInt:
      base = "int";
      break;
    case kDLUInt:
      base = "uint";
      break;
    case kDLFloat:
      base = "float";
      break;
    case kDLBfloat:
      base = "bfloat";
      break;
    case 5:  // kDLComplex
      base = "complex";
      break;
    case 6:  // kDLBool
      if (t.bits == 8) base = "bool";
      break;
    default:
      break;
  }
  if (base.empty()) {
    return "(DLPack code " + std::to_string(t.code) + ", bits " + std::to_string(t.bits) + ")";
  }
  std::string name = base == "bool" ? base : base + std::to_string(t.bits);
  if (t.lanes != 1) name += " x " + std::to_string(t.lanes) + " lanes";
  return name;
}

}  // namespace

Status from_dlpack(const DLTensor& tensor, TensorView* view) {
  const std::optional<DType> dtype = dtype_from_dlpack(tensor.dtype);
  if (!dtype) {
    return Status(StatusCode::kInvalidArgument,
                  "dtype " + dlpack_dtype_name(tensor.dtype) +
                      " is not one embag takes (tables and weights: float16, bfloat16, float32, "
                      "float64; indices and offsets: int32, int64)");
  }
  if (tensor.ndim < 0 || tensor.ndim > 2) {
    return Status(StatusCode::kInvalidArgument,
                  "embag takes tensors of at most 2 dimensions, but the DLPack tensor has " +
                      std::to_string(tensor.ndim));
  }
  Device device;
  if (tensor.device.device_type == kDLCPU) {
    device.type = DeviceType::kCPU;
  } else if (tensor.device.device_type == kDLCUDA) {
    device.type = DeviceType::kCUDA;
  } else {
    return Status(StatusCode::kInvalidArgument, "DLPack device type " +
                                                    std::to_string(tensor.device.device_type) +
                                                    " is neither CPU nor CUDA");
  }
  device.index = tensor.device.device_id;

  // A null pointer plus an offset is not null, but points nowhere (and the addition itself is
  // undefined behaviour), so the view's own null check would be fooled.
  if (tensor.data == nullptr && tensor.byte_offset != 0) {
    return Status(StatusCode::kInvalidArgument,
                  "DLPack tensor has a null data pointer but byte_offset " +
                      std::to_string(tensor.byte_offset));
  }
  if (tensor.data != nullptr && tensor.byte_offset > std::numeric_limits<uintptr_t>::max() -
                                                         reinterpret_cast<uintptr_t>(tensor.data)) {
    return Status(StatusCode::kInvalidArgument, "DLPack tensor's byte_offset " +
                                                    std::to_string(tensor.byte_offset) +
                                                    " runs past the end of the address space");
  }
  if (tensor.ndim > 0 && tensor.shape == nullptr) {
    return Status(StatusCode::kInvalidArgument, "DLPack tensor has " + std::to_string(tensor.ndim) +
                                                    " dimensions but a null shape pointer");
  }

  TensorView v;
  v.data = tensor.data == nullptr ? nullptr : static_cast<char*>(tensor.data) + tensor.byte_offset;
  v.dtype = *dtype;
  v.ndim = tensor.ndim;
  v.device = device;
  int64_t stride = 1;
  for (int i = tensor.ndim - 1; i >= 0; --i) {
    v.shape[i] = tensor.shape[i];
    v.strides[i] = tensor.strides ? tensor.strides[i] : stride;
    // The compact stride of the row dimension; a shape whose product overflows gets a stride
    // that validation refuses (and wrapping here would be undefined behaviour).
    if (__builtin_mul_overflow(stride, tensor.shape[i], &stride)) {
      stride = std::numeric_limits<int64_t>::max();
    }
  }
  *view = v;
  return Status::Ok();
}

}  // namespace embag
