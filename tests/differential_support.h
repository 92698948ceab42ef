// Shared helpers for the randomized differential tests (test_forward_differential.cpp and
// test_backward_differential.cpp): guard-byte buffers, the dtype/index/D grids, seed mixing,
// random value generators, bitwise (NaN-tolerant, optionally ulp-tolerant) comparison, the
// per-ISA scaffolding (which ISAs to run, selecting one, restoring the global ISA and thread
// count), and the case grids both drivers sweep (a mode's random cases, the edge shapes) with
// the loop that runs them on every ISA. Test-only; not part of the library.
#ifndef EMBAG_TESTS_DIFFERENTIAL_SUPPORT_H_
#define EMBAG_TESTS_DIFFERENTIAL_SUPPORT_H_

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "embag/embag.h"
#include "gpu_mirror.h"
#include "reference/element_access.h"

namespace embag {
namespace difftest {

// ---- Buffers with guard regions -------------------------------------------------------------

inline constexpr unsigned char kSentinel = 0x7F;  // 0x7F7F... is a huge finite float
inline constexpr size_t kGuardBytes = 64;

// Memory for one array with kGuardBytes of sentinel on each side. Every embag call must leave the
// guards alone; the contents start as sentinel too, so an element a kernel forgets shows up.
class GuardedBuffer {
 public:
  explicit GuardedBuffer(size_t bytes)
      : bytes_(bytes), storage_(bytes + 2 * kGuardBytes, kSentinel) {}
  explicit GuardedBuffer(const std::vector<unsigned char>& contents)
      : GuardedBuffer(contents.size()) {
    std::copy(contents.begin(), contents.end(), storage_.begin() + kGuardBytes);
  }

  unsigned char* data() { return storage_.data() + kGuardBytes; }
  const unsigned char* data() const { return storage_.data() + kGuardBytes; }
  size_t size() const { return bytes_; }
  std::vector<unsigned char> contents() const {
    return std::vector<unsigned char>(data(), data() + bytes_);
  }
  bool guards_intact() const {
    auto untouched = [](unsigned char c) { return c == kSentinel; };
    return std::all_of(storage_.begin(), storage_.begin() + kGuardBytes, untouched) &&
           std::all_of(storage_.end() - kGuardBytes, storage_.end(), untouched);
  }

