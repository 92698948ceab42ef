// embag::from_dlpack: DLTensor descriptions become the TensorViews embag validates and runs.
#include <gtest/gtest.h>
#include <cctype>

#include <cstdint>
#include <vector>

#include "embag/dlpack.h"
#include "embag/embag.h"

namespace {

DLTensor make_tensor(void* data, DLDataType dtype, std::vector<int64_t>& shape,
                     int64_t* strides = nullptr, DLDeviceType device = kDLCPU) {
  DLTensor t{};
  t.data = data;
  t.device = DLDevice{device, 0};
  t.ndim = static_cast<int32_t>(shape.size());
  t.dtype = dtype;
  t.shape = shape.data();
  t.strides = strides;
  t.byte_offset = 0;
  return t;
}

TEST(DLPack, CompactTensorsBecomeRowMajorViews) {
  std::vector<float> table(12);
  std::vector<int64_t> shape = {3, 4};
  DLTensor t = make_tensor(table.data(), DLDataType{kDLFloat, 32, 1}, shape);
  embag::TensorView v;
  ASSERT_TRUE(embag::from_dlpack(t, &v).ok());
  EXPECT_EQ(v.dtype, embag::DType::kFloat32);
  EXPECT_EQ(v.ndim, 2);
  EXPECT_EQ(v.shape[0], 3);
  EXPECT_EQ(v.shape[1], 4);
  EXPECT_EQ(v.strides[0], 4);
  EXPECT_EQ(v.strides[1], 1);
  EXPECT_EQ(v.data, table.data());
  EXPECT_EQ(v.device.type, embag::DeviceType::kCPU);
}

TEST(DLPack, StridesByteOffsetAndDtypesAreCarried) {
  std::vector<uint16_t> table(40);
  std::vector<int64_t> shape = {3, 4};
  int64_t strides[] = {10, 1};  // a slice of a wider table
  DLTensor t = make_tensor(table.data(), DLDataType{kDLBfloat, 16, 1}, shape, strides);
  t.byte_offset = 4;
  embag::TensorView v;
  ASSERT_TRUE(embag::from_dlpack(t, &v).ok());
  EXPECT_EQ(v.dtype, embag::DType::kBFloat16);
  EXPECT_EQ(v.strides[0], 10);
  EXPECT_EQ(v.data, reinterpret_cast<char*>(table.data()) + 4);

  struct Case {
    DLDataType dl;
    embag::DType expected;
  };
  for (const Case& c :
       {Case{{kDLInt, 32, 1}, embag::DType::kInt32}, Case{{kDLInt, 64, 1}, embag::DType::kInt64},
        Case{{kDLFloat, 16, 1}, embag::DType::kFloat16},
        Case{{kDLFloat, 64, 1}, embag::DType::kFloat64}}) {
    DLTensor u = make_tensor(table.data(), c.dl, shape);
    ASSERT_TRUE(embag::from_dlpack(u, &v).ok());
    EXPECT_EQ(v.dtype, c.expected);
  }
}

TEST(DLPack, UnsupportedDescriptionsAreRefusedAndLeaveTheViewAlone) {
  std::vector<float> table(8);
  std::vector<int64_t> shape3 = {2, 2, 2};
  std::vector<int64_t> shape2 = {2, 4};
  const embag::TensorView untouched = embag::make_view_1d(nullptr, embag::DType::kInt64, 7);
  DLTensor null_with_offset = make_tensor(nullptr, {kDLFloat, 32, 1}, shape2);
  null_with_offset.byte_offset = 64;
  DLTensor wrapping_offset = make_tensor(table.data(), {kDLFloat, 32, 1}, shape2);
  wrapping_offset.byte_offset = UINT64_MAX - 3;
  DLTensor null_shape = make_tensor(table.data(), {kDLFloat, 32, 1}, shape2);
  null_shape.shape = nullptr;
  struct Case {
    DLTensor tensor;
    const char* fragment;
  };
  const Case cases[] = {
      {make_tensor(table.data(), {kDLFloat, 32, 1}, shape3), "at most 2 dimensions"},
      {make_tensor(table.data(), {kDLUInt, 8, 1}, shape2), "dtype uint8 is not one embag takes"},
      {make_tensor(table.data(), {kDLInt, 8, 1}, shape2), "dtype int8 is not one embag takes"},
      {make_tensor(table.data(), {5, 64, 1}, shape2), "dtype complex64 is not"},
      {make_tensor(table.data(), {6, 8, 1}, shape2), "dtype bool is not"},
      {make_tensor(table.data(), {kDLFloat, 32, 4}, shape2), "float32 x 4 lanes"},
      {make_tensor(table.data(), {kDLFloat, 32, 1}, shape2, nullptr, kDLOpenCL),
       "neither CPU nor CUDA"},
      // null + offset is a non-null pointer to nowhere; the view's null check would miss it.
      {null_with_offset, "null data pointer but byte_offset 64"},
      {null_shape, "null shape pointer"},
      {wrapping_offset, "runs past the end of the address space"},
  };
  for (const Case& c : cases) {
    embag::TensorView v = untouched;
    const embag::Status s = embag::from_dlpack(c.tensor, &v);
    EXPECT_EQ(s.code(), embag::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find(c.fragment), std::string::npos) << s.message();
    EXPECT_EQ(v.shape[0], 7);
  }
}

// A CUDA tensor from DLPack is a CUDA view; a call mixing it with CPU tensors is refused, and
// an all-CUDA call is accepted only where CUDA can run (validation reads no device data).
TEST(DLPack, CudaTensorsAreDescribedAndValidatedByDevice) {
  std::vector<float> table(8), out(4);
  std::vector<int64_t> shape = {2, 4};
  DLTensor t = make_tensor(table.data(), {kDLFloat, 32, 1}, shape, nullptr, kDLCUDA);
  embag::ForwardInputs in;
  ASSERT_TRUE(embag::from_dlpack(t, &in.weight).ok());
  EXPECT_EQ(in.weight.device.type, embag::DeviceType::kCUDA);
  std::vector<int64_t> idx = {0, 1};
  in.input = embag::make_view_2d(idx.data(), embag::DType::kInt64, 1, 2);
  embag::ForwardOutputs outs;
  outs.output = embag::make_view_2d(out.data(), embag::DType::kFloat32, 1, 4);
  embag::Status s = embag::validate(in, outs, embag::Options{});
  bool cuda_kernels = false;
  for (embag::Isa isa : embag::compiled_isas()) {
    cuda_kernels = cuda_kernels || embag::isa_device(isa) == embag::DeviceType::kCUDA;
  }
  if (cuda_kernels) {
    EXPECT_EQ(s.code(), embag::StatusCode::kInvalidArgument) << s.message();
    EXPECT_NE(s.message().find("weight is on cuda:0 and input is on cpu"), std::string::npos)
        << s.message();
  } else {  // a build without CUDA kernels refuses the CUDA weight first
    EXPECT_EQ(s.code(), embag::StatusCode::kUnsupported) << s.message();
    EXPECT_NE(s.message().find("has no cuda kernels"), std::string::npos) << s.message();
  }

  in.input.device = in.weight.device;
  outs.output.device = in.weight.device;
  s = embag::validate(in, outs, embag::Options{});
  if (embag::cuda_status().rfind("unavailable", 0) == 0) {
    // ("... has no cuda kernels" in a build without them, "CUDA is unavailable here: ..." in one
    // with them on a machine without a GPU)
    EXPECT_EQ(s.code(), embag::StatusCode::kUnsupported) << s.message();
    std::string lower = s.message();
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_NE(lower.find("cuda"), std::string::npos) << s.message();
  } else {
    EXPECT_TRUE(s.ok()) << s.message();
  }
}

}  // namespace
