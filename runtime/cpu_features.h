// What this CPU can run. The only place in embag that asks the CPU anything.
#pragma once

#include <string>

#include "embag/embag.h"

namespace embag::internal {

// True when this CPU (and the OS, which must save the wider registers) supports every
// instruction the kernels compiled for `isa` may use.
bool cpu_supports(Isa isa);

// What `isa` needs, in words, for error messages: "AVX-512 F/BW/DQ/VL/CD".
const char* isa_requirement(Isa isa);

// A one-line list of the relevant features this CPU has, for `embag info`.
std::string cpu_feature_summary();

}  // namespace embag::internal
