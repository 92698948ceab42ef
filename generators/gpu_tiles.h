// The one 2-D GPU tiling the generators use: a thread per (column, row), with the rows (bags,
// table rows, distinct rows: the dimensions that grow with a call's sizes) on blockIdx.x.
//
// Why: Halide names a kernel's block loops by their nesting, innermost first (blockIdx.x, then
// y), and gpu_tile(d, r, ...) leaves the row blocks outermost, on blockIdx.y. CUDA allows
// 65,535 blocks there (2^31 - 1 on x), so with 8 rows a block every call past 524,280 rows
// failed to launch (CUDA_ERROR_INVALID_VALUE) on a real GPU; POCL has no such limit, so the
// OpenCL tests never saw it (the fake CUDA driver's launch-limit tests do). Columns stay on the
// threads' x, so a warp still reads 32 consecutive columns of one row (coalesced) and each
// thread computes exactly what it did before: the results keep their bits. The column blocks
// (D / cols) go on blockIdx.y, which bounds D on CUDA at 65,535 * cols (the runtime refuses
// wider rows on CUDA with a message).
#pragma once

#include "Halide.h"

namespace embag_generators {

inline void gpu_tile_rows_on_x(Halide::Func f, const Halide::Var& column, const Halide::Var& row,
                               const Halide::Var& column_block, const Halide::Var& row_block,
                               const Halide::Var& column_thread, const Halide::Var& row_thread,
                               int columns_per_block, int rows_per_block) {
  using Halide::TailStrategy;
  f.split(column, column_block, column_thread, columns_per_block, TailStrategy::GuardWithIf)
      .split(row, row_block, row_thread, rows_per_block, TailStrategy::GuardWithIf)
      // Innermost first: row_block is the innermost block loop, so it becomes blockIdx.x.
      .reorder(column_thread, row_thread, row_block, column_block)
      .gpu_blocks(row_block, column_block)
      .gpu_threads(column_thread, row_thread);
}

}  // namespace embag_generators
