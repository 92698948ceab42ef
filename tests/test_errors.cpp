// SEMANTICS.md's error table as a table: one row per rule, each a valid call changed to break
// exactly that rule, with a line saying why the rule exists.
//
// For every row, embag::validate and embag::forward must both refuse with kInvalidArgument (or
// kUnsupported where a row says so) and a message holding the expected fragments: PyTorch's own
// words with the actual values where PyTorch has a message, the offending name and value where
// it does not. A refused call must change nothing: the output, bag_count and argmax buffers keep
// their sentinel bytes, and the weight, given a max_norm that would renormalise every row it
// reads, keeps its bytes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "embag/embag.h"
#include "error_table_support.h"
#include "reference/reference.h"

namespace embag {
namespace {

constexpr unsigned char kSentinel = 0x7F;

// A valid call (SEMANTICS.md's worked example, float32, mode sum) with every buffer a row might
// point a view at. Views point into this object's own vectors, so it is neither copied nor
// moved.
struct Call {
  Call() {
    // Rows 0..4 of a (5, 2) table; every norm is far above max_norm, so renorm would rewrite
    // every referenced row if validation let a bad call through. The table sits inside a larger
    // buffer so rows that describe a wider layout (bad strides) still point at owned memory.
    weight_data.assign(64, 0.0f);
    for (int i = 0; i < 10; ++i)
      weight_data[static_cast<size_t>(i)] = 10.0f * static_cast<float>(i + 1);
    output_data.assign(5 * 2 * sizeof(double), kSentinel);  // room for a float64 output
    argmax_data.assign(5 * 2 * sizeof(int64_t), kSentinel);
    count_data.assign(5 * sizeof(int64_t), kSentinel);

    inputs.weight = make_view_2d(weight_data.data(), DType::kFloat32, 5, 2);
    inputs.input = make_view_1d(input_data.data(), DType::kInt64, 6);
    offsets = make_view_1d(offsets_data.data(), DType::kInt64, 5);
    inputs.offsets = &offsets;
    psw = make_view_1d(psw_data.data(), DType::kFloat32, 6);
    outputs.output = make_view_2d(output_data.data(), DType::kFloat32, 5, 2);
    bag_count = make_view_1d(count_data.data(), DType::kInt64, 5);
    outputs.bag_count = &bag_count;
    argmax = make_view_2d(argmax_data.data(), DType::kInt64, 5, 2);
    options.mode = Mode::kSum;
    options.max_norm = 1.0;
    // The same (5, 2) table quantized to 8 bits (rows of 10 bytes), inside a larger buffer, for
    // the quantized-table rows (use_quantized()).
    qbytes.assign(128, 0);
    qtable = {qbytes.data(), QuantFormat::kInt8, 5, 2, 10, {}};
    (void)quantize_rows(make_view_2d(weight_data.data(), DType::kFloat32, 5, 2), qtable);
  }

  // The call on the quantized table instead of the float one: a valid call (no max_norm, which
  // quantized tables refuse).
  void use_quantized() {
    inputs.weight = TensorView{};
    inputs.quantized_weight = &qtable;
    options.max_norm.reset();
  }
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  // The input as a 2-D (2, 3) view of the same indices: bags [3,1,1] and [1,4,0].
  void make_input_2d() {
    inputs.input = make_view_2d(input_data.data(), DType::kInt64, 2, 3);
    inputs.offsets = nullptr;
    outputs.output = make_view_2d(output_data.data(), DType::kFloat32, 2, 2);
    bag_count = make_view_1d(count_data.data(), DType::kInt64, 2);
  }

