// Which variant of a CPU forward kernel a call runs: the cache-resident one (no software
// prefetch) or the memory-resident one, from the table's bytes against a limit derived from this
// CPU's cache sizes (embag::TableSizeRule in include/embag/embag.h says the rule).
#pragma once

#include "embag/embag.h"
#include "kernel_enums.h"

namespace embag::internal {

// The class of the table `weight` (a validated 2-D CPU view).
kernels::TableClass table_class_of(const TensorView& weight);

}  // namespace embag::internal
