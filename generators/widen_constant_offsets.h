// A custom Halide lowering pass for the CPU kernels: rewrites int64(x + c) as int64(x) + c for
// int32 x and constant c, so the per-vector column offsets of a register tile become one base
// plus constant displacements in the generated code.
//
// Why: with the large_buffers feature Halide computes every flat index in 64 bits, but the column
// of each vector of a tile is an int32 expression (tile base + 8 k) widened on its own:
// int64(base + 8), int64(base + 16), ... LLVM may not fold those into base + displacement (it
// cannot assume the int32 adds do not wrap), so each vector of the tile keeps its own 64-bit
// offset register. A 64-float tile on AVX2 needs 8 of them on top of the accumulators, the row
// pointer and the loop state: the inner loop of the forward kernel reloaded offsets from the
// stack on every position. Halide's own semantics say int32 arithmetic does not overflow (its
// simplifier relies on that too), so moving the constant outside the widening is exact for every
// program Halide accepts.
#pragma once

#include "Halide.h"

namespace embag_generators {

class WidenConstantOffsets : public Halide::Internal::IRMutator {
 protected:
  using Halide::Internal::IRMutator::visit;

  Halide::Expr visit(const Halide::Internal::Cast* op) override {
    using namespace Halide;
    using namespace Halide::Internal;
    const Type wide = op->type;
    const Type narrow = op->value.type();
    if (wide.is_int() && wide.bits() == 64 && wide.is_scalar() && narrow.is_int() &&
        narrow.bits() == 32) {
      if (const Add* add = op->value.as<Add>()) {
        if (const IntImm* constant = add->b.as<IntImm>()) {
          return Add::make(mutate(Cast::make(wide, add->a)), make_const(wide, constant->value));
        }
      }
    }
    return IRMutator::visit(op);
  }
};

}  // namespace embag_generators
