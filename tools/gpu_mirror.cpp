// Device mirrors of host views: OpenCL buffers (OpenCL loaded with dlopen, so programs using this
// start on machines without an OpenCL loader) or CUDA memory (the CUDA runtime, static).
#include "gpu_mirror.h"

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <dlfcn.h>

#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#if EMBAG_MIRROR_CUDA
#include <cuda_runtime_api.h>
#endif

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

// cuda:0 and a stream of the tests' own (calls must run on the caller's stream).
struct CudaStream {
  void* stream = nullptr;
  std::string why;
};

const CudaStream& cuda() {
  static const CudaStream* c = [] {
    auto* out = new CudaStream;
    const std::string status = cuda_status();
    if (status.rfind("unavailable", 0) == 0) {
      out->why = "CUDA " + status;
      return out;
    }
#if EMBAG_MIRROR_CUDA
    cudaStream_t stream = nullptr;
    if (cudaSetDevice(0) != cudaSuccess || cudaStreamCreate(&stream) != cudaSuccess) {
      out->why = "creating a CUDA stream failed";
      return out;
    }
    out->stream = stream;
#else
    out->why = "the tests were built without the CUDA runtime";
#endif
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
#if EMBAG_MIRROR_CUDA
    if (device == DeviceType::kCUDA) {
      cudaMalloc(&cuda_, bytes_);
      cudaMemcpy(cuda_, host.data, bytes_, cudaMemcpyHostToDevice);
      device_view_.data = cuda_;
    }
#endif
  }
  ~Mirror() {
    if (buffer_ != nullptr) cl()->ReleaseMemObject(buffer_);
#if EMBAG_MIRROR_CUDA
    if (cuda_ != nullptr) cudaFree(cuda_);
#endif
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
#if EMBAG_MIRROR_CUDA
    if (cuda_ != nullptr) cudaMemcpy(host_.data, cuda_, bytes_, cudaMemcpyDeviceToHost);
#endif
  }

 private:
  DeviceType device_;
  TensorView host_;
  bool copy_back_;
  TensorView device_view_;
  size_t bytes_ = 0;
  cl_mem buffer_ = nullptr;
  void* cuda_ = nullptr;
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
#if EMBAG_MIRROR_CUDA
    if (device_ == DeviceType::kCUDA) {
      cudaStreamSynchronize(static_cast<cudaStream_t>(cuda().stream));
    }
#endif
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
  const Status s = embag::forward(d_in, d_out, options, execution(device));
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
  const Status s = embag::backward(d_in, d_out, options, execution(device));
  m.copy_back();
  return s;
}

Status sparse_gradient_rows(DeviceType device, const BackwardInputs& in, const Options& options,
                            int64_t* rows) {
  if (device == DeviceType::kCPU) return embag::sparse_gradient_rows(in, options, rows);
  if (!available(device)) return unavailable(device);
  Mirrors m(device);
  return embag::sparse_gradient_rows(mirror_inputs(m, in), options, rows, execution(device));
}

std::string forward_variant_name(DeviceType device, const ForwardInputs& in,
                                 const Options& options) {
  if (device == DeviceType::kCPU) return embag::forward_variant_name(in, options);
  ForwardInputs d = in;
  d.weight.device = d.input.device = embag::Device{device, 0};
  return embag::forward_variant_name(d, options);
}

}  // namespace embag::gpu_mirror
