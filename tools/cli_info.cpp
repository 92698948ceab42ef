// `embag info`: what this build contains and what it would do on this machine — the compiled
// kernel variants, the CPU's features and ISAs, the ISA the dispatcher selected (or why it cannot)
// and the variant a common call runs. The first thing to look at when a number or a dispatch
// surprises.
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "cli_args.h"
#include "cli_commands.h"
#include "embag/embag.h"

namespace embag::cli {
namespace {

constexpr char kUsage[] = R"(usage: embag info

Lists the kernel variants compiled into this build (with the schedule parameters each was
compiled with beyond the generator's defaults, and where they came from: default, cmake
(EMBAG_FORWARD_PARAMS_*) or a tuning file from embag-tune), the ISAs this CPU supports, the ISA calls
will use (EMBAG_ISA=avx512|...|armv7 forces one), the worker thread count (EMBAG_NUM_THREADS)
and the variant a float32 table / int64 indices / mode sum call runs here.

Exits 1 when no ISA can be selected (a bad EMBAG_ISA), since every call would fail.
)";

std::string isa_list(const std::vector<Isa>& isas) {
  if (isas.empty()) {
    return "(none)";
  }
  std::string text;
  for (const Isa isa : isas) {
    text += (text.empty() ? "" : " ") + std::string(isa_name(isa));
  }
  return text;
}

// Prints rows as left-aligned columns two spaces apart, the first row as the heading.
void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t column = 0; column < row.size(); ++column) {
      widths[column] = std::max(widths[column], row[column].size());
    }
  }
  for (const auto& row : rows) {
    std::string line = "  ";
    for (size_t column = 0; column < row.size(); ++column) {
      line += row[column];
      if (column + 1 < row.size()) {
        line += std::string(widths[column] - row[column].size() + 2, ' ');
      }
    }
    std::cout << line << "\n";
  }
}

void print_variants() {
  const std::vector<VariantInfo>& variants = compiled_variants();
  std::cout << "\ncompiled variants (" << variants.size() << "):\n";
  if (variants.empty()) {
    std::cout << "  (none)\n";
    return;
  }
  std::vector<std::vector<std::string>> rows = {{"name", "device", "pipeline", "mode", "weight",
                                                 "index", "isa", "schedule", "from", "target"}};
  auto dtype_cell = [](const std::optional<DType>& dtype) {
    return dtype ? std::string(dtype_name(*dtype)) : std::string("-");
  };
  for (const VariantInfo& variant : variants) {
    rows.push_back({variant.name, device_type_name(variant.device), variant.pipeline,
                    variant.mode.empty() ? "-" : variant.mode, dtype_cell(variant.weight_dtype),
                    dtype_cell(variant.index_dtype), isa_name(variant.isa),
                    variant.schedule.empty() ? "-" : variant.schedule, variant.schedule_source,
                    variant.target});
  }
  print_table(rows);
}

}  // namespace

int run_info(const std::vector<std::string>& args) {
  ParsedFlags flags;
  Status status = parse_flags(args, {}, &flags);
  if (!status.ok()) {
    return report_error(kExitUsage, status.message());
  }
  if (flags.help()) {
    std::cout << kUsage;
    return kExitOk;
  }

  Isa selected = Isa::kSse41;
  const Status selection = selected_isa(&selected);
  const char* forced = std::getenv("EMBAG_ISA");
  std::string selected_text = selection.ok() ? isa_name(selected) : "none: " + selection.message();
  if (forced != nullptr && selection.ok()) {
    selected_text += std::string(" (forced by EMBAG_ISA=") + forced + ")";
  }

  // Only the shapes and dtypes matter to the variant name; no data is read.
  ForwardInputs probe;
  probe.weight = make_view_2d(nullptr, DType::kFloat32, 1, 1);
  probe.input = make_view_1d(nullptr, DType::kInt64, 1);
  const TensorView probe_offsets = make_view_1d(nullptr, DType::kInt64, 1);
  probe.offsets = &probe_offsets;
  Options sum;
  sum.mode = Mode::kSum;
  const std::string variant = selection.ok() ? forward_variant_name(probe, sum) : "";

  std::cout << "CPU features:        " << cpu_features() << "\n"
            << "CPU supports:        " << isa_list(supported_isas()) << "\n"
            << "compiled for:        " << isa_list(compiled_isas()) << "\n"
            << "selected ISA:        " << selected_text << "\n"
            << "threads:             " << num_threads() << "\n"
            << "float32/int64 sum:   " << (variant.empty() ? "(no variant)" : variant) << "\n"
            << "CUDA:                " << cuda_status() << "\n";
  print_variants();

  if (!selection.ok()) {
    return report_error(kExitFailure, selection.message());
  }
  return kExitOk;
}

}  // namespace embag::cli
