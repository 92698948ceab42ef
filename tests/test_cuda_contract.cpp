// The CUDA driver-API contract of embag's public entry points, on the fake CUDA driver
// (tests/fakecuda/), which checks every driver call a call makes: forward and backward on a
// stream the test created in a context that is not the primary one (every launch, copy and
// allocation on that stream, its context current, pushes and pops balanced, nothing left
// allocated), the synchronisations docs/gpu.md promises (forward: none with IndexCheck::kNone,
// exactly one with kFull; backward one more), and the refusals: a stream of another device's
// context, a device that does not exist, tensors on two devices, each with its message and
// nothing written.
//
// With the PTX interpreter (the fake's normal build) results are compared with the CPU's, bit for
// bit; a fake without it runs no kernel, and the tests then check the contract only.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "fake_cuda_test_support.h"

namespace embag {
namespace {

using fakecuda_test::DeviceBuffer;
using fakecuda_test::OwnContext;

constexpr int64_t V = 6, D = 5, B = 3, N = 7;

// How the fake names a stream in CallRecord::streams_used.
std::string stream_name(void* stream) {
  char b[40];
  std::snprintf(b, sizeof b, "stream 0x%llx",
                static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(stream)));
  return b;
}

// A small call's arrays on the device, and the host copies they came from.
struct SmallCall {
  explicit SmallCall(const OwnContext& own, int device_index = 0)
      : gpu{DeviceType::kCUDA, device_index},
        weight(own, V * D * 4),
        input(own, N * 8),
        offsets(own, B * 8),
        output(own, B * D * 4),
        grad_output(own, B * D * 4),
        grad_weight(own, V * D * 4) {
    for (int64_t i = 0; i < V * D; ++i) host_weight[i] = 0.25f * static_cast<float>(i % 13) - 1;
    for (int64_t i = 0; i < B * D; ++i) host_grad[i] = 0.5f * static_cast<float>(i % 7) - 1;
    weight.write(host_weight, sizeof host_weight);
    input.write(host_input, sizeof host_input);
    offsets.write(host_offsets, sizeof host_offsets);
    grad_output.write(host_grad, sizeof host_grad);
    std::vector<uint8_t> sentinel(B * D * 4, 0xA5);
    output.write(sentinel.data(), sentinel.size());
    std::vector<uint8_t> sentinel_table(V * D * 4, 0xA5);
    grad_weight.write(sentinel_table.data(), sentinel_table.size());
    in.weight = make_view_2d(weight.data(), DType::kFloat32, V, D, -1, gpu);
    in.input = make_view_1d(input.data(), DType::kInt64, N, gpu);
    offsets_view = make_view_1d(offsets.data(), DType::kInt64, B, gpu);
    in.offsets = &offsets_view;
    out.output = make_view_2d(output.data(), DType::kFloat32, B, D, -1, gpu);
    bin.weight = in.weight;
    bin.input = in.input;
    bin.offsets = in.offsets;
    bin.grad_output = make_view_2d(grad_output.data(), DType::kFloat32, B, D, -1, gpu);
    grad_weight_view = make_view_2d(grad_weight.data(), DType::kFloat32, V, D, -1, gpu);
    bout.grad_weight = &grad_weight_view;
  }

  bool output_untouched() const {
    for (uint8_t byte : output.read()) {
      if (byte != 0xA5) return false;
    }
    return true;
  }
  bool grad_weight_untouched() const {
    for (uint8_t byte : grad_weight.read()) {
      if (byte != 0xA5) return false;
    }
    return true;
  }

