// Process-wide runtime state: the ISA choice (EMBAG_ISA / set_isa), the thread count
// (EMBAG_NUM_THREADS / set_num_threads) and the last variant run on each thread. (Halide's error
// messages are captured per call: call_context.h.)
#pragma once

#include <string>

#include "embag/embag.h"

namespace embag::internal {

// The ISA the next kernel call should use, or the reason there is none (a bad EMBAG_ISA, a
// forced ISA this CPU lacks).
Status resolve_isa(Isa* isa);

// Records the variant that just ran on this thread (for last_variant()).
void record_last_variant(const char* name);

// Installs embag's Halide hooks and its thread pool (once); every entry point calls it first.
void install_runtime_hooks();

}  // namespace embag::internal
