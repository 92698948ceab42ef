// Randomized differential tests: embag::backward against the reference (reference/reference.h),
// bit for bit, on every ISA this build has kernels for and this CPU can run; and a
// finite-difference check that the reference itself computes the gradient of its own forward.
//
// embag.h specifies backward as folds in input order (bag order for max) from +0.0 in the
// accumulation type, rounded once, with no fused multiply-add, which is exactly what the
// reference does, so any difference in any bit of the dense gradient, the sparse rows and
// values, or grad_per_sample_weights is a bug. Each case is generated from a printed seed and
// configuration; EMBAG_DIFF_SEED=<seed> reruns just that case. Every output sits between guard
// bytes and starts as a sentinel, row-strided outputs have gap columns that must survive, and
// every input (including grad_output and argmax) must come back unchanged.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "differential_support.h"
#include "embag/embag.h"
#include "reference/element_access.h"
#include "reference/reference.h"

namespace embag {
namespace {

using ref::bits_at;
using ref::element_size;
using ref::format_element;
using ref::is_nan_bits;
using ref::put_index;
using ref::put_value;

using namespace difftest;  // NOLINT(google-build-using-namespace)
// ---- Case configuration ---------------------------------------------------------------------

enum VariantFlag : unsigned {
  kPsw = 1u << 0,         // per_sample_weights (mode sum only)
  kLastOffset = 1u << 1,  // include_last_offset (1-D input only)
  kTail = 1u << 2,        // include_last_offset with off[B] < N and junk past off[B]
  kTwoD = 1u << 3,        // 2-D input
  kScale = 1u << 4,       // scale_grad_by_freq (not max)
  kSparse = 1u << 5,      // sparse gradient (not max); the dense one is checked as well
};

struct Variant {
  const char* name = "plain";
  Padding padding = Padding::kNone;
  unsigned flags = 0;
  bool has(unsigned flag) const { return (flags & flag) != 0; }
};

// How a problem picks the row of each position.
enum class RowPattern {
  kUniform,  // any row
  kRuns,     // long runs of one row and a few hot rows: many terms fold into one gradient row
};

struct Config {
  Mode mode = Mode::kSum;
  DType weight_dtype = DType::kFloat32;
  DType index_dtype = DType::kInt64;
  int64_t dim = 1;
  Variant variant;
  // Forced sizes for the edge-shape and determinism tests; -1 = choose from the seed.
  int64_t num_rows = -1, num_bags = -1, max_bag_size = -1;
  bool all_padding = false;               // every bag holds only the padding index
  std::optional<RowPattern> row_pattern;  // forced pattern; otherwise from the seed
  const char* shape = nullptr;            // the edge shape's name, for the trace
};

std::vector<Variant> variants_for(Mode mode) {
  std::vector<Variant> v = {
      {"plain"},
      {"padding+", Padding::kPositive},
      {"padding-", Padding::kNegative},
      {"include_last_offset", Padding::kNone, kLastOffset},
      {"include_last_offset+tail+padding+", Padding::kPositive, kTail},
      {"2d", Padding::kNone, kTwoD},
      {"2d+padding-", Padding::kNegative, kTwoD},
  };
  if (mode == Mode::kSum) {
    v.push_back({"psw", Padding::kNone, kPsw});
    v.push_back({"psw+padding++tail", Padding::kPositive, kPsw | kTail});
    v.push_back({"psw+2d+padding-", Padding::kNegative, kPsw | kTwoD});
  }
  // PyTorch (and embag) refuse scale_grad_by_freq and sparse with max.
  if (mode != Mode::kMax) {
    v.push_back({"scale_grad_by_freq", Padding::kNone, kScale});
    v.push_back({"scale_grad_by_freq+padding++tail", Padding::kPositive, kScale | kTail});
    v.push_back({"sparse", Padding::kNone, kSparse});
    v.push_back({"sparse+padding-+tail", Padding::kNegative, kSparse | kTail});
    v.push_back({"sparse+scale_grad_by_freq+padding+", Padding::kPositive, kSparse | kScale});
    v.push_back(
        {"sparse+scale_grad_by_freq+2d+padding-", Padding::kNegative, kSparse | kScale | kTwoD});
    if (mode == Mode::kSum) {
      v.push_back(
          {"psw+sparse+scale_grad_by_freq+padding+", Padding::kPositive, kPsw | kSparse | kScale});
    }
  }
  return v;
}

std::string describe(const Config& c, uint64_t seed) {
  std::ostringstream s;
  s << "seed=" << seed << " mode=" << mode_name(c.mode) << " weight=" << dtype_name(c.weight_dtype)
    << " index=" << dtype_name(c.index_dtype) << " D=" << c.dim << " variant=" << c.variant.name;
  if (c.num_rows >= 0) s << " V=" << c.num_rows;
  if (c.num_bags >= 0) s << " B=" << c.num_bags;
  if (c.max_bag_size >= 0) s << " max_bag_size=" << c.max_bag_size;
  if (c.all_padding) s << " all_padding";
  if (c.row_pattern == RowPattern::kRuns) s << " runs";
  return s.str();
}

// ---- One generated problem ------------------------------------------------------------------

struct Problem {
  Config config;
  Options options;  // options.sparse is set for sparse variants
  int64_t num_rows = 0, row_stride = 0, num_bags = 0;
  int64_t grad_stride = 0;                 // row stride of grad_output
  int64_t out_stride = 0;                  // row stride of the dense gradient and the sparse values
  std::vector<unsigned char> weight;       // num_rows * row_stride elements (gaps hold junk)
  std::vector<unsigned char> grad_output;  // num_bags * grad_stride elements (gaps hold junk)
  std::vector<unsigned char> input, offsets, psw;
  int64_t input_rows = 0, input_cols = 0;  // 2-D input shape; 1-D: input_cols = N
  int64_t num_offsets = 0;
  bool with_grad_psw = false;  // ask for grad_per_sample_weights (only with psw)