  Device gpu;
  float host_weight[V * D];
  int64_t host_input[N] = {0, 2, 2, 5, 1, 0, 4};
  int64_t host_offsets[B] = {0, 3, 3};
  float host_grad[B * D];
  DeviceBuffer weight, input, offsets, output, grad_output, grad_weight;
  TensorView offsets_view, grad_weight_view;
  ForwardInputs in;
  ForwardOutputs out;
  BackwardInputs bin;
  BackwardOutputs bout;
};

class CudaContract : public ::testing::Test {
 protected:
  void SetUp() override {
    fakecuda::set_record_only(false);
    fakecuda::clear();
  }
};

// Everything on the caller's stream, in its (non-primary) context, and the results, when the
// fake runs kernels, equal to the CPU's bit for bit.
TEST_F(CudaContract, ForwardOnOwnStreamInNonPrimaryContext) {
  OwnContext own;
  SmallCall c(own);
  for (IndexCheck check : {IndexCheck::kNone, IndexCheck::kFull}) {
    Execution exec;
    exec.stream = own.stream();
    exec.index_check = check;
    Status status;
    const std::string broken = fakecuda_test::checked(
        own.stream(), [&] { return forward(c.in, c.out, Options{}, exec); }, &status);
    const fakecuda::CallRecord record = fakecuda::last_call();
    EXPECT_EQ(broken, "");
    EXPECT_FALSE(record.launches.empty());
    // Halide's runtime keeps its kernels' intermediate buffers for reuse (fake_cuda.h): said in
    // the log, so a change in what it keeps shows.
    for (const std::string& kept : record.halide_cached) {
      std::printf("[ halide   ] kept %s\n", kept.c_str());
    }
    EXPECT_EQ(record.streams_used, std::vector<std::string>{stream_name(own.stream())});
    // docs/gpu.md: no synchronisation without the check, exactly one (its verdict) with it.
    EXPECT_EQ(record.synchronisations, check == IndexCheck::kNone ? 0 : 1);
    if (!fakecuda::executes_kernels()) continue;  // the check's verdict was never computed
    ASSERT_TRUE(status.ok()) << status.message();
    std::vector<float> expected(B * D);
    ForwardInputs host_in;
    host_in.weight = make_view_2d(c.host_weight, DType::kFloat32, V, D);
    host_in.input = make_view_1d(c.host_input, DType::kInt64, N);
    TensorView host_offsets = make_view_1d(c.host_offsets, DType::kInt64, B);
    host_in.offsets = &host_offsets;
    ForwardOutputs host_out;
    host_out.output = make_view_2d(expected.data(), DType::kFloat32, B, D);
    ASSERT_TRUE(forward(host_in, host_out, Options{}).ok());
    const std::vector<uint8_t> got = c.output.read();
    EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size()), 0);
  }
}

// Backward: one synchronisation more than forward (to learn how many distinct rows there are),
// on the caller's stream; scratch freed on the stream it was allocated on.
TEST_F(CudaContract, BackwardOnOwnStreamInNonPrimaryContext) {
  OwnContext own;
  SmallCall c(own);
  for (IndexCheck check : {IndexCheck::kNone, IndexCheck::kFull}) {
    Execution exec;
    exec.stream = own.stream();
    exec.index_check = check;
    Status status;
    const std::string broken = fakecuda_test::checked(
        own.stream(), [&] { return backward(c.bin, c.bout, Options{}, exec); }, &status);
    const fakecuda::CallRecord record = fakecuda::last_call();
    EXPECT_EQ(broken, "");
    if (!fakecuda::executes_kernels()) {
      // kFull: the check's verdict was never computed, so the call stops at its (made-up) error,
      // after the check's one synchronisation.
      EXPECT_EQ(record.synchronisations, 1);
      continue;
    }
    EXPECT_EQ(record.synchronisations, check == IndexCheck::kNone ? 1 : 2);
    ASSERT_TRUE(status.ok()) << status.message();
    std::vector<float> expected(V * D);
    BackwardInputs host_in;
    host_in.weight = make_view_2d(c.host_weight, DType::kFloat32, V, D);
    host_in.input = make_view_1d(c.host_input, DType::kInt64, N);
    TensorView host_offsets = make_view_1d(c.host_offsets, DType::kInt64, B);
    host_in.offsets = &host_offsets;
    host_in.grad_output = make_view_2d(c.host_grad, DType::kFloat32, B, D);
    BackwardOutputs host_out;
    TensorView host_grad_weight = make_view_2d(expected.data(), DType::kFloat32, V, D);
    host_out.grad_weight = &host_grad_weight;
    ASSERT_TRUE(backward(host_in, host_out, Options{}).ok());
    const std::vector<uint8_t> got = c.grad_weight.read();
    EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size()), 0);
  }
}

