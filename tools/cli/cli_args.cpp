// Command-line parsing shared by the `embag` subcommands (see cli_args.h).
#include "cli_args.h"

#include <cerrno>
#include <cstdlib>
#include <iostream>

namespace embag::cli {
Status usage_error(const std::string& message) {
  return Status(StatusCode::kInvalidArgument, message);
}

namespace {

const FlagSpec* find_spec(const std::vector<FlagSpec>& specs, const std::string& name) {
  for (const FlagSpec& spec : specs) {
    if (spec.name == name) {
      return &spec;
    }
  }
  return nullptr;
}

}  // namespace

int report_error(int exit_code, const std::string& message) {
  std::cerr << "embag: error: " << message << "\n";
  return exit_code;
}

std::optional<std::string> ParsedFlags::value(const std::string& name) const {
  const auto it = values_.find(name);
  if (it == values_.end()) {
    return std::nullopt;
  }
  return it->second;
}

Status parse_flags(const std::vector<std::string>& args, const std::vector<FlagSpec>& specs,
                   ParsedFlags* out) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& word = args[i];
    if (word == "-h" || word == "--help") {
      out->help_ = true;
      continue;
    }
    if (word.rfind("--", 0) != 0 || word.size() == 2) {
      return usage_error("unexpected argument '" + word + "'");
    }
    const size_t equals = word.find('=');
    const std::string name = word.substr(2, equals == std::string::npos ? equals : equals - 2);
    const FlagSpec* spec = find_spec(specs, name);
    if (spec == nullptr) {
      return usage_error("unknown flag --" + name);
    }
    if (out->has(name)) {
      return usage_error("--" + name + " is given more than once");
    }
    std::string value;
    if (!spec->takes_value) {
      if (equals != std::string::npos) {
        return usage_error("--" + name + " takes no value");
      }
    } else if (equals != std::string::npos) {
      value = word.substr(equals + 1);
    } else {
      // A following "--flag" means the value was forgotten; negative numbers ("-1") still pass.
      if (i + 1 >= args.size() || args[i + 1].rfind("--", 0) == 0) {
        return usage_error("--" + name + " needs a value");
      }
      value = args[++i];
    }
    out->values_[name] = value;
  }
  return Status::Ok();
}

Status parse_int64(const std::string& flag, const std::string& text, int64_t* out) {
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE) {
    return usage_error("--" + flag + " expects an integer, got '" + text + "'");
  }
  *out = static_cast<int64_t>(value);
  return Status::Ok();
}

Status parse_double(const std::string& flag, const std::string& text, double* out) {
  errno = 0;
  char* end = nullptr;
  // strtod reads "inf" and "infinity" too, which is how --norm-type spells the max-norm.
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno == ERANGE) {
    return usage_error("--" + flag + " expects a number, got '" + text + "'");
  }
  *out = value;
  return Status::Ok();
}

int run_subcommand(const std::vector<std::string>& args, const std::vector<FlagSpec>& specs,
                   const std::string& usage, const std::string& usage_hint,
                   const std::function<Status(const ParsedFlags&)>& parse_request,
                   const std::function<int()>& run) {
  ParsedFlags flags;
  Status status = parse_flags(args, specs, &flags);
  if (status.ok() && flags.help()) {
    std::cout << usage;
    return kExitOk;
  }
  if (status.ok()) {
    status = parse_request(flags);
  }
  if (!status.ok()) {
    report_error(kExitUsage, status.message());
    std::cerr << usage_hint;
    return kExitUsage;
  }
  return run();
}

Status parse_device(const ParsedFlags& flags, DeviceType* device) {
  *device = DeviceType::kCPU;
  if (const auto text = flags.value("device")) {
    if (*text == "cuda") {
      *device = DeviceType::kCUDA;
    } else if (*text == "opencl") {
      *device = DeviceType::kOpenCL;
    } else if (*text != "cpu") {
      return usage_error("--device must be cpu, cuda or opencl, got '" + *text + "'");
    }
  }
  return Status::Ok();
}

Status parse_bag_options(const ParsedFlags& flags, Options* options) {
  if (const auto mode_text = flags.value("mode")) {
    const std::optional<Mode> mode = parse_mode(*mode_text);
    if (!mode) {
      return usage_error("--mode must be sum, mean or max, got '" + *mode_text + "'");
    }
    options->mode = *mode;
  }
  if (const auto text = flags.value("padding-idx")) {
    int64_t padding_idx = 0;
    if (Status status = parse_int64("padding-idx", *text, &padding_idx); !status.ok()) {
      return status;
    }
    options->padding_idx = padding_idx;
  }
  options->include_last_offset = flags.has("include-last-offset");
  return Status::Ok();
}

}  // namespace embag::cli
