// Halide generator for the embedding_bag forward pass: pooled lookups of table rows per bag.
//
// One source gives every forward variant. GeneratorParams pick the pooling mode, the table and
// index element types, and the schedule's tuning knobs; the target (AVX-512, AVX2, SSE4.1, ...)
// picks vector widths. The runtime has already validated every index, offset and padding value,
// so the algorithm states its data-dependent bounds with unsafe_promise_clamped instead of
// clamping (build with the `check_unsafe_promises` target feature to turn them into checks).
//
// Arguments of the generated function, in order:
//   weight (D, V)            table, row-major (Halide dims: column, row)
//   indices (N)              row ids, already flattened from 1-D or 2-D input
//   offsets (B + 1)          bag b is positions [offsets[b], offsets[b+1])
//   per_sample_weights (N)   mode "wsum" only
//   padding_idx              normalised to [0, V) or -1 for none
//   output (D, B)            (mode "max": output_0 is the pooled value, output_1 (D, B) int64 is
//                            the winning row per column, -1 for an empty bag)
//   bag_count (B) int64      mode "mean" only: valid positions per bag
#include <map>
#include <string>

#include "Halide.h"
#include "float_bits.h"

namespace {

using namespace Halide;
using embag_generators::is_nan_by_bits;
using embag_generators::narrow_float;
using embag_generators::widen_float;

enum class Pooling { kSum, kWeightedSum, kMean, kMax };

const std::map<std::string, Pooling> kPoolingNames = {
    {"sum", Pooling::kSum},
    {"wsum", Pooling::kWeightedSum},
    {"mean", Pooling::kMean},
    {"max", Pooling::kMax},
};

class EmbagForward : public Generator<EmbagForward> {
 public:
  GeneratorParam<Pooling> mode{"mode", Pooling::kSum, kPoolingNames};
  GeneratorParam<Type> weight_type{"weight_type", Float(32)};
  GeneratorParam<Type> index_type{"index_type", Int(64)};

  // Schedule knobs (see schedule() for what they trade off). Retuning a machine means changing
  // these in the CMake variant table, not the algorithm.
  GeneratorParam<int> bags_per_task{"bags_per_task", 16};
  // Software prefetch: at each position, prefetch the row this many positions ahead (crossing
  // into later bags), as FBGEMM does; 0 turns it off. Cold tables are latency-bound gathers, so
  // this is what keeps enough cache misses in flight.
  GeneratorParam<int> prefetch_distance{"prefetch_distance", 16};
  // Cache lines prefetched per row: enough for the widest register tile.
  GeneratorParam<int> prefetch_lines{"prefetch_lines", 8};
  // Widest register tile over D, in vectors. 0 means "by target": enough accumulators to keep a
  // whole 128-float row in registers where the register file allows it.
  GeneratorParam<int> max_tile_vectors{"max_tile_vectors", 0};

  void configure() {
    weight_ = add_input<Buffer<>>("weight", weight_type, 2);
    indices_ = add_input<Buffer<>>("indices", index_type, 1);
    offsets_ = add_input<Buffer<>>("offsets", index_type, 1);
    if (mode == Pooling::kWeightedSum) {
      per_sample_weights_ = add_input<Buffer<>>("per_sample_weights", weight_type, 1);
    }
    padding_idx_ = add_input<int32_t>("padding_idx");
    // Max returns the value and the winning row from one Tuple-valued Func, so both come out of
    // the same register tile in one pass.
    std::vector<Type> output_types{weight_type};
    if (mode == Pooling::kMax) output_types.push_back(Int(64));
    output_ = add_output<Func>("output", output_types, 2);
    if (mode == Pooling::kMean) bag_count_ = add_output<Func>("bag_count", Int(64), 1);
  }

