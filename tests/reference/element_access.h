// Reading and writing single elements of raw arrays of any embag dtype, for tests that build
// inputs by hand and compare outputs bit for bit.
//
// Header-only and independent of the runtime, so a test's notion of "the bits of element i" never
// depends on the code under test.
#pragma once

#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "embag/tensor.h"
#include "reference/half_float.h"

namespace embag::ref {

// Bytes per element (embag's public dtype_size, under the name the tests use).
inline size_t element_size(DType dtype) { return dtype_size(dtype); }

inline bool is_float_dtype(DType dtype) { return dtype != DType::kInt32 && dtype != DType::kInt64; }

// The raw bits of element `index` (in elements from `base`), zero-extended.
inline uint64_t bits_at(const void* base, DType dtype, int64_t index) {
  const size_t size = element_size(dtype);
  const unsigned char* p =
      static_cast<const unsigned char*>(base) + index * static_cast<int64_t>(size);
  if (size == 2) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
  }
  if (size == 4) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// The value those bits encode, exactly (every embag dtype widens exactly to double, except
// int64 beyond 2^53, which tests do not use as values).
inline double bits_value(DType dtype, uint64_t bits) {
  switch (dtype) {
    case DType::kFloat16:
      return half_to_float(static_cast<uint16_t>(bits));
    case DType::kBFloat16:
      return bfloat16_to_float(static_cast<uint16_t>(bits));
    case DType::kFloat32:
      return bits_float(static_cast<uint32_t>(bits));
    case DType::kFloat64: {
      double d;
      std::memcpy(&d, &bits, sizeof d);
      return d;
    }
    case DType::kInt32:
      return static_cast<int32_t>(static_cast<uint32_t>(bits));
    case DType::kInt64:
      return static_cast<double>(static_cast<int64_t>(bits));
  }
  return 0;
}

inline double value_at_index(const void* base, DType dtype, int64_t index) {
  return bits_value(dtype, bits_at(base, dtype, index));
}

inline bool is_nan_bits(DType dtype, uint64_t bits) {
  return is_float_dtype(dtype) && std::isnan(bits_value(dtype, bits));
}

// "0x3f99999a (1.2000000476837158)": the bits to compare, the value to read.
inline std::string format_element(DType dtype, uint64_t bits) {
  char buffer[64];
  if (is_float_dtype(dtype)) {
    std::snprintf(buffer, sizeof buffer, "0x%0*" PRIx64 " (%.17g)",
                  static_cast<int>(element_size(dtype) * 2), bits, bits_value(dtype, bits));
  } else {
    std::snprintf(buffer, sizeof buffer, "%" PRId64,
                  dtype == DType::kInt32
                      ? static_cast<int64_t>(static_cast<int32_t>(static_cast<uint32_t>(bits)))
                      : static_cast<int64_t>(bits));
  }
  return buffer;
}

// Stores `value` as element `index`, rounding to nearest even for the narrower float types
// (through float for float16 / bfloat16, so pass values exact in float when that matters).
inline void put_value(void* base, DType dtype, int64_t index, double value) {
  unsigned char* p =
      static_cast<unsigned char*>(base) + index * static_cast<int64_t>(element_size(dtype));
  switch (dtype) {
    case DType::kFloat16: {
      const uint16_t h = float_to_half(static_cast<float>(value));
      std::memcpy(p, &h, 2);
      break;
    }
    case DType::kBFloat16: {
      const uint16_t h = float_to_bfloat16(static_cast<float>(value));
      std::memcpy(p, &h, 2);
      break;
    }
    case DType::kFloat32: {
      const float f = static_cast<float>(value);
      std::memcpy(p, &f, 4);
      break;
    }
    case DType::kFloat64:
      std::memcpy(p, &value, 8);
      break;
    case DType::kInt32: {
      const int32_t i = static_cast<int32_t>(value);
      std::memcpy(p, &i, 4);
      break;
    }
    case DType::kInt64: {
      const int64_t i = static_cast<int64_t>(value);
      std::memcpy(p, &i, 8);
      break;
    }
  }
}

// Stores an index (int32 arrays get the low 32 bits, which is how tests write junk indices).
inline void put_index(void* base, DType dtype, int64_t index, int64_t value) {
  unsigned char* p =
      static_cast<unsigned char*>(base) + index * static_cast<int64_t>(element_size(dtype));
  if (dtype == DType::kInt32) {
    const int32_t v = static_cast<int32_t>(value);
    std::memcpy(p, &v, 4);
  } else {
    std::memcpy(p, &value, 8);
  }
}

}  // namespace embag::ref
