// OpenCL mirrors of host views, for running the GPU path from host-memory tests.
#include "gpu_mirror.h"

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include <memory>
#include <mutex>
#include <vector>

namespace embag::gpu_mirror {
namespace {

struct OpenClQueue {
  cl_context context = nullptr;
  cl_command_queue queue = nullptr;
  std::string why;
};

const OpenClQueue& device() {
  static const OpenClQueue* d = [] {
    auto* out = new OpenClQueue;
    bool has_kernels = false;
    for (Isa isa : compiled_isas()) has_kernels = has_kernels || isa == Isa::kOpenCL;
    if (!has_kernels) {
      out->why = "this build has no OpenCL kernels";
      return out;
    }
    cl_uint platforms = 0;
    cl_platform_id platform = nullptr;
    if (clGetPlatformIDs(1, &platform, &platforms) != CL_SUCCESS || platforms == 0) {
      out->why = "no OpenCL platform (install pocl-opencl-icd: scripts/install-deps.sh)";
      return out;
    }
    cl_device_id id = nullptr;
    cl_uint devices = 0;
    if (clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 1, &id, &devices) != CL_SUCCESS ||
        devices == 0) {
      out->why = "the OpenCL platform has no device";
      return out;
    }
    cl_int error = 0;
    out->context = clCreateContext(nullptr, 1, &id, nullptr, nullptr, &error);
    if (error == CL_SUCCESS) out->queue = clCreateCommandQueue(out->context, id, 0, &error);
    if (error != CL_SUCCESS)
      out->why = "creating an OpenCL context failed: " + std::to_string(error);
    return out;
  }();
  return *d;
}

// Bytes a view spans: rows - 1 strides plus one row.
size_t span_bytes(const TensorView& v) {
  const int64_t n =
      v.ndim == 2
          ? (v.shape[0] == 0 || v.shape[1] == 0 ? 0 : (v.shape[0] - 1) * v.strides[0] + v.shape[1])
          : v.shape[0];
  return static_cast<size_t>(n > 0 ? n : 0) * dtype_size(v.dtype);
}

// One mirrored view: a device buffer holding the host bytes, and the view that names it.
class Mirror {
 public:
  Mirror(const TensorView& host, bool copy_back) : host_(host), copy_back_(copy_back) {
    device_view_ = host;
    device_view_.device = embag::Device{DeviceType::kOpenCL, 0};
    bytes_ = span_bytes(host);
    if (bytes_ == 0 || host.data == nullptr) {
      device_view_.data = nullptr;
      return;
    }
    cl_int error = 0;
    buffer_ = clCreateBuffer(device().context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes_,
                             host.data, &error);
    device_view_.data = buffer_;
  }
  ~Mirror() {
    if (buffer_ != nullptr) clReleaseMemObject(buffer_);
  }
  Mirror(const Mirror&) = delete;
  Mirror& operator=(const Mirror&) = delete;

  const TensorView* view() const { return &device_view_; }
  void copy_back() {
    if (copy_back_ && buffer_ != nullptr) {
      clEnqueueReadBuffer(device().queue, buffer_, CL_TRUE, 0, bytes_, host_.data, 0, nullptr,
                          nullptr);
    }
  }

 private:
  TensorView host_;
  bool copy_back_;
  TensorView device_view_;
  size_t bytes_ = 0;
  cl_mem buffer_ = nullptr;
};

// The mirrors of one call; outputs are copied back when it ends.
class Mirrors {
 public:
  const TensorView* add(const TensorView* host, bool copy_back) {
    if (host == nullptr) return nullptr;
    mirrors_.push_back(std::make_unique<Mirror>(*host, copy_back));
    return mirrors_.back()->view();
  }
  TensorView add(const TensorView& host, bool copy_back) { return *add(&host, copy_back); }
  void copy_back() {
    clFinish(device().queue);
    for (auto& m : mirrors_) m->copy_back();
  }

 private:
  std::vector<std::unique_ptr<Mirror>> mirrors_;
};

Execution execution() {
  Execution e;
  e.stream = device().queue;
  return e;
}

Status unavailable() { return Status(StatusCode::kUnsupported, "OpenCL: " + device().why); }

}  // namespace

bool available(std::string* why) {
  if (why != nullptr) *why = device().why;
  return device().why.empty();
}

Status forward(const ForwardInputs& in, const ForwardOutputs& out, const Options& options) {
  if (!available()) return unavailable();
  Mirrors m;
  ForwardInputs d_in;
  d_in.weight = m.add(in.weight, /*copy_back=*/true);  // max_norm renormalises it in place
  d_in.input = m.add(in.input, false);
  d_in.offsets = m.add(in.offsets, false);
  d_in.per_sample_weights = m.add(in.per_sample_weights, false);
  ForwardOutputs d_out;
  d_out.output = m.add(out.output, true);
  d_out.bag_count = m.add(out.bag_count, true);
  d_out.argmax = m.add(out.argmax, true);
  const Status s = embag::forward(d_in, d_out, options, execution());
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

Status backward(const BackwardInputs& in, const BackwardOutputs& out, const Options& options) {
  if (!available()) return unavailable();
  Mirrors m;
  const BackwardInputs d_in = mirror_inputs(m, in);
  BackwardOutputs d_out;
  d_out.grad_weight = m.add(out.grad_weight, true);
  d_out.grad_weight_rows = m.add(out.grad_weight_rows, true);
  d_out.grad_weight_values = m.add(out.grad_weight_values, true);
  d_out.grad_per_sample_weights = m.add(out.grad_per_sample_weights, true);
  const Status s = embag::backward(d_in, d_out, options, execution());
  m.copy_back();
  return s;
}

Status sparse_gradient_rows(const BackwardInputs& in, const Options& options, int64_t* rows) {
  if (!available()) return unavailable();
  Mirrors m;
  return embag::sparse_gradient_rows(mirror_inputs(m, in), options, rows, execution());
}

std::string forward_variant_name(const ForwardInputs& in, const Options& options) {
  ForwardInputs d = in;
  d.weight.device = d.input.device = embag::Device{DeviceType::kOpenCL, 0};
  return embag::forward_variant_name(d, options);
}

}  // namespace embag::gpu_mirror
