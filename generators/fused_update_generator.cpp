// Halide generator for the table-batched fused backward on GPUs (include/embag/batched.h,
// "Backward with a fused optimizer"): for the touched rows of one table, fold each row's
// gradient over its positions in input order, then apply the optimizer to the row and its state
// in place. One kernel per optimizer (SGD, Adagrad, row-wise Adagrad, Adam) and table dtype.
//
// The runtime (runtime/gpu/gpu_batched.cpp) groups the batch's valid positions by (table, row)
// with the stable sort the CPU path uses and hands them over as arrays; a launch covers one
// table's rows, global row groups [first_row, first_row + num_rows):
//   segments (U + 1) int32: group u is sorted positions [segments[u], segments[u+1])
//   sorted_positions (M) int32: each sorted position's index into per_sample_weights
//   sorted_bags (M) int32: its bag as f * num_bags + b (f the feature, b the bag)
//   rows (U) int32: the table row of each group
//   feature_columns (F) int32: first grad_output column of each feature's block
//   bag_divisor (F * num_bags, or a 1-element stand-in) int32: mean's valid positions per bag
//   grad_output (C, B), per_sample_weights (N, or a stand-in), the table and its state.
// `pooling` (a kernels::Pooling value: sum, wsum or mean) picks the term of batched.h.
//
// Exactness: every step is one float32 operation in the order batched.h writes it, each
// product rounded on its own (exact_product: PTX mul.rn on CUDA, strict_float elsewhere) and
// sqrt correctly rounded, so the result is bitwise the CPU path's (runtime/batched_backward.cpp)
// and the reference's. Each row is folded by one thread per column, positions in input order.
//
// In place: `weight`, `momentum1`, `momentum2` are outputs that the runtime binds to the caller's
// table and state, and `weight_in`, `momentum1_in`, `momentum2_in` are the same memory as inputs.
// That is safe because every value read from an `_in` buffer is read by a stage that the
// output aliasing it depends on: the folded gradient (`gradient`, (D, rows)), row-wise Adagrad's
// `row_sum` and the new state (`new_momentum1/2`) are outputs of their own, in scratch the
// runtime allocates, each computed by its own kernel before the outputs that read them, and a
// weight element is read by the very thread that then writes it. The in-place outputs' pure
// definitions are undefined: rows no position touches are never written.
#include "Halide.h"
#include "float_bits.h"
#include "gpu_tiles.h"
#include "kernel_enums.h"

namespace {

using namespace Halide;
// (not `Pipeline`: a generator class sees Halide::Pipeline under that name)
using KernelFamily = embag::kernels::Pipeline;
using embag::kernels::Pooling;
using embag_generators::exact_product;
using embag_generators::load_float;
using embag_generators::storage_type;
using embag_generators::store_float;

// sqrt rounded to nearest. CUDA: NVVM's round-to-nearest intrinsic (PTX sqrt.rn), whatever
// flags Halide compiles the kernel with; elsewhere the plain sqrt under strict_float.
Expr exact_sqrt(const Expr& x, const Target& target) {
  if (target.has_feature(Target::CUDA)) {
    return Internal::Call::make(Float(32), "llvm.nvvm.sqrt.rn.f", {x}, Internal::Call::PureExtern);
  }
  return strict_float(sqrt(x));
}

class EmbagFusedUpdate : public Generator<EmbagFusedUpdate> {
 public:
  GeneratorParam<KernelFamily> optimizer{"optimizer", KernelFamily::kFusedSgd,
                                         embag::kernels::fused_optimizer_names()};
  GeneratorParam<Type> weight_type{"weight_type", Float(32)};

  Input<Buffer<int32_t, 1>> segments{"segments"};
  Input<Buffer<int32_t, 1>> sorted_positions{"sorted_positions"};
  Input<Buffer<int32_t, 1>> sorted_bags{"sorted_bags"};
  Input<Buffer<int32_t, 1>> rows{"rows"};
  Input<Buffer<int32_t, 1>> feature_columns{"feature_columns"};
  Input<Buffer<int32_t, 1>> bag_divisor{"bag_divisor"};
  Input<int32_t> first_row{"first_row"};
  Input<int32_t> num_rows{"num_rows"};
  Input<int32_t> num_bags{"num_bags"};
  Input<int32_t> pooling{"pooling"};
  // Every optimizer's hyper-parameters, so the runtime passes one argument list to each kernel.
  Input<float> learning_rate{"learning_rate"};
  Input<float> eps{"eps"};
  Input<float> beta1{"beta1"};
  Input<float> beta2{"beta2"};
  Input<float> weight_decay{"weight_decay"};
  Input<bool> l2_decay{"l2_decay"};
  Input<bool> decoupled_decay{"decoupled_decay"};
  // 1 - learning_rate * weight_decay (row-wise Adagrad's decoupled decay), computed on the host:
  // an expression of scalars only would be hoisted out of the GPU kernel into host code, where
  // exact_product's NVVM multiply cannot be compiled.
  Input<float> decoupled_correction{"decoupled_correction"};
  Input<float> bias_correction1{"bias_correction1"};
  Input<float> bias_correction2{"bias_correction2"};