  void generate() {
    const Type acc_type = accumulator_type();
    Input<Buffer<>>& weight = *weight_;
    Input<Buffer<>>& indices = *indices_;
    Input<Buffer<>>& offsets = *offsets_;

    Expr num_rows = weight.dim(1).extent();
    Expr num_positions = indices.dim(0).extent();

    Expr begin = cast<int32_t>(offsets(b_));
    Expr length = cast<int32_t>(offsets(b_ + 1)) - begin;

    // One reduction domain over a bag's positions. The first condition bounds the loop (Halide
    // turns it into the loop extent, so the loop is exactly the bag); the second skips padding
    // positions without reading their rows.
    RDom r(0, num_positions, "r");
    Expr position = unsafe_promise_clamped(begin + r, 0, num_positions - 1);
    Expr row = unsafe_promise_clamped(cast<int32_t>(indices(position)), 0, num_rows - 1);
    r.where(r < length);
    r.where(row != *padding_idx_);
    if (prefetch_distance > 0) r.where(prefetch_row_ahead(begin + r) == 0);
    r_ = r;

    Expr value = widen_float(weight(d_, row), acc_type, get_target());

    if (mode == Pooling::kMax) {
      // (value, row) per column. The first valid position always wins; after that a value
      // replaces the current one only if strictly greater (ties keep the first occurrence), and
      // a NaN, once held, stays (like torch.max).
      pooled_(d_, b_) = Tuple(cast(acc_type, 0), cast<int32_t>(-1));
      Expr current = pooled_(d_, b_)[0];
      Expr current_row = pooled_(d_, b_)[1];
      // NaN tests look at the bits: the kernels are compiled with fast-math flags, under which
      // LLVM assumes a widened float16 is never NaN and would delete is_nan(). When either side
      // is NaN the comparison's result is never used, so its flags do not matter.
      Expr value_is_nan = is_nan_by_bits(weight(d_, row));
      Expr take =
          current_row < 0 || (!is_nan_by_bits(current) && (value_is_nan || value > current));
      pooled_(d_, b_) = Tuple(select(take, value, current), select(take, row, current_row));
      (*output_)(d_, b_) = Tuple(narrow_float(pooled_(d_, b_)[0], weight_type, get_target()),
                                 cast<int64_t>(pooled_(d_, b_)[1]));
      return;
    }

    // Sums are left folds in input order from +0.0. strict_float keeps the multiply and the add
    // separate instructions on every ISA, so results do not depend on whether the target has FMA.
    pooled_(d_, b_) = cast(acc_type, 0);
    if (mode == Pooling::kWeightedSum) {
      Expr sample_weight = cast(acc_type, (*per_sample_weights_)(position));
      pooled_(d_, b_) = strict_float(pooled_(d_, b_) + sample_weight * value);
    } else {
      pooled_(d_, b_) = strict_float(pooled_(d_, b_) + value);
    }

    if (mode == Pooling::kMean) {
      // The divisor is counted per bag next to the sum; the bag_count output counts again in its
      // own cheap pass over the indices, because an output cannot be computed inside another
      // output's loops.
      // `r >= 0` is always true; it is there so the update iterates over r (and its conditions).
      Expr one_per_position = cast<int64_t>(r >= 0);
      count_(b_) = cast<int64_t>(0);
      count_(b_) += one_per_position;
      Expr n = count_(b_);
      Expr mean =
          strict_float(select(n > 0, pooled_(d_, b_) / cast(acc_type, n), cast(acc_type, 0)));
      (*output_)(d_, b_) = narrow_float(mean, weight_type, get_target());
      (*bag_count_)(b_) = cast<int64_t>(0);
      (*bag_count_)(b_) += one_per_position;
    } else {
      (*output_)(d_, b_) = narrow_float(pooled_(d_, b_), weight_type, get_target());
    }
  }

