// CallContext and the Halide hooks that route callbacks to the call they belong to.
#include "call_context.h"

#include <HalideRuntime.h>

#include "kernel_thread_pool.h"

namespace embag::internal {
namespace {

thread_local CallContext* t_active_call = nullptr;

// What was installed before embag's hooks: Halide's defaults, or a host program's own.
halide_error_handler_t g_previous_error_handler = nullptr;
halide_do_par_for_t g_previous_do_par_for = nullptr;

void route_error(void* user_context, const char* message) {
  if (is_embag_call(user_context)) {
    static_cast<CallContext*>(user_context)->append_error(message);
    return;
  }
  if (g_previous_error_handler != nullptr) g_previous_error_handler(user_context, message);
}

int route_do_par_for(void* user_context, halide_task_t task, int min, int size, uint8_t* closure) {
  if (is_embag_call(user_context)) {
    return kernel_do_par_for(user_context, task, min, size, closure);
  }
  return g_previous_do_par_for(user_context, task, min, size, closure);
}

}  // namespace

void CallContext::append_error(const char* message) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!error_.empty()) error_ += "; ";
  error_ += message != nullptr ? message : "(no message)";
}

std::string CallContext::error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return error_;
}

CallContext* active_call() { return t_active_call; }

ActiveCallScope::ActiveCallScope(CallContext* call) : previous_(t_active_call) {
  t_active_call = call;
}
ActiveCallScope::~ActiveCallScope() { t_active_call = previous_; }

void install_halide_hooks() {
  static std::once_flag once;
  std::call_once(once, [] {
    g_previous_error_handler = halide_set_error_handler(&route_error);
    g_previous_do_par_for = halide_set_custom_do_par_for(&route_do_par_for);
  });
}

}  // namespace embag::internal
