// EMBAG_RETURN_IF_ERROR: the runtime's early return on a failed step. Most steps of a call
// (validation, kernel lookup, allocation, a kernel run) return a Status, and the caller stops at
// the first that is not ok; the macro says that in one line instead of an if-block per step.
#pragma once

#include "embag/status.h"

#define EMBAG_RETURN_IF_ERROR(expr)                                                        \
  do {                                                                                     \
    if (::embag::Status embag_status_ = (expr); !embag_status_.ok()) return embag_status_; \
  } while (false)
