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
//   bags_per_task            bags in each parallel task (>= 1)
//   output (D, B)            (mode "max": output_0 is the pooled value, output_1 (D, B) int64 is
//                            the winning row per column, -1 for an empty bag; mode
//                            "max_values": the pooled value only)
//
// Quantized tables (GeneratorParam codec != none; CPU targets): `weight` is the table's bytes,
// (row bytes, V) uint8 with the caller's row stride, and three scalars follow `bags_per_task`:
//   code_offset, qparam_offset  where a row's codes and its scale, bias start, in bytes
//   dim                         D (the buffer's first extent is the row's bytes, not D)
// and, for codec f8 (8-bit floats, no qparams) three more (Fp8Encoding in kernel_enums.h):
//   fp8_mantissa_bits, fp8_exponent_bias, fp8_special_from
// per_sample_weights and the output are float32. Each element is dequantised as
// w = scale * q + bias (multiply rounded, then the add; see QuantCodec in kernel_enums.h), or
// for f8 widened to the float32 it denotes, and then pooled exactly as a float32 table's element.
#include <algorithm>
#include <cmath>
#include <map>
#include <string>

#include "Halide.h"
#include "float_bits.h"
#include "gpu_tiles.h"
#include "kernel_enums.h"
#include "widen_constant_offsets.h"

namespace {

using namespace Halide;
// The float helpers of float_bits.h (load_float, store_float, exact_product, the NaN tests).
using namespace embag_generators;
using embag_generators::detail::half_bits_to_float;

using embag::kernels::Pooling;
using embag::kernels::QuantCodec;

class EmbagForward : public Generator<EmbagForward> {
 public:
  GeneratorParam<Pooling> mode{"mode", Pooling::kSum, embag::kernels::pooling_names()};
  GeneratorParam<Type> weight_type{"weight_type", Float(32)};
  GeneratorParam<Type> index_type{"index_type", Int(64)};
  // A quantized table's decoding (kernel_enums.h); "none" for float tables. A quantized kernel
  // takes weight_type float32 (what it dequantises to and writes).
  GeneratorParam<QuantCodec> codec{"codec", QuantCodec::kNone, embag::kernels::quant_codec_names()};

  // Schedule knobs (see schedule() for what they trade off). Retuning a machine means changing
  // these in the CMake variant table, not the algorithm.
  // Software prefetch: at each position, prefetch the row this many positions ahead (crossing
  // into later bags), as FBGEMM does; 0 turns it off. Cold tables are latency-bound gathers, so
  // this is what keeps enough cache misses in flight.
  GeneratorParam<int> prefetch_distance{"prefetch_distance", 16};
  // Widest register tile over D, in vectors. 0 means "by target": enough accumulators to keep a
  // whole 128-float row in registers where the register file allows it.
  GeneratorParam<int> max_tile_vectors{"max_tile_vectors", 0};
  // GPU block shape: columns (threads along D; 32 is one warp) x bags.
  GeneratorParam<int> gpu_block_columns{"gpu_block_columns", 32};
  GeneratorParam<int> gpu_block_bags{"gpu_block_bags", 8};

