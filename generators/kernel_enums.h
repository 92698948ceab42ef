// The vocabulary shared by the generators and the runtime: which pipelines exist, the pooling a
// pipeline implements, the norm kinds of max_norm, and the accumulation-type rule.
//
// One definition for both sides: the generators map GeneratorParam strings onto these values,
// the CMake variant table names them in the registry rows it generates, and the runtime picks
// kernels and passes arguments with them. Plain C++ (no Halide), so the runtime can include it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
#include <string>

namespace embag::kernels {

// An enum value and its name: each enum's names are one table of these, read both ways (name_of
// for messages and registry rows, names_map for the generators' GeneratorParam strings).
template <typename Enum>
struct NamedValue {
  Enum value;
  const char* name;
};

template <typename Enum, size_t N>
constexpr const char* name_of(const NamedValue<Enum> (&table)[N], Enum value) {
  for (const NamedValue<Enum>& row : table) {
    if (row.value == value) return row.name;
  }
  return "?";
}

// The name -> value map of a name table, built once per table.
template <const auto& kTable>
const auto& names_map() {
  using Enum = decltype(kTable[0].value);
  static const std::map<std::string, Enum> names = [] {
    std::map<std::string, Enum> built;
    for (const NamedValue<Enum>& row : kTable) built.emplace(row.name, row.value);
    return built;
  }();
  return names;
}

// A kernel family: one generator, many variants.
enum class Pipeline : uint8_t {
  kForward,       // pooled lookups (sum, weighted sum, mean, max)
  kRenorm,        // max_norm: renormalised copies of the referenced rows
  kBackwardRows,  // weight gradient, one fold per distinct row
  kPswGrad,       // per_sample_weights gradient
  kDenseScatter,  // dense weight gradient in one pass, no sort (CPU, float32 / float64)
  // GPU planning: the steps the CPU runtime does in C++, done on the device so that no index,
  // offset or table byte is copied to the host.
  kCheck,          // validation of offsets and indices, reduced to a small verdict
  kLayout,         // the B + 1 offsets in the indices' dtype (from 1-D offsets or 2-D input)
  kSortKeys,       // (row, position) pairs for grouping positions by row
  kPositionBag,    // the bag of each position
  kBagCount,       // valid (non-padding) positions per bag, int64 (forward's bag_count)
  kBagDivisor,     // the same as int32 (mean's divisor in backward)
  kScatterRows,    // dense gradient: zero the (V, D) table, then write the listed rows
  kWriteBackRows,  // renorm: write only the listed rows marked changed, nothing else
  // Table-batched training (GPU): fold each touched row's gradient and apply the optimizer to the
  // row and its state in place, one kernel per optimizer (generators/fused_update_generator.cpp).
  kFusedSgd,
  kFusedAdagrad,
  kFusedRowwiseAdagrad,
  kFusedAdam,
  kCount
};

// The pooling a forward or backward-rows kernel implements. kWeightedSum is sum with
// per_sample_weights (its own kernel, so plain sum carries no multiply). kMaxValues is forward
// max without the argmax output (CPU forward kernels only): what a call that does not ask for
// the winning rows runs, so inference does not pay for training's int64 output.
enum class Pooling : uint8_t { kSum, kWeightedSum, kMean, kMax, kMaxValues, kCount };

// How a quantized-table forward kernel decodes one row (kNone: a float table). A codec is what
// the kernel is compiled for: the width of a code and the type of the row's scale and bias.
// Where in the row the codes and the qparams sit (PyTorch's prepack layouts keep the qparams at
// the end, FBGEMM's TBE at the front) is not compiled in: the runtime passes both byte offsets,
// so one kernel serves both layouts. The public formats (include/embag/quantized.h) map onto a
// codec plus those offsets in runtime/quantized_format.cpp.
//   kU8F32: 8-bit codes, float32 scale and bias (torch's embedding_bag_byte_prepack)
//   kU8F16 / kU4F16 / kU2F16: 8-, 4-, 2-bit codes, float16 scale and bias (lowest bits first)
//   kF8: one byte per element, an 8-bit float (sign, exponent, mantissa), no scale or bias:
//        float8_e4m3fn, float8_e5m2 and FBGEMM's HFP8 share it, their widths, bias and special
//        codes being run-time arguments (Fp8Encoding), so three formats cost one set of kernels.
// Every integer codec dequantises an element as w = scale * q + bias in float32, the multiply
// rounded before the add (never an FMA); kF8 widens its byte to the float32 it denotes, exactly.
// The kernel then folds w exactly as a float32 table's kernel folds its element: so a quantized
// table's result is bitwise the float32 result on its dequantised table.
enum class QuantCodec : uint8_t { kNone, kU8F32, kU8F16, kU4F16, kU2F16, kF8, kCount };

inline constexpr NamedValue<QuantCodec> kQuantCodecNames[] = {
    {QuantCodec::kNone, "none"},   {QuantCodec::kU8F32, "u8f32"}, {QuantCodec::kU8F16, "u8f16"},
    {QuantCodec::kU4F16, "u4f16"}, {QuantCodec::kU2F16, "u2f16"}, {QuantCodec::kF8, "f8"}};

// An 8-bit float of a kF8 kernel: [sign][exponent][mantissa_bits of mantissa], the exponent
// biased by exponent_bias, subnormal where the exponent field is 0. A magnitude (code & 0x7F)
// >= special_from has the exponent field all ones and means infinity (mantissa 0) or NaN: 0x7C
// for IEEE-like float8_e5m2, 0x7F for float8_e4m3fn (whose only special code is NaN, 0x7F), 0x80
// (none) for FBGEMM's HFP8, whose 0x7F is 480. The runtime passes the three as the kernel's
// scalars fp8_mantissa_bits, fp8_exponent_bias and fp8_special_from.
struct Fp8Encoding {
  int32_t mantissa_bits = 0;
  int32_t exponent_bias = 0;
  int32_t special_from = 0x80;
};
inline const char* quant_codec_name(QuantCodec codec) { return name_of(kQuantCodecNames, codec); }

// The `codec` GeneratorParam's values (the names in the kernels' names and the CMake table).
inline const std::map<std::string, QuantCodec>& quant_codec_names() {
  return names_map<kQuantCodecNames>();
}

// Bits of one code of a codec (0 for kNone).
constexpr int quant_code_bits(QuantCodec codec) {
  return codec == QuantCodec::kU4F16   ? 4
         : codec == QuantCodec::kU2F16 ? 2
         : codec == QuantCodec::kNone  ? 0
                                       : 8;
}

// Which tables a forward kernel is for, by where their rows live (CPU forward kernels; every
// other row serves any table). A gather from a table that stays in this CPU's caches needs no
// software prefetch, and there a prefetch only costs issue slots; a gather from a table far past
// the last-level cache waits on DRAM unless rows are prefetched well ahead. So each CPU forward
// kernel is compiled twice, and the runtime picks per call from the table's bytes against the
// cache sizes it read (runtime/cpu_features.cpp).
enum class TableClass : uint8_t {
  kAny,             // one kernel for every table (GPU kernels, other pipelines, tuned kernels)
  kCacheResident,   // no software prefetch
  kMemoryResident,  // rows prefetched ahead of the gather
};

inline constexpr NamedValue<TableClass> kTableClassNames[] = {
    {TableClass::kAny, "any"},
    {TableClass::kCacheResident, "cache-resident"},
    {TableClass::kMemoryResident, "memory-resident"}};
inline const char* table_class_name(TableClass table_class) {
  return name_of(kTableClassNames, table_class);
}

// Which fold the renorm kernel runs for a norm_type, chosen on the host so that kernels never
// compare floats with infinities (they are compiled with fast-math flags that may assume none).
enum class NormKind : int32_t {
  kGeneralP = 0,
  kL1 = 1,
  kL2 = 2,
  kMaxAbs = 3,
  kMinAbs = 4,
  kNonZeros = 5,
};

// max_norm scales a row by max_norm / (norm + kMaxNormEpsilon), as PyTorch does.
constexpr double kMaxNormEpsilon = 1e-7;

// float64 tables accumulate in float64; float32, float16 and bfloat16 tables in float32.
constexpr int accumulator_bits(int weight_bits) { return weight_bits == 64 ? 64 : 32; }

inline constexpr NamedValue<Pooling> kPoolingNames[] = {{Pooling::kSum, "sum"},
                                                        {Pooling::kWeightedSum, "wsum"},
                                                        {Pooling::kMean, "mean"},
                                                        {Pooling::kMax, "max"},
                                                        {Pooling::kMaxValues, "max_values"}};
inline const char* pooling_name(Pooling pooling) { return name_of(kPoolingNames, pooling); }

// The `mode` GeneratorParam's values (the names in the kernels' names and the CMake table).
inline const std::map<std::string, Pooling>& pooling_names() { return names_map<kPoolingNames>(); }

inline constexpr NamedValue<Pipeline> kPipelineNames[] = {
    {Pipeline::kForward, "forward"},
    {Pipeline::kRenorm, "renorm"},
    {Pipeline::kBackwardRows, "backward"},
    {Pipeline::kPswGrad, "psw_grad"},
    {Pipeline::kDenseScatter, "dense_scatter"},
    {Pipeline::kCheck, "check"},
    {Pipeline::kLayout, "layout"},
    {Pipeline::kSortKeys, "sort_keys"},
    {Pipeline::kPositionBag, "position_bag"},
    {Pipeline::kBagCount, "bag_count"},
    {Pipeline::kBagDivisor, "bag_divisor"},
    {Pipeline::kScatterRows, "scatter_rows"},
    {Pipeline::kWriteBackRows, "write_back_rows"},
    {Pipeline::kFusedSgd, "fused_sgd"},
    {Pipeline::kFusedAdagrad, "fused_adagrad"},
    {Pipeline::kFusedRowwiseAdagrad, "fused_rowwise_adagrad"},
    {Pipeline::kFusedAdam, "fused_adam"}};
inline const char* pipeline_name(Pipeline pipeline) { return name_of(kPipelineNames, pipeline); }

// The fused-update generator's `optimizer` GeneratorParam: the optimizer names of
// include/embag/batched.h (optimizer_name), each mapped to its kernel family.
inline constexpr NamedValue<Pipeline> kFusedOptimizerNames[] = {
    {Pipeline::kFusedSgd, "sgd"},
    {Pipeline::kFusedAdagrad, "adagrad"},
    {Pipeline::kFusedRowwiseAdagrad, "rowwise_adagrad"},
    {Pipeline::kFusedAdam, "adam"}};
inline const std::map<std::string, Pipeline>& fused_optimizer_names() {
  return names_map<kFusedOptimizerNames>();
}

// Each name table lists every value of its enum once.
static_assert(std::size(kPipelineNames) == static_cast<size_t>(Pipeline::kCount));
static_assert(std::size(kPoolingNames) == static_cast<size_t>(Pooling::kCount));
static_assert(std::size(kQuantCodecNames) == static_cast<size_t>(QuantCodec::kCount));
static_assert(std::size(kTableClassNames) == static_cast<size_t>(TableClass::kMemoryResident) + 1);

}  // namespace embag::kernels
