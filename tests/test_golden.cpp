// Golden vectors recorded from PyTorch (tests/golden/<case>/), and SEMANTICS.md's worked
// examples written out by hand: the reference and embag must both reproduce them.
//
// A golden case is a directory holding meta.txt (key=value lines: mode, padding_idx, max_norm,
// norm_type, include_last_offset, note, torch_version; unknown keys are ignored), weight.npy,
// input.npy, optional offsets.npy and per_sample_weights.npy, output.npy and, when max_norm is
// set, optionally weight_after.npy (the table after PyTorch's renorm). Backward files in the same
// directory (grad_*.npy) belong to the backward tests and are ignored here. NumPy has no
// bfloat16, so a bfloat16 case stores its float arrays as float32 and says
// `weight_dtype=bfloat16` in meta.txt.
//
// PyTorch is not held to embag's bitwise rules: it may fuse multiply-adds, sum in another order
// (vectorised, blocked) or round a float16 mean twice, so recorded floats are compared with a
// tolerance per dtype, scaled by the size of the terms summed (see Tolerance). Cases whose table
// holds only integers in float64 are exact in any order, so they must match bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "embag/embag.h"
#include "npy/npy_file.h"
#include "reference/element_access.h"
#include "reference/reference.h"

#ifndef EMBAG_GOLDEN_DIR
#error "EMBAG_GOLDEN_DIR must be defined to the tests/golden directory"
#endif