  void schedule() {
    const Type acc_type = accumulator_type();
    const int vector_lanes = natural_vector_size(acc_type);
    int widest = max_tile_vectors;
    if (widest <= 0) {
      // AVX-512 has 32 vector registers: 8 accumulators hold a 128-float row, leaving room for
      // loads and conversions. AVX2 and SSE have 16: 8 accumulators is the most that does not
      // spill once the loaded row vectors and (for 16-bit tables) conversions need registers.
      widest = 8;
    }

    Func output = *output_;
    Expr dim = weight_->dim(0).extent();

    Var bag_task("bag_task"), bag_in_task("bag_in_task"), tile("tile"), lane("lane");

    // Bags are independent: threads take blocks of bags, each bag computed by exactly one thread
    // in input order, so results are identical for any thread count.
    output.split(b_, bag_task, bag_in_task, bags_per_task, TailStrategy::GuardWithIf)
        .parallel(bag_task);
    // Register tiles over D: for each bag and tile, the accumulators live in registers while the
    // bag's rows stream through (load index, add row vectors), which is FBGEMM's inner loop.
    // Tiles overlap at the end of a row (ShiftInwards) rather than leaving a scalar tail; the
    // overlap is recomputed, which is exact because each column is independent.
    std::vector<int> tile_widths;
    for (int vectors = widest; vectors >= 1; vectors /= 2)
      tile_widths.push_back(vectors * vector_lanes);

    for (int width : tile_widths) {
      output.specialize(dim >= width)
          .split(d_, tile, lane, width, TailStrategy::ShiftInwards)
          .reorder(lane, tile, bag_in_task, bag_task)
          .vectorize(lane, vector_lanes)
          .unroll(lane);
    }
    // Rows narrower than one vector (D < lanes): one scalar column at a time.
    output.split(d_, tile, lane, 1).reorder(lane, tile, bag_in_task, bag_task);

    // GuardWithIf only matters in the narrow-row branch (a one-column tile becomes one masked
    // vector); in the wide branches the tile is a whole number of vectors and the guard vanishes.
    pooled_.compute_at(output, tile)
        .vectorize(d_, vector_lanes, TailStrategy::GuardWithIf)
        .unroll(d_);
    pooled_.update()
        .reorder(d_, r_)
        .vectorize(d_, vector_lanes, TailStrategy::GuardWithIf)
        .unroll(d_);
    if (mode == Pooling::kMean) {
      count_.compute_at(output, bag_in_task);
      Func bag_count = *bag_count_;
      bag_count.split(b_, bag_task, bag_in_task, 256, TailStrategy::GuardWithIf).parallel(bag_task);
      bag_count.update().unscheduled();
    }
  }

 private:
  // Issues prefetches for the first `prefetch_lines` cache lines of the row `prefetch_distance`
  // positions after `position` and returns 0, so it can sit in an RDom condition: Halide's
  // schedule-level prefetch() cannot follow a data-dependent row (it would prefetch the whole
  // table), so the prefetch intrinsic is placed in the algorithm directly. Lines past the end of
  // the row are clamped to its last element (a repeated prefetch of a line costs almost nothing).
  Expr prefetch_row_ahead(Expr position) {
    Input<Buffer<>>& weight = *weight_;
    Input<Buffer<>>& indices = *indices_;
    Expr last_position = indices.dim(0).extent() - 1;
    Expr ahead =
        unsafe_promise_clamped(min(position + prefetch_distance, last_position), 0, last_position);
    Expr ahead_row =
        unsafe_promise_clamped(cast<int32_t>(indices(ahead)), 0, weight.dim(1).extent() - 1);
    Expr row_start = cast<int64_t>(ahead_row) * cast<int64_t>(weight.dim(1).stride());
    Expr base = Internal::Variable::make(Handle(), "weight", ImageParam(weight).parameter());
    const int elements_per_line = 64 / static_cast<Type>(weight_type).bytes();
    Expr issued = cast<int32_t>(0);
    for (int line = 0; line < prefetch_lines; ++line) {
      Expr column = min(line * elements_per_line, weight.dim(0).extent() - 1);
      issued = issued | Internal::Call::make(Int(32), Internal::Call::prefetch,
                                             {base, row_start + cast<int64_t>(column), 1, 1},
                                             Internal::Call::Intrinsic);
    }
    return issued;
  }

  Type accumulator_type() const {
    const Type t = weight_type;
    return t.bits() == 64 ? Float(64) : Float(32);
  }

  Var d_{"d"}, b_{"b"};
  RDom r_;
  Func pooled_{"pooled"}, count_{"count"};

  Input<Buffer<>>* weight_ = nullptr;
  Input<Buffer<>>* indices_ = nullptr;
  Input<Buffer<>>* offsets_ = nullptr;
  Input<Buffer<>>* per_sample_weights_ = nullptr;
  Input<int32_t>* padding_idx_ = nullptr;
  Output<Func>* output_ = nullptr;
  Output<Func>* bag_count_ = nullptr;
};

}  // namespace

HALIDE_REGISTER_GENERATOR(EmbagForward, embag_forward)
