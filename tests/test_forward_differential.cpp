// Randomized differential tests: embag::forward against the reference (reference/reference.h),
// bit for bit, on every ISA this build has kernels for and this CPU can run.
//
// The kernels are specified to fold in input order from +0.0 in the accumulation type and never
// to fuse a multiply with an add, which is exactly what the reference does, so any difference in
// any bit is a bug (the one exception, pow in norm_type 3, is explained at kPowUlps). Each case
// is generated from a printed seed and a printed configuration; to rerun a single case set
// EMBAG_DIFF_SEED to its seed. Every output buffer sits between guard bytes that must survive
// the call, every output starts filled with a sentinel so an element the kernel forgets shows up
// as a mismatch, and the read-only inputs are checked to be unchanged.
#include <gtest/gtest.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
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
};

// The structural options of one case; the data and sizes come from the seed.
struct Variant {
  Variant(const char* name_, Padding padding_ = Padding::kNone, unsigned flags = 0,
          std::optional<double> norm_type_ = std::nullopt)
      : name(name_),
        padding(padding_),
        psw((flags & kPsw) != 0),
        include_last_offset((flags & (kLastOffset | kTail)) != 0),
        tail((flags & kTail) != 0),
        two_d((flags & kTwoD) != 0),
        norm_type(norm_type_) {}

  const char* name;
  Padding padding;
  bool psw;
  bool include_last_offset;
  bool tail;
  bool two_d;
  std::optional<double> norm_type;  // max_norm is set iff this is
};

struct Config {
  Mode mode = Mode::kSum;
  DType weight_dtype = DType::kFloat32;
  DType index_dtype = DType::kInt64;
  int64_t dim = 1;
  Variant variant{"plain"};
  // Forced sizes for the edge-shape tests; -1 = choose from the seed.
  int64_t num_rows = -1, num_bags = -1, max_bag_size = -1;
  bool all_padding = false;     // every bag holds only the padding index
  const char* shape = nullptr;  // the edge shape's name, for the trace
};

// norm_type 3 goes through pow(), which the kernels evaluate with Halide's pow (in float64,
// rounded once) and the reference with the C library's powf; neither is correctly rounded, so
// the norm, then the scale, differ by a few ulps (measured: up to 4 ulps in float32 after the
// multiply and the final rounding). PyTorch's own vectorised pow is a third answer. Every other
// norm is sums, compares, sqrt and one division: all correctly rounded, so bitwise.
constexpr uint64_t kPowUlps = 8;

std::vector<Variant> variants_for(Mode mode) {
  std::vector<Variant> v = {
      {"plain"},
      {"padding+", Padding::kPositive},
      {"padding-", Padding::kNegative},
      {"include_last_offset", Padding::kNone, kLastOffset},
      {"include_last_offset+tail", Padding::kPositive, kTail},
      {"2d", Padding::kNone, kTwoD},
      {"2d+padding-", Padding::kNegative, kTwoD},
  };
  if (mode == Mode::kSum) {
    v.push_back({"psw", Padding::kNone, kPsw});
    v.push_back({"psw+padding+tail", Padding::kPositive, kPsw | kTail});
    v.push_back({"psw+2d", Padding::kNegative, kPsw | kTwoD});
  }
  for (double p : {1.0, 2.0, 0.0, 3.0, double(INFINITY), -double(INFINITY)}) {
    v.push_back({"max_norm", Padding::kNone, 0, p});
  }
  v.push_back(
      {"max_norm+padding+tail", Padding::kPositive, (mode == Mode::kSum ? kPsw : 0u) | kTail, 2.0});
  v.push_back({"max_norm+2d", Padding::kNegative, kTwoD, 1.0});
  return v;
}

// Each CPU forward kernel has a cache-resident and a memory-resident variant (picked by the
// table's bytes; embag::TableSizeRule). The tests' tables are small, so half the cases, by the
// seed's low bit, set the limit to 0 and run the memory-resident variant: every seed says which
// it ran, and both variants see every dtype, D and option.
bool memory_resident_case(uint64_t seed) { return (seed & 1) != 0; }

std::string describe(const Config& c, uint64_t seed) {
  std::ostringstream s;
  s << "seed=" << seed << " mode=" << mode_name(c.mode) << " weight=" << dtype_name(c.weight_dtype)
    << " index=" << dtype_name(c.index_dtype) << " D=" << c.dim << " variant=" << c.variant.name;
  if (c.variant.norm_type) s << " norm_type=" << *c.variant.norm_type;
  if (c.num_rows >= 0) s << " V=" << c.num_rows;
  if (c.num_bags >= 0) s << " B=" << c.num_bags;
  s << " table=" << (memory_resident_case(seed) ? "memory-resident" : "cache-resident");
  if (c.max_bag_size >= 0) s << " max_bag_size=" << c.max_bag_size;
  if (c.all_padding) s << " all_padding";
  return s.str();
}

