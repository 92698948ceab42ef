// Fuzzes embag::from_dlpack: any DLTensor description (dtype, ndim, shape, strides, byte_offset,
// device, null data) must convert or be refused with a message, never crash or overflow (UBSan
// catches signed overflow); a view that converts, handed to embag::validate as the table, is then
// accepted or refused without reading it.
#include <dlpack/dlpack.h>

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "embag/dlpack.h"
#include "embag/embag.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  embag::fuzz::FuzzInput in(data, size);
  alignas(64) static unsigned char storage[4096];
  int64_t shape[4], strides[4];
  DLTensor t{};
  t.ndim = static_cast<int32_t>(in.below(5)) - 1;  // -1 .. 3
  for (int i = 0; i < 4; ++i) {
    // Mostly small extents; sometimes any int64 (negative, huge).
    shape[i] = in.flag() ? in.take<int64_t>() : static_cast<int64_t>(in.below(9));
    strides[i] = in.flag() ? in.take<int64_t>() : static_cast<int64_t>(in.below(9));
  }
  t.shape = in.below(8) == 0 ? nullptr : shape;
  t.strides = in.flag() ? strides : nullptr;
  t.byte_offset = in.flag() ? in.take<uint64_t>() : in.below(64);
  t.data = in.below(4) == 0 ? nullptr : storage;
  const uint8_t codes[] = {kDLInt, kDLUInt, kDLFloat, kDLBfloat, kDLComplex};
  t.dtype.code = codes[in.below(5)];
  const uint8_t bits[] = {8, 16, 32, 64};
  t.dtype.bits = bits[in.below(4)];
  t.dtype.lanes = in.below(6) == 0 ? 2 : 1;
  const DLDeviceType devices[] = {kDLCPU, kDLCUDA, kDLOpenCL, kDLCUDAHost};
  t.device = DLDevice{devices[in.below(4)], static_cast<int32_t>(in.below(3))};

  embag::TensorView view = embag::make_view_1d(nullptr, embag::DType::kInt64, 7);
  const embag::Status s = embag::from_dlpack(t, &view);
  if (!s.ok()) {
    if (s.message().empty() || view.shape[0] != 7) std::abort();  // refused: view untouched
    return 0;
  }
  // Converted: as the weight of a small call that reads no row (no bags), validate must answer
  // without touching the view's memory.
  int64_t input[1] = {0}, offsets[1] = {0};
  embag::TensorView offsets_view = embag::make_view_1d(offsets, embag::DType::kInt64, 0);
  embag::ForwardInputs fin{view, embag::make_view_1d(input, embag::DType::kInt64, 1), &offsets_view,
                           nullptr};
  float out[1];
  embag::Options o;
  o.mode = embag::Mode::kSum;
  const int64_t dim = view.ndim == 2 ? view.shape[1] : 0;
  (void)embag::validate(fin, {embag::make_view_2d(out, embag::DType::kFloat32, 0, dim)}, o);
  return 0;
}
