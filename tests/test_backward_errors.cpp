// embag::backward's rules as a table: one row per rule, each a valid backward call changed to
// break exactly that rule, with a line saying why the rule exists.
//
// For every row, embag::validate_backward and embag::backward must both refuse with
// kInvalidArgument (or kUnsupported where a row says so) and a message holding the expected
// fragments (the rule, and the values that broke it). A refused call must change nothing: every
// output buffer (dense gradient, sparse rows and values, grad_per_sample_weights) keeps its
// sentinel bytes and the read-only arrays keep theirs. Rows that break a rule of the inputs are
// also refused by sparse_gradient_rows, which then leaves its result alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "embag/embag.h"
#include "error_table_support.h"
#include "reference/reference.h"

namespace embag {
namespace {

constexpr unsigned char kSentinel = 0x7F;

// A valid call (SEMANTICS.md's worked example in float32, mode sum, dense gradient) with every
// buffer a row might point a view at. Views point into this object's own vectors, so it is
// neither copied nor moved. The bags reference rows 0, 1, 3 and 4: U = 4.
struct Call {
  Call() {
    weight_data.assign(64, 0.0f);
    for (int i = 0; i < 10; ++i) {
      weight_data[static_cast<size_t>(i)] = static_cast<float>(i + 1);
    }
    grad_output_data.assign(64, 0.0f);
    for (int i = 0; i < 10; ++i) {
      grad_output_data[static_cast<size_t>(i)] = 0.5f * static_cast<float>(i + 1);
    }
    // Outputs have room for float64 and for wider shapes, so rows describing those still point
    // at owned memory.
    grad_weight_data.assign(5 * 4 * sizeof(double), kSentinel);
    rows_data.assign(8 * sizeof(int64_t), kSentinel);
    values_data.assign(8 * 4 * sizeof(double), kSentinel);
    grad_psw_data.assign(8 * sizeof(double), kSentinel);
    // What forward's max gives for these bags: -1 for the empty bags 0, 2 and 4, the winning
    // rows 3 and 4 for bags 1 and 3.
    const std::vector<int64_t> winners = {-1, -1, 3, 3, -1, -1, 4, 4, -1, -1};
    argmax_data.assign(5 * 4 * sizeof(int64_t), 0);
    std::memcpy(argmax_data.data(), winners.data(), winners.size() * sizeof(int64_t));

    inputs.weight = make_view_2d(weight_data.data(), DType::kFloat32, 5, 2);
    inputs.input = make_view_1d(input_data.data(), DType::kInt64, 6);
    offsets = make_view_1d(offsets_data.data(), DType::kInt64, 5);
    inputs.offsets = &offsets;
    psw = make_view_1d(psw_data.data(), DType::kFloat32, 6);
    inputs.grad_output = make_view_2d(grad_output_data.data(), DType::kFloat32, 5, 2);
    argmax = make_view_2d(argmax_data.data(), DType::kInt64, 5, 2);
    grad_weight = make_view_2d(grad_weight_data.data(), DType::kFloat32, 5, 2);
    outputs.grad_weight = &grad_weight;
    rows = make_view_1d(rows_data.data(), DType::kInt64, 4);
    values = make_view_2d(values_data.data(), DType::kFloat32, 4, 2);
    grad_psw = make_view_1d(grad_psw_data.data(), DType::kFloat32, 6);
    options.mode = Mode::kSum;
  }
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  // Mode max with its argmax.
  void make_max() {
    options.mode = Mode::kMax;
    inputs.argmax = &argmax;
  }
  // options.sparse with (U) rows and (U, D) values instead of the dense gradient.
  void make_sparse() {
    options.sparse = true;
    outputs.grad_weight = nullptr;
    outputs.grad_weight_rows = &rows;
    outputs.grad_weight_values = &values;
  }
  // per_sample_weights and their gradient.
  void make_psw() {
    inputs.per_sample_weights = &psw;
    outputs.grad_per_sample_weights = &grad_psw;
  }

