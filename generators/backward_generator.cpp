// Halide generators for the embedding_bag backward pass.
//
// embag_backward_rows: the weight gradient of sum / weighted sum / mean, one row per distinct
//   referenced table row. The runtime has sorted the valid positions by row with a stable sort,
//   so row u's positions are sorted_positions[segments[u] .. segments[u+1]) in input order; each
//   row is a left fold over its positions, rows are independent (parallel), and there are no
//   atomics: the result does not depend on the thread count.
//   Arguments: grad_output (D, B), segments (U + 1) int32, sorted_positions (M) int32,
//   position_bag (N) int32, [per_sample_weights (N), mode wsum], [bag_divisor (B) int32, mode
//   mean], scale_grad_by_freq (bool), values (D, U) output.
//
//   Mode max (argmax (D, B) int64 and rows (U) int64 instead of the per-position inputs): row u
//   adds g[b][d] for each bag b holding it (once per bag, in order) whose column d it won. The
//   bags that can name row r as a winner are exactly those holding r, so the same row groups
//   serve, and the cost grows with the batch, not the table.
//
// embag_dense_scatter: the dense gradient in one pass on CPUs for float32 / float64 (see the
//   class).
//
// embag_psw_grad: the gradient of per_sample_weights, a dot product per position.
//   Arguments: grad_output (D, B), weight (D, V), indices (N), position_bag (N) int32,
//   padding_idx, grad_per_sample_weights (N) output.
//
// float16 / bfloat16 fold in float32 and round once; float64 folds in float64. The runtime has
// validated every index, so data-dependent accesses are stated with unsafe_promise_clamped.
#include <map>
#include <string>

#include "Halide.h"
#include "float_bits.h"
#include "gpu_tiles.h"
#include "kernel_enums.h"

namespace {

using namespace Halide;
using embag_generators::exact_product;
using embag_generators::load_float;
using embag_generators::storage_type;
using embag_generators::store_float;

Type accumulator_for(const Type& t) { return Float(embag::kernels::accumulator_bits(t.bits())); }

using RowPooling = embag::kernels::Pooling;

class EmbagBackwardRows : public Generator<EmbagBackwardRows> {
 public:
  GeneratorParam<RowPooling> mode{"mode", RowPooling::kSum, embag::kernels::pooling_names()};
  GeneratorParam<Type> weight_type{"weight_type", Float(32)};
  GeneratorParam<int> rows_per_task{"rows_per_task", 32};

  void configure() {
    // (GPU kernels take 16-bit arrays as their bits: see storage_type in float_bits.h)
    const Type stored = storage_type(weight_type, get_target());
    grad_output_ = add_input<Buffer<>>("grad_output", stored, 2);
    segments_ = add_input<Buffer<int32_t, 1>>("segments");
    sorted_positions_ = add_input<Buffer<int32_t, 1>>("sorted_positions");
    position_bag_ = add_input<Buffer<int32_t, 1>>("position_bag");
    if (mode == RowPooling::kWeightedSum) {
      per_sample_weights_ = add_input<Buffer<>>("per_sample_weights", stored, 1);
    }
    if (mode == RowPooling::kMean) bag_divisor_ = add_input<Buffer<int32_t, 1>>("bag_divisor");
    if (mode == RowPooling::kMax) {
      argmax_ = add_input<Buffer<int64_t, 2>>("argmax");
      rows_ = add_input<Buffer<int64_t, 1>>("rows");
    }
    scale_grad_by_freq_ = add_input<bool>("scale_grad_by_freq");
    values_ = add_output<Func>("values", stored, 2);
  }