 private:
  size_t bytes_;
  std::vector<unsigned char> storage_;
};

// ---- Case grid and seeds --------------------------------------------------------------------

enum class Padding { kNone, kPositive, kNegative };

inline constexpr DType kWeightDTypes[] = {DType::kFloat32, DType::kFloat64, DType::kFloat16,
                                          DType::kBFloat16};
inline constexpr DType kIndexDTypes[] = {DType::kInt32, DType::kInt64};
// Odd sizes reach every vector tail; 128 and 64 are whole vectors on every ISA; 4..17 run the
// one- and two-vector tiles (4 / 8 lanes on SSE4.1, NEON and armv7, 8 / 16 on AVX2) and their
// tails.
inline constexpr int64_t kDims[] = {1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 33, 64, 85, 128, 163};

// splitmix64: turns (test seed, case number) into well-spread, reproducible case seeds.
inline uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// EMBAG_DIFF_SEED=<seed> runs only the case with that seed.
inline std::optional<uint64_t> only_seed() {
  const char* env = std::getenv("EMBAG_DIFF_SEED");
  if (env == nullptr || *env == '\0') return std::nullopt;
  return std::strtoull(env, nullptr, 0);
}

// EMBAG_DIFF_SAMPLE=<k> runs about one case in k: those whose seed is a multiple of k, so the
// sample is the same on every run and spread over every mode, dtype and option of the grid (the
// cuda-emulated tests use it: the fake CUDA driver interprets PTX one thread after another).
inline uint64_t sample_every() {
  const char* env = std::getenv("EMBAG_DIFF_SAMPLE");
  if (env == nullptr || *env == '\0') return 1;
  const uint64_t k = std::strtoull(env, nullptr, 0);
  return k == 0 ? 1 : k;
}

// ---- Random values --------------------------------------------------------------------------

inline int64_t uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {  // inclusive
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}
inline bool chance(std::mt19937_64& rng, double p) { return std::bernoulli_distribution(p)(rng); }

// A value: continuous over a few binades (so sums round), or small integers (so sums are exact
// and ties and cancellations to zero are common), or now and then a special value.
inline double random_value(std::mt19937_64& rng, bool coarse, bool specials) {
  if (specials && chance(rng, 0.06)) {
    const double kSpecials[] = {NAN, -NAN, INFINITY, -INFINITY, -0.0, 0.0};
    return kSpecials[uniform(rng, 0, 5)];
  }
  if (coarse) return static_cast<double>(uniform(rng, -3, 3));
  const double unit = std::uniform_real_distribution<double>(-1.0, 1.0)(rng);
  return std::ldexp(unit, static_cast<int>(uniform(rng, -3, 3)));
}

// ---- Comparing ------------------------------------------------------------------------------

// Distance in units in the last place, counting across zero.
inline uint64_t ulp_distance(DType dtype, uint64_t a, uint64_t b) {
  const int width = static_cast<int>(ref::element_size(dtype) * 8);
  const uint64_t sign = uint64_t{1} << (width - 1);
  auto ordered = [&](uint64_t v) -> int64_t {
    // Magnitude bits fit in 63 bits, so the negation cannot overflow.
    const int64_t magnitude = static_cast<int64_t>(v & (sign - 1));
    return (v & sign) ? -magnitude : magnitude;
  };
  const int64_t d = ordered(a) - ordered(b);
  return static_cast<uint64_t>(d < 0 ? -d : d);
}

// The first element where `got` and `want` differ (NaNs of any payload count as equal: IEEE
// leaves payloads of computed NaNs unspecified and 16-bit conversions may canonicalise them),
// as "<what> differs at <row_name> r, column c: embag X vs reference Y", or "" when they agree.
// `tolerance_ulps` > 0 allows that many ulps between finite values.
inline std::string first_difference(const char* what, const char* row_name, DType dtype,
                                    const unsigned char* got, int64_t got_stride,
                                    const unsigned char* want, int64_t want_stride, int64_t rows,
                                    int64_t cols, uint64_t tolerance_ulps = 0) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const uint64_t g = ref::bits_at(got, dtype, r * got_stride + c);
      const uint64_t w = ref::bits_at(want, dtype, r * want_stride + c);
      if (g == w) continue;
      const bool g_nan = ref::is_nan_bits(dtype, g), w_nan = ref::is_nan_bits(dtype, w);
      if (g_nan && w_nan) continue;
      if (tolerance_ulps > 0 && !g_nan && !w_nan && ulp_distance(dtype, g, w) <= tolerance_ulps) {
        continue;
      }
      std::ostringstream s;
      s << what << " differs at " << row_name << " " << r << ", column " << c << ": embag "
        << ref::format_element(dtype, g) << " vs reference " << ref::format_element(dtype, w);
      if (tolerance_ulps > 0) s << " (allowed " << tolerance_ulps << " ulps)";
      return s.str();
    }
  }
  return "";
}

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), std::string::npos, suffix) == 0;
}

// ---- ISA and thread scopes ------------------------------------------------------------------

// The CPU ISAs compiled into this build that this CPU cannot run: no test here reaches them.
// (GPU ISAs are not the CPU's to run: the gpu-emulated tests and the CUDA tests cover them.)
inline std::vector<Isa> compiled_but_unsupported_isas() {
  std::vector<Isa> out;
  const std::vector<Isa> supported = supported_isas();
  for (Isa isa : compiled_isas()) {
    if (isa_device(isa) != DeviceType::kCPU) continue;
    if (std::find(supported.begin(), supported.end(), isa) == supported.end()) out.push_back(isa);
  }
  return out;
}