  void configure() {
    // (GPU kernels take 16-bit tables as their bits: see storage_type in float_bits.h)
    const Type stored = storage_type(weight_type, get_target());
    weight_ = add_input<Buffer<>>("weight", quantized() ? UInt(8) : stored, 2);
    indices_ = add_input<Buffer<>>("indices", index_type, 1);
    offsets_ = add_input<Buffer<>>("offsets", index_type, 1);
    if (mode == Pooling::kWeightedSum) {
      per_sample_weights_ = add_input<Buffer<>>("per_sample_weights", stored, 1);
    }
    padding_idx_ = add_input<int32_t>("padding_idx");
    // Bags per parallel task, chosen per call by the runtime from B and the thread count: large
    // enough that each thread walks long runs of consecutive bags (the prefetch runs ahead
    // across bag boundaries, and only restarts at a task boundary), small enough to balance.
    bags_per_task_ = add_input<int32_t>("bags_per_task");
    if (quantized()) {
      code_offset_ = add_input<int32_t>("code_offset");
      qparam_offset_ = add_input<int32_t>("qparam_offset");
      dim_ = add_input<int32_t>("dim");
    }
    if (codec == QuantCodec::kF8) {
      fp8_mantissa_bits_ = add_input<int32_t>("fp8_mantissa_bits");
      fp8_exponent_bias_ = add_input<int32_t>("fp8_exponent_bias");
      fp8_special_from_ = add_input<int32_t>("fp8_special_from");
    }
    // Max returns the value and the winning row from one Tuple-valued Func, so both come out of
    // the same register tile in one pass.
    std::vector<Type> output_types{stored};
    if (mode == Pooling::kMax) output_types.push_back(Int(64));
    output_ = add_output<Func>("output", output_types, 2);
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

    // A reduction domain over a bag's valid positions. The first condition bounds the loop
    // (Halide turns it into the loop extent, so the loop is exactly the bag); the second skips
    // padding positions without reading their rows.
    auto bag_positions = [&](const char* name) {
      RDom domain(0, num_positions, name);
      Expr at = unsafe_promise_clamped(begin + domain, 0, num_positions - 1);
      domain.where(domain < length);
      // (Without a padding index the test is constant-true: schedule_cpu() specializes on
      // that, so those kernels do not compare every position with padding_idx.)
      domain.where(*padding_idx_ < 0 || cast<int32_t>(indices(at)) != *padding_idx_);
      return domain;
    };
    RDom r = bag_positions("r");
    Expr position = unsafe_promise_clamped(begin + r, 0, num_positions - 1);
    Expr row = unsafe_promise_clamped(cast<int32_t>(indices(position)), 0, num_rows - 1);
    if (prefetch_distance > 0 && !get_target().has_gpu_feature()) {
      // The row `prefetch_distance` positions ahead is prefetched by a Func of (position, bag)
      // computed once per position (see schedule()), so it is not repeated per vector; it sits
      // in a condition only so the reduction depends on it.
      define_prefetch();
      r.where(prefetch_(r, b_) == 0);
    }
    r_ = r;

    auto value_of = [&](Expr table_row) {
      return quantized() ? dequantized(table_row)
                         : load_float(weight(d_, table_row), weight_type, acc_type, get_target());
    };
    Expr value = value_of(row);

    if (two_pass_max()) {
      define_max_values_then_nan(value, value_of, bag_positions);
      return;
    }
    if (is_max()) {
      define_max(value, row, bag_positions);
      return;
    }

    // Sums are left folds in input order from +0.0. strict_float keeps the multiply and the add
    // separate instructions on every ISA, so results do not depend on whether the target has FMA.
    pooled_(d_, b_) = cast(acc_type, 0);
    if (mode == Pooling::kWeightedSum) {
      Expr sample_weight =
          load_float((*per_sample_weights_)(position), weight_type, acc_type, get_target());
      pooled_(d_, b_) =
          strict_float(pooled_(d_, b_) + exact_product(sample_weight, value, get_target()));
    } else {
      pooled_(d_, b_) = strict_float(pooled_(d_, b_) + value);
    }

    if (mode == Pooling::kMean) {
      // The divisor is counted per bag next to the sum, over its own domain that reads indices
      // only (no prefetches). `c >= 0` is always true; it makes the update iterate over c.
      // Without a padding index every position counts: the count is the bag's length and the
      // counting loop (its domain is empty when padding_idx < 0) does not run.
      RDom c = bag_positions("c");
      c.where(*padding_idx_ >= 0);
      Expr one_per_position = cast<int64_t>(c >= 0);
      count_(b_) = select(*padding_idx_ < 0, cast<int64_t>(length), cast<int64_t>(0));
      count_(b_) += one_per_position;
      Expr n = count_(b_);
      Expr mean =
          strict_float(select(n > 0, pooled_(d_, b_) / cast(acc_type, n), cast(acc_type, 0)));
      (*output_)(d_, b_) = store_float(mean, weight_type, get_target());
    } else {
      (*output_)(d_, b_) = store_float(pooled_(d_, b_), weight_type, get_target());
    }
  }

  void schedule() {
    if (get_target().has_gpu_feature()) {
      schedule_gpu();
    } else {
      schedule_cpu();
    }
  }

 private:
  // GPU: a thread per (column, bag), blocks of gpu_block_columns x gpu_block_bags threads. Each
  // thread folds its column over its bag's positions in input order in a register, exactly as
  // the CPU kernels fold one column, so every sum has the same bits on both. A warp covers 32
  // consecutive columns of one bag, so each position's row is read as whole 128-byte lines
  // (coalesced), and the bag's index is one broadcast load. Bags are independent: no atomics.
  void schedule_gpu() {
    Func output = *output_;
    Var d_block("d_block"), b_block("b_block"), d_thread("d_thread"), b_thread("b_thread");
    // Bags on blockIdx.x (gpu_tiles.h): B is unbounded, CUDA's blockIdx.y stops at 65,535.
    embag_generators::gpu_tile_rows_on_x(output, d_, b_, d_block, b_block, d_thread, b_thread,
                                         gpu_block_columns, gpu_block_bags);
    // Computed inside the innermost thread loop: per-thread registers, the fold a serial loop.
    pooled_.compute_at(output, d_thread);
    pooled_.update().unscheduled();
    if (mode == Pooling::kMax) {
      first_row_.compute_at(output, d_thread);
      first_row_.update().unscheduled();
    }
    if (mode == Pooling::kMean) {
      count_.compute_at(output, d_thread);
      count_.update().unscheduled();
    }
  }