  void generate() {
    const Type acc = accumulator_for(weight_type);
    Input<Buffer<>>& grad = *grad_output_;
    Input<Buffer<int32_t, 1>>& segments = *segments_;
    Input<Buffer<int32_t, 1>>& sorted_positions = *sorted_positions_;
    Input<Buffer<int32_t, 1>>& position_bag = *position_bag_;

    Expr begin = segments(u_);
    Expr length = segments(u_ + 1) - begin;
    Expr num_sorted = sorted_positions.dim(0).extent();
    Expr num_positions = position_bag.dim(0).extent();
    Expr num_bags = grad.dim(1).extent();

    RDom k(0, num_sorted, "k");
    k.where(k < length);
    Expr at = unsafe_promise_clamped(begin + k, 0, num_sorted - 1);
    Expr position = unsafe_promise_clamped(sorted_positions(at), 0, num_positions - 1);
    Expr bag = unsafe_promise_clamped(position_bag(position), 0, num_bags - 1);
    Expr g = load_float(grad(d_, bag), weight_type, acc, get_target());

    Expr term = g;
    if (mode == RowPooling::kMax) {
      // A row held twice by one bag still adds that bag's gradient once: its positions are
      // adjacent in the segment (input order), so only the first of a run of one bag counts.
      // (for k == 0 the previous position is not read: begin - 1 may lie before the buffer)
      Expr previous_at = unsafe_promise_clamped(begin + max(k, 1) - 1, 0, num_sorted - 1);
      Expr previous_bag = unsafe_promise_clamped(
          position_bag(unsafe_promise_clamped(sorted_positions(previous_at), 0, num_positions - 1)),
          0, num_bags - 1);
      Expr first_of_bag = k == 0 || previous_bag != bag;
      Expr won = (*argmax_)(d_, bag) == (*rows_)(u_);
      term = select(first_of_bag && won, g, cast(acc, 0));
    } else if (mode == RowPooling::kWeightedSum) {
      term = exact_product(
          g, load_float((*per_sample_weights_)(position), weight_type, acc, get_target()),
          get_target());
    } else if (mode == RowPooling::kMean) {
      term = g / cast(acc, (*bag_divisor_)(bag));
    }
    folded_(d_, u_) = cast(acc, 0);
    folded_(d_, u_) = strict_float(folded_(d_, u_) + term);
    k_ = k;

    // scale_grad_by_freq divides by count(r): every position of row r is in its segment (the
    // padding row has no segment), so count(r) is the segment's length.
    Expr scaled =
        select(*scale_grad_by_freq_, folded_(d_, u_) / cast(acc, length), folded_(d_, u_));
    (*values_)(d_, u_) = store_float(strict_float(scaled), weight_type, get_target());
  }

  void schedule() {
    Func values = *values_;
    if (get_target().has_gpu_feature()) {
      // A thread per (column, row): each folds its column over the row's positions in order, in
      // a register, as the CPU kernels do. A warp covers 32 consecutive columns of one row, so
      // each position's gradient row is read as whole lines. Rows are independent: no atomics.
      Var d_block("d_block"), u_block("u_block"), d_thread("d_thread"), u_thread("u_thread");
      // Distinct rows on blockIdx.x (gpu_tiles.h): U is unbounded.
      embag_generators::gpu_tile_rows_on_x(values, d_, u_, d_block, u_block, d_thread, u_thread, 32,
                                           8);
      folded_.compute_at(values, d_thread);
      folded_.update().unscheduled();
      return;
    }
    const int lanes = natural_vector_size(accumulator_for(weight_type));
    Var task("task"), u_in("u_in");
    // Rows are independent; each is one thread's left fold over its positions in order.
    values.split(u_, task, u_in, rows_per_task, TailStrategy::GuardWithIf)
        .parallel(task)
        .vectorize(d_, lanes, TailStrategy::GuardWithIf);
    folded_.compute_at(values, u_in).vectorize(d_, lanes, TailStrategy::GuardWithIf);
    folded_.update().reorder(d_, k_).vectorize(d_, lanes, TailStrategy::GuardWithIf);
  }

 private:
  Var d_{"d"}, u_{"u"};
  RDom k_;
  Func folded_{"folded"};
  Input<Buffer<>>* grad_output_ = nullptr;
  Input<Buffer<int32_t, 1>>* segments_ = nullptr;
  Input<Buffer<int32_t, 1>>* sorted_positions_ = nullptr;
  Input<Buffer<int32_t, 1>>* position_bag_ = nullptr;
  Input<Buffer<>>* per_sample_weights_ = nullptr;
  Input<Buffer<int32_t, 1>>* bag_divisor_ = nullptr;
  Input<Buffer<int64_t, 2>>* argmax_ = nullptr;
  Input<Buffer<int64_t, 1>>* rows_ = nullptr;
  Input<bool>* scale_grad_by_freq_ = nullptr;
  Output<Func>* values_ = nullptr;
};

class EmbagPswGrad : public Generator<EmbagPswGrad> {
 public:
  GeneratorParam<Type> weight_type{"weight_type", Float(32)};
  GeneratorParam<Type> index_type{"index_type", Int(64)};

  void configure() {
    const Type stored = storage_type(weight_type, get_target());
    grad_output_ = add_input<Buffer<>>("grad_output", stored, 2);
    weight_ = add_input<Buffer<>>("weight", stored, 2);
    indices_ = add_input<Buffer<>>("indices", index_type, 1);
    position_bag_ = add_input<Buffer<int32_t, 1>>("position_bag");
    padding_idx_ = add_input<int32_t>("padding_idx");
    grad_psw_ = add_output<Func>("grad_per_sample_weights", stored, 1);
  }

