// Halide generator for max_norm: the renormalised copies of the table rows a call references.
//
// For each requested row k (distinct row ids, chosen by the runtime), computes the row's p-norm
// as a left fold over its columns in the accumulation type, and when the norm exceeds max_norm
// writes the row scaled by max_norm / (norm + 1e-7) (the scale computed in double, then cast to
// the accumulation type, as PyTorch does). The runtime copies back only the rows whose
// `changed` flag is set, so untouched rows are never written.
//
// Arguments of the generated function, in order:
//   weight (D, V)        the table
//   rows (K) int64       distinct row ids, validated to lie in [0, V)
//   max_norm, norm_type  float64 scalars
//   norm_kind            int32: which fold norm_type asks for (NormKind below), decided by the
//                        runtime so the kernel never compares floats with infinities (the
//                        kernels are compiled with fast-math flags that may assume none occur)
//   renormed (D, K)      the rows after renormalisation (weight's type)
//   changed (K) uint8    1 where the row's norm exceeded max_norm
#include <limits>

#include "Halide.h"
#include "float_bits.h"
#include "gpu_tiles.h"
#include "kernel_enums.h"

namespace {

using namespace Halide;

// A float64 constant (Halide's Expr has no implicit conversion from double).
Expr f64(double value) { return Internal::make_const(Float(64), value); }

// The norm_kind argument's values (embag::kernels::NormKind, shared with the runtime), as plain
// ints for comparisons with the Input.
using NormKind = int32_t;
constexpr NormKind kGeneralP = static_cast<NormKind>(embag::kernels::NormKind::kGeneralP);
constexpr NormKind kL1 = static_cast<NormKind>(embag::kernels::NormKind::kL1);
constexpr NormKind kL2 = static_cast<NormKind>(embag::kernels::NormKind::kL2);
constexpr NormKind kMaxAbs = static_cast<NormKind>(embag::kernels::NormKind::kMaxAbs);
constexpr NormKind kMinAbs = static_cast<NormKind>(embag::kernels::NormKind::kMinAbs);
constexpr NormKind kNonZeros = static_cast<NormKind>(embag::kernels::NormKind::kNonZeros);

class EmbagRenorm : public Generator<EmbagRenorm> {
 public:
  GeneratorParam<Type> weight_type{"weight_type", Float(32)};
  GeneratorParam<int> rows_per_task{"rows_per_task", 64};

  Input<Buffer<int64_t, 1>> rows{"rows"};
  Input<double> max_norm{"max_norm"};
  Input<double> norm_type{"norm_type"};
  // PyTorch's 1e-7 in max_norm / (norm + 1e-7) (kernels::kMaxNormEpsilon), passed in rather than
  // written as a constant: Halide 21's OpenCL back end prints float64 constants through float32,
  // which turns 1e-7 into 1.00000001e-7.
  Input<double> norm_epsilon{"norm_epsilon"};
  Input<int32_t> norm_kind{"norm_kind"};
  Output<Func> renormed{"renormed", 2};
  Output<Buffer<uint8_t, 1>> changed{"changed"};

  void configure() {
    // The table's element type is a GeneratorParam, so it is added here; it comes first in the
    // argument list only after the statically declared rows input, which the runtime respects.
    // (GPU kernels take 16-bit tables as their bits: see storage_type in float_bits.h)
    weight_ =
        add_input<Buffer<>>("weight", embag_generators::storage_type(weight_type, get_target()), 2);
  }