  void configure() {
    const Type stored = storage_type(weight_type, get_target());
    grad_output_ = add_input<Buffer<>>("grad_output", stored, 2);
    per_sample_weights_ = add_input<Buffer<>>("per_sample_weights", stored, 1);
    weight_in_ = add_input<Buffer<>>("weight_in", stored, 2);
    if (optimizer != KernelFamily::kFusedSgd) {
      momentum1_in_ = add_input<Buffer<>>("momentum1_in", Float(32), state_dims());
    }
    if (optimizer == KernelFamily::kFusedAdam) {
      momentum2_in_ = add_input<Buffer<>>("momentum2_in", Float(32), 2);
    }
    // The intermediate stages are outputs too, into scratch the runtime allocates on the
    // call's stream: Halide then allocates no device memory of its own (its CUDA runtime would
    // allocate synchronously and cache the buffers past the call).
    gradient_output_ = add_output<Func>("gradient", Float(32), 2);
    if (optimizer == KernelFamily::kFusedRowwiseAdagrad) {
      row_sum_output_ = add_output<Func>("row_sum", Float(32), 1);
    }
    if (optimizer != KernelFamily::kFusedSgd) {
      new_m1_output_ = add_output<Func>("new_momentum1", Float(32), state_dims());
    }
    if (optimizer == KernelFamily::kFusedAdam) {
      new_m2_output_ = add_output<Func>("new_momentum2", Float(32), 2);
    }
    weight_ = add_output<Func>("weight", stored, 2);
    if (optimizer != KernelFamily::kFusedSgd) {
      momentum1_ = add_output<Func>("momentum1", Float(32), state_dims());
    }
    if (optimizer == KernelFamily::kFusedAdam) {
      momentum2_ = add_output<Func>("momentum2", Float(32), 2);
    }
  }