  int64_t positions() const { return input_rows * input_cols; }
};

Problem make_problem(const Config& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Problem p;
  p.config = c;
  const Variant& v = c.variant;
  const bool specials = chance(rng, 0.2);
  const bool coarse = chance(rng, 0.3);
  const DType wd = c.weight_dtype;

  // One case in eight is bigger: enough bags and rows for a kernel to split work across
  // threads and vectors, and bags longer than any unrolling.
  const bool big = chance(rng, 0.125);
  p.num_rows = c.num_rows >= 0 ? c.num_rows : uniform(rng, 1, big ? 500 : 40);
  p.row_stride = c.dim + (chance(rng, 0.3) ? uniform(rng, 1, 7) : 0);
  p.weight.assign(static_cast<size_t>(p.num_rows * p.row_stride) * element_size(wd), 0);
  for (int64_t r = 0; r < p.num_rows; ++r) {
    for (int64_t d = 0; d < p.row_stride; ++d) {
      // Gap columns hold junk no gradient may read.
      const double value = d >= c.dim ? 1e30 : random_value(rng, coarse, specials);
      put_value(p.weight.data(), wd, r * p.row_stride + d, value);
    }
  }

  Options& o = p.options;
  o.mode = c.mode;
  std::optional<int64_t> pad;
  if (v.padding != Padding::kNone && p.num_rows > 0) {
    pad = uniform(rng, 0, p.num_rows - 1);
    o.padding_idx = v.padding == Padding::kPositive ? *pad : *pad - p.num_rows;
  }
  o.include_last_offset = v.has(kLastOffset) || v.has(kTail);
  o.scale_grad_by_freq = v.has(kScale);
  o.sparse = v.has(kSparse);

  p.num_bags = c.num_bags >= 0 ? c.num_bags : uniform(rng, 1, big ? 64 : 12);
  const int64_t max_bag = c.max_bag_size >= 0 ? c.max_bag_size : uniform(rng, 0, big ? 64 : 9);
  const RowPattern pattern = c.row_pattern       ? *c.row_pattern
                             : chance(rng, 0.35) ? RowPattern::kRuns
                                                 : RowPattern::kUniform;
  std::vector<int64_t> hot;
  for (int64_t i = uniform(rng, 1, 3); i > 0; --i) {
    hot.push_back(uniform(rng, 0, std::max<int64_t>(p.num_rows - 1, 0)));
  }
  const double pad_rate = pad ? 0.25 : 0.0;
  int64_t previous = 0;
  auto random_row = [&](bool bag_all_padding) -> int64_t {
    if (pad && (bag_all_padding || chance(rng, pad_rate))) return *pad;
    int64_t row = uniform(rng, 0, std::max<int64_t>(p.num_rows - 1, 0));
    if (pattern == RowPattern::kRuns) {
      // Long runs of one row (a bag, or several bags in a row, adding to one gradient row) and
      // otherwise mostly a few hot rows: the order within one row's fold is what is under test.
      if (chance(rng, 0.8)) {
        row = previous;
      } else if (chance(rng, 0.7)) {
        row = hot[static_cast<size_t>(uniform(rng, 0, static_cast<int64_t>(hot.size()) - 1))];
      }
    }
    previous = row;
    return row;
  };
  std::vector<int64_t> idx;
  std::vector<int64_t> offs;
  if (v.has(kTwoD)) {
    p.input_rows = p.num_bags;
    p.input_cols = max_bag;
    for (int64_t b = 0; b < p.num_bags; ++b) {
      const bool all_pad = c.all_padding || chance(rng, 0.15);
      for (int64_t j = 0; j < p.input_cols; ++j) idx.push_back(random_row(all_pad));
    }
  } else {
    for (int64_t b = 0; b < p.num_bags; ++b) {
      offs.push_back(static_cast<int64_t>(idx.size()));
      // One bag in five is empty; repeated offsets are how empty bags are written.
      const int64_t size = chance(rng, 0.2) ? 0 : uniform(rng, 0, max_bag);
      const bool all_pad = c.all_padding || chance(rng, 0.15);
      for (int64_t j = 0; j < size; ++j) idx.push_back(random_row(all_pad));
    }
    if (o.include_last_offset) offs.push_back(static_cast<int64_t>(idx.size()));
    if (v.has(kTail)) {
      // Positions past off[B] belong to no bag: junk here must not be read or checked, and gets
      // no gradient (its grad_per_sample_weights is 0).
      const int64_t junk = uniform(rng, 1, 5);
      for (int64_t j = 0; j < junk; ++j) {
        const int64_t kJunk[] = {p.num_rows, p.num_rows + 1000, -1, -7, INT32_MAX};
        idx.push_back(kJunk[uniform(rng, 0, 4)]);
      }
    }
    p.input_rows = 1;
    p.input_cols = static_cast<int64_t>(idx.size());
    p.num_offsets = static_cast<int64_t>(offs.size());
  }
  const DType id = c.index_dtype;
  p.input.assign(idx.size() * element_size(id), 0);
  for (size_t i = 0; i < idx.size(); ++i) {
    put_index(p.input.data(), id, static_cast<int64_t>(i), idx[i]);
  }
  p.offsets.assign(offs.size() * element_size(id), 0);
  for (size_t i = 0; i < offs.size(); ++i) {
    put_index(p.offsets.data(), id, static_cast<int64_t>(i), offs[i]);
  }
  if (v.has(kPsw)) {
    p.psw.assign(idx.size() * element_size(wd), 0);
    for (size_t i = 0; i < idx.size(); ++i) {
      put_value(p.psw.data(), wd, static_cast<int64_t>(i), random_value(rng, coarse, specials));
    }
    // Usually asked for; sometimes not, which must leave the weight gradient as it is.
    p.with_grad_psw = chance(rng, 0.85);
  }

  p.grad_stride = c.dim + (chance(rng, 0.3) ? uniform(rng, 1, 5) : 0);
  p.grad_output.assign(static_cast<size_t>(p.num_bags * p.grad_stride) * element_size(wd), 0);
  for (int64_t b = 0; b < p.num_bags; ++b) {
    for (int64_t d = 0; d < p.grad_stride; ++d) {
      const double value = d >= c.dim ? 1e30 : random_value(rng, coarse, specials);
      put_value(p.grad_output.data(), wd, b * p.grad_stride + d, value);
    }
  }
  p.out_stride = c.dim + (chance(rng, 0.3) ? uniform(rng, 1, 5) : 0);
  return p;
}

// ---- Running and comparing ------------------------------------------------------------------

// Views of a problem's read-only arrays over caller-chosen memory. `inputs` points into the
// object itself, so it is filled in place and never copied.
struct Views {
  Views() = default;
  Views(const Views&) = delete;
  Views& operator=(const Views&) = delete;
  TensorView offsets, psw, argmax;
  BackwardInputs inputs;
};

void make_views(const Problem& p, const unsigned char* weight, const unsigned char* input,
                const unsigned char* offsets, const unsigned char* psw,
                const unsigned char* grad_output, const unsigned char* argmax, Views* views) {
  Views& v = *views;
  const Config& c = p.config;
  auto mut = [](const unsigned char* data) { return const_cast<unsigned char*>(data); };
  v.inputs.weight = make_view_2d(mut(weight), c.weight_dtype, p.num_rows, c.dim, p.row_stride);
  const bool two_d = c.variant.has(kTwoD);
  v.inputs.input = two_d ? make_view_2d(mut(input), c.index_dtype, p.input_rows, p.input_cols)
                         : make_view_1d(mut(input), c.index_dtype, p.input_cols);
  v.offsets = make_view_1d(mut(offsets), c.index_dtype, p.num_offsets);
  v.inputs.offsets = two_d ? nullptr : &v.offsets;
  v.psw = two_d ? make_view_2d(mut(psw), c.weight_dtype, p.input_rows, p.input_cols)
                : make_view_1d(mut(psw), c.weight_dtype, p.input_cols);
  v.inputs.per_sample_weights = c.variant.has(kPsw) ? &v.psw : nullptr;
  v.inputs.grad_output =
      make_view_2d(mut(grad_output), c.weight_dtype, p.num_bags, c.dim, p.grad_stride);
  v.argmax = make_view_2d(mut(argmax), DType::kInt64, p.num_bags, c.dim);
  v.inputs.argmax = c.mode == Mode::kMax ? &v.argmax : nullptr;
}

// The view of a grad_per_sample_weights buffer: the input's shape, the table's dtype.
TensorView psw_grad_view(const Problem& p, unsigned char* data) {
  return p.config.variant.has(kTwoD)
             ? make_view_2d(data, p.config.weight_dtype, p.input_rows, p.input_cols)
             : make_view_1d(data, p.config.weight_dtype, p.input_cols);
}

// "" when the gap columns [cols, stride) of every row still hold the sentinel.
std::string gaps_untouched(const char* what, DType dtype, const unsigned char* data, int64_t rows,
                           int64_t cols, int64_t stride) {
  const size_t size = element_size(dtype);
  for (int64_t r = 0; r < rows; ++r) {
    const unsigned char* begin = data + static_cast<size_t>(r * stride + cols) * size;
    const unsigned char* end = data + static_cast<size_t>((r + 1) * stride) * size;
    if (!std::all_of(begin, end, [](unsigned char ch) { return ch == kSentinel; })) {
      return std::string(what) + ": a gap column of row " + std::to_string(r) +
             " (past column D of a row-strided output) was written";
    }
  }
  return "";
}

// The rows a sparse gradient must list, worked out here from the bags, independently of both
// implementations: distinct non-padding rows read by positions inside bags, ascending.
std::vector<int64_t> expected_sparse_rows(const Views& v, const Options& options) {
  const std::optional<int64_t> pad = ref::normalized_padding_idx(options, v.inputs.weight.shape[0]);
  std::set<int64_t> rows;
  for (const ref::Bag& bag : ref::bags(v.inputs.input, v.inputs.offsets, options)) {
    for (int64_t p = bag.begin; p < bag.end; ++p) {
      const int64_t row = ref::index_at(v.inputs.input, p);
      if (row != pad) rows.insert(row);
    }
  }
  return std::vector<int64_t>(rows.begin(), rows.end());
}

// Everything embag's backward produced, for comparing runs with each other.
struct Produced {
  std::vector<unsigned char> dense, dense_psw, rows, values, sparse_psw;
  bool operator==(const Produced& o) const {
    return dense == o.dense && dense_psw == o.dense_psw && rows == o.rows && values == o.values &&
           sparse_psw == o.sparse_psw;
  }
};

// Runs one problem through embag (on whatever ISA is selected) and the reference and reports
// every disagreement. Returns false if anything failed. `produced`, when given, receives embag's
// bytes.
bool run_problem(const Problem& p, std::optional<Isa> isa, Produced* produced = nullptr) {
  const Config& c = p.config;
  const DType wd = c.weight_dtype;
  const size_t es = element_size(wd);
  const int64_t V = p.num_rows, D = c.dim, B = p.num_bags, N = p.positions();
  bool ok = true;
  auto fail = [&](const std::string& message) {
    ADD_FAILURE() << message;
    ok = false;
  };

  // Max needs the forward's argmax: embag's own (what a caller passes on), which must equal the
  // reference's.
  std::vector<unsigned char> argmax(static_cast<size_t>(B * D) * 8, kSentinel);
  if (c.mode == Mode::kMax) {
    std::vector<unsigned char> ref_argmax = argmax, weight = p.weight;
    std::vector<unsigned char> out(static_cast<size_t>(B * D) * es), ref_out = out;
    Views fv;
    make_views(p, weight.data(), p.input.data(), p.offsets.data(), p.psw.data(),
               p.grad_output.data(), argmax.data(), &fv);
    ForwardInputs fin{fv.inputs.weight, fv.inputs.input, fv.inputs.offsets, nullptr};
    TensorView a = make_view_2d(argmax.data(), DType::kInt64, B, D);
    TensorView ra = make_view_2d(ref_argmax.data(), DType::kInt64, B, D);
    const Status s = run_forward(fin, {make_view_2d(out.data(), wd, B, D), nullptr, &a}, p.options);
    EXPECT_TRUE(s.ok()) << "embag::forward (for argmax): " << s.message();
    const Status rs =
        ref::forward(fin, {make_view_2d(ref_out.data(), wd, B, D), nullptr, &ra}, p.options);
    EXPECT_TRUE(rs.ok()) << "ref::forward (for argmax): " << rs.message();
    if (!s.ok() || !rs.ok()) return false;
    const std::string d = first_difference("forward argmax", "bag", DType::kInt64, argmax.data(), D,
                                           ref_argmax.data(), D, B, D);
    if (!d.empty()) fail(d);
  }

  // Reference: the dense gradient always (sparse values are checked against it), the sparse
  // one for sparse variants.
  Views rv;
  make_views(p, p.weight.data(), p.input.data(), p.offsets.data(), p.psw.data(),
             p.grad_output.data(), argmax.data(), &rv);
  Options dense_options = p.options;
  dense_options.sparse = false;
  std::vector<unsigned char> ref_dense(static_cast<size_t>(V * D) * es, kSentinel);
  std::vector<unsigned char> ref_psw(static_cast<size_t>(N) * es, kSentinel);
  TensorView ref_dense_view = make_view_2d(ref_dense.data(), wd, V, D);
  TensorView ref_psw_view = psw_grad_view(p, ref_psw.data());
  BackwardOutputs ref_outputs;
  ref_outputs.grad_weight = &ref_dense_view;
  ref_outputs.grad_per_sample_weights = c.variant.has(kPsw) ? &ref_psw_view : nullptr;
  Status rs = ref::backward(rv.inputs, ref_outputs, dense_options);
  EXPECT_TRUE(rs.ok()) << "reference rejected a valid call: " << rs.message();
  if (!rs.ok()) return false;

  const std::vector<int64_t> want_rows = expected_sparse_rows(rv, p.options);
  const int64_t U = static_cast<int64_t>(want_rows.size());
  int64_t ref_u = -1;
  rs = ref::sparse_gradient_rows(rv.inputs, p.options, &ref_u);
  EXPECT_TRUE(rs.ok() && ref_u == U)
      << "ref::sparse_gradient_rows: " << rs.message() << " U " << ref_u << ", expected " << U;
  std::vector<unsigned char> ref_rows(static_cast<size_t>(U) * 8, kSentinel);
  std::vector<unsigned char> ref_values(static_cast<size_t>(U * D) * es, kSentinel);
  if (p.options.sparse) {
    TensorView rows_view = make_view_1d(ref_rows.data(), DType::kInt64, U);
    TensorView values_view = make_view_2d(ref_values.data(), wd, U, D);
    BackwardOutputs so;
    so.grad_weight_rows = &rows_view;
    so.grad_weight_values = &values_view;
    rs = ref::backward(rv.inputs, so, p.options);
    EXPECT_TRUE(rs.ok()) << "reference rejected a valid sparse call: " << rs.message();
    if (!rs.ok()) return false;
    // The reference's own sparse and dense results must agree before embag is held to them.
    std::vector<unsigned char> want_rows_bytes(ref_rows.size());
    if (!want_rows.empty()) {  // memcpy's pointers must not be null, even for 0 bytes
      std::memcpy(want_rows_bytes.data(), want_rows.data(), want_rows_bytes.size());
    }
    if (ref_rows != want_rows_bytes) fail("reference sparse rows are not the referenced rows");
    for (int64_t u = 0; u < U && D > 0; ++u) {  // D = 0: empty (null) buffers, nothing to compare
      if (std::memcmp(ref_values.data() + static_cast<size_t>(u * D) * es,
                      ref_dense.data() + static_cast<size_t>(want_rows[u] * D) * es,
                      static_cast<size_t>(D) * es) != 0) {
        fail("reference sparse values differ from its dense rows at row " +
             std::to_string(want_rows[u]));
      }
    }
  }

  // embag, with every array it may touch between guards.
  GuardedBuffer weight(p.weight), input(p.input), offsets(p.offsets), psw(p.psw),
      grad_output(p.grad_output), argmax_buffer(argmax);
  Views ev;
  make_views(p, weight.data(), input.data(), offsets.data(), psw.data(), grad_output.data(),
             argmax_buffer.data(), &ev);
  int64_t embag_u = -1;
  const Status us = run_sparse_gradient_rows(ev.inputs, p.options, &embag_u);
  if (!us.ok()) {
    fail("sparse_gradient_rows rejected a valid call: " + us.message());
  } else if (embag_u != U) {
    fail("sparse_gradient_rows gave U = " + std::to_string(embag_u) + ", expected " +
         std::to_string(U));
  }

  bool has_work = false;  // a call with nothing to add may legitimately run no kernel
  for (int64_t r : want_rows) has_work = has_work || (r >= 0 && D > 0);
  const std::string isa_suffix = isa ? std::string("_") + isa_name(*isa) : "";
  auto check_variant = [&](const char* call) {
    if (isa && has_work && !ends_with(last_variant(), isa_suffix)) {
      fail(std::string(call) + ": last_variant() = '" + last_variant() +
           "', expected a name ending in '" + isa_suffix + "'");
    }
  };

  // Dense.
  GuardedBuffer dense(static_cast<size_t>(V * p.out_stride) * es);
  GuardedBuffer dense_psw(static_cast<size_t>(N) * es);
  {
    TensorView gw = make_view_2d(dense.data(), wd, V, D, p.out_stride);
    TensorView gp = psw_grad_view(p, dense_psw.data());
    BackwardOutputs outputs;
    outputs.grad_weight = &gw;
    outputs.grad_per_sample_weights = p.with_grad_psw ? &gp : nullptr;
    const Status s = run_backward(ev.inputs, outputs, dense_options);
    if (!s.ok()) {
      fail("embag rejected a valid dense call: " + s.message());
    } else {
      check_variant("dense backward");
      std::string d = first_difference("dense grad_weight", "row", wd, dense.data(), p.out_stride,
                                       ref_dense.data(), D, V, D);
      if (!d.empty()) fail(d);
      d = gaps_untouched("dense grad_weight", wd, dense.data(), V, D, p.out_stride);
      if (!d.empty()) fail(d);
      // Rows no bag references hold +0.0 exactly (not -0.0, not stale memory).
      std::vector<bool> referenced(static_cast<size_t>(V), false);
      for (int64_t r : want_rows) referenced[static_cast<size_t>(r)] = true;
      for (int64_t r = 0; r < V && d.empty(); ++r) {
        if (referenced[static_cast<size_t>(r)]) continue;
        for (int64_t k = 0; k < D; ++k) {
          if (bits_at(dense.data(), wd, r * p.out_stride + k) != 0) {
            d = "dense grad_weight row " + std::to_string(r) +
                " is referenced by no valid position but is not +0.0";
            break;
          }
        }
      }
      if (!d.empty()) fail(d);
      if (p.with_grad_psw) {
        d = first_difference("grad_per_sample_weights", "position", wd, dense_psw.data(), 1,
                             ref_psw.data(), 1, N, 1);
        if (!d.empty()) fail(d);
      } else if (dense_psw.contents() !=
                 std::vector<unsigned char>(static_cast<size_t>(N) * es, kSentinel)) {
        fail("grad_per_sample_weights memory was written although no view was passed");
      }
    }
  }

  // Sparse.
  GuardedBuffer rows(static_cast<size_t>(U) * 8);
  GuardedBuffer values(static_cast<size_t>(U * p.out_stride) * es);
  GuardedBuffer sparse_psw(static_cast<size_t>(N) * es);
  if (p.options.sparse) {
    TensorView rows_view = make_view_1d(rows.data(), DType::kInt64, U);
    TensorView values_view = make_view_2d(values.data(), wd, U, D, p.out_stride);
    TensorView gp = psw_grad_view(p, sparse_psw.data());
    BackwardOutputs outputs;
    outputs.grad_weight_rows = &rows_view;
    outputs.grad_weight_values = &values_view;
    outputs.grad_per_sample_weights = p.with_grad_psw ? &gp : nullptr;
    const Status s = run_backward(ev.inputs, outputs, p.options);
    if (!s.ok()) {
      fail("embag rejected a valid sparse call: " + s.message());
    } else {
      check_variant("sparse backward");
      std::string d = first_difference("sparse rows", "entry", DType::kInt64, rows.data(), 1,
                                       ref_rows.data(), 1, U, 1);
      if (!d.empty()) fail(d);
      d = first_difference("sparse values", "entry", wd, values.data(), p.out_stride,
                           ref_values.data(), D, U, D);
      if (!d.empty()) fail(d);
      d = gaps_untouched("sparse values", wd, values.data(), U, D, p.out_stride);
      if (!d.empty()) fail(d);
      // embag's sparse result is embag's dense result restricted to the referenced rows.
      for (int64_t u = 0; u < U && d.empty(); ++u) {
        d = first_difference("sparse values vs embag's dense rows", "entry", wd,
                             values.data() + static_cast<size_t>(u * p.out_stride) * es, 0,
                             dense.data() + static_cast<size_t>(want_rows[u] * p.out_stride) * es,
                             0, 1, D);
      }
      if (!d.empty()) fail(d);
      if (p.with_grad_psw && sparse_psw.contents() != dense_psw.contents()) {
        fail("grad_per_sample_weights differs between the sparse and the dense call");
      }
    }
  }

  const std::pair<const char*, const GuardedBuffer*> guarded[] = {
      {"weight", &weight},
      {"input", &input},
      {"offsets", &offsets},
      {"per_sample_weights", &psw},
      {"grad_output", &grad_output},
      {"argmax", &argmax_buffer},
      {"grad_weight", &dense},
      {"grad_per_sample_weights (dense call)", &dense_psw},
      {"grad_weight_rows", &rows},
      {"grad_weight_values", &values},
      {"grad_per_sample_weights (sparse call)", &sparse_psw}};
  for (const auto& [name, buffer] : guarded) {
    if (!buffer->guards_intact()) {
      fail(std::string("a guard byte around ") + name + " was overwritten");
    }
  }
  if (weight.contents() != p.weight || input.contents() != p.input ||
      offsets.contents() != p.offsets || psw.contents() != p.psw ||
      grad_output.contents() != p.grad_output || argmax_buffer.contents() != argmax) {
    fail("embag modified a read-only input");
  }
  if (produced != nullptr) {
    *produced = {dense.contents(), dense_psw.contents(), rows.contents(), values.contents(),
                 sparse_psw.contents()};
  }
  return ok;
}

// Seeds per (dtype, index type, D, variant): about 8,700 cases for sum, fewer for the other
// modes, per ISA; a few seconds per mode and ISA in an optimised build.
constexpr int kRepeats = 8;

// Runs one case: builds its problem from the seed and checks it on `isa`.
bool check_case(const Config& c, uint64_t seed, std::optional<Isa> isa) {
  SCOPED_TRACE((c.shape != nullptr ? std::string(c.shape) + ": " : std::string()) +
               describe(c, seed));
  return run_problem(make_problem(c, seed), isa);
}

// Every weight dtype x index dtype x D x variant of one mode, kRepeats seeds each, on every ISA.
void run_mode(Mode mode, uint64_t test_seed) {
  run_cases(mode_grid<Config>(mode, variants_for(mode), kRepeats), test_seed, check_case);
}

TEST(BackwardDifferential, Sum) { run_mode(Mode::kSum, 0xBA5E'0001); }
TEST(BackwardDifferential, Mean) { run_mode(Mode::kMean, 0xBA3E'0002); }
TEST(BackwardDifferential, Max) { run_mode(Mode::kMax, 0xBA3A'0003); }

// Named corner cases (kEdgeShapes) with every variant of each mode.
TEST(BackwardDifferential, EdgeShapes) {
  run_cases(edge_grid<Config>(variants_for), 0xED6E'0004, check_case);
}

// Runs `p` twice with two threads and once with one; every run must match the reference and all
// three must give identical bytes. (A failure ends only this problem.)
void check_determinism(const Problem& p, std::optional<Isa> isa) {
  Produced first, second, single;
  set_num_threads(2);
  ASSERT_EQ(num_threads(), 2);
  ASSERT_TRUE(run_problem(p, isa, &first));
  ASSERT_TRUE(run_problem(p, isa, &second));
  set_num_threads(1);
  ASSERT_EQ(num_threads(), 1);
  ASSERT_TRUE(run_problem(p, isa, &single));
  EXPECT_TRUE(first == second) << "two runs with the same arguments differ";
  EXPECT_TRUE(first == single) << "one thread and two threads give different bytes";
}

// Two runs with two threads and one with one thread must give identical bytes, on problems big
// enough to be split across threads: many bags, a few very long ones (in case a kernel splits
// inside a bag), and long runs of one row (in case a kernel splits one row's fold).
TEST(BackwardDifferential, DeterministicAcrossRunsAndThreadCounts) {
  RestoreGlobals restore;
  struct Shape {
    const char* name;
    int64_t num_rows, num_bags, max_bag_size;
    RowPattern pattern;
  };
  const Shape shapes[] = {{"many bags", 2000, 300, 40, RowPattern::kUniform},
                          {"many bags, runs of one row", 300, 400, 60, RowPattern::kRuns},
                          {"two long bags, runs of one row", 500, 2, 3000, RowPattern::kRuns}};
  for (std::optional<Isa> isa : isas_to_test()) {
    SCOPED_TRACE("isa=" + isa_label(isa));
    if (!select(isa)) return;
    uint64_t case_number = 0;
    for (const Shape& shape : shapes) {
      for (Mode mode : {Mode::kSum, Mode::kMean, Mode::kMax}) {
        // Built by a returning lambda, not assigned into an empty vector: GCC 12 at -O3 for
        // 32-bit ARM warns (-Wnonnull, falsely) about the memmove of such an assignment.
        const std::vector<Variant> variants = [mode]() -> std::vector<Variant> {
          if (mode == Mode::kSum) {
            return {{"psw+padding+", Padding::kPositive, kPsw},
                    {"psw+sparse+scale_grad_by_freq", Padding::kNone, kPsw | kSparse | kScale}};
          }
          if (mode == Mode::kMean) {
            return {{"padding+", Padding::kPositive},
                    {"sparse+scale_grad_by_freq+padding-", Padding::kNegative, kSparse | kScale}};
          }
          return {{"padding+", Padding::kPositive}};
        }();
        for (DType wd : kWeightDTypes) {
          for (const Variant& variant : variants) {
            const uint64_t seed = mix(0x7412'0005 ^ mix(case_number++));
            Config c;
            c.mode = mode;
            c.weight_dtype = wd;
            c.index_dtype = DType::kInt64;
            c.dim = 163;
            c.variant = variant;
            c.num_rows = shape.num_rows;
            c.num_bags = shape.num_bags;
            c.max_bag_size = shape.max_bag_size;
            c.row_pattern = shape.pattern;
            SCOPED_TRACE(std::string(shape.name) + ": " + describe(c, seed));
            check_determinism(make_problem(c, seed), isa);
          }
        }
      }
    }
  }
}

// Runs a float64 max backward of a (5, 2) table on the reference and on embag with a
// caller-written argmax, and checks the dense gradient against `want`; or, when `refused` is
// given, that both refuse the call (embag with a message holding `refused`) and write nothing.
void check_max_backward(const std::vector<int64_t>& input, const std::vector<int64_t>& offsets,
                        std::optional<int64_t> padding_idx, std::vector<int64_t> argmax,
                        std::vector<double> grad_output, const std::vector<double>& want,
                        const char* refused = nullptr) {
  std::vector<double> weight = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  std::vector<int64_t> input_data = input, offsets_data = offsets;
  const int64_t bags = static_cast<int64_t>(offsets.size());
  TensorView offsets_view = make_view_1d(offsets_data.data(), DType::kInt64, bags);
  TensorView argmax_view = make_view_2d(argmax.data(), DType::kInt64, bags, 2);
  BackwardInputs in;
  in.weight = make_view_2d(weight.data(), DType::kFloat64, 5, 2);
  in.input = make_view_1d(input_data.data(), DType::kInt64, static_cast<int64_t>(input.size()));
  in.offsets = &offsets_view;
  in.grad_output = make_view_2d(grad_output.data(), DType::kFloat64, bags, 2);
  in.argmax = &argmax_view;
  Options options;
  options.mode = Mode::kMax;
  options.padding_idx = padding_idx;
  using BackwardFn = Status (*)(const BackwardInputs&, const BackwardOutputs&, const Options&);
  const BackwardFn embag_backward = [](const BackwardInputs& i, const BackwardOutputs& o,
                                       const Options& opt) { return run_backward(i, o, opt); };
  const std::pair<const char*, BackwardFn> implementations[] = {{"reference", &ref::backward},
                                                                {"embag", embag_backward}};
  for (std::optional<Isa> isa : isas_to_test()) {
    SCOPED_TRACE("isa=" + isa_label(isa));
    if (!select(isa)) return;
    // On a GPU the argmax is not read on the host, so such entries are not refused there (the
    // kernel ignores them; docs/gpu.md): only the CPU's refusal is tested.
    if (refused != nullptr && selected_device() != DeviceType::kCPU) continue;
    for (const auto& [name, run] : implementations) {
      SCOPED_TRACE(name);
      std::vector<double> grad(10, -1.0);
      TensorView grad_view = make_view_2d(grad.data(), DType::kFloat64, 5, 2);
      BackwardOutputs outputs;
      outputs.grad_weight = &grad_view;
      const Status s = run(in, outputs, options);
      if (refused != nullptr) {
        EXPECT_FALSE(s.ok()) << "an argmax that forward cannot have produced was accepted";
        if (std::string(name) == "embag") {
          EXPECT_NE(s.message().find(refused), std::string::npos) << s.message();
        }
        EXPECT_EQ(grad, std::vector<double>(10, -1.0)) << "a refused call wrote the gradient";
        continue;
      }
      ASSERT_TRUE(s.ok()) << s.message();
      EXPECT_EQ(grad, want);
    }
  }
}

// embag.h: max's G[r][d] folds over *non-empty* bags with argmax[b][d] = r; forward writes -1
// for an empty or all-padding bag, and those entries send nothing.
TEST(BackwardDifferential, MaxSendsNothingFromEmptyBags) {
  RestoreGlobals restore;
  // Bags [1, 1] (all padding with padding_idx = 1), [3, 3], [].
  check_max_backward({1, 1, 3, 3}, {0, 2, 4}, 1, {-1, -1, 3, 3, -1, -1}, {100, 200, 1, 2, 300, 400},
                     {0, 0, 0, 0, 0, 0, 1, 2, 0, 0});  // bag 1's g, once, in row 3
}

// An argmax forward cannot have produced is refused, not followed or silently skipped: a row in
// a bag with no valid position (bag 0 is all padding) ...
TEST(BackwardDifferential, MaxRefusesArgmaxRowOfAnEmptyBag) {
  RestoreGlobals restore;
  check_max_backward({1, 1, 3, 3}, {0, 2, 4}, 1, std::vector<int64_t>(6, 3),
                     {100, 200, 1, 2, 300, 400}, {}, "argmax[0][0] is 3, a row that bag 0");
}

// ... a row its bag does not hold (bag 0 = [3], argmax says row 4 in column 0) ...
TEST(BackwardDifferential, MaxRefusesArgmaxNamingARowTheBagDoesNotHold) {
  RestoreGlobals restore;
  check_max_backward({3, 2}, {0, 1}, std::nullopt, {4, 3, 2, 2}, {1, 2, 5, 6}, {},
                     "argmax[0][0] is 4, a row that bag 0 does not hold");
}

// ... the padding row, which a bag holds only at positions that are not valid ...
TEST(BackwardDifferential, MaxRefusesArgmaxNamingThePaddingRow) {
  RestoreGlobals restore;
  check_max_backward({3, 2}, {0, 1}, 2, {3, 3, 2, 2}, {1, 2, 5, 6}, {},
                     "argmax[1][0] is 2, a row that bag 1 does not hold");
}

// ... and -1 for a bag that has a valid position (its output has a winner).
TEST(BackwardDifferential, MaxRefusesMinusOneForANonEmptyBag) {
  RestoreGlobals restore;
  check_max_backward({3, 2}, {0, 1}, std::nullopt, {3, -1, 2, 2}, {1, 2, 5, 6}, {},
                     "argmax[0][1] is -1, but bag 0 holds 1 valid positions");
}

// ---- The reference is the gradient of the reference forward -----------------------------------

// Central finite differences of loss = sum(g * forward(W, psw)) in float64, h = 1e-6, for every
// table element and every per-sample weight, against ref::backward. sum and mean are linear in
// W and psw, so the difference quotient is exact up to rounding (about 1e-10 here); max is
// piecewise linear, and the tables keep every column's values at least 0.2 / V apart, so no
// step of h crosses a tie. scale_grad_by_freq is not a derivative, so it is not checked here.
TEST(BackwardReference, MatchesFiniteDifferences) {
  constexpr double kStep = 1e-6;
  constexpr double kTolerance = 1e-6;  // relative, to max(|gradient|, 1): values are O(1)
  struct Kind {
    const char* name;
    Mode mode;
    bool psw;
  };
  const Kind kinds[] = {{"sum", Mode::kSum, false},
                        {"mean", Mode::kMean, false},
                        {"sum+per_sample_weights", Mode::kSum, true},
                        {"max", Mode::kMax, false}};
  int failures = 0;
  for (const Kind& kind : kinds) {
    for (uint64_t case_number = 0; case_number < 100; ++case_number) {
      const uint64_t seed = mix(0xF1D1'0006 ^ mix(case_number) ^ static_cast<uint64_t>(kind.mode));
      std::mt19937_64 rng(seed);
      const int64_t V = uniform(rng, 1, 12), D = uniform(rng, 1, 5), B = uniform(rng, 0, 6);
      const bool two_d = chance(rng, 0.3), tail = !two_d && chance(rng, 0.3);
      Options options;
      options.mode = kind.mode;
      if (chance(rng, 0.5)) options.padding_idx = uniform(rng, -V, V - 1);
      options.include_last_offset = tail;
      const std::optional<int64_t> pad = ref::normalized_padding_idx(options, V);
      SCOPED_TRACE(std::string(kind.name) + " seed=" + std::to_string(seed));

      // Max: column d holds a random permutation of (k + u_k) / V, u_k in [0.1, 0.9], so two
      // rows' values differ by at least 0.2 / V.
      std::vector<double> weight(static_cast<size_t>(V * D));
      for (int64_t d = 0; d < D; ++d) {
        std::vector<int64_t> order(static_cast<size_t>(V));
        std::iota(order.begin(), order.end(), 0);
        std::shuffle(order.begin(), order.end(), rng);
        for (int64_t r = 0; r < V; ++r) {
          const double u = std::uniform_real_distribution<double>(0.1, 0.9)(rng);
          weight[static_cast<size_t>(r * D + d)] =
              kind.mode == Mode::kMax ? (static_cast<double>(order[static_cast<size_t>(r)]) + u) /
                                            static_cast<double>(V)
                                      : std::uniform_real_distribution<double>(-1, 1)(rng);
        }
      }
      const int64_t L = uniform(rng, 0, 5);
      std::vector<int64_t> input, offsets;
      auto row = [&]() {
        return pad && chance(rng, 0.2) ? *pad : uniform(rng, 0, V - 1);  // duplicates are common
      };
      if (two_d) {
        for (int64_t i = 0; i < B * L; ++i) input.push_back(row());
      } else {
        for (int64_t b = 0; b < B; ++b) {
          offsets.push_back(static_cast<int64_t>(input.size()));
          for (int64_t j = uniform(rng, 0, 5); j > 0; --j) input.push_back(row());
        }
        if (tail) {
          offsets.push_back(static_cast<int64_t>(input.size()));
          input.push_back(V + 3);  // in no bag: never read
        }
      }
      const int64_t N = static_cast<int64_t>(input.size());
      std::vector<double> psw(static_cast<size_t>(N)), grad_output(static_cast<size_t>(B * D));
      for (double& x : psw) x = std::uniform_real_distribution<double>(-1, 1)(rng);
      for (double& x : grad_output) x = std::uniform_real_distribution<double>(-1, 1)(rng);

      const TensorView input_view = two_d ? make_view_2d(input.data(), DType::kInt64, B, L)
                                          : make_view_1d(input.data(), DType::kInt64, N);
      TensorView offsets_view =
          make_view_1d(offsets.data(), DType::kInt64, static_cast<int64_t>(offsets.size()));
      TensorView psw_view = two_d ? make_view_2d(psw.data(), DType::kFloat64, B, L)
                                  : make_view_1d(psw.data(), DType::kFloat64, N);
      auto loss = [&]() {
        ForwardInputs in;
        in.weight = make_view_2d(weight.data(), DType::kFloat64, V, D);
        in.input = input_view;
        in.offsets = two_d ? nullptr : &offsets_view;
        in.per_sample_weights = kind.psw ? &psw_view : nullptr;
        std::vector<double> out(static_cast<size_t>(B * D));
        EXPECT_TRUE(
            ref::forward(in, {make_view_2d(out.data(), DType::kFloat64, B, D)}, options).ok());
        double total = 0;
        for (size_t i = 0; i < out.size(); ++i) total += grad_output[i] * out[i];
        return total;
      };

      // The analytic gradient, with max's argmax from the reference forward.
      std::vector<int64_t> argmax(static_cast<size_t>(B * D), -1);
      std::vector<double> out(static_cast<size_t>(B * D));
      TensorView argmax_view = make_view_2d(argmax.data(), DType::kInt64, B, D);
      BackwardInputs in;
      in.weight = make_view_2d(weight.data(), DType::kFloat64, V, D);
      in.input = input_view;
      in.offsets = two_d ? nullptr : &offsets_view;
      in.per_sample_weights = kind.psw ? &psw_view : nullptr;
      in.grad_output = make_view_2d(grad_output.data(), DType::kFloat64, B, D);
      if (kind.mode == Mode::kMax) {
        ASSERT_TRUE(
            ref::forward({in.weight, in.input, in.offsets, nullptr},
                         {make_view_2d(out.data(), DType::kFloat64, B, D), nullptr, &argmax_view},
                         options)
                .ok());
        in.argmax = &argmax_view;
      }
      std::vector<double> grad_weight(static_cast<size_t>(V * D), NAN);
      std::vector<double> grad_psw(static_cast<size_t>(N), NAN);
      TensorView grad_weight_view = make_view_2d(grad_weight.data(), DType::kFloat64, V, D);
      TensorView grad_psw_view = two_d ? make_view_2d(grad_psw.data(), DType::kFloat64, B, L)
                                       : make_view_1d(grad_psw.data(), DType::kFloat64, N);
      BackwardOutputs outputs;
      outputs.grad_weight = &grad_weight_view;
      outputs.grad_per_sample_weights = kind.psw ? &grad_psw_view : nullptr;
      const Status s = ref::backward(in, outputs, options);
      ASSERT_TRUE(s.ok()) << s.message();

      auto check = [&](const char* what, int64_t at, double* value, double analytic) {
        const double saved = *value;
        *value = saved + kStep;
        const double up = loss();
        *value = saved - kStep;
        const double down = loss();
        *value = saved;
        const double numeric = (up - down) / (2 * kStep);
        if (std::fabs(numeric - analytic) > kTolerance * std::max(std::fabs(analytic), 1.0)) {
          ADD_FAILURE() << what << " " << at << ": ref::backward " << analytic
                        << ", finite difference " << numeric;
          ++failures;
        }
      };
      for (int64_t i = 0; i < V * D && failures < kMaxFailingCases; ++i) {
        check("grad_weight element (row-major)", i, &weight[static_cast<size_t>(i)],
              grad_weight[static_cast<size_t>(i)]);
      }
      for (int64_t p = 0; kind.psw && p < N && failures < kMaxFailingCases; ++p) {
        check("grad_per_sample_weights position", p, &psw[static_cast<size_t>(p)],
              grad_psw[static_cast<size_t>(p)]);
      }
      if (failures >= kMaxFailingCases) FAIL() << "stopping after " << failures << " failures";
    }
  }
}

}  // namespace
}  // namespace embag