  void generate() {
    const Type acc_type = accumulator_type();
    Input<Buffer<>>& weight = *weight_;
    Expr dim = weight.dim(0).extent();
    Expr row = unsafe_promise_clamped(cast<int32_t>(rows(k_)), 0, weight.dim(1).extent() - 1);

    RDom c(0, dim, "c");
    Expr x = abs(embag_generators::load_float(weight(c, row), weight_type, acc_type, get_target()));
    // Halide's pow is a few ulps from the C library's in float32; evaluating the general-p
    // powers in float64 and rounding once keeps them within an ulp of a correctly rounded powf.
    // (the divisor of 1/p is p only for the general kind, which never has p == 0; the select keeps
    // Halide from folding 1/0 in the other specialisations)
    Expr p = norm_type;
    Expr inverse_p = f64(1.0) / select(norm_kind == kGeneralP, p, f64(1.0));
    auto general_power = [&](Expr v) { return cast(acc_type, pow(cast<double>(v), p)); };
    auto general_root = [&](Expr v) { return cast(acc_type, pow(cast<double>(v), inverse_p)); };
    Expr zero = cast(acc_type, 0), one = cast(acc_type, 1);
    const double inf = std::numeric_limits<double>::infinity();
    // A NaN element makes the max and min norms NaN (and a NaN norm never exceeds max_norm).
    // The tests are on bits: Halide's is_nan, even under strict_float, let float64 folds drop
    // NaNs (a NaN row came out scaled by its largest finite entry; a min fold stayed at inf).
    auto nan_sticky = [](Expr folded, Expr element, Expr combined) {
      return strict_float(select(embag_generators::is_nan_by_bits(element), element,
                                 embag_generators::is_nan_by_bits(folded), folded, combined));
    };

    // One fold per kind of norm; specialisations on norm_kind below make each branch a single
    // plain loop. Every fold is a left fold over the columns, in the accumulation type.
    norm_fold_(k_) = select(norm_kind == kMinAbs, cast(acc_type, f64(inf)), zero);
    Expr acc = norm_fold_(k_);
    norm_fold_(k_) =
        select(norm_kind == kMaxAbs, nan_sticky(acc, x, max(acc, x)),  //
               norm_kind == kMinAbs, nan_sticky(acc, x, min(acc, x)),  //
               norm_kind == kNonZeros, strict_float(acc + select(x != zero, one, zero)),
               norm_kind == kL1, strict_float(acc + x),  //
               norm_kind == kL2,
               strict_float(acc + embag_generators::exact_product(x, x, get_target())),  //
               strict_float(acc + general_power(x)));

    Expr folded = norm_fold_(k_);
    norm_(k_) = select(norm_kind == kL2, strict_float(sqrt(folded)), norm_kind == kGeneralP,
                       general_root(folded), folded);

    // PyTorch's rule (SEMANTICS.md): a NaN norm does not exceed max_norm (NaN > x is false), and
    // an infinite norm scales the row by max_norm / inf = 0, so its infinite entries become NaN
    // and the rest 0. Under the kernels' fast-math flags a float compare may assume no NaN (AVX2
    // scaled NaN rows by a NaN factor) and a division no infinity, so the NaN test is on the
    // norm's bits and the compare and the scale are strict IEEE.
    Expr norm = norm_(k_);
    Expr exceeds = !embag_generators::is_nan_by_bits(norm) &&
                   strict_float(cast<double>(norm) > Expr(max_norm));
    Expr scale = cast(acc_type, strict_float(max_norm / (cast<double>(norm) + norm_epsilon)));
    Var d("d");
    // load_float / store_float keep NaN and infinity what they are where float16 conversions
    // are emulated (SSE4.1, NEON, armv7) or done in software (GPUs), so every ISA writes the
    // same bits.
    const Target target = get_target();
    Expr wide = embag_generators::load_float(weight(d, row), weight_type, acc_type, target);
    renormed(d, k_) = select(
        exceeds, embag_generators::store_float(strict_float(wide * scale), weight_type, target),
        weight(d, row));
    changed(k_) = cast<uint8_t>(exceeds);
    d_ = d;
  }

  void schedule() {
    Func out = renormed;
    if (get_target().has_gpu_feature()) {
      // Norms: a thread per row, folding its columns in order (the CPU's order, so the bits
      // match). Rescaled rows: a thread per (column, row).
      Var block("block"), thread("thread");
      Var d_block("d_block"), k_block("k_block"), d_thread("d_thread"), k_thread("k_thread");
      norm_.compute_root().gpu_tile(k_, block, thread, 64, TailStrategy::GuardWithIf);
      norm_fold_.compute_at(norm_, thread);
      norm_fold_.update().unscheduled();
      // Renormalised rows on blockIdx.x (gpu_tiles.h): their count is unbounded.
      embag_generators::gpu_tile_rows_on_x(out, d_, k_, d_block, k_block, d_thread, k_thread, 32,
                                           8);
      changed.gpu_tile(k_, block, thread, 64, TailStrategy::GuardWithIf);
      return;
    }
    const Type acc_type = accumulator_type();
    const int lanes = natural_vector_size(acc_type);
    Var task("task"), k_in("k_in");
    out.split(k_, task, k_in, rows_per_task, TailStrategy::GuardWithIf).parallel(task);
    out.specialize(weight_->dim(0).extent() >= lanes)
        .vectorize(d_, lanes, TailStrategy::GuardWithIf);

    // Norms are computed once per row into a small buffer, because both outputs read them.
    norm_.compute_root()
        .split(k_, task, k_in, rows_per_task, TailStrategy::GuardWithIf)
        .parallel(task);
    norm_fold_.compute_at(norm_, k_in);
    // Each norm kind gets its own branch, so the fold is one plain loop with no selects.
    for (NormKind kind : {kL2, kL1, kMaxAbs, kNonZeros, kMinAbs, kGeneralP}) {
      norm_fold_.specialize(norm_kind == kind);
      norm_fold_.update().specialize(norm_kind == kind);
      norm_.specialize(norm_kind == kind);
    }
    changed.split(k_, task, k_in, 1024, TailStrategy::GuardWithIf).parallel(task);
  }

 private:
  Type accumulator_type() const {
    return Float(embag::kernels::accumulator_bits(static_cast<Type>(weight_type).bits()));
  }

  Var k_{"k"}, d_{"d"};
  Func norm_fold_{"norm_fold"}, norm_{"norm"};
  Input<Buffer<>>* weight_ = nullptr;
};

}  // namespace

HALIDE_REGISTER_GENERATOR(EmbagRenorm, embag_renorm)
