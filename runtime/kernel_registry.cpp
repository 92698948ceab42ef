// The kernel registry: the generated table and an index over it.
#include "kernel_registry.h"

#include <array>
#include <string>

#include "embag_kernel_headers.h"

namespace embag::internal {
namespace {

using kernels::Pipeline;
using kernels::Pooling;

// Each optional dimension as a small integer: 0 = unset, 1 + value otherwise.
template <typename Enum>
size_t slot(const std::optional<Enum>& value) {
  return value ? 1 + static_cast<size_t>(*value) : 0;
}

constexpr size_t kPipelines = static_cast<size_t>(Pipeline::kCount);
constexpr size_t kPoolings = static_cast<size_t>(Pooling::kCount) + 1;
constexpr size_t kDTypes = static_cast<size_t>(DType::kFloat64) + 2;
constexpr size_t kIsas = static_cast<size_t>(Isa::kOpenCL) + 1;
constexpr size_t kIndexSize = kPipelines * kPoolings * kDTypes * kDTypes * kIsas;

size_t index_of(const KernelKey& key, Isa isa) {
  size_t i = static_cast<size_t>(key.pipeline);
  i = i * kPoolings + slot(key.pooling);
  i = i * kDTypes + slot(key.weight_dtype);
  i = i * kDTypes + slot(key.index_dtype);
  return i * kIsas + static_cast<size_t>(isa);
}

// Every (key, ISA) -> its row; nullptr where nothing was compiled.
const std::array<const KernelEntry*, kIndexSize>& kernel_index() {
  static const auto* index = [] {
    auto* built = new std::array<const KernelEntry*, kIndexSize>{};
    for (const KernelEntry& e : kernel_table()) {
      const KernelKey key{e.pipeline, e.pooling, e.weight_dtype, e.index_dtype};
      const KernelEntry*& cell = (*built)[index_of(key, e.isa)];
      if (cell == nullptr) cell = &e;  // first match wins
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

const KernelEntry* find_kernel(const KernelKey& key, Isa isa) {
  return kernel_index()[index_of(key, isa)];
}

std::string describe(const KernelKey& key) {
  std::string text = kernels::pipeline_name(key.pipeline);
  if (key.pooling) text += std::string(" ") + kernels::pooling_name(*key.pooling);
  if (key.weight_dtype) text += std::string(" for weight ") + dtype_name(*key.weight_dtype);
  if (key.index_dtype) text += std::string(", input ") + dtype_name(*key.index_dtype);
  return text;
}

}  // namespace embag::internal
