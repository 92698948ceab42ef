// One API call's context: what every kernel of the call receives as Halide's user_context.
//
// Halide reports errors, runs parallel loops and (on GPUs) picks a context and stream through
// process-wide hooks. embag installs each hook once and routes by user_context: a kernel call of
// embag's passes its CallContext, so its error text lands in that call's Status, its parallel
// loops run on embag's pool and its GPU work on the caller's stream; anything else (a host
// program's own Halide pipelines) goes to the hook that was installed before embag's.
#pragma once

#include <mutex>
#include <string>

#include "embag/embag.h"

namespace embag::internal {

class CallContext {
 public:
  CallContext() = default;
  CallContext(const CallContext&) = delete;
  CallContext& operator=(const CallContext&) = delete;

  // Halide's error text for this call, possibly reported from several pool threads.
  void append_error(const char* message);
  std::string error() const;

  // The device this call runs on; for a GPU, its context (CUcontext / cl_context) and the queue
  // its kernels are issued on (CUstream / cl_command_queue). See gpu_session.h.
  Device device;
  void* gpu_context = nullptr;
  void* gpu_stream = nullptr;
  bool release_primary_context = false;  // CUDA: the call retained the device's primary context

 private:
  mutable std::mutex mutex_;
  std::string error_;
};

// The call whose kernel this thread is running now (set for the calling thread around each
// kernel, and for pool workers while they run one of its tasks), or nullptr.
CallContext* active_call();

// Marks `call` as this thread's active call for the scope.
class ActiveCallScope {
 public:
  explicit ActiveCallScope(CallContext* call);
  ~ActiveCallScope();
  ActiveCallScope(const ActiveCallScope&) = delete;
  ActiveCallScope& operator=(const ActiveCallScope&) = delete;

 private:
  CallContext* previous_;
};

// True when `user_context` is the active embag call of this thread: the test every hook makes
// before treating a Halide callback as embag's.
inline bool is_embag_call(void* user_context) {
  return user_context != nullptr && user_context == active_call();
}

// Installs embag's Halide hooks (error handler, parallel loop) once, chaining to those installed
// before. Thread-safe; cheap after the first call.
void install_halide_hooks();

}  // namespace embag::internal
