// Halide generators for the planning steps of GPU calls: what the CPU runtime does in C++ before
// and between kernels (validation, bag layout, grouping positions by row, writing rows back),
// done on the device so that no index, offset or table byte is copied to the host.
//
// embag_check: validates offsets and indices and reduces the verdict to one small array the
//   runtime copies back (one synchronisation). Arguments: indices (N), offsets (O) (any index
//   dtype; ignored without has_offsets), num_rows V, has_offsets, include_last_offset; report
//   (8) int64 output:
//     [0] offsets[0]            [1] offsets[O-1]
//     [2] first i with offsets[i] > offsets[i+1], or -1      [3] offsets[i]   [4] offsets[i+1]
//     [5] first position p < positions_end whose index is outside [0, V), or -1   [6] input[p]
//     [7] positions_end: offsets[O-1] clamped to [0, N] with include_last_offset, else N
//   The first bad positions are minimum reductions (atomic on the GPU): the same answer for any
//   thread schedule, and the same position the CPU's in-order scan reports.
//
// embag_layout: the B + 1 offsets in the indices' dtype: offsets[b] for b < O, then N (bag b of a
//   1-D input), or b * L (2-D input, fixed_length L > 0; the offsets argument is then not read).
//
// embag_position_bag: the bag of each position (binary search over the B + 1 offsets), -1 for a
//   position in no bag.
//
// embag_sort_keys: the key each position is sorted by to group positions by row: its row, or V
//   (after every row) for a padding position or one in no bag.
//
// embag_bag_count: valid (non-padding) positions per bag, as int32 (the mean divisor) or int64
//   (forward's bag_count output).
//
// embag_scatter_rows: writes row k of values (D, K) to row rows[k] of table (D, V). With
//   zero_fill the other rows become 0 (the dense gradient); with masked only rows whose mask[k]
//   is set are written and the rest of the table is untouched (renorm's write-back).
#include <string>
#include <vector>

#include "Halide.h"
#include "float_bits.h"
#include "gpu_tiles.h"

namespace {

using namespace Halide;
using embag_generators::storage_type;

// int64 constant.
Expr i64(int64_t value) { return Internal::make_const(Int(64), value); }

class EmbagCheck : public Generator<EmbagCheck> {
 public:
  GeneratorParam<Type> index_type{"index_type", Int(64)};
  GeneratorParam<Type> offsets_type{"offsets_type", Int(64)};

  Input<int32_t> num_rows{"num_rows"};
  // N, passed apart from the indices' extent: with no index at all the runtime passes a
  // one-element stand-in array, which must never be read.
  Input<int32_t> num_indices{"num_indices"};
  Input<bool> has_offsets{"has_offsets"};
  Input<bool> include_last_offset{"include_last_offset"};
  Output<Buffer<int64_t, 1>> report{"report"};

  void configure() {
    indices_ = add_input<Buffer<>>("indices", index_type, 1);
    offsets_ = add_input<Buffer<>>("offsets", offsets_type, 1);
  }

  void generate() {
    Input<Buffer<>>& indices = *indices_;
    Input<Buffer<>>& offsets = *offsets_;
    Expr n = num_indices;
    Expr num_offsets = select(has_offsets, offsets.dim(0).extent(), 0);
    Expr none = Int(32).max();
    // Real clamps, not promises: the report reads at positions that may be "none" (INT32_MAX),
    // and a GPU evaluates both sides of a select.
    auto offset = [&](Expr i) {
      return cast<int64_t>(offsets(clamp(i, 0, max(offsets.dim(0).extent() - 1, 0))));
    };

    // Offsets must not decrease; indices read by bags must name rows. Each is the first
    // position breaking the rule, found by a minimum reduction over all positions.
    Expr last = offset(num_offsets - 1);
    Expr end = select(has_offsets && include_last_offset && num_offsets > 0,
                      cast<int32_t>(clamp(last, i64(0), cast<int64_t>(n))), n);
    end_() = end;
    first_bad_offset_ = first_position("offset", max(offsets.dim(0).extent() - 1, 0), [&](Expr i) {
      return i + 1 < num_offsets && offset(i) > offset(i + 1);
    });
    first_bad_index_ = first_position("index", indices.dim(0).extent(), [&](Expr p) {
      Expr value = cast<int64_t>(indices(clamp(p, 0, max(indices.dim(0).extent() - 1, 0))));
      return p < end_() && (value < 0 || value >= cast<int64_t>(num_rows));
    });

    Var j("j");
    Expr bad_offset = first_bad_offset_();
    Expr bad_index = first_bad_index_();
    Expr found_offset = bad_offset < none;
    Expr found_index = bad_index < none;
    report(j) = select(
        j == 0, select(num_offsets > 0, offset(0), i64(0)),  //
        j == 1, select(num_offsets > 0, last, i64(0)),       //
        j == 2, select(found_offset, cast<int64_t>(bad_offset), i64(-1)), j == 3,
        select(found_offset, offset(bad_offset), i64(0)), j == 4,
        select(found_offset, offset(bad_offset + 1), i64(0)), j == 5,
        select(found_index, cast<int64_t>(bad_index), i64(-1)), j == 6,
        select(found_index,
               cast<int64_t>(indices(clamp(bad_index, 0, max(indices.dim(0).extent() - 1, 0)))),
               i64(0)),
        cast<int64_t>(end_()));
  }