  void generate() {
    const Type acc = accumulator_for(weight_type);
    Input<Buffer<>>& grad = *grad_output_;
    Input<Buffer<>>& weight = *weight_;
    Var p("p");
    Expr bag = (*position_bag_)(p);
    // A position in no bag (bag -1: past the last offset, which GPU calls include) may hold any
    // value, so its row is never read from the input; row 0 stands in and the result is 0.
    Expr row = unsafe_promise_clamped(select(bag >= 0, cast<int32_t>((*indices_)(p)), 0), 0,
                                      weight.dim(1).extent() - 1);
    // A real clamp: positions in no bag have bag -1 (GPU calls run every position), and a GPU
    // reads the row even where the result is then 0 (Oclgrind caught the read at row -1).
    Expr safe_bag = clamp(bag, 0, max(grad.dim(1).extent() - 1, 0));
    RDom d(0, weight.dim(0).extent(), "d");
    dot_(p) = cast(acc, 0);
    dot_(p) = strict_float(
        dot_(p) + exact_product(load_float(grad(d, safe_bag), weight_type, acc, get_target()),
                                load_float(weight(d, row), weight_type, acc, get_target()),
                                get_target()));
    Expr counted = bag >= 0 && row != *padding_idx_;
    (*grad_psw_)(p) =
        store_float(select(counted, dot_(p), cast(acc, 0)), weight_type, get_target());
    p_ = p;
  }

  void schedule() {
    Func out = *grad_psw_;
    if (get_target().has_gpu_feature()) {
      // A thread per position, folding its dot product over the columns in order (the CPU's
      // order, so the bits match).
      Var block("block"), thread("thread");
      out.gpu_tile(p_, block, thread, 128, TailStrategy::GuardWithIf);
      dot_.compute_at(out, thread);
      dot_.update().unscheduled();
      return;
    }
    Var task("task"), inner("inner");
    out.split(p_, task, inner, 256, TailStrategy::GuardWithIf).parallel(task);
    dot_.compute_at(out, inner);
  }

 private:
  Var p_;
  Func dot_{"dot"};
  Input<Buffer<>>* grad_output_ = nullptr;
  Input<Buffer<>>* weight_ = nullptr;
  Input<Buffer<>>* indices_ = nullptr;
  Input<Buffer<int32_t, 1>>* position_bag_ = nullptr;
  Input<int32_t>* padding_idx_ = nullptr;
  Output<Func>* grad_psw_ = nullptr;
};

// embag_dense_scatter: the dense weight gradient in one pass, for float32 and float64 tables on
// CPUs, without scale_grad_by_freq. There the accumulator is the stored type, so adding into the
// gradient in place rounds exactly as embag_backward_rows' fold does, and no sort is needed: the
// runtime zeroes the (D, V) gradient (memset streams it past the cache, where vector stores
// would read each line first), and the kernel -- an update of it in place -- adds
//   sum / wsum / mean: each valid position p in input order adds its bag's g (times
//     per_sample_weights[p]; divided by the bag's count) to row indices[p] -- the fold's order,
//     since the fold walks each row's positions in input order;
//   max: each bag in order adds g[b][d] to row argmax[b][d] of column d -- the fold's order,
//     bags ascending. An empty bag's -1 adds +0 to row 0 instead (no condition that reads the
//     argmax, which Halide evaluated past D in guarded column blocks): bitwise a no-op, as a sum
//     from +0 is never -0, and NaN and inf are unchanged by +0.
// Columns are independent: threads take blocks of columns and each walks every position (bag) in
// order, so the result does not depend on the thread count. The cost is the zeroing plus one
// scattered add per contribution, as PyTorch's loop, with no sort and no U x D temporary.
//   Arguments: grad_output (D, B); max: argmax (D, B) int64; otherwise indices (N),
//   position_bag (N) int32 (-1: in no bag), padding_idx, [per_sample_weights (N), wsum],
//   [bag_divisor (B) int32, mean]; grad_weight (D, V) output.
class EmbagDenseScatter : public Generator<EmbagDenseScatter> {
 public:
  GeneratorParam<RowPooling> mode{"mode", RowPooling::kSum, embag::kernels::pooling_names()};
  GeneratorParam<Type> weight_type{"weight_type", Float(32)};
  GeneratorParam<Type> index_type{"index_type", Int(64)};
  // Schedule knob (embag-tune searches it): columns per parallel task, in vectors. Any value
  // gives the same bits: each column is still walked by one task, contributions in order.
  GeneratorParam<int> column_vectors{"column_vectors", 1, 1, 64};

