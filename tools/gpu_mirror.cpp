// Device mirrors of host views: OpenCL buffers or CUDA memory, both APIs loaded with dlopen (as
// embag loads them), so programs using this start on machines without either. CUDA goes
// through the driver API, not the CUDA runtime: the runtime asks the driver for private tables,
// so only the driver API also runs on the fake CUDA driver of the cuda-emulated tests
// (tests/fakecuda/), whose call checks the mirror turns on when it finds them.
#include "gpu_mirror.h"

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <dlfcn.h>

#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

namespace embag::gpu_mirror {
namespace {

// The OpenCL entry points the mirror uses, from libOpenCL.so.1 when it is there.
struct OpenClApi {
  decltype(&::clGetPlatformIDs) GetPlatformIDs = nullptr;
  decltype(&::clGetDeviceIDs) GetDeviceIDs = nullptr;
  decltype(&::clCreateContext) CreateContext = nullptr;
  decltype(&::clCreateCommandQueue) CreateCommandQueue = nullptr;
  decltype(&::clCreateBuffer) CreateBuffer = nullptr;
  decltype(&::clReleaseMemObject) ReleaseMemObject = nullptr;
  decltype(&::clEnqueueReadBuffer) EnqueueReadBuffer = nullptr;
  decltype(&::clFinish) Finish = nullptr;
};

const OpenClApi* cl() {
  static const OpenClApi* api = []() -> const OpenClApi* {
    // The process's own OpenCL first (a linked loader, or Oclgrind's preloaded runtime, which
    // must not be mixed with another implementation), as Halide's runtime does; else the loader.
    // (RTLD_DEFAULT is a null handle, so "found" is kept apart from the handle.)
    const bool in_process = dlsym(RTLD_DEFAULT, "clGetPlatformIDs") != nullptr;
    void* library = in_process ? RTLD_DEFAULT : dlopen("libOpenCL.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!in_process && library == nullptr) return nullptr;
    auto* a = new OpenClApi;
    auto load = [&](auto* fn, const char* name) {
      *fn = reinterpret_cast<std::remove_reference_t<decltype(*fn)>>(dlsym(library, name));
      return *fn != nullptr;
    };
    const bool ok =
        load(&a->GetPlatformIDs, "clGetPlatformIDs") && load(&a->GetDeviceIDs, "clGetDeviceIDs") &&
        load(&a->CreateContext, "clCreateContext") &&
        load(&a->CreateCommandQueue, "clCreateCommandQueue") &&
        load(&a->CreateBuffer, "clCreateBuffer") &&
        load(&a->ReleaseMemObject, "clReleaseMemObject") &&
        load(&a->EnqueueReadBuffer, "clEnqueueReadBuffer") && load(&a->Finish, "clFinish");
    return ok ? a : nullptr;
  }();
  return api;
}

struct OpenClQueue {
  cl_context context = nullptr;
  cl_command_queue queue = nullptr;
  std::string why;
};

const OpenClQueue& opencl() {
  static const OpenClQueue* d = [] {
    auto* out = new OpenClQueue;
    bool has_kernels = false;
    for (Isa isa : compiled_isas()) has_kernels = has_kernels || isa == Isa::kOpenCL;
    if (!has_kernels) {
      out->why = "this build has no OpenCL kernels";
      return out;
    }
    if (cl() == nullptr) {
      out->why = "no OpenCL loader (libOpenCL.so.1; Debian: ocl-icd-libopencl1)";
      return out;
    }
    cl_uint platforms = 0;
    cl_platform_id platform = nullptr;
    if (cl()->GetPlatformIDs(1, &platform, &platforms) != CL_SUCCESS || platforms == 0) {
      out->why = "no OpenCL platform (install pocl-opencl-icd: scripts/install-deps.sh)";
      return out;
    }
    cl_device_id id = nullptr;
    cl_uint devices = 0;
    if (cl()->GetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 1, &id, &devices) != CL_SUCCESS ||
        devices == 0) {
      out->why = "the OpenCL platform has no device";
      return out;
    }
    cl_int error = 0;
    out->context = cl()->CreateContext(nullptr, 1, &id, nullptr, nullptr, &error);
    if (error == CL_SUCCESS) out->queue = cl()->CreateCommandQueue(out->context, id, 0, &error);
    if (error != CL_SUCCESS)
      out->why = "creating an OpenCL context failed: " + std::to_string(error);
    return out;
  }();
  return *d;
}

// The CUDA driver entry points the mirror uses, from libcuda.so.1 (the handle embag's own
// dlopen gets too). fakecuda_begin_call / fakecuda_end_call exist only in the fake driver: there
// every embag call the mirror makes is bracketed, and the driver-API rules it broke (wrong
// stream or context, unbalanced pushes, memory left allocated, launches past CUDA's limits)
// become the call's error.
struct CudaApi {
  int (*Init)(unsigned int) = nullptr;
  int (*DeviceGet)(int*, int) = nullptr;
  int (*PrimaryCtxRetain)(void**, int) = nullptr;
  int (*CtxPushCurrent)(void*) = nullptr;
  int (*CtxPopCurrent)(void**) = nullptr;
  int (*StreamCreate)(void**, unsigned int) = nullptr;
  int (*StreamSynchronize)(void*) = nullptr;
  int (*MemAlloc)(unsigned long long*, size_t) = nullptr;
  int (*MemFree)(unsigned long long) = nullptr;
  int (*MemcpyHtoD)(unsigned long long, const void*, size_t) = nullptr;
  int (*MemcpyDtoH)(void*, unsigned long long, size_t) = nullptr;
  void (*BeginCall)(void*) = nullptr;  // fake driver only
  const char* (*EndCall)() = nullptr;  // fake driver only
};

const CudaApi* cuda_api() {
  static const CudaApi* api = []() -> const CudaApi* {
    void* library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) return nullptr;
    auto* a = new CudaApi;
    auto load = [&](auto* fn, const char* name) {
      *fn = reinterpret_cast<std::remove_reference_t<decltype(*fn)>>(dlsym(library, name));
      return *fn != nullptr;
    };
    const bool ok =
        load(&a->Init, "cuInit") && load(&a->DeviceGet, "cuDeviceGet") &&
        load(&a->PrimaryCtxRetain, "cuDevicePrimaryCtxRetain") &&
        load(&a->CtxPushCurrent, "cuCtxPushCurrent_v2") &&
        load(&a->CtxPopCurrent, "cuCtxPopCurrent_v2") && load(&a->StreamCreate, "cuStreamCreate") &&
        load(&a->StreamSynchronize, "cuStreamSynchronize") && load(&a->MemAlloc, "cuMemAlloc_v2") &&
        load(&a->MemFree, "cuMemFree_v2") && load(&a->MemcpyHtoD, "cuMemcpyHtoD_v2") &&
        load(&a->MemcpyDtoH, "cuMemcpyDtoH_v2");
    load(&a->BeginCall, "fakecuda_begin_call");
    load(&a->EndCall, "fakecuda_end_call");
    return ok ? a : nullptr;
  }();
  return api;
}

// cuda:0's primary context (what cudaSetDevice(0) uses) and a stream of the tests' own in it
// (calls must run on the caller's stream).
struct CudaStream {
  void* context = nullptr;
  void* stream = nullptr;
  std::string why;
};

// The mirror's own driver calls run with cuda:0's primary context current, for a scope.
class CudaScope {
 public:
  explicit CudaScope(void* context) { cuda_api()->CtxPushCurrent(context); }
  ~CudaScope() {
    void* popped = nullptr;
    cuda_api()->CtxPopCurrent(&popped);
  }
  CudaScope(const CudaScope&) = delete;
  CudaScope& operator=(const CudaScope&) = delete;
};

const CudaStream& cuda() {
  static const CudaStream* c = [] {
    auto* out = new CudaStream;
    const std::string status = cuda_status();
    if (status.rfind("unavailable", 0) == 0) {
      out->why = "CUDA " + status;
      return out;
    }
    const CudaApi* api = cuda_api();
    int device = 0;
    if (api == nullptr || api->Init(0) != 0 || api->DeviceGet(&device, 0) != 0 ||
        api->PrimaryCtxRetain(&out->context, device) != 0) {
      out->why = "cuda:0's primary context could not be retained through libcuda.so.1";
      return out;
    }
    CudaScope scope(out->context);
    if (api->StreamCreate(&out->stream, 0) != 0) out->why = "creating a CUDA stream failed";
    return out;
  }();
  return *c;
}

// Bytes a view spans: rows - 1 strides plus one row.
size_t span_bytes(const TensorView& v) {
  const int64_t n =
      v.ndim == 2
          ? (v.shape[0] == 0 || v.shape[1] == 0 ? 0 : (v.shape[0] - 1) * v.strides[0] + v.shape[1])
          : v.shape[0];
  return static_cast<size_t>(n > 0 ? n : 0) * dtype_size(v.dtype);
}

// One mirrored view: device memory holding the host bytes, and the view that names it.
class Mirror {
 public:
  Mirror(DeviceType device, const TensorView& host, bool copy_back)
      : device_(device), host_(host), copy_back_(copy_back) {
    device_view_ = host;
    device_view_.device = embag::Device{device, 0};
    bytes_ = span_bytes(host);
    if (bytes_ == 0 || host.data == nullptr) {
      device_view_.data = nullptr;
      return;
    }
    if (device == DeviceType::kOpenCL) {
      cl_int error = 0;
      buffer_ = cl()->CreateBuffer(opencl().context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                   bytes_, host.data, &error);
      device_view_.data = buffer_;
    }
    if (device == DeviceType::kCUDA) {
      CudaScope scope(cuda().context);
      unsigned long long pointer = 0;
      if (cuda_api()->MemAlloc(&pointer, bytes_) == 0) {
        cuda_api()->MemcpyHtoD(pointer, host.data, bytes_);
        cuda_ = pointer;
      }
      device_view_.data = reinterpret_cast<void*>(cuda_);
    }
  }
  ~Mirror() {
    if (buffer_ != nullptr) cl()->ReleaseMemObject(buffer_);
    if (cuda_ != 0) {
      CudaScope scope(cuda().context);
      cuda_api()->MemFree(cuda_);
    }
  }
  Mirror(const Mirror&) = delete;
  Mirror& operator=(const Mirror&) = delete;