namespace embag {
namespace {

namespace fs = std::filesystem;
using ref::bits_at;
using ref::element_size;
using ref::format_element;
using ref::put_value;

// Both implementations under test take the same arguments.
using ForwardFn = Status (*)(const ForwardInputs&, const ForwardOutputs&, const Options&);
struct Implementation {
  const char* name;
  ForwardFn forward;
};
const Implementation kImplementations[] = {{"reference", &ref::forward}, {"embag", &forward}};

// Puts the automatic ISA choice back however a test ends.
class DefaultIsa {
 public:
  DefaultIsa() { (void)set_isa(std::nullopt); }
  ~DefaultIsa() { (void)set_isa(std::nullopt); }
};

// ---- Golden cases recorded from PyTorch -------------------------------------------------------

// |got - want| <= abs + rel * max(|want|, magnitude), where magnitude is the same reduction of
// the absolute values (sum |psw * w|, or its mean): a sum's rounding error scales with the
// terms, not with a result that cancelled to near zero.
struct Tolerance {
  double rel;
  double abs;
};

Tolerance tolerance_for(DType dtype) {
  switch (dtype) {
    case DType::kFloat64:
      return {1e-12, 1e-12};
    case DType::kFloat32:
      return {1e-5, 1e-5};
    case DType::kFloat16:
      return {1e-2, 1e-2};  // 11-bit significand; PyTorch rounds the fp16 mean twice
    case DType::kBFloat16:
      return {2e-2, 2e-2};  // 8-bit significand: one rounding alone is up to 0.4%
    default:
      return {0, 0};
  }
}

std::string trim(const std::string& s) {
  const size_t begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return "";
  const size_t end = s.find_last_not_of(" \t\r\n");
  return s.substr(begin, end - begin + 1);
}

bool is_none(const std::string& v) { return v.empty() || v == "None" || v == "none"; }

bool parse_bool(const std::string& v) { return v == "True" || v == "true" || v == "1"; }

bool parse_double(const std::string& v, double* out) {
  char* end = nullptr;
  *out = std::strtod(v.c_str(), &end);  // also reads "inf" and "-inf", as Python prints them
  return end != v.c_str() && *end == '\0';
}

struct GoldenCase {
  std::string name;
  std::map<std::string, std::string> meta;
  Options options;
  DType table_dtype = DType::kFloat32;
  npy::Array weight, input, offsets, psw, output, weight_after;
  bool has_offsets = false, has_psw = false, has_weight_after = false;
};

std::vector<fs::path> golden_case_dirs() {
  std::vector<fs::path> dirs;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(EMBAG_GOLDEN_DIR, error)) {
    if (entry.is_directory() && fs::exists(entry.path() / "meta.txt")) dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

// bfloat16 arrays arrive as float32 holding bfloat16 values; anything else is a recording bug.
bool to_bfloat16(npy::Array* array, std::string* error) {
  if (array->dtype != DType::kFloat32) {
    *error = "a bfloat16 case must store float arrays as float32";
    return false;
  }
  npy::Array converted = npy::make_array(DType::kBFloat16, array->shape);
  for (int64_t i = 0; i < array->numel(); ++i) {
    const double v = ref::value_at_index(array->data.data(), DType::kFloat32, i);
    put_value(converted.data.data(), DType::kBFloat16, i, v);
    const double back = ref::value_at_index(converted.data.data(), DType::kBFloat16, i);
    if (!(back == v || (std::isnan(back) && std::isnan(v)))) {
      *error = "value " + std::to_string(v) + " is not a bfloat16";
      return false;
    }
  }
  *array = std::move(converted);
  return true;
}

// Loads one case; on failure returns the reason.
std::string load_case(const fs::path& dir, GoldenCase* c) {
  c->name = dir.filename().string();
  std::ifstream meta(dir / "meta.txt");
  std::string line;
  while (std::getline(meta, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    const size_t eq = line.find('=');
    if (eq == std::string::npos) return "meta.txt line without '=': " + line;
    c->meta[trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
  }
  auto get = [&](const std::string& key) {
    auto it = c->meta.find(key);
    return it == c->meta.end() ? std::string() : it->second;
  };
  const std::optional<Mode> mode = parse_mode(get("mode"));
  if (!mode) return "meta.txt: bad or missing mode '" + get("mode") + "'";
  c->options.mode = *mode;
  if (!is_none(get("padding_idx"))) c->options.padding_idx = std::stoll(get("padding_idx"));
  double number = 0;
  if (!is_none(get("max_norm"))) {
    if (!parse_double(get("max_norm"), &number)) return "meta.txt: bad max_norm";
    c->options.max_norm = number;
  }
  if (!is_none(get("norm_type"))) {
    if (!parse_double(get("norm_type"), &number)) return "meta.txt: bad norm_type";
    c->options.norm_type = number;
  }
  c->options.include_last_offset = parse_bool(get("include_last_offset"));
  // scale_grad_by_freq and sparse only matter to backward; they are not forward options here.

  auto load = [&](const char* file, npy::Array* array, bool* present) -> std::string {
    const fs::path path = dir / file;
    if (present != nullptr) {
      *present = fs::exists(path);
      if (!*present) return "";
    }
    const Status s = npy::load(path.string(), array);
    return s.ok() ? "" : s.message();
  };
  std::string error;
  if (!(error = load("weight.npy", &c->weight, nullptr)).empty()) return error;
  if (!(error = load("input.npy", &c->input, nullptr)).empty()) return error;
  if (!(error = load("output.npy", &c->output, nullptr)).empty()) return error;
  if (!(error = load("offsets.npy", &c->offsets, &c->has_offsets)).empty()) return error;
  if (!(error = load("per_sample_weights.npy", &c->psw, &c->has_psw)).empty()) return error;
  if (!(error = load("weight_after.npy", &c->weight_after, &c->has_weight_after)).empty()) {
    return error;
  }
  const std::string dtype = get("weight_dtype");
  if (dtype == "bfloat16" || dtype == "torch.bfloat16") {
    for (npy::Array* a : {&c->weight, &c->output, &c->psw, &c->weight_after}) {
      if (!a->data.empty() && !to_bfloat16(a, &error)) return error;
    }
  }
  c->table_dtype = c->weight.dtype;
  if (c->weight.shape.size() != 2) return "weight.npy must be 2-D";
  return "";
}

// Cases whose every sum is exact whatever the order or fusion: float64, small integers, no
// renorm. Mean is then one correctly rounded division, which any implementation agrees on.
bool must_be_exact(const GoldenCase& c) {
  if (c.table_dtype != DType::kFloat64 || c.options.max_norm) return false;
  auto small_integers = [](const npy::Array& a) {
    for (int64_t i = 0; i < a.numel(); ++i) {
      const double v = ref::value_at_index(a.data.data(), a.dtype, i);
      if (!(v == std::floor(v) && std::fabs(v) <= 1 << 20)) return false;
    }
    return true;
  };
  return small_integers(c.weight) && (!c.has_psw || small_integers(c.psw));
}

// Reports the first element of `got` (the layout of `want`) outside the tolerance, or "".
std::string compare_with_torch(const char* what, const void* got, const npy::Array& want,
                               const std::vector<double>& magnitude, Tolerance tol, bool exact) {
  const int64_t cols = want.shape.size() == 2 ? want.shape[1] : 1;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const uint64_t g_bits = bits_at(got, want.dtype, i),
                   w_bits = bits_at(want.data.data(), want.dtype, i);
    const double g = ref::bits_value(want.dtype, g_bits), w = ref::bits_value(want.dtype, w_bits);
    bool same;
    if (std::isnan(w) || std::isnan(g)) {
      same = std::isnan(w) && std::isnan(g);
    } else if (exact) {
      same = g_bits == w_bits;
    } else if (std::isinf(w)) {
      same = g == w;
    } else {
      const double scale = std::max(std::fabs(w), i < static_cast<int64_t>(magnitude.size())
                                                      ? magnitude[static_cast<size_t>(i)]
                                                      : 0.0);
      same = std::fabs(g - w) <= tol.abs + tol.rel * scale;
    }
    if (same) continue;
    std::ostringstream s;
    s << what << " differs from PyTorch at row " << i / cols << ", column " << i % cols << ": got "
      << format_element(want.dtype, g_bits) << ", PyTorch " << format_element(want.dtype, w_bits)
      << (exact ? " (must match exactly)" : "");
    return s.str();
  }
  return "";
}

TEST(Golden, DirectoryHasCases) {
  // Without this, an empty or misplaced golden directory would make every golden test pass.
  EXPECT_FALSE(golden_case_dirs().empty())
      << "no golden cases (directories with meta.txt) in " << EMBAG_GOLDEN_DIR;
}

TEST(Golden, ReferenceAndEmbagMatchPyTorch) {
  DefaultIsa isa;
  for (const fs::path& dir : golden_case_dirs()) {
    GoldenCase c;
    const std::string load_error = load_case(dir, &c);
    SCOPED_TRACE("golden case " + dir.filename().string() + ": " +
                 (c.meta.count("note") ? c.meta["note"] : std::string()));
    if (!load_error.empty()) {
      ADD_FAILURE() << load_error;
      continue;
    }
    const DType dtype = c.table_dtype;
    const int64_t dim = c.weight.shape[1];
    const bool exact = must_be_exact(c);
    for (const Implementation& impl : kImplementations) {
      SCOPED_TRACE(impl.name);
      npy::Array weight = c.weight;  // renorm changes it in place
      npy::Array input = c.input, offsets = c.offsets, psw = c.psw;
      TensorView input_view = input.view(), offsets_view = offsets.view(), psw_view = psw.view();
      ForwardInputs inputs;
      inputs.weight = weight.view();
      inputs.input = input_view;
      inputs.offsets = c.has_offsets ? &offsets_view : nullptr;
      inputs.per_sample_weights = c.has_psw ? &psw_view : nullptr;
      const int64_t bags = num_bags(input_view, inputs.offsets, c.options);
      ASSERT_EQ(c.output.shape, (std::vector<int64_t>{bags, dim})) << "output.npy's shape";
      npy::Array out = npy::make_array(dtype, {bags, dim});
      ForwardOutputs outputs{out.view()};
      const Status status = impl.forward(inputs, outputs, c.options);
      ASSERT_TRUE(status.ok()) << status.message();

      // The size of the terms behind each output: the same call on absolute values of the table
      // as this implementation left it, without renorm.
      std::vector<double> magnitude;
      if (c.options.mode != Mode::kMax) {
        npy::Array abs_weight = weight, abs_psw = psw;
        for (npy::Array* a : {&abs_weight, &abs_psw}) {
          // An absent per_sample_weights is an empty array (no data, though numel() of its
          // 0-D shape is 1).
          const int64_t count = static_cast<int64_t>(a->data.size() / element_size(a->dtype));
          for (int64_t i = 0; i < count; ++i) {
            put_value(a->data.data(), a->dtype, i,
                      std::fabs(ref::value_at_index(a->data.data(), a->dtype, i)));
          }
        }
        TensorView abs_psw_view = abs_psw.view();
        ForwardInputs abs_inputs = inputs;
        abs_inputs.weight = abs_weight.view();
        abs_inputs.per_sample_weights = c.has_psw ? &abs_psw_view : nullptr;
        Options plain = c.options;
        plain.max_norm.reset();
        npy::Array abs_out = npy::make_array(dtype, {bags, dim});
        if (ref::forward(abs_inputs, {abs_out.view()}, plain).ok()) {
          for (int64_t i = 0; i < abs_out.numel(); ++i) {
            magnitude.push_back(ref::value_at_index(abs_out.data.data(), dtype, i));
          }
        }
      }
      const Tolerance tol = tolerance_for(dtype);
      std::string diff =
          compare_with_torch("output", out.data.data(), c.output, magnitude, tol, exact);
      EXPECT_TRUE(diff.empty()) << diff;
      if (c.has_weight_after) {
        ASSERT_EQ(c.weight_after.shape, c.weight.shape) << "weight_after.npy's shape";
        diff = compare_with_torch("weight after renorm", weight.data.data(), c.weight_after, {},
                                  tol, false);
        EXPECT_TRUE(diff.empty()) << diff;
      }
    }
  }
}

// ---- SEMANTICS.md's worked examples -------------------------------------------------------------

// One hand-written call and its exact expected results.
struct Example {
  const char* name;
  DType dtype = DType::kFloat64;
  int64_t num_rows = 0, dim = 0;
  std::vector<double> weight;    // num_rows * dim, row-major
  std::vector<int64_t> input;    // flattened
  int64_t input_rows = 0;        // 2-D input with this many rows; 0 for 1-D
  std::vector<int64_t> offsets;  // 1-D input only
  std::vector<double> psw;       // empty when absent
  Options options;
  std::vector<double> output;        // B * D
  std::vector<int64_t> argmax;       // checked when not empty (mode max)
  std::vector<int64_t> bag_count;    // checked when not empty
  std::vector<double> weight_after;  // checked when not empty
};

// W, idx and offsets of SEMANTICS.md's table: bags [], [3,1,1], [], [1,4,0], [].
Example worked(const char* name, Mode mode) {
  Example e;
  e.name = name;
  e.num_rows = 5;
  e.dim = 2;
  e.weight = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  e.input = {3, 1, 1, 1, 4, 0};
  e.offsets = {0, 0, 3, 3, 6};
  e.options.mode = mode;
  return e;
}

std::vector<Example> examples() {
  std::vector<Example> all;
  Example e = worked("sum", Mode::kSum);
  e.output = {0, 0, 13, 16, 0, 0, 13, 16, 0, 0};
  e.bag_count = {0, 3, 0, 3, 0};
  all.push_back(e);

  e = worked("mean", Mode::kMean);
  e.output = {0, 0, 13.0 / 3, 16.0 / 3, 0, 0, 13.0 / 3, 16.0 / 3, 0, 0};
  e.bag_count = {0, 3, 0, 3, 0};
  all.push_back(e);

  e = worked("max", Mode::kMax);
  e.output = {0, 0, 7, 8, 0, 0, 9, 10, 0, 0};
  e.argmax = {-1, -1, 3, 3, -1, -1, 4, 4, -1, -1};
  all.push_back(e);

  e = worked("sum, padding_idx=1", Mode::kSum);
  e.options.padding_idx = 1;
  e.output = {0, 0, 7, 8, 0, 0, 10, 12, 0, 0};
  e.bag_count = {0, 1, 0, 2, 0};
  all.push_back(e);

  e = worked("sum, padding_idx=-4 (wraps to 1)", Mode::kSum);
  e.options.padding_idx = -4;
  e.output = {0, 0, 7, 8, 0, 0, 10, 12, 0, 0};
  all.push_back(e);

  e = worked("mean, padding_idx=1", Mode::kMean);
  e.options.padding_idx = 1;
  e.output = {0, 0, 7, 8, 0, 0, 5, 6, 0, 0};
  all.push_back(e);

  e = worked("max, padding_idx=1", Mode::kMax);
  e.options.padding_idx = 1;
  e.output = {0, 0, 7, 8, 0, 0, 9, 10, 0, 0};
  e.argmax = {-1, -1, 3, 3, -1, -1, 4, 4, -1, -1};
  all.push_back(e);

  e = worked("sum, per_sample_weights=[1..6]", Mode::kSum);
  e.psw = {1, 2, 3, 4, 5, 6};
  e.output = {0, 0, 22, 28, 0, 0, 63, 78, 0, 0};
  all.push_back(e);

  e = worked("sum, include_last_offset (4 bags)", Mode::kSum);
  e.options.include_last_offset = true;
  e.output = {0, 0, 13, 16, 0, 0, 13, 16};
  all.push_back(e);

  e = worked("sum, include_last_offset, off[B] < N: positions 5.. in no bag", Mode::kSum);
  e.options.include_last_offset = true;
  e.input = {3, 1, 1, 1, 4, 99};  // 99 is past off[B] = 5: never read, never checked
  e.offsets = {0, 0, 3, 5};
  e.output = {0, 0, 13, 16, 12, 14};
  all.push_back(e);

  e = worked("sum, 2-D input", Mode::kSum);
  e.input_rows = 2;
  e.offsets.clear();
  e.output = {13, 16, 13, 16};
  all.push_back(e);

  // Ties go to the first occurrence, per column: column 0's 1 comes from row 1 (not row 0).
  e = Example{};
  e.name = "max ties";
  e.num_rows = 3;
  e.dim = 2;
  e.weight = {1, 5, 1, 5, 0, 7};
  e.input = {1, 0, 2};
  e.offsets = {0};
  e.options.mode = Mode::kMax;
  e.output = {1, 7};
  e.argmax = {1, 2};
  all.push_back(e);

  // max_norm = 2 in float32: [3,4] -> [1.2000000477, 1.6000000238] (scale 2/(5+1e-7) rounds to
  // 0.4f); [10,0] -> [2,0]; [0.3,0.4] (norm 0.5) untouched.
  e = Example{};
  e.name = "max_norm=2, float32";
  e.dtype = DType::kFloat32;
  e.num_rows = 3;
  e.dim = 2;
  e.weight = {3, 4, 10, 0, 0.3f, 0.4f};
  e.input = {0, 1, 2};
  e.offsets = {0, 1, 2};
  e.options.mode = Mode::kSum;
  e.options.max_norm = 2.0;
  e.weight_after = {1.2000000476837158, 1.6000000238418579, 2, 0, 0.3f, 0.4f};
  e.output = e.weight_after;
  all.push_back(e);

  // A norm exactly equal to max_norm is not "greater": the row stays as it is.
  e = Example{};
  e.name = "max_norm equal to the norm";
  e.dtype = DType::kFloat32;
  e.num_rows = 1;
  e.dim = 2;
  e.weight = {3, 4};
  e.input = {0};
  e.offsets = {0};
  e.options.mode = Mode::kSum;
  e.options.max_norm = 5.0;
  e.weight_after = {3, 4};
  e.output = {3, 4};
  all.push_back(e);
  return all;
}

// Bitwise comparison of `count` elements, reporting the first difference.
std::string first_difference(const char* what, DType dtype, const void* got, const void* want,
                             size_t count, int64_t cols) {
  for (size_t i = 0; i < count; ++i) {
    const uint64_t g = bits_at(got, dtype, static_cast<int64_t>(i));
    const uint64_t w = bits_at(want, dtype, static_cast<int64_t>(i));
    if (g != w) {
      std::ostringstream s;
      s << what << " [" << static_cast<int64_t>(i) / cols << ", " << static_cast<int64_t>(i) % cols
        << "]: got " << format_element(dtype, g) << ", expected " << format_element(dtype, w);
      return s.str();
    }
  }
  return "";
}

TEST(WorkedExamples, ReferenceAndEmbagMatchExactly) {
  DefaultIsa isa;
  for (const Example& e : examples()) {
    SCOPED_TRACE(e.name);
    const size_t esize = element_size(e.dtype);
    auto to_bytes = [&](const std::vector<double>& values) {
      std::vector<unsigned char> bytes(values.size() * esize);
      for (size_t i = 0; i < values.size(); ++i) {
        put_value(bytes.data(), e.dtype, static_cast<int64_t>(i), values[i]);
      }
      return bytes;
    };
    const int64_t bags = e.input_rows > 0 ? e.input_rows
                         : e.options.include_last_offset
                             ? static_cast<int64_t>(e.offsets.size()) - 1
                             : static_cast<int64_t>(e.offsets.size());
    for (const Implementation& impl : kImplementations) {
      SCOPED_TRACE(impl.name);
      std::vector<unsigned char> weight = to_bytes(e.weight), psw = to_bytes(e.psw);
      std::vector<int64_t> input = e.input, offsets = e.offsets;
      std::vector<unsigned char> out(static_cast<size_t>(bags * e.dim) * esize, 0x7F);
      std::vector<int64_t> argmax(static_cast<size_t>(bags * e.dim), 0x7F7F);
      std::vector<int64_t> bag_count(static_cast<size_t>(bags), 0x7F7F);
      const int64_t n = static_cast<int64_t>(input.size());
      TensorView input_view = e.input_rows > 0 ? make_view_2d(input.data(), DType::kInt64,
                                                              e.input_rows, n / e.input_rows)
                                               : make_view_1d(input.data(), DType::kInt64, n);
      TensorView offsets_view =
          make_view_1d(offsets.data(), DType::kInt64, static_cast<int64_t>(offsets.size()));
      TensorView psw_view = make_view_1d(psw.data(), e.dtype, n);
      ForwardInputs inputs;
      inputs.weight = make_view_2d(weight.data(), e.dtype, e.num_rows, e.dim);
      inputs.input = input_view;
      inputs.offsets = e.input_rows > 0 ? nullptr : &offsets_view;
      inputs.per_sample_weights = e.psw.empty() ? nullptr : &psw_view;
      TensorView argmax_view = make_view_2d(argmax.data(), DType::kInt64, bags, e.dim);
      TensorView count_view = make_view_1d(bag_count.data(), DType::kInt64, bags);
      ForwardOutputs outputs{make_view_2d(out.data(), e.dtype, bags, e.dim), &count_view,
                             e.options.mode == Mode::kMax ? &argmax_view : nullptr};
      const Status status = impl.forward(inputs, outputs, e.options);
      ASSERT_TRUE(status.ok()) << status.message();

      const std::vector<unsigned char> want_out = to_bytes(e.output);
      ASSERT_EQ(want_out.size(), out.size());
      std::string diff =
          first_difference("output", e.dtype, out.data(), want_out.data(), e.output.size(), e.dim);
      EXPECT_TRUE(diff.empty()) << diff;
      if (!e.argmax.empty()) {
        EXPECT_EQ(argmax, e.argmax);
      }
      if (!e.bag_count.empty()) {
        EXPECT_EQ(bag_count, e.bag_count);
      }
      if (!e.weight_after.empty()) {
        const std::vector<unsigned char> want_weight = to_bytes(e.weight_after);
        diff = first_difference("weight after renorm", e.dtype, weight.data(), want_weight.data(),
                                e.weight_after.size(), e.dim);
        EXPECT_TRUE(diff.empty()) << diff;
      }
    }
  }
}

// The float32 bit patterns SEMANTICS.md quotes, independent of the decimal spelling above.
TEST(WorkedExamples, MaxNormFloat32BitPatterns) {
  DefaultIsa isa;
  for (const Implementation& impl : kImplementations) {
    SCOPED_TRACE(impl.name);
    float weight[2] = {3, 4};
    int64_t input[1] = {0}, offsets[1] = {0};
    float out[2] = {0, 0};
    TensorView input_view = make_view_1d(input, DType::kInt64, 1);
    TensorView offsets_view = make_view_1d(offsets, DType::kInt64, 1);
    ForwardInputs inputs;
    inputs.weight = make_view_2d(weight, DType::kFloat32, 1, 2);
    inputs.input = input_view;
    inputs.offsets = &offsets_view;
    Options options;
    options.mode = Mode::kSum;
    options.max_norm = 2.0;
    ASSERT_TRUE(impl.forward(inputs, {make_view_2d(out, DType::kFloat32, 1, 2)}, options).ok());
    EXPECT_EQ(ref::float_bits(weight[0]), 0x3F99999Au) << weight[0];  // 1.2000000477
    EXPECT_EQ(ref::float_bits(weight[1]), 0x3FCCCCCDu) << weight[1];  // 1.6000000238
    EXPECT_EQ(ref::float_bits(out[0]), 0x3F99999Au);
    EXPECT_EQ(ref::float_bits(out[1]), 0x3FCCCCCDu);
  }
}

}  // namespace
}  // namespace embag