  std::vector<float> weight_data, grad_output_data;
  std::vector<int64_t> input_data = {3, 1, 1, 1, 4, 0};
  std::vector<int64_t> offsets_data = {0, 0, 3, 3, 6};
  std::vector<float> psw_data = {1, 2, 3, 4, 5, 6};
  std::vector<double> float64_data = std::vector<double>(64, 0.0);
  std::vector<float> float_data = {0, 0, 0, 0, 0, 0};
  std::vector<unsigned char> grad_weight_data, rows_data, values_data, grad_psw_data, argmax_data;
  TensorView offsets, psw, argmax, grad_weight, rows, values, grad_psw;
  BackwardInputs inputs;
  BackwardOutputs outputs;
  Options options;
};

struct ErrorRow {
  const char* rule;  // the rule broken, and why it is a rule
  std::function<void(Call&)> mutate;
  std::vector<std::string> fragments;  // each must appear in the message (case-insensitive)
  bool input_rule = false;             // sparse_gradient_rows must refuse it too
  bool unsupported_allowed = false;    // kUnsupported is an acceptable code too
};

std::vector<ErrorRow> error_rows() {
  std::vector<ErrorRow> rows;
  // A rule about what only backward reads or writes: grad_output, argmax, the outputs.
  // sparse_gradient_rows does not look at those (U depends on the forward's arguments alone).
  auto add = [&](const char* rule, std::function<void(Call&)> mutate,
                 std::vector<std::string> fragments, bool unsupported = false) {
    rows.push_back({rule, std::move(mutate), std::move(fragments), false, unsupported});
  };
  // A rule about the forward's arguments: sparse_gradient_rows refuses it as well.
  auto add_input = [&](const char* rule, std::function<void(Call&)> mutate,
                       std::vector<std::string> fragments) {
    rows.push_back({rule, std::move(mutate), std::move(fragments), true, false});
  };

  // ---- grad_output: one gradient row per bag, one column per embedding column
  add("grad_output (5, 3) for D = 2: one gradient column per embedding column",
      [](Call& c) { c.inputs.grad_output.shape[1] = 3; },
      {"grad_output must have shape [5, 2] but has shape", "5, 3", "dimension 1"});
  add("grad_output (4, 2) for 5 bags: one gradient row per bag",
      [](Call& c) { c.inputs.grad_output.shape[0] = 4; },
      {"grad_output must have shape [5, 2] but has shape", "4, 2", "dimension 0"});
  add("grad_output 1-D: the forward output it matches is (B, D)",
      [](Call& c) {
        c.inputs.grad_output = make_view_1d(c.grad_output_data.data(), DType::kFloat32, 10);
      },
      {"grad_output must have shape [5, 2]"});
  add("grad_output float64 for a float32 table: the gradient has the output's dtype",
      [](Call& c) {
        c.inputs.grad_output = make_view_2d(c.float64_data.data(), DType::kFloat64, 5, 2);
      },
      {"grad_output", "float64", "float32"});
  add("grad_output null with 10 elements: there is nothing to read",
      [](Call& c) { c.inputs.grad_output.data = nullptr; }, {"grad_output", "null"});
  add("grad_output with column stride 2: kernels need contiguous rows",
      [](Call& c) {
        c.inputs.grad_output.strides[0] = 4;
        c.inputs.grad_output.strides[1] = 2;
      },
      {"grad_output", "stride"});
  add(
      "grad_output on CUDA: this build runs on the CPU only",
      [](Call& c) {
        c.inputs.grad_output.device = {DeviceType::kCUDA, 0};
      },
      {"cuda"}, true);

  // ---- max and its argmax
  add("max without argmax: the gradient goes to the row that won, which only forward knows",
      [](Call& c) {
        c.make_max();
        c.inputs.argmax = nullptr;
      },
      {"argmax"});
  add("argmax (5, 3) for (B, D) = (5, 2): one winning row per output element",
      [](Call& c) {
        c.make_max();
        c.argmax.shape[1] = 3;
        c.argmax.strides[0] = 3;
      },
      {"argmax", "[5, 2]"});
  add("argmax int32: winning rows are int64, as forward writes them",
      [](Call& c) {
        c.make_max();
        c.argmax.dtype = DType::kInt32;
      },
      {"argmax", "int32"});
  add("argmax entry 7 with V = 5: a gradient cannot go to a row that does not exist",
      [](Call& c) {
        c.make_max();
        const int64_t bad = 7;
        std::memcpy(c.argmax_data.data() + 3 * sizeof(int64_t), &bad, sizeof bad);
      },
      {"argmax", "7"});
  add("argmax entry -2: only -1 (empty bag) or a row",
      [](Call& c) {
        c.make_max();
        const int64_t bad = -2;
        std::memcpy(c.argmax_data.data(), &bad, sizeof bad);
      },
      {"argmax", "-2"});
  add("argmax entry 4 for bag 1 = rows {3, 1, 1}: only a row the bag holds can have won",
      [](Call& c) {
        c.make_max();
        const int64_t bad = 4;
        std::memcpy(c.argmax_data.data() + 2 * sizeof(int64_t), &bad, sizeof bad);
      },
      {"argmax[1][0] is 4", "bag 1 does not hold"});
  add("argmax entry 3 for the empty bag 0: a bag with no valid position has no winner",
      [](Call& c) {
        c.make_max();
        const int64_t bad = 3;
        std::memcpy(c.argmax_data.data(), &bad, sizeof bad);
      },
      {"argmax[0][0] is 3", "bag 0 does not hold"});
  add("argmax entry -1 for bag 3 = rows {1, 4, 0}: a non-empty bag always has a winner",
      [](Call& c) {
        c.make_max();
        const int64_t bad = -1;
        std::memcpy(c.argmax_data.data() + 7 * sizeof(int64_t), &bad, sizeof bad);
      },
      {"argmax[3][1] is -1", "bag 3 holds 3 valid positions"});
  // Decision (as in forward): argmax belongs to max; passing it with sum is a caller's mistake
  // (it would be silently unused), so it is refused rather than ignored.
  add("argmax with mode sum: only max routes the gradient by a winning row",
      [](Call& c) { c.inputs.argmax = &c.argmax; }, {"argmax"});
  add_input("max with sparse: PyTorch has no sparse gradient for max",
            [](Call& c) {
              c.make_max();
              c.make_sparse();
            },
            {"max mode does not support sparse weights"});
  add_input(
      "max with scale_grad_by_freq: max's gradient goes to one row, there is nothing to scale",
      [](Call& c) {
        c.make_max();
        c.options.scale_grad_by_freq = true;
      },
      {"max mode does not support scaling the gradient by the frequency"});

  // ---- dense or sparse: exactly one layout
  add("dense call with no grad_weight: there is nowhere to write the gradient",
      [](Call& c) { c.outputs.grad_weight = nullptr; }, {"grad_weight"});
  add("dense call with sparse outputs too: sparse=False gives one dense gradient",
      [](Call& c) {
        c.outputs.grad_weight_rows = &c.rows;
        c.outputs.grad_weight_values = &c.values;
      },
      {"grad_weight_rows"});
  add("sparse call with a dense grad_weight too: sparse=True gives rows and values",
      [](Call& c) {
        c.make_sparse();
        c.outputs.grad_weight = &c.grad_weight;
      },
      {"sparse", "grad_weight"});
  add("sparse call with neither rows nor values: there is nowhere to write the gradient",
      [](Call& c) {
        c.make_sparse();
        c.outputs.grad_weight_rows = nullptr;
        c.outputs.grad_weight_values = nullptr;
      },
      {"grad_weight_rows"});
  add("sparse call without values: the rows alone are not a gradient",
      [](Call& c) {
        c.make_sparse();
        c.outputs.grad_weight_values = nullptr;
      },
      {"grad_weight_values"});
  add("sparse rows of 3 when the bags reference 4 rows: U comes from sparse_gradient_rows",
      [](Call& c) {
        c.make_sparse();
        c.rows.shape[0] = 3;
      },
      {"grad_weight_rows", "[4]"});
  add("sparse values (5, 2) when U = 4: one value row per listed row",
      [](Call& c) {
        c.make_sparse();
        c.values.shape[0] = 5;
      },
      {"grad_weight_values", "[4, 2]"});
  add("sparse rows int32: rows are int64 (PyTorch's index dtype)",
      [](Call& c) {
        c.make_sparse();
        c.rows.dtype = DType::kInt32;
      },
      {"grad_weight_rows", "int32"});
  add("sparse values float64 for a float32 table: the gradient has the weight's dtype",
      [](Call& c) {
        c.make_sparse();
        c.values = make_view_2d(c.values_data.data(), DType::kFloat64, 4, 2);
      },
      {"grad_weight_values", "float64"});
  add("grad_weight (4, 2) for V = 5: one gradient row per table row",
      [](Call& c) { c.grad_weight.shape[0] = 4; }, {"grad_weight must have shape [5, 2]"});
  add("grad_weight float64 for a float32 table: the gradient has the weight's dtype",
      [](Call& c) {
        c.grad_weight = make_view_2d(c.grad_weight_data.data(), DType::kFloat64, 5, 2);
      },
      {"grad_weight", "float64"});
  add("grad_weight with column stride 2: kernels write contiguous rows",
      [](Call& c) {
        c.grad_weight.strides[0] = 4;
        c.grad_weight.strides[1] = 2;
      },
      {"grad_weight", "stride"});

  // ---- per_sample_weights and their gradient
  add("grad_per_sample_weights without per_sample_weights: there is no weight to differentiate",
      [](Call& c) { c.outputs.grad_per_sample_weights = &c.grad_psw; },
      {"grad_per_sample_weights needs per_sample_weights"});
  add("grad_per_sample_weights of 5 for 6 positions: one gradient per index",
      [](Call& c) {
        c.make_psw();
        c.grad_psw.shape[0] = 5;
      },
      {"grad_per_sample_weights", "shape"});
  add("grad_per_sample_weights float64 for a float32 table: one dtype per call",
      [](Call& c) {
        c.make_psw();
        c.grad_psw = make_view_1d(c.grad_psw_data.data(), DType::kFloat64, 6);
      },
      {"grad_per_sample_weights", "float64"});

  // ---- the forward's rules on the inputs, which backward reads the same way
  add_input(
      "weight 1-D: a table needs rows and columns",
      [](Call& c) { c.inputs.weight = make_view_1d(c.weight_data.data(), DType::kFloat32, 10); },
      {"weight has to be a 2D Tensor, but got Tensor of dimension 1"});
  add_input("input float32: indices are integers",
            [](Call& c) { c.inputs.input = make_view_1d(c.float_data.data(), DType::kFloat32, 6); },
            {"input", "float32"});
  add_input("1-D input without offsets: nothing says where bags start",
            [](Call& c) { c.inputs.offsets = nullptr; },
            {"offsets has to be a 1D Tensor but got None"});
  add_input("offsets[0] = 1: the first bag starts at position 0",
            [](Call& c) {
              c.offsets_data = {1, 1, 3, 3, 6};
            },
            {"offsets[0] has to be 0, i.e., the first sequence in the mini-batch has to start "
             "from position 0. However, got 1"});
  add_input("offsets decreasing: a bag cannot end before it starts",
            [](Call& c) {
              c.offsets_data = {0, 3, 2, 3, 6};
            },
            {"offsets must be non-decreasing, but offsets[1] = 3 > offsets[2] = 2"});
  add_input("index 5 = V at position 4: the table has rows 0..4",
            [](Call& c) { c.input_data[4] = 5; },
            {"Index 4 of input takes value 5 which is not in the valid range [0, 5)"});
  add_input("index -1 at position 2: rows are numbered from 0",
            [](Call& c) { c.input_data[2] = -1; },
            {"Index 2 of input takes value -1 which is not in the valid range [0, 5)"});
  add_input("index -1 with a padding_idx: PyTorch's padding-aware wording",
            [](Call& c) {
              c.options.padding_idx = 0;
              c.input_data[2] = -1;
            },
            {"embedding_bag: Expected idx >= 0 && idx < num_embeddings but found idx to be -1"});
  add_input("padding_idx = V: the padding row must exist",
            [](Call& c) { c.options.padding_idx = 5; },
            {"padding_idx must be within the number of embeddings, -5 through 4, but got 5"});
  add_input("mode 7: only sum, mean and max exist",
            [](Call& c) { c.options.mode = static_cast<Mode>(7); },
            {"mode has to be one of sum, mean or max"});
  add_input("per_sample_weights with mean: weights only make sense for a weighted sum",
            [](Call& c) {
              c.options.mode = Mode::kMean;
              c.make_psw();
            },
            {"per_sample_weights is only supported for mode='sum' (got mode='mean')"});
  add_input(
      "per_sample_weights of 5 for 6 indices: one weight per index",
      [](Call& c) {
        c.make_psw();
        c.psw.shape[0] = 5;
      },
      {"embedding_bag: If per_sample_weights (", "then it must have the same shape as the input"});

  // ---- overlap: a gradient written over an array the call reads (or another gradient). The
  // kernels read and write in parallel, so the result would depend on timing.
  const std::string kOverlap =
      "unsupported operation: some elements of the input tensor and the written-to tensor refer "
      "to a single memory location";
  add("grad_weight over grad_output: gradients would be overwritten before they are read",
      [](Call& c) {
        c.grad_weight = make_view_2d(c.grad_output_data.data(), DType::kFloat32, 5, 2);
      },
      {kOverlap, "grad_weight overlaps grad_output"});
  add("grad_weight over the table",
      [](Call& c) { c.grad_weight = make_view_2d(c.weight_data.data(), DType::kFloat32, 5, 2); },
      {kOverlap, "grad_weight overlaps weight"});
  add("grad_weight over argmax (max): winning rows would be overwritten before they are read",
      [](Call& c) {
        c.make_max();
        c.grad_weight = make_view_2d(c.argmax_data.data() + 8, DType::kFloat32, 5, 2);
      },
      {kOverlap, "grad_weight overlaps argmax"});
  add("grad_weight_rows over the input (sparse)",
      [](Call& c) {
        c.make_sparse();
        c.rows = make_view_1d(c.input_data.data() + 2, DType::kInt64, 4);
      },
      {kOverlap, "grad_weight_rows overlaps input"});
  add("grad_weight_values over grad_weight_rows (sparse): two outputs in one place",
      [](Call& c) {
        c.make_sparse();
        c.values = make_view_2d(c.rows_data.data(), DType::kFloat32, 4, 2);
      },
      {kOverlap, "grad_weight_values overlaps grad_weight_rows"});
  add("grad_per_sample_weights over per_sample_weights",
      [](Call& c) {
        c.make_psw();
        c.grad_psw = make_view_1d(c.psw_data.data(), DType::kFloat32, 6);
      },
      {kOverlap, "grad_per_sample_weights overlaps per_sample_weights"});
  return rows;
}

// The bytes a call may write, and the read-only arrays (which it must not write either).
struct Snapshot {
  explicit Snapshot(const Call& c)
      : weight(c.weight_data),
        grad_output(c.grad_output_data),
        psw(c.psw_data),
        grad_weight(c.grad_weight_data),
        rows(c.rows_data),
        values(c.values_data),
        grad_psw(c.grad_psw_data),
        argmax(c.argmax_data) {}
  bool operator==(const Snapshot& o) const {
    return weight == o.weight && grad_output == o.grad_output && psw == o.psw &&
           grad_weight == o.grad_weight && rows == o.rows && values == o.values &&
           grad_psw == o.grad_psw && argmax == o.argmax;
  }
  std::vector<float> weight, grad_output, psw;
  std::vector<unsigned char> grad_weight, rows, values, grad_psw, argmax;
};

// Every row below breaks exactly one rule only if the calls it starts from break none; and
// those calls write, so the rows' "nothing changed" checks mean something.
TEST(BackwardErrors, BaselineCallsAreValidAndWrite) {
  const std::vector<std::pair<const char*, std::function<void(Call&)>>> baselines = {
      {"dense sum", [](Call&) {}},
      {"dense sum with per_sample_weights", [](Call& c) { c.make_psw(); }},
      {"sparse sum", [](Call& c) { c.make_sparse(); }},
      {"dense max", [](Call& c) { c.make_max(); }},
  };
  for (const auto& [name, setup] : baselines) {
    SCOPED_TRACE(name);
    Call c;
    setup(c);
    const Status v = validate_backward(c.inputs, c.outputs, c.options);
    ASSERT_TRUE(v.ok()) << v.message();
    int64_t u = -1;
    const Status su = sparse_gradient_rows(c.inputs, c.options, &u);
    ASSERT_TRUE(su.ok()) << su.message();
    EXPECT_EQ(u, 4) << "rows 0, 1, 3 and 4 are referenced";
    const Snapshot before(c);
    const Status s = backward(c.inputs, c.outputs, c.options);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_FALSE(Snapshot(c) == before) << "the baseline call wrote nothing";
  }
}

TEST(BackwardErrors, EachRuleIsRefusedAndNothingIsWritten) {
  for (const ErrorRow& row : error_rows()) {
    SCOPED_TRACE(row.rule);
    for (int call = 0; call < 3; ++call) {
      if (call == 2 && !row.input_rule) continue;
      const char* names[] = {"embag::validate_backward", "embag::backward",
                             "embag::sparse_gradient_rows"};
      SCOPED_TRACE(names[call]);
      Call c;
      row.mutate(c);
      const Snapshot before(c);
      constexpr int64_t kUntouched = -12345;
      int64_t u = kUntouched;
      const Status s = call == 0   ? validate_backward(c.inputs, c.outputs, c.options)
                       : call == 1 ? backward(c.inputs, c.outputs, c.options)
                                   : sparse_gradient_rows(c.inputs, c.options, &u);
      errortest::expect_refused(s, row.fragments, row.unsupported_allowed);
      EXPECT_TRUE(Snapshot(c) == before) << "a refused call wrote to an output or an input";
      EXPECT_EQ(u, kUntouched) << "a refused sparse_gradient_rows wrote its result";
    }
  }
}

// The reference must refuse what embag refuses, at least where staying in bounds depends on it
// (its messages are terse and not checked): a reference that quietly accepted a bad call would
// make the differential tests compare against garbage.
TEST(BackwardErrors, ReferenceRefusesTheSameCallsAndWritesNothing) {
  for (const ErrorRow& row : error_rows()) {
    SCOPED_TRACE(row.rule);
    Call c;
    row.mutate(c);
    if (c.inputs.grad_output.device.type != DeviceType::kCPU) continue;  // not the reference's
    if (std::string(row.rule).find("stride 2") != std::string::npos) continue;  // nor layout
    if (std::string(row.rule).find("argmax with mode sum") != std::string::npos) continue;
    if (std::string(row.rule).find(" over ") != std::string::npos) continue;  // nor aliasing
    const Snapshot before(c);
    EXPECT_FALSE(ref::backward(c.inputs, c.outputs, c.options).ok());
    EXPECT_TRUE(Snapshot(c) == before) << "the reference wrote during a refused call";
  }
}

}  // namespace
}  // namespace embag
