// Many threads calling forward, backward, validate and validate_backward at once, with different
// dtypes, modes and options, and deliberate validation errors whose messages carry values unique
// to the thread and call, while another thread changes the thread count. Each thread checks its
// own results against the reference (computed by that thread) and its own error messages. Run
// under ThreadSanitizer by `make test-tsan`; in the plain suite it checks the results.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "differential_support.h"
#include "embag/embag.h"
#include "reference/element_access.h"
#include "reference/reference.h"

namespace embag {
namespace {

using difftest::first_difference;
using ref::element_size;
using ref::put_index;
using ref::put_value;

constexpr int kThreads = 8;
constexpr int kCallsPerThread = 200;
constexpr DType kDTypes[] = {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16};
constexpr Mode kModes[] = {Mode::kSum, Mode::kMean, Mode::kMax};

// One call's data: a small table, 1-D input and offsets, grad_output; all owned here.
struct Call {
  DType dtype = DType::kFloat32;
  Options options;
  int64_t V = 0, D = 0, B = 0;
  std::vector<unsigned char> table, grad;
  std::vector<int64_t> input, offsets;

  TensorView weight_view(std::vector<unsigned char>& t) const {
    return make_view_2d(t.data(), dtype, V, D);
  }
};

Call make_call(std::mt19937_64& rng, int thread, int i) {
  Call c;
  c.dtype = kDTypes[(thread + i) % 4];
  c.options.mode = kModes[(thread * 7 + i) % 3];
  c.V = 1 + static_cast<int64_t>(rng() % 40);
  c.D = 1 + static_cast<int64_t>(rng() % 24);
  c.B = 1 + static_cast<int64_t>(rng() % 40);  // over 16 bags: the pool splits the work
  if (rng() % 3 == 0) c.options.padding_idx = static_cast<int64_t>(rng() % c.V);
  if (c.options.mode != Mode::kMax && rng() % 4 == 0) c.options.max_norm = 1.0;
  if (c.options.mode != Mode::kMax && rng() % 3 == 0) c.options.sparse = true;
  const size_t es = element_size(c.dtype);
  c.table.resize(static_cast<size_t>(c.V * c.D) * es);
  std::uniform_real_distribution<double> value(-2, 2);
  for (int64_t k = 0; k < c.V * c.D; ++k) put_value(c.table.data(), c.dtype, k, value(rng));
  for (int64_t b = 0; b < c.B; ++b) {
    c.offsets.push_back(static_cast<int64_t>(c.input.size()));
    for (int64_t n = static_cast<int64_t>(rng() % 6); n > 0; --n) {
      c.input.push_back(static_cast<int64_t>(rng() % c.V));
    }
  }
  c.grad.resize(static_cast<size_t>(c.B * c.D) * es);
  for (int64_t k = 0; k < c.B * c.D; ++k) put_value(c.grad.data(), c.dtype, k, value(rng));
  return c;
}

// Runs one call through embag and the reference; returns "" or what went wrong.
std::string run_call(Call& c) {
  const size_t es = element_size(c.dtype);
  const int64_t B = c.B, D = c.D, V = c.V;
  TensorView offsets = make_view_1d(c.offsets.data(), DType::kInt64, B);
  const TensorView input =
      make_view_1d(c.input.data(), DType::kInt64, static_cast<int64_t>(c.input.size()));

  // Forward, embag and reference, each on its own copy of the table (max_norm writes it).
  std::vector<unsigned char> table = c.table, ref_table = c.table;
  std::vector<unsigned char> out(static_cast<size_t>(B * D) * es), ref_out = out;
  std::vector<int64_t> argmax(static_cast<size_t>(B * D)), ref_argmax = argmax;
  TensorView argmax_view = make_view_2d(argmax.data(), DType::kInt64, B, D);
  TensorView ref_argmax_view = make_view_2d(ref_argmax.data(), DType::kInt64, B, D);
  const bool max = c.options.mode == Mode::kMax;
  ForwardInputs in{c.weight_view(table), input, &offsets, nullptr};
  ForwardOutputs fo{make_view_2d(out.data(), c.dtype, B, D), nullptr, max ? &argmax_view : nullptr};
  if (Status s = validate(in, fo, c.options); !s.ok()) return "validate: " + s.message();
  if (Status s = forward(in, fo, c.options); !s.ok()) return "forward: " + s.message();
  ForwardInputs rin{c.weight_view(ref_table), input, &offsets, nullptr};
  if (!ref::forward(
           rin,
           {make_view_2d(ref_out.data(), c.dtype, B, D), nullptr, max ? &ref_argmax_view : nullptr},
           c.options)
           .ok()) {
    return "reference forward refused the call";
  }
  std::string d =
      first_difference("output", "bag", c.dtype, out.data(), D, ref_out.data(), D, B, D);
  if (d.empty()) {
    d = first_difference("renormed table", "row", c.dtype, table.data(), D, ref_table.data(), D, V,
                         D);
  }
  if (!d.empty()) return d;

  // Backward on the table as forward left it.
  Options bo = c.options;
  bo.max_norm.reset();
  BackwardInputs bin;
  bin.weight = c.weight_view(table);
  bin.input = input;
  bin.offsets = &offsets;
  bin.grad_output = make_view_2d(c.grad.data(), c.dtype, B, D);
  bin.argmax = max ? &argmax_view : nullptr;
  std::vector<unsigned char> dense(static_cast<size_t>(V * D) * es), ref_dense = dense;
  TensorView dense_view = make_view_2d(dense.data(), c.dtype, V, D);
  TensorView ref_dense_view = make_view_2d(ref_dense.data(), c.dtype, V, D);
  Options dense_options = bo;
  dense_options.sparse = false;
  BackwardOutputs ref_out_grad;
  ref_out_grad.grad_weight = &ref_dense_view;
  if (!ref::backward(bin, ref_out_grad, dense_options).ok()) return "reference backward refused";
  if (bo.sparse) {
    int64_t U = 0;
    if (Status s = sparse_gradient_rows(bin, bo, &U); !s.ok()) return "rows: " + s.message();
    std::vector<int64_t> rows(static_cast<size_t>(U));
    std::vector<unsigned char> values(static_cast<size_t>(U * D) * es);
    TensorView rows_view = make_view_1d(rows.data(), DType::kInt64, U);
    TensorView values_view = make_view_2d(values.data(), c.dtype, U, D);
    BackwardOutputs so;
    so.grad_weight_rows = &rows_view;
    so.grad_weight_values = &values_view;
    if (Status s = validate_backward(bin, so, bo); !s.ok())
      return "validate_backward: " + s.message();
    if (Status s = backward(bin, so, bo); !s.ok()) return "sparse backward: " + s.message();
    for (int64_t u = 0; u < U; ++u) {
      d = first_difference("sparse values", "row", c.dtype, values.data() + u * D * es, D,
                           ref_dense.data() + rows[static_cast<size_t>(u)] * D * es, D, 1, D);
      if (!d.empty()) return d;
    }
    return "";
  }
  BackwardOutputs dout;
  dout.grad_weight = &dense_view;
  if (Status s = validate_backward(bin, dout, bo); !s.ok())
    return "validate_backward: " + s.message();
  if (Status s = backward(bin, dout, bo); !s.ok()) return "backward: " + s.message();
  return first_difference("dense gradient", "row", c.dtype, dense.data(), D, ref_dense.data(), D, V,
                          D);
}

// A call broken on purpose, with a value unique to (thread, i): the message must carry it, and
// nothing may be written.
std::string run_failing_call(Call& c, int thread, int i) {
  const int64_t bad = c.V + 1000 * thread + i;
  const size_t position = c.input.size() / 2;
  if (c.input.empty()) return "";
  std::vector<int64_t> input = c.input;
  input[position] = bad;
  TensorView offsets = make_view_1d(c.offsets.data(), DType::kInt64, c.B);
  const TensorView input_view =
      make_view_1d(input.data(), DType::kInt64, static_cast<int64_t>(input.size()));
  std::vector<unsigned char> table = c.table;
  std::vector<unsigned char> out(static_cast<size_t>(c.B * c.D) * element_size(c.dtype), 0x7F);
  const std::vector<unsigned char> untouched = out;
  ForwardInputs in{c.weight_view(table), input_view, &offsets, nullptr};
  Options o = c.options;
  o.max_norm = 0.5;  // a call that got past validation would write the table
  o.sparse = false;
  const Status s = (i % 2 ? forward : validate)(in, {make_view_2d(out.data(), c.dtype, c.B, c.D)},
                                                o, Execution{});
  // PyTorch's two wordings: its padding-aware and max loops', and the plain gather's.
  const std::string want =
      o.padding_idx || o.mode == Mode::kMax
          ? "embedding_bag: Expected idx >= 0 && idx < num_embeddings but found idx to be " +
                std::to_string(bad)
          : "Index " + std::to_string(position) + " of input takes value " + std::to_string(bad) +
                " which is not in the valid range [0, " + std::to_string(c.V) + ")";
  if (s.ok() || s.message() != want) {
    return "thread " + std::to_string(thread) + " expected '" + want + "' but got '" + s.message() +
           "'";
  }
  if (out != untouched || table != c.table) return "a refused call wrote its output or table";
  return "";
}

TEST(Concurrency, ThreadsCallingAtOnceEachGetTheirOwnResultsAndErrors) {
  difftest::RestoreGlobals restore;
  std::atomic<bool> done{false};
  std::vector<std::string> failures(kThreads);
  std::vector<int> completed(kThreads, 0);
  // Changes the pool size while calls run: results must not depend on it.
  std::thread resizer([&done] {
    for (int n = 0; !done.load(); ++n) {
      set_num_threads(1 + n % 3);
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([t, &failures, &completed] {
      std::mt19937_64 rng(0xC0C0'0000 + static_cast<uint64_t>(t));
      for (int i = 0; i < kCallsPerThread && failures[t].empty(); ++i) {
        Call c = make_call(rng, t, i);
        std::string f = i % 4 == 3 ? run_failing_call(c, t, i / 4) : run_call(c);
        if (!f.empty()) {
          failures[t] = "thread " + std::to_string(t) + " call " + std::to_string(i) + " (" +
                        dtype_name(c.dtype) + ", " + mode_name(c.options.mode) + "): " + f;
        }
        ++completed[t];
      }
    });
  }
  for (std::thread& w : workers) w.join();
  done = true;
  resizer.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(failures[t], "");
    EXPECT_TRUE(!failures[t].empty() || completed[t] == kCallsPerThread);
  }
}

}  // namespace
}  // namespace embag