// The ISAs to run every test on: the CPU ISAs compiled in and supported here. On a host with
// none of them (an ARM build) the automatic choice is tested once instead, without a name check.
// ISAs that are compiled in but unsupported are said once per test program on stdout, and
// reported as a skipped test by IsaCoverage.CompiledIsasTheCpuCannotRunAreReported, never
// dropped silently. EMBAG_TEST_ISAS=<comma list> picks ISAs instead, GPU ones included: `opencl`
// runs the GPU schedules on the OpenCL device (POCL on machines without a GPU) through
// gpu_mirror.h; CTest's gpu-emulated tests set it.
inline std::vector<std::optional<Isa>> isas_to_test() {
  std::vector<std::optional<Isa>> out;
  if (const char* env = std::getenv("EMBAG_TEST_ISAS"); env != nullptr && *env != '\0') {
    std::stringstream list(env);
    for (std::string name; std::getline(list, name, ',');) {
      const std::optional<Isa> isa = parse_isa(name);
      EXPECT_TRUE(isa.has_value()) << "EMBAG_TEST_ISAS names an unknown ISA: " << name;
      if (isa) out.push_back(isa);
    }
    return out;
  }
  const std::vector<Isa> supported = supported_isas();
  for (Isa isa : compiled_isas()) {
    if (std::find(supported.begin(), supported.end(), isa) != supported.end()) out.push_back(isa);
  }
  static const bool said = [] {
    for (Isa isa : compiled_but_unsupported_isas()) {
      std::printf("[ ISA      ] %s is compiled in but this CPU does not support it: not tested\n",
                  isa_name(isa));
    }
    return true;
  }();
  (void)said;
  if (out.empty()) out.push_back(std::nullopt);
  return out;
}

// The device the selected ISA runs on: calls below go to it.
inline DeviceType& selected_device() {
  static thread_local DeviceType device = DeviceType::kCPU;
  return device;
}

// The calls under test, on the selected ISA's device (host memory mirrored for a GPU).
inline Status run_forward(const ForwardInputs& in, const ForwardOutputs& out,
                          const Options& options) {
  return gpu_mirror::forward(selected_device(), in, out, options);
}
inline Status run_backward(const BackwardInputs& in, const BackwardOutputs& out,
                           const Options& options) {
  return gpu_mirror::backward(selected_device(), in, out, options);
}
inline Status run_sparse_gradient_rows(const BackwardInputs& in, const Options& options,
                                       int64_t* rows) {
  return gpu_mirror::sparse_gradient_rows(selected_device(), in, options, rows);
}
inline std::string run_forward_variant_name(const ForwardInputs& in, const Options& options) {
  return gpu_mirror::forward_variant_name(selected_device(), in, options);
}

// Puts the automatic ISA choice and the thread count back however a test ends.
class RestoreGlobals {
 public:
  RestoreGlobals() : threads_(num_threads()) {}
  ~RestoreGlobals() {
    selected_device() = DeviceType::kCPU;
    (void)set_isa(std::nullopt);
    set_num_threads(threads_);
    set_cache_resident_bytes(-1);
  }
  RestoreGlobals(const RestoreGlobals&) = delete;
  RestoreGlobals& operator=(const RestoreGlobals&) = delete;

 private:
  int threads_;
};

inline std::string isa_label(std::optional<Isa> isa) { return isa ? isa_name(*isa) : "automatic"; }

// Selects `isa` (a failure here fails the test: these ISAs were listed as usable). A GPU ISA
// selects its device; the CPU choice goes back to automatic.
inline bool select(std::optional<Isa> isa) {
  selected_device() = isa ? isa_device(*isa) : DeviceType::kCPU;
  if (selected_device() != DeviceType::kCPU) {
    std::string why;
    const bool usable = gpu_mirror::available(selected_device(), &why);
    EXPECT_TRUE(usable) << isa_label(isa) << ": " << why;
    return usable && set_isa(std::nullopt).ok();
  }
  const Status s = set_isa(isa);
  EXPECT_TRUE(s.ok()) << "set_isa(" << isa_label(isa) << "): " << s.message();
  return s.ok();
}

inline constexpr int kMaxFailingCases = 5;  // per test: the first few say it all, the rest noise

