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
//   max_norm, norm_type  float64 scalars (norm_type: inf, -inf, 0 and any other p)
//   renormed (D, K)      the rows after renormalisation (weight's type)
//   changed (K) uint8    1 where the row's norm exceeded max_norm
#include <limits>

#include "Halide.h"

namespace {

using namespace Halide;

// A float64 constant (Halide's Expr has no implicit conversion from double).
Expr f64(double value) { return Internal::make_const(Float(64), value); }

class EmbagRenorm : public Generator<EmbagRenorm> {
 public:
  GeneratorParam<Type> weight_type{"weight_type", Float(32)};
  GeneratorParam<int> rows_per_task{"rows_per_task", 64};

  Input<Buffer<int64_t, 1>> rows{"rows"};
  Input<double> max_norm{"max_norm"};
  Input<double> norm_type{"norm_type"};
  Output<Func> renormed{"renormed", 2};
  Output<Buffer<uint8_t, 1>> changed{"changed"};

  void configure() {
    // The table's element type is a GeneratorParam, so it is added here; it comes first in the
    // argument list only after the statically declared rows input, which the runtime respects.
    weight_ = add_input<Buffer<>>("weight", weight_type, 2);
  }

  void generate() {
    const Type acc_type = accumulator_type();
    Input<Buffer<>>& weight = *weight_;
    Expr dim = weight.dim(0).extent();
    Expr row = unsafe_promise_clamped(cast<int32_t>(rows(k_)), 0, weight.dim(1).extent() - 1);

    RDom c(0, dim, "c");
    Expr x = abs(cast(acc_type, weight(c, row)));
    const double inf = std::numeric_limits<double>::infinity();
    Expr p = norm_type;
    Expr p_acc = cast(acc_type, p);

    // One fold per kind of norm; specialisations below make each branch a single plain loop.
    Expr is_inf = p == f64(inf), is_neg_inf = p == f64(-inf), is_zero = p == f64(0.0),
         is_one = p == f64(1.0), is_two = p == f64(2.0);
    Expr init = select(is_neg_inf, cast(acc_type, f64(inf)), cast(acc_type, 0));
    norm_fold_(k_) = init;
    Expr acc = norm_fold_(k_);
    Expr next = select(is_inf, max(acc, x),                                      //
                       is_neg_inf, min(acc, x),                                  //
                       is_zero, acc + select(x != 0, cast(acc_type, 1), cast(acc_type, 0)),
                       is_one, acc + x,                                          //
                       is_two, acc + x * x,                                      //
                       acc + pow(x, p_acc));
    norm_fold_(k_) = strict_float(next);

    Expr folded = norm_fold_(k_);
    Expr norm = select(is_inf || is_neg_inf || is_zero || is_one, folded,  //
                       is_two, sqrt(folded),                               //
                       // (the divisor is never 0 here; the select keeps Halide from folding 1/0
                       // in the p == 0 specialisation)
                       pow(folded, cast(acc_type, 1) / select(is_zero, cast(acc_type, 1), p_acc)));
    norm_(k_) = strict_float(norm);

    Expr exceeds = cast<double>(norm_(k_)) > Expr(max_norm);
    Expr scale = cast(acc_type, max_norm / (cast<double>(norm_(k_)) + f64(1e-7)));
    Var d("d");
    renormed(d, k_) = select(exceeds,
                             cast(weight_type, strict_float(cast(acc_type, weight(d, row)) * scale)),
                             weight(d, row));
    changed(k_) = cast<uint8_t>(exceeds);
    d_ = d;
  }

  void schedule() {
    const Type acc_type = accumulator_type();
    const int lanes = natural_vector_size(acc_type);
    const double inf = std::numeric_limits<double>::infinity();
    Func out = renormed;
    Var task("task"), k_in("k_in");
    out.split(k_, task, k_in, rows_per_task, TailStrategy::GuardWithIf).parallel(task);
    out.specialize(weight_->dim(0).extent() >= lanes).vectorize(d_, lanes, TailStrategy::GuardWithIf);

    // Norms are computed once per row into a small buffer, because both outputs read them.
    norm_.compute_root().split(k_, task, k_in, rows_per_task, TailStrategy::GuardWithIf).parallel(task);
    norm_fold_.compute_at(norm_, k_in);
    // Each norm kind gets its own branch, so the fold is one plain loop with no selects.
    for (double p : {2.0, 1.0, inf, 0.0, -inf}) {
      norm_fold_.update().specialize(norm_type == f64(p));
      norm_.specialize(norm_type == f64(p));
    }
    changed.split(k_, task, k_in, 1024, TailStrategy::GuardWithIf).parallel(task);
  }

 private:
  Type accumulator_type() const {
    const Type t = weight_type;
    return t.bits() == 64 ? Float(64) : Float(32);
  }

  Var k_{"k"}, d_{"d"};
  Func norm_fold_{"norm_fold"}, norm_{"norm"};
  Input<Buffer<>>* weight_ = nullptr;
};

}  // namespace

HALIDE_REGISTER_GENERATOR(EmbagRenorm, embag_renorm)