// ---- One generated problem ------------------------------------------------------------------

struct Problem {
  Config config;
  Options options;
  int64_t num_rows = 0, row_stride = 0, num_bags = 0;
  std::vector<unsigned char> weight;  // num_rows * row_stride elements (gaps hold junk)
  std::vector<unsigned char> input, offsets, psw;
  int64_t input_rows = 0, input_cols = 0;  // 2-D input shape; 1-D: input_cols = N
  int64_t num_offsets = 0;
  bool with_bag_count = false, with_argmax = false;
  // Row strides of embag's output and argmax views: D, or wider (a slice of a wider array) with
  // sentinel gaps between rows that must stay untouched.
  int64_t out_stride = 0, argmax_stride = 0;
  bool memory_resident = false;  // run the CPU's memory-resident forward variant
};

Problem make_problem(const Config& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Problem p;
  p.config = c;
  p.memory_resident = memory_resident_case(seed);
  const Variant& v = c.variant;
  const bool renorm = v.norm_type.has_value();
  // Renorm cases get their NaN / inf in a few chosen rows instead (below), so most rows keep a
  // finite norm and the median max_norm splits them.
  const bool specials = !renorm && chance(rng, 0.25);
  const bool coarse = chance(rng, 0.3);
  const bool strided = chance(rng, 0.3);

  // One case in eight is bigger: enough bags and rows for a kernel to split work across
  // threads and vectors, and bags longer than any unrolling.
  const bool big = chance(rng, 0.125);
  p.num_rows = c.num_rows >= 0 ? c.num_rows : uniform(rng, 1, big ? 500 : 40);
  p.row_stride = c.dim + (strided ? uniform(rng, 1, 7) : 0);
  const DType wd = c.weight_dtype;
  p.weight.assign(static_cast<size_t>(p.num_rows * p.row_stride) * element_size(wd), 0);
  const double zero_rate = v.norm_type == 0.0 ? 0.3 : 0.0;  // vary the count of non-zeros
  for (int64_t r = 0; r < p.num_rows; ++r) {
    for (int64_t d = 0; d < p.row_stride; ++d) {
      // Gap columns of a strided table hold junk the kernel must neither read into results nor
      // overwrite.
      const double value = d >= c.dim               ? 1e30
                           : chance(rng, zero_rate) ? 0.0
                                                    : random_value(rng, coarse, specials);
      put_value(p.weight.data(), wd, r * p.row_stride + d, value);
    }
  }

  // PyTorch's rule for renorm (SEMANTICS.md): a row whose norm is NaN is left alone, a row with
  // an infinite norm is scaled by 0 (inf entries become NaN). Half the renorm cases plant a NaN
  // or an infinity in up to three rows, on every norm kind and ISA.
  if (renorm && p.num_rows > 0 && c.dim > 0 && chance(rng, 0.5)) {
    const double kSpecials[] = {NAN, -NAN, INFINITY, -INFINITY};
    for (int64_t k = uniform(rng, 1, 3); k > 0; --k) {
      const int64_t r = uniform(rng, 0, p.num_rows - 1), d = uniform(rng, 0, c.dim - 1);
      put_value(p.weight.data(), wd, r * p.row_stride + d, kSpecials[uniform(rng, 0, 3)]);
    }
  }

  Options& o = p.options;
  o.mode = c.mode;
  std::optional<int64_t> pad;
  if (v.padding != Padding::kNone && p.num_rows > 0) {
    pad = uniform(rng, 0, p.num_rows - 1);
    o.padding_idx = v.padding == Padding::kPositive ? *pad : *pad - p.num_rows;
  }
  o.include_last_offset = v.include_last_offset;

  p.num_bags = c.num_bags >= 0 ? c.num_bags : uniform(rng, 1, big ? 64 : 12);
  const int64_t max_bag = c.max_bag_size >= 0 ? c.max_bag_size : uniform(rng, 0, big ? 64 : 9);
  const double pad_rate = pad ? 0.25 : 0.0;
  auto random_row = [&](bool bag_all_padding) -> int64_t {
    if (pad && (bag_all_padding || chance(rng, pad_rate))) return *pad;
    return uniform(rng, 0, std::max<int64_t>(p.num_rows - 1, 0));
  };
  std::vector<int64_t> idx;
  std::vector<int64_t> offs;
  if (v.two_d) {
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
    if (v.include_last_offset) offs.push_back(static_cast<int64_t>(idx.size()));
    if (v.tail) {
      // Positions past off[B] belong to no bag: junk here must not be read, checked or renormed.
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
  for (size_t i = 0; i < idx.size(); ++i)
    put_index(p.input.data(), id, static_cast<int64_t>(i), idx[i]);
  p.offsets.assign(offs.size() * element_size(id), 0);
  for (size_t i = 0; i < offs.size(); ++i)
    put_index(p.offsets.data(), id, static_cast<int64_t>(i), offs[i]);
  if (v.psw) {
    p.psw.assign(idx.size() * element_size(wd), 0);
    for (size_t i = 0; i < idx.size(); ++i) {
      put_value(p.psw.data(), wd, static_cast<int64_t>(i), random_value(rng, coarse, specials));
    }
  }

  if (v.norm_type) {
    o.norm_type = *v.norm_type;
    // The median row norm, computed exactly as renorm does: about half the rows are scaled, and
    // the median row itself sits exactly at max_norm, which must leave it untouched.
    TensorView w = make_view_2d(p.weight.data(), wd, p.num_rows, c.dim, p.row_stride);
    std::vector<double> norms;
    for (int64_t r = 0; r < p.num_rows; ++r) {
      const double norm = ref::row_norm(w, r, o.norm_type);
      if (!std::isnan(norm)) norms.push_back(norm);  // NaN would break the sort's ordering
    }
    std::sort(norms.begin(), norms.end());
    o.max_norm = norms.empty() ? 1.0 : norms[norms.size() / 2];
  }
  p.with_bag_count = chance(rng, 0.5);
  p.with_argmax = c.mode == Mode::kMax && chance(rng, 0.75);
  p.out_stride = c.dim + (chance(rng, 0.3) ? uniform(rng, 1, 5) : 0);
  p.argmax_stride = c.dim + (chance(rng, 0.3) ? uniform(rng, 1, 3) : 0);
  return p;
}

// ---- Running and comparing ------------------------------------------------------------------

// Views of a problem's read-only arrays over caller-chosen weight memory.
struct Views {
  TensorView weight, input, offsets, psw;
  ForwardInputs inputs;
};

Views make_views(const Problem& p, unsigned char* weight, const unsigned char* input,
                 const unsigned char* offsets, const unsigned char* psw) {
  Views v;
  const Config& c = p.config;
  v.weight = make_view_2d(weight, c.weight_dtype, p.num_rows, c.dim, p.row_stride);
  auto* in = const_cast<unsigned char*>(input);
  if (c.variant.two_d) {
    v.input = make_view_2d(in, c.index_dtype, p.input_rows, p.input_cols);
  } else {
    v.input = make_view_1d(in, c.index_dtype, p.input_cols);
  }
  v.offsets = make_view_1d(const_cast<unsigned char*>(offsets), c.index_dtype, p.num_offsets);
  if (c.variant.two_d) {
    v.psw =
        make_view_2d(const_cast<unsigned char*>(psw), c.weight_dtype, p.input_rows, p.input_cols);
  } else {
    v.psw = make_view_1d(const_cast<unsigned char*>(psw), c.weight_dtype, p.input_cols);
  }
  v.inputs.weight = v.weight;
  v.inputs.input = v.input;
  v.inputs.offsets = c.variant.two_d ? nullptr : &v.offsets;
  v.inputs.per_sample_weights = c.variant.psw ? &v.psw : nullptr;
  return v;
}

// Everything one embag call produced, for comparing runs with each other.
struct Produced {
  std::vector<unsigned char> weight, output, argmax, bag_count;
};

// Whether this build compiled the CPU forward kernels of `isa` in both table classes.
bool has_table_classes(Isa isa) {
  for (const VariantInfo& v : compiled_variants()) {
    if (v.isa == isa && v.table_class == "cache-resident") return true;
  }
  return false;
}

// Runs one problem through embag (on whatever ISA is selected) and the reference and reports
// every disagreement. Returns false if anything failed. `produced`, when given, receives embag's
// bytes.
bool run_problem(const Problem& p, std::optional<Isa> isa, Produced* produced = nullptr) {
  const Config& c = p.config;
  const DType wd = c.weight_dtype;
  const size_t out_bytes = static_cast<size_t>(p.num_bags * c.dim) * element_size(wd);
  const size_t argmax_bytes = static_cast<size_t>(p.num_bags * c.dim) * 8;
  const size_t count_bytes = static_cast<size_t>(p.num_bags) * 8;

  // Reference.
  std::vector<unsigned char> ref_weight = p.weight;
  std::vector<unsigned char> ref_out(out_bytes, kSentinel), ref_argmax(argmax_bytes, kSentinel),
      ref_count(count_bytes, kSentinel);
  Views rv = make_views(p, ref_weight.data(), p.input.data(), p.offsets.data(), p.psw.data());
  TensorView ref_out_view = make_view_2d(ref_out.data(), wd, p.num_bags, c.dim);
  TensorView ref_argmax_view = make_view_2d(ref_argmax.data(), DType::kInt64, p.num_bags, c.dim);
  TensorView ref_count_view = make_view_1d(ref_count.data(), DType::kInt64, p.num_bags);
  ForwardOutputs ref_outputs{ref_out_view, &ref_count_view,
                             c.mode == Mode::kMax ? &ref_argmax_view : nullptr};
  const Status ref_status = ref::forward(rv.inputs, ref_outputs, p.options);
  EXPECT_TRUE(ref_status.ok()) << "reference rejected a valid call: " << ref_status.message();
  if (!ref_status.ok()) return false;

  // embag, with every array it may touch between guards.
  GuardedBuffer weight(p.weight), input(p.input), offsets(p.offsets), psw(p.psw);
  GuardedBuffer out(static_cast<size_t>(p.num_bags * p.out_stride) * element_size(wd)),
      argmax(static_cast<size_t>(p.num_bags * p.argmax_stride) * 8), count(count_bytes);
  Views ev = make_views(p, weight.data(), input.data(), offsets.data(), psw.data());
  TensorView out_view = make_view_2d(out.data(), wd, p.num_bags, c.dim, p.out_stride);
  TensorView argmax_view =
      make_view_2d(argmax.data(), DType::kInt64, p.num_bags, c.dim, p.argmax_stride);
  TensorView count_view = make_view_1d(count.data(), DType::kInt64, p.num_bags);
  ForwardOutputs outputs{out_view, p.with_bag_count ? &count_view : nullptr,
                         p.with_argmax ? &argmax_view : nullptr};
  const std::string expected_variant = isa ? std::string("_") + isa_name(*isa) : "";
  // (RestoreGlobals puts the rule from the caches back when the test ends.)
  set_cache_resident_bytes(p.memory_resident ? 0 : std::numeric_limits<int64_t>::max());
  if (isa) {
    const std::string planned = run_forward_variant_name(ev.inputs, p.options);
    EXPECT_TRUE(ends_with(planned, expected_variant))
        << "forward_variant_name() = " << planned << " on ISA " << isa_name(*isa);
  }
  const Status status = run_forward(ev.inputs, outputs, p.options);
  EXPECT_TRUE(status.ok()) << "embag rejected a valid call: " << status.message();
  if (!status.ok()) return false;

  bool ok = true;
  auto fail = [&](const std::string& message) {
    ADD_FAILURE() << message;
    ok = false;
  };
  // A call with nothing to look up may legitimately run no kernel, so only calls with work
  // must have named one.
  bool has_work = false;
  for (const ref::Bag& bag : ref::bags(rv.input, rv.inputs.offsets, p.options)) {
    has_work = has_work || (bag.end > bag.begin && c.dim > 0);
  }
  if (isa && has_work) {
    const std::string& ran = last_variant();
    if (!ends_with(ran, expected_variant)) {
      fail("last_variant() = '" + ran + "', expected a name ending in '" + expected_variant + "'");
    }
    // Max without an argmax asked for runs the kernel that writes none (CPU ISAs; GPU calls
    // write it into scratch); with one, the kernel that writes it.
    // The table-size rule picked the variant the case asked for (where this build compiled
    // both: a tuning file's kernels serve every table).
    const bool cache_variant = ran.find("_cache_") != std::string::npos;
    if (selected_device() == DeviceType::kCPU && has_table_classes(*isa) &&
        cache_variant == p.memory_resident) {
      fail("a " + std::string(p.memory_resident ? "memory" : "cache") + "-resident table ran " +
           ran);
    }
    const bool values_only = ran.find("_max_values_") != std::string::npos;
    if (p.options.mode == Mode::kMax && selected_device() == DeviceType::kCPU &&
        values_only == p.with_argmax) {
      fail("max with" + std::string(p.with_argmax ? "" : "out") + " argmax ran " + ran);
    }
  }
  const std::pair<const char*, const GuardedBuffer*> guarded[] = {
      {"weight", &weight}, {"input", &input},   {"offsets", &offsets}, {"per_sample_weights", &psw},
      {"output", &out},    {"argmax", &argmax}, {"bag_count", &count}};
  for (const auto& [name, buffer] : guarded) {
    if (!buffer->guards_intact())
      fail(std::string("a guard byte around ") + name + " was overwritten");
  }
  if (input.contents() != p.input || offsets.contents() != p.offsets || psw.contents() != p.psw) {
    fail("embag modified a read-only input");
  }

  // The table after renorm. Gap columns of a strided table must be untouched too.
  const bool pow_norm = c.variant.norm_type && *c.variant.norm_type == 3.0;
  // POCL's float64 pow (the OpenCL device these tests run the GPU schedules on) is accurate to
  // about float32 precision only (measured up to 2.8e-7 relative, 1.3e9 ulps, on a p = 3 norm
  // and its cube root): float64 tables get 2^32 ulps (2^-20 relative) there. (CUDA evaluates
  // pow with libdevice, within 2 ulps; float32 tables stay within 8 ulps on POCL too.)
  const uint64_t pow_ulps =
      selected_device() != DeviceType::kCPU && wd == DType::kFloat64 ? uint64_t{1} << 32 : kPowUlps;
  const std::string weight_diff =
      first_difference("renormed weight", "row", wd, weight.data(), p.row_stride, ref_weight.data(),
                       p.row_stride, p.num_rows, p.row_stride, pow_norm ? pow_ulps : 0);
  if (!weight_diff.empty()) fail(weight_diff);

  // What the lookup must produce from the table as embag renormed it. That is the reference's
  // own result except for norm_type 3, where the table may differ by an ulp or two.
  std::vector<unsigned char> want_out = ref_out, want_argmax = ref_argmax, want_count = ref_count;
  if (pow_norm) {
    std::vector<unsigned char> table = weight.contents();
    Views tv = make_views(p, table.data(), p.input.data(), p.offsets.data(), p.psw.data());
    TensorView o = make_view_2d(want_out.data(), wd, p.num_bags, c.dim);
    TensorView a = make_view_2d(want_argmax.data(), DType::kInt64, p.num_bags, c.dim);
    TensorView n = make_view_1d(want_count.data(), DType::kInt64, p.num_bags);
    Options no_renorm = p.options;
    no_renorm.max_norm.reset();
    if (!ref::forward(tv.inputs, {o, &n, c.mode == Mode::kMax ? &a : nullptr}, no_renorm).ok()) {
      fail("reference rejected embag's renormed table");
    }
  }
  const std::string out_diff = first_difference("output", "bag", wd, out.data(), p.out_stride,
                                                want_out.data(), c.dim, p.num_bags, c.dim);
  if (!out_diff.empty()) fail(out_diff);
  // The gaps between rows of a row-strided output belong to the caller.
  auto gaps_untouched = [&](const GuardedBuffer& buffer, int64_t stride, size_t element) {
    for (int64_t b = 0; b < p.num_bags; ++b) {
      for (size_t i = static_cast<size_t>(b * stride + c.dim) * element;
           i < static_cast<size_t>((b + 1) * stride) * element; ++i) {
        if (buffer.data()[i] != kSentinel) return false;
      }
    }
    return true;
  };
  if (!gaps_untouched(out, p.out_stride, element_size(wd))) {
    fail("a gap byte between rows of the row-strided output was written");
  }
  if (p.with_argmax) {
    const std::string d =
        first_difference("argmax", "bag", DType::kInt64, argmax.data(), p.argmax_stride,
                         want_argmax.data(), c.dim, p.num_bags, c.dim);
    if (!d.empty()) fail(d);
    if (!gaps_untouched(argmax, p.argmax_stride, 8)) {
      fail("a gap byte between rows of the row-strided argmax was written");
    }
  } else if (argmax.contents() != std::vector<unsigned char>(argmax.size(), kSentinel)) {
    fail("argmax memory was written although no argmax view was passed");
  }
  if (p.with_bag_count) {
    const std::string d = first_difference("bag_count", "bag", DType::kInt64, count.data(), 1,
                                           want_count.data(), 1, p.num_bags, 1);
    if (!d.empty()) fail(d);
  } else if (count.contents() != std::vector<unsigned char>(count_bytes, kSentinel)) {
    fail("bag_count memory was written although no bag_count view was passed");
  }
  if (produced != nullptr) {
    *produced = {weight.contents(), out.contents(), argmax.contents(), count.contents()};
  }
  return ok;
}

// Seeds per (dtype, index type, D, variant): about 4,000 cases per mode and ISA, which take
// under a second per mode and ISA in an optimised build.
constexpr int kRepeats = 4;

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

TEST(ForwardDifferential, Sum) { run_mode(Mode::kSum, 0x5E11'0001); }
TEST(ForwardDifferential, Mean) { run_mode(Mode::kMean, 0x3EA4'0002); }
TEST(ForwardDifferential, Max) { run_mode(Mode::kMax, 0x3A80'0003); }

// Named corner cases (kEdgeShapes) with a few structural variants.
TEST(ForwardDifferential, EdgeShapes) {
  const std::vector<Variant> variants = {
      {"plain"},
      {"padding-", Padding::kNegative},
      {"include_last_offset+tail", Padding::kPositive, kTail},
      {"2d+padding+", Padding::kPositive, kTwoD},
      {"max_norm+padding", Padding::kPositive, 0, 2.0},
  };
  run_cases(edge_grid<Config>([&](Mode) { return variants; }), 0xED6E'0004, check_case);
}

// Every ISA compiled in either runs the suites here or is reported: a CPU without AVX-512 cannot
// test the avx512 kernels, and that must show as a skip with the reason, not as a pass.
TEST(IsaCoverage, CompiledIsasTheCpuCannotRunAreReported) {
  const std::vector<Isa> missing = compiled_but_unsupported_isas();
  if (!missing.empty()) {
    std::string names;
    for (Isa isa : missing) names += std::string(names.empty() ? "" : ", ") + isa_name(isa);
    GTEST_SKIP() << "compiled in but not supported by this CPU, so untested here: " << names
                 << " (CPU features: " << cpu_features() << ")";
  }
  // Otherwise every compiled ISA is one the suites run.
  size_t cpu_isas = 0;
  for (Isa isa : compiled_isas()) cpu_isas += isa_device(isa) == DeviceType::kCPU;
  if (std::getenv("EMBAG_TEST_ISAS") == nullptr) {
    EXPECT_EQ(isas_to_test().size(), std::max<size_t>(cpu_isas, 1));
  }
}

// The repro, on every ISA and every table dtype: rows [1, 2, 3] and [4, 0, 1], max_norm 1,
// row 1 holds a NaN and row 2 an infinity. PyTorch 2.15 leaves row 1 as it was (its norm is NaN,
// and NaN > max_norm is false) and turns row 2 into [0, 0, 0, NaN, 0] (scaled by 1 / inf = 0);
// SSE4.1 and ARM, which emulate float16 conversions, must agree bit for bit.
TEST(ForwardDifferential, RenormLeavesNanRowsAndZeroesInfiniteRows) {
  RestoreGlobals restore;
  for (std::optional<Isa> isa : isas_to_test()) {
    SCOPED_TRACE("isa=" + isa_label(isa));
    if (!select(isa)) return;
    for (DType wd : kWeightDTypes) {
      for (double norm_type : {2.0, 1.0, 3.0, double(INFINITY)}) {
        SCOPED_TRACE(std::string(dtype_name(wd)) + " norm_type=" + std::to_string(norm_type));
        const int64_t V = 6, D = 5;
        std::vector<unsigned char> table(static_cast<size_t>(V * D) * element_size(wd));
        for (int64_t i = 0; i < V * D; ++i) {
          put_value(table.data(), wd, i, 0.25 * static_cast<double>(i % 7 + 1));
        }
        put_value(table.data(), wd, 1 * D + 2, NAN);
        put_value(table.data(), wd, 2 * D + 3, INFINITY);
        const std::vector<unsigned char> before = table;
        int64_t idx[] = {1, 2, 3, 4, 0, 1}, off[] = {0, 3};
        TensorView offsets = make_view_1d(off, DType::kInt64, 2);
        ForwardInputs in{make_view_2d(table.data(), wd, V, D), make_view_1d(idx, DType::kInt64, 6),
                         &offsets, nullptr};
        std::vector<unsigned char> out(static_cast<size_t>(2 * D) * element_size(wd));
        Options o;
        o.mode = Mode::kSum;
        o.max_norm = 1.0;
        o.norm_type = norm_type;
        const Status s = forward(in, {make_view_2d(out.data(), wd, 2, D), nullptr, nullptr}, o);
        ASSERT_TRUE(s.ok()) << s.message();
        const size_t row_bytes = static_cast<size_t>(D) * element_size(wd);
        EXPECT_TRUE(std::equal(table.begin() + row_bytes, table.begin() + 2 * row_bytes,
                               before.begin() + row_bytes))
            << "the row with a NaN norm was changed";
        for (int64_t d = 0; d < D; ++d) {
          const uint64_t bits = ref::bits_at(table.data(), wd, 2 * D + d);
          if (d == 3) {
            EXPECT_TRUE(is_nan_bits(wd, bits))
                << "inf * 0 must be NaN, got " << ref::format_element(wd, bits);
          } else {
            EXPECT_EQ(bits, 0u) << "column " << d << " of the infinite row must become +0, got "
                                << ref::format_element(wd, bits);
          }
        }
        // And the reference says the same (it is what the randomized cases compare with).
        std::vector<unsigned char> ref_table = before, ref_out = out;
        ForwardInputs rin = in;
        rin.weight = make_view_2d(ref_table.data(), wd, V, D);
        ASSERT_TRUE(
            ref::forward(rin, {make_view_2d(ref_out.data(), wd, 2, D), nullptr, nullptr}, o).ok());
        // (norm_type 3 goes through pow: a few ulps apart, see kPowUlps; its sums then differ too)
        const bool pow_norm = norm_type == 3.0;
        EXPECT_EQ(first_difference("renormed weight", "row", wd, table.data(), D, ref_table.data(),
                                   D, V, D, pow_norm ? kPowUlps : 0),
                  "");
        if (!pow_norm) {
          EXPECT_EQ(first_difference("output", "bag", wd, out.data(), D, ref_out.data(), D, 2, D),
                    "");
        }
      }
    }
  }
}

// Max's tie and NaN rules, stated as expected values rather than through the reference, on
// every ISA and table dtype, with and without argmax (max without argmax runs the max_values
// kernels, which find NaNs in a second walk of the bag: see the forward generator). Rows: 0 all
// -0.0, 1 all +0.0, 2 +NaN in columns c % 3 == 0 and -1 elsewhere, 3 -NaN in even columns and
// -2 elsewhere. D = 37 spans several register tiles and a tail on every ISA.
TEST(ForwardDifferential, MaxKeepsTheFirstOfEqualValuesAndTheFirstNan) {
  RestoreGlobals restore;
  for (std::optional<Isa> isa : isas_to_test()) {
    SCOPED_TRACE("isa=" + isa_label(isa));
    if (!select(isa)) return;
    for (DType wd : kWeightDTypes) {
      SCOPED_TRACE(dtype_name(wd));
      const int64_t V = 4, D = 37;
      std::vector<unsigned char> table(static_cast<size_t>(V * D) * element_size(wd));
      for (int64_t c = 0; c < D; ++c) {
        put_value(table.data(), wd, 0 * D + c, -0.0);
        put_value(table.data(), wd, 1 * D + c, 0.0);
        put_value(table.data(), wd, 2 * D + c, c % 3 == 0 ? double(NAN) : -1.0);
        put_value(table.data(), wd, 3 * D + c, c % 2 == 0 ? -double(NAN) : -2.0);
      }
      // Bags: [0 1] [1 0] [2 3] [3 2] [1 2 0] [] [3]
      int64_t idx[] = {0, 1, 1, 0, 2, 3, 3, 2, 1, 2, 0, 3};
      int64_t off[] = {0, 2, 4, 6, 8, 11, 11};
      const int64_t B = 7;
      // Expected (value, winning row) of bag b, column c; kind 'n' is a NaN of the row's sign.
      auto expected = [&](int64_t b, int64_t c) -> std::pair<double, int64_t> {
        const bool nan2 = c % 3 == 0, nan3 = c % 2 == 0;
        switch (b) {
          case 0:
            return {-0.0, 0};
          case 1:
            return {0.0, 1};
          case 2:
            return nan2   ? std::pair<double, int64_t>{NAN, 2}
                   : nan3 ? std::pair<double, int64_t>{-double(NAN), 3}
                          : std::pair<double, int64_t>{-1.0, 2};
          case 3:
            return nan3   ? std::pair<double, int64_t>{-double(NAN), 3}
                   : nan2 ? std::pair<double, int64_t>{NAN, 2}
                          : std::pair<double, int64_t>{-1.0, 2};
          case 4:
            return nan2 ? std::pair<double, int64_t>{NAN, 2} : std::pair<double, int64_t>{0.0, 1};
          case 5:
            return {0.0, -1};
          default:
            return nan3 ? std::pair<double, int64_t>{-double(NAN), 3}
                        : std::pair<double, int64_t>{-2.0, 3};
        }
      };
      TensorView offsets = make_view_1d(off, DType::kInt64, B);
      ForwardInputs in{make_view_2d(table.data(), wd, V, D), make_view_1d(idx, DType::kInt64, 12),
                       &offsets, nullptr};
      Options o;
      o.mode = Mode::kMax;
      for (bool with_argmax : {false, true}) {
        SCOPED_TRACE(with_argmax ? "with argmax" : "values only");
        std::vector<unsigned char> out(static_cast<size_t>(B * D) * element_size(wd));
        std::vector<int64_t> argmax(static_cast<size_t>(B * D), -7);
        TensorView argmax_view = make_view_2d(argmax.data(), DType::kInt64, B, D);
        const Status s = forward(
            in, {make_view_2d(out.data(), wd, B, D), nullptr, with_argmax ? &argmax_view : nullptr},
            o);
        ASSERT_TRUE(s.ok()) << s.message();
        for (int64_t b = 0; b < B; ++b) {
          for (int64_t c = 0; c < D; ++c) {
            const auto [value, row] = expected(b, c);
            const uint64_t got = ref::bits_at(out.data(), wd, b * D + c);
            std::vector<unsigned char> want_bytes(element_size(wd));
            put_value(want_bytes.data(), wd, 0, value);
            const uint64_t want = ref::bits_at(want_bytes.data(), wd, 0);
            const uint64_t sign = uint64_t{1} << (8 * element_size(wd) - 1);
            if (std::isnan(value)) {
              EXPECT_TRUE(is_nan_bits(wd, got) && (got & sign) == (want & sign))
                  << "bag " << b << " column " << c << ": want a NaN of row " << row
                  << "'s sign, got " << ref::format_element(wd, got);
            } else {
              EXPECT_EQ(got, want)
                  << "bag " << b << " column " << c << ": want " << ref::format_element(wd, want)
                  << ", got " << ref::format_element(wd, got);
            }
            if (with_argmax) {
              EXPECT_EQ(argmax[static_cast<size_t>(b * D + c)], row)
                  << "bag " << b << " column " << c;
            }
          }
        }
      }
    }
  }
}

// One and two worker threads must give identical bytes, on problems big enough to be split
// across threads: many bags, and a few very long ones (in case a kernel splits inside a bag).
TEST(ForwardDifferential, ThreadCountsGiveIdenticalBytes) {
  RestoreGlobals restore;
  struct Shape {
    int64_t num_rows, num_bags, max_bag_size;
  };
  // Kernels hand out at least 16 bags per task, so the long-bag shape needs 40 bags (three tasks)
  // for the second thread to get any.
  const Shape shapes[] = {{2000, 300, 40}, {500, 40, 1500}};
  for (std::optional<Isa> isa : isas_to_test()) {
    SCOPED_TRACE("isa=" + isa_label(isa));
    if (!select(isa)) return;
    uint64_t case_number = 0;
    for (const Shape& shape : shapes) {
      for (Mode mode : {Mode::kSum, Mode::kMean, Mode::kMax}) {
        for (DType wd : kWeightDTypes) {
          for (bool renorm : {false, true}) {
            const uint64_t seed = mix(0x7412'0005 ^ mix(case_number++));
            Config c;
            c.mode = mode;
            c.weight_dtype = wd;
            c.index_dtype = DType::kInt64;
            c.dim = 163;
            const bool psw = mode == Mode::kSum;
            c.variant = renorm ? Variant("max_norm+padding", Padding::kPositive, 0, 2.0)
                               : Variant(psw ? "psw+padding" : "padding", Padding::kPositive,
                                         psw ? kPsw : 0u);
            c.num_rows = shape.num_rows;
            c.num_bags = shape.num_bags;
            c.max_bag_size = shape.max_bag_size;
            SCOPED_TRACE(describe(c, seed));
            const Problem p = make_problem(c, seed);
            Produced one, two;
            set_num_threads(1);
            ASSERT_EQ(num_threads(), 1);
            ASSERT_TRUE(run_problem(p, isa, &one));
            set_num_threads(2);
            ASSERT_EQ(num_threads(), 2);
            ASSERT_TRUE(run_problem(p, isa, &two));
            EXPECT_TRUE(one.weight == two.weight) << "renormed weight depends on the thread count";
            EXPECT_TRUE(one.output == two.output) << "output depends on the thread count";
            EXPECT_TRUE(one.argmax == two.argmax) << "argmax depends on the thread count";
            EXPECT_TRUE(one.bag_count == two.bag_count) << "bag_count depends on the thread count";
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace embag
