// The gather baseline for tables of float64, float16 and bfloat16: sum pooling, the same loop
// structure as the float32 one (gather_baseline.h) -- accumulators in registers, the row
// prefetched 16 positions ahead, contiguous bag chunks per thread -- so a dtype shape compares
// embag with a loop of its own dtype. 16-bit rows are widened to float32 and each bag's sum is
// rounded once to nearest-even, float64 adds in float64: embag's rule, so the results are
// bitwise equal.
#pragma once

#include <cstdint>

#include "embag/embag.h"

namespace embag::bench {

struct TypedGatherProblem {
  const void* table = nullptr;  // rows x dim elements of `dtype`, contiguous
  DType dtype = DType::kFloat64;
  int64_t rows = 0, dim = 0;
  const int64_t* indices = nullptr;
  const int64_t* offsets = nullptr;  // bags + 1
  int64_t bags = 0;
  void* output = nullptr;  // bags x dim elements of `dtype`
};

// Runs the AVX-512 loop where the machine has AVX-512 (F, BW, DQ, VL) and F16C, else the AVX2
// one. False where it has neither, when dim is not 1, 2, 4 or 8 vectors or whole 16-vector tiles
// of one (a vector: 16 elements on AVX-512, 8 on AVX2; float64 half that) up to 256, or an index
// is out of range.
bool gather_sum_typed(const TypedGatherProblem& problem, int num_threads);

// "avx512" or "avx2": the loop gather_sum_typed runs on this machine ("none" where neither).
const char* typed_loop_isa();

// Rounds n float32 values to `dtype` (to nearest-even; float64 exactly) into dst, for building
// a typed table from the float32 one. False where F16C is missing (float16 only).
bool convert_floats(const float* src, int64_t n, DType dtype, void* dst);

}  // namespace embag::bench
