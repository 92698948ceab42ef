// bench_forward: embag::forward against the hand-written gather baseline (the machine's limit)
// and, on warm shapes, the plain C++ reference.
//
// Run it from the build directory:
//   bench/bench_forward                                   # every shape in bench/shapes/perf.txt
//   bench/bench_forward --shapes=../bench/shapes/ci.txt   # tiny shapes, a few seconds
//   bench/bench_forward --benchmark_filter='/cold/threads:1' --benchmark_repetitions=5
//   bench/bench_forward --benchmark_format=json --benchmark_out=forward.json
// Its own flags are taken out before Google Benchmark reads the rest:
//   --shapes=FILE   `rows,dim,bags,pooling,distribution` a line (default: perf.txt in the source)
//   --llc_mib=N     last-level cache size that decides cold or warm (default 32; sysconf is not
//                   asked because VMs report the host's cache: 320 MiB on the dev machine);
//                   make bench-report passes the L3 that sysfs reports, and sizes its cold
//                   tables from it (bench/report.py, `4xL3` rows in bench/shapes/report.txt)
//
// Rows, for every shape x mode (sum, mean, max) x threads (1, 2), each name ending in /real_time:
//   embag/<mode>/rows:V/dim:D/bags:B/pool:L/<dist>/<cold|warm>/threads:N   embag::forward, float32
//                  table, int64 indices, B+1 offsets (include_last_offset),
//                  embag::set_num_threads(N)
//   baseline/...   the gather loop of gather_baseline.h on N threads of its own pool
//   reference/...  embag::ref::forward; threads:1 and warm shapes only (serial and slow)
//   embag/max_argmax/...  max with the argmax output asked for (training's forward); the plain
//                  embag/max rows ask for none and run the max_values kernel
//   memory/sequential_read/threads:N  (once per run) the machine's sequential read bandwidth:
//                  N threads of the baseline's pool each sum a contiguous 1/N of a 256 MiB array
//                  of uint64 words; the ceiling the gather rows are compared with
//   pytorch/...    PyTorch 2.x's torch.nn.functional.embedding_bag (FBGEMM inside) on the same
//                  table, batches and offsets, under inference mode, torch.set_num_threads(N);
//                  only in builds configured with EMBAG_BENCH_TORCH_DIR (make bench-report)
//   fbgemm_tbe/<sum|mean>/...  FBGEMM's table-batched embedding operator (fbgemm_gpu's
//                  SplitTableBatchedEmbeddingBagsCodegen, one HOST table: the CPU forward operator
//                  the module runs, called through the c10 dispatcher under no_grad) on the same
//                  memory, torch.set_num_threads(N); with the pytorch rows, where fbgemm_gpu is
//                  installed beside torch (TBE pools by sum and mean only: no max rows)
// With --quantized, only quantized-table rows, for the uniform shapes of the file (make
// bench-report runs bench/shapes/report-quantized.txt this way), mode sum, each on the same
// indices as the others of its shape:
//   embag/sum_f32/...      embag::forward on the float32 table the others are quantized from
//   embag/sum_int8/...     embag::forward on that table quantized to int8 (kInt8: PyTorch's
//   embag/sum_int4/...     byte prepack layout) / int4 (kInt4: PyTorch's 4-bit prepack layout)
//   embag/sum_fp8/...      ... / fp8_e4m3fn (kFp8E4M3FN, one byte per element; no peer row:
//                          PyTorch has no float8 embedding_bag, and FBGEMM's HFP8 TBE is not
//                          wired into the peer library)
//   pytorch/sum_int8/...   quantized::embedding_bag_byte_rowwise_offsets / _4bit_rowwise_offsets
//   pytorch/sum_int4/...   on the very same bytes (with EMBAG_BENCH_TORCH_DIR)
//   fbgemm_tbe/sum_int8/...  FBGEMM's inference TBE (IntNBitTableBatchedEmbeddingBagsCodegen's
//   fbgemm_tbe/sum_int4/...  CPU operator) on the table in its layout (kTbeInt8 / kTbeInt4)
// Their counters: GB/s of the bytes actually read and written (every position's row bytes and
// index, the offsets, the B x D float32 output) and rows/s (positions per second). Before
// timing, embag's rows are checked bitwise against embag::forward on dequantize_rows() of the
// table, the peers within 1e-4 relative of embag's result (their sums fuse the multiply-add).
//
// Counters: GB/s = useful bytes per call / wall time, decimal (1e9): every position reads one
// row (D * 4 bytes) and its index (8), plus the offsets and the B x D float32 output. The label
// is the kernel variant that ran (embag::last_variant(), or the baseline's equivalent).
//
// Cold: the table is larger than half the LLC; indices are drawn over the whole table and the
// timed loop cycles through 8 index batches, so a call finds none of its rows left in cache by
// the previous one. Warm: the table fits; one batch. The perf shapes pair 1M-row (256/512 MiB)
// cold tables with 10k-row warm ones. Zipf draws follow k^-1.05 with ranks scattered over the
// table; every seed is fixed, so runs reproduce.
//
// Before timing, each embag and reference row checks its output for the first batch against the
// baseline's: the maximum absolute difference must be 0 in every mode, since all of them fold
// each column left to right from +0.0 and mean divides that float32 sum by the count. Each
// baseline row checks its SIMD kernel against its own scalar one. A mismatch skips the row with
// an error that names the first differing element, and the program then exits with status 1.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "bench_data.h"
#include "bench_main_support.h"
#include "embag/embag.h"
#include "gather_baseline.h"
#include "gather_typed.h"
#include "shape_file.h"
#include "thread_pool.h"