  const TensorView* view() const { return &device_view_; }
  void copy_back() {
    if (!copy_back_) return;
    if (buffer_ != nullptr) {
      cl()->EnqueueReadBuffer(opencl().queue, buffer_, CL_TRUE, 0, bytes_, host_.data, 0, nullptr,
                              nullptr);
    }
    if (cuda_ != 0) {
      CudaScope scope(cuda().context);
      cuda_api()->MemcpyDtoH(host_.data, cuda_, bytes_);
    }
  }

 private:
  [[maybe_unused]] DeviceType device_;  // (read only in GPU builds)
  TensorView host_;
  bool copy_back_;
  TensorView device_view_;
  size_t bytes_ = 0;
  cl_mem buffer_ = nullptr;
  unsigned long long cuda_ = 0;
};

// The mirrors of one call; outputs are copied back when it ends.
class Mirrors {
 public:
  explicit Mirrors(DeviceType device) : device_(device) {}
  const TensorView* add(const TensorView* host, bool copy_back) {
    if (host == nullptr) return nullptr;
    mirrors_.push_back(std::make_unique<Mirror>(device_, *host, copy_back));
    return mirrors_.back()->view();
  }
  TensorView add(const TensorView& host, bool copy_back) { return *add(&host, copy_back); }
  void copy_back() {
    if (device_ == DeviceType::kOpenCL) cl()->Finish(opencl().queue);
    if (device_ == DeviceType::kCUDA) {
      CudaScope scope(cuda().context);
      cuda_api()->StreamSynchronize(cuda().stream);
    }
    for (auto& m : mirrors_) m->copy_back();
  }