// Refusals: the message, no launch, no rule broken, nothing written.
struct Refusal {
  const char* name;
  const char* message;  // a part of the refusal's message
};

void expect_refused(const Refusal& r, void* stream, const std::function<Status()>& call,
                    const SmallCall& c) {
  Status status;
  const std::string broken = fakecuda_test::checked(stream, call, &status);
  EXPECT_FALSE(status.ok()) << r.name;
  EXPECT_NE(status.message().find(r.message), std::string::npos)
      << r.name << ": " << status.message();
  EXPECT_EQ(broken, "") << r.name;
  EXPECT_TRUE(fakecuda::last_call().launches.empty()) << r.name;
  EXPECT_TRUE(c.output_untouched()) << r.name;
  EXPECT_TRUE(c.grad_weight_untouched()) << r.name;
}

TEST_F(CudaContract, StreamOfAnotherDevicesContextIsRefused) {
  OwnContext own(0), other(1);
  SmallCall c(own);
  Execution exec;
  exec.stream = other.stream();  // cuda:1's context; the tensors say cuda:0
  const Refusal r{"forward", "the stream's context belongs to another device"};
  expect_refused(
      r, other.stream(), [&] { return forward(c.in, c.out, Options{}, exec); }, c);
  expect_refused(
      {"backward", r.message}, other.stream(),
      [&] { return backward(c.bin, c.bout, Options{}, exec); }, c);
}

TEST_F(CudaContract, DeviceThatDoesNotExistIsRefused) {
  OwnContext own;
  SmallCall c(own);
  ForwardInputs in = c.in;
  ForwardOutputs out = c.out;
  const Device missing{DeviceType::kCUDA, 7};  // the fake has cuda:0 and cuda:1
  in.weight.device = in.input.device = missing;
  TensorView offsets = *c.in.offsets;
  offsets.device = missing;
  in.offsets = &offsets;
  out.output.device = missing;
  Execution exec;
  exec.stream = own.stream();
  expect_refused(
      {"forward", "cuda:7, which does not exist"}, own.stream(),
      [&] { return forward(in, out, Options{}, exec); }, c);
}

TEST_F(CudaContract, MixedDevicesAreRefused) {
  OwnContext own;
  SmallCall c(own);
  ForwardInputs in = c.in;
  in.input.device = Device{DeviceType::kCUDA, 1};
  Execution exec;
  exec.stream = own.stream();
  expect_refused(
      {"forward", "must be on one device"}, own.stream(),
      [&] { return forward(in, c.out, Options{}, exec); }, c);
}

// A launch the fake refuses (a grid past CUDA's limits) is the call's error, with CUDA's words:
// the launch-limit tests depend on it.
TEST_F(CudaContract, CallsPastTheCudaSizesAreRefused) {
  OwnContext own;
  SmallCall c(own);
  ForwardInputs in = c.in;
  ForwardOutputs out = c.out;
  const int64_t too_many = (int64_t{1} << 31) - 511;  // one past the CUDA limit (gpu_plan.h)
  // Arrays of their own, as large as the shapes say (never-touched MAP_NORESERVE mappings), so
  // that the host's overlap checks pass and the CUDA limit is what refuses the call.
  DeviceBuffer big_offsets(own, static_cast<size_t>(too_many) * 8),
      big_output(own, static_cast<size_t>(too_many) * D * 4);
  TensorView offsets = make_view_1d(big_offsets.data(), DType::kInt64, too_many, c.gpu);
  in.offsets = &offsets;
  out.output = make_view_2d(big_output.data(), DType::kFloat32, too_many, D, -1, c.gpu);
  Execution exec;
  exec.stream = own.stream();
  exec.index_check = IndexCheck::kNone;
  expect_refused(
      {"forward", "launch over at most"}, own.stream(),
      [&] { return forward(in, out, Options{}, exec); }, c);
}

}  // namespace
}  // namespace embag
