// The fake CUDA driver's own checks (tests/fakecuda/), each made to fire: a check that never
// fires would let the cuda-emulated tests pass whatever embag does. Driven through the driver
// API directly, with a hand-written PTX module.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "fake_cuda_test_support.h"

extern "C" {
int cuModuleLoadData(void**, const void*);
int cuModuleGetFunction(void**, void*, const char*);
int cuLaunchKernel(void*, unsigned int, unsigned int, unsigned int, unsigned int, unsigned int,
                   unsigned int, unsigned int, void*, void**, void**);
int cuMemAllocAsync(unsigned long long*, size_t, void*);
int cuMemFreeAsync(unsigned long long, void*);
int cuMemcpyHtoDAsync_v2(unsigned long long, const void*, size_t, void*);
}

namespace {

using fakecuda_test::OwnContext;

// One float copied from the first pointer to the second, by thread 0 of block 0.
const char* const kCopyOne = R"(
.version 7.0
.target sm_80
.address_size 64

.visible .entry copy_one(
	.param .u64 copy_one_param_0,
	.param .u64 copy_one_param_1
)
{
	.reg .f32 	%f<2>;
	.reg .b64 	%rd<5>;

	ld.param.u64 	%rd1, [copy_one_param_0];
	ld.param.u64 	%rd2, [copy_one_param_1];
	cvta.to.global.u64 	%rd3, %rd1;
	cvta.to.global.u64 	%rd4, %rd2;
	ld.global.f32 	%f1, [%rd3];
	st.global.f32 	[%rd4], %f1;
	ret;
}
)";

// Pushes `context` for a scope.
struct Current {
  explicit Current(void* context) { cuCtxPushCurrent_v2(context); }
  ~Current() {
    void* popped = nullptr;
    cuCtxPopCurrent_v2(&popped);
  }
};

bool mentions(const std::string& violations, const std::string& what) {
  return violations.find(what) != std::string::npos;
}

class FakeCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    fakecuda::set_record_only(false);
    fakecuda::clear();
  }
  // A module loaded in `own`'s context and its copy_one function.
  void* load(const OwnContext& own) {
    Current current(own.context());
    void* module = nullptr;
    EXPECT_EQ(cuModuleLoadData(&module, kCopyOne), 0);
    void* function = nullptr;
    EXPECT_EQ(cuModuleGetFunction(&function, module, "copy_one"), 0);
    return function;
  }
  static std::string all_violations() {
    std::string out;
    for (const std::string& v : fakecuda::violations()) out += v + "\n";
    return out;
  }
};

TEST_F(FakeCuda, LaunchPastTheGridLimitsIsRefusedAndRecorded) {
  OwnContext own;
  void* function = load(own);
  fakecuda_test::DeviceBuffer a(own, 4), b(own, 4);
  unsigned long long pa = reinterpret_cast<uintptr_t>(a.data()),
                     pb = reinterpret_cast<uintptr_t>(b.data());
  void* params[] = {&pa, &pb};
  Current current(own.context());
  EXPECT_EQ(cuLaunchKernel(function, 1, 65536, 1, 1, 1, 1, 0, own.stream(), params, nullptr), 1);
  EXPECT_EQ(cuLaunchKernel(function, 1, 1, 1, 1025, 1, 1, 0, own.stream(), params, nullptr), 1);
  EXPECT_EQ(cuLaunchKernel(function, 1, 1, 65536, 1, 1, 1, 0, own.stream(), params, nullptr), 1);
  const std::string v = all_violations();
  EXPECT_TRUE(mentions(v, "grid (1, 65536, 1), block (1, 1, 1) exceeds CUDA's grid limits")) << v;
  EXPECT_TRUE(mentions(v, "block (1025, 1, 1) exceeds CUDA's block limits")) << v;
  EXPECT_TRUE(mentions(v, "grid (1, 1, 65536)")) << v;
  // The largest legal grid is accepted.
  fakecuda::clear();
  fakecuda::set_record_only(true);
  EXPECT_EQ(cuLaunchKernel(function, 2147483647u, 65535, 65535, 1024, 1, 1, 0, own.stream(), params,
                           nullptr),
            0);
  EXPECT_EQ(all_violations(), "");
}

