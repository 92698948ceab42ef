// bench_backward: embag::backward, dense and sparse gradients, against what PyTorch's CPU dense
// backward costs (zero-fill the whole table-sized gradient, then index-add every position).
//
// Run it from the build directory:
//   bench/bench_backward                                    # every shape in bench/shapes/perf.txt
//   bench/bench_backward --shapes=../bench/shapes/ci.txt    # tiny shapes, a few seconds
//   bench/bench_backward --shapes=../bench/shapes/backward.txt --benchmark_filter=sparse
//       --benchmark_repetitions=3 --benchmark_report_aggregates_only=true   (one line)
// Its own flags are taken out before Google Benchmark reads the rest:
//   --shapes=FILE   `rows,dim,bags,pooling,distribution` a line (default: perf.txt in the source)
//   --llc_mib=N     last-level cache size that decides cold or warm (default 32), as bench_forward
//
// Rows, each name ending in /real_time, for every shape x threads (1, 2):
//   embag/<mode>/sparse/rows:V/dim:D/bags:B/pool:L/<dist>/<cold|warm>/threads:N
//       sum and mean (max has no sparse gradient, in PyTorch or embag). One timed call is
//       embag::sparse_gradient_rows (U, to size the output) followed by embag::backward writing
//       U row ids and U x D values: a caller must make both calls, so both are timed. These rows
//       never allocate a (V, D) buffer: besides the table, memory is O(batch), which is what
//       the sparse gradient is for.
//   embag/<mode>/dense/...          sum, mean, max: embag::backward into a (V, D) gradient
//   pytorch_style_dense/<mode>/...  sum, mean, max: std::fill of the (V, D) gradient, then a
//       plain loop adding each position's grad_output row (mean: divided by the bag size; max:
//       each column to its argmax row) into its gradient row. Threads split the fill by rows
//       and the adds by column chunks of whole cache lines. PyTorch also sorts the indices and
//       builds offset2bag before adding, so this is a lower bound on PyTorch's time for the
//       same memory traffic.
//   embag/<mode>/train_<form>/...   one training step's embedding work: embag::forward (max: with
//       its argmax) then the backward row's calls (sparse: sparse_gradient_rows + backward)
//   pytorch/<mode>/<form>/...        PyTorch 2.x's aten._embedding_bag_backward on the same
//       memory, from the offset2bag / bag_size / max_indices of its own training forward
//       (computed before timing); sparse: followed by coalesce(), the form an optimizer takes
//   pytorch/<mode>/train_<form>/...  aten._embedding_bag then that backward
//   (pytorch rows only in builds configured with EMBAG_BENCH_TORCH_DIR: make bench-report;
//   torch.set_num_threads(N); checked within 1e-5 relative, as PyTorch does not promise embag's
//   summation order)
// Every call: float32 table, int64 indices, B+1 offsets (include_last_offset), every bag exactly
// L positions, grad_output (B, D) drawn from a fixed seed; for max, the argmax of each index
// batch comes from one embag::forward call during setup.
//
// Counters: GB/s = useful bytes per call / wall time, decimal (1e9), where useful bytes are
//   reads   sum, mean: per position its bag's grad_output row (D * 4) and its index (8), plus the
//                      B + 1 offsets (8 each)
//           max:       grad_output (B * D * 4) and argmax (B * D * 8), each once
//   writes  dense:     the whole gradient, V * D * 4 (untouched rows are written as zeros)
//           sparse:    U * D * 4 values + U * 8 row ids
// The read-modify-write of a touched row while accumulating is not counted: it stays in cache
// for repeated rows and is an implementation cost, not work the result needs. For sparse rows,
// U is the average number of distinct rows over the batches cycled (also a counter), and
// sizing_us is the time per call spent in sparse_gradient_rows. The label is the kernel variant
// (embag::last_variant()), or "pytorch_style_dense_<mode>_f32_i64".
//
// Cold: the table (and so a dense gradient) is larger than half the LLC; indices are drawn over
// the whole table and the timed loop cycles through 8 index batches. Warm: the table fits; one
// batch. Data and seeds are bench_forward's (bench_data.h), so runs reproduce.
//
// Before timing, every row checks its result for the first batch against a plain loop that adds
// each contribution in input order, the order SEMANTICS.md prescribes: the maximum absolute
// difference must be 0. The outputs are filled with NaN first, so a dense gradient whose
// untouched rows are not zeroed fails too. A mismatch skips the row with an error naming the
// first differing element, and the program then exits with status 1.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "bench_data.h"
#include "bench_main_support.h"
#include "embag/embag.h"
#include "shape_file.h"
#include "thread_pool.h"

#ifdef EMBAG_BENCH_HAVE_TORCH
#include "torch_peer.h"
#endif

#ifndef EMBAG_BENCH_DEFAULT_SHAPES
#define EMBAG_BENCH_DEFAULT_SHAPES "bench/shapes/perf.txt"
#endif