  void schedule_cpu() {
    // One offset register per tile instead of one per vector (see widen_constant_offsets.h).
    get_pipeline().add_custom_lowering_pass(new embag_generators::WidenConstantOffsets);
    const Type acc_type = accumulator_type();
    // Sub-byte codes take their 8-code words whole (dequantized()), so a vector is at most 8
    // lanes (a ymm on AVX-512 too: a 16-lane vector would span two words).
    const int vector_lanes = sub_byte_codes() ? std::min(natural_vector_size(acc_type), 8)
                                              : natural_vector_size(acc_type);
    int widest = max_tile_vectors;
    if (widest <= 0) {
      // Sums: 8 accumulators hold a 128-float row in AVX-512 registers (AVX2/SSE: 64 / 32
      // floats), so each row is walked once. Measured on the cold 1M-row shapes (AMD EPYC,
      // AVX-512), sum reaches the hand-written gather loop's GB/s with 8.
      // Max carries a row-index vector and a blend per value vector, about 10 instructions per
      // vector instead of 1; with 8 vectors a position fills so much of the out-of-order window
      // that too few row fetches overlap. Tiles of 4 vectors measured 0.76-0.80 of the gather
      // loop against 0.68-0.78 with 8 (the second half of a row then comes from L2).
      widest = is_max() ? 4 : 8;
      // 64-bit ARM has 32 NEON registers of 128 bits, so a tile of 8 holds only 32 floats and
      // a 64-float row is walked twice. Sums of float32 / float64 rows take 16 vectors there
      // (half the register file for accumulators, half for the rows being added): the
      // generated arm-64-linux assembly has no vector register spills at 16, as at 8. Not for
      // float16 (emulated widening needs temporaries: vector spills grow from 25 at 4 vectors
      // to 63 at 8 and 139 at 16), bfloat16 (spills appear at 16) or max (two registers per
      // vector, value and row: 51 spills at 4 -- the same as at 2, outside the inner loop --
      // 87 at 8).
      const Target target = get_target();
      // (Not for quantized rows either: their decoding needs temporaries, as float16's does.)
      const bool wide_float =
          !quantized() && (weight_type.value() == Float(32) || weight_type.value() == Float(64));
      if (target.arch == Target::ARM && target.bits == 64 && !is_max() && wide_float) {
        widest *= 2;
      }
      // x86 with AVX: an unweighted sum adds each row vector straight from memory (vaddps
      // ymm, ymm, [mem] needs no register for the row), so 16 accumulators fit AVX2's 16
      // registers and a 128-float row is walked once, not in two passes that each reload the
      // bag's indices and re-touch its rows (AVX-512: a 256-float row). A weighted sum needs two
      // more registers (the sample weight and the product), which only AVX-512's 32 have.
      // SSE4.1 stays at 8: its addps takes only aligned memory operands, so every row vector
      // needs a register. The generated assembly has no vector spills inside the position loop
      // at 16 (mean spills three vectors once per bag, around its division).
      // (Halide 21 sets no implied features: an avx512_skylake target reports neither AVX2 nor
      // AVX512, so each is asked for.)
      const bool wide_registers =
          target.has_feature(Target::AVX512) || target.has_feature(Target::AVX512_Skylake);
      const bool avx_like =
          target.arch == Target::X86 && (target.has_feature(Target::AVX2) || wide_registers);
      if (avx_like && !is_max() && wide_float &&
          (mode != Pooling::kWeightedSum || wide_registers)) {
        widest *= 2;
      }
      // Max without argmax (two_pass_max) carries no row vector and no blend: two accumulators
      // per vector (the ordered max and the magnitude bits). Tiles of 8 walk a 64-float row
      // once on AVX2 instead of twice, and each pass repeats the index load and the row's
      // prefetch; AVX2 then spills 3 of the 16 accumulators in the position loop and is still
      // faster. Measured on an AMD EPYC (Zen 3, AVX2), float32, 2048 bags of 40, embag µs at 4
      // -> 8 vectors, 1 thread: 10k x 64 warm 970 -> 783, 10k x 128 zipf warm 2000 -> 1430,
      // 262k x 128 cold 6765 -> 5858 (2 threads alike). Only where the row adds straight from
      // memory (float32 / float64; 16-bit and quantized rows need widening temporaries).
      if (avx_like && two_pass_max() && wide_float) widest = 8;
    }

    Func output = *output_;
    Expr dim = table_dim();

    Var bag_task("bag_task"), bag_in_task("bag_in_task"), tile("tile"), lane("lane");

    // Bags are independent: threads take blocks of bags, each bag computed by exactly one thread
    // in input order, so results are identical for any thread count.
    output.split(b_, bag_task, bag_in_task, max(*bags_per_task_, 1), TailStrategy::GuardWithIf)
        .parallel(bag_task);
    // Register tiles over D: for each bag and tile, the accumulators live in registers while the
    // bag's rows stream through (load index, add row vectors), which is FBGEMM's inner loop.
    // Tiles overlap at the end of a row (ShiftInwards) rather than leaving a scalar tail; the
    // overlap is recomputed, which is exact because each column is independent.
    std::vector<int> tile_widths;
    for (int vectors = widest; vectors >= 1; vectors /= 2)
      tile_widths.push_back(vectors * vector_lanes);

    // Each tile's accumulators are native vectors, unrolled, so they stay in registers; the
    // prefetch is a Func computed once per position (below) rather than once per vector.
    // (max_values on CPUs folds into ordered_max_, a bag's row of scratch: see
    // define_max_values_then_nan.)
    Func tiled = two_pass_max() ? ordered_max_ : output;
    pooled_.compute_at(tiled, tile);
    if (prefetch_distance > 0) prefetch_.compute_at(pooled_, r_);
    // The common call has no padding_idx: a specialization for it, with the same tiles, in
    // which the per-position padding test folds away (see bag_positions).
    auto tile_output = [&](Stage stage) {
      for (int width : tile_widths) {
        Stage tiles = stage.specialize(dim >= width)
                          .split(d_, tile, lane, width, TailStrategy::ShiftInwards)
                          .vectorize(lane, vector_lanes)
                          .unroll(lane);
        if (!two_pass_max()) tiles.reorder(lane, tile, bag_in_task, bag_task);
      }
      // Rows narrower than one vector (D < lanes): one scalar column at a time.
      Stage columns = stage.split(d_, tile, lane, 1);
      if (!two_pass_max()) columns.reorder(lane, tile, bag_in_task, bag_task);
    };
    if (quantized()) {
      // The output is D columns from 0 (the runtime's call): said here, so the tile bases
      // below are written in `dim`, whose alignment the sub-byte specialization gives.
      // (Max's second output, the argmax, shares the first one's bounds.)
      output.output_buffers()[0].dim(0).set_min(0).set_extent(dim);
    }
    auto tile_specializations = [&](Func f) {
      if (sub_byte_codes()) {
        tile_output(f.specialize(codes_in_words() && *padding_idx_ < 0));
        tile_output(f.specialize(codes_in_words()));
      }
      tile_output(f.specialize(*padding_idx_ < 0));
      tile_output(f);
    };
    if (two_pass_max()) {
      ordered_max_.compute_at(output, bag_in_task);
      tile_specializations(ordered_max_);
      // The bag's NaN test, its first NaNs (a loop that runs only for a bag with a NaN) and the
      // output: one pass over the bag's row of scratch each.
      nan_in_bag_.compute_at(output, bag_in_task);
      nan_lanes_.compute_at(output, bag_in_task).vectorize(nan_lane_var_);
      nan_lanes_.update().vectorize(nan_lane_var_);
      first_nan_.compute_at(output, bag_in_task);
      first_nan_.specialize(dim >= vector_lanes).vectorize(d_, vector_lanes);
      first_nan_.update().reorder(d_, nan_r_);
      output.specialize(dim >= vector_lanes)
          .split(d_, tile, lane, vector_lanes, TailStrategy::ShiftInwards)
          .reorder(lane, tile, bag_in_task, bag_task)
          .vectorize(lane);
    } else {
      tile_specializations(output);
    }
    for (int width : tile_widths) {
      pooled_.specialize(dim >= width).vectorize(d_, vector_lanes).unroll(d_);
      pooled_.update()
          .specialize(dim >= width)
          .reorder(d_, r_)
          .vectorize(d_, vector_lanes)
          .unroll(d_);
    }
    pooled_.update().reorder(d_, r_);

    if (is_max()) first_row_.compute_at(output, bag_in_task);
    if (mode == Pooling::kMean) count_.compute_at(output, bag_in_task);
  }