TEST_F(FakeCuda, WorkOnAnotherStreamOrContextIsRecorded) {
  OwnContext own, other;
  void* function = load(own);
  fakecuda_test::DeviceBuffer a(own, 4), b(own, 4);
  unsigned long long pa = reinterpret_cast<uintptr_t>(a.data()),
                     pb = reinterpret_cast<uintptr_t>(b.data());
  void* params[] = {&pa, &pb};
  fakecuda::set_record_only(true);
  {
    // The call's stream is own's, but the launch goes to other's stream, with other current.
    fakecuda_begin_call(own.stream());
    Current current(other.context());
    cuLaunchKernel(function, 1, 1, 1, 1, 1, 1, 0, other.stream(), params, nullptr);
  }
  const char* broken = fakecuda_end_call();
  ASSERT_NE(broken, nullptr);
  EXPECT_TRUE(mentions(broken, "not on the caller's stream")) << broken;
  EXPECT_TRUE(mentions(broken, "its module was loaded in context")) << broken;
  // The stream's context not current.
  fakecuda::clear();
  {
    Current current(other.context());
    float x = 1;
    cuMemcpyHtoDAsync_v2(pa, &x, 4, own.stream());
  }
  EXPECT_TRUE(mentions(all_violations(), "belongs to context")) << all_violations();
}

TEST_F(FakeCuda, UnbalancedPushesAndLeftoverScratchAreRecorded) {
  OwnContext own;
  fakecuda_begin_call(own.stream());
  cuCtxPushCurrent_v2(own.context());  // never popped within the call
  unsigned long long scratch = 0;
  EXPECT_EQ(cuMemAllocAsync(&scratch, 64, own.stream()), 0);  // never freed within the call
  EXPECT_NE(fakecuda_end_call(), nullptr);
  const std::string all = all_violations();
  EXPECT_TRUE(mentions(all, "pushes and pops do not balance")) << all;
  EXPECT_TRUE(mentions(all, "cuMemAllocAsync allocation")) << all;
  // Freed on another stream than its allocation's.
  fakecuda::clear();
  void* other_stream = nullptr;
  EXPECT_EQ(cuStreamCreate(&other_stream, 0), 0);  // in own's context, still current
  cuMemFreeAsync(scratch, other_stream);
  EXPECT_TRUE(mentions(all_violations(), "came from cuMemAllocAsync on stream"))
      << all_violations();
  cuStreamDestroy_v2(other_stream);
  void* popped = nullptr;
  cuCtxPopCurrent_v2(&popped);
}

TEST_F(FakeCuda, CopiesOutsideAllocationsAndFreedArgumentsAreRecorded) {
  OwnContext own;
  void* function = load(own);
  fakecuda_test::DeviceBuffer a(own, 16);
  Current current(own.context());
  char host[32] = {};
  EXPECT_NE(cuMemcpyHtoD_v2(reinterpret_cast<uintptr_t>(a.data()) + 8, host, 16), 0);
  EXPECT_TRUE(mentions(all_violations(), "is not inside one live allocation")) << all_violations();
  // A kernel argument pointing into memory freed before the launch.
  fakecuda::clear();
  unsigned long long freed = 0;
  ASSERT_EQ(cuMemAlloc_v2(&freed, 64), 0);
  ASSERT_EQ(cuMemFree_v2(freed), 0);
  unsigned long long pa = reinterpret_cast<uintptr_t>(a.data());
  void* params[] = {&freed, &pa};
  fakecuda::set_record_only(true);
  EXPECT_NE(cuLaunchKernel(function, 1, 1, 1, 1, 1, 1, 0, own.stream(), params, nullptr), 0);
  EXPECT_TRUE(mentions(all_violations(), "points into freed device memory")) << all_violations();
}

// With the PTX interpreter: a kernel's load past its allocation fails the launch, naming it;
// in bounds, the value arrives.
TEST_F(FakeCuda, KernelLoadsAreBoundsChecked) {
  if (!fakecuda::executes_kernels()) {
    GTEST_SKIP() << "this build of the fake has no PTX interpreter (tests/fakecuda/"
                    "ptx_*.cpp): kernels are checked, not run";
  }
  OwnContext own;
  void* function = load(own);
  fakecuda_test::DeviceBuffer a(own, 4), b(own, 4);
  const float value = 1.5f;
  a.write(&value, 4);
  unsigned long long pa = reinterpret_cast<uintptr_t>(a.data()),
                     pb = reinterpret_cast<uintptr_t>(b.data());
  {
    void* params[] = {&pa, &pb};
    Current current(own.context());
    EXPECT_EQ(cuLaunchKernel(function, 1, 1, 1, 1, 1, 1, 0, own.stream(), params, nullptr), 0);
  }
  float got = 0;
  std::memcpy(&got, b.read().data(), 4);
  EXPECT_EQ(got, value);
  unsigned long long past = pa + 4;  // one float past the end of a's 4 bytes
  void* params[] = {&past, &pb};
  Current current(own.context());
  EXPECT_NE(cuLaunchKernel(function, 1, 1, 1, 1, 1, 1, 0, own.stream(), params, nullptr), 0);
  EXPECT_TRUE(mentions(all_violations(), "not inside one live allocation")) << all_violations();
}

}  // namespace