 private:
  DeviceType device_;
  std::vector<std::unique_ptr<Mirror>> mirrors_;
};

Execution execution(DeviceType device) {
  Execution e;
  e.stream = device == DeviceType::kOpenCL ? static_cast<void*>(opencl().queue) : cuda().stream;
  return e;
}

// Runs one embag call; on the fake CUDA driver, inside its call checks (see CudaApi).
template <typename Call>
Status checked_call(DeviceType device, Call&& call) {
  const bool bracket =
      device == DeviceType::kCUDA && cuda_api() != nullptr && cuda_api()->BeginCall != nullptr;
  if (bracket) cuda_api()->BeginCall(cuda().stream);
  Status s = call();
  if (bracket) {
    if (const char* broken = cuda_api()->EndCall()) {
      return Status(
          StatusCode::kInternal,
          "the call broke the CUDA driver API's rules (fake driver): " + std::string(broken) +
              "(the call returned: " + (s.ok() ? std::string("ok") : s.message()) + ")");
    }
  }
  return s;
}

Status unavailable(DeviceType device) {
  std::string why;
  available(device, &why);
  return Status(StatusCode::kUnsupported, why);
}

}  // namespace

bool available(DeviceType device, std::string* why) {
  if (device == DeviceType::kCPU) return true;
  const std::string& reason =
      device == DeviceType::kOpenCL ? embag::gpu_mirror::opencl().why : cuda().why;
  if (why != nullptr) *why = reason;
  return reason.empty();
}

Status forward(DeviceType device, const ForwardInputs& in, const ForwardOutputs& out,
               const Options& options) {
  if (device == DeviceType::kCPU) return embag::forward(in, out, options);
  if (!available(device)) return unavailable(device);
  Mirrors m(device);
  ForwardInputs d_in;
  d_in.weight = m.add(in.weight, /*copy_back=*/true);  // max_norm renormalises it in place
  d_in.input = m.add(in.input, false);
  d_in.offsets = m.add(in.offsets, false);
  d_in.per_sample_weights = m.add(in.per_sample_weights, false);
  ForwardOutputs d_out;
  d_out.output = m.add(out.output, true);
  d_out.bag_count = m.add(out.bag_count, true);
  d_out.argmax = m.add(out.argmax, true);
  const Status s =
      checked_call(device, [&] { return embag::forward(d_in, d_out, options, execution(device)); });
  m.copy_back();
  return s;
}

