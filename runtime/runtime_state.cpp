// Process-wide runtime state and the small public calls that read or change it.
#include "runtime_state.h"

#include <HalideRuntime.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <system_error>
#include <thread>

#include "api_guard.h"
#include "call_context.h"
#include "cpu_features.h"
#include "enum_tables.h"
#include "gpu/cuda_driver.h"
#include "kernel_registry.h"
#include "kernel_thread_pool.h"

namespace embag::internal {
namespace {

// ISA choice: -1 = automatic, otherwise the Isa value. Set from EMBAG_ISA on first use.
struct IsaChoice {
  std::atomic<int> forced{-1};
  std::string env_error;  // non-empty when EMBAG_ISA held a value that is not an ISA name
  // set_isa() overrides a bad EMBAG_ISA; env_error itself is never written after start-up, so
  // concurrent callers can read it while another thread calls set_isa().
  std::atomic<bool> env_error_overridden{false};
};

IsaChoice& isa_choice() {
  static IsaChoice* choice = [] {
    auto* c = new IsaChoice;
    if (const char* env = std::getenv("EMBAG_ISA"); env != nullptr && *env != '\0') {
      if (std::optional<Isa> isa = parse_isa(env)) {
        c->forced = static_cast<int>(*isa);
      } else {
        c->env_error =
            std::string("EMBAG_ISA=") + env +
            " is not an instruction set embag knows; use avx512, avx2, sse41, neon or armv7";
      }
    }
    return c;
  }();
  return *choice;
}

}  // namespace

void install_runtime_hooks() {
  static std::once_flag once;
  std::call_once(once, [] {
    install_halide_hooks();
    int threads = 0;
    if (const char* env = std::getenv("EMBAG_NUM_THREADS"); env != nullptr) {
      threads = std::atoi(env);
    }
    if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
    threads = std::clamp(threads, 1, max_num_threads());
    // (should the system refuse threads this early, calls run on the calling thread alone)
    if (set_kernel_threads(threads) != 0) set_kernel_threads(1);
  });
}

namespace {

thread_local std::string t_last_variant;

// The ISAs of the kernel table, best first: the table is generated data, so this is worked out
// once. (Every call resolves its ISA; building the list each time walked the whole table and
// allocated, about a quarter of a 1 us call on the CI shapes.)
const std::vector<Isa>& compiled_isa_list() {
  static const std::vector<Isa> isas = [] {
    std::vector<Isa> out;
    for (Isa isa : known_isas()) {
      for (const KernelEntry& e : kernel_table()) {
        if (e.isa == isa) {
          out.push_back(isa);
          break;
        }
      }
    }
    return out;
  }();
  return isas;
}

Status check_isa_usable(Isa isa) {
  bool compiled = false;
  for (Isa c : compiled_isa_list()) compiled = compiled || c == isa;
  if (!compiled) {
    return Status(StatusCode::kUnsupported, std::string("ISA ") + isa_name(isa) +
                                                " was not compiled into this build of embag");
  }
  if (!cpu_supports(isa)) {
    return Status(StatusCode::kUnsupported, std::string("ISA ") + isa_name(isa) + " needs " +
                                                isa_requirement(isa) +
                                                ", which this CPU does not support");
  }
  return Status::Ok();
}

}  // namespace

Status resolve_isa(Isa* isa) {
  install_runtime_hooks();
  IsaChoice& choice = isa_choice();
  if (!choice.env_error.empty() && !choice.env_error_overridden.load()) {
    return Status(StatusCode::kInvalidArgument, choice.env_error);
  }
  const int forced = choice.forced.load();
  if (forced >= 0) {
    Status s = check_isa_usable(static_cast<Isa>(forced));
    if (!s.ok()) return Status(s.code(), "forced " + s.message());
    *isa = static_cast<Isa>(forced);
    return Status::Ok();
  }
  for (Isa c : compiled_isa_list()) {
    if (cpu_supports(c)) {
      *isa = c;
      return Status::Ok();
    }
  }
  return Status(StatusCode::kUnsupported,
                "this CPU supports none of the instruction sets embag was compiled for");
}

void record_last_variant(const char* name) { t_last_variant = name; }

}  // namespace embag::internal

