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

// This CPU's data caches: the size of one L1 data cache, one L2 and one L3 (bytes, 0 where not
// reported), and where they were read ("sysfs", "cpuid" or "none").
struct CacheSizes {
  int64_t l1d = 0;
  int64_t l2 = 0;
  int64_t l3 = 0;
  const char* source = "none";
};
const CacheSizes& cpu_cache_sizes();

}  // namespace embag::internal
