// Tables over 2^31 elements, cheaply: MAP_NORESERVE anonymous mappings of 16 GiB and more where
// only the rows the indices touch are ever written (the rest stay unmapped zero pages). Forward
// (with and without max_norm), sparse backward and dense backward into a row-strided gradient that
// is itself a NORESERVE mapping, on every ISA compiled in and supported here, compared bitwise
// with the reference run on a compact copy of the touched rows.
//
// Two shapes: "tall", 2^31 - 1 rows of D = 2 (rows at both ends of the int32 range), and
// "strided", 4096 rows of D = 5 with a row stride of 2^20 + 3 elements (the span, 4.3e9
// elements, is over 2^32; every row starts 4 MiB from the last). Dense backward writes every row
// of its gradient, so it runs on the strided shape only (4096 rows, 16 MiB touched).
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "differential_support.h"
#include "embag/embag.h"
#include "reference/element_access.h"
#include "reference/reference.h"

namespace embag {
namespace {

using difftest::first_difference;
using difftest::isa_label;
using difftest::isas_to_test;
using difftest::RestoreGlobals;

// A private anonymous NORESERVE mapping: no memory is committed until a page is written.
class Mapping {
 public:
  explicit Mapping(size_t bytes) : bytes_(bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      error_ = std::string("mmap of ") + std::to_string(bytes) +
               " bytes (MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE) failed: " + strerror(errno);
    } else {
      data_ = static_cast<unsigned char*>(p);
    }
  }
  ~Mapping() {
    if (data_) munmap(data_, bytes_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  unsigned char* data() const { return data_; }
  const std::string& error() const { return error_; }

 private:
  size_t bytes_;
  unsigned char* data_ = nullptr;
  std::string error_;
};

struct Shape {
  const char* name;
  int64_t rows, dim, row_stride;
  bool dense;  // dense backward too (writes every row of the gradient)
};
constexpr Shape kShapes[] = {
    {"tall", INT32_MAX, 2, 2, false},
    {"strided", 4096, 5, (int64_t{1} << 20) + 3, true},
};

constexpr DType kF32 = DType::kFloat32;

// A batch over the table: rows at both ends and in the middle, with duplicates, in 6 bags.
struct Batch {
  std::vector<int64_t> input, offsets;
  std::vector<int64_t> touched;               // distinct rows, ascending
  std::map<int64_t, std::vector<float>> row;  // their original values
  std::vector<float> grad_output;             // (B, D)
};

Batch make_batch(const Shape& s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t V = s.rows;
  std::vector<int64_t> pool = {0, 1, V / 2, V - 2, V - 1};
  for (int i = 0; i < 11; ++i)
    pool.push_back(std::uniform_int_distribution<int64_t>(0, V - 1)(rng));
  Batch b;
  for (int bag = 0; bag < 6; ++bag) {
    b.offsets.push_back(static_cast<int64_t>(b.input.size()));
    const int size = bag == 2 ? 0 : 1 + static_cast<int>(rng() % 9);  // bag 2 is empty
    for (int j = 0; j < size; ++j) b.input.push_back(pool[rng() % pool.size()]);
  }
  b.touched = b.input;
  std::sort(b.touched.begin(), b.touched.end());
  b.touched.erase(std::unique(b.touched.begin(), b.touched.end()), b.touched.end());
  std::uniform_real_distribution<float> value(-2.0f, 2.0f);
  for (int64_t r : b.touched) {
    std::vector<float>& v = b.row[r];
    for (int64_t d = 0; d < s.dim; ++d) v.push_back(value(rng));
  }
  for (int64_t i = 0; i < 6 * s.dim; ++i) b.grad_output.push_back(value(rng));
  return b;
}

// The same call on a compact table of the touched rows (row k = touched[k], indices remapped
// monotonically, so sparse row order and every per-row fold are the same).
struct Compact {
  std::vector<float> table;
  std::vector<int64_t> input;
};
Compact compact(const Shape& s, const Batch& b) {
  Compact c;
  for (int64_t r : b.touched) {
    const std::vector<float>& v = b.row.at(r);
    c.table.insert(c.table.end(), v.begin(), v.end());
  }
  for (int64_t r : b.input) {
    c.input.push_back(std::lower_bound(b.touched.begin(), b.touched.end(), r) - b.touched.begin());
  }
  (void)s;
  return c;
}

float* row_ptr(unsigned char* base, const Shape& s, int64_t r) {
  return reinterpret_cast<float*>(base) + r * s.row_stride;
}

std::string mode_label(Mode m) { return mode_name(m); }

TEST(LargeTable, ForwardAndBackwardOnTablesOver2To31ElementsOnEveryIsa) {
  if (sizeof(void*) < 8) {
    GTEST_SKIP() << "a table over 2^31 elements needs a 64-bit address space; 32-bit builds "
                    "refuse one (Limits.ThirtyTwoBitBuildsRefuseSpansOver2To31Elements)";
  }
  RestoreGlobals restore;
  int shape_number = 0;
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(s.name);
    const size_t span = static_cast<size_t>((s.rows - 1) * s.row_stride + s.dim);
    ASSERT_GT(span, size_t{1} << 31);
    Mapping weight(span * sizeof(float));
    if (!weight.data()) GTEST_SKIP() << weight.error();
    Mapping grad(s.dense ? span * sizeof(float) : 4096);
    if (!grad.data()) GTEST_SKIP() << grad.error();
    const Batch b = make_batch(s, 0x1A26'0000 + static_cast<uint64_t>(shape_number++));
    const Compact c = compact(s, b);
    const int64_t B = 6, D = s.dim, K = static_cast<int64_t>(b.touched.size());
    auto restore_rows = [&] {
      for (int64_t r : b.touched) {
        std::memcpy(row_ptr(weight.data(), s, r), b.row.at(r).data(), D * sizeof(float));
      }
    };
    std::vector<int64_t> input = b.input, offsets = b.offsets;
    TensorView offsets_view = make_view_1d(offsets.data(), DType::kInt64, B);
    const TensorView weight_view = make_view_2d(weight.data(), kF32, s.rows, D, s.row_stride);
    const TensorView input_view =
        make_view_1d(input.data(), DType::kInt64, static_cast<int64_t>(input.size()));

    for (std::optional<Isa> isa : isas_to_test()) {
      SCOPED_TRACE("isa=" + isa_label(isa));
      if (!difftest::select(isa)) return;
      for (Mode mode : {Mode::kSum, Mode::kMean, Mode::kMax}) {
        for (bool renorm : {false, true}) {
          SCOPED_TRACE(mode_label(mode) + (renorm ? " max_norm=1" : ""));
          restore_rows();
          Options o;
          o.mode = mode;
          if (renorm) o.max_norm = 1.0;
          // embag on the huge table.
          std::vector<float> out(static_cast<size_t>(B * D), -7.0f);
          std::vector<int64_t> argmax(static_cast<size_t>(B * D), -7);
          TensorView argmax_view = make_view_2d(argmax.data(), DType::kInt64, B, D);
          ForwardInputs in{weight_view, input_view, &offsets_view, nullptr};
          Status st = forward(in,
                              {make_view_2d(out.data(), kF32, B, D), nullptr,
                               mode == Mode::kMax ? &argmax_view : nullptr},
                              o);
          ASSERT_TRUE(st.ok()) << st.message();
          // The reference on the compact table.
          std::vector<float> ref_table = c.table, ref_out(out.size());
          std::vector<int64_t> ref_input = c.input, ref_argmax(argmax.size());
          TensorView ref_argmax_view = make_view_2d(ref_argmax.data(), DType::kInt64, B, D);
          ForwardInputs rin{
              make_view_2d(ref_table.data(), kF32, K, D),
              make_view_1d(ref_input.data(), DType::kInt64, static_cast<int64_t>(ref_input.size())),
              &offsets_view, nullptr};
          ASSERT_TRUE(ref::forward(rin,
                                   {make_view_2d(ref_out.data(), kF32, B, D), nullptr,
                                    mode == Mode::kMax ? &ref_argmax_view : nullptr},
                                   o)
                          .ok());
          EXPECT_EQ(
              first_difference("output", "bag", kF32, reinterpret_cast<unsigned char*>(out.data()),
                               D, reinterpret_cast<unsigned char*>(ref_out.data()), D, B, D),
              "");
          for (int64_t k = 0; k < K; ++k) {  // the touched rows as renorm left them
            EXPECT_EQ(std::memcmp(row_ptr(weight.data(), s, b.touched[k]), &ref_table[k * D],
                                  D * sizeof(float)),
                      0)
                << "row " << b.touched[k] << " after forward";
          }
          if (mode == Mode::kMax) {
            for (size_t i = 0; i < argmax.size(); ++i) {
              const int64_t want = ref_argmax[i] < 0 ? -1 : b.touched[ref_argmax[i]];
              ASSERT_EQ(argmax[i], want) << "argmax element " << i;
            }
          }
          if (renorm) continue;  // backward once per mode, on the original table

          // Backward: the reference's dense gradient of the compact table, then embag's.
          std::vector<float> g = b.grad_output;
          BackwardInputs bin;
          bin.input = input_view;
          bin.offsets = &offsets_view;
          bin.grad_output = make_view_2d(g.data(), kF32, B, D);
          bin.argmax = mode == Mode::kMax ? &argmax_view : nullptr;
          BackwardInputs rbin = bin;
          rbin.weight = rin.weight;
          rbin.input = rin.input;
          std::vector<int64_t> compact_argmax = ref_argmax;
          TensorView compact_argmax_view = make_view_2d(compact_argmax.data(), DType::kInt64, B, D);
          rbin.argmax = mode == Mode::kMax ? &compact_argmax_view : nullptr;
          std::vector<float> ref_dense(static_cast<size_t>(K * D));
          TensorView ref_dense_view = make_view_2d(ref_dense.data(), kF32, K, D);
          BackwardOutputs rout;
          rout.grad_weight = &ref_dense_view;
          ASSERT_TRUE(ref::backward(rbin, rout, o).ok());
          bin.weight = weight_view;

          if (mode != Mode::kMax) {  // sparse
            Options so = o;
            so.sparse = true;
            int64_t U = -1;
            ASSERT_TRUE(sparse_gradient_rows(bin, so, &U).ok());
            ASSERT_EQ(U, K);
            std::vector<int64_t> rows(static_cast<size_t>(U), -7);
            std::vector<float> values(static_cast<size_t>(U * D), -7.0f);
            TensorView rows_view = make_view_1d(rows.data(), DType::kInt64, U);
            TensorView values_view = make_view_2d(values.data(), kF32, U, D);
            BackwardOutputs sout;
            sout.grad_weight_rows = &rows_view;
            sout.grad_weight_values = &values_view;
            st = backward(bin, sout, so);
            ASSERT_TRUE(st.ok()) << st.message();
            EXPECT_EQ(rows, b.touched);
            EXPECT_EQ(first_difference("sparse values", "row", kF32,
                                       reinterpret_cast<unsigned char*>(values.data()), D,
                                       reinterpret_cast<unsigned char*>(ref_dense.data()), D, K, D),
                      "");
          }
          if (s.dense) {
            // Gap columns between the gradient's rows are the caller's: sentinel, untouched.
            for (int64_t r = 0; r < s.rows; ++r) {
              float* gap = row_ptr(grad.data(), s, r) + D;
              for (int k = 0; k < 3; ++k) gap[k] = 12345.0f;
            }
            TensorView grad_view = make_view_2d(grad.data(), kF32, s.rows, D, s.row_stride);
            BackwardOutputs dout;
            dout.grad_weight = &grad_view;
            st = backward(bin, dout, o);
            ASSERT_TRUE(st.ok()) << st.message();
            int64_t k = 0;
            for (int64_t r = 0; r < s.rows; ++r) {
              const float* got = row_ptr(grad.data(), s, r);
              const bool is_touched = k < K && b.touched[k] == r;
              for (int64_t d = 0; d < D; ++d) {
                const float want = is_touched ? ref_dense[k * D + d] : 0.0f;
                ASSERT_EQ(std::memcmp(&got[d], &want, sizeof(float)), 0)
                    << "dense row " << r << " column " << d << ": " << got[d] << " vs " << want;
              }
              for (int g2 = 0; g2 < 3; ++g2) {
                ASSERT_EQ(got[D + g2], 12345.0f) << "gap after dense row " << r << " was written";
              }
              if (is_touched) ++k;
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace embag