  void configure() {
    grad_output_ = add_input<Buffer<>>("grad_output", weight_type, 2);
    if (mode == RowPooling::kMax) {
      argmax_ = add_input<Buffer<int64_t, 2>>("argmax");
    } else {
      indices_ = add_input<Buffer<>>("indices", index_type, 1);
      position_bag_ = add_input<Buffer<int32_t, 1>>("position_bag");
      padding_idx_ = add_input<int32_t>("padding_idx");
      if (mode == RowPooling::kWeightedSum) {
        per_sample_weights_ = add_input<Buffer<>>("per_sample_weights", weight_type, 1);
      }
      if (mode == RowPooling::kMean) bag_divisor_ = add_input<Buffer<int32_t, 1>>("bag_divisor");
    }
    grad_weight_ = add_output<Buffer<>>("grad_weight", weight_type, 2);
  }

  void generate() {
    Input<Buffer<>>& grad = *grad_output_;
    Output<Buffer<>>& out = *grad_weight_;
    Expr last_row = out.dim(1).extent() - 1;
    Expr last_bag = grad.dim(1).extent() - 1;
    // (undef: the pure step writes nothing; the runtime has zeroed the gradient)
    out(d_, r_) = undef(weight_type);
    if (mode == RowPooling::kMax) {
      RDom b(0, grad.dim(1).extent(), "b");
      Expr winner = (*argmax_)(d_, b);
      Expr row = clamp(cast<int32_t>(winner), 0, last_row);
      Expr term = select(winner >= 0, grad(d_, b), cast(weight_type, 0));
      out(d_, row) = strict_float(out(d_, row) + term);
      contributions_ = b;
      return;
    }
    Input<Buffer<>>& indices = *indices_;
    Input<Buffer<int32_t, 1>>& position_bag = *position_bag_;
    RDom p(0, position_bag.dim(0).extent(), "p");
    p.where(position_bag(p) >= 0);
    p.where(cast<int32_t>(indices(p)) != *padding_idx_);
    Expr row = unsafe_promise_clamped(cast<int32_t>(indices(p)), 0, last_row);
    Expr bag = unsafe_promise_clamped(position_bag(p), 0, last_bag);
    Expr term = grad(d_, bag);
    if (mode == RowPooling::kWeightedSum) {
      term = exact_product(term, (*per_sample_weights_)(p), get_target());
    } else if (mode == RowPooling::kMean) {
      term = term / cast(weight_type, (*bag_divisor_)(bag));
    }
    out(d_, row) = strict_float(out(d_, row) + term);
    contributions_ = p;
  }

  void schedule() {
    Output<Buffer<>>& out = *grad_weight_;
    const int lanes = natural_vector_size(weight_type);
    Var column_task("column_task"), column_in("column_in");
    // Blocks of one vector of columns (one cache line for float32), each a task that walks every
    // contribution in order (d stays a pure variable of the update, so each task owns its
    // columns: no races). A gradient row's line is then updated by one task only, while it is
    // likely still cached; tasks of single columns fetched each line once per column.
    // More vectors per task (column_vectors) trade parallel slack for fewer passes over the
    // indices: each task reads every contribution once, whatever its width.
    Stage update =
        out.update()
            .split(d_, column_task, column_in, lanes * column_vectors, TailStrategy::GuardWithIf)
            .reorder(column_in, contributions_, column_task)
            .parallel(column_task);
    // Sums add a vector of the bag's g to a vector of the row, the conditions (which do not
    // depend on d) once per position. Max's lanes go to different rows: scalar.
    if (mode != RowPooling::kMax) {
      if (column_vectors == 1) {
        update.vectorize(column_in);
      } else {
        update.vectorize(column_in, lanes, TailStrategy::GuardWithIf);
      }
    }
  }

 private:
  Var d_{"d"}, r_{"r"};
  RDom contributions_;
  Input<Buffer<>>* grad_output_ = nullptr;
  Input<Buffer<int64_t, 2>>* argmax_ = nullptr;
  Input<Buffer<>>* indices_ = nullptr;
  Input<Buffer<int32_t, 1>>* position_bag_ = nullptr;
  Input<int32_t>* padding_idx_ = nullptr;
  Input<Buffer<>>* per_sample_weights_ = nullptr;
  Input<Buffer<int32_t, 1>>* bag_divisor_ = nullptr;
  Output<Buffer<>>* grad_weight_ = nullptr;
};

}  // namespace

HALIDE_REGISTER_GENERATOR(EmbagBackwardRows, embag_backward_rows)
HALIDE_REGISTER_GENERATOR(EmbagDenseScatter, embag_dense_scatter)
HALIDE_REGISTER_GENERATOR(EmbagPswGrad, embag_psw_grad)
