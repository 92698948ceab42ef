// The kernel registry: the generated table and an index over it.
#include "kernel_registry.h"

#include <array>
#include <string>
#include <unordered_map>

#include "embag_kernel_headers.h"

namespace embag::internal {
namespace {

using kernels::Pipeline;
using kernels::Pooling;

// Each optional dimension as a small integer: 0 = unset, 1 + value otherwise.
template <typename Enum>
uint64_t slot(const std::optional<Enum>& value) {
  return value ? 1 + static_cast<uint64_t>(*value) : 0;
}

uint64_t key_of(const KernelKey& key, Isa isa) {
  uint64_t k = static_cast<uint64_t>(key.pipeline);
  for (uint64_t part :
       {slot(key.pooling), slot(key.weight_dtype), slot(key.index_dtype), slot(key.offsets_dtype),
        static_cast<uint64_t>(key.codec), static_cast<uint64_t>(isa)}) {
    k = (k << 8) | part;
  }
  return k;
}

// Every (key, ISA) that was compiled -> its rows (one, or one per tuned D bucket, in table
// order).
const std::unordered_map<uint64_t, std::vector<const KernelEntry*>>& kernel_index() {
  static const auto* index = [] {
    auto* built = new std::unordered_map<uint64_t, std::vector<const KernelEntry*>>;
    for (const KernelEntry& e : kernel_table()) {
      const KernelKey key{e.pipeline,    e.pooling,       e.weight_dtype,
                          e.index_dtype, e.offsets_dtype, e.codec};
      (*built)[key_of(key, e.isa)].push_back(&e);
    }
    return built;
  }();
  return *index;
}

}  // namespace

Pooling pooling_for(Mode mode, bool has_per_sample_weights) {
  switch (mode) {
    case Mode::kMean:
      return Pooling::kMean;
    case Mode::kMax:
      return Pooling::kMax;
    case Mode::kSum:
      break;
  }
  return has_per_sample_weights ? Pooling::kWeightedSum : Pooling::kSum;
}

const std::vector<KernelEntry>& kernel_table() {
  static const std::vector<KernelEntry> table = {
#include "embag_kernel_table.inc"
  };
  return table;
}

const KernelEntry* find_kernel(const KernelKey& key, Isa isa, int64_t dim, TableClass table_class) {
  const auto& index = kernel_index();
  const auto found = index.find(key_of(key, isa));
  if (found == index.end()) return nullptr;
  const std::vector<const KernelEntry*>& rows = found->second;
  if (rows.size() == 1) return rows.front();
  for (const KernelEntry* e : rows) {
    const bool any_dim = dim < 0 || (e->dim_min == 0 && e->dim_max == 0);
    const bool serves_dim = any_dim || (dim >= e->dim_min && dim <= e->dim_max);
    const bool serves_table = table_class == TableClass::kAny ||
                              e->table_class == TableClass::kAny || e->table_class == table_class;
    if (serves_dim && serves_table) return e;
  }
  // (The build checks that a tuning file's buckets cover every D, and compiles both classes
  // wherever it compiles one; D = 0 runs no kernel.)
  return rows.front();
}

bool device_has_kernels(DeviceType device) {
  static const auto has = [] {
    std::array<bool, 3> found{};
    for (const KernelEntry& e : kernel_table())
      found[static_cast<size_t>(isa_device(e.isa))] = true;
    return found;
  }();
  return device == DeviceType::kCPU || has[static_cast<size_t>(device)];
}

std::string describe(const KernelKey& key) {
  std::string text = kernels::pipeline_name(key.pipeline);
  if (key.pooling) text += std::string(" ") + kernels::pooling_name(*key.pooling);
  if (key.weight_dtype) text += std::string(" for weight ") + dtype_name(*key.weight_dtype);
  if (key.codec != QuantCodec::kNone) {
    text += std::string(" for quantized codec ") + kernels::quant_codec_name(key.codec);
  }
  if (key.index_dtype) text += std::string(", input ") + dtype_name(*key.index_dtype);
  if (key.offsets_dtype) text += std::string(", offsets ") + dtype_name(*key.offsets_dtype);
  return text;
}

}  // namespace embag::internal