namespace {

using embag::Mode;
using embag::bench::AlignedFloats;
using embag::bench::Distribution;
using embag::bench::kZipfExponent;
using embag::bench::Rng;
using embag::bench::seed_for;
using embag::bench::Shape;
using embag::bench::ZipfSampler;

enum class Form : uint8_t { kDense, kSparse };

constexpr int kColdBatches = 8;
constexpr int kThreadCounts[] = {1, 2};
constexpr Mode kModes[] = {Mode::kSum, Mode::kMean, Mode::kMax};
// The check before timing uses batch 0; timing starts at the next one so that its first call
// does not find batch 0's rows still in cache.
constexpr size_t kFirstTimedBatch = 1;
// grad_output's seed salt; 0 is the table and 1..8 the index batches (as in bench_forward).
constexpr uint64_t kGradOutputSalt = 100;
// 16 floats: the pytorch-style loop gives each thread whole cache lines of every row.
constexpr int64_t kFloatsPerLine = 16;

int64_t g_llc_bytes = int64_t{32} << 20;

// Rows that failed a check; main() exits non-zero if any did, so the CI run of the tiny shapes
// catches a backward that disagrees with the semantics.
int g_failures = 0;

void fail(benchmark::State& state, const std::string& message) {
  ++g_failures;
  state.SkipWithError(message.c_str());
}

bool is_cold(const Shape& shape) { return embag::bench::is_cold_shape(shape, g_llc_bytes); }

const char* form_name(Form form) { return form == Form::kDense ? "dense" : "sparse"; }

embag::bench::ThreadPool& pool() {
  static embag::bench::ThreadPool instance;
  return instance;
}

// ---- Data ----------------------------------------------------------------------------------

// One shape's data. Only one lives at a time (a 10^7 x 64 table is 2.5 GiB) and the rows of a
// shape are registered together, so the table is built once per shape.
struct Dataset {
  Shape shape;
  bool cold = false;
  // backward reads the table only for grad_per_sample_weights (not benchmarked), but the call
  // takes its view and max's setup forward reads it, so a real table must exist.
  AlignedFloats table;
  std::vector<std::vector<int64_t>> batches;  // index batches the timed loop cycles through
  std::vector<int64_t> offsets;               // bags + 1 entries, shared by every batch
  std::vector<float> grad_output;             // bags x dim, shared by every batch
  // Mode max: each batch's (B, D) argmax, from embag::forward; built by the first max row.
  std::vector<std::vector<int64_t>> argmax;
  // (V, D): built by the first dense row and freed by every sparse row.
  AlignedFloats dense_grad;
};

std::unique_ptr<Dataset> g_dataset;

// Builds (or reuses) the current shape's data; on failure reports it on `state` and returns null.
Dataset* dataset_for(const Shape& shape, benchmark::State& state) {
  if (g_dataset && g_dataset->shape.same_problem(shape)) return g_dataset.get();
  g_dataset.reset();  // free the previous table (and gradient) before allocating the next

  auto ds = std::make_unique<Dataset>();
  ds->shape = shape;
  ds->cold = is_cold(shape);
  embag::bench::GatherData data;
  if (!embag::bench::make_gather_data(shape, ds->cold ? kColdBatches : 1, &data)) {
    const int64_t bytes = shape.rows * shape.dim * 4;
    fail(state, "cannot allocate the " + std::to_string(bytes >> 20) + " MiB table");
    return nullptr;
  }
  ds->table = std::move(data.table);
  ds->offsets = std::move(data.offsets);
  ds->batches = std::move(data.batches);

  Rng grads(seed_for(shape, kGradOutputSalt));
  ds->grad_output.resize(static_cast<size_t>(shape.bags * shape.dim));
  for (float& g : ds->grad_output) g = grads.symmetric_unit();

  g_dataset = std::move(ds);
  return g_dataset.get();
}

// Runs embag::forward in mode max once per batch to get the argmax backward needs.
bool ensure_argmax(Dataset& ds, benchmark::State& state) {
  if (!ds.argmax.empty()) return true;
  const Shape& s = ds.shape;
  std::vector<float> output(static_cast<size_t>(s.bags * s.dim));
  std::vector<std::vector<int64_t>> argmax(ds.batches.size());
  embag::TensorView offsets =
      embag::make_view_1d(ds.offsets.data(), embag::DType::kInt64, s.bags + 1);
  embag::Options options;
  options.mode = Mode::kMax;
  options.include_last_offset = true;
  for (size_t k = 0; k < ds.batches.size(); ++k) {
    argmax[k].resize(static_cast<size_t>(s.bags * s.dim));
    embag::TensorView argmax_view =
        embag::make_view_2d(argmax[k].data(), embag::DType::kInt64, s.bags, s.dim);
    embag::ForwardInputs in;
    in.weight = embag::make_view_2d(ds.table.get(), embag::DType::kFloat32, s.rows, s.dim);
    in.input = embag::make_view_1d(ds.batches[k].data(), embag::DType::kInt64,
                                   static_cast<int64_t>(ds.batches[k].size()));
    in.offsets = &offsets;
    embag::ForwardOutputs out;
    out.output = embag::make_view_2d(output.data(), embag::DType::kFloat32, s.bags, s.dim);
    out.argmax = &argmax_view;
    const embag::Status status = embag::forward(in, out, options);
    if (!status.ok()) {
      fail(state, "embag::forward (for argmax) failed: " + status.message());
      return false;
    }
  }
  ds.argmax = std::move(argmax);
  return true;
}

bool ensure_dense_grad(Dataset& ds, benchmark::State& state) {
  if (ds.dense_grad) return true;
  const int64_t elements = ds.shape.rows * ds.shape.dim;
  ds.dense_grad = embag::bench::allocate_floats(elements);
  if (!ds.dense_grad) {
    fail(state,
         "cannot allocate the " + std::to_string((elements * 4) >> 20) + " MiB dense gradient");
    return false;
  }
  return true;
}

// Useful bytes per call (see the header comment); `unique_rows` only matters for sparse.
double bytes_per_call(const Shape& s, Mode mode, Form form, double unique_rows) {
  const double positions = static_cast<double>(s.bags * s.pooling);
  const double reads =
      mode == Mode::kMax
          ? static_cast<double>(s.bags * s.dim) * (sizeof(float) + sizeof(int64_t))
          : positions * static_cast<double>(s.dim * sizeof(float) + sizeof(int64_t)) +
                static_cast<double>(s.bags + 1) * sizeof(int64_t);
  const double writes =
      form == Form::kDense
          ? static_cast<double>(s.rows * s.dim) * sizeof(float)
          : unique_rows * static_cast<double>(s.dim * sizeof(float) + sizeof(int64_t));
  return reads + writes;
}

// ---- The gradient by the book, and comparisons ---------------------------------------------

// A gradient in coalesced sparse form: ascending distinct rows and one value row each.
struct SparseGradient {
  std::vector<int64_t> rows;
  std::vector<float> values;  // rows.size() x dim
};

// SEMANTICS.md's backward for batch `batch`, adding each contribution in input order (max: in
// bag order per column). Memory is O(batch), so it also checks 10^7-row tables cheaply.
SparseGradient expected_gradient(const Dataset& ds, size_t batch, Mode mode) {
  const Shape& s = ds.shape;
  const int64_t dim = s.dim;
  const std::vector<int64_t>& source = mode == Mode::kMax ? ds.argmax[batch] : ds.batches[batch];
  SparseGradient want;
  for (int64_t r : source) {
    if (r >= 0) want.rows.push_back(r);  // argmax is -1 for empty bags
  }
  std::sort(want.rows.begin(), want.rows.end());
  want.rows.erase(std::unique(want.rows.begin(), want.rows.end()), want.rows.end());
  want.values.assign(want.rows.size() * static_cast<size_t>(dim), 0.0f);
  auto slot = [&](int64_t r) {
    return static_cast<size_t>(std::lower_bound(want.rows.begin(), want.rows.end(), r) -
                               want.rows.begin()) *
           static_cast<size_t>(dim);
  };
  const float* g = ds.grad_output.data();
  for (int64_t b = 0; b < s.bags; ++b) {
    const float* gb = g + b * dim;
    if (mode == Mode::kMax) {
      for (int64_t d = 0; d < dim; ++d) {
        const int64_t r = source[static_cast<size_t>(b * dim + d)];
        if (r >= 0) want.values[slot(r) + static_cast<size_t>(d)] += gb[d];
      }
      continue;
    }
    const int64_t begin = ds.offsets[static_cast<size_t>(b)];
    const int64_t end = ds.offsets[static_cast<size_t>(b) + 1];
    const float count = static_cast<float>(end - begin);
    for (int64_t p = begin; p < end; ++p) {
      float* row = &want.values[slot(source[static_cast<size_t>(p)])];
      for (int64_t d = 0; d < dim; ++d) row[d] += mode == Mode::kMean ? gb[d] / count : gb[d];
    }
  }
  return want;
}

// Collects differences between a result and the expected gradient; equal means ==, so -0 and
// +0 agree and a NaN left from the fill never does.
class Diff {
 public:
  // tolerance: relative (to max(1, |want|)); 0 for embag, which must match bit for bit.
  explicit Diff(double tolerance = 0) : tolerance_(tolerance) {}
  void check(int64_t row, int64_t col, float got, float want) {
    if (got == want) return;
    if (tolerance_ > 0 && std::fabs(static_cast<double>(got) - want) <=
                              tolerance_ * std::max(1.0, std::fabs(static_cast<double>(want)))) {
      return;
    }
    const double diff = std::fabs(static_cast<double>(got) - static_cast<double>(want));
    if (first_row_ < 0) {
      first_row_ = row;
      first_col_ = col;
      first_got_ = got;
      first_want_ = want;
    }
    max_diff_ =
        std::isnan(diff) || std::isnan(max_diff_) ? std::nan("") : std::max(max_diff_, diff);
  }
  void note(const std::string& message) {
    if (other_.empty()) other_ = message;
  }
  // Empty when nothing differed.
  std::string message(const char* who) const {
    if (!other_.empty()) return std::string(who) + ": " + other_;
    if (first_row_ < 0) return "";
    char text[320];
    std::snprintf(text, sizeof(text),
                  "%s differs from the in-order loop: first at row %lld column %lld (%.9g vs "
                  "%.9g), max abs diff %.9g; contributions must be added in input order%s",
                  who, static_cast<long long>(first_row_), static_cast<long long>(first_col_),
                  first_got_, first_want_, max_diff_,
                  tolerance_ > 0 ? " (within the tolerance given)" : "");
    return text;
  }