  // Max: (value, row) per column, scanned in input order. A value replaces the current one only
  // if strictly greater (ties keep the first occurrence), and a NaN, once held, stays (like
  // torch.max). The fold starts from -inf with row -1, so the per-position step is a compare
  // and two blends; the one case that start gets wrong -- a bag whose valid values are all
  // -inf, which never beat the start -- is fixed once per bag at the end from the bag's first
  // valid row. Empty bags give 0 and row -1. max_values folds the value alone: one blend a
  // step, no row vector, no int64 output; its -inf start is right for an all -inf bag.
  template <typename BagPositions>
  void define_max(Expr value, Expr row, BagPositions bag_positions) {
    const Type acc_type = accumulator_type();
    const bool with_argmax = mode == Pooling::kMax;
    Input<Buffer<>>& weight = *weight_;
    Input<Buffer<>>& indices = *indices_;
    Input<Buffer<>>& offsets = *offsets_;
    Expr minus_infinity = strict_float(cast(acc_type, Internal::make_const(Float(64), -INFINITY)));

    if (with_argmax) {
      pooled_(d_, b_) = Tuple(minus_infinity, cast<int32_t>(-1));
    } else {
      pooled_(d_, b_) = minus_infinity;
    }
    Expr current = with_argmax ? Expr(pooled_(d_, b_)[0]) : Expr(pooled_(d_, b_));
    // NaN is decided on the bits: under the fast-math flags Halide gives LLVM (even with the
    // strict_float target feature), LLVM folds float NaN tests and these compares into a
    // NaN-dropping form. A held NaN stays; otherwise a NaN value is taken, or a strictly greater
    // one (a compare that is false whenever either side is NaN).
    Expr value_is_nan =
        quantized() ? is_nan_by_bits(value) : stored_is_nan(weight(d_, row), weight_type);
    Expr current_is_nan = is_nan_by_bits(current);
    Expr take = !current_is_nan && (value_is_nan || strict_float(value > current));
    Expr taken = strict_float(select(take, value, current));
    if (with_argmax) {
      pooled_(d_, b_) = Tuple(taken, select(take, row, pooled_(d_, b_)[1]));
    } else {
      pooled_(d_, b_) = taken;
    }

    // Per bag: the first valid row, or -1 for a bag with none.
    RDom c = bag_positions("c");
    Expr at =
        unsafe_promise_clamped(cast<int32_t>(offsets(b_)) + c, 0, indices.dim(0).extent() - 1);
    Expr row_at = unsafe_promise_clamped(cast<int32_t>(indices(at)), 0, weight.dim(1).extent() - 1);
    first_row_(b_) = cast<int32_t>(-1);
    first_row_(b_) = select(first_row_(b_) < 0, row_at, first_row_(b_));

    Expr any_valid = first_row_(b_) >= 0;
    if (!with_argmax) {
      Expr result = strict_float(select(any_valid, pooled_(d_, b_), cast(acc_type, 0)));
      (*output_)(d_, b_) = store_float(result, weight_type, get_target());
      return;
    }
    Expr won = pooled_(d_, b_)[1] >= 0;
    Expr result = strict_float(select(won || any_valid, pooled_(d_, b_)[0], cast(acc_type, 0)));
    Expr winner = select(won, pooled_(d_, b_)[1], first_row_(b_));
    (*output_)(d_, b_) =
        Tuple(store_float(result, weight_type, get_target()), cast<int64_t>(winner));
  }