  void schedule() {
    end_.compute_root().gpu_single_thread();
    // Every step of a compute_root Func is placed on the GPU, its update included (an update
    // left unscheduled would run on the host).
    for (Func f : {first_bad_offset_, first_bad_index_}) {
      f.compute_root().gpu_single_thread();
      f.update().gpu_single_thread();
    }
    Var block("block"), thread("thread");
    for (Func f : stages_) {
      Var t = f.args()[0];
      f.compute_root().gpu_tile(t, block, thread, 256, TailStrategy::GuardWithIf);
      f.update().gpu_tile(t, block, thread, 256, TailStrategy::GuardWithIf);
    }
    Func(report).gpu_single_thread();
    report.dim(0).set_extent(8);
  }

 private:
  // The first position in [0, extent) where bad(position) holds, or INT32_MAX: a minimum
  // reduction in three stages without atomics (each stage's threads fold a fixed slice in order,
  // so no thread reads what another writes): W = min(extent, 65536) slices of the positions,
  // 256 slices of those, then one thread. Stages go to stages_ for the schedule.
  template <typename Bad>
  Func first_position(const std::string& name, Expr extent, Bad bad) {
    constexpr int kWide = 65536, kNarrow = 256;
    const Expr none = Int(32).max();
    Expr width = clamp(extent, 1, kWide);
    Var t("t");
    Func wide(name + "_wide"), narrow(name + "_narrow"), last(name + "_last");
    // Thread t of the wide stage takes positions t, t + W, ...: neighbouring threads read
    // neighbouring positions (coalesced).
    RDom r(0, (extent + width - 1) / width, name + "_r");
    Expr p = r * width + t;
    wide(t) = none;
    wide(t) = min(wide(t), select(p < extent && bad(p), p, none));
    RDom s(0, (width + kNarrow - 1) / kNarrow, name + "_s");
    Expr slot = s * kNarrow + t;
    narrow(t) = none;
    narrow(t) = min(narrow(t), select(slot < width, wide(clamp(slot, 0, width - 1)), none));
    RDom u(0, kNarrow, name + "_u");
    last() = none;
    last() = min(last(), narrow(u));
    wide.bound(t, 0, width);
    narrow.bound(t, 0, kNarrow);
    stages_.push_back(wide);
    stages_.push_back(narrow);
    return last;
  }

  Func first_bad_offset_, first_bad_index_, end_{"end"};
  std::vector<Func> stages_;
  Input<Buffer<>>* indices_ = nullptr;
  Input<Buffer<>>* offsets_ = nullptr;
};

class EmbagLayout : public Generator<EmbagLayout> {
 public:
  GeneratorParam<Type> index_type{"index_type", Int(64)};
  GeneratorParam<Type> offsets_type{"offsets_type", Int(64)};

  Input<int32_t> num_indices{"num_indices"};
  Input<int32_t> fixed_length{"fixed_length"};

  void configure() {
    offsets_ = add_input<Buffer<>>("offsets", offsets_type, 1);
    layout_ = add_output<Func>("layout", Type(index_type), 1);
  }

  void generate() {
    Input<Buffer<>>& offsets = *offsets_;
    Var b("b");
    Expr num_offsets = offsets.dim(0).extent();
    // A real clamp: b = B reads past the caller's B offsets, and a GPU evaluates both sides of
    // the select (Oclgrind caught the out-of-bounds read a promise allowed).
    Expr caller = offsets(clamp(b, 0, max(num_offsets - 1, 0)));
    (*layout_)(b) = cast(
        index_type, select(fixed_length > 0, cast<int64_t>(b) * cast<int64_t>(fixed_length),
                           b < num_offsets, cast<int64_t>(caller), cast<int64_t>(num_indices)));
    b_ = b;
  }

