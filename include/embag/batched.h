// Table-batched embedding bags: every table of a model in one call, and training steps with the
// optimizer fused into the backward pass (FBGEMM's SplitTableBatchedEmbeddingBagsCodegen, the
// compute kernel TorchRec uses, on embag's kernels). docs/batched.md has the design and examples.
//
// Shapes. T tables, F features, B bags per feature, N indices:
//   tables[t].weight       (V_t, D_t), one dtype for every table (float32, float16 or bfloat16);
//                          separate views, which may point into one flat buffer (FBGEMM's
//                          storage is the special case of views at its weights_offsets)
//   feature_table[f]       the table feature f looks up, in [0, T); several features may share
//                          a table (D_f = D of that table)
//   indices                (N) int32 / int64, every feature's indices one after another
//   offsets                (F*B + 1), indices' dtype, feature-major (TorchRec's KeyedJaggedTensor
//                          order): bag b of feature f is positions [off[f*B+b], off[f*B+b+1]);
//                          off[0] = 0, non-decreasing, off[F*B] <= N (positions past it are in
//                          no bag). B = (len(offsets) - 1) / F; with F = 0, B = output rows.
//   per_sample_weights     (N), the tables' dtype, optional; every feature's table must pool
//                          with sum then (weighted sum)
//   feature_columns[f]     first column of feature f's block in output and grad_output;
//                          empty = packed in feature order (column of f = sum of D_g, g < f).
//                          Blocks must lie inside the output and not overlap.
//   output / grad_output   (B, C), the tables' dtype, rows contiguous, any row stride >= C
//
// Forward: for each feature f (table t = feature_table[f]) and bag b,
//   output[b][feature_columns[f] + d] = what embag::forward gives for bag b of a single-table
//   call on table t with mode tables[t].mode and tables[t].padding_idx (embag.h, SEMANTICS.md):
//   sum / weighted sum / mean / max (max without argmax). The same compiled kernel runs on the
//   same bags, so the result is bitwise that of one embag::forward call per feature. Columns
//   outside every block are not written.
//
// Gradient terms (backward, both kinds). For each position p inside a bag b of feature f whose
// index r = indices[p] is not table t's padding index (t = feature_table[f]):
//   term(p)[d] = g[b][col_f + d]                 (sum)
//              = g[b][col_f + d] * psw[p]        (weighted sum)
//              = g[b][col_f + d] / n_b           (mean; n_b = valid positions of bag b of f)
//   G_t[r][d]  = fold(+, 0, term(p)[d]) over those p with table t and index r, in input order
//                (ascending p, i.e. feature-major then position), duplicates included.
//   Everything is computed in float32 (16-bit values widened exactly first).
//   Max tables have no batched backward (FBGEMM's TBE has no max pooling): refused.
//
// Every argument is validated before anything is written: a failed call leaves outputs, tables
// and optimizer state untouched, and its message names the feature and table, e.g.
// "feature 3 (table 1): index 1000 at position 17 is out of range for a table of 1000 rows".
// Results are bitwise identical for every thread count. The forward's are the single-table
// kernels' on the selected ISA (so ISA-independent exactly where those are); the gradients and
// fused updates do not depend on the ISA.
//
// GPUs (CUDA, OpenCL): batched_forward and batched_fused_backward (and their validate_*) run on
// the device when every tensor of the call is on it (all on one device), on Execution::stream
// as embag::forward does (docs/gpu.md). Their offsets and indices are copied to the host once
// and validated there (Execution::index_check is not consulted: the check is always made); the
// forward is then bitwise one embag::forward call per feature on that device, the fused update
// bitwise the CPU's (there each touched table's folded rows, (U_t, D_t) float32, and its new
// state are held in device scratch while its kernel runs). batched_backward and
// batched_sparse_gradient_rows are CPU only (GPU tensors: kUnsupported).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "embag/embag.h"
#include "embag/export.h"
#include "embag/status.h"
#include "embag/tensor.h"

