// The kernel registry: builds the table from the generated rows and answers lookups.
#include "kernel_registry.h"

#include "embag_kernel_headers.h"

namespace embag::internal {
namespace {

KernelEntry forward_entry(const char* name, KernelPooling pooling, DType weight, DType index,
                          Isa isa, const char* target) {
  KernelEntry e{};
  e.name = name;
  e.pipeline = KernelPipeline::kForward;
  e.pooling = pooling;
  e.weight_dtype = weight;
  e.index_dtype = index;
  e.isa = isa;
  e.target = target;
  return e;
}

std::vector<KernelEntry> build_table() {
  std::vector<KernelEntry> table;
  KernelEntry e{};
#define EMBAG_FORWARD_KERNEL_sum(W, I, NAME, ISA, TARGET)                              \
  e = forward_entry(#NAME, KernelPooling::kSum, DType::W, DType::I, Isa::ISA, TARGET); \
  e.fn.sum = &NAME;                                                                    \
  table.push_back(e);
#define EMBAG_FORWARD_KERNEL_wsum(W, I, NAME, ISA, TARGET)                                     \
  e = forward_entry(#NAME, KernelPooling::kWeightedSum, DType::W, DType::I, Isa::ISA, TARGET); \
  e.fn.weighted_sum = &NAME;                                                                   \
  table.push_back(e);
#define EMBAG_FORWARD_KERNEL_mean(W, I, NAME, ISA, TARGET)                              \
  e = forward_entry(#NAME, KernelPooling::kMean, DType::W, DType::I, Isa::ISA, TARGET); \
  e.fn.sum = &NAME;                                                                     \
  table.push_back(e);
#define EMBAG_FORWARD_KERNEL_max(W, I, NAME, ISA, TARGET)                              \
  e = forward_entry(#NAME, KernelPooling::kMax, DType::W, DType::I, Isa::ISA, TARGET); \
  e.fn.max = &NAME;                                                                    \
  table.push_back(e);
#define EMBAG_RENORM_KERNEL(W, NAME, ISA, TARGET) \
  e = KernelEntry{};                              \
  e.name = #NAME;                                 \
  e.pipeline = KernelPipeline::kRenorm;           \
  e.weight_dtype = DType::W;                      \
  e.index_dtype = DType::kInt64;                  \
  e.isa = Isa::ISA;                               \
  e.target = TARGET;                              \
  e.fn.renorm = &NAME;                            \
  table.push_back(e);
#define EMBAG_BACKWARD_ROWS_ENTRY(POOLING, W, NAME, ISA, TARGET)                               \
  e = forward_entry(#NAME, KernelPooling::POOLING, DType::W, DType::kInt32, Isa::ISA, TARGET); \
  e.pipeline = KernelPipeline::kBackwardRows;
#define EMBAG_BACKWARD_ROWS_KERNEL_sum(W, NAME, ISA, TARGET) \
  EMBAG_BACKWARD_ROWS_ENTRY(kSum, W, NAME, ISA, TARGET)      \
  e.fn.backward_rows = &NAME;                                \
  table.push_back(e);
#define EMBAG_BACKWARD_ROWS_KERNEL_wsum(W, NAME, ISA, TARGET)   \
  EMBAG_BACKWARD_ROWS_ENTRY(kWeightedSum, W, NAME, ISA, TARGET) \
  e.fn.backward_rows_with = &NAME;                              \
  table.push_back(e);
#define EMBAG_BACKWARD_ROWS_KERNEL_mean(W, NAME, ISA, TARGET) \
  EMBAG_BACKWARD_ROWS_ENTRY(kMean, W, NAME, ISA, TARGET)      \
  e.fn.backward_rows_with = &NAME;                            \
  table.push_back(e);
#define EMBAG_BACKWARD_ROWS_KERNEL_max(W, NAME, ISA, TARGET) \
  EMBAG_BACKWARD_ROWS_ENTRY(kMax, W, NAME, ISA, TARGET)      \
  e.fn.backward_rows_max = &NAME;                            \
  table.push_back(e);
#define EMBAG_PSW_GRAD_KERNEL(W, I, NAME, ISA, TARGET)                                         \
  e = forward_entry(#NAME, KernelPooling::kWeightedSum, DType::W, DType::I, Isa::ISA, TARGET); \
  e.pipeline = KernelPipeline::kPswGrad;                                                       \
  e.fn.psw_grad = &NAME;                                                                       \
  table.push_back(e);
#include "embag_kernel_table.inc"
#undef EMBAG_BACKWARD_ROWS_ENTRY
#undef EMBAG_BACKWARD_ROWS_KERNEL_sum
#undef EMBAG_BACKWARD_ROWS_KERNEL_wsum
#undef EMBAG_BACKWARD_ROWS_KERNEL_mean
#undef EMBAG_BACKWARD_ROWS_KERNEL_max
#undef EMBAG_PSW_GRAD_KERNEL
#undef EMBAG_FORWARD_KERNEL_sum
#undef EMBAG_FORWARD_KERNEL_wsum
#undef EMBAG_FORWARD_KERNEL_mean
#undef EMBAG_FORWARD_KERNEL_max
#undef EMBAG_RENORM_KERNEL
  return table;
}

}  // namespace

const char* kernel_pooling_name(KernelPooling pooling) {
  switch (pooling) {
    case KernelPooling::kSum:
      return "sum";
    case KernelPooling::kWeightedSum:
      return "wsum";
    case KernelPooling::kMean:
      return "mean";
    case KernelPooling::kMax:
      return "max";
  }
  return "?";
}

KernelPooling pooling_for(Mode mode, bool has_per_sample_weights) {
  switch (mode) {
    case Mode::kMean:
      return KernelPooling::kMean;
    case Mode::kMax:
      return KernelPooling::kMax;
    case Mode::kSum:
      break;
  }
  return has_per_sample_weights ? KernelPooling::kWeightedSum : KernelPooling::kSum;
}

const std::vector<KernelEntry>& kernel_table() {
  static const std::vector<KernelEntry> table = build_table();
  return table;
}

namespace {
const KernelEntry* find_kernel(KernelPipeline pipeline, KernelPooling pooling, DType weight,
                               DType index, Isa isa) {
  for (const KernelEntry& e : kernel_table()) {
    if (e.pipeline == pipeline && e.pooling == pooling && e.weight_dtype == weight &&
        e.index_dtype == index && e.isa == isa) {
      return &e;
    }
  }
  return nullptr;
}
}  // namespace

const KernelEntry* find_forward_kernel(KernelPooling pooling, DType weight, DType index, Isa isa) {
  return find_kernel(KernelPipeline::kForward, pooling, weight, index, isa);
}

const char* kernel_pipeline_name(KernelPipeline pipeline) {
  switch (pipeline) {
    case KernelPipeline::kForward:
      return "forward";
    case KernelPipeline::kRenorm:
      return "renorm";
    case KernelPipeline::kBackwardRows:
      return "backward";
    case KernelPipeline::kPswGrad:
      return "psw_grad";
  }
  return "?";
}

const KernelEntry* find_backward_rows_kernel(KernelPooling pooling, DType weight, Isa isa) {
  return find_kernel(KernelPipeline::kBackwardRows, pooling, weight, DType::kInt32, isa);
}

const KernelEntry* find_psw_grad_kernel(DType weight, DType index, Isa isa) {
  return find_kernel(KernelPipeline::kPswGrad, KernelPooling::kWeightedSum, weight, index, isa);
}

const KernelEntry* find_renorm_kernel(DType weight, Isa isa) {
  for (const KernelEntry& e : kernel_table()) {
    if (e.pipeline == KernelPipeline::kRenorm && e.weight_dtype == weight && e.isa == isa)
      return &e;
  }
  return nullptr;
}

}  // namespace embag::internal