  void schedule() {
    Var block("block"), thread("thread");
    Func(*layout_).gpu_tile(b_, block, thread, 256, TailStrategy::GuardWithIf);
  }

 private:
  Var b_;
  Input<Buffer<>>* offsets_ = nullptr;
  Output<Func>* layout_ = nullptr;
};

class EmbagPositionBag : public Generator<EmbagPositionBag> {
 public:
  GeneratorParam<Type> index_type{"index_type", Int(64)};
  Output<Buffer<int32_t, 1>> position_bag{"position_bag"};

  void configure() { layout_ = add_input<Buffer<>>("layout", index_type, 1); }

  void generate() {
    Input<Buffer<>>& layout = *layout_;
    Expr num_bags = layout.dim(0).extent() - 1;
    // A real clamp: the final test reads layout[b + 1] for b = B too, where a GPU evaluates both
    // sides of the select (Oclgrind caught the out-of-bounds read a promise allowed).
    auto at = [&](Expr b) { return cast<int64_t>(layout(clamp(b, 0, num_bags))); };
    Var p("p");
    // The last bag b with layout[b] <= p, by bisection: [lo, hi] always holds it (layout[0] is 0
    // after validation, so lo = 0 qualifies). 32 halvings cover any int32 bag count.
    RDom step(0, 32, "step");
    search_(p) = Tuple(0, num_bags);
    Expr lo = search_(p)[0], hi = search_(p)[1];
    Expr mid = lo + (hi - lo + 1) / 2;
    Expr go_up = at(mid) <= cast<int64_t>(p);
    // (`step >= 0` is always true: it makes the update iterate over the 32 steps)
    Expr searching = lo < hi && step >= 0;
    search_(p) =
        Tuple(select(searching && go_up, mid, lo), select(searching && !go_up, mid - 1, hi));
    Expr b = search_(p)[0];
    position_bag(p) = select(b < num_bags && cast<int64_t>(p) < at(b + 1), b, -1);
    p_ = p;
  }

  void schedule() {
    Var block("block"), thread("thread");
    Func(position_bag).gpu_tile(p_, block, thread, 256, TailStrategy::GuardWithIf);
    search_.compute_at(position_bag, thread);
    search_.update().unscheduled();
  }

 private:
  Var p_;
  Func search_{"search"};
  Input<Buffer<>>* layout_ = nullptr;
};

class EmbagSortKeys : public Generator<EmbagSortKeys> {
 public:
  GeneratorParam<Type> index_type{"index_type", Int(64)};
  Input<Buffer<int32_t, 1>> position_bag{"position_bag"};
  Input<int32_t> num_rows{"num_rows"};
  Input<int32_t> padding_idx{"padding_idx"};
  Output<Buffer<int64_t, 1>> keys{"keys"};
  Output<Buffer<int32_t, 1>> positions{"positions"};

  void configure() { indices_ = add_input<Buffer<>>("indices", index_type, 1); }

  void generate() {
    Var p("p");
    Expr row = cast<int64_t>((*indices_)(p));
    Expr excluded = position_bag(p) < 0 || row == cast<int64_t>(padding_idx);
    keys(p) = select(excluded, cast<int64_t>(num_rows), row);
    positions(p) = p;
    p_ = p;
  }

  void schedule() {
    Var block("block"), thread("thread");
    Func(keys).gpu_tile(p_, block, thread, 256, TailStrategy::GuardWithIf);
    Func(positions).gpu_tile(p_, block, thread, 256, TailStrategy::GuardWithIf);
  }

 private:
  Var p_;
  Input<Buffer<>>* indices_ = nullptr;
};

class EmbagBagCount : public Generator<EmbagBagCount> {
 public:
  GeneratorParam<Type> index_type{"index_type", Int(64)};
  GeneratorParam<Type> count_type{"count_type", Int(32)};
  Input<int32_t> padding_idx{"padding_idx"};

  void configure() {
    indices_ = add_input<Buffer<>>("indices", index_type, 1);
    layout_ = add_input<Buffer<>>("layout", index_type, 1);
    counts_ = add_output<Func>("counts", Type(count_type), 1);
  }

  void generate() {
    Input<Buffer<>>& indices = *indices_;
    Input<Buffer<>>& layout = *layout_;
    Var b("b");
    Expr begin = cast<int32_t>(layout(b));
    Expr length = cast<int32_t>(layout(b + 1)) - begin;
    Expr n = indices.dim(0).extent();
    RDom r(0, n, "r");
    r.where(r < length);
    Expr row = cast<int32_t>(indices(unsafe_promise_clamped(begin + r, 0, n - 1)));
    count_(b) = 0;
    count_(b) += select(row != padding_idx, 1, 0);
    (*counts_)(b) = cast(count_type, count_(b));
    b_ = b;
  }