  std::vector<float> weight_data;
  std::vector<int64_t> input_data = {3, 1, 1, 1, 4, 0};
  std::vector<int64_t> offsets_data = {0, 0, 3, 3, 6};
  std::vector<float> psw_data = {1, 2, 3, 4, 5, 6};
  std::vector<double> psw64_data = {1, 2, 3, 4, 5, 6};
  std::vector<float> float_data = {0, 0, 0, 0, 0, 0};
  std::vector<int32_t> int32_data = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  std::vector<unsigned char> output_data, argmax_data, count_data, qbytes;
  QuantizedTable qtable;
  TensorView offsets, psw, bag_count, argmax;
  ForwardInputs inputs;
  ForwardOutputs outputs;
  Options options;
};

struct ErrorRow {
  const char* rule;  // the rule broken, and why it is a rule
  std::function<void(Call&)> mutate;
  std::vector<std::string> fragments;  // each must appear in the message (case-insensitive)
  bool unsupported_allowed = false;    // kUnsupported is an acceptable code too
};

std::vector<ErrorRow> error_rows() {
  std::vector<ErrorRow> rows;
  auto add = [&](const char* rule, std::function<void(Call&)> mutate,
                 std::vector<std::string> fragments, bool unsupported = false) {
    rows.push_back({rule, std::move(mutate), std::move(fragments), unsupported});
  };

  // ---- weight
  add("weight 1-D: a table needs rows and columns",
      [](Call& c) { c.inputs.weight = make_view_1d(c.weight_data.data(), DType::kFloat32, 10); },
      {"weight has to be a 2D Tensor, but got Tensor of dimension 1"});
  add("weight 3-D: a table needs exactly rows and columns",
      [](Call& c) { c.inputs.weight.ndim = 3; },
      {"weight has to be a 2D Tensor, but got Tensor of dimension 3"});
  add("weight int32: tables hold floating point values",
      [](Call& c) { c.inputs.weight.dtype = DType::kInt32; }, {"weight", "int32"});
  add(
      "weight on CUDA: this build runs on the CPU only",
      [](Call& c) {
        c.inputs.weight.device = {DeviceType::kCUDA, 0};
      },
      {"cuda"}, true);
  add("weight null with 10 elements: there is nothing to read",
      [](Call& c) { c.inputs.weight.data = nullptr; }, {"weight", "null"});
  add("weight with column stride 2: kernels need contiguous rows",
      [](Call& c) {
        c.inputs.weight.strides[0] = 4;
        c.inputs.weight.strides[1] = 2;
      },
      {"weight", "stride"});

  // ---- input and offsets
  add("input 3-D: bags are 1-D lists or rows of a 2-D input",
      [](Call& c) { c.inputs.input.ndim = 3; },
      {"input has to be 1D or 2D Tensor, but got Tensor of dimension 3"});
  add("input float32: indices are integers",
      [](Call& c) { c.inputs.input = make_view_1d(c.float_data.data(), DType::kFloat32, 6); },
      {"input", "float32"});
  add("1-D input without offsets: nothing says where bags start",
      [](Call& c) { c.inputs.offsets = nullptr; }, {"offsets has to be a 1D Tensor but got None"});
  add("offsets 2-D: offsets are one list of bag starts",
      [](Call& c) { c.offsets = make_view_2d(c.offsets_data.data(), DType::kInt64, 5, 1); },
      {"offsets has to be a 1D Tensor"});
  add("offsets float32: offsets are positions",
      [](Call& c) { c.offsets = make_view_1d(c.float_data.data(), DType::kFloat32, 5); },
      {"offsets", "float32"});
  add("2-D input with offsets: rows are the bags already",
      [](Call& c) {
        c.make_input_2d();
        c.inputs.offsets = &c.offsets;
      },
      {"if input is 2D, then offsets has to be None"});
  add("offsets[0] = 1: the first bag starts at position 0",
      [](Call& c) {
        c.offsets_data = {1, 1, 3, 3, 6};
      },
      {"offsets[0] has to be 0, i.e., the first sequence in the mini-batch has to start from "
       "position 0. However, got 1"});
  add("offsets[-1] = 7 > N = 6: a bag cannot end past the input",
      [](Call& c) {
        c.offsets_data = {0, 0, 3, 3, 7};
      },
      {"offsets[-1] can not be greater than input's length 6 but got offsets[-1] of 7"});
  add("offsets decreasing: a bag cannot end before it starts",
      [](Call& c) {
        c.offsets_data = {0, 3, 2, 3, 6};
      },
      {"offsets must be non-decreasing, but offsets[1] = 3 > offsets[2] = 2"});
  add("include_last_offset with no offsets: the last offset is the end of the last bag",
      [](Call& c) {
        c.options.include_last_offset = true;
        c.offsets.shape[0] = 0;
      },
      {"include_last_offset: number of offset should be at least 1"});
  add("input not contiguous (stride 2): indices are read as one flat list",
      [](Call& c) {
        c.input_data = {3, 0, 1, 0, 1, 0};
        c.inputs.input.shape[0] = 3;
        c.inputs.input.strides[0] = 2;
        c.offsets_data = {0, 0, 1, 1, 3};
      },
      {"input", "stride"});

  // ---- index range
  add("index -1 at position 2: rows are numbered from 0", [](Call& c) { c.input_data[2] = -1; },
      {"Index 2 of input takes value -1 which is not in the valid range [0, 5)"});
  add("index 5 = V at position 4, in the fourth bag: the table has rows 0..4",
      [](Call& c) { c.input_data[4] = 5; },
      {"Index 4 of input takes value 5 which is not in the valid range [0, 5)"});
  add("index 9 in a 2-D input at (1, 1): the position is counted in the flattened input",
      [](Call& c) {
        c.make_input_2d();
        c.input_data[4] = 9;
      },
      {"Index 4 of input takes value 9 which is not in the valid range [0, 5)"});
  add("index -1 with a padding_idx: PyTorch's padding-aware loop words it its own way",
      [](Call& c) {
        c.options.padding_idx = 0;
        c.input_data[2] = -1;
      },
      {"embedding_bag: Expected idx >= 0 && idx < num_embeddings but found idx to be -1"});
  add("index 5 = V in mode max: PyTorch's max loop words it as the padding-aware one",
      [](Call& c) {
        c.options.mode = Mode::kMax;
        c.input_data[4] = 5;
      },
      {"embedding_bag: Expected idx >= 0 && idx < num_embeddings but found idx to be 5"});

  // ---- padding_idx
  add("padding_idx = V: the padding row must exist", [](Call& c) { c.options.padding_idx = 5; },
      {"padding_idx must be within the number of embeddings, -5 through 4, but got 5"});
  add("padding_idx = -V-1: negative values wrap only once",
      [](Call& c) { c.options.padding_idx = -6; },
      {"padding_idx must be within the number of embeddings, -5 through 4, but got -6"});

  // ---- mode and per_sample_weights
  add("mode 7: only sum, mean and max exist",
      [](Call& c) { c.options.mode = static_cast<Mode>(7); },
      {"mode has to be one of sum, mean or max"});
  add("per_sample_weights with mean: weights only make sense for a weighted sum",
      [](Call& c) {
        c.options.mode = Mode::kMean;
        c.inputs.per_sample_weights = &c.psw;
      },
      {"embedding_bag: per_sample_weights was not None. per_sample_weights is only supported "
       "for mode='sum' (got mode='mean')"});
  add("per_sample_weights with max: weights only make sense for a weighted sum",
      [](Call& c) {
        c.options.mode = Mode::kMax;
        c.inputs.per_sample_weights = &c.psw;
      },
      {"per_sample_weights is only supported for mode='sum' (got mode='max')"});
  add("per_sample_weights of 5 for 6 indices: one weight per index",
      [](Call& c) {
        c.psw.shape[0] = 5;
        c.inputs.per_sample_weights = &c.psw;
      },
      {"embedding_bag: If per_sample_weights (",
       "is not None, then it must have the same shape "
       "as the input ("});
  add("per_sample_weights float64 for a float32 table: one dtype per call",
      [](Call& c) {
        c.psw = make_view_1d(c.psw64_data.data(), DType::kFloat64, 6);
        c.inputs.per_sample_weights = &c.psw;
      },
      {"Expected tensor for argument #1 'weight' to have the same type as tensor for argument #1 "
       "'per_sample_weights'; but type torch.FloatTensor does not equal torch.DoubleTensor "
       "(while checking arguments for embedding_bag)"});
  add("per_sample_weights of 5 with mode mean: PyTorch reports the shape first",
      [](Call& c) {
        c.options.mode = Mode::kMean;
        c.psw.shape[0] = 5;
        c.inputs.per_sample_weights = &c.psw;
      },
      {"must have the same shape as the input"});
  add("per_sample_weights with max and sparse: PyTorch reports max's sparse rule first",
      [](Call& c) {
        c.options.mode = Mode::kMax;
        c.options.sparse = true;
        c.inputs.per_sample_weights = &c.psw;
      },
      {"max mode does not support sparse weights"});
  add("max with scale_grad_by_freq: max's gradient goes to one row, there is nothing to scale",
      [](Call& c) {
        c.options.mode = Mode::kMax;
        c.options.scale_grad_by_freq = true;
      },
      {"max mode does not support scaling the gradient by the frequency"});
  add("max with sparse: PyTorch has no sparse gradient for max",
      [](Call& c) {
        c.options.mode = Mode::kMax;
        c.options.sparse = true;
      },
      {"max mode does not support sparse weights"});

  // ---- outputs
  add("output (4, 2) for 5 bags: the output has one row per bag",
      [](Call& c) { c.outputs.output.shape[0] = 4; }, {"output", "shape"});
  add("output float64 for a float32 table: the output has the weight's dtype",
      [](Call& c) { c.outputs.output = make_view_2d(c.output_data.data(), DType::kFloat64, 5, 2); },
      {"output", "float64"});
  add("bag_count of 4 for 5 bags: one count per bag", [](Call& c) { c.bag_count.shape[0] = 4; },
      {"bag_count"});
  add("bag_count int32: counts are int64", [](Call& c) { c.bag_count.dtype = DType::kInt32; },
      {"bag_count", "int32"});
  // Decision: argmax is max's auxiliary output; asking for it in another mode is a caller's
  // mistake (it would stay unwritten), so it is refused rather than ignored.
  add("argmax with mode sum: only max has a winning row",
      [](Call& c) { c.outputs.argmax = &c.argmax; }, {"argmax"});
  add("argmax int32 with mode max: winning rows are int64",
      [](Call& c) {
        c.options.mode = Mode::kMax;
        c.argmax.dtype = DType::kInt32;
        c.outputs.argmax = &c.argmax;
      },
      {"argmax", "int32"});

  // ---- overlap: an array the call writes shares memory with one it reads or writes. The
  // kernels read and write in parallel, so the result would depend on timing (PyTorch refuses
  // such out= calls with these words). Each row names both arrays.
  const std::string kOverlap =
      "unsupported operation: some elements of the input tensor and the written-to tensor refer "
      "to a single memory location";
  add("output is the table: the kernels would read rows they already overwrote",
      [](Call& c) { c.outputs.output = make_view_2d(c.weight_data.data(), DType::kFloat32, 5, 2); },
      {kOverlap, "output overlaps weight"});
  add("output's last row is the table's first element: one shared float is enough",
      [](Call& c) {
        // the table is elements [9, 19) of the buffer, the output [0, 10)
        c.inputs.weight = make_view_2d(c.weight_data.data() + 9, DType::kFloat32, 5, 2);
        c.outputs.output = make_view_2d(c.weight_data.data(), DType::kFloat32, 5, 2);
      },
      {kOverlap, "output overlaps weight"});
  add("output over per_sample_weights: a weight would be overwritten before it is used",
      [](Call& c) {
        c.inputs.per_sample_weights = &c.psw;
        c.psw = make_view_1d(c.weight_data.data() + 40, DType::kFloat32, 6);
        c.outputs.output = make_view_2d(c.weight_data.data() + 32, DType::kFloat32, 5, 2);
      },
      {kOverlap, "output overlaps per_sample_weights"});
  add("bag_count over the input: counts would overwrite indices still to be read",
      [](Call& c) { c.bag_count = make_view_1d(c.input_data.data(), DType::kInt64, 5); },
      {kOverlap, "bag_count overlaps input"});
  add("bag_count over the offsets",
      [](Call& c) { c.bag_count = make_view_1d(c.offsets_data.data(), DType::kInt64, 5); },
      {kOverlap, "bag_count overlaps offsets"});
  add("argmax over the output: two outputs in one place",
      [](Call& c) {
        c.options.mode = Mode::kMax;
        c.argmax = make_view_2d(c.output_data.data(), DType::kInt64, 5, 2);
        c.outputs.argmax = &c.argmax;
      },
      {kOverlap, "argmax overlaps output"});
  // ---- quantized tables (include/embag/quantized.h): each row starts from the valid quantized
  // call (use_quantized) and breaks one rule.
  add("quantized table with max_norm: max_norm rewrites rows; quantized tables are read-only",
      [](Call& c) {
        c.use_quantized();
        c.options.max_norm = 1.0;
      },
      {"max_norm is not supported with a quantized table"});
  add("a float table and a quantized table: which one would the call read?",
      [](Call& c) {
        c.use_quantized();
        c.inputs.weight = make_view_2d(c.weight_data.data(), DType::kFloat32, 5, 2);
      },
      {"weight or quantized_weight, not both"});
  add("quantized row stride shorter than a row: rows would overlap",
      [](Call& c) {
        c.use_quantized();
        c.qtable.row_stride = 9;
      },
      {"row stride (9 bytes) must hold a row of format int8 with D = 2: 10 bytes (2 of codes, 8 of "
       "scale and bias)"});
  add("4-bit table whose stride holds an 8-bit row's codes only: D and the format disagree",
      [](Call& c) {
        c.use_quantized();
        c.qtable.format = QuantFormat::kInt4;
        c.qtable.dim = 16;
        c.qtable.row_stride = 10;
        c.outputs.output.shape[1] = 16;
      },
      {"row stride (10 bytes)", "int4 with D = 16: 12 bytes"});
  add("8-bit float table whose stride is shorter than D: an FP8 row is D bytes",
      [](Call& c) {
        c.use_quantized();
        c.qtable.format = QuantFormat::kFp8E4M3FN;
        c.qtable.dim = 2;
        c.qtable.row_stride = 1;
      },
      {"row stride (1 bytes) must hold a row of format fp8_e4m3fn with D = 2: 2 bytes (one per "
       "element)"});
  add("unknown quantized format",
      [](Call& c) {
        c.use_quantized();
        c.qtable.format = static_cast<QuantFormat>(77);
      },
      {"unknown format (77)"});
  add("negative quantized size",
      [](Call& c) {
        c.use_quantized();
        c.qtable.rows = -1;
      },
      {"quantized_weight has a negative size"});
  add("quantized D beyond the kernels' int32 extents",
      [](Call& c) {
        c.use_quantized();
        c.qtable.dim = int64_t{1} << 31;
      },
      {"quantized_weight's D is 2147483648"});
  add("quantized rows without data",
      [](Call& c) {
        c.use_quantized();
        c.qtable.data = nullptr;
      },
      {"quantized_weight has 5 rows but no data"});
  add(
      "quantized table on a GPU: no GPU kernels for quantized tables",
      [](Call& c) {
        c.use_quantized();
        c.qtable.device = {DeviceType::kCUDA, 0};
      },
      {"quantized tables run on the CPU only"}, true);
  add("quantized table, float64 per_sample_weights: a quantized table pools in float32",
      [](Call& c) {
        c.use_quantized();
        c.psw = make_view_1d(c.psw64_data.data(), DType::kFloat64, 6);
        c.inputs.per_sample_weights = &c.psw;
      },
      {"per_sample_weights has dtype float64", "float32 (a quantized table pools in float32)"});
  add("quantized table, float64 output: the output is float32",
      [](Call& c) {
        c.use_quantized();
        c.outputs.output = make_view_2d(c.output_data.data(), DType::kFloat64, 5, 2);
      },
      {"output", "float32 for a quantized table"});
  add("quantized table, index out of range: the index rules hold for every table",
      [](Call& c) {
        c.use_quantized();
        c.input_data[4] = 5;
      },
      {"Index 4 of input takes value 5 which is not in the valid range [0, 5)"});
  add("quantized table, padding_idx out of range",
      [](Call& c) {
        c.use_quantized();
        c.options.padding_idx = 5;
      },
      {"padding_idx must be within the number of embeddings, -5 through 4, but got 5"});
  add("output over the quantized table's bytes",
      [](Call& c) {
        c.use_quantized();
        c.outputs.output = make_view_2d(c.qbytes.data() + 40, DType::kFloat32, 5, 2);
      },
      {kOverlap, "output overlaps quantized_weight"});
  add("max_norm's table over the input: renormalised rows would overwrite indices",
      [](Call& c) {
        // A table whose bytes hold the indices too (sizes agree: 6 int64 = 12 float32).
        c.inputs.weight = make_view_2d(c.input_data.data(), DType::kFloat32, 3, 2);
        c.input_data = {0, 1, 1, 1, 2, 0};
      },
      {kOverlap, "weight (renormalised by max_norm) overlaps input"});
  return rows;
}

// The bytes a call may write: the table and every output buffer.
struct Snapshot {
  explicit Snapshot(const Call& c)
      : weight(c.weight_data),
        output(c.output_data),
        argmax(c.argmax_data),
        count(c.count_data),
        qbytes(c.qbytes) {}
  bool operator==(const Snapshot& o) const {
    return weight == o.weight && output == o.output && argmax == o.argmax && count == o.count &&
           qbytes == o.qbytes;
  }
  std::vector<float> weight;
  std::vector<unsigned char> output, argmax, count, qbytes;
};

TEST(Errors, BaselineCallIsValid) {
  // Every row below breaks exactly one rule only if the call it starts from breaks none.
  Call c;
  ASSERT_TRUE(validate(c.inputs, c.outputs, c.options).ok())
      << validate(c.inputs, c.outputs, c.options).message();
  const Snapshot before(c);
  const Status s = forward(c.inputs, c.outputs, c.options);
  ASSERT_TRUE(s.ok()) << s.message();
  // And it would change the weight: the rows' "nothing changed" checks mean something.
  EXPECT_NE(c.weight_data, before.weight);
}

// The quantized rows start from this call: it must be valid and write the output.
TEST(Errors, QuantizedBaselineCallIsValid) {
  Call c;
  c.use_quantized();
  ASSERT_TRUE(validate(c.inputs, c.outputs, c.options).ok())
      << validate(c.inputs, c.outputs, c.options).message();
  const Snapshot before(c);
  const Status s = forward(c.inputs, c.outputs, c.options);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_NE(c.output_data, before.output);
  EXPECT_EQ(c.qbytes, before.qbytes);
}

TEST(Errors, EachRuleIsRefusedAndNothingIsWritten) {
  for (const ErrorRow& row : error_rows()) {
    SCOPED_TRACE(row.rule);
    for (bool run : {false, true}) {
      SCOPED_TRACE(run ? "embag::forward" : "embag::validate");
      Call c;
      row.mutate(c);
      const Snapshot before(c);
      const Status s =
          run ? forward(c.inputs, c.outputs, c.options) : validate(c.inputs, c.outputs, c.options);
      errortest::expect_refused(s, row.fragments, row.unsupported_allowed);
      EXPECT_TRUE(Snapshot(c) == before) << "a refused call wrote to the weight or an output";
    }
  }
}

// Arrays that share an allocation but no element are not an overlap: columns [0, 2) of a wide
// buffer as the table and columns [2, 4) as the output (their byte ranges interleave), and an
// output right after the table's last element.
TEST(Errors, InterleavedButDisjointViewsAreAccepted) {
  for (int layout = 0; layout < 2; ++layout) {
    SCOPED_TRACE(layout == 0 ? "columns of one buffer" : "adjacent ranges");
    Call c;
    c.options.max_norm.reset();
    std::vector<float> wide(40, 0.0f);
    for (int r = 0; r < 5; ++r) {
      wide[static_cast<size_t>(r * 4)] = static_cast<float>(2 * r + 1);
      wide[static_cast<size_t>(r * 4 + 1)] = static_cast<float>(2 * r + 2);
    }
    if (layout == 0) {
      c.inputs.weight = make_view_2d(wide.data(), DType::kFloat32, 5, 2, 4);
      c.outputs.output = make_view_2d(wide.data() + 2, DType::kFloat32, 5, 2, 4);
    } else {
      for (int i = 0; i < 10; ++i) wide[static_cast<size_t>(i)] = static_cast<float>(i + 1);
      c.inputs.weight = make_view_2d(wide.data(), DType::kFloat32, 5, 2);
      c.outputs.output = make_view_2d(wide.data() + 10, DType::kFloat32, 5, 2);
    }
    const Status s = forward(c.inputs, c.outputs, c.options);
    ASSERT_TRUE(s.ok()) << s.message();
    // SEMANTICS.md's worked example, sum: bag 1 is rows 3, 1, 1 = [7+3+3, 8+4+4].
    const float* out = static_cast<const float*>(c.outputs.output.data);
    const int64_t stride = c.outputs.output.strides[0];
    EXPECT_EQ(out[stride * 1], 13.0f);
    EXPECT_EQ(out[stride * 1 + 1], 16.0f);
  }
}

// SEMANTICS.md's choice: with include_last_offset and off[B] < N, positions past off[B] belong
// to no bag, so junk there (out of range, negative) is neither read nor validated nor renormed.
TEST(Errors, JunkPastLastOffsetIsAccepted) {
  for (Mode mode : {Mode::kSum, Mode::kMean, Mode::kMax}) {
    SCOPED_TRACE(mode_name(mode));
    Call c;
    c.input_data = {3, 1, 1, 99, -5, 1000000};
    c.offsets_data = {0, 1, 3};  // bags [3] and [1, 1]; positions 3..5 are in no bag
    c.options.include_last_offset = true;
    c.options.mode = mode;
    c.outputs.output = make_view_2d(c.output_data.data(), DType::kFloat32, 2, 2);
    c.offsets.shape[0] = 3;
    c.bag_count.shape[0] = 2;
    if (mode == Mode::kMax) {
      c.argmax.shape[0] = 2;
      c.outputs.argmax = &c.argmax;
    }
    const Status v = validate(c.inputs, c.outputs, c.options);
    ASSERT_TRUE(v.ok()) << v.message();

    // The reference on a copy says what must come out.
    std::vector<float> ref_weight = c.weight_data;
    std::vector<float> ref_out(4, 0);
    std::vector<int64_t> ref_count(2, 0), ref_argmax(4, 0);
    ForwardInputs ref_inputs = c.inputs;
    ref_inputs.weight = make_view_2d(ref_weight.data(), DType::kFloat32, 5, 2);
    TensorView count_view = make_view_1d(ref_count.data(), DType::kInt64, 2);
    TensorView argmax_view = make_view_2d(ref_argmax.data(), DType::kInt64, 2, 2);
    ASSERT_TRUE(ref::forward(ref_inputs,
                             {make_view_2d(ref_out.data(), DType::kFloat32, 2, 2), &count_view,
                              mode == Mode::kMax ? &argmax_view : nullptr},
                             c.options)
                    .ok());

    const Status s = forward(c.inputs, c.outputs, c.options);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(c.weight_data, ref_weight) << "only rows 1 and 3 may be renormalised";
    EXPECT_EQ(0, std::memcmp(c.output_data.data(), ref_out.data(), sizeof(float) * 4));
    EXPECT_EQ(0, std::memcmp(c.count_data.data(), ref_count.data(), sizeof(int64_t) * 2));
    if (mode == Mode::kMax) {
      EXPECT_EQ(0, std::memcmp(c.argmax_data.data(), ref_argmax.data(), sizeof(int64_t) * 4));
    }
  }
}

// Forcing an ISA that is not compiled in, or that this CPU lacks, must fail and change nothing.
TEST(Errors, SetIsaRefusesAnUnavailableIsa) {
  const std::vector<Isa> compiled = compiled_isas(), supported = supported_isas();
  auto has = [](const std::vector<Isa>& list, Isa isa) {
    return std::find(list.begin(), list.end(), isa) != list.end();
  };
  std::vector<Isa> unavailable;
  for (Isa isa : known_isas()) {
    // GPU ISAs are chosen by the tensors' device; set_isa refuses them all (tested below too).
    if (!has(compiled, isa) || !has(supported, isa)) unavailable.push_back(isa);
  }
  if (unavailable.empty()) {
    GTEST_SKIP() << "every ISA embag knows is both compiled in and supported by this CPU, so "
                    "there is none to refuse";
  }
  ASSERT_TRUE(set_isa(std::nullopt).ok());
  Isa before{};
  ASSERT_TRUE(selected_isa(&before).ok());
  for (Isa isa : unavailable) {
    SCOPED_TRACE(isa_name(isa));
    const Status s = set_isa(isa);
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.message();
    EXPECT_NE(s.message().find(isa_name(isa)), std::string::npos) << s.message();
    Isa after{};
    ASSERT_TRUE(selected_isa(&after).ok());
    EXPECT_EQ(after, before) << "a refused set_isa changed the selection";
  }
  ASSERT_TRUE(set_isa(std::nullopt).ok());
}

}  // namespace
}  // namespace embag