#ifdef EMBAG_BENCH_HAVE_TORCH
#include "torch_peer.h"
#endif

#ifdef EMBAG_BENCH_HAVE_REFERENCE
#include "reference/reference.h"
#endif

#ifndef EMBAG_BENCH_DEFAULT_SHAPES
#define EMBAG_BENCH_DEFAULT_SHAPES "bench/shapes/perf.txt"
#endif

namespace {

using embag::bench::Distribution;
using embag::bench::GatherIsa;
using embag::bench::GatherMode;
using embag::bench::GatherProblem;
using embag::bench::kZipfExponent;
using embag::bench::Rng;
using embag::bench::seed_for;
using embag::bench::Shape;
using embag::bench::ZipfSampler;

constexpr int kColdBatches = 8;
constexpr int kThreadCounts[] = {1, 2};
constexpr GatherMode kModes[] = {GatherMode::kSum, GatherMode::kMean, GatherMode::kMax};
// The check before timing reads batch 0; timing starts at the next one so that its first call
// does not find batch 0's rows still in cache.
constexpr size_t kFirstTimedBatch = 1;

int64_t g_llc_bytes = int64_t{32} << 20;

// Rows that failed a check; main() exits non-zero if any did, so a CI run of the tiny shapes
// catches a kernel that disagrees with the baseline.
int g_failures = 0;

void fail(benchmark::State& state, const std::string& message) {
  ++g_failures;
  state.SkipWithError(message.c_str());
}

bool is_cold(const Shape& shape) { return embag::bench::is_cold_shape(shape, g_llc_bytes); }

embag::Mode to_embag(GatherMode mode) {
  switch (mode) {
    case GatherMode::kSum:
      return embag::Mode::kSum;
    case GatherMode::kMean:
      return embag::Mode::kMean;
    case GatherMode::kMax:
      return embag::Mode::kMax;
  }
  return embag::Mode::kSum;
}

// One shape's inputs. Only one lives at a time (a cold table is up to 512 MiB), and the rows of
// one shape are registered together, so each table is built once.
struct Dataset {
  Shape shape;
  bool cold = false;
  embag::bench::AlignedFloats table;
  std::vector<std::vector<int64_t>> batches;  // index batches the timed loop cycles through
  std::vector<int64_t> offsets;               // bags + 1 entries, shared by every batch
  std::vector<float> output;                  // the timed implementation writes here
  double bytes_per_call = 0;
  // Shapes of another dtype: the float32 table rounded to it (64-byte aligned), and where the
  // timed implementation writes its (bags, dim) output of that dtype.
  embag::bench::AlignedFloats typed_table;
  std::vector<unsigned char> typed_output;
};

bool is_typed(const Shape& shape) { return shape.dtype != embag::DType::kFloat32; }

std::unique_ptr<Dataset> g_dataset;

// Builds (or reuses) the current shape's data; on failure reports it on `state` and returns null.
Dataset* dataset_for(const Shape& shape, benchmark::State& state) {
  if (g_dataset && g_dataset->shape.same_problem(shape)) return g_dataset.get();
  g_dataset.reset();  // free the previous table before allocating the next

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
  const int64_t positions = shape.bags * shape.pooling;
  ds->output.assign(static_cast<size_t>(shape.bags * shape.dim), 0.0f);
  const size_t element = embag::dtype_size(shape.dtype);
  if (is_typed(shape)) {
    const int64_t elements = shape.rows * shape.dim;
    ds->typed_table =
        embag::bench::allocate_floats((elements * static_cast<int64_t>(element) + 3) / 4);
    if (!ds->typed_table) {
      fail(state, std::string("cannot allocate the ") + embag::dtype_name(shape.dtype) + " table");
      return nullptr;
    }
    if (!embag::bench::convert_floats(ds->table.get(), elements, shape.dtype,
                                      ds->typed_table.get())) {
      // Not a failure: float16 tables are rounded with F16C, which only x86 has; the typed loop
      // that would check embag needs AVX-512 anyway.
      state.SkipWithError((std::string("skipped: no ") + embag::dtype_name(shape.dtype) +
                           " conversion on this machine (F16C), so no typed table to compare on")
                              .c_str());
      return nullptr;
    }
    ds->table.reset();  // only the typed table is read
    ds->typed_output.assign(static_cast<size_t>(shape.bags * shape.dim) * element, 0);
  }

  ds->bytes_per_call = static_cast<double>(positions) * shape.dim * element +
                       static_cast<double>(positions) * sizeof(int64_t) +
                       static_cast<double>(shape.bags + 1) * sizeof(int64_t) +
                       static_cast<double>(shape.bags) * shape.dim * element;
  g_dataset = std::move(ds);
  return g_dataset.get();
}

GatherProblem<int64_t> baseline_problem(const Dataset& ds, size_t batch, GatherMode mode,
                                        float* output) {
  GatherProblem<int64_t> p;
  p.table = ds.table.get();
  p.rows = ds.shape.rows;
  p.dim = ds.shape.dim;
  p.indices = ds.batches[batch].data();
  p.offsets = ds.offsets.data();
  p.bags = ds.shape.bags;
  p.mode = mode;
  p.output = output;
  return p;
}

// embag's views of one batch. The offsets view is shared and must outlive the inputs.
struct EmbagCalls {
  embag::TensorView offsets;
  std::vector<embag::ForwardInputs> inputs;  // one per batch
  embag::ForwardOutputs outputs;
  embag::Options options;
  std::vector<int64_t> argmax;  // max with the argmax asked for
  embag::TensorView argmax_view;
};

void make_calls(Dataset& ds, GatherMode mode, EmbagCalls* calls, bool with_argmax = false) {
  const Shape& s = ds.shape;
  calls->offsets = embag::make_view_1d(ds.offsets.data(), embag::DType::kInt64, s.bags + 1);
  calls->inputs.clear();
  for (std::vector<int64_t>& batch : ds.batches) {
    embag::ForwardInputs in;
    in.weight = is_typed(s)
                    ? embag::make_view_2d(ds.typed_table.get(), s.dtype, s.rows, s.dim)
                    : embag::make_view_2d(ds.table.get(), embag::DType::kFloat32, s.rows, s.dim);
    in.input =
        embag::make_view_1d(batch.data(), embag::DType::kInt64, static_cast<int64_t>(batch.size()));
    in.offsets = &calls->offsets;
    calls->inputs.push_back(in);
  }
  calls->outputs.output =
      is_typed(s) ? embag::make_view_2d(ds.typed_output.data(), s.dtype, s.bags, s.dim)
                  : embag::make_view_2d(ds.output.data(), embag::DType::kFloat32, s.bags, s.dim);
  calls->options.mode = to_embag(mode);
  calls->options.include_last_offset = true;
  if (with_argmax) {
    calls->argmax.assign(static_cast<size_t>(s.bags * s.dim), 0);
    calls->argmax_view =
        embag::make_view_2d(calls->argmax.data(), embag::DType::kInt64, s.bags, s.dim);
    calls->outputs.argmax = &calls->argmax_view;
  }
}

// Empty when `got` equals `want` (max |difference| is 0, NaN matching NaN); otherwise says
// where the first difference is and how large the largest one is.
std::string compare(const std::vector<float>& got, const std::vector<float>& want, int64_t dim,
                    const char* who, const char* oracle) {
  double max_diff = 0;
  int64_t first = -1;
  for (size_t i = 0; i < want.size(); ++i) {
    const bool both_nan = std::isnan(got[i]) && std::isnan(want[i]);
    const double diff =
        both_nan ? 0.0 : std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (diff > 0 || (std::isnan(diff))) {
      if (first < 0) first = static_cast<int64_t>(i);
      max_diff = std::isnan(diff) ? diff : std::max(max_diff, diff);
    }
  }
  if (first < 0) return "";
  char message[256];
  std::snprintf(message, sizeof(message),
                "%s differs from %s: first at bag %lld column %lld (%.9g vs %.9g), max abs diff "
                "%.9g; both must be the same left fold",
                who, oracle, static_cast<long long>(first / dim),
                static_cast<long long>(first % dim), got[static_cast<size_t>(first)],
                want[static_cast<size_t>(first)], max_diff);
  return message;
}

void report(benchmark::State& state, const Dataset& ds, const std::string& variant) {
  // Iteration-invariant rate: bytes per call x iterations / wall time (UseRealTime below).
  state.counters["GB/s"] =
      benchmark::Counter(ds.bytes_per_call * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(variant);
}

// ---- The three kinds of row ---------------------------------------------------------------

// Shapes of another dtype (sum only): embag and the typed loop, each checked bitwise against the
// other before timing (both round each bag's float32 sum once; float64 adds in float64).
embag::bench::TypedGatherProblem typed_problem(Dataset& ds, size_t batch, void* output) {
  embag::bench::TypedGatherProblem p;
  p.table = ds.typed_table.get();
  p.dtype = ds.shape.dtype;
  p.rows = ds.shape.rows;
  p.dim = ds.shape.dim;
  p.indices = ds.batches[batch].data();
  p.offsets = ds.offsets.data();
  p.bags = ds.shape.bags;
  p.output = output;
  return p;
}

void bench_typed(benchmark::State& state, const Shape& shape, int threads, bool embag_row) {
  Dataset* ds = dataset_for(shape, state);
  if (!ds) return;
  std::vector<unsigned char> expected(ds->typed_output.size());
  if (!embag::bench::gather_sum_typed(typed_problem(*ds, 0, expected.data()), threads)) {
    // Not a failure: nothing to compare with on this machine (both rows are skipped).
    state.SkipWithError(
        "skipped: the typed loop needs AVX2 or AVX-512, F16C, and D of 1, 2, 4 or 8 vectors or "
        "whole tiles of 16 up to 256, so there is nothing to check embag against here");
    return;
  }
  EmbagCalls calls;
  if (embag_row) {
    embag::set_num_threads(threads);
    make_calls(*ds, GatherMode::kSum, &calls);
    const embag::Status status = embag::forward(calls.inputs[0], calls.outputs, calls.options);
    if (!status.ok()) {
      fail(state, "embag::forward failed: " + status.message());
      return;
    }
    if (ds->typed_output != expected) {
      fail(state, std::string("embag's ") + embag::dtype_name(shape.dtype) +
                      " sums differ from the typed loop's (both round each bag's sum once)");
      return;
    }
  }
  const std::string variant = embag_row
                                  ? embag::last_variant()
                                  : std::string("baseline_sum_") + embag::dtype_name(shape.dtype) +
                                        "_i64_" + embag::bench::typed_loop_isa();
  size_t batch = kFirstTimedBatch % ds->batches.size();
  for (auto _ : state) {
    const bool ok = embag_row
                        ? embag::forward(calls.inputs[batch], calls.outputs, calls.options).ok()
                        : embag::bench::gather_sum_typed(
                              typed_problem(*ds, batch, ds->typed_output.data()), threads);
    if (!ok) {
      fail(state, "a timed call failed");
      break;
    }
    batch = batch + 1 == ds->batches.size() ? 0 : batch + 1;
  }
  benchmark::ClobberMemory();
  report(state, *ds, variant);
}

void bench_embag(benchmark::State& state, const Shape& shape, GatherMode mode, int threads,
                 bool with_argmax) {
  Dataset* ds = dataset_for(shape, state);
  if (!ds) return;
  embag::set_num_threads(threads);
  EmbagCalls calls;
  make_calls(*ds, mode, &calls, with_argmax);

  std::vector<float> expected(ds->output.size());
  if (!embag::bench::gather_forward(baseline_problem(*ds, 0, mode, expected.data()), threads)) {
    fail(state, "baseline rejected the inputs (index out of range?)");
    return;
  }
  embag::Status status = embag::forward(calls.inputs[0], calls.outputs, calls.options);
  if (!status.ok()) {
    fail(state, "embag::forward failed: " + status.message());
    return;
  }
  const std::string mismatch = compare(ds->output, expected, shape.dim, "embag", "baseline");
  if (!mismatch.empty()) {
    fail(state, mismatch);
    return;
  }
  const std::string variant = embag::last_variant();

  size_t batch = kFirstTimedBatch % calls.inputs.size();
  for (auto _ : state) {
    status = embag::forward(calls.inputs[batch], calls.outputs, calls.options);
    if (!status.ok()) {
      fail(state, "embag::forward failed: " + status.message());
      break;
    }
    batch = batch + 1 == calls.inputs.size() ? 0 : batch + 1;
  }
  benchmark::ClobberMemory();
  report(state, *ds, variant);
}

void bench_baseline(benchmark::State& state, const Shape& shape, GatherMode mode, int threads) {
  Dataset* ds = dataset_for(shape, state);
  if (!ds) return;

  // The SIMD kernel must agree with the scalar one, or it is no baseline.
  std::vector<float> scalar(ds->output.size());
  if (!embag::bench::gather_forward(baseline_problem(*ds, 0, mode, scalar.data()), 1,
                                    GatherIsa::kScalar) ||
      !embag::bench::gather_forward(baseline_problem(*ds, 0, mode, ds->output.data()), threads)) {
    fail(state, "baseline rejected the inputs (index out of range?)");
    return;
  }
  const std::string mismatch =
      compare(ds->output, scalar, shape.dim, "baseline", "the baseline's scalar loop");
  if (!mismatch.empty()) {
    fail(state, mismatch);
    return;
  }

  std::vector<GatherProblem<int64_t>> problems;
  for (size_t k = 0; k < ds->batches.size(); ++k) {
    problems.push_back(baseline_problem(*ds, k, mode, ds->output.data()));
  }
  size_t batch = kFirstTimedBatch % problems.size();
  for (auto _ : state) {
    if (!embag::bench::gather_forward(problems[batch], threads)) {
      fail(state, "baseline rejected the inputs (index out of range?)");
      break;
    }
    batch = batch + 1 == problems.size() ? 0 : batch + 1;
  }
  benchmark::ClobberMemory();
  report(state, *ds, embag::bench::gather_variant_name(mode, 64, shape.dim));
}

#ifdef EMBAG_BENCH_HAVE_TORCH
// The peers' results are checked against the baseline (which embag matches bitwise) within 1e-5
// relative, not bitwise: PyTorch's mean multiplies the sum by 1/n where embag and the loop divide
// (SEMANTICS.md), and TBE's kernels need not add in the same order.
std::string compare_close(const std::vector<float>& got, const std::vector<float>& want,
                          const char* who) {
  for (size_t i = 0; i < want.size(); ++i) {
    const double tolerance = 1e-5 * std::max(1.0, std::fabs(static_cast<double>(want[i])));
    if (!(std::fabs(static_cast<double>(got[i]) - want[i]) <= tolerance)) {
      return std::string(who) + " differs from the baseline at element " + std::to_string(i) +
             ": " + std::to_string(got[i]) + " vs " + std::to_string(want[i]);
    }
  }
  return "";
}

embag::bench::torch_peer::Call torch_call(const Dataset& ds, size_t batch, GatherMode mode) {
  namespace tp = embag::bench::torch_peer;
  return tp::float32_call(ds.table.get(), ds.shape.rows, ds.shape.dim, ds.batches[batch],
                          ds.offsets,
                          mode == GatherMode::kSum    ? tp::Mode::kSum
                          : mode == GatherMode::kMean ? tp::Mode::kMean
                                                      : tp::Mode::kMax);
}

// A peer's forward (PyTorch's F.embedding_bag, or FBGEMM's TBE operator, whose kernel runs on
// PyTorch's intra-op pool): same thread setting as embag, checked against the loop within 1e-5
// relative before timing, then timed over the same index batches.
using PeerForward = std::string (*)(const embag::bench::torch_peer::Call&, void*);
void bench_peer(benchmark::State& state, const Shape& shape, GatherMode mode, int threads,
                PeerForward peer_forward, const char* peer_name, const std::string& label) {
  namespace tp = embag::bench::torch_peer;
  Dataset* ds = dataset_for(shape, state);
  if (!ds) return;
  tp::set_num_threads(threads);
  std::vector<float> expected(ds->output.size());
  if (!embag::bench::gather_forward(baseline_problem(*ds, 0, mode, expected.data()), threads)) {
    fail(state, "baseline rejected the inputs (index out of range?)");
    return;
  }
  std::string error = peer_forward(torch_call(*ds, 0, mode), ds->output.data());
  if (error.empty()) error = compare_close(ds->output, expected, peer_name);
  if (!error.empty()) {
    fail(state, error);
    return;
  }
  std::vector<tp::Call> calls;
  for (size_t k = 0; k < ds->batches.size(); ++k) calls.push_back(torch_call(*ds, k, mode));
  size_t batch = kFirstTimedBatch % calls.size();
  for (auto _ : state) {
    error = peer_forward(calls[batch], nullptr);
    if (!error.empty()) {
      fail(state, error);
      break;
    }
    batch = batch + 1 == calls.size() ? 0 : batch + 1;
  }
  report(state, *ds, label);
}

void bench_torch(benchmark::State& state, const Shape& shape, GatherMode mode, int threads) {
  namespace tp = embag::bench::torch_peer;
  bench_peer(state, shape, mode, threads, &tp::forward, "PyTorch", "pytorch " + tp::version());
}

// Whether fbgemm_gpu's operator loaded: its rows are registered only then (the context's
// fbgemm_tbe entry says why not), so a torch without fbgemm_gpu still runs the other rows.
bool tbe_available() {
  std::string why;
  return !embag::bench::torch_peer::tbe_version(&why).empty();
}

void bench_tbe(benchmark::State& state, const Shape& shape, GatherMode mode, int threads) {
  namespace tp = embag::bench::torch_peer;
  std::string why;
  bench_peer(state, shape, mode, threads, &tp::tbe_forward, "FBGEMM's TBE",
             "fbgemm_gpu " + tp::tbe_version(&why) + " split_embedding_codegen_forward_cpu");
}
#endif

#ifdef EMBAG_BENCH_HAVE_REFERENCE
void bench_reference(benchmark::State& state, const Shape& shape, GatherMode mode) {
  Dataset* ds = dataset_for(shape, state);
  if (!ds) return;
  EmbagCalls calls;
  make_calls(*ds, mode, &calls);

  std::vector<float> expected(ds->output.size());
  if (!embag::bench::gather_forward(baseline_problem(*ds, 0, mode, expected.data()), 1)) {
    fail(state, "baseline rejected the inputs (index out of range?)");
    return;
  }
  embag::Status status = embag::ref::forward(calls.inputs[0], calls.outputs, calls.options);
  if (!status.ok()) {
    fail(state, "embag::ref::forward failed: " + status.message());
    return;
  }
  const std::string mismatch = compare(ds->output, expected, shape.dim, "reference", "baseline");
  if (!mismatch.empty()) {
    fail(state, mismatch);
    return;
  }

  size_t batch = kFirstTimedBatch % calls.inputs.size();
  for (auto _ : state) {
    status = embag::ref::forward(calls.inputs[batch], calls.outputs, calls.options);
    if (!status.ok()) {
      fail(state, "embag::ref::forward failed: " + status.message());
      break;
    }
    batch = batch + 1 == calls.inputs.size() ? 0 : batch + 1;
  }
  benchmark::ClobberMemory();
  report(state, *ds, "reference");
}
#endif

void bench_sequential_read(benchmark::State& state, int threads) {
  g_dataset.reset();                            // nothing else large alive while this runs
  constexpr int64_t kWords = int64_t{1} << 25;  // 256 MiB of uint64, 8x the LLC
  // (as floats for the allocator; read as uint64 words, whose sum vectorises without fast-math)
  embag::bench::AlignedFloats storage = embag::bench::allocate_floats(kWords * 2);
  if (!storage) {
    fail(state, "cannot allocate 256 MiB for the sequential read");
    return;
  }
  uint64_t* const data = reinterpret_cast<uint64_t*>(storage.get());
  for (int64_t i = 0; i < kWords; ++i) data[i] = static_cast<uint64_t>(i);
  static embag::bench::ThreadPool read_pool;
  std::vector<uint64_t> sums(static_cast<size_t>(threads) * 8);  // a cache line per thread
  auto read = [&](int t) {
    const uint64_t* begin = data + kWords * t / threads;
    const uint64_t* end = data + kWords * (t + 1) / threads;
    uint64_t sum = 0;
    for (const uint64_t* w = begin; w < end; ++w) sum += *w;  // vectorised at -O2 and up
    sums[static_cast<size_t>(t) * 8] = sum;
  };
  for (auto _ : state) {
    read_pool.run(threads, read);
    benchmark::DoNotOptimize(sums.data());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(kWords) * 8 * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel("sequential read");
}

// ---- Quantized tables (--quantized) -------------------------------------------------------

bool g_quantized_rows = false;

enum class QuantRow : uint8_t { kFloat32, kInt8, kInt4, kFp8 };

const char* quant_row_name(QuantRow row) {
  switch (row) {
    case QuantRow::kFloat32:
      return "sum_f32";
    case QuantRow::kInt8:
      return "sum_int8";
    case QuantRow::kInt4:
      return "sum_int4";
    case QuantRow::kFp8:
      return "sum_fp8";
  }
  return "?";
}

// One shape's float32 table and its five quantized copies (PyTorch's and TBE's layouts of 8 and 4
// bits, and float8_e4m3fn), index batches and offsets; built once per shape, the float dataset
// freed first.
struct QuantDataset {
  Shape shape;
  bool cold = false;
  embag::bench::AlignedFloats table;
  std::vector<std::vector<int64_t>> batches;
  std::vector<int64_t> offsets;
  // kInt8, kInt4, kTbeInt8, kTbeInt4, kFp8E4M3FN
  std::vector<uint8_t> bytes[5];
  std::vector<float> output;
};
constexpr embag::QuantFormat kQuantFormats[5] = {
    embag::QuantFormat::kInt8, embag::QuantFormat::kInt4, embag::QuantFormat::kTbeInt8,
    embag::QuantFormat::kTbeInt4, embag::QuantFormat::kFp8E4M3FN};
std::unique_ptr<QuantDataset> g_quant;

QuantDataset* quant_dataset_for(const Shape& shape, benchmark::State& state) {
  if (g_quant && g_quant->shape.same_problem(shape)) return g_quant.get();
  g_quant.reset();
  g_dataset.reset();
  auto ds = std::make_unique<QuantDataset>();
  ds->shape = shape;
  ds->cold = is_cold(shape);
  embag::bench::GatherData data;
  if (!embag::bench::make_gather_data(shape, ds->cold ? kColdBatches : 1, &data)) {
    fail(state, "cannot allocate the float32 table");
    return nullptr;
  }
  ds->table = std::move(data.table);
  ds->offsets = std::move(data.offsets);
  ds->batches = std::move(data.batches);
  const embag::TensorView weight =
      embag::make_view_2d(ds->table.get(), embag::DType::kFloat32, shape.rows, shape.dim);
  for (int k = 0; k < 5; ++k) {
    const int64_t row_bytes = embag::quantized_row_bytes(kQuantFormats[k], shape.dim);
    ds->bytes[k].assign(static_cast<size_t>(shape.rows * row_bytes), 0);
    const embag::QuantizedTable table{ds->bytes[k].data(), kQuantFormats[k], shape.rows, shape.dim,
                                      row_bytes};
    const embag::Status status = embag::quantize_rows(weight, table);
    if (!status.ok()) {
      fail(state, "quantize_rows failed: " + status.message());
      return nullptr;
    }
  }
  ds->output.assign(static_cast<size_t>(shape.bags * shape.dim), 0.0f);
  g_quant = std::move(ds);
  return g_quant.get();
}

// Index 0..4 of QuantDataset::bytes for a row: PyTorch's layout, or TBE's for the TBE rows.
int quant_bytes_index(QuantRow row, bool tbe_layout) {
  if (row == QuantRow::kFp8) return 4;
  return (row == QuantRow::kInt8 ? 0 : 1) + (tbe_layout ? 2 : 0);
}

embag::QuantizedTable quant_table(const QuantDataset& ds, int k) {
  return {ds.bytes[k].data(), kQuantFormats[k], ds.shape.rows, ds.shape.dim,
          embag::quantized_row_bytes(kQuantFormats[k], ds.shape.dim)};
}

void quant_counters(benchmark::State& state, const QuantDataset& ds, int64_t row_bytes,
                    const std::string& label) {
  const Shape& s = ds.shape;
  const double positions = static_cast<double>(s.bags * s.pooling);
  const double bytes = positions * static_cast<double>(row_bytes + sizeof(int64_t)) +
                       static_cast<double>(s.bags + 1) * sizeof(int64_t) +
                       static_cast<double>(s.bags * s.dim) * sizeof(float);
  state.counters["GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["rows/s"] =
      benchmark::Counter(positions, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(label);
}

// embag's forward inputs for batch `batch` (a float32 row when `k` < 0).
embag::ForwardInputs quant_inputs(QuantDataset& ds, int k, size_t batch,
                                  embag::QuantizedTable* table, embag::TensorView* offsets) {
  const Shape& s = ds.shape;
  embag::ForwardInputs in;
  if (k < 0) {
    in.weight = embag::make_view_2d(ds.table.get(), embag::DType::kFloat32, s.rows, s.dim);
  } else {
    *table = quant_table(ds, k);
    in.quantized_weight = table;
  }
  in.input = embag::make_view_1d(ds.batches[batch].data(), embag::DType::kInt64,
                                 static_cast<int64_t>(ds.batches[batch].size()));
  *offsets = embag::make_view_1d(ds.offsets.data(), embag::DType::kInt64, s.bags + 1);
  in.offsets = offsets;
  return in;
}

// embag's sum of batch 0 on table k (float32 when k < 0) into *out.
embag::Status quant_embag_sum(QuantDataset& ds, int k, size_t batch, std::vector<float>* out) {
  embag::QuantizedTable table;
  embag::TensorView offsets;
  const embag::ForwardInputs in = quant_inputs(ds, k, batch, &table, &offsets);
  out->resize(static_cast<size_t>(ds.shape.bags * ds.shape.dim));
  embag::ForwardOutputs outputs;
  outputs.output =
      embag::make_view_2d(out->data(), embag::DType::kFloat32, ds.shape.bags, ds.shape.dim);
  embag::Options options;
  options.mode = embag::Mode::kSum;
  options.include_last_offset = true;
  return embag::forward(in, outputs, options);
}

void bench_quant_embag(benchmark::State& state, const Shape& shape, QuantRow row, int threads) {
  QuantDataset* ds = quant_dataset_for(shape, state);
  if (!ds) return;
  embag::set_num_threads(threads);
  const int k = row == QuantRow::kFloat32 ? -1 : quant_bytes_index(row, false);
  std::vector<float> got;
  embag::Status status = quant_embag_sum(*ds, k, 0, &got);
  if (!status.ok()) {
    fail(state, "embag::forward failed: " + status.message());
    return;
  }
  const std::string variant = embag::last_variant();
  if (k >= 0) {
    // Bitwise what embag gives on the dequantised table (quantized.h's contract).
    std::vector<float> dequantized(static_cast<size_t>(shape.rows * shape.dim));
    const embag::QuantizedTable table = quant_table(*ds, k);
    status = embag::dequantize_rows(
        table,
        embag::make_view_2d(dequantized.data(), embag::DType::kFloat32, shape.rows, shape.dim));
    std::vector<float> want(got.size());
    embag::TensorView offsets =
        embag::make_view_1d(ds->offsets.data(), embag::DType::kInt64, shape.bags + 1);
    embag::ForwardInputs in;
    in.weight =
        embag::make_view_2d(dequantized.data(), embag::DType::kFloat32, shape.rows, shape.dim);
    in.input = embag::make_view_1d(ds->batches[0].data(), embag::DType::kInt64,
                                   static_cast<int64_t>(ds->batches[0].size()));
    in.offsets = &offsets;
    embag::ForwardOutputs outputs;
    outputs.output =
        embag::make_view_2d(want.data(), embag::DType::kFloat32, shape.bags, shape.dim);
    embag::Options options;
    options.mode = embag::Mode::kSum;
    options.include_last_offset = true;
    if (status.ok()) status = embag::forward(in, outputs, options);
    if (!status.ok()) {
      fail(state, "the dequantised check failed to run: " + status.message());
      return;
    }
    const std::string mismatch = compare(got, want, shape.dim, "embag on the quantized table",
                                         "embag on its dequantisation");
    if (!mismatch.empty()) {
      fail(state, mismatch);
      return;
    }
  }
  std::vector<embag::QuantizedTable> tables(ds->batches.size());
  std::vector<embag::TensorView> offsets(ds->batches.size());
  std::vector<embag::ForwardInputs> inputs;
  for (size_t b = 0; b < ds->batches.size(); ++b) {
    inputs.push_back(quant_inputs(*ds, k, b, &tables[b], &offsets[b]));
  }
  embag::ForwardOutputs outputs;
  outputs.output =
      embag::make_view_2d(ds->output.data(), embag::DType::kFloat32, shape.bags, shape.dim);
  embag::Options options;
  options.mode = embag::Mode::kSum;
  options.include_last_offset = true;
  size_t batch = kFirstTimedBatch % inputs.size();
  for (auto _ : state) {
    status = embag::forward(inputs[batch], outputs, options);
    if (!status.ok()) {
      fail(state, "embag::forward failed: " + status.message());
      break;
    }
    batch = batch + 1 == inputs.size() ? 0 : batch + 1;
  }
  benchmark::ClobberMemory();
  quant_counters(state, *ds,
                 k < 0 ? shape.dim * static_cast<int64_t>(sizeof(float))
                       : embag::quantized_row_bytes(kQuantFormats[k], shape.dim),
                 variant);
}

#ifdef EMBAG_BENCH_HAVE_TORCH
// A peer's quantized sum (PyTorch's op, or TBE's on its layout): checked within 1e-4 relative of
// embag's on the same bytes' values, then timed like embag's row.
void bench_quant_peer(benchmark::State& state, const Shape& shape, QuantRow row, int threads,
                      bool tbe) {
  namespace tp = embag::bench::torch_peer;
  QuantDataset* ds = quant_dataset_for(shape, state);
  if (!ds) return;
  tp::set_num_threads(threads);
  const int k = quant_bytes_index(row, tbe);
  const int64_t row_bytes = embag::quantized_row_bytes(kQuantFormats[k], shape.dim);
  const tp::QuantBits bits = row == QuantRow::kInt8 ? tp::QuantBits::k8 : tp::QuantBits::k4;
  auto call_of = [&](size_t batch) {
    return tp::float32_call(nullptr, shape.rows, shape.dim, ds->batches[batch], ds->offsets,
                            tp::Mode::kSum);
  };
  auto run = [&](size_t batch, void* output) {
    return tbe ? tp::tbe_quantized_forward(bits, ds->bytes[k].data(), shape.rows, row_bytes,
                                           call_of(batch), output)
               : tp::quantized_forward(bits, ds->bytes[k].data(), shape.rows, row_bytes,
                                       call_of(batch), output);
  };
  std::vector<float> want;
  embag::Status status = quant_embag_sum(*ds, k, 0, &want);
  if (!status.ok()) {
    fail(state, "embag::forward failed: " + status.message());
    return;
  }
  std::string error = run(0, ds->output.data());
  for (size_t i = 0; error.empty() && i < want.size(); ++i) {
    const double tolerance = 1e-4 * std::max(1.0, std::fabs(static_cast<double>(want[i])));
    if (!(std::fabs(static_cast<double>(ds->output[i]) - want[i]) <= tolerance)) {
      error = std::string(tbe ? "TBE" : "PyTorch") + " differs from embag at element " +
              std::to_string(i) + ": " + std::to_string(ds->output[i]) + " vs " +
              std::to_string(want[i]);
    }
  }
  if (!error.empty()) {
    fail(state, error);
    return;
  }
  size_t batch = kFirstTimedBatch % ds->batches.size();
  for (auto _ : state) {
    error = run(batch, nullptr);
    if (!error.empty()) {
      fail(state, error);
      break;
    }
    batch = batch + 1 == ds->batches.size() ? 0 : batch + 1;
  }
  std::string why;
  quant_counters(state, *ds, row_bytes,
                 tbe ? "fbgemm_gpu " + tp::tbe_inference_version(&why) +
                           " int_nbit_split_embedding_codegen_lookup_function"
                     : "pytorch " + tp::version() + " quantized::embedding_bag_" +
                           (row == QuantRow::kInt8 ? "byte" : "4bit") + "_rowwise_offsets");
}

bool tbe_inference_available() {
  std::string why;
  return !embag::bench::torch_peer::tbe_inference_version(&why).empty();
}
#endif

void register_quantized_shape(const Shape& shape) {
  if (is_typed(shape) || shape.distribution != Distribution::kUniform) return;
  for (QuantRow row : {QuantRow::kFloat32, QuantRow::kInt8, QuantRow::kInt4, QuantRow::kFp8}) {
    for (int threads : kThreadCounts) {
      const std::string suffix = std::string("/") + quant_row_name(row) +
                                 embag::bench::shape_row_suffix(shape, is_cold(shape), threads);
      embag::bench::configure(benchmark::RegisterBenchmark(
          ("embag" + suffix).c_str(),
          [=](benchmark::State& state) { bench_quant_embag(state, shape, row, threads); }));
      if (row == QuantRow::kFloat32 || row == QuantRow::kFp8) continue;
#ifdef EMBAG_BENCH_HAVE_TORCH
      embag::bench::configure(benchmark::RegisterBenchmark(
          ("pytorch" + suffix).c_str(),
          [=](benchmark::State& state) { bench_quant_peer(state, shape, row, threads, false); }));
      if (tbe_inference_available()) {
        embag::bench::configure(benchmark::RegisterBenchmark(
            ("fbgemm_tbe" + suffix).c_str(),
            [=](benchmark::State& state) { bench_quant_peer(state, shape, row, threads, true); }));
      }
#endif
    }
  }
}

// ---- Registration and main ----------------------------------------------------------------

std::string row_name(const char* impl, GatherMode mode, const Shape& s, int threads) {
  return std::string(impl) + "/" + embag::bench::gather_mode_name(mode) +
         embag::bench::shape_row_suffix(s, is_cold(s), threads);
}

void register_shape(const Shape& shape) {
  if (is_typed(shape)) {
    for (int threads : kThreadCounts) {
      for (const bool embag_row : {true, false}) {
        embag::bench::configure(benchmark::RegisterBenchmark(
            row_name(embag_row ? "embag" : "baseline", GatherMode::kSum, shape, threads).c_str(),
            [=](benchmark::State& state) { bench_typed(state, shape, threads, embag_row); }));
      }
    }
    return;
  }
  for (GatherMode mode : kModes) {
    for (int threads : kThreadCounts) {
      embag::bench::configure(benchmark::RegisterBenchmark(
          row_name("embag", mode, shape, threads).c_str(),
          [=](benchmark::State& state) { bench_embag(state, shape, mode, threads, false); }));
      if (mode == GatherMode::kMax) {
        const std::string name =
            "embag/max_argmax" + embag::bench::shape_row_suffix(shape, is_cold(shape), threads);
        embag::bench::configure(benchmark::RegisterBenchmark(
            name.c_str(),
            [=](benchmark::State& state) { bench_embag(state, shape, mode, threads, true); }));
      }
      embag::bench::configure(benchmark::RegisterBenchmark(
          row_name("baseline", mode, shape, threads).c_str(),
          [=](benchmark::State& state) { bench_baseline(state, shape, mode, threads); }));
#ifdef EMBAG_BENCH_HAVE_TORCH
      embag::bench::configure(benchmark::RegisterBenchmark(
          row_name("pytorch", mode, shape, threads).c_str(),
          [=](benchmark::State& state) { bench_torch(state, shape, mode, threads); }));
      if (mode != GatherMode::kMax && tbe_available()) {
        embag::bench::configure(benchmark::RegisterBenchmark(
            row_name("fbgemm_tbe", mode, shape, threads).c_str(),
            [=](benchmark::State& state) { bench_tbe(state, shape, mode, threads); }));
      }
#endif
    }
#ifdef EMBAG_BENCH_HAVE_REFERENCE
    if (!is_cold(shape)) {
      embag::bench::configure(benchmark::RegisterBenchmark(
          row_name("reference", mode, shape, 1).c_str(),
          [=](benchmark::State& state) { bench_reference(state, shape, mode); }));
    }
#endif
  }
}

}  // namespace

int main(int argc, char** argv) {
  // --quantized (this program's own; taken out before the shared flags are parsed)
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--quantized") {
      g_quantized_rows = true;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  argv[argc] = nullptr;
  std::string shapes_path;
  std::vector<Shape> shapes;
  if (!embag::bench::parse_flags_and_shapes("bench_forward", EMBAG_BENCH_DEFAULT_SHAPES, argc, argv,
                                            &shapes_path, &g_llc_bytes, &shapes)) {
    return 1;
  }
  for (int threads : kThreadCounts) {
    embag::bench::configure(benchmark::RegisterBenchmark(
        ("memory/sequential_read/threads:" + std::to_string(threads)).c_str(),
        [=](benchmark::State& state) { bench_sequential_read(state, threads); }));
  }
  for (const Shape& shape : shapes) {
    if (g_quantized_rows) {
      register_quantized_shape(shape);
    } else {
      register_shape(shape);
    }
  }

  benchmark::AddCustomContext("shapes", shapes_path);
  benchmark::AddCustomContext("llc_mib", std::to_string(g_llc_bytes >> 20));
  benchmark::AddCustomContext("huge_pages", embag::bench::huge_pages() ? "yes" : "no");
  benchmark::AddCustomContext("baseline_isa",
                              embag::bench::gather_isa_name(embag::bench::gather_best_isa()));
#ifdef EMBAG_BENCH_HAVE_TORCH
  benchmark::AddCustomContext("pytorch", embag::bench::torch_peer::version());
  {
    std::string why;
    const std::string tbe = embag::bench::torch_peer::tbe_version(&why);
    benchmark::AddCustomContext("fbgemm_tbe", tbe.empty() ? "unavailable: " + why : tbe);
  }
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_dataset.reset();
  g_quant.reset();
  return embag::bench::exit_status("bench_forward", g_failures);
}
