// The CUDA driver, loaded at run time: a program that links embag runs on machines without a
// GPU or a driver, and says why CUDA is unavailable instead of failing to start.
#pragma once

#include <string>

namespace embag::internal::cuda {

// The driver entry points embag itself calls (Halide's runtime loads its own).
struct Driver {
  using Result = int;  // CUresult
  Result (*cuInit)(unsigned int);
  Result (*cuDeviceGetCount)(int*);
  Result (*cuDeviceGet)(int*, int);
  Result (*cuDeviceGetName)(char*, int, int);
  Result (*cuDeviceGetAttribute)(int*, int, int);
  Result (*cuCtxGetCurrent)(void**);
  Result (*cuCtxGetDevice)(int*);
  Result (*cuCtxPushCurrent)(void*);
  Result (*cuCtxPopCurrent)(void**);
  Result (*cuStreamGetCtx)(void*, void**);
  Result (*cuDevicePrimaryCtxRetain)(void**, int);
  Result (*cuDevicePrimaryCtxRelease)(int);
  Result (*cuMemAllocAsync)(unsigned long long*, size_t, void*);
  Result (*cuMemFreeAsync)(unsigned long long, void*);
  Result (*cuMemcpyDtoHAsync)(void*, unsigned long long, size_t, void*);
  Result (*cuStreamSynchronize)(void*);
  Result (*cuGetErrorName)(Result, const char**);
};

// The loaded and initialised driver, or nullptr with `why` saying what is missing ("no driver:
// libcuda.so.1 not found", "no device: cuInit failed with CUDA_ERROR_NO_DEVICE").
const Driver* driver(std::string* why);

// "CUDA_ERROR_INVALID_VALUE (1)".
std::string error_name(int result);

// Compute capability of device `ordinal` as major * 10 + minor, or -1.
int compute_capability(int ordinal);

// The one-line summary embag::cuda_status() returns.
std::string status_line();

}  // namespace embag::internal::cuda
