// Views built to break embag's limits: extents and strides that do not fit the kernels' int32,
// shapes whose element count overflows, byte spans past int64, N at INT32_MAX. Each must get a
// clear error naming the view, the value and the rule, before anything is read past the view's
// first bytes or written: outputs and the table (with max_norm set) keep every byte.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "embag/embag.h"

namespace embag {
namespace {

constexpr int64_t kInt32Max = INT32_MAX;
constexpr unsigned char kSentinel = 0x7F;

// A small valid forward + backward call (V = 4, D = 3, two bags) whose views a row may break.
struct Call {
  Call() {
    for (int i = 0; i < 12; ++i) weight_data[static_cast<size_t>(i)] = static_cast<float>(i + 1);
    std::memset(out_data, kSentinel, sizeof out_data);
    std::memset(argmax_data, kSentinel, sizeof argmax_data);
    std::memset(grad_weight_data, kSentinel, sizeof grad_weight_data);
    std::memset(values_data, kSentinel, sizeof values_data);
    std::memset(rows_data, kSentinel, sizeof rows_data);
    for (float& g : grad_data) g = 1.0f;
    weight = make_view_2d(weight_data, DType::kFloat32, 4, 3);
    input = make_view_1d(input_data, DType::kInt64, 4);
    offsets = make_view_1d(offsets_data, DType::kInt64, 2);
    output = make_view_2d(out_data, DType::kFloat32, 2, 3);
    argmax = make_view_2d(argmax_data, DType::kInt64, 2, 3);
    grad_output = make_view_2d(grad_data, DType::kFloat32, 2, 3);
    grad_weight = make_view_2d(grad_weight_data, DType::kFloat32, 4, 3);
    rows = make_view_1d(rows_data, DType::kInt64, 4);
    values = make_view_2d(values_data, DType::kFloat32, 4, 3);
    options.mode = Mode::kSum;
    options.max_norm = 1.0;  // so a call that got past validation would write the table
  }
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  Status forward_call() {
    ForwardInputs in{weight, input, input.ndim == 1 ? &offsets : nullptr, nullptr};
    ForwardOutputs out{output, nullptr, options.mode == Mode::kMax ? &argmax : nullptr};
    return forward(in, out, options);
  }
  Status validate_call() {
    ForwardInputs in{weight, input, input.ndim == 1 ? &offsets : nullptr, nullptr};
    ForwardOutputs out{output, nullptr, options.mode == Mode::kMax ? &argmax : nullptr};
    return validate(in, out, options);
  }
  Status backward_call() {
    BackwardInputs in;
    in.weight = weight;
    in.input = input;
    in.offsets = input.ndim == 1 ? &offsets : nullptr;
    in.grad_output = grad_output;
    in.argmax = options.mode == Mode::kMax ? &argmax : nullptr;
    BackwardOutputs out;
    if (options.sparse) {
      out.grad_weight_rows = &rows;
      out.grad_weight_values = &values;
    } else {
      out.grad_weight = &grad_weight;
    }
    Options o = options;
    o.max_norm.reset();  // backward takes the table as forward left it
    return backward(in, out, o);
  }
  // `argmax_is_output`: forward writes argmax (backward only reads it).
  bool nothing_written(bool argmax_is_output) const {
    auto all_sentinel = [](const void* p, size_t n) {
      const auto* b = static_cast<const unsigned char*>(p);
      for (size_t i = 0; i < n; ++i) {
        if (b[i] != kSentinel) return false;
      }
      return true;
    };
    for (int i = 0; i < 12; ++i) {
      if (weight_data[static_cast<size_t>(i)] != static_cast<float>(i + 1)) return false;
    }
    return all_sentinel(out_data, sizeof out_data) &&
           all_sentinel(grad_weight_data, sizeof grad_weight_data) &&
           all_sentinel(values_data, sizeof values_data) &&
           all_sentinel(rows_data, sizeof rows_data) &&
           (!argmax_is_output || options.mode != Mode::kMax ||
            all_sentinel(argmax_data, sizeof argmax_data));
  }

