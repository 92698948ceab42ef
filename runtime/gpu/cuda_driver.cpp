// Loading the CUDA driver with dlopen, and what it says about the machine's devices.
#include "cuda_driver.h"

#include <dlfcn.h>

#include <mutex>

#include "embag/embag.h"
#include "gpu_session.h"
#include "kernel_registry.h"

namespace embag::internal::cuda {
namespace {

// Attribute numbers from cuda.h (stable ABI values).
constexpr int kComputeCapabilityMajor = 75;
constexpr int kComputeCapabilityMinor = 76;
constexpr int kNoDevice = 100;  // CUDA_ERROR_NO_DEVICE

struct Loaded {
  Driver driver{};
  std::string why;  // empty when the driver is usable
};

template <typename Fn>
bool resolve(void* library, const char* name, Fn* out) {
  *out = reinterpret_cast<Fn>(dlsym(library, name));
  return *out != nullptr;
}

const Loaded& loaded() {
  static const Loaded* result = [] {
    auto* l = new Loaded;
    void* library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) {
      l->why = "no driver: libcuda.so.1 not found";
      return l;
    }
    Driver& d = l->driver;
    // The _v2 entry points are the current ABI of these functions.
    const bool ok =
        resolve(library, "cuInit", &d.cuInit) &&
        resolve(library, "cuDeviceGetCount", &d.cuDeviceGetCount) &&
        resolve(library, "cuDeviceGet", &d.cuDeviceGet) &&
        resolve(library, "cuDeviceGetName", &d.cuDeviceGetName) &&
        resolve(library, "cuDeviceGetAttribute", &d.cuDeviceGetAttribute) &&
        resolve(library, "cuCtxGetCurrent", &d.cuCtxGetCurrent) &&
        resolve(library, "cuCtxGetDevice", &d.cuCtxGetDevice) &&
        resolve(library, "cuCtxPushCurrent_v2", &d.cuCtxPushCurrent) &&
        resolve(library, "cuCtxPopCurrent_v2", &d.cuCtxPopCurrent) &&
        resolve(library, "cuStreamGetCtx", &d.cuStreamGetCtx) &&
        resolve(library, "cuDevicePrimaryCtxRetain", &d.cuDevicePrimaryCtxRetain) &&
        resolve(library, "cuDevicePrimaryCtxRelease_v2", &d.cuDevicePrimaryCtxRelease) &&
        resolve(library, "cuMemAllocAsync", &d.cuMemAllocAsync) &&
        resolve(library, "cuMemFreeAsync", &d.cuMemFreeAsync) &&
        resolve(library, "cuMemcpyDtoHAsync_v2", &d.cuMemcpyDtoHAsync) &&
        resolve(library, "cuStreamSynchronize", &d.cuStreamSynchronize) &&
        resolve(library, "cuGetErrorName", &d.cuGetErrorName);
    if (!ok) {
      l->why = "driver too old: libcuda.so.1 lacks an entry point embag needs (CUDA 11.2 or newer)";
      return l;
    }
    if (int r = d.cuInit(0); r != 0) {
      l->why = (r == kNoDevice ? "no device: " : "driver unusable: ") +
               std::string("cuInit failed with ") + error_name(r);
    }
    return l;
  }();
  return *result;
}

}  // namespace

const Driver* driver(std::string* why) {
  const Loaded& l = loaded();
  if (!l.why.empty()) {
    if (why != nullptr) *why = l.why;
    return nullptr;
  }
  return &l.driver;
}

std::string error_name(int result) {
  const char* name = nullptr;
  const Loaded& l = loaded();
  if (l.driver.cuGetErrorName != nullptr) l.driver.cuGetErrorName(result, &name);
  return std::string(name != nullptr ? name : "CUDA error") + " (" + std::to_string(result) + ")";
}

int compute_capability(int ordinal) {
  const Driver* d = driver(nullptr);
  if (d == nullptr) return -1;
  int device = 0, major = 0, minor = 0;
  if (d->cuDeviceGet(&device, ordinal) != 0 ||
      d->cuDeviceGetAttribute(&major, kComputeCapabilityMajor, device) != 0 ||
      d->cuDeviceGetAttribute(&minor, kComputeCapabilityMinor, device) != 0) {
    return -1;
  }
  return major * 10 + minor;
}

std::string status_line() {
  if (!device_has_kernels(DeviceType::kCUDA)) {
    return "unavailable: this build has no CUDA kernels (configured without the CUDA toolkit)";
  }
  std::string why;
  const Driver* d = driver(&why);
  if (d == nullptr) return "unavailable: " + why;
  int count = 0;
  if (int r = d->cuDeviceGetCount(&count); r != 0 || count == 0) {
    return "unavailable: no device" + (r != 0 ? " (" + error_name(r) + ")" : std::string());
  }
  std::string line;
  for (int i = 0; i < count; ++i) {
    char name[256] = {};
    int device = 0;
    d->cuDeviceGet(&device, i);
    d->cuDeviceGetName(name, sizeof name, device);
    const int cc = compute_capability(i);
    Isa isa{};
    const Status usable = gpu_isa_for_capability(cc, &isa);
    line += (i ? "; " : "") + std::string("cuda:") + std::to_string(i) + " " + name + " (sm_" +
            std::to_string(cc) + ", " +
            (usable.ok() ? std::string("runs ") + isa_name(isa) : usable.message()) + ")";
  }
  return line;
}

}  // namespace embag::internal::cuda