namespace {
BackwardInputs mirror_inputs(Mirrors& m, const BackwardInputs& in) {
  BackwardInputs d;
  d.weight = m.add(in.weight, false);
  d.input = m.add(in.input, false);
  d.offsets = m.add(in.offsets, false);
  d.per_sample_weights = m.add(in.per_sample_weights, false);
  d.grad_output = m.add(in.grad_output, false);
  d.argmax = m.add(in.argmax, false);
  return d;
}
}  // namespace

Status backward(DeviceType device, const BackwardInputs& in, const BackwardOutputs& out,
                const Options& options) {
  if (device == DeviceType::kCPU) return embag::backward(in, out, options);
  if (!available(device)) return unavailable(device);
  Mirrors m(device);
  const BackwardInputs d_in = mirror_inputs(m, in);
  BackwardOutputs d_out;
  d_out.grad_weight = m.add(out.grad_weight, true);
  d_out.grad_weight_rows = m.add(out.grad_weight_rows, true);
  d_out.grad_weight_values = m.add(out.grad_weight_values, true);
  d_out.grad_per_sample_weights = m.add(out.grad_per_sample_weights, true);
  const Status s = checked_call(
      device, [&] { return embag::backward(d_in, d_out, options, execution(device)); });
  m.copy_back();
  return s;
}

Status sparse_gradient_rows(DeviceType device, const BackwardInputs& in, const Options& options,
                            int64_t* rows) {
  if (device == DeviceType::kCPU) return embag::sparse_gradient_rows(in, options, rows);
  if (!available(device)) return unavailable(device);
  Mirrors m(device);
  const BackwardInputs d_in = mirror_inputs(m, in);
  return checked_call(
      device, [&] { return embag::sparse_gradient_rows(d_in, options, rows, execution(device)); });
}

std::string forward_variant_name(DeviceType device, const ForwardInputs& in,
                                 const Options& options) {
  if (device == DeviceType::kCPU) return embag::forward_variant_name(in, options);
  ForwardInputs d = in;
  d.weight.device = d.input.device = embag::Device{device, 0};
  return embag::forward_variant_name(d, options);
}

namespace {
// The inputs of a batched call with every view mirrored (tables copied back when `tables_back`).
BatchedInputs mirror_batched(Mirrors& m, const BatchedInputs& in, bool tables_back) {
  BatchedInputs d = in;
  for (BatchedTable& t : d.tables) t.weight = m.add(t.weight, tables_back);
  d.indices = m.add(in.indices, false);
  d.offsets = m.add(in.offsets, false);
  d.per_sample_weights = m.add(in.per_sample_weights, false);
  return d;
}
}  // namespace

Status batched_forward(DeviceType device, const BatchedInputs& in, const TensorView& output) {
  if (device == DeviceType::kCPU) return embag::batched_forward(in, output);
  if (!available(device)) return unavailable(device);
  Mirrors m(device);
  const BatchedInputs d_in = mirror_batched(m, in, false);
  const TensorView d_out = m.add(output, true);
  const Status s =
      checked_call(device, [&] { return embag::batched_forward(d_in, d_out, execution(device)); });
  m.copy_back();
  return s;
}

Status batched_fused_backward(DeviceType device, const BatchedInputs& in,
                              const TensorView& grad_output, const OptimizerConfig& config,
                              const std::vector<OptimizerState>& state) {
  if (device == DeviceType::kCPU) {
    return embag::batched_fused_backward(in, grad_output, config, state);
  }
  if (!available(device)) return unavailable(device);
  Mirrors m(device);
  const BatchedInputs d_in = mirror_batched(m, in, true);
  const TensorView d_grad = m.add(grad_output, false);
  std::vector<OptimizerState> d_state = state;
  for (OptimizerState& s : d_state) {
    // (a state view the optimizer does not use stays empty: nothing to mirror)
    if (s.momentum1.ndim > 0) s.momentum1 = m.add(s.momentum1, true);
    if (s.momentum2.ndim > 0) s.momentum2 = m.add(s.momentum2, true);
  }
  const Status s = checked_call(device, [&] {
    return embag::batched_fused_backward(d_in, d_grad, config, d_state, execution(device));
  });
  m.copy_back();
  return s;
}

}  // namespace embag::gpu_mirror