  float weight_data[12];
  int64_t input_data[4] = {0, 1, 2, 3};
  int64_t offsets_data[2] = {0, 2};
  float out_data[6];
  int64_t argmax_data[6];
  float grad_data[6];
  float grad_weight_data[12];
  float values_data[12];
  int64_t rows_data[4];
  TensorView weight, input, offsets, output, argmax, grad_output, grad_weight, rows, values;
  Options options;
};

struct LimitRow {
  const char* rule;
  std::function<void(Call&)> mutate;
  std::vector<std::string> fragments;
  enum Calls { kBoth, kForwardOnly, kBackwardOnly } calls = kBoth;  // which calls read the view
};

std::vector<LimitRow> limit_rows() {
  const int64_t huge_stride = kInt32Max + 1;
  return {
      {"int32 input (3, 0x5555555555555556): N wraps to 2 in 64 bits",
       [](Call& c) {
         c.input = make_view_2d(c.input_data, DType::kInt32, 3, 0x5555555555555556);
         c.input.strides[0] = 0x5555555555555556;
       },
       {"input has size 6148914691236517206 in dimension 1", "at most 2147483647"}},
      {"1-D input of 2^31 indices: positions are int32 in the kernels",
       [](Call& c) { c.input.shape[0] = kInt32Max + 1; },
       {"input has size 2147483648 in dimension 0", "at most 2147483647"}},
      {"2-D input (65536, 65536): each extent fits, N = 2^32 does not",
       [](Call& c) { c.input = make_view_2d(c.input_data, DType::kInt64, 65536, 65536); },
       // (a 32-bit build refuses the input's span first: "input spans 4294967296 elements")
       {"4294967296", "at most 2147483647"}},
      {"weight with 2^31 rows",
       [](Call& c) { c.weight.shape[0] = kInt32Max + 1; },
       {"weight has size 2147483648 in dimension 0"}},
      {"weight with 2^31 columns",
       [](Call& c) { c.weight = make_view_2d(c.weight_data, DType::kFloat32, 4, kInt32Max + 1); },
       {"weight has size 2147483648 in dimension 1"}},
      {"weight row stride 2^31: the kernel's stride is int32",
       [huge_stride](Call& c) { c.weight.strides[0] = huge_stride; },
       {"weight has row stride 2147483648", "strides of at most 2147483647"}},
      {"weight row stride -2^31 with one row (any stride is narrowed)",
       [](Call& c) {
         c.weight.shape[0] = 1;
         c.input_data[1] = c.input_data[2] = c.input_data[3] = 0;
         c.weight.strides[0] = -kInt32Max - 1;
       },
       {"weight has row stride -2147483648"}},
      {"float64 table (2^31-1) x (2^31-1): 2^62 elements, 2^65 bytes",
       [](Call& c) {
         c.weight = make_view_2d(c.weight_data, DType::kFloat64, kInt32Max, kInt32Max, kInt32Max);
       },
       {"weight spans", "more bytes than a 64-bit size can count"}},
      {"output row stride 2^31",
       [huge_stride](Call& c) { c.output.strides[0] = huge_stride; },
       {"output has row stride 2147483648"},
       LimitRow::kForwardOnly},
      {"argmax row stride 2^31",
       [huge_stride](Call& c) {
         c.options.mode = Mode::kMax;
         c.options.max_norm.reset();
         c.argmax.strides[0] = huge_stride;
       },
       {"argmax has row stride 2147483648"},
       LimitRow::kForwardOnly},
      {"offsets of 2^31 entries: bags + 1 must fit int32",
       [](Call& c) { c.offsets.shape[0] = kInt32Max + 1; },
       {"offsets has size 2147483648 in dimension 0"}},
      {"grad_output row stride 2^31",
       [huge_stride](Call& c) { c.grad_output.strides[0] = huge_stride; },
       {"grad_output has row stride 2147483648"},
       LimitRow::kBackwardOnly},
      {"grad_weight row stride 2^31",
       [huge_stride](Call& c) { c.grad_weight.strides[0] = huge_stride; },
       {"grad_weight has row stride 2147483648"},
       LimitRow::kBackwardOnly},
      {"grad_weight_values row stride 2^31",
       [huge_stride](Call& c) {
         c.options.sparse = true;
         c.values.strides[0] = huge_stride;
       },
       {"grad_weight_values has row stride 2147483648"},
       LimitRow::kBackwardOnly},
      {"argmax for backward with row stride -2^31",
       [](Call& c) {
         c.options.mode = Mode::kMax;
         c.options.max_norm.reset();
         for (int i = 0; i < 6; ++i) c.argmax_data[i] = i < 3 ? 1 : 3;
         c.argmax.strides[0] = -kInt32Max - 1;
       },
       {"argmax has row stride -2147483648"},
       LimitRow::kBackwardOnly},
  };
}

TEST(Limits, NumelReportsOverflowInsteadOfWrapping) {
  TensorView v = make_view_2d(nullptr, DType::kInt32, 3, 0x5555555555555556);
  EXPECT_EQ(v.numel(), -1);
  v.shape[0] = -1;
  v.shape[1] = 4;
  EXPECT_EQ(v.numel(), -1);
  v.shape[0] = kInt32Max;
  v.shape[1] = kInt32Max;
  EXPECT_EQ(v.numel(), kInt32Max * kInt32Max);
}

// Every row: validate / forward / backward refuse with the view, value and rule in the message,
// and write nothing (no output, no renormalised table row, no gradient).
TEST(Limits, ViewsBeyondTheKernelsLimitsAreRefusedAndNothingIsWritten) {
  for (const LimitRow& row : limit_rows()) {
    SCOPED_TRACE(row.rule);
    for (int entry = 0; entry < 3; ++entry) {
      if (entry < 2 ? row.calls == LimitRow::kBackwardOnly : row.calls == LimitRow::kForwardOnly) {
        continue;
      }
      Call c;
      row.mutate(c);
      const Status s = entry == 0   ? c.validate_call()
                       : entry == 1 ? c.forward_call()
                                    : c.backward_call();
      const char* names[] = {"validate", "forward", "backward"};
      SCOPED_TRACE(names[entry]);
      EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.message();
      for (const std::string& f : row.fragments) {
        EXPECT_NE(s.message().find(f), std::string::npos)
            << "missing '" << f << "' in " << s.message();
      }
      EXPECT_TRUE(c.nothing_written(entry < 2));
    }
  }
}

// On a 32-bit build Halide addresses at most 2^31 - 1 elements of a buffer and would refuse a
// larger view inside the kernel, after renorm may have written; validation refuses it first.
TEST(Limits, ThirtyTwoBitBuildsRefuseSpansOver2To31Elements) {
  if (sizeof(void*) != 4) {
    GTEST_SKIP() << "the 2^31 - 1 element span limit applies to 32-bit builds only; this build "
                    "is 64-bit (make test-armv7 runs this test)";
  }
  Call c;
  c.weight = make_view_2d(c.weight_data, DType::kFloat32, 600000000, 4);
  const Status s = c.forward_call();
  EXPECT_NE(s.message().find("weight spans 2400000000 elements, but a 32-bit build supports at "
                             "most 2147483647"),
            std::string::npos)
      << s.message();
  EXPECT_TRUE(c.nothing_written(true));
}

// N = INT32_MAX, the largest input embag takes, over a NORESERVE mapping that is never touched:
// include_last_offset with offsets [0, 0] puts every position outside the one (empty) bag, so
// nothing is read, and the call succeeds with a zero output. One more index is refused.
TEST(Limits, AnInputOfInt32MaxIndicesIsAcceptedAndOneMoreIsRefused) {
  const size_t bytes = static_cast<size_t>(kInt32Max + 1) * sizeof(int32_t);
  void* map = mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (map == MAP_FAILED) {
    GTEST_SKIP() << "mmap of " << bytes << " bytes (MAP_NORESERVE) failed: " << strerror(errno);
  }
  Call c;
  int32_t offsets[2] = {0, 0};
  c.offsets = make_view_1d(offsets, DType::kInt32, 2);
  c.input = make_view_1d(map, DType::kInt32, kInt32Max);
  c.output.shape[0] = 1;
  c.options.include_last_offset = true;
  c.options.max_norm.reset();
  Status s = c.forward_call();
  EXPECT_TRUE(s.ok()) << s.message();
  for (int d = 0; d < 3; ++d) EXPECT_EQ(c.out_data[d], 0.0f);
  std::memset(c.out_data, kSentinel, sizeof c.out_data);
  c.input.shape[0] = kInt32Max + 1;
  s = c.forward_call();
  EXPECT_NE(s.message().find("input has size 2147483648"), std::string::npos) << s.message();
  EXPECT_TRUE(c.nothing_written(true));
  munmap(map, bytes);
}

}  // namespace
}  // namespace embag
