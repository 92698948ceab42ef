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
the CPU's cache sizes and the table-size rule they give (which tables run the
cache-resident forward variants, which the memory-resident ones; EMBAG_CACHE_RESIDENT_BYTES sets
the limit) and the variant a float32 table / int64 indices / mode sum call runs here, for a table
on each side of that limit.

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
                                                 "index", "isa", "tables", "schedule", "from",
                                                 "target"}};
  auto dtype_cell = [](const std::optional<DType>& dtype) {
    return dtype ? std::string(dtype_name(*dtype)) : std::string("-");
  };
  for (const VariantInfo& variant : variants) {
    rows.push_back({variant.name, device_type_name(variant.device), variant.pipeline,
                    variant.mode.empty() ? "-" : variant.mode,
                    variant.quant_codec.empty() ? dtype_cell(variant.weight_dtype)
                                                : "quantized " + variant.quant_codec,
                    dtype_cell(variant.index_dtype), isa_name(variant.isa), variant.table_class,
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

  // Only the shapes and dtypes matter to the variant name; no data is read. One table on each
  // side of the table-size rule's limit.
  const TableSizeRule rule = table_size_rule();
  auto sum_variant = [&](int64_t rows) {
    ForwardInputs probe;
    probe.weight = make_view_2d(nullptr, DType::kFloat32, rows, 1);
    probe.input = make_view_1d(nullptr, DType::kInt64, 1);
    const TensorView probe_offsets = make_view_1d(nullptr, DType::kInt64, 1);
    probe.offsets = &probe_offsets;
    Options sum;
    sum.mode = Mode::kSum;
    const std::string name = selection.ok() ? forward_variant_name(probe, sum) : "";
    return name.empty() ? std::string("(no variant)") : name;
  };
  const std::string small_table = sum_variant(1);
  const std::string large_table = sum_variant(rule.cache_resident_max_bytes / 4 + 1);
  auto size = [](int64_t bytes) {
    if (bytes <= 0) return std::string("?");
    if (bytes % (1 << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
    if (bytes % (1 << 10) == 0) return std::to_string(bytes >> 10) + " KiB";
    return std::to_string(bytes) + " B";
  };

  std::cout << "CPU features:        " << cpu_features() << "\n"
            << "CPU supports:        " << isa_list(supported_isas()) << "\n"
            << "compiled for:        " << isa_list(compiled_isas()) << "\n"
            << "selected ISA:        " << selected_text << "\n"
            << "threads:             " << num_threads() << "\n"
            << "CPU caches:          L1d " << size(rule.l1d_bytes) << ", L2 " << size(rule.l2_bytes)
            << ", L3 " << size(rule.l3_bytes) << " (from " << rule.cache_source << ")\n"
            << "table-size rule:     tables of at most " << size(rule.cache_resident_max_bytes)
            << " run the cache-resident forward variants, larger ones the memory-resident ("
            << rule.limit_source << ")\n"
            << "float32/int64 sum:   cache-resident table: " << small_table
            << ", memory-resident table: " << large_table << "\n"
            << "CUDA:                " << cuda_status() << "\n";
  print_variants();

  if (!selection.ok()) {
    return report_error(kExitFailure, selection.message());
  }
  return kExitOk;
}

}  // namespace embag::cli