// Named corner cases both drivers run: no bags, no positions, bags of nothing but padding, a
// one-row table, zero-width rows, and a few rows each read (and folded) hundreds of times.
struct EdgeShape {
  const char* name;
  int64_t num_rows, num_bags, max_bag_size, dim;
  bool all_padding;
};
inline constexpr EdgeShape kEdgeShapes[] = {
    {"B=0", 5, 0, 4, 16, false},
    {"N=0 (all bags empty)", 5, 6, 0, 33, false},
    {"all-padding bags", 5, 4, 6, 33, true},
    {"V=1", 1, 5, 6, 85, false},
    {"D=0", 5, 4, 4, 0, false},
    {"long bags, few rows", 3, 3, 200, 163, false},
};

// The randomized grid of one mode: every weight dtype x index dtype x D x variant, `repeats`
// cases each (each case gets its own seed from its place in the grid). Config is the driver's.
template <typename Config, typename Variant>
std::vector<Config> mode_grid(Mode mode, const std::vector<Variant>& variants, int repeats) {
  std::vector<Config> cases;
  for (DType wd : kWeightDTypes) {
    for (DType id : kIndexDTypes) {
      for (int64_t dim : kDims) {
        for (const Variant& variant : variants) {
          for (int repeat = 0; repeat < repeats; ++repeat) {
            Config c;
            c.mode = mode;
            c.weight_dtype = wd;
            c.index_dtype = id;
            c.dim = dim;
            c.variant = variant;
            cases.push_back(c);
          }
        }
      }
    }
  }
  return cases;
}

// The edge-shape grid: every kEdgeShapes entry x mode x weight dtype x index dtype x
// variants_for(mode).
template <typename Config, typename VariantsFor>
std::vector<Config> edge_grid(const VariantsFor& variants_for) {
  std::vector<Config> cases;
  for (const EdgeShape& e : kEdgeShapes) {
    for (Mode mode : {Mode::kSum, Mode::kMean, Mode::kMax}) {
      for (DType wd : kWeightDTypes) {
        for (DType id : kIndexDTypes) {
          for (const auto& variant : variants_for(mode)) {
            Config c;
            c.shape = e.name;
            c.mode = mode;
            c.weight_dtype = wd;
            c.index_dtype = id;
            c.dim = e.dim;
            c.variant = variant;
            c.num_rows = e.num_rows;
            c.num_bags = e.num_bags;
            c.max_bag_size = e.max_bag_size;
            // Without a padding index "all padding" has no meaning; the case is then plain.
            c.all_padding = e.all_padding && variant.padding != Padding::kNone;
            cases.push_back(c);
          }
        }
      }
    }
  }
  return cases;
}

// Runs `check(config, seed, isa)` (true: the case passed) on every case, on every ISA to test.
// Case i's seed is mix(test_seed ^ mix(i)) whatever the ISA, so every ISA sees the same cases;
// EMBAG_DIFF_SEED=<seed> runs only that case. Stops after kMaxFailingCases failing cases.
template <typename Config, typename Check>
void run_cases(const std::vector<Config>& cases, uint64_t test_seed, const Check& check) {
  RestoreGlobals restore;
  const std::optional<uint64_t> only = only_seed();
  const uint64_t sample = sample_every();
  int failures = 0;
  for (std::optional<Isa> isa : isas_to_test()) {
    SCOPED_TRACE("isa=" + isa_label(isa));
    if (!select(isa)) return;
    for (size_t i = 0; i < cases.size(); ++i) {
      const uint64_t seed = mix(test_seed ^ mix(i));
      if (only && *only != seed) continue;
      if (!only && seed % sample != 0) continue;
      if (!check(cases[i], seed, isa) && ++failures >= kMaxFailingCases) {
        FAIL() << "stopping after " << kMaxFailingCases << " failing cases";
      }
    }
  }
}

}  // namespace difftest
}  // namespace embag

#endif  // EMBAG_TESTS_DIFFERENTIAL_SUPPORT_H_
