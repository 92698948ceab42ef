// What a GPU call needs from its device API (CUDA or OpenCL): the caller's context and stream,
// device arrays (the caller's memory wrapped for Halide, or scratch), small copies to the host,
// and grouping positions by row. Everything above this layer (gpu_forward.cpp,
// gpu_backward.cpp) is the same for both APIs, so the OpenCL runs that test the GPU schedules
// on machines without a GPU also test the CUDA calls' orchestration.
#pragma once

#include <HalideRuntime.h>

#include <cstdint>
#include <vector>

#include "call_context.h"
#include "embag/embag.h"

namespace embag::internal {

// The CUDA ISA for a device of compute capability `cc` (major * 10 + minor): the newest
// compiled one it can run, or why none.
Status gpu_isa_for_capability(int cc, Isa* isa);

namespace gpu {

// The ISA that runs calls on `device` (CUDA: by compute capability; OpenCL: opencl).
Status select_isa(const Device& device, Isa* isa);

// Opens a call on `device`: its context and stream (see Execution::stream), recorded in `call`,
// and installs embag's GPU hooks. The Session ends the call (releasing what it retained) when it
// goes out of scope; `call` is this thread's active call meanwhile.
class Session {
 public:
  Session(CallContext& call) : call_(call), active_(&call) {}
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  Status open(const Device& device, const Execution& execution);
  CallContext& call() { return call_; }

 private:
  CallContext& call_;
  ActiveCallScope active_;
};

// A 1-D or 2-D array in device memory, described to Halide: the caller's memory (wrapped, never
// copied) or scratch the array owns. Dimensions are innermost first, as Halide orders them.
class DeviceArray {
 public:
  explicit DeviceArray(CallContext& call) : call_(call) {}
  ~DeviceArray();
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  // The caller's memory: a CUdeviceptr / cl_mem holding n elements, or rows of cols elements
  // row_stride apart.
  Status wrap(const void* data, DType dtype, int64_t n);
  Status wrap(const void* data, DType dtype, int64_t rows, int64_t cols, int64_t row_stride);
  // Scratch of n elements (rows x cols, contiguous).
  Status allocate(halide_type_t type, int64_t n);
  Status allocate(halide_type_t type, int64_t rows, int64_t cols);

  halide_buffer_t* get() { return &buffer_; }
  // Shrinks a 1-D array's extent (the memory stays), e.g. to the part a later step filled.
  void set_extent(int64_t n) { dims_[0].extent = static_cast<int32_t>(n); }
  int64_t extent() const { return dims_[0].extent; }
  // The CUdeviceptr of element `index` (CUDA only).
  uint64_t cuda_pointer(int64_t index = 0);

  // Copies the whole (contiguous) array to `host` / from `host`, waiting for the device.
  Status read(void* host);
  Status write(const void* host);
  // Copies all of `source` (same type and extents) into this array, on the device.
  Status copy_from(DeviceArray& source);

 private:
  Status describe(halide_type_t type, int dims, const int64_t* extents, const int64_t* strides);
  Status release();

  CallContext& call_;
  halide_buffer_t buffer_{};
  halide_dimension_t dims_[2]{};
  bool wrapped_ = false;
  bool owned_ = false;
  [[maybe_unused]] uint64_t owned_cuda_pointer_ = 0;  // (read only in CUDA builds)
};

// Copies `source`, a contiguous (rows, cols) array, into the caller's 2-D array `dest` (rows
// row_stride elements apart) at column `column`, on the call's queue. OpenCL only: there a
// cl_mem cannot be offset like a pointer (and sub-buffers must start at the device's base
// alignment), so a kernel writes a column block into scratch and clEnqueueCopyBufferRect
// places it; CUDA calls wrap the block's address instead and need no copy.
Status copy_into_columns(CallContext& call, DeviceArray& source, const void* dest, int64_t rows,
                         int64_t cols, int64_t row_stride, int64_t column);

// The valid positions grouped by row, in device memory: rows ascending, each row's positions in
// input order (so every row folds in input order: deterministic without atomics).
struct DeviceRowGroups {
  explicit DeviceRowGroups(CallContext& call)
      : rows(call), segments(call), sorted_positions(call) {}
  DeviceArray rows;              // U distinct rows (int64), ascending
  DeviceArray segments;          // U + 1 (int32): row u is sorted_positions[seg[u], seg[u+1])
  DeviceArray sorted_positions;  // (int32) grouped positions
  int64_t num_rows = 0;          // U
};

// Groups positions [0, n) by their keys (the row, or V for a position that does not count; see
// embag_sort_keys): a stable sort, run-length encoding and scan. CUDA: CUB on the stream, then
// one synchronisation to learn U. OpenCL: on the host (the OpenCL path is the GPU schedules'
// test bench; its keys and positions make one round trip).
Status group_rows(CallContext& call, DeviceArray& keys, DeviceArray& positions, int64_t n,
                  int64_t num_table_rows, DeviceRowGroups* groups);

}  // namespace gpu
}  // namespace embag::internal