  void generate() {
    gradient_ = *gradient_output_;
    if (row_sum_output_ != nullptr) row_sum_ = *row_sum_output_;
    if (new_m1_output_ != nullptr) new_m1_ = *new_m1_output_;
    if (new_m2_output_ != nullptr) new_m2_ = *new_m2_output_;
    const Target target = get_target();
    const Type f32 = Float(32);
    const Type stored = storage_type(weight_type, target);
    Input<Buffer<>>& grad = *grad_output_;
    Input<Buffer<>>& psw = *per_sample_weights_;
    Input<Buffer<>>& weight_in = *weight_in_;
    Expr num_table_rows = weight_in.dim(1).extent();
    // (the scalar inputs as Exprs, so every operator below is Halide's Expr one)
    Expr first = first_row, bags_per_feature = num_bags, mode = pooling, lr = learning_rate;
    Expr epsilon = eps, b1 = beta1, b2 = beta2, decay = weight_decay, l2 = l2_decay;
    Expr decoupled = decoupled_decay, c1 = bias_correction1, c2 = bias_correction2;

    // The gradient of group k of this launch (batched.h, "Gradient terms").
    Expr group = first + k_;
    Expr begin = segments(group);
    Expr length = segments(group + 1) - begin;
    Expr num_sorted = sorted_bags.dim(0).extent();
    RDom j(0, num_sorted, "j");
    j.where(j < length);
    Expr at = unsafe_promise_clamped(begin + j, 0, num_sorted - 1);
    Expr bag_id = sorted_bags(at);
    Expr feature =
        unsafe_promise_clamped(bag_id / bags_per_feature, 0, feature_columns.dim(0).extent() - 1);
    Expr bag = unsafe_promise_clamped(bag_id % bags_per_feature, 0, grad.dim(1).extent() - 1);
    Expr column =
        unsafe_promise_clamped(feature_columns(feature) + d_, 0, grad.dim(0).extent() - 1);
    Expr g = load_float(grad(column, bag), weight_type, f32, target);
    // Real clamps: without weights (or without mean) these read a one-element stand-in, and
    // select evaluates every branch.
    Expr position = clamp(sorted_positions(at), 0, psw.dim(0).extent() - 1);
    Expr weight_of_position = load_float(psw(position), weight_type, f32, target);
    Expr divisor = cast(f32, bag_divisor(clamp(bag_id, 0, bag_divisor.dim(0).extent() - 1)));
    Expr term = select(mode == static_cast<int>(Pooling::kWeightedSum),
                       exact_product(g, weight_of_position, target),
                       mode == static_cast<int>(Pooling::kMean), strict_float(g / divisor), g);
    fold_(d_, k_) = cast(f32, 0);
    fold_(d_, k_) = strict_float(fold_(d_, k_) + term);
    gradient_(d_, k_) = fold_(d_, k_);

    Expr row = unsafe_promise_clamped(rows(group), 0, num_table_rows - 1);
    Expr w = load_float(weight_in(d_, row), weight_type, f32, target);
    Expr gd = gradient_(d_, k_);
    Expr new_w;
    switch (static_cast<KernelFamily>(optimizer)) {
      case KernelFamily::kFusedAdagrad: {
        new_m1_(d_, k_) = strict_float((*momentum1_in_)(d_, row) + exact_product(gd, gd, target));
        new_w = strict_float(w - exact_product(lr, gd, target) /
                                     (exact_sqrt(new_m1_(d_, k_), target) + epsilon));
        break;
      }
      case KernelFamily::kFusedRowwiseAdagrad: {
        // h = g + weight_decay * w with L2 decay; its squares summed over d from 0 up.
        Func h("h");
        h(d_, k_) = select(l2, strict_float(gd + exact_product(decay, w, target)), gd);
        RDom dd(0, weight_in.dim(0).extent(), "dd");
        sum_fold_(k_) = cast(f32, 0);
        sum_fold_(k_) = strict_float(sum_fold_(k_) + exact_product(h(dd, k_), h(dd, k_), target));
        row_sum_(k_) = sum_fold_(k_);
        new_m1_(k_) = strict_float((*momentum1_in_)(row) +
                                   row_sum_(k_) / cast(f32, weight_in.dim(0).extent()));
        Expr multiplier = strict_float(lr / (exact_sqrt(new_m1_(k_), target) + epsilon));
        Expr correction = select(l2, strict_float(1.0f - exact_product(multiplier, decay, target)),
                                 decoupled, Expr(decoupled_correction), cast(f32, 1.0f));
        new_w = strict_float(exact_product(correction, w, target) -
                             exact_product(gd, multiplier, target));
        break;
      }
      case KernelFamily::kFusedAdam: {
        Expr one_minus_beta1 = strict_float(1.0f - b1);
        Expr one_minus_beta2 = strict_float(1.0f - b2);
        new_m1_(d_, k_) = strict_float(exact_product((*momentum1_in_)(d_, row), b1, target) +
                                       exact_product(gd, one_minus_beta1, target));
        new_m2_(d_, k_) =
            strict_float(exact_product((*momentum2_in_)(d_, row), b2, target) +
                         exact_product(exact_product(gd, gd, target), one_minus_beta2, target));
        Expr step =
            strict_float((new_m1_(d_, k_) / c1) /
                             (exact_sqrt(strict_float(new_m2_(d_, k_) / c2), target) + epsilon) +
                         exact_product(decay, w, target));
        new_w = strict_float(w - exact_product(lr, step, target));
        break;
      }
      default:  // SGD
        new_w = strict_float(w - exact_product(lr, gd, target));
        break;
    }
    new_weight_(d_, k_) = store_float(new_w, weight_type, target);

    // The outputs: only the listed rows are written (undefined pure steps write nothing).
    Func weight = *weight_;
    RDom r(0, Expr(num_rows), "r");
    r_ = r;
    Expr out_row =
        unsafe_promise_clamped(rows(first + r), 0, weight.output_buffer().dim(1).extent() - 1);
    weight(d_, v_) = undef(stored);
    weight(d_, out_row) = new_weight_(d_, r);
    if (momentum1_ != nullptr) {
      Func m1 = *momentum1_;
      if (state_dims() == 1) {
        m1(v_) = undef(f32);
        m1(out_row) = new_m1_(r);
      } else {
        m1(d_, v_) = undef(f32);
        m1(d_, out_row) = new_m1_(d_, r);
      }
    }
    if (momentum2_ != nullptr) {
      Func m2 = *momentum2_;
      m2(d_, v_) = undef(f32);
      m2(d_, out_row) = new_m2_(d_, r);
    }
  }

