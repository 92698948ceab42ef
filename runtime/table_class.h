// Which variant of a CPU forward kernel a call runs: the cache-resident one (no software
// prefetch) or the memory-resident one, from the table's bytes against a limit derived from this
// CPU's cache sizes (embag::TableSizeRule in include/embag/embag.h says the rule).
#pragma once

#include <cstdint>

#include "embag/embag.h"
#include "kernel_enums.h"

namespace embag::internal {

// The class of a table of `bytes` bytes under the limit in force. Depends on nothing of embag
// but cpu_features.cpp, so embag-tune's runner (tools/tune/runner.cpp) compiles both in and
// classes its workloads, on the machine it times on, by this very rule.
kernels::TableClass table_class_of_bytes(int64_t bytes);

// The class of the table `weight` (a validated 2-D CPU view): its rows' bytes, strides included.
inline kernels::TableClass table_class_of(const TensorView& weight) {
  const int64_t row_elements =
      weight.strides[0] > weight.shape[1] ? weight.strides[0] : weight.shape[1];
  return table_class_of_bytes(weight.shape[0] * row_elements *
                              static_cast<int64_t>(dtype_size(weight.dtype)));
}

}  // namespace embag::internal