  // max_values on CPUs, in two folds that give define_max's result bit for bit:
  //  1. the ordered maximum, `value > current ? value : current` from -inf (a NaN value never
  //     wins a compare, so the held value is never NaN), beside the largest magnitude seen as an
  //     integer (bits & 0x7fff...), which exceeds infinity's bits exactly when a NaN was seen;
  //  2. only for columns where one was: the bag's first NaN, by a second walk of its rows.
  // The rule "a NaN, once held, stays; otherwise a NaN is taken, or a strictly greater value"
  // makes the result the first NaN of a column that has one, and the ordered maximum of one that
  // has none, which is what the two folds give. The first fold is a compare, a blend, an and
  // and an integer max per vector (AVX2), where testing both sides for NaN on their bits at each
  // step took ten instructions: the gather loop's four (its NaN-aware compare) are out of reach
  // because LLVM folds float NaN tests under the flags Halide gives it.
  template <typename ValueOf, typename BagPositions>
  void define_max_values_then_nan(Expr value, ValueOf value_of, BagPositions bag_positions) {
    const Type acc_type = accumulator_type();
    const Type bits_type = Int(acc_type.bits());
    Input<Buffer<>>& weight = *weight_;
    Input<Buffer<>>& indices = *indices_;
    Input<Buffer<>>& offsets = *offsets_;
    Expr minus_infinity = strict_float(cast(acc_type, Internal::make_const(Float(64), -INFINITY)));

    // (value, largest magnitude bits)
    pooled_(d_, b_) = Tuple(minus_infinity, cast(bits_type, 0));
    Expr current = pooled_(d_, b_)[0];
    Expr magnitude = cast(bits_type, embag_generators::magnitude_bits(value));
    pooled_(d_, b_) = Tuple(strict_float(select(value > current, value, current)),
                            max(pooled_(d_, b_)[1], magnitude));
    ordered_max_(d_, b_) = Tuple(pooled_(d_, b_)[0], pooled_(d_, b_)[1]);
    Expr infinity = cast(bits_type, embag_generators::infinity_bits(acc_type));
    Expr saw_nan = ordered_max_(d_, b_)[1] > infinity;

    // Whether any column of the bag saw a NaN: one scalar per bag, so the second walk below is
    // a loop whose extent is 0 for a bag without NaNs. Folded a vector's width of columns at a
    // time (the last vector clamped onto the last columns), then across the vector.
    const int lanes = natural_vector_size(acc_type);
    Var k("k");
    RDom column_vector(0, (table_dim() + lanes - 1) / lanes, "column_vector");
    nan_lanes_(k, b_) = cast(bits_type, 0);
    nan_lanes_(k, b_) = max(nan_lanes_(k, b_),
                            ordered_max_(min(column_vector * lanes + k, table_dim() - 1), b_)[1]);
    RDom lane(0, lanes, "lane");
    nan_in_bag_(b_) = cast(bits_type, 0);
    nan_in_bag_(b_) = max(nan_in_bag_(b_), nan_lanes_(lane, b_));
    nan_lane_var_ = k;

    // The first NaN: the fold takes every value until it holds a NaN, then keeps it.
    RDom n = bag_positions("n");
    Expr length = cast<int32_t>(offsets(b_ + 1)) - cast<int32_t>(offsets(b_));
    n.where(n < select(nan_in_bag_(b_) > infinity, length, 0));
    nan_r_ = n;
    Expr at =
        unsafe_promise_clamped(cast<int32_t>(offsets(b_)) + n, 0, indices.dim(0).extent() - 1);
    Expr row_at = unsafe_promise_clamped(cast<int32_t>(indices(at)), 0, weight.dim(1).extent() - 1);
    first_nan_(d_, b_) = cast(acc_type, 0);
    first_nan_(d_, b_) = strict_float(
        select(is_nan_by_bits(first_nan_(d_, b_)), first_nan_(d_, b_), value_of(row_at)));

    // Per bag: whether it has a valid position (an empty bag gives 0, not -inf).
    RDom c = bag_positions("c");
    Expr at_c =
        unsafe_promise_clamped(cast<int32_t>(offsets(b_)) + c, 0, indices.dim(0).extent() - 1);
    Expr row_c =
        unsafe_promise_clamped(cast<int32_t>(indices(at_c)), 0, weight.dim(1).extent() - 1);
    first_row_(b_) = cast<int32_t>(-1);
    first_row_(b_) = select(first_row_(b_) < 0, row_c, first_row_(b_));
    Expr any_valid = first_row_(b_) >= 0;

    Expr pooled = strict_float(select(saw_nan, first_nan_(d_, b_), ordered_max_(d_, b_)[0]));
    Expr result = strict_float(select(any_valid, pooled, cast(acc_type, 0)));
    (*output_)(d_, b_) = store_float(result, weight_type, get_target());
  }

