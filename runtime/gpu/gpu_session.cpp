// The device-API layer of GPU calls: contexts and streams, device arrays, grouping by row, and
// the Halide GPU hooks that make kernels run in the caller's context on the caller's stream.
#include "gpu_session.h"

#include <dlfcn.h>

#include <algorithm>
#include <mutex>
#include <numeric>
#include <string>

#include "halide_buffer.h"
#include "kernel_registry.h"
#include "status_macros.h"

#if EMBAG_WITH_CUDA
#include <HalideRuntimeCuda.h>

#include "cuda_driver.h"
#include "cuda_group_rows.h"
#endif
#if EMBAG_WITH_OPENCL
#include <HalideRuntimeOpenCL.h>
#endif

namespace embag::internal {

namespace {

Status unsupported(const std::string& message) { return Status(StatusCode::kUnsupported, message); }
Status internal_error(const std::string& message) { return Status(StatusCode::kInternal, message); }

// A Halide runtime call's result as a Status carrying the call's captured message.
Status halide_result(CallContext& call, int result, const char* what) {
  if (result == 0) return Status::Ok();
  const std::string message = call.error();
  return internal_error(std::string(what) + " failed (Halide error " + std::to_string(result) +
                        ")" + (message.empty() ? "" : ": " + message));
}

bool compiled(Isa isa) {
  for (Isa c : compiled_isas()) {
    if (c == isa) return true;
  }
  return false;
}

#if EMBAG_WITH_CUDA
// ---- CUDA hooks: kernels of an embag call run in its context, on its stream ------------------
halide_cuda_acquire_context_t g_previous_acquire = nullptr;
halide_cuda_release_context_t g_previous_release = nullptr;
halide_cuda_get_stream_t g_previous_get_stream = nullptr;

int acquire_cuda_context(void* user_context, void** context, bool create) {
  if (is_embag_call(user_context)) {
    *context = static_cast<CallContext*>(user_context)->gpu_context;
    return 0;
  }
  return g_previous_acquire(user_context, context, create);
}

int release_cuda_context(void* user_context) {
  return is_embag_call(user_context) ? 0 : g_previous_release(user_context);
}

int get_cuda_stream(void* user_context, void* context, void** stream) {
  if (is_embag_call(user_context)) {
    *stream = static_cast<CallContext*>(user_context)->gpu_stream;
    return 0;
  }
  return g_previous_get_stream(user_context, context, stream);
}

void install_cuda_hooks() {
  static std::once_flag once;
  std::call_once(once, [] {
    g_previous_acquire = halide_set_cuda_acquire_context(&acquire_cuda_context);
    g_previous_release = halide_set_cuda_release_context(&release_cuda_context);
    g_previous_get_stream = halide_set_cuda_get_stream(&get_cuda_stream);
  });
}

// Makes the call's context current on this thread for a scope (for the driver and CUB calls
// embag makes itself; Halide's runtime does the same around its own).
class CudaContextScope {
 public:
  explicit CudaContextScope(CallContext& call) : driver_(cuda::driver(nullptr)) {
    if (driver_ != nullptr) driver_->cuCtxPushCurrent(call.gpu_context);
  }
  ~CudaContextScope() {
    void* popped = nullptr;
    if (driver_ != nullptr) driver_->cuCtxPopCurrent(&popped);
  }
  CudaContextScope(const CudaContextScope&) = delete;
  CudaContextScope& operator=(const CudaContextScope&) = delete;

