// Golden vectors recorded from PyTorch (tests/golden/<case>/), and SEMANTICS.md's worked
// examples written out by hand: the reference and embag must both reproduce them.
//
// A golden case is a directory holding meta.txt (key=value lines: mode, padding_idx, max_norm,
// norm_type, include_last_offset, scale_grad_by_freq, note, torch_version; unknown keys are
// ignored), weight.npy, input.npy, optional offsets.npy and per_sample_weights.npy, output.npy
// and, when max_norm is set, optionally weight_after.npy (the table after PyTorch's renorm).
// Cases recorded with a backward pass also hold grad_output.npy (the upstream gradient),
// grad_weight.npy (autograd's dense weight gradient) and, with per_sample_weights,
// grad_per_sample_weights.npy; both the dense and the sparse backward are checked against them.
// NumPy has no bfloat16, so a bfloat16 case stores its float arrays as float32 and says
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
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "differential_support.h"
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

// Both implementations under test take the same arguments. Each one's backward is fed its own
// forward's argmax.
using ForwardFn = Status (*)(const ForwardInputs&, const ForwardOutputs&, const Options&);
using BackwardFn = Status (*)(const BackwardInputs&, const BackwardOutputs&, const Options&);
using SparseRowsFn = Status (*)(const BackwardInputs&, const Options&, int64_t*);
struct Implementation {
  const char* name;
  ForwardFn forward;
  BackwardFn backward;
  SparseRowsFn sparse_gradient_rows;
};
const Implementation kImplementations[] = {
    {"reference", &ref::forward, &ref::backward, &ref::sparse_gradient_rows},
    {"embag",
     [](const ForwardInputs& i, const ForwardOutputs& o, const Options& opt) {
       return difftest::run_forward(i, o, opt);
     },
     [](const BackwardInputs& i, const BackwardOutputs& o, const Options& opt) {
       return difftest::run_backward(i, o, opt);
     },
     [](const BackwardInputs& i, const Options& opt, int64_t* rows) {
       return difftest::run_sparse_gradient_rows(i, opt, rows);
     }}};

// Runs `body` once on every ISA compiled in and supported here (as the differential tests do), and
// puts the automatic ISA choice and the thread count back however it ends.
void on_every_isa(void (*body)()) {
  difftest::RestoreGlobals restore;
  for (std::optional<Isa> isa : difftest::isas_to_test()) {
    SCOPED_TRACE("isa=" + difftest::isa_label(isa));
    if (!difftest::select(isa)) return;
    body();
  }
}

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
  npy::Array grad_output, grad_weight, grad_psw;  // backward, when recorded
  bool has_offsets = false, has_psw = false, has_weight_after = false;
  bool has_grad_output = false, has_grad_weight = false, has_grad_psw = false;
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
  // Only backward reads it; forward validates it (it is refused with max) and ignores it.
  c->options.scale_grad_by_freq = parse_bool(get("scale_grad_by_freq"));

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
  if (!(error = load("grad_output.npy", &c->grad_output, &c->has_grad_output)).empty()) {
    return error;
  }
  if (!(error = load("grad_weight.npy", &c->grad_weight, &c->has_grad_weight)).empty()) {
    return error;
  }
  if (!(error = load("grad_per_sample_weights.npy", &c->grad_psw, &c->has_grad_psw)).empty()) {
    return error;
  }
  if (c->has_grad_weight != c->has_grad_output) {
    return "grad_weight.npy and grad_output.npy must be recorded together";
  }
  if (c->has_grad_psw && (!c->has_psw || !c->has_grad_weight)) {
    return "grad_per_sample_weights.npy needs per_sample_weights.npy and grad_weight.npy";
  }
  const std::string dtype = get("weight_dtype");
  if (dtype == "bfloat16" || dtype == "torch.bfloat16") {
    for (npy::Array* a : {&c->weight, &c->output, &c->psw, &c->weight_after, &c->grad_output,
                          &c->grad_weight, &c->grad_psw}) {
      if (!a->data.empty() && !to_bfloat16(a, &error)) return error;
    }
  }
  c->table_dtype = c->weight.dtype;
  if (c->weight.shape.size() != 2) return "weight.npy must be 2-D";
  return "";
}

