// The boundary of every public entry point: embag never throws across its API.
#pragma once

#include <exception>
#include <new>
#include <string>

#include "embag/status.h"
#include "runtime_state.h"

namespace embag::internal {

// Runs `body` (returning Status) with embag's hooks installed, turning an exception from
// anything inside (std::bad_alloc from a scratch allocation sized by the caller's data, above
// all) into a kInternal Status. Every allocation a call needs is made before its first write,
// so such a failure leaves the outputs and the table as they were.
template <typename Body>
Status guard_api(Body&& body) noexcept {
  try {
    install_runtime_hooks();
    return body();
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kInternal,
                  "out of memory: a scratch allocation failed before anything was written");
  } catch (const std::exception& e) {
    return Status(StatusCode::kInternal, std::string("unexpected failure: ") + e.what());
  } catch (...) {
    return Status(StatusCode::kInternal, "unexpected failure (unknown exception)");
  }
}

}  // namespace embag::internal