 private:
  const cuda::Driver* driver_;
};

Status cuda_result(int result, const char* what) {
  if (result == 0) return Status::Ok();
  return internal_error(std::string(what) + " failed: " + cuda::error_name(result));
}
#endif  // EMBAG_WITH_CUDA

#if EMBAG_WITH_OPENCL
// The OpenCL entry points embag calls itself: which context a command queue belongs to, and the
// rectangle copy that places a batched forward's column blocks (copy_into_columns).
using GetCommandQueueInfo = int (*)(void*, unsigned int, size_t, void*, size_t*);
constexpr unsigned int kClQueueContext = 0x1090;  // CL_QUEUE_CONTEXT

using EnqueueCopyBufferRect = int (*)(void*, void*, void*, const size_t*, const size_t*,
                                      const size_t*, size_t, size_t, size_t, size_t, unsigned int,
                                      const void*, void*);

// An OpenCL entry point: the process's own OpenCL first (what Halide's runtime uses too: a linked
// loader, or a preloaded implementation such as Oclgrind's), else the loader's.
void* opencl_symbol(const char* name) {
  if (void* own = dlsym(RTLD_DEFAULT, name)) return own;
  static void* library = [] {
    void* l = dlopen("libOpenCL.so.1", RTLD_NOW | RTLD_LOCAL);
    return l != nullptr ? l : dlopen("libOpenCL.so", RTLD_NOW | RTLD_LOCAL);
  }();
  return library == nullptr ? nullptr : dlsym(library, name);
}

GetCommandQueueInfo opencl_queue_info() {
  static const auto fn =
      reinterpret_cast<GetCommandQueueInfo>(opencl_symbol("clGetCommandQueueInfo"));
  return fn;
}
#endif  // EMBAG_WITH_OPENCL

const halide_device_interface_t* device_interface(DeviceType type) {
#if EMBAG_WITH_CUDA
  if (type == DeviceType::kCUDA) return halide_cuda_device_interface();
#endif
#if EMBAG_WITH_OPENCL
  if (type == DeviceType::kOpenCL) return halide_opencl_device_interface();
#endif
  (void)type;
  return nullptr;
}

}  // namespace

#if EMBAG_WITH_OPENCL
// Halide's OpenCL runtime asks for a context and command queue through these two functions
// (weak in the runtime, and without a setter): embag's calls get their caller's queue. Any other
// Halide OpenCL pipeline linked into the same program is refused, with a message: embag owns
// these two symbols.
extern "C" int halide_acquire_cl_context(void* user_context, void** context, void** queue,
                                         bool create) {
  if (!is_embag_call(user_context)) {
    // Halide's own clean-up at exit asks without creating: there is no context of its own.
    *context = nullptr;
    *queue = nullptr;
    if (!create) return 0;
    halide_error(user_context,
                 "this program's Halide OpenCL runtime belongs to embag, which serves only its "
                 "own calls (a call with an OpenCL command queue in embag::Execution)");
    return halide_error_code_generic_error;
  }
  auto* call = static_cast<CallContext*>(user_context);
  *context = call->gpu_context;
  *queue = call->gpu_stream;
  return 0;
}

extern "C" int halide_release_cl_context(void* /*user_context*/) { return 0; }
#endif

Status gpu_isa_for_capability(int cc, Isa* isa) {
  if (cc >= 86 && compiled(Isa::kCudaSm86)) {
    *isa = Isa::kCudaSm86;
    return Status::Ok();
  }
  if (cc >= 80 && compiled(Isa::kCudaSm80)) {
    *isa = Isa::kCudaSm80;
    return Status::Ok();
  }
  if (cc < 0) return unsupported("its compute capability could not be read");
  return unsupported("compute capability " + std::to_string(cc / 10) + "." +
                     std::to_string(cc % 10) +
                     " is below 8.0, the oldest this build of embag has kernels for");
}

namespace gpu {

Status select_isa(const Device& device, Isa* isa) {
  if (device.type == DeviceType::kOpenCL) {
    if (!compiled(Isa::kOpenCL)) return unsupported("this build of embag has no OpenCL kernels");
    *isa = Isa::kOpenCL;
    return Status::Ok();
  }
#if EMBAG_WITH_CUDA
  if (device.type == DeviceType::kCUDA) {
    std::string why;
    const cuda::Driver* d = cuda::driver(&why);
    if (d == nullptr) return unsupported("CUDA is unavailable here: " + why);
    int count = 0;
    if (d->cuDeviceGetCount(&count) != 0 || device.index < 0 || device.index >= count) {
      return Status(StatusCode::kInvalidArgument,
                    "the tensors are on cuda:" + std::to_string(device.index) +
                        ", which does not exist (this machine has " + std::to_string(count) +
                        " CUDA devices)");
    }
    Status s = gpu_isa_for_capability(cuda::compute_capability(device.index), isa);
    if (!s.ok()) {
      return unsupported("cuda:" + std::to_string(device.index) +
                         " cannot run embag: " + s.message());
    }
    return Status::Ok();
  }
#endif
  return unsupported(std::string("this build of embag has no ") + device_type_name(device.type) +
                     " kernels");
}

Session::~Session() {
#if EMBAG_WITH_CUDA
  if (call_.release_primary_context) {
    if (const cuda::Driver* d = cuda::driver(nullptr)) {
      d->cuDevicePrimaryCtxRelease(call_.device.index);
    }
  }
#endif
}

Status Session::open(const Device& device, const Execution& execution) {
  call_.device = device;
#if EMBAG_WITH_CUDA
  if (device.type == DeviceType::kCUDA) {
    install_cuda_hooks();
    std::string why;
    const cuda::Driver* d = cuda::driver(&why);
    if (d == nullptr) return unsupported("CUDA is unavailable here: " + why);
    void* context = nullptr;
    if (execution.stream != nullptr) {
      if (int r = d->cuStreamGetCtx(execution.stream, &context)) {
        return Status(StatusCode::kInvalidArgument,
                      "Execution::stream is not a CUDA stream: " + cuda::error_name(r));
      }
    } else if (int r = d->cuCtxGetCurrent(&context)) {
      return cuda_result(r, "cuCtxGetCurrent");
    }
    int ordinal_device = 0;
    if (int r = d->cuDeviceGet(&ordinal_device, device.index)) {
      return Status(StatusCode::kInvalidArgument,
                    "the tensors are on cuda:" + std::to_string(device.index) +
                        ", which does not exist: " + cuda::error_name(r));
    }
    if (context == nullptr) {
      if (int r = d->cuDevicePrimaryCtxRetain(&context, ordinal_device)) {
        return cuda_result(r, "cuDevicePrimaryCtxRetain");
      }
      call_.release_primary_context = true;
    }
    call_.gpu_context = context;
    call_.gpu_stream = execution.stream;
    int context_device = -1;
    {
      CudaContextScope current(call_);
      d->cuCtxGetDevice(&context_device);
    }
    if (context_device != ordinal_device) {
      return Status(StatusCode::kInvalidArgument,
                    "the tensors are on cuda:" + std::to_string(device.index) +
                        ", but the stream's context belongs to another device");
    }
    return Status::Ok();
  }
#endif
#if EMBAG_WITH_OPENCL
  if (device.type == DeviceType::kOpenCL) {
    if (execution.stream == nullptr) {
      return Status(StatusCode::kInvalidArgument,
                    "an OpenCL call needs its cl_command_queue in Execution::stream");
    }
    const GetCommandQueueInfo info = opencl_queue_info();
    if (info == nullptr) return unsupported("OpenCL is unavailable here: no libOpenCL.so.1");
    void* context = nullptr;
    if (int r = info(execution.stream, kClQueueContext, sizeof context, &context, nullptr)) {
      return Status(StatusCode::kInvalidArgument,
                    "Execution::stream is not an OpenCL command queue (clGetCommandQueueInfo "
                    "returned " +
                        std::to_string(r) + ")");
    }
    call_.gpu_context = context;
    call_.gpu_stream = execution.stream;
    return Status::Ok();
  }
#endif
  (void)execution;
  return unsupported(std::string("this build of embag has no ") + device_type_name(device.type) +
                     " kernels");
}

// ---- DeviceArray ----------------------------------------------------------------------------

DeviceArray::~DeviceArray() { (void)release(); }

Status DeviceArray::describe(halide_type_t type, int dims, const int64_t* extents,
                             const int64_t* strides) {
  buffer_ = halide_buffer_t{};
  buffer_.type = type;
  buffer_.dimensions = dims;
  buffer_.dim = dims_;
  for (int i = 0; i < dims; ++i) {
    dims_[i] =
        halide_dimension_t(0, static_cast<int32_t>(extents[i]), static_cast<int32_t>(strides[i]));
  }
  return Status::Ok();
}

Status DeviceArray::wrap(const void* data, DType dtype, int64_t n) {
  const int64_t extents[] = {n}, strides[] = {1};
  describe(halide_type_of(dtype), 1, extents, strides);
  const auto handle = reinterpret_cast<uint64_t>(data);
  int result = halide_error_code_device_interface_no_device;
#if EMBAG_WITH_CUDA
  if (call_.device.type == DeviceType::kCUDA) {
    result = halide_cuda_wrap_device_ptr(&call_, &buffer_, handle);
  }
#endif
#if EMBAG_WITH_OPENCL
  if (call_.device.type == DeviceType::kOpenCL) {
    result = halide_opencl_wrap_cl_mem(&call_, &buffer_, handle);
  }
#endif
  (void)handle;
  wrapped_ = result == 0;
  return halide_result(call_, result, "wrapping device memory");
}

Status DeviceArray::wrap(const void* data, DType dtype, int64_t rows, int64_t cols,
                         int64_t row_stride) {
  EMBAG_RETURN_IF_ERROR(wrap(data, dtype, 0));
  const int64_t extents[] = {cols, rows}, strides[] = {1, row_stride};
  buffer_.dimensions = 2;
  for (int i = 0; i < 2; ++i) {
    dims_[i] =
        halide_dimension_t(0, static_cast<int32_t>(extents[i]), static_cast<int32_t>(strides[i]));
  }
  return Status::Ok();
}

Status DeviceArray::allocate(halide_type_t type, int64_t n) {
  const int64_t extents[] = {n}, strides[] = {1};
  describe(type, 1, extents, strides);
  // Never zero bytes: some drivers refuse empty allocations; the extent stays as asked.
  const size_t bytes = static_cast<size_t>(std::max<int64_t>(n, 1)) * type.bytes();
#if EMBAG_WITH_CUDA
  if (call_.device.type == DeviceType::kCUDA) {
    const cuda::Driver* d = cuda::driver(nullptr);
    unsigned long long pointer = 0;
    {
      // Stream-ordered: no synchronisation, and freed in order after the kernels that use it.
      CudaContextScope current(call_);
      EMBAG_RETURN_IF_ERROR(
          cuda_result(d->cuMemAllocAsync(&pointer, bytes, call_.gpu_stream), "cuMemAllocAsync"));
    }
    owned_cuda_pointer_ = pointer;
    owned_ = true;
    const int result = halide_cuda_wrap_device_ptr(&call_, &buffer_, pointer);
    wrapped_ = result == 0;
    return halide_result(call_, result, "wrapping scratch memory");
  }
#endif
#if EMBAG_WITH_OPENCL
  if (call_.device.type == DeviceType::kOpenCL) {
    dims_[0].extent = static_cast<int32_t>(std::max<int64_t>(n, 1));
    const int result = halide_device_malloc(&call_, &buffer_, halide_opencl_device_interface());
    dims_[0].extent = static_cast<int32_t>(n);
    owned_ = result == 0;
    return halide_result(call_, result, "allocating OpenCL scratch");
  }
#endif
  (void)bytes;
  return unsupported("no GPU device API for this call");
}

Status DeviceArray::allocate(halide_type_t type, int64_t rows, int64_t cols) {
  EMBAG_RETURN_IF_ERROR(allocate(type, rows * cols));
  buffer_.dimensions = 2;
  dims_[0] = halide_dimension_t(0, static_cast<int32_t>(cols), 1);
  dims_[1] = halide_dimension_t(0, static_cast<int32_t>(rows), static_cast<int32_t>(cols));
  return Status::Ok();
}

Status DeviceArray::release() {
  int result = 0;
#if EMBAG_WITH_CUDA
  if (call_.device.type == DeviceType::kCUDA) {
    if (wrapped_) result = halide_cuda_detach_device_ptr(&call_, &buffer_);
    if (owned_) {
      CudaContextScope current(call_);
      cuda::driver(nullptr)->cuMemFreeAsync(owned_cuda_pointer_, call_.gpu_stream);
    }
  }
#endif
#if EMBAG_WITH_OPENCL
  if (call_.device.type == DeviceType::kOpenCL) {
    if (wrapped_) result = halide_opencl_detach_cl_mem(&call_, &buffer_);
    if (owned_) result = halide_device_free(&call_, &buffer_);
  }
#endif
  wrapped_ = owned_ = false;
  return halide_result(call_, result, "releasing device memory");
}

uint64_t DeviceArray::cuda_pointer(int64_t index) {
#if EMBAG_WITH_CUDA
  return halide_cuda_get_device_ptr(&call_, &buffer_) +
         static_cast<uint64_t>(index) * buffer_.type.bytes();
#else
  (void)index;
  return 0;
#endif
}

Status DeviceArray::read(void* host) {
  if (buffer_.number_of_elements() == 0) return Status::Ok();
  buffer_.host = static_cast<uint8_t*>(host);
  buffer_.set_device_dirty(true);
  int result = halide_copy_to_host(&call_, &buffer_);
  if (result == 0) result = halide_device_sync(&call_, &buffer_);
  buffer_.host = nullptr;
  return halide_result(call_, result, "copying device memory to the host");
}

Status DeviceArray::write(const void* host) {
  if (buffer_.number_of_elements() == 0) return Status::Ok();
  buffer_.host = static_cast<uint8_t*>(const_cast<void*>(host));
  buffer_.set_host_dirty(true);
  int result = halide_copy_to_device(&call_, &buffer_, device_interface(call_.device.type));
  if (result == 0) result = halide_device_sync(&call_, &buffer_);
  buffer_.host = nullptr;
  return halide_result(call_, result, "copying host memory to the device");
}

Status DeviceArray::copy_from(DeviceArray& source) {
  if (buffer_.number_of_elements() == 0) return Status::Ok();
  int result =
      halide_buffer_copy(&call_, source.get(), device_interface(call_.device.type), &buffer_);
  return halide_result(call_, result, "copying device memory");
}

Status copy_into_columns(CallContext& call, DeviceArray& source, const void* dest, int64_t rows,
                         int64_t cols, int64_t row_stride, int64_t column) {
  if (rows == 0 || cols == 0) return Status::Ok();
#if EMBAG_WITH_OPENCL
  if (call.device.type == DeviceType::kOpenCL) {
    static const auto copy_rect =
        reinterpret_cast<EnqueueCopyBufferRect>(opencl_symbol("clEnqueueCopyBufferRect"));
    if (copy_rect == nullptr) return unsupported("OpenCL has no clEnqueueCopyBufferRect here");
    const size_t element = source.get()->type.bytes();
    void* from = reinterpret_cast<void*>(halide_opencl_get_cl_mem(&call, source.get()));
    const size_t source_origin[3] = {0, 0, 0};
    const size_t dest_origin[3] = {static_cast<size_t>(column) * element, 0, 0};
    const size_t region[3] = {static_cast<size_t>(cols) * element, static_cast<size_t>(rows), 1};
    const int r = copy_rect(call.gpu_stream, from, const_cast<void*>(dest), source_origin,
                            dest_origin, region, static_cast<size_t>(cols) * element, 0,
                            static_cast<size_t>(row_stride) * element, 0, 0, nullptr, nullptr);
    if (r != 0) {
      return internal_error("clEnqueueCopyBufferRect failed (OpenCL error " + std::to_string(r) +
                            ")");
    }
    return Status::Ok();
  }
#endif
  (void)call, (void)source, (void)dest, (void)row_stride, (void)column;
  return internal_error("copy_into_columns is for OpenCL calls only");
}

// ---- Grouping positions by row --------------------------------------------------------------

namespace {

// Host grouping, for OpenCL: the positions sorted stably by key, then runs of equal keys.
Status group_rows_on_host(CallContext& call, DeviceArray& keys_array, DeviceArray& positions_array,
                          int64_t n, int64_t num_table_rows, DeviceRowGroups* groups) {
  std::vector<int64_t> keys(static_cast<size_t>(n));
  EMBAG_RETURN_IF_ERROR(keys_array.read(keys.data()));
  (void)positions_array;  // positions are 0 .. n-1 by construction
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return keys[a] < keys[b]; });
  std::vector<int64_t> rows;
  std::vector<int32_t> segments;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t key = keys[order[i]];
    if (key >= num_table_rows) break;  // excluded positions sort last
    if (rows.empty() || rows.back() != key) {
      rows.push_back(key);
      segments.push_back(static_cast<int32_t>(i));
    }
  }
  const int64_t used =
      segments.empty()
          ? 0
          : static_cast<int64_t>(std::count_if(keys.begin(), keys.end(),
                                               [&](int64_t k) { return k < num_table_rows; }));
  segments.push_back(static_cast<int32_t>(used));
  const int64_t U = static_cast<int64_t>(rows.size());
  (void)call;
  EMBAG_RETURN_IF_ERROR(groups->rows.allocate(halide_type_t(halide_type_int, 64), U));
  EMBAG_RETURN_IF_ERROR(groups->segments.allocate(halide_type_t(halide_type_int, 32), U + 1));
  EMBAG_RETURN_IF_ERROR(groups->sorted_positions.allocate(halide_type_t(halide_type_int, 32), n));
  EMBAG_RETURN_IF_ERROR(groups->rows.write(rows.data()));
  EMBAG_RETURN_IF_ERROR(groups->segments.write(segments.data()));
  EMBAG_RETURN_IF_ERROR(groups->sorted_positions.write(order.data()));
  groups->num_rows = U;
  return Status::Ok();
}

}  // namespace

