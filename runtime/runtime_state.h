// Process-wide runtime state: the ISA choice (EMBAG_ISA / set_isa), the thread count
// (EMBAG_NUM_THREADS / set_num_threads), the last variant run on each thread, and the capture of
// Halide runtime error messages so they reach the caller's Status instead of stderr.
#pragma once

#include <string>

#include "embag/embag.h"

namespace embag::internal {

// The ISA the next kernel call should use, or the reason there is none (a bad EMBAG_ISA, a
// forced ISA this CPU lacks).
Status resolve_isa(Isa* isa);

// Records the variant that just ran on this thread (for last_variant()).
void record_last_variant(const char* name);

// Runs a generated kernel and turns a non-zero return into a Status with Halide's message.
// `call` is any callable returning the kernel's int result.
template <typename Call>
Status run_kernel(const char* name, Call&& call);

// Implementation detail of run_kernel: clears and reads the captured Halide error text.
void begin_kernel_call();
std::string end_kernel_call_error();

template <typename Call>
Status run_kernel(const char* name, Call&& call) {
  begin_kernel_call();
  const int result = call();
  if (result != 0) {
    return Status(StatusCode::kInternal, std::string("kernel ") + name + " failed (Halide error " +
                                             std::to_string(result) +
                                             "): " + end_kernel_call_error());
  }
  record_last_variant(name);
  return Status::Ok();
}

}  // namespace embag::internal