  // Defines prefetch_(position, bag): issues a prefetch for every cache line of the row
  // `prefetch_distance` positions after the bag's position `position` and evaluates to 0, so it
  // can sit in an RDom condition. Halide's schedule-level prefetch() cannot follow a
  // data-dependent row (it would prefetch the whole table), so the prefetch intrinsic is placed
  // in the algorithm directly. The whole row is prefetched even when D is walked in several
  // register tiles: the later tiles then find their lines in cache.
  void define_prefetch() {
    Input<Buffer<>>& weight = *weight_;
    Input<Buffer<>>& indices = *indices_;
    Input<Buffer<>>& offsets = *offsets_;
    Var pos("pos"), bag("bag");
    Expr last_position = indices.dim(0).extent() - 1;
    // In 64 bits: with N within prefetch_distance of INT32_MAX the sum would overflow int32.
    Expr ahead64 = min(cast<int64_t>(offsets(bag)) + cast<int64_t>(pos) + prefetch_distance,
                       cast<int64_t>(last_position));
    Expr ahead = unsafe_promise_clamped(cast<int32_t>(ahead64), 0, last_position);
    Expr ahead_row =
        unsafe_promise_clamped(cast<int32_t>(indices(ahead)), 0, weight.dim(1).extent() - 1);
    // Byte offsets: Halide scales a prefetch's offset by the size of the call's type, so the
    // call is typed uint8 and the offset counted in bytes, whatever the table's element type.
    // (Typed int32, as it once was, it fetched row 2r of a 16-bit table and row r/2 of a float64
    // one.) The hint is Halide's: prefetchnta on x86, prfm pldl1strm on ARM.
    // (A quantized table's elements are its bytes: the loop below walks the row's bytes, codes
    // and qparams alike, so a row's every line is prefetched.)
    const int element_bytes = quantized() ? 1 : static_cast<Type>(weight_type).bytes();
    Expr row_start = cast<int64_t>(ahead_row) * cast<int64_t>(weight.dim(1).stride());
    Expr base = Internal::Variable::make(Handle(), "weight", ImageParam(weight).parameter());
    const int elements_per_line = 64 / element_bytes;
    Expr dim = weight.dim(0).extent();
    auto prefetch_line = [&](Expr line) {
      Expr column = min(line * elements_per_line, dim - 1);
      Expr byte_offset = (row_start + cast<int64_t>(column)) * element_bytes;
      return Internal::Call::make(UInt(8), Internal::Call::prefetch, {base, byte_offset, 1, 1},
                                  Internal::Call::Intrinsic);
    };
    // The first kUnrolledLines lines are issued straight-line (a loop costs more instructions
    // than the prefetches, and instructions per position are what limits the warm kernels), in
    // groups of doubling size -- line 0, line 1, lines 2-3, lines 4-7 -- each behind one branch
    // on the row's width (if_then_else is evaluated lazily, unlike select). The schedule's
    // `dim >= width` specializations fold the branches of the groups every row has, so a
    // 64-float row tests one branch (lines 4-7, not taken) and a 128-float row none. Within the
    // last group a row partly covers, lines past the row are clamped to its last line: one
    // duplicate prefetch is cheaper than a branch per line (a prefetch takes a load slot, a
    // predicted branch an issue slot; the per-line branches also kept one flag register per
    // line live across the loop, spilled at D >= 64). Rows longer than that (D > 128 floats)
    // prefetch the rest in a loop.
    constexpr int kUnrolledLines = 8;
    Expr issued = cast<uint8_t>(0);
    for (int first = 0; first < kUnrolledLines; first = first == 0 ? 1 : first * 2) {
      const int end = first == 0 ? 1 : first * 2;
      Expr group = cast<uint8_t>(0);
      for (int line = first; line < end; ++line) group = group | prefetch_line(line);
      Expr in_row = first * elements_per_line < dim;
      issued = issued | Internal::Call::make(UInt(8), Internal::Call::if_then_else,
                                             {in_row, group, cast<uint8_t>(0)},
                                             Internal::Call::PureIntrinsic);
    }
    prefetch_(pos, bag) = issued;
    Expr lines = (dim + elements_per_line - 1) / elements_per_line;
    RDom more(0, max(lines - kUnrolledLines, 0), "more_lines");
    prefetch_(pos, bag) = prefetch_(pos, bag) | prefetch_line(kUnrolledLines + more);
  }