Status group_rows(CallContext& call, DeviceArray& keys, DeviceArray& positions, int64_t n,
                  int64_t num_table_rows, DeviceRowGroups* groups) {
  if (call.device.type != DeviceType::kCUDA) {
    return group_rows_on_host(call, keys, positions, n, num_table_rows, groups);
  }
#if EMBAG_WITH_CUDA
  // Keys are rows in [0, V] (V marks excluded positions): that many significant bits.
  int key_bits = 1;
  while (key_bits < 63 && (num_table_rows >> key_bits) != 0) ++key_bits;
  const halide_type_t i32(halide_type_int, 32), i64(halide_type_int, 64), u8(halide_type_uint, 8);
  DeviceArray sorted_keys(call), counts(call), num_runs(call), scratch(call);
  const int32_t count = static_cast<int32_t>(n);
  const size_t scratch_bytes = cuda::group_rows_scratch_bytes(count, key_bits);
  for (auto [array, type, size] :
       {std::tuple{&sorted_keys, i64, n},
        {&groups->rows, i64, n},
        {&counts, i32, n + 1},
        {&groups->segments, i32, n + 1},
        {&groups->sorted_positions, i32, n},
        {&num_runs, i32, int64_t{1}},
        {&scratch, u8, static_cast<int64_t>(std::max<size_t>(scratch_bytes, 1))}}) {
    EMBAG_RETURN_IF_ERROR(array->allocate(type, size));
  }
  cuda::GroupRowsBuffers b{};
  b.keys = reinterpret_cast<const int64_t*>(keys.cuda_pointer());
  b.positions = reinterpret_cast<const int32_t*>(positions.cuda_pointer());
  b.sorted_keys = reinterpret_cast<int64_t*>(sorted_keys.cuda_pointer());
  b.sorted_positions = reinterpret_cast<int32_t*>(groups->sorted_positions.cuda_pointer());
  b.unique_keys = reinterpret_cast<int64_t*>(groups->rows.cuda_pointer());
  b.counts = reinterpret_cast<int32_t*>(counts.cuda_pointer());
  b.segments = reinterpret_cast<int32_t*>(groups->segments.cuda_pointer());
  b.num_runs = reinterpret_cast<int32_t*>(num_runs.cuda_pointer());
  b.scratch = reinterpret_cast<void*>(scratch.cuda_pointer());
  b.scratch_bytes = scratch_bytes;
  {
    CudaContextScope current(call);
    EMBAG_RETURN_IF_ERROR(cuda_result(cuda::sort_and_encode(b, count, key_bits, call.gpu_stream),
                                      "sorting positions by row (CUB)"));
  }
  // U is the number of runs less one when some position is excluded, i.e. when the largest
  // sorted key is V. Both values are at known places, so both copies go on the stream before the
  // call's one synchronisation (the README promises backward exactly one more than forward; the
  // fake driver's contract tests count them).
  int32_t runs = 0;
  int64_t last_key = -1;
  {
    CudaContextScope current(call);
    const cuda::Driver* d = cuda::driver(nullptr);
    EMBAG_RETURN_IF_ERROR(cuda_result(
        d->cuMemcpyDtoHAsync(&runs, num_runs.cuda_pointer(), sizeof runs, call.gpu_stream),
        "cuMemcpyDtoHAsync"));
    if (n > 0) {
      EMBAG_RETURN_IF_ERROR(
          cuda_result(d->cuMemcpyDtoHAsync(&last_key, sorted_keys.cuda_pointer(n - 1),
                                           sizeof last_key, call.gpu_stream),
                      "cuMemcpyDtoHAsync"));
    }
    EMBAG_RETURN_IF_ERROR(
        cuda_result(d->cuStreamSynchronize(call.gpu_stream), "cuStreamSynchronize"));
  }
  const int32_t U = runs - (last_key == num_table_rows ? 1 : 0);
  {
    CudaContextScope current(call);
    // Without excluded positions counts[U] is past the runs: make it 0, so the scan's last
    // entry is the total.
    if (U == runs) {
      EMBAG_RETURN_IF_ERROR(
          cuda_result(cuda::zero_int32(b.counts + U, call.gpu_stream), "cudaMemset"));
    }
    EMBAG_RETURN_IF_ERROR(
        cuda_result(cuda::segment_starts(b, U + 1, call.gpu_stream), "scanning row counts (CUB)"));
  }
  groups->rows.set_extent(U);
  groups->segments.set_extent(U + 1);
  groups->num_rows = U;
  return Status::Ok();
#else
  return unsupported("this build of embag has no CUDA kernels");
#endif
}

}  // namespace gpu
}  // namespace embag::internal
