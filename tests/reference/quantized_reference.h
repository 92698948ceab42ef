// The reference for quantized tables: a quantized row's meaning written once, as plain loops.
//
// An 8-bit float row (float8_e4m3fn, float8_e5m2, FBGEMM's HFP8) has no scale or bias: element d
// is the value its byte denotes, computed here from the format's definition (sign, exponent,
// mantissa, bias, special codes), not from the kernels' bit arithmetic. For the integer formats:
// Dequantisation is fixed here: element d of a row is w = scale * q + bias in float32, the
// product rounded before the add (this file is compiled with -ffp-contract=off), q the unsigned
// code packed lowest bits first. Pooling is then exactly the float32 reference's (reference.h):
// a quantized forward is the float32 forward on the dequantised table. Why this order and not
// FBGEMM's `acc = fma(scale, q, acc + bias)`: the kernels reach it with one multiply and two
// adds per element (one more add than FBGEMM's fused form, on rows that are a quarter of a float
// row's bytes, so the kernel stays bound by memory), it needs no FMA (so every ISA gives the same
// bits, SSE4.1 and armv7 included), and it makes every mode -- mean, max and its argmax, which
// FBGEMM's fused sum cannot express -- exactly what F.embedding_bag gives on the dequantised
// table. Against FBGEMM's and PyTorch's sums it differs by rounding only (docs/quantized.md has
// the tolerance the golden tests use).
#pragma once

#include <cstdint>
#include <vector>

#include "embag/embag.h"

namespace embag::ref {

// The table as float32 (rows * dim values, row-major), dequantised as above.
std::vector<float> dequantize(const QuantizedTable& table);

// embedding_bag forward on a quantized table (inputs.quantized_weight; inputs.weight unused):
// the float32 reference forward on dequantize(table). Output (and per_sample_weights) float32.
Status forward_quantized(const ForwardInputs& inputs, const ForwardOutputs& outputs,
                         const Options& options);

}  // namespace embag::ref