  void schedule() {
    if (!get_target().has_gpu_feature()) {
      // (Not compiled into embag: the CPU path is runtime/batched_backward.cpp. A plain schedule
      // keeps the generator valid for any target.)
      fold_.compute_at(gradient_, d_);
      if (optimizer == KernelFamily::kFusedRowwiseAdagrad) sum_fold_.compute_at(row_sum_, k_);
      return;
    }
    // (gradient, row_sum, new_momentum1/2 are outputs: each its own kernel, run before the
    // outputs that read them.)
    // The folded gradient: a thread per (column, group), each folding its column over the
    // group's positions in order in a register (as embag_backward_rows does); groups on
    // blockIdx.x (gpu_tiles.h).
    tile_2d(gradient_);
    fold_.compute_at(gradient_, Var("d_thread"));
    fold_.update().unscheduled();
    if (optimizer == KernelFamily::kFusedRowwiseAdagrad) {
      // One thread per group sums its h*h over d in order.
      Var block("sum_block"), thread("sum_thread");
      row_sum_.gpu_tile(k_, block, thread, 64, TailStrategy::GuardWithIf);
      sum_fold_.compute_at(row_sum_, thread);
      sum_fold_.update().unscheduled();
      Var m_block("m_block"), m_thread("m_thread");
      new_m1_.gpu_tile(k_, m_block, m_thread, 64, TailStrategy::GuardWithIf);
    } else if (optimizer != KernelFamily::kFusedSgd) {
      tile_2d(new_m1_);
    }
    if (optimizer == KernelFamily::kFusedAdam) tile_2d(new_m2_);

    // The in-place writes, as embag_scatter_rows schedules its listed rows: the rows of one
    // launch are distinct (the runtime lists each once), so the writes of different r never
    // overlap, whatever Halide can prove.
    scatter_2d(*weight_);
    if (momentum1_ != nullptr) {
      if (state_dims() == 1) {
        scatter_1d(*momentum1_);
      } else {
        scatter_2d(*momentum1_);
      }
    }
    if (momentum2_ != nullptr) scatter_2d(*momentum2_);
  }

 private:
  int state_dims() const { return optimizer == KernelFamily::kFusedRowwiseAdagrad ? 1 : 2; }

  void tile_2d(Func f) {
    Var d_block("d_block"), k_block("k_block"), d_thread("d_thread"), k_thread("k_thread");
    embag_generators::gpu_tile_rows_on_x(f, d_, k_, d_block, k_block, d_thread, k_thread, 32, 8);
  }

  void scatter_2d(Func f) {
    // (The undefined pure step generates nothing, but must be a GPU step, or Halide expects
    // the buffer in host memory.)
    Var d_block("d_block"), v_block("v_block"), d_thread("d_thread"), v_thread("v_thread");
    embag_generators::gpu_tile_rows_on_x(f, d_, v_, d_block, v_block, d_thread, v_thread, 32, 8);
    Var dd_block("dd_block"), dd_thread("dd_thread");
    Stage write = f.update();
    write.specialize(Expr(num_rows) > 0)
        .allow_race_conditions()
        .split(d_, dd_block, dd_thread, 32, TailStrategy::GuardWithIf)
        .reorder(dd_thread, r_, dd_block)
        .gpu_blocks(r_, dd_block)
        .gpu_threads(dd_thread);
    // No row: one idle thread instead of an empty grid (which CUDA refuses).
    write.gpu_single_thread();
  }

  void scatter_1d(Func f) {
    Var v_block("v_block"), v_thread("v_thread");
    f.gpu_tile(v_, v_block, v_thread, 64, TailStrategy::GuardWithIf);
    RVar r_block("r_block"), r_thread("r_thread");
    Stage write = f.update();
    write.specialize(Expr(num_rows) > 0)
        .allow_race_conditions()
        .split(r_, r_block, r_thread, 64, TailStrategy::GuardWithIf)
        .gpu_blocks(r_block)
        .gpu_threads(r_thread);
    write.gpu_single_thread();
  }

  Var d_{"d"}, k_{"k"}, v_{"v"};
  RDom r_;
  Func fold_{"fold"}, gradient_{"gradient"}, sum_fold_{"sum_fold"}, row_sum_{"row_sum"};
  Func new_m1_{"new_m1"}, new_m2_{"new_m2"}, new_weight_{"new_weight"};
  Input<Buffer<>>* grad_output_ = nullptr;
  Input<Buffer<>>* per_sample_weights_ = nullptr;
  Input<Buffer<>>* weight_in_ = nullptr;
  Input<Buffer<>>* momentum1_in_ = nullptr;
  Input<Buffer<>>* momentum2_in_ = nullptr;
  Output<Func>* gradient_output_ = nullptr;
  Output<Func>* row_sum_output_ = nullptr;
  Output<Func>* new_m1_output_ = nullptr;
  Output<Func>* new_m2_output_ = nullptr;
  Output<Func>* weight_ = nullptr;
  Output<Func>* momentum1_ = nullptr;
  Output<Func>* momentum2_ = nullptr;
};

}  // namespace

HALIDE_REGISTER_GENERATOR(EmbagFusedUpdate, embag_fused_update)