 private:
  int64_t first_row_ = -1;
  int64_t first_col_ = 0;
  float first_got_ = 0;
  float first_want_ = 0;
  double max_diff_ = 0;
  double tolerance_ = 0;
  std::string other_;
};

// A (V, D) gradient: the expected rows must match and every other row must be zero.
std::string compare_dense(const float* grad, const Shape& s, const SparseGradient& want,
                          const char* who, double tolerance = 0) {
  Diff diff(tolerance);
  size_t next = 0;  // next expected row, ascending
  for (int64_t r = 0; r < s.rows; ++r) {
    const bool touched = next < want.rows.size() && want.rows[next] == r;
    const float* w = touched ? &want.values[next * static_cast<size_t>(s.dim)] : nullptr;
    for (int64_t d = 0; d < s.dim; ++d) diff.check(r, d, grad[r * s.dim + d], w ? w[d] : 0.0f);
    if (touched) ++next;
  }
  return diff.message(who);
}

std::string compare_sparse(const int64_t* rows, int64_t unique, const float* values, const Shape& s,
                           const SparseGradient& want, const char* who = "embag",
                           double tolerance = 0) {
  Diff diff(tolerance);
  if (unique != static_cast<int64_t>(want.rows.size())) {
    diff.note("sparse_gradient_rows gave " + std::to_string(unique) + " rows, expected " +
              std::to_string(want.rows.size()));
    return diff.message(who);
  }
  for (int64_t k = 0; k < unique; ++k) {
    const int64_t want_row = want.rows[static_cast<size_t>(k)];
    if (rows[k] != want_row) {
      diff.note("row id " + std::to_string(k) + " is " + std::to_string(rows[k]) + ", expected " +
                std::to_string(want_row) + " (ids must be the distinct rows, ascending)");
      return diff.message(who);
    }
    for (int64_t d = 0; d < s.dim; ++d) {
      diff.check(want_row, d, values[k * s.dim + d],
                 want.values[static_cast<size_t>(k * s.dim + d)]);
    }
  }
  return diff.message(who);
}

void fill_nan(float* data, int64_t n) {
  std::fill(data, data + n, std::numeric_limits<float>::quiet_NaN());
}

// ---- PyTorch-style dense backward ----------------------------------------------------------

// Adds columns [d0, d1) of every contribution of `batch` into `grad`, in input order.
void index_add_columns(const Dataset& ds, size_t batch, Mode mode, float* grad, int64_t d0,
                       int64_t d1) {
  const int64_t dim = ds.shape.dim;
  const float* g = ds.grad_output.data();
  if (mode == Mode::kMax) {
    const int64_t* argmax = ds.argmax[batch].data();
    for (int64_t b = 0; b < ds.shape.bags; ++b) {
      for (int64_t d = d0; d < d1; ++d) {
        const int64_t r = argmax[b * dim + d];
        if (r >= 0) grad[r * dim + d] += g[b * dim + d];
      }
    }
    return;
  }
  const int64_t* idx = ds.batches[batch].data();
  // Mean: the bag's row divided once per bag, not once per position (PyTorch scales likewise).
  std::vector<float> scaled(mode == Mode::kMean ? static_cast<size_t>(dim) : 0);
  for (int64_t b = 0; b < ds.shape.bags; ++b) {
    const int64_t begin = ds.offsets[static_cast<size_t>(b)];
    const int64_t end = ds.offsets[static_cast<size_t>(b) + 1];
    if (begin == end) continue;
    const float* term = g + b * dim;
    if (mode == Mode::kMean) {
      const float count = static_cast<float>(end - begin);
      for (int64_t d = d0; d < d1; ++d) scaled[static_cast<size_t>(d)] = term[d] / count;
      term = scaled.data();
    }
    for (int64_t p = begin; p < end; ++p) {
      float* row = grad + idx[p] * dim;
      for (int64_t d = d0; d < d1; ++d) row[d] += term[d];
    }
  }
}

void pytorch_style_dense(const Dataset& ds, size_t batch, Mode mode, float* grad, int threads) {
  const int64_t rows = ds.shape.rows;
  const int64_t dim = ds.shape.dim;
  // The zero fill: one contiguous block of rows per thread.
  pool().run(threads, [&](int t) {
    const int64_t r0 = rows * t / threads;
    const int64_t r1 = rows * (t + 1) / threads;
    std::fill(grad + r0 * dim, grad + r1 * dim, 0.0f);
  });
  // The adds: columns split in whole cache lines, so no two threads write the same line and
  // each column still receives its contributions in input order.
  const int64_t per_thread = (dim + threads - 1) / threads;
  const int64_t chunk = (per_thread + kFloatsPerLine - 1) / kFloatsPerLine * kFloatsPerLine;
  pool().run(threads, [&](int t) {
    const int64_t d0 = std::min(dim, chunk * t);
    const int64_t d1 = std::min(dim, d0 + chunk);
    if (d0 < d1) index_add_columns(ds, batch, mode, grad, d0, d1);
  });
}

// ---- The rows ------------------------------------------------------------------------------

// embag's views for every batch. The inputs point into this struct: build it in place.
struct BackwardCalls {
  embag::TensorView offsets;
  std::vector<embag::TensorView> argmax;  // one per batch, mode max only
  std::vector<embag::BackwardInputs> inputs;
  embag::Options options;
};

void make_calls(Dataset& ds, Mode mode, Form form, BackwardCalls* calls) {
  const Shape& s = ds.shape;
  calls->offsets = embag::make_view_1d(ds.offsets.data(), embag::DType::kInt64, s.bags + 1);
  calls->argmax.clear();
  if (mode == Mode::kMax) {
    for (std::vector<int64_t>& a : ds.argmax) {
      calls->argmax.push_back(embag::make_view_2d(a.data(), embag::DType::kInt64, s.bags, s.dim));
    }
  }
  calls->inputs.clear();
  for (size_t k = 0; k < ds.batches.size(); ++k) {
    embag::BackwardInputs in;
    in.weight = embag::make_view_2d(ds.table.get(), embag::DType::kFloat32, s.rows, s.dim);
    in.input = embag::make_view_1d(ds.batches[k].data(), embag::DType::kInt64,
                                   static_cast<int64_t>(ds.batches[k].size()));
    in.offsets = &calls->offsets;
    in.grad_output =
        embag::make_view_2d(ds.grad_output.data(), embag::DType::kFloat32, s.bags, s.dim);
    if (mode == Mode::kMax) in.argmax = &calls->argmax[k];
    calls->inputs.push_back(in);
  }
  calls->options.mode = mode;
  calls->options.sparse = form == Form::kSparse;
  calls->options.include_last_offset = true;
}

void report(benchmark::State& state, double bytes, const std::string& variant) {
  // Iteration-invariant rate: bytes per call x iterations / wall time (UseRealTime below).
  state.counters["GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(variant);
}

void bench_embag_dense(benchmark::State& state, const Shape& shape, Mode mode, int threads) {
  Dataset* ds = dataset_for(shape, state);
  if (!ds) return;
  if (mode == Mode::kMax && !ensure_argmax(*ds, state)) return;
  if (!ensure_dense_grad(*ds, state)) return;
  embag::set_num_threads(threads);
  BackwardCalls calls;
  make_calls(*ds, mode, Form::kDense, &calls);
  embag::TensorView grad_view =
      embag::make_view_2d(ds->dense_grad.get(), embag::DType::kFloat32, shape.rows, shape.dim);
  embag::BackwardOutputs outputs;
  outputs.grad_weight = &grad_view;

  fill_nan(ds->dense_grad.get(), shape.rows * shape.dim);
  embag::Status status = embag::backward(calls.inputs[0], outputs, calls.options);
  if (!status.ok()) {
    fail(state, "embag::backward failed: " + status.message());
    return;
  }
  const std::string mismatch =
      compare_dense(ds->dense_grad.get(), shape, expected_gradient(*ds, 0, mode), "embag");
  if (!mismatch.empty()) {
    fail(state, mismatch);
    return;
  }
  const std::string variant = embag::last_variant();

  size_t batch = kFirstTimedBatch % calls.inputs.size();
  for (auto _ : state) {
    status = embag::backward(calls.inputs[batch], outputs, calls.options);
    if (!status.ok()) {
      fail(state, "embag::backward failed: " + status.message());
      break;
    }
    batch = batch + 1 == calls.inputs.size() ? 0 : batch + 1;
  }
  benchmark::ClobberMemory();
  report(state, bytes_per_call(shape, mode, Form::kDense, 0), variant);
}

void bench_embag_sparse(benchmark::State& state, const Shape& shape, Mode mode, int threads) {
  Dataset* ds = dataset_for(shape, state);
  if (!ds) return;
  // The point of a sparse gradient is that its cost follows the batch, not the table: only the
  // table may be table-sized here.
  ds->dense_grad.reset();
  embag::set_num_threads(threads);
  BackwardCalls calls;
  make_calls(*ds, mode, Form::kSparse, &calls);

  // U per batch, to size the output buffers once; the timed loop asks again, as a caller must.
  std::vector<int64_t> unique(calls.inputs.size());
  for (size_t k = 0; k < calls.inputs.size(); ++k) {
    const embag::Status status =
        embag::sparse_gradient_rows(calls.inputs[k], calls.options, &unique[k]);
    if (!status.ok()) {
      fail(state, "embag::sparse_gradient_rows failed: " + status.message());
      return;
    }
  }
  const int64_t capacity = std::max<int64_t>(1, *std::max_element(unique.begin(), unique.end()));
  std::vector<int64_t> rows(static_cast<size_t>(capacity));
  std::vector<float> values(static_cast<size_t>(capacity * shape.dim));
  embag::TensorView rows_view;
  embag::TensorView values_view;
  embag::BackwardOutputs outputs;
  outputs.grad_weight_rows = &rows_view;
  outputs.grad_weight_values = &values_view;
  auto point_outputs = [&](int64_t u) {
    rows_view = embag::make_view_1d(rows.data(), embag::DType::kInt64, u);
    values_view = embag::make_view_2d(values.data(), embag::DType::kFloat32, u, shape.dim);
  };

  std::fill(rows.begin(), rows.end(), -1);
  fill_nan(values.data(), static_cast<int64_t>(values.size()));
  point_outputs(unique[0]);
  embag::Status status = embag::backward(calls.inputs[0], outputs, calls.options);
  if (!status.ok()) {
    fail(state, "embag::backward failed: " + status.message());
    return;
  }
  const std::string mismatch =
      compare_sparse(rows.data(), unique[0], values.data(), shape, expected_gradient(*ds, 0, mode));
  if (!mismatch.empty()) {
    fail(state, mismatch);
    return;
  }
  const std::string variant = embag::last_variant();

  using Clock = std::chrono::steady_clock;
  Clock::duration sizing{};  // two clock reads a call: tens of ns against calls of 10 us and up
  size_t batch = kFirstTimedBatch % calls.inputs.size();
  for (auto _ : state) {
    const Clock::time_point start = Clock::now();
    int64_t u = 0;
    status = embag::sparse_gradient_rows(calls.inputs[batch], calls.options, &u);
    sizing += Clock::now() - start;
    if (!status.ok() || u > capacity) {
      fail(state, status.ok() ? "sparse_gradient_rows changed its answer between calls"
                              : "embag::sparse_gradient_rows failed: " + status.message());
      break;
    }
    point_outputs(u);
    status = embag::backward(calls.inputs[batch], outputs, calls.options);
    if (!status.ok()) {
      fail(state, "embag::backward failed: " + status.message());
      break;
    }
    batch = batch + 1 == calls.inputs.size() ? 0 : batch + 1;
  }
  benchmark::ClobberMemory();

  double mean_unique = 0;
  for (int64_t u : unique) mean_unique += static_cast<double>(u);
  mean_unique /= static_cast<double>(unique.size());
  report(state, bytes_per_call(shape, mode, Form::kSparse, mean_unique), variant);
  state.counters["U"] = mean_unique;
  state.counters["sizing_us"] =
      benchmark::Counter(std::chrono::duration<double, std::micro>(sizing).count(),
                         benchmark::Counter::kAvgIterations);
}

void bench_pytorch_style(benchmark::State& state, const Shape& shape, Mode mode, int threads) {
  Dataset* ds = dataset_for(shape, state);
  if (!ds) return;
  if (mode == Mode::kMax && !ensure_argmax(*ds, state)) return;
  if (!ensure_dense_grad(*ds, state)) return;
  float* grad = ds->dense_grad.get();

  // Checked like embag, so that the comparison row is known to compute the same gradient.
  fill_nan(grad, shape.rows * shape.dim);
  pytorch_style_dense(*ds, 0, mode, grad, threads);
  const std::string mismatch =
      compare_dense(grad, shape, expected_gradient(*ds, 0, mode), "pytorch_style_dense");
  if (!mismatch.empty()) {
    fail(state, mismatch);
    return;
  }

  size_t batch = kFirstTimedBatch % ds->batches.size();
  for (auto _ : state) {
    pytorch_style_dense(*ds, batch, mode, grad, threads);
    batch = batch + 1 == ds->batches.size() ? 0 : batch + 1;
  }
  benchmark::ClobberMemory();
  report(state, bytes_per_call(shape, mode, Form::kDense, 0),
         std::string("pytorch_style_dense_") + embag::mode_name(mode) + "_f32_i64");
}

// Bytes of one forward call (bench_forward's count), for the training-step rows.
double forward_bytes(const Shape& s) {
  const double positions = static_cast<double>(s.bags * s.pooling);
  return positions * static_cast<double>(s.dim * sizeof(float) + sizeof(int64_t)) +
         static_cast<double>(s.bags + 1) * sizeof(int64_t) +
         static_cast<double>(s.bags * s.dim) * sizeof(float);
}

// Distinct rows in one index batch.
int64_t distinct_rows(const std::vector<int64_t>& batch) {
  std::vector<int64_t> rows(batch);
  std::sort(rows.begin(), rows.end());
  return std::unique(rows.begin(), rows.end()) - rows.begin();
}

// The mean number of distinct rows per batch (U of the sparse rows' byte count).
double mean_unique_rows(const Dataset& ds) {
  double total = 0;
  for (const std::vector<int64_t>& batch : ds.batches) {
    total += static_cast<double>(distinct_rows(batch));
  }
  return total / static_cast<double>(ds.batches.size());
}

void bench_embag_train(benchmark::State& state, const Shape& shape, Mode mode, Form form,
                       int threads) {
  Dataset* ds = dataset_for(shape, state);
  if (!ds) return;
  if (form == Form::kSparse) ds->dense_grad.reset();
  if (form == Form::kDense && !ensure_dense_grad(*ds, state)) return;
  embag::set_num_threads(threads);
  const Shape& s = shape;
  std::vector<float> output(static_cast<size_t>(s.bags * s.dim));
  std::vector<int64_t> argmax(mode == Mode::kMax ? output.size() : 0);
  embag::TensorView offsets =
      embag::make_view_1d(ds->offsets.data(), embag::DType::kInt64, s.bags + 1);
  embag::TensorView argmax_view =
      embag::make_view_2d(argmax.data(), embag::DType::kInt64, s.bags, s.dim);
  embag::ForwardOutputs forward_out;
  forward_out.output = embag::make_view_2d(output.data(), embag::DType::kFloat32, s.bags, s.dim);
  if (mode == Mode::kMax) forward_out.argmax = &argmax_view;
  embag::Options options;
  options.mode = mode;
  options.include_last_offset = true;
  options.sparse = form == Form::kSparse;

  // Sparse outputs sized for the largest batch.
  int64_t capacity = 1;
  for (const std::vector<int64_t>& batch : ds->batches) {
    capacity = std::max(capacity, distinct_rows(batch));
  }
  std::vector<int64_t> rows(form == Form::kSparse ? static_cast<size_t>(capacity) : 0);
  std::vector<float> values(form == Form::kSparse ? static_cast<size_t>(capacity * s.dim) : 0);
  embag::TensorView rows_view, values_view;
  embag::TensorView grad_view;
  embag::BackwardOutputs backward_out;
  if (form == Form::kDense) {
    grad_view = embag::make_view_2d(ds->dense_grad.get(), embag::DType::kFloat32, s.rows, s.dim);
    backward_out.grad_weight = &grad_view;
  } else {
    backward_out.grad_weight_rows = &rows_view;
    backward_out.grad_weight_values = &values_view;
  }

  auto step = [&](size_t batch) -> embag::Status {
    embag::ForwardInputs in;
    in.weight = embag::make_view_2d(ds->table.get(), embag::DType::kFloat32, s.rows, s.dim);
    in.input = embag::make_view_1d(ds->batches[batch].data(), embag::DType::kInt64,
                                   static_cast<int64_t>(ds->batches[batch].size()));
    in.offsets = &offsets;
    if (embag::Status st = embag::forward(in, forward_out, options); !st.ok()) return st;
    embag::BackwardInputs back;
    back.weight = in.weight;
    back.input = in.input;
    back.offsets = &offsets;
    back.grad_output =
        embag::make_view_2d(ds->grad_output.data(), embag::DType::kFloat32, s.bags, s.dim);
    if (mode == Mode::kMax) back.argmax = &argmax_view;
    if (form == Form::kSparse) {
      int64_t u = 0;
      if (embag::Status st = embag::sparse_gradient_rows(back, options, &u); !st.ok()) return st;
      rows_view = embag::make_view_1d(rows.data(), embag::DType::kInt64, u);
      values_view = embag::make_view_2d(values.data(), embag::DType::kFloat32, u, s.dim);
    }
    return embag::backward(back, backward_out, options);
  };
  // Checked through the backward rows' own checks: here only that every call succeeds.
  embag::Status status = step(0);
  if (!status.ok()) {
    fail(state, "embag training step failed: " + status.message());
    return;
  }
  size_t batch = kFirstTimedBatch % ds->batches.size();
  for (auto _ : state) {
    status = step(batch);
    if (!status.ok()) {
      fail(state, "embag training step failed: " + status.message());
      break;
    }
    batch = batch + 1 == ds->batches.size() ? 0 : batch + 1;
  }
  benchmark::ClobberMemory();
  const double unique = form == Form::kSparse ? mean_unique_rows(*ds) : 0;
  report(state, forward_bytes(s) + bytes_per_call(s, mode, form, unique), "embag");
}

#ifdef EMBAG_BENCH_HAVE_TORCH
namespace tp = embag::bench::torch_peer;

tp::Call torch_call(const Dataset& ds, size_t batch, Mode mode) {
  return tp::float32_call(ds.table.get(), ds.shape.rows, ds.shape.dim, ds.batches[batch],
                          ds.offsets,
                          mode == Mode::kSum    ? tp::Mode::kSum
                          : mode == Mode::kMean ? tp::Mode::kMean
                                                : tp::Mode::kMax);
}

// PyTorch's backward (train = false) or training step (train = true).
void bench_torch(benchmark::State& state, const Shape& shape, Mode mode, Form form, int threads,
                 bool train) {
  Dataset* ds = dataset_for(shape, state);
  if (!ds) return;
  if (form == Form::kSparse) ds->dense_grad.reset();
  if (mode == Mode::kMax && !ensure_argmax(*ds, state)) return;
  tp::set_num_threads(threads);
  const bool sparse = form == Form::kSparse;
  std::vector<std::unique_ptr<tp::ForwardState>> states;
  std::vector<tp::Call> calls;
  for (size_t k = 0; k < ds->batches.size(); ++k) {
    calls.push_back(torch_call(*ds, k, mode));
    states.push_back(std::make_unique<tp::ForwardState>());
    const std::string error = tp::training_forward(calls.back(), states.back().get());
    if (!error.empty()) {
      fail(state, error);
      return;
    }
  }
  // Batch 0's gradient against the in-order loop, within tolerance.
  std::vector<float> dense, values;
  std::vector<int64_t> rows;
  std::string error = tp::backward(calls[0], *states[0], ds->grad_output.data(), sparse,
                                   sparse ? nullptr : &dense, &rows, &values);
  if (error.empty()) {
    const SparseGradient want = expected_gradient(*ds, 0, mode);
    error = sparse ? compare_sparse(rows.data(), static_cast<int64_t>(rows.size()), values.data(),
                                    shape, want, "PyTorch", 1e-5)
                   : compare_dense(dense.data(), shape, want, "PyTorch", 1e-5);
  }
  if (!error.empty()) {
    fail(state, error);
    return;
  }
  dense = {};
  size_t batch = kFirstTimedBatch % calls.size();
  for (auto _ : state) {
    error = train ? tp::training_step(calls[batch], ds->grad_output.data(), sparse)
                  : tp::backward(calls[batch], *states[batch], ds->grad_output.data(), sparse,
                                 nullptr, nullptr, nullptr);
    if (!error.empty()) {
      fail(state, error);
      break;
    }
    batch = batch + 1 == calls.size() ? 0 : batch + 1;
  }
  const double unique = sparse ? mean_unique_rows(*ds) : 0;
  report(state, (train ? forward_bytes(shape) : 0) + bytes_per_call(shape, mode, form, unique),
         "pytorch " + tp::version());
}
#endif

// ---- Registration and main ----------------------------------------------------------------

// `impl` is "embag/<mode>/<form>" or "pytorch_style_dense/<mode>".
std::string row_name(const std::string& impl, const Shape& s, int threads) {
  return impl + embag::bench::shape_row_suffix(s, is_cold(s), threads);
}

// The embag training-step row of (mode, form) and, with PyTorch, its backward and training rows.
void register_training_and_peers(const Shape& shape, Mode mode, Form form, int threads) {
  const std::string mode_form = std::string(embag::mode_name(mode)) + "/";
  embag::bench::configure(benchmark::RegisterBenchmark(
      row_name("embag/" + mode_form + "train_" + form_name(form), shape, threads).c_str(),
      [=](benchmark::State& state) { bench_embag_train(state, shape, mode, form, threads); }));
#ifdef EMBAG_BENCH_HAVE_TORCH
  embag::bench::configure(benchmark::RegisterBenchmark(
      row_name("pytorch/" + mode_form + form_name(form), shape, threads).c_str(),
      [=](benchmark::State& state) { bench_torch(state, shape, mode, form, threads, false); }));
  embag::bench::configure(benchmark::RegisterBenchmark(
      row_name("pytorch/" + mode_form + "train_" + form_name(form), shape, threads).c_str(),
      [=](benchmark::State& state) { bench_torch(state, shape, mode, form, threads, true); }));
#endif
}

void register_shape(const Shape& shape) {
  // Shapes of another table dtype are forward shapes (bench_forward): the rows here are float32.
  if (shape.dtype != embag::DType::kFloat32) return;
  // Sparse rows first: the dense gradient is allocated by the first dense row and kept for the
  // shape's other dense rows, so in this order it is never allocated while sparse rows run
  // (they also free it themselves, for any other order).
  for (Mode mode : {Mode::kSum, Mode::kMean}) {
    for (int threads : kThreadCounts) {
      const std::string form = std::string(embag::mode_name(mode)) + "/" + form_name(Form::kSparse);
      embag::bench::configure(benchmark::RegisterBenchmark(
          row_name("embag/" + form, shape, threads).c_str(),
          [=](benchmark::State& state) { bench_embag_sparse(state, shape, mode, threads); }));
      register_training_and_peers(shape, mode, Form::kSparse, threads);
    }
  }
  for (Mode mode : kModes) {
    for (int threads : kThreadCounts) {
      const std::string impl =
          std::string("embag/") + embag::mode_name(mode) + "/" + form_name(Form::kDense);
      embag::bench::configure(benchmark::RegisterBenchmark(
          row_name(impl, shape, threads).c_str(),
          [=](benchmark::State& state) { bench_embag_dense(state, shape, mode, threads); }));
      const std::string loop = std::string("pytorch_style_dense/") + embag::mode_name(mode);
      embag::bench::configure(benchmark::RegisterBenchmark(
          row_name(loop, shape, threads).c_str(),
          [=](benchmark::State& state) { bench_pytorch_style(state, shape, mode, threads); }));
      register_training_and_peers(shape, mode, Form::kDense, threads);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string shapes_path;
  std::vector<Shape> shapes;
  if (!embag::bench::parse_flags_and_shapes("bench_backward", EMBAG_BENCH_DEFAULT_SHAPES, argc,
                                            argv, &shapes_path, &g_llc_bytes, &shapes)) {
    return 1;
  }
  for (const Shape& shape : shapes) register_shape(shape);

  benchmark::AddCustomContext("shapes", shapes_path);
  benchmark::AddCustomContext("llc_mib", std::to_string(g_llc_bytes >> 20));
  benchmark::AddCustomContext("huge_pages", embag::bench::huge_pages() ? "yes" : "no");
#ifdef EMBAG_BENCH_HAVE_TORCH
  benchmark::AddCustomContext("pytorch", tp::version());
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_dataset.reset();
  return embag::bench::exit_status("bench_backward", g_failures);
}
