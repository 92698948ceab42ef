// The result of every embag call: success, or an error code with the message a person reads.
//
// embag never throws across its API and never exits or aborts on bad input. Messages use
// PyTorch's words where PyTorch has a rule, and always name the offending value, its position
// and the rule it broke.
#pragma once

#include <string>
#include <utility>

#include "embag/export.h"

namespace EMBAG_API embag {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // the call broke a rule in SEMANTICS.md; nothing was written
  kUnsupported = 2,      // well-formed, but this build or CPU cannot run it (e.g. forced ISA)
  kInternal = 3,         // a kernel reported a failure; a bug in embag
};

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

}  // namespace embag