  void schedule() {
    Var block("block"), thread("thread");
    Func(*counts_).gpu_tile(b_, block, thread, 128, TailStrategy::GuardWithIf);
    count_.compute_at(*counts_, thread);
    count_.update().unscheduled();
  }

 private:
  Var b_;
  Func count_{"count"};
  Input<Buffer<>>* indices_ = nullptr;
  Input<Buffer<>>* layout_ = nullptr;
  Output<Func>* counts_ = nullptr;
};

class EmbagScatterRows : public Generator<EmbagScatterRows> {
 public:
  GeneratorParam<Type> weight_type{"weight_type", Float(32)};
  // true: every other row of the table becomes 0 (dense gradient); false: untouched.
  GeneratorParam<bool> zero_fill{"zero_fill", true};
  // true: only rows k with mask[k] != 0 are written (renorm's changed rows).
  GeneratorParam<bool> masked{"masked", false};
  Input<Buffer<int64_t, 1>> rows{"rows"};

  void configure() {
    const Type stored = storage_type(weight_type, get_target());
    values_ = add_input<Buffer<>>("values", stored, 2);
    if (masked) mask_ = add_input<Buffer<uint8_t, 1>>("mask");
    table_ = add_output<Func>("table", stored, 2);
  }

  void generate() {
    Input<Buffer<>>& values = *values_;
    Func table = *table_;
    Var d("d"), v("v");
    const Type stored = storage_type(weight_type, get_target());
    table(d, v) = zero_fill ? cast(stored, 0) : undef(stored);
    RDom k(0, values.dim(1).extent(), "k");
    if (masked) k.where((*mask_)(k) != 0);
    Expr row = unsafe_promise_clamped(cast<int32_t>(rows(k)), 0,
                                      table.output_buffer().dim(1).extent() - 1);
    table(d, row) = values(d, k);
    d_ = d;
    v_ = v;
    k_ = k;
  }

  void schedule() {
    Func table = *table_;
    Var d_block("d_block"), v_block("v_block"), d_thread("d_thread"), v_thread("v_thread");
    // (Also without zero_fill: the undefined pure step then generates nothing, but must be a GPU
    // step, or Halide expects the table in host memory.)
    // Table rows on blockIdx.x (gpu_tiles.h): V is unbounded.
    embag_generators::gpu_tile_rows_on_x(table, d_, v_, d_block, v_block, d_thread, v_thread, 32,
                                         8);
    // The listed rows are distinct (the runtime passes each row once), so the writes of
    // different k never overlap: no race, whatever Halide can prove. A block per (listed row,
    // 32 columns), the listed rows on blockIdx.x: there are up to V of them, and blockIdx.y
    // stops at 65,535 on CUDA (gpu_tiles.h).
    Var dd_block("dd_block"), dd_thread("dd_thread");
    Stage scatter = table.update();
    scatter.specialize(values_->dim(1).extent() > 0)
        .allow_race_conditions()
        .split(d_, dd_block, dd_thread, 32, TailStrategy::GuardWithIf)
        .reorder(dd_thread, k_, dd_block)
        .gpu_blocks(k_, dd_block)
        .gpu_threads(dd_thread);
    // No listed row (a dense gradient of a batch with no valid position): the blocks above
    // would be a grid of 0 blocks, which CUDA refuses (CUDA_ERROR_INVALID_VALUE; the fake CUDA
    // driver found it). One thread whose loop over no row does nothing launches instead.
    scatter.gpu_single_thread();
  }

 private:
  Var d_, v_;
  RDom k_;
  Input<Buffer<>>* values_ = nullptr;
  Input<Buffer<uint8_t, 1>>* mask_ = nullptr;
  Output<Func>* table_ = nullptr;
};

}  // namespace

HALIDE_REGISTER_GENERATOR(EmbagCheck, embag_check)
HALIDE_REGISTER_GENERATOR(EmbagLayout, embag_layout)
HALIDE_REGISTER_GENERATOR(EmbagPositionBag, embag_position_bag)
HALIDE_REGISTER_GENERATOR(EmbagSortKeys, embag_sort_keys)
HALIDE_REGISTER_GENERATOR(EmbagBagCount, embag_bag_count)
HALIDE_REGISTER_GENERATOR(EmbagScatterRows, embag_scatter_rows)