  bool is_max() const { return mode == Pooling::kMax || mode == Pooling::kMaxValues; }
  // Max without argmax on CPUs folds without the per-step NaN tests (define_max_values_then_nan).
  // With argmax the same two folds carry three vectors per column (value, magnitude, row): a
  // 4-vector tile then spilled 6 vectors per position on AVX2 and measured slower than define_max's
  // one fold (10k x 64, 1 thread: 0.23 s against 0.15 s of CPU time for 50 calls), so argmax stays
  // there, as do GPU threads (one column each).
  // Nor for 4- and 2-bit codes: their word loads (D % 8 == 0, see dequantized) are specialized
  // on the tiled Func, and the NaN walk outside it made Halide build their bounds' promise
  // checks for every D (make test-promises: int4 at D = 1 refused), so those keep the one fold.
  bool two_pass_max() const {
    return mode == Pooling::kMaxValues && !get_target().has_gpu_feature() && !sub_byte_codes();
  }

  bool quantized() const { return codec != QuantCodec::kNone; }

  // D: a float table's first extent; a quantized table's is its row bytes, so D comes in.
  Expr table_dim() const { return quantized() ? Expr(*dim_) : weight_->dim(0).extent(); }

  // Column d_ of `row` of a quantized table, dequantised to float32: w = scale * q + bias, with
  // q the unsigned code (lowest bits first within a byte). The qparams are assembled from bytes
  // (rows need not be aligned, and FBGEMM's front layout puts float16s at any byte offset) and
  // widened by F16C where the target has it, else in integer arithmetic (half_bits_to_float):
  // exact either way. They depend on the row only: the compiled loop decodes them once per
  // position and tile, and every vector of the tile reuses the two broadcast registers.
  //
  // Sub-byte codes have two forms. Where D is a multiple of 8 (codes_in_words(), a
  // specialization of the schedule), every vector of a tile starts at a multiple of 8 columns,
  // so its 8 codes are one little-endian word of `bits` bytes: the word is loaded once,
  // broadcast, and each lane shifts it right by its own 0, bits, 2 bits, ... (vpsrlvd on AVX2,
  // ushl on NEON) and masks -- no byte shuffles, no interleaving of even and odd columns. Any
  // other D takes each code from its byte (an interleave per vector, which Halide's vectorizer
  // emits for d / per_byte). Both give the same q, so the kernel's bits do not depend on which
  // ran.
  Expr dequantized(Expr row) {
    Input<Buffer<>>& weight = *weight_;
    auto byte = [&](Expr at) { return weight(at, row); };
    Expr code_offset = *code_offset_, qparam_offset = *qparam_offset_;
    if (codec == QuantCodec::kF8) return fp8_to_float(byte(code_offset + d_));
    const int bits = embag::kernels::quant_code_bits(codec);
    Expr q;
    if (bits == 8) {
      q = cast<int32_t>(byte(code_offset + d_));
    } else {
      const int per_byte = 8 / bits;
      Expr packed = byte(code_offset + d_ / per_byte);
      Expr shift = cast<uint8_t>((d_ % per_byte) * bits);
      Expr from_byte = cast<int32_t>((packed >> shift) & cast<uint8_t>((1 << bits) - 1));
      // Group g of 8 codes is the word of `bits` bytes at code byte g * bits. The promise
      // tells bounds inference what the aligned form reads (inside the codes when D % 8 == 0);
      // the select folds to one side in each specialization, so the other is never built.
      Expr word_at = code_offset + (d_ / kCodesPerWord) * bits;
      Expr last_byte = weight.dim(0).extent() - 1;
      // Kernels built with check_unsafe_promises (make test-promises) evaluate every promise's
      // check in the bounds computed at entry, for the D % 8 == 0 branch's loads too whatever D
      // is, and those checks fail where D % 8 != 0 though the loads never run there. They state
      // the bound with a real clamp instead, which gives the same bytes wherever the loads run.
      const bool checking_promises = get_target().has_feature(Target::CheckUnsafePromises);
      Expr word = cast<uint32_t>(0);
      for (int i = 0; i < bits; ++i) {
        Expr at = checking_promises ? clamp(word_at + i, 0, last_byte)
                                    : unsafe_promise_clamped(word_at + i, 0, last_byte);
        word = word | (cast<uint32_t>(byte(at)) << (8 * i));
      }
      Expr lane_shift = cast<uint32_t>((d_ % kCodesPerWord) * bits);
      Expr from_word = cast<int32_t>((word >> lane_shift) & cast<uint32_t>((1 << bits) - 1));
      q = select(codes_in_words(), from_word, from_byte);
    }
    Expr scale, bias;
    if (codec == QuantCodec::kU8F32) {
      auto f32_at = [&](Expr at) {
        Expr u = cast<uint32_t>(byte(at)) | (cast<uint32_t>(byte(at + 1)) << 8) |
                 (cast<uint32_t>(byte(at + 2)) << 16) | (cast<uint32_t>(byte(at + 3)) << 24);
        return reinterpret(Float(32), u);
      };
      scale = f32_at(qparam_offset);
      bias = f32_at(qparam_offset + 4);
    } else {
      const Target target = get_target();
      const bool f16c = target.arch == Target::X86 && target.has_feature(Target::F16C);
      auto f16_at = [&](Expr at) {
        Expr half_bits = cast<uint16_t>(byte(at)) | (cast<uint16_t>(byte(at + 1)) << 8);
        return f16c ? widen_float(reinterpret(Float(16), half_bits), Float(32), target)
                    : half_bits_to_float(half_bits);
      };
      scale = f16_at(qparam_offset);
      bias = f16_at(qparam_offset + 2);
    }
    return strict_float(exact_product(scale, cast<float>(q), get_target()) + bias);
  }

