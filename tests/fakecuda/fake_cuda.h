// tests/fakecuda/fake_cuda.h: what a test asks the fake CUDA driver (libcuda.so.1 built from
// fake_cuda.cpp), beside the driver API itself: the contract violations it recorded, the kernels
// it launched, the synchronisations of each embag call, and its modes.
//
// The C functions are what tools/gpu_mirror.cpp looks up with dlsym (it must run against a real
// driver too, where they do not exist); the C++ ones are for tests that link the fake directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

extern "C" {
// Marks the start of one embag call on this thread: launches, async copies and async
// allocations must be on `caller_stream` until fakecuda_end_call (the null stream stands for
// the legacy stream of the context current when the call began).
__attribute__((visibility("default"))) void fakecuda_begin_call(void* caller_stream);
// Ends the call: checks that the thread's context stack is as it was at the start and that
// nothing allocated during the call is still alive. Returns null when the call broke no rule,
// else every violation of the call, one a line (valid until the next call on this thread).
__attribute__((visibility("default"))) const char* fakecuda_end_call(void);
}

// (Exported: the fake is built with hidden visibility, so that only this API and the driver's
// entry points are seen by the programs that load it.)
#pragma GCC visibility push(default)
namespace fakecuda {

struct LaunchRecord {
  std::string entry;  // the kernel's .entry name
  uint32_t grid[3];
  uint32_t block[3];
  bool executed;  // false in record-only mode (or without the PTX interpreter)
};

struct CallRecord {
  int synchronisations = 0;  // cuStreamSynchronize, cuCtxSynchronize and synchronous copies
  std::vector<LaunchRecord> launches;
  std::vector<std::string> violations;
  std::vector<std::string> streams_used;  // "stream 0x..." for every stream the call used
  // Allocations made with cuMemAlloc during the call and alive after it: Halide's runtime keeps
  // the device buffers of its kernels' intermediate stages in a per-context free list for reuse
  // (halide_reuse_device_allocations, on by default) instead of freeing them. Reported, not a
  // violation: embag's own scratch is cuMemAllocAsync, which must be freed within the call.
  std::vector<std::string> halide_cached;
};

// Every violation since the last clear(), in order, each naming the entry point and the rule.
std::vector<std::string> violations();
// Every launch since the last clear().
std::vector<LaunchRecord> launches();
// The last call ended on this thread (fakecuda_end_call).
CallRecord last_call();
// Forgets violations and launches (not allocations, contexts or modules).
void clear();

// Record-only: kernels are checked (geometry, arguments) but not run, so calls far past memory
// (allocations are MAP_NORESERVE mappings that are never touched) finish in milliseconds.
void set_record_only(bool on);
// The compute capability every device reports (major * 10 + minor; FAKECUDA_COMPUTE_CAPABILITY
// sets the first), which picks the CUDA ISA a call runs.
void set_compute_capability(int capability);

// True when this build of the fake has the PTX interpreter (tests/fakecuda/ptx_*.cpp)
// and is not in record-only mode: kernels then run.
bool executes_kernels();

// Device memory alive now (bytes) and the number of live allocations.
size_t live_allocations();

}  // namespace fakecuda
#pragma GCC visibility pop