bool small_integers(const npy::Array& a) {
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double v = ref::value_at_index(a.data.data(), a.dtype, i);
    if (!(v == std::floor(v) && std::fabs(v) <= 1 << 20)) return false;
  }
  return true;
}

// Cases whose every sum is exact whatever the order or fusion: float64, small integers, no
// renorm. Mean is then one correctly rounded division, which any implementation agrees on.
bool must_be_exact(const GoldenCase& c) {
  if (c.table_dtype != DType::kFloat64 || c.options.max_norm) return false;
  return small_integers(c.weight) && (!c.has_psw || small_integers(c.psw));
}

// The same for gradients, which also needs an integer upstream gradient. Mean and
// scale_grad_by_freq divide before (per term) or after summing, and PyTorch and embag may
// differ in where, so they are never exact.
bool backward_must_be_exact(const GoldenCase& c) {
  return must_be_exact(c) && small_integers(c.grad_output) && c.options.mode != Mode::kMean &&
         !c.options.scale_grad_by_freq;
}

// A copy with every element replaced by its absolute value (an absent array stays empty).
npy::Array absolute(const npy::Array& a) {
  npy::Array out = a;
  // An absent array has no data, though numel() of its 0-D shape is 1.
  const int64_t count = static_cast<int64_t>(out.data.size() / element_size(out.dtype));
  for (int64_t i = 0; i < count; ++i) {
    put_value(out.data.data(), out.dtype, i,
              std::fabs(ref::value_at_index(out.data.data(), out.dtype, i)));
  }
  return out;
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

void Golden_ReferenceAndEmbagMatchPyTorch() {
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
        npy::Array abs_weight = absolute(weight), abs_psw = absolute(psw);
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
TEST(Golden, ReferenceAndEmbagMatchPyTorch) { on_every_isa(&Golden_ReferenceAndEmbagMatchPyTorch); }

// One implementation's backward of one golden case against PyTorch's gradients (ASSERTs end
// only this case).
void check_backward_case(const GoldenCase& c, const Implementation& impl) {
  const DType dtype = c.table_dtype;
  const int64_t num_rows = c.weight.shape[0], dim = c.weight.shape[1];
  const bool is_max = c.options.mode == Mode::kMax;
  const bool exact = backward_must_be_exact(c);
  const Tolerance tol = tolerance_for(dtype);
  npy::Array weight = c.weight;  // renorm changes it in place
  npy::Array input = c.input, offsets = c.offsets, psw = c.psw, grad_output = c.grad_output;
  TensorView input_view = input.view(), offsets_view = offsets.view(), psw_view = psw.view();
  ForwardInputs fin;
  fin.weight = weight.view();
  fin.input = input_view;
  fin.offsets = c.has_offsets ? &offsets_view : nullptr;
  fin.per_sample_weights = c.has_psw ? &psw_view : nullptr;
  const int64_t bags = num_bags(input_view, fin.offsets, c.options);
  ASSERT_EQ(c.grad_output.shape, (std::vector<int64_t>{bags, dim})) << "grad_output.npy";
  ASSERT_EQ(c.grad_weight.shape, c.weight.shape) << "grad_weight.npy's shape";
  if (c.has_grad_psw) {
    ASSERT_EQ(c.grad_psw.shape, c.input.shape) << "grad_per_sample_weights.npy's shape";
  }
  npy::Array out = npy::make_array(dtype, {bags, dim});
  npy::Array argmax = npy::make_array(DType::kInt64, {bags, dim});
  TensorView argmax_view = argmax.view();
  Status status =
      impl.forward(fin, {out.view(), nullptr, is_max ? &argmax_view : nullptr}, c.options);
  ASSERT_TRUE(status.ok()) << "forward: " << status.message();

  BackwardInputs in;
  in.weight = weight.view();
  in.input = input_view;
  in.offsets = fin.offsets;
  in.per_sample_weights = fin.per_sample_weights;
  in.grad_output = grad_output.view();
  in.argmax = is_max ? &argmax_view : nullptr;
  npy::Array grad = npy::make_array(dtype, c.weight.shape);
  npy::Array grad_psw = npy::make_array(dtype, c.input.shape);
  TensorView grad_view = grad.view(), grad_psw_view = grad_psw.view();
  BackwardOutputs outputs;
  outputs.grad_weight = &grad_view;
  outputs.grad_per_sample_weights = c.has_psw ? &grad_psw_view : nullptr;
  Options dense = c.options;
  dense.sparse = false;
  status = impl.backward(in, outputs, dense);
  ASSERT_TRUE(status.ok()) << "backward: " << status.message();

  // The size of the terms behind each gradient element: the reference's backward over
  // absolute values of the table (as this implementation's forward left it), weights and
  // upstream gradient.
  npy::Array abs_weight = absolute(weight), abs_psw = absolute(psw);
  npy::Array abs_grad_output = absolute(grad_output);
  TensorView abs_psw_view = abs_psw.view();
  BackwardInputs abs_in = in;
  abs_in.weight = abs_weight.view();
  abs_in.per_sample_weights = c.has_psw ? &abs_psw_view : nullptr;
  abs_in.grad_output = abs_grad_output.view();
  npy::Array abs_grad = npy::make_array(dtype, c.weight.shape);
  npy::Array abs_grad_psw = npy::make_array(dtype, c.input.shape);
  TensorView abs_grad_view = abs_grad.view(), abs_grad_psw_view = abs_grad_psw.view();
  BackwardOutputs abs_outputs;
  abs_outputs.grad_weight = &abs_grad_view;
  abs_outputs.grad_per_sample_weights = c.has_psw ? &abs_grad_psw_view : nullptr;
  ASSERT_TRUE(ref::backward(abs_in, abs_outputs, dense).ok());
  auto values_of = [](const npy::Array& a) {
    std::vector<double> v;
    for (int64_t i = 0; i < a.numel(); ++i) {
      v.push_back(ref::value_at_index(a.data.data(), a.dtype, i));
    }
    return v;
  };
  const std::vector<double> magnitude = values_of(abs_grad);

  std::string diff =
      compare_with_torch("grad_weight", grad.data.data(), c.grad_weight, magnitude, tol, exact);
  EXPECT_TRUE(diff.empty()) << diff;
  if (c.has_grad_psw) {
    diff = compare_with_torch("grad_per_sample_weights", grad_psw.data.data(), c.grad_psw,
                              values_of(abs_grad_psw), tol, exact);
    EXPECT_TRUE(diff.empty()) << diff;
  }

  if (is_max) return;  // max has no sparse gradient
  Options sparse = c.options;
  sparse.sparse = true;
  int64_t unique_rows = -1;
  status = impl.sparse_gradient_rows(in, sparse, &unique_rows);
  ASSERT_TRUE(status.ok()) << "sparse_gradient_rows: " << status.message();
  npy::Array rows = npy::make_array(DType::kInt64, {unique_rows});
  npy::Array values = npy::make_array(dtype, {unique_rows, dim});
  TensorView rows_view = rows.view(), values_view = values.view();
  BackwardOutputs sparse_outputs;
  sparse_outputs.grad_weight_rows = &rows_view;
  sparse_outputs.grad_weight_values = &values_view;
  status = impl.backward(in, sparse_outputs, sparse);
  ASSERT_TRUE(status.ok()) << "sparse backward: " << status.message();
  // PyTorch's rows at the listed rows, and their magnitudes, for the same comparison.
  const size_t esize = element_size(dtype);
  npy::Array want = npy::make_array(dtype, {unique_rows, dim});
  std::vector<double> want_magnitude;
  std::vector<bool> listed(static_cast<size_t>(num_rows), false);
  int64_t previous = -1;
  for (int64_t u = 0; u < unique_rows; ++u) {
    const int64_t r = static_cast<int64_t>(bits_at(rows.data.data(), DType::kInt64, u));
    ASSERT_TRUE(r > previous && r < num_rows)
        << "sparse rows are not strictly ascending rows of the table at entry " << u << ": " << r;
    previous = r;
    listed[static_cast<size_t>(r)] = true;
    std::memcpy(want.data.data() + static_cast<size_t>(u * dim) * esize,
                c.grad_weight.data.data() + static_cast<size_t>(r * dim) * esize,
                static_cast<size_t>(dim) * esize);
    for (int64_t d = 0; d < dim; ++d) {
      want_magnitude.push_back(magnitude[static_cast<size_t>(r * dim + d)]);
    }
  }
  for (int64_t r = 0; r < num_rows; ++r) {
    if (listed[static_cast<size_t>(r)]) continue;
    for (int64_t d = 0; d < dim; ++d) {
      EXPECT_EQ(ref::value_at_index(c.grad_weight.data.data(), dtype, r * dim + d), 0.0)
          << "row " << r << " is not in the sparse gradient, but PyTorch's gradient of it is "
          << "not zero";
    }
  }
  diff = compare_with_torch("sparse grad_weight values", values.data.data(), want, want_magnitude,
                            tol, exact);
  EXPECT_TRUE(diff.empty()) << diff;
}

// The gradients PyTorch's autograd recorded. Each implementation runs its own forward first (max
// needs that forward's argmax, max_norm its renormalised table), then backward dense and, where
// sparse is allowed (not max), sparse: the sparse rows must be strictly ascending, every row left
// out must have a zero PyTorch gradient, and the values must be PyTorch's rows. Tolerances are
// the forward's, relative to the same backward over absolute values (the size of the terms
// summed): PyTorch sums in another order, and sums float16 gradients in float16.
void Golden_BackwardMatchesPyTorch() {
  int cases_with_backward = 0;
  for (const fs::path& dir : golden_case_dirs()) {
    GoldenCase c;
    const std::string load_error = load_case(dir, &c);
    SCOPED_TRACE("golden case " + dir.filename().string() + ": " +
                 (c.meta.count("note") ? c.meta["note"] : std::string()));
    if (!load_error.empty()) {
      ADD_FAILURE() << load_error;
      continue;
    }
    if (!c.has_grad_weight) continue;
    ++cases_with_backward;
    for (const Implementation& impl : kImplementations) {
      SCOPED_TRACE(impl.name);
      check_backward_case(c, impl);
    }
  }
  // Without this, golden cases recorded without their backward files would make this test pass.
  EXPECT_GT(cases_with_backward, 0) << "no golden case has backward files (grad_weight.npy)";
}
TEST(Golden, BackwardMatchesPyTorch) { on_every_isa(&Golden_BackwardMatchesPyTorch); }

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
  // Backward, checked when grad_output is not empty: the dense gradient, grad_per_sample_weights
  // (with psw) and, when sparse_rows is not empty, the sparse gradient (those rows of the dense
  // one).
  std::vector<double> grad_output;  // B * D
  std::vector<double> grad_weight;  // num_rows * dim
  std::vector<double> grad_psw;     // N, with psw
  std::vector<int64_t> sparse_rows;
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
  // The empty bags' 99s must go nowhere.
  e.grad_output = {99, 99, 1, 2, 99, 99, 3, 4, 99, 99};
  return e;
}

std::vector<Example> examples() {
  std::vector<Example> all;
  Example e = worked("sum", Mode::kSum);
  e.output = {0, 0, 13, 16, 0, 0, 13, 16, 0, 0};
  e.bag_count = {0, 3, 0, 3, 0};
  e.grad_weight = {3, 4, 5, 8, 0, 0, 1, 2, 3, 4};
  e.sparse_rows = {0, 1, 3, 4};
  all.push_back(e);

  e = worked("sum, scale_grad_by_freq: row 1 is read 3 times", Mode::kSum);
  e.options.scale_grad_by_freq = true;
  e.output = {0, 0, 13, 16, 0, 0, 13, 16, 0, 0};
  e.grad_weight = {3, 4, 5.0 / 3, 8.0 / 3, 0, 0, 1, 2, 3, 4};
  e.sparse_rows = {0, 1, 3, 4};
  all.push_back(e);

  e = worked("mean", Mode::kMean);
  e.output = {0, 0, 13.0 / 3, 16.0 / 3, 0, 0, 13.0 / 3, 16.0 / 3, 0, 0};
  e.bag_count = {0, 3, 0, 3, 0};
  // Each term is g / n_b, rounded, then the terms are added in input order: row 1 is read at
  // positions 1 and 2 (bag 1) and 3 (bag 3).
  e.grad_weight = {3.0 / 3,
                   4.0 / 3,
                   1.0 / 3 + 1.0 / 3 + 3.0 / 3,
                   2.0 / 3 + 2.0 / 3 + 4.0 / 3,
                   0,
                   0,
                   1.0 / 3,
                   2.0 / 3,
                   3.0 / 3,
                   4.0 / 3};
  e.sparse_rows = {0, 1, 3, 4};
  all.push_back(e);

  e = worked("max", Mode::kMax);
  e.output = {0, 0, 7, 8, 0, 0, 9, 10, 0, 0};
  e.argmax = {-1, -1, 3, 3, -1, -1, 4, 4, -1, -1};
  e.grad_weight = {0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
  all.push_back(e);

  e = worked("sum, padding_idx=1", Mode::kSum);
  e.options.padding_idx = 1;
  e.output = {0, 0, 7, 8, 0, 0, 10, 12, 0, 0};
  e.bag_count = {0, 1, 0, 2, 0};
  e.grad_weight = {3, 4, 0, 0, 0, 0, 1, 2, 3, 4};
  e.sparse_rows = {0, 3, 4};
  all.push_back(e);

  e = worked("sum, padding_idx=-4 (wraps to 1)", Mode::kSum);
  e.options.padding_idx = -4;
  e.output = {0, 0, 7, 8, 0, 0, 10, 12, 0, 0};
  e.grad_weight = {3, 4, 0, 0, 0, 0, 1, 2, 3, 4};
  e.sparse_rows = {0, 3, 4};
  all.push_back(e);

  e = worked("mean, padding_idx=1", Mode::kMean);
  e.options.padding_idx = 1;
  e.output = {0, 0, 7, 8, 0, 0, 5, 6, 0, 0};
  e.grad_weight = {1.5, 2, 0, 0, 0, 0, 1, 2, 1.5, 2};
  e.sparse_rows = {0, 3, 4};
  all.push_back(e);

  e = worked("max, padding_idx=1", Mode::kMax);
  e.options.padding_idx = 1;
  e.output = {0, 0, 7, 8, 0, 0, 9, 10, 0, 0};
  e.argmax = {-1, -1, 3, 3, -1, -1, 4, 4, -1, -1};
  e.grad_weight = {0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
  all.push_back(e);

  e = worked("sum, per_sample_weights=[1..6]", Mode::kSum);
  e.psw = {1, 2, 3, 4, 5, 6};
  e.output = {0, 0, 22, 28, 0, 0, 63, 78, 0, 0};
  e.grad_weight = {18, 24, 17, 26, 0, 0, 1, 2, 15, 20};
  e.grad_psw = {23, 11, 11, 25, 67, 11};
  e.sparse_rows = {0, 1, 3, 4};
  all.push_back(e);

  e = worked("sum, per_sample_weights=[1..6], padding_idx=1: grad_psw 0 at padding", Mode::kSum);
  e.psw = {1, 2, 3, 4, 5, 6};
  e.options.padding_idx = 1;
  e.output = {0, 0, 7, 8, 0, 0, 51, 62, 0, 0};
  e.grad_weight = {18, 24, 0, 0, 0, 0, 1, 2, 15, 20};
  e.grad_psw = {23, 0, 0, 0, 67, 11};
  e.sparse_rows = {0, 3, 4};
  all.push_back(e);

  e = worked("sum, include_last_offset (4 bags)", Mode::kSum);
  e.options.include_last_offset = true;
  e.output = {0, 0, 13, 16, 0, 0, 13, 16};
  e.grad_output.resize(8);
  e.grad_weight = {3, 4, 5, 8, 0, 0, 1, 2, 3, 4};
  all.push_back(e);

  e = worked("sum, include_last_offset, off[B] < N: positions 5.. in no bag", Mode::kSum);
  e.options.include_last_offset = true;
  e.input = {3, 1, 1, 1, 4, 99};  // 99 is past off[B] = 5: never read, never checked
  e.offsets = {0, 0, 3, 5};
  e.output = {0, 0, 13, 16, 12, 14};
  e.grad_output.resize(6);  // bags [], [3, 1, 1], [1, 4]: g rows (99, 99), (1, 2), (99, 99)
  e.grad_weight = {0, 0, 101, 103, 0, 0, 1, 2, 99, 99};
  e.sparse_rows = {1, 3, 4};
  all.push_back(e);

  e = worked("sum, include_last_offset, off[B] < N, per_sample_weights", Mode::kSum);
  e.options.include_last_offset = true;
  e.input = {3, 1, 1, 1, 4, 99};
  e.offsets = {0, 0, 3, 5};
  e.psw = {1, 2, 3, 4, 5, 6};
  e.output = {0, 0, 22, 28, 57, 66};
  e.grad_output.resize(6);
  e.grad_weight = {0, 0, 401, 406, 0, 0, 1, 2, 495, 495};
  e.grad_psw = {23, 11, 11, 693, 1881, 0};  // position 5 is in no bag
  all.push_back(e);

  e = worked("sum, 2-D input", Mode::kSum);
  e.input_rows = 2;
  e.offsets.clear();
  e.output = {13, 16, 13, 16};
  e.grad_output.resize(4);  // rows [3, 1, 1] with g (99, 99) and [1, 4, 0] with g (1, 2)
  e.grad_weight = {1, 2, 199, 200, 0, 0, 99, 99, 1, 2};
  e.sparse_rows = {0, 1, 3, 4};
  all.push_back(e);

  // SEMANTICS.md: one bag of ones, idx = [1, 1, 3]: row 1 is read twice and gets (1 + 1) / 2,
  // row 3 once and gets 1 (PyTorch CPU gave row 3 one half: pytorch#190063).
  e = Example{};
  e.name = "scale_grad_by_freq, idx = [1, 1, 3]";
  e.num_rows = 4;
  e.dim = 2;
  e.weight = {1, 1, 1, 1, 1, 1, 1, 1};
  e.input = {1, 1, 3};
  e.offsets = {0};
  e.options.mode = Mode::kSum;
  e.options.scale_grad_by_freq = true;
  e.output = {3, 3};
  e.grad_output = {1, 1};
  e.grad_weight = {0, 0, 1, 1, 0, 0, 1, 1};
  e.sparse_rows = {1, 3};
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
  e.grad_output = {3, 4};
  e.grad_weight = {0, 0, 3, 0, 0, 4};  // column 0's gradient goes to row 1, not row 0
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

void WorkedExamples_ReferenceAndEmbagMatchExactly() {
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
      if (e.grad_output.empty()) continue;

      // Backward, from this implementation's own forward (its argmax, its table).
      ASSERT_EQ(e.grad_output.size(), static_cast<size_t>(bags * e.dim));
      std::vector<unsigned char> grad_output = to_bytes(e.grad_output);
      std::vector<unsigned char> grad(static_cast<size_t>(e.num_rows * e.dim) * esize, 0x7F);
      std::vector<unsigned char> grad_psw(static_cast<size_t>(n) * esize, 0x7F);
      TensorView grad_view = make_view_2d(grad.data(), e.dtype, e.num_rows, e.dim);
      TensorView grad_psw_view = make_view_1d(grad_psw.data(), e.dtype, n);
      if (e.input_rows > 0) {
        grad_psw_view = make_view_2d(grad_psw.data(), e.dtype, e.input_rows, n / e.input_rows);
      }
      BackwardInputs backward_inputs;
      backward_inputs.weight = inputs.weight;
      backward_inputs.input = inputs.input;
      backward_inputs.offsets = inputs.offsets;
      backward_inputs.per_sample_weights = inputs.per_sample_weights;
      backward_inputs.grad_output = make_view_2d(grad_output.data(), e.dtype, bags, e.dim);
      backward_inputs.argmax = e.options.mode == Mode::kMax ? &argmax_view : nullptr;
      BackwardOutputs backward_outputs;
      backward_outputs.grad_weight = &grad_view;
      backward_outputs.grad_per_sample_weights = e.psw.empty() ? nullptr : &grad_psw_view;
      const Status backward_status = impl.backward(backward_inputs, backward_outputs, e.options);
      ASSERT_TRUE(backward_status.ok()) << backward_status.message();
      const std::vector<unsigned char> want_grad = to_bytes(e.grad_weight);
      ASSERT_EQ(want_grad.size(), grad.size());
      diff = first_difference("grad_weight", e.dtype, grad.data(), want_grad.data(),
                              e.grad_weight.size(), e.dim);
      EXPECT_TRUE(diff.empty()) << diff;
      if (!e.grad_psw.empty()) {
        const std::vector<unsigned char> want_psw = to_bytes(e.grad_psw);
        ASSERT_EQ(want_psw.size(), grad_psw.size());
        diff = first_difference("grad_per_sample_weights", e.dtype, grad_psw.data(),
                                want_psw.data(), e.grad_psw.size(), 1);
        EXPECT_TRUE(diff.empty()) << diff;
      }
      if (e.sparse_rows.empty()) continue;

      Options sparse = e.options;
      sparse.sparse = true;
      int64_t unique_rows = -1;
      const Status rows_status = impl.sparse_gradient_rows(backward_inputs, sparse, &unique_rows);
      ASSERT_TRUE(rows_status.ok()) << rows_status.message();
      ASSERT_EQ(unique_rows, static_cast<int64_t>(e.sparse_rows.size()));
      std::vector<int64_t> rows(e.sparse_rows.size(), 0x7F7F);
      std::vector<unsigned char> values(e.sparse_rows.size() * static_cast<size_t>(e.dim) * esize,
                                        0x7F);
      TensorView rows_view = make_view_1d(rows.data(), DType::kInt64, unique_rows);
      TensorView values_view = make_view_2d(values.data(), e.dtype, unique_rows, e.dim);
      BackwardOutputs sparse_outputs;
      sparse_outputs.grad_weight_rows = &rows_view;
      sparse_outputs.grad_weight_values = &values_view;
      const Status sparse_status = impl.backward(backward_inputs, sparse_outputs, sparse);
      ASSERT_TRUE(sparse_status.ok()) << sparse_status.message();
      EXPECT_EQ(rows, e.sparse_rows);
      for (size_t u = 0; u < e.sparse_rows.size(); ++u) {
        const size_t row_bytes = static_cast<size_t>(e.dim) * esize;
        diff =
            first_difference("sparse grad_weight values", e.dtype, values.data() + u * row_bytes,
                             want_grad.data() + static_cast<size_t>(e.sparse_rows[u]) * row_bytes,
                             static_cast<size_t>(e.dim), e.dim);
        EXPECT_TRUE(diff.empty()) << "entry " << u << ": " << diff;
      }
    }
  }
}
TEST(WorkedExamples, ReferenceAndEmbagMatchExactly) {
  on_every_isa(&WorkedExamples_ReferenceAndEmbagMatchExactly);
}

// The float32 bit patterns SEMANTICS.md quotes, independent of the decimal spelling above.
void WorkedExamples_MaxNormFloat32BitPatterns() {
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
TEST(WorkedExamples, MaxNormFloat32BitPatterns) {
  on_every_isa(&WorkedExamples_MaxNormFloat32BitPatterns);
}

}  // namespace
}  // namespace embag