  // An 8-bit float (Fp8Encoding, given at run time) widened to the float32 it denotes. Its sign,
  // exponent and mantissa are moved into a float16's places ([s][em << (10 - mantissa_bits)]:
  // e5m2 is a float16's top byte, e4m3 a float16 whose exponent is 8 too small), the float16 is
  // widened (F16C's vcvtph2ps where the target has it, else exactly in integer arithmetic), and
  // multiplied by 2^(15 - bias), exact on a normal float32. Subnormal bytes are subnormal float16s,
  // which the widening makes normal float32s, so no float operation sees a subnormal (FBGEMM's
  // decode multiplies a float32 subnormal, zero where denormals are flushed). Infinities and NaNs
  // of e5m2 are float16's own (quiet NaNs, as torch's .float() gives them on x86); e4m3fn's NaN
  // (0x7F, 480 as a number) gets float32's exponent all ones: 0x7FF00000 with the sign, c10's.
  // Not a 256-entry table: AVX2 has no byte-indexed lookup wider than 16 entries, so a table is a
  // gather per element. A first version did the whole decode in int32 (shift and rebias, a
  // convert and multiply for subnormals, the sign apart): six run-time constants and the raw
  // bytes stayed live, and the AVX2 sum spilled and ran 3-4x slower than int8's
  // (docs/quantized.md).
  Expr fp8_to_float(Expr code) {
    const Target target = get_target();
    const bool f16c = target.arch == Target::X86 && target.has_feature(Target::F16C);
    Expr c = cast<uint16_t>(code);
    Expr magnitude = c & 0x7F;
    Expr shift = cast<uint16_t>(10 - *fp8_mantissa_bits_);
    Expr half_bits = ((c & 0x80) << 8) | (magnitude << shift);
    Expr half = f16c ? widen_float(reinterpret(Float(16), half_bits), Float(32), target)
                     : half_bits_to_float(half_bits);
    Expr scale = reinterpret(Float(32), (142 - *fp8_exponent_bias_) << 23);
    Expr bits = reinterpret(UInt(32), strict_float(half * scale));
    // (signed, > special_from - 1: one vpcmpgtw, where an unsigned >= took three)
    Expr special = cast<int16_t>(magnitude) > cast<int16_t>(*fp8_special_from_ - 1);
    return reinterpret(Float(32),
                       select(special, bits | embag_generators::detail::u32(0x7F800000), bits));
  }

  // Codes per word in the aligned form of dequantized(): 8, so a word is `bits` bytes (4 for
  // 4-bit codes, 2 for 2-bit) and D % 8 == 0 puts whole words inside the row's codes.
  static constexpr int kCodesPerWord = 8;

  // True where the aligned form of sub-byte codes applies. The schedule specializes on this very
  // expression (Halide's simplifier learns `dim % 8 == 0` from it, and so that every tile base
  // is a multiple of 8) and the algorithm selects on it.
  Expr codes_in_words() const { return (*dim_ % kCodesPerWord) == 0; }

  bool sub_byte_codes() const { return quantized() && embag::kernels::quant_code_bits(codec) < 8; }

  Type accumulator_type() const {
    return Float(embag::kernels::accumulator_bits(static_cast<Type>(weight_type).bits()));
  }

  Var d_{"d"}, b_{"b"};
  RDom r_;
  RDom nan_r_;
  Func pooled_{"pooled"}, count_{"count"}, first_row_{"first_row"}, prefetch_{"prefetch"};
  Var nan_lane_var_;
  Func ordered_max_{"ordered_max"}, nan_lanes_{"nan_lanes"}, nan_in_bag_{"nan_in_bag"};
  Func first_nan_{"first_nan"};

  Input<Buffer<>>* weight_ = nullptr;
  Input<Buffer<>>* indices_ = nullptr;
  Input<Buffer<>>* offsets_ = nullptr;
  Input<Buffer<>>* per_sample_weights_ = nullptr;
  Input<int32_t>* padding_idx_ = nullptr;
  Input<int32_t>* bags_per_task_ = nullptr;
  Input<int32_t>* code_offset_ = nullptr;
  Input<int32_t>* qparam_offset_ = nullptr;
  Input<int32_t>* dim_ = nullptr;
  Input<int32_t>* fp8_mantissa_bits_ = nullptr;
  Input<int32_t>* fp8_exponent_bias_ = nullptr;
  Input<int32_t>* fp8_special_from_ = nullptr;
  Output<Func>* output_ = nullptr;
};

}  // namespace

HALIDE_REGISTER_GENERATOR(EmbagForward, embag_forward)
