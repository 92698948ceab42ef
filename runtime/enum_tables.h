// The facts about each public enum value -- its name, element size, Halide type, device, what a
// CPU needs to run it -- as one table per enum, and the lookups that read them. Every
// name/size/parse function of the runtime answers from these rows, so adding a value means
// adding one row (the compiler checks each table covers its enum; see the static_asserts).
#pragma once

#include <HalideRuntime.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "embag/embag.h"
#include "embag/tensor.h"
#include "kernel_enums.h"

namespace embag::internal {

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t bytes;
  halide_type_code_t halide_code;
  const char* torch_legacy_name;  // PyTorch's legacy CPU tensor type, as its messages word it
};
inline constexpr DTypeInfo kDTypeTable[] = {
    {DType::kInt32, "int32", 4, halide_type_int, "torch.IntTensor"},
    {DType::kInt64, "int64", 8, halide_type_int, "torch.LongTensor"},
    {DType::kFloat16, "float16", 2, halide_type_float, "torch.HalfTensor"},
    {DType::kBFloat16, "bfloat16", 2, halide_type_bfloat, "torch.BFloat16Tensor"},
    {DType::kFloat32, "float32", 4, halide_type_float, "torch.FloatTensor"},
    {DType::kFloat64, "float64", 8, halide_type_float, "torch.DoubleTensor"},
};

// Enums whose only fact is their name (kernel_enums.h's NamedValue and name_of serve them).
template <typename Enum>
using EnumName = kernels::NamedValue<Enum>;
inline constexpr EnumName<DeviceType> kDeviceTypeTable[] = {
    {DeviceType::kCPU, "cpu"}, {DeviceType::kCUDA, "cuda"}, {DeviceType::kOpenCL, "opencl"}};
inline constexpr EnumName<Mode> kModeTable[] = {
    {Mode::kSum, "sum"}, {Mode::kMean, "mean"}, {Mode::kMax, "max"}};

// In the runtime's order of preference, best first (known_isas() and automatic selection walk
// it in this order).
struct IsaInfo {
  Isa isa;
  const char* name;
  DeviceType device;
  // What the CPU needs for the ISA's kernels, as error messages word it.
  const char* requirement;
};
inline constexpr const char* kGpuRequirement =
    "a GPU (it is chosen by the tensors' device, not by set_isa)";
inline constexpr IsaInfo kIsaTable[] = {
    {Isa::kAvx512, "avx512", DeviceType::kCPU, "AVX-512 F, BW, DQ, VL and CD"},
    {Isa::kAvx2, "avx2", DeviceType::kCPU, "AVX2, FMA and F16C"},
    {Isa::kSse41, "sse41", DeviceType::kCPU, "SSE4.1"},
    {Isa::kNeon, "neon", DeviceType::kCPU, "a 64-bit ARM CPU with Advanced SIMD (NEON)"},
    {Isa::kArmv7, "armv7", DeviceType::kCPU, "a 32-bit ARM CPU with NEON and VFPv3"},
    {Isa::kCudaSm86, "cuda_sm86", DeviceType::kCUDA, kGpuRequirement},
    {Isa::kCudaSm80, "cuda_sm80", DeviceType::kCUDA, kGpuRequirement},
    {Isa::kOpenCL, "opencl", DeviceType::kOpenCL, kGpuRequirement},
};

// Each table lists every value of its enum once (the enums count from 0 without gaps).
static_assert(std::size(kDTypeTable) == static_cast<size_t>(DType::kFloat64) + 1);
static_assert(std::size(kDeviceTypeTable) == static_cast<size_t>(DeviceType::kOpenCL) + 1);
static_assert(std::size(kModeTable) == static_cast<size_t>(Mode::kMax) + 1);
static_assert(std::size(kIsaTable) == static_cast<size_t>(Isa::kOpenCL) + 1);

// The row of `table` whose `field` is `key`, or null (a value outside the enum, from a cast).
template <typename Row, size_t N, typename Key>
constexpr const Row* find_row(const Row (&table)[N], Key Row::*field, Key key) {
  for (const Row& row : table) {
    if (row.*field == key) return &row;
  }
  return nullptr;
}

// The name of `key` in a table of EnumName rows, or `unknown`.
template <typename Enum, size_t N>
constexpr const char* name_in(const EnumName<Enum> (&table)[N], Enum key, const char* unknown) {
  const EnumName<Enum>* row = find_row(table, &EnumName<Enum>::value, key);
  return row ? row->name : unknown;
}

// The `field` of the row of `table` named `name` (exactly), if there is one.
template <typename Row, size_t N, typename Value>
std::optional<Value> parse_in(const Row (&table)[N], Value Row::*field, std::string_view name) {
  for (const Row& row : table) {
    if (name == row.name) return row.*field;
  }
  return std::nullopt;
}

}  // namespace embag::internal