namespace embag {

using internal::kernel_table;

const char* mode_name(Mode mode) { return internal::name_in(internal::kModeTable, mode, "?"); }

std::optional<Mode> parse_mode(const std::string& name) {
  return internal::parse_in(internal::kModeTable, &internal::EnumName<Mode>::value, name);
}

const char* isa_name(Isa isa) {
  const internal::IsaInfo* row =
      internal::find_row(internal::kIsaTable, &internal::IsaInfo::isa, isa);
  return row ? row->name : "?";
}

DeviceType isa_device(Isa isa) {
  const internal::IsaInfo* row =
      internal::find_row(internal::kIsaTable, &internal::IsaInfo::isa, isa);
  return row ? row->device : DeviceType::kCPU;
}

const std::vector<Isa>& known_isas() {
  static const std::vector<Isa> isas = [] {
    std::vector<Isa> out;
    for (const internal::IsaInfo& row : internal::kIsaTable) out.push_back(row.isa);
    return out;
  }();
  return isas;
}

std::optional<Isa> parse_isa(const std::string& name) {
  return internal::parse_in(internal::kIsaTable, &internal::IsaInfo::isa, name);
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : known_isas()) {
    if (internal::cpu_supports(isa)) out.push_back(isa);
  }
  return out;
}

std::vector<Isa> compiled_isas() { return internal::compiled_isa_list(); }

std::string cpu_features() { return internal::cpu_feature_summary(); }

std::string cuda_status() { return internal::cuda::status_line(); }

Status set_isa(std::optional<Isa> isa) {
  internal::IsaChoice& choice = internal::isa_choice();
  if (isa) {
    Status s = internal::check_isa_usable(*isa);
    if (!s.ok()) return s;
  }
  choice.forced = isa ? static_cast<int>(*isa) : -1;
  // An explicit choice overrides a bad EMBAG_ISA.
  choice.env_error_overridden = true;
  return Status::Ok();
}

Status selected_isa(Isa* isa) { return internal::resolve_isa(isa); }

const std::string& last_variant() { return internal::t_last_variant; }

const std::vector<VariantInfo>& compiled_variants() {
  static const std::vector<VariantInfo> variants = [] {
    std::vector<VariantInfo> out;
    for (const internal::KernelEntry& e : kernel_table()) {
      VariantInfo v;
      v.name = e.name;
      v.pipeline = kernels::pipeline_name(e.pipeline);
      v.mode = e.pooling ? kernels::pooling_name(*e.pooling) : "";
      v.weight_dtype = e.weight_dtype;
      if (e.codec != kernels::QuantCodec::kNone) v.quant_codec = kernels::quant_codec_name(e.codec);
      v.index_dtype = e.index_dtype;
      v.isa = e.isa;
      v.device = isa_device(e.isa);
      v.target = e.target;
      v.schedule = e.schedule;
      v.schedule_source = e.schedule_source;
      v.dim_min = e.dim_min;
      v.dim_max = e.dim_max;
      v.table_class = kernels::table_class_name(e.table_class);
      out.push_back(v);
    }
    return out;
  }();
  return variants;
}

int max_num_threads() {
  const int hardware = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1024, hardware > 256 ? 4 * hardware : 0);
}

Status set_num_threads(int n) {
  return internal::guard_api([&] {
    const int limit = max_num_threads();
    if (n < 1 || n > limit) {
      return Status(StatusCode::kInvalidArgument,
                    "set_num_threads: n must be between 1 and " + std::to_string(limit) +
                        " (max_num_threads()), but got " + std::to_string(n));
    }
    if (int error = internal::set_kernel_threads(n); error != 0) {
      return Status(StatusCode::kUnsupported,
                    "set_num_threads(" + std::to_string(n) + "): the system refused to start " +
                        "another thread (" + std::generic_category().message(error) +
                        "); the kernels keep " + std::to_string(internal::kernel_threads()) +
                        " threads");
    }
    return Status::Ok();
  });
}

int num_threads() {
  internal::install_runtime_hooks();
  return internal::kernel_threads();
}

}  // namespace embag
