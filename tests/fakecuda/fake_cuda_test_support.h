// tests/fakecuda/fake_cuda_test_support.h: what the tests that link the fake CUDA driver share:
// its driver entry points (declared here: no cuda.h is needed, and none is included, so these
// tests build wherever the fake does), a context and stream of the test's own, and device
// arrays in the fake's memory.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "embag/embag.h"
#include "fake_cuda.h"

extern "C" {
int cuInit(unsigned int);
int cuCtxCreate_v2(void**, unsigned int, int);
int cuCtxDestroy_v2(void*);
int cuCtxPushCurrent_v2(void*);
int cuCtxPopCurrent_v2(void**);
int cuCtxGetCurrent(void**);
int cuStreamCreate(void**, unsigned int);
int cuStreamDestroy_v2(void*);
int cuMemAlloc_v2(unsigned long long*, size_t);
int cuMemFree_v2(unsigned long long);
int cuMemcpyHtoD_v2(unsigned long long, const void*, size_t);
int cuMemcpyDtoH_v2(void*, unsigned long long, size_t);
}

namespace fakecuda_test {

// A context of the test's own on `device` (not the primary one) and a stream in it; nothing is
// left current on the thread.
class OwnContext {
 public:
  explicit OwnContext(int device = 0) {
    EXPECT_EQ(cuInit(0), 0);
    EXPECT_EQ(cuCtxCreate_v2(&context_, 0, device), 0);
    EXPECT_EQ(cuStreamCreate(&stream_, 0), 0);
    void* popped = nullptr;
    EXPECT_EQ(cuCtxPopCurrent_v2(&popped), 0);
  }
  ~OwnContext() {
    cuCtxPushCurrent_v2(context_);
    cuStreamDestroy_v2(stream_);
    void* popped = nullptr;
    cuCtxPopCurrent_v2(&popped);
    cuCtxDestroy_v2(context_);
  }
  OwnContext(const OwnContext&) = delete;
  OwnContext& operator=(const OwnContext&) = delete;

  void* context() const { return context_; }
  void* stream() const { return stream_; }

 private:
  void* context_ = nullptr;
  void* stream_ = nullptr;
};

// Device memory in `owner`'s context, filled from / read back to the host.
class DeviceBuffer {
 public:
  DeviceBuffer(const OwnContext& owner, size_t bytes) : owner_(owner), bytes_(bytes) {
    Scope scope(owner_);
    EXPECT_EQ(cuMemAlloc_v2(&pointer_, bytes), 0);
  }
  ~DeviceBuffer() {
    Scope scope(owner_);
    cuMemFree_v2(pointer_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return reinterpret_cast<void*>(pointer_); }
  void write(const void* host, size_t bytes) {
    Scope scope(owner_);
    EXPECT_EQ(cuMemcpyHtoD_v2(pointer_, host, bytes), 0);
  }
  std::vector<uint8_t> read() const {
    std::vector<uint8_t> out(bytes_);
    Scope scope(owner_);
    EXPECT_EQ(cuMemcpyDtoH_v2(out.data(), pointer_, bytes_), 0);
    return out;
  }

 private:
  struct Scope {
    explicit Scope(const OwnContext& c) { cuCtxPushCurrent_v2(c.context()); }
    ~Scope() {
      void* popped = nullptr;
      cuCtxPopCurrent_v2(&popped);
    }
  };
  const OwnContext& owner_;
  size_t bytes_;
  unsigned long long pointer_ = 0;
};

// Runs one embag call inside the fake's call checks; the violations it recorded, one a line
// (empty when it broke no rule).
template <typename Call>
std::string checked(void* stream, Call&& call, embag::Status* status) {
  fakecuda_begin_call(stream);
  *status = call();
  const char* broken = fakecuda_end_call();
  return broken == nullptr ? std::string() : std::string(broken);
}

}  // namespace fakecuda_test