namespace EMBAG_API embag {

// One table of a batched call.
struct BatchedTable {
  TensorView weight;                   // (V, D); updated in place by batched_fused_backward
  Mode mode = Mode::kSum;              // pooling of every feature that reads this table
  std::optional<int64_t> padding_idx;  // in [-V, V-1]; positions holding it are skipped
};

// Everything a batched forward reads (and a batched backward reads again).
struct BatchedInputs {
  std::vector<BatchedTable> tables;                // T
  std::vector<int64_t> feature_table;              // F: table of each feature
  TensorView indices;                              // (N) int32 / int64
  TensorView offsets;                              // (F*B + 1), indices' dtype
  const TensorView* per_sample_weights = nullptr;  // (N), tables' dtype; sum tables only
  std::vector<int64_t> feature_columns;            // F first columns, or empty: packed
};

// B, from the offsets' length and F (0 if they do not fit together: validate says why).
// With F = 0 it is 0 (the output's rows decide then).
int64_t batched_num_bags(const BatchedInputs& inputs);

// The output's minimum number of columns: the end of the last column block (sum of D_f when
// packed). 0 when the inputs are malformed (validate says why).
int64_t batched_output_columns(const BatchedInputs& inputs);

// Checks every rule without running anything (shapes, dtypes, devices, the feature map, column
// blocks, every offset and every index of every feature against its table).
Status validate_batched_forward(const BatchedInputs& inputs, const TensorView& output,
                                const Execution& execution = Execution());

// Runs the batched forward in one parallel pass. Validates first; on error nothing is written.
Status batched_forward(const BatchedInputs& inputs, const TensorView& output,
                       const Execution& execution = Execution());

// ---- Backward without an optimizer: per-table gradients ----------------------------------
//
// grads[t] for each table, as embag::backward gives them for table t called on the features
// reading it, gathered in feature order (bitwise: it is computed that way): dense
// grad_weight (V_t, D_t) = G_t with untouched rows 0, or sparse (rows strictly ascending,
// values (U_t, D_t)); in the table's dtype (float32 fold, rounded once).

struct BatchedTableGradient {
  const TensorView* grad_weight = nullptr;         // (V_t, D_t), dense
  const TensorView* grad_weight_rows = nullptr;    // (U_t) int64, sparse
  const TensorView* grad_weight_values = nullptr;  // (U_t, D_t), sparse
};

// U_t for every table: the distinct non-padding rows the bags of its features reference (what
// sizes a sparse gradient). Validates the inputs.
Status batched_sparse_gradient_rows(const BatchedInputs& inputs,
                                    std::vector<int64_t>* rows_per_table);

// Give every table either grad_weight (sparse = false) or grad_weight_rows + grad_weight_values
// (sparse = true); grads has T entries.
Status validate_batched_backward(const BatchedInputs& inputs, const TensorView& grad_output,
                                 const std::vector<BatchedTableGradient>& grads, bool sparse);
Status batched_backward(const BatchedInputs& inputs, const TensorView& grad_output,
                        const std::vector<BatchedTableGradient>& grads, bool sparse);

// ---- Backward with a fused optimizer --------------------------------------------------------
//
// For each table t and each row r with at least one term (and no other row), in place:
//   g = G_t[r] (float32, D values), w = tables[t].weight[r] widened to float32, lr, eps, ... the
//   config's values as float32. Every operation is one float32 operation, rounded, in the order
//   written, never fused (no FMA); sqrt is correctly rounded; sums over d run from d = 0 up.
//   The new w is rounded once to the table's dtype (round to nearest even).
//   SGD:               w[d] = w[d] - lr * g[d]
//   Adagrad:           m[r][d] = m[r][d] + g[d] * g[d]
//                      w[d] = w[d] - (lr * g[d]) / (sqrt(m[r][d]) + eps)
//   Row-wise Adagrad:  h[d] = g[d] + weight_decay * w[d]  (kL2),  h[d] = g[d] otherwise
//                      s = fold(+, 0, h[d] * h[d]) over d;  m[r] = m[r] + s / D
//                      mult = lr / (sqrt(m[r]) + eps)
//                      corr = 1 - mult * weight_decay (kL2), 1 - lr * weight_decay
//                             (kDecoupled), 1 (kNone)
//                      w[d] = corr * w[d] - g[d] * mult
//   Adam:              (t = step; c1 = 1 - pow(beta1, t), c2 = 1 - pow(beta2, t), float32 pow,
//                      computed once per call)
//                      m1[r][d] = m1[r][d] * beta1 + g[d] * (1 - beta1)
//                      m2[r][d] = m2[r][d] * beta2 + (g[d] * g[d]) * (1 - beta2)
//                      w[d] = w[d] - lr * ((m1[r][d] / c1) / (sqrt(m2[r][d] / c2) + eps)
//                                          + weight_decay * w[d])
// These are the formulas of FBGEMM's CPU TBE (fbgemm_gpu codegen, optimizers.py
// split_weight_update_cpu) for SGD, Adagrad and row-wise Adagrad, written in float32 as its CPU
// kernels compute them; Adam follows FBGEMM's GPU kernel (FBGEMM has no CPU Adam), with the
// multiply-adds unfused. Defaults are FBGEMM's (learning_rate 0.01, eps 1e-8, betas 0.9/0.999,
// no weight decay). Rows no position references are untouched (weights and state): the work
// grows with the batch, never with the tables, and no (V, D) or (U, D) gradient is written
// (rows are folded and updated a bounded chunk at a time).

enum class Optimizer : uint8_t { kSgd, kAdagrad, kRowwiseAdagrad, kAdam };
// "sgd", "adagrad", "rowwise_adagrad", "adam".
const char* optimizer_name(Optimizer optimizer);
std::optional<Optimizer> parse_optimizer(const std::string& name);

// FBGEMM's WeightDecayMode NONE / L2 / DECOUPLED; row-wise Adagrad only (Adam's weight_decay
// is always its decoupled term above; SGD and Adagrad have none, as in FBGEMM: a non-zero
// weight_decay with them is refused).
enum class WeightDecayMode : uint8_t { kNone, kL2, kDecoupled };

struct OptimizerConfig {
  Optimizer optimizer = Optimizer::kSgd;
  float learning_rate = 0.01f;
  float eps = 1.0e-8f;   // Adagrad, row-wise Adagrad, Adam
  float beta1 = 0.9f;    // Adam
  float beta2 = 0.999f;  // Adam
  float weight_decay = 0.0f;
  WeightDecayMode weight_decay_mode = WeightDecayMode::kNone;
  int64_t step = 1;  // Adam: t of this update, >= 1 (the caller counts: 1 on the first step)
};

// One table's optimizer state, float32, contiguous, owned by the caller (start it at zeros):
//   SGD: none (both views empty).  Adagrad: momentum1 (V, D).  Row-wise Adagrad: momentum1 (V).
//   Adam: momentum1 (V, D) and momentum2 (V, D).
// Features sharing a table share its state.
struct OptimizerState {
  TensorView momentum1;
  TensorView momentum2;
};

// The shapes of optimizer state a table of (rows, dim) needs: 0, 1 or 2 views, each (rows, dim)
// or (rows); ndim 0 for a view the optimizer does not use.
struct OptimizerStateShape {
  int ndim1 = 0;
  int64_t shape1[2] = {0, 0};
  int ndim2 = 0;
  int64_t shape2[2] = {0, 0};
};
OptimizerStateShape optimizer_state_shape(Optimizer optimizer, int64_t rows, int64_t dim);

// state has T entries. The tables must not overlap each other or the state (each row is
// updated by one thread).
Status validate_batched_fused_backward(const BatchedInputs& inputs, const TensorView& grad_output,
                                       const OptimizerConfig& config,
                                       const std::vector<OptimizerState>& state,
                                       const Execution& execution = Execution());
// One training step's backward: folds every touched row's gradient and applies the optimizer to
// it, in place on the tables and the state. Validates first; on error nothing is written.
Status batched_fused_backward(const BatchedInputs& inputs, const TensorView& grad_output,
                              const OptimizerConfig& config,
                              const std::vector<OptimizerState>& state,
                              const Execution& execution = Execution());

}  // namespace embag
