// Command-line parsing shared by the `embag` subcommands: flags, numbers, exit codes and the
// one way errors are printed, so every subcommand fails the same way.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "embag/embag.h"
#include "embag/status.h"

namespace embag::cli {

// What the process returns. Scripts tell a mistyped command line from bad data by these.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,  // the data, a file or the library said no
  kExitUsage = 2,    // the command line itself is wrong
};

// Prints "embag: error: <message>" on stderr and returns `exit_code`.
int report_error(int exit_code, const std::string& message);

// A mistake in the command line, as the Status that run_subcommand reports with kExitUsage.
Status usage_error(const std::string& message);

// A flag a subcommand accepts, named without its leading "--".
struct FlagSpec {
  std::string name;
  bool takes_value;
};

// The flags found on one command line.
class ParsedFlags {
 public:
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  // The value of a flag that takes one; nullopt when the flag was not given.
  std::optional<std::string> value(const std::string& name) const;
  // -h or --help was given.
  bool help() const { return help_; }

 private:
  friend Status parse_flags(const std::vector<std::string>& args,
                            const std::vector<FlagSpec>& specs, ParsedFlags* out);
  std::map<std::string, std::string> values_;
  bool help_ = false;
};

// Parses `args` (the words after the subcommand's name) against `specs`. Accepts "--name value"
// and "--name=value". Unknown flags, positional words, repeated flags, a missing value and a
// value given to a switch are errors; -h and --help are always accepted.
Status parse_flags(const std::vector<std::string>& args, const std::vector<FlagSpec>& specs,
                   ParsedFlags* out);

// Whole-string conversions; the error names the flag and the text. parse_double accepts "inf".
Status parse_int64(const std::string& flag, const std::string& text, int64_t* out);
Status parse_double(const std::string& flag, const std::string& text, double* out);

// Reads --mode, --padding-idx and --include-last-offset, the bag options forward and backward
// share, into `options` (flags not given leave PyTorch's defaults).
Status parse_bag_options(const ParsedFlags& flags, Options* options);

// Reads --format (a quantized table's format: int8, int4, ...) into `format` when given.
Status parse_format(const ParsedFlags& flags, QuantFormat* format);

// Reads --device cpu|cuda|opencl (default cpu): where forward and backward run. A GPU run copies
// the arrays to the device, runs there on a stream of its own, and copies the results back.
Status parse_device(const ParsedFlags& flags, DeviceType* device);

// The flow every array subcommand shares: parse `args` against `specs`; with --help print
// `usage` to stdout and return kExitOk; then build the request with `parse_request`. A mistake
// in either step is reported (kExitUsage) followed by `usage_hint` on stderr. Otherwise returns
// what `run` returns.
int run_subcommand(const std::vector<std::string>& args, const std::vector<FlagSpec>& specs,
                   const std::string& usage, const std::string& usage_hint,
                   const std::function<Status(const ParsedFlags&)>& parse_request,
                   const std::function<int()>& run);

}  // namespace embag::cli
