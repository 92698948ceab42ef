// Fuzzes validate + forward + backward (and validate_backward, sparse_gradient_rows) with shapes,
// strides, dtypes, options, offsets, indices, argmax entries and values decoded from the fuzzer's
// bytes, over small real buffers fenced by guard bytes.
//
// The invariant, for every entry point: either an error Status and every byte of every array
// unchanged (outputs, the table, the read-only inputs, and the guards around each), or a result
// equal to the reference (tests/reference) bit for bit, with the guards and the gaps between rows
// of row-strided outputs untouched. validate() and forward() (validate_backward() and
// backward()) must agree on whether a call is valid, embag must never accept what the reference
// refuses, and views that cannot exist in memory (extents or strides beyond int32, shapes that
// overflow) must be refused: the harness only builds such views over small buffers, so accepting
// one would read or write out of bounds, which AddressSanitizer reports.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "differential_support.h"
#include "embag/embag.h"
#include "fuzz_input.h"
#include "reference/element_access.h"
#include "reference/reference.h"

namespace {

using embag::DType;
using embag::Status;
using embag::TensorView;
using embag::difftest::GuardedBuffer;
using embag::fuzz::FuzzInput;
namespace ref = embag::ref;

constexpr int64_t kBeyondInt32 = int64_t{1} << 31;

[[noreturn]] void violated(const std::string& what) {
  std::fprintf(stderr, "fuzz_calls: invariant violated: %s\n", what.c_str());
  std::abort();
}

// A 2-D shape the harness decodes: small and honest (backed by memory), or beyond the kernels'
// limits (backed by a small buffer; must be refused).
struct Shape2 {
  int64_t rows = 0, cols = 0, stride = 0;
  bool beyond = false;  // only a refusal is correct
  size_t span() const {
    if (beyond || rows == 0 || cols == 0) return 0;
    return static_cast<size_t>((rows - 1) * stride + cols);
  }
};

// The row stride of a (rows, cols) view: cols plus a small gap, or now and then a stride beyond
// int32, or one smaller than the row (overlapping rows: refused when rows > 1).
Shape2 decode_strided(FuzzInput& in, int64_t rows, int64_t cols) {
  Shape2 s{rows, cols, cols, false};
  switch (in.below(16)) {
    case 0:
      s.stride = kBeyondInt32 + in.below(4);
      s.beyond = true;
      break;
    case 1:
      s.stride = -kBeyondInt32 - in.below(4);
      s.beyond = true;
      break;
    case 2:
      if (rows > 1 && cols > 1) {
        s.stride = cols - 1;  // overlapping rows: refused
        s.beyond = true;
      }
      break;
    case 3:
    case 4:
    case 5:
      s.stride = cols + 1 + in.below(4);
      break;
    default:
      break;
  }
  return s;
}

double decode_value(FuzzInput& in) {
  const uint8_t k = in.take<uint8_t>();
  if (k < 8) {
    const double specials[] = {NAN, -NAN, INFINITY, -INFINITY, 0.0, -0.0, 65504.0, 1e-8};
    return specials[k];
  }
  if (k < 128) return static_cast<double>(static_cast<int>(k % 9) - 4);  // small integers: ties
  return static_cast<double>(in.take<int16_t>()) / 256.0;
}

// A table of `s.span()` elements of `dtype` with decoded values (gap elements get values too).
GuardedBuffer make_values(FuzzInput& in, DType dtype, size_t elements) {
  std::vector<unsigned char> bytes(elements * ref::element_size(dtype));
  for (size_t i = 0; i < elements; ++i) {
    ref::put_value(bytes.data(), dtype, static_cast<int64_t>(i), decode_value(in));
  }
  return GuardedBuffer(bytes);
}

bool same_bytes(const GuardedBuffer& a, const std::vector<unsigned char>& before) {
  return a.guards_intact() && a.contents() == before;
}

// Every element of `got` (a (rows, cols) view with row stride `stride`) equals `want` (contiguous),
// NaNs of any payload counting as equal; the gaps between rows keep the sentinel.
void compare(const char* what, DType dtype, const GuardedBuffer& got, int64_t stride,
             const std::vector<unsigned char>& want, int64_t rows, int64_t cols) {
  const std::string d = embag::difftest::first_difference(what, "row", dtype, got.data(), stride,
                                                          want.data(), cols, rows, cols);
  if (!d.empty()) violated(d);
  const size_t es = ref::element_size(dtype);
  // (a view with no columns spans no memory, so it has no gaps either)
  for (int64_t r = 0; r + 1 < rows && cols > 0; ++r) {
    for (size_t i = static_cast<size_t>(r * stride + cols) * es;
         i < static_cast<size_t>((r + 1) * stride) * es; ++i) {
      if (got.data()[i] != embag::difftest::kSentinel) {
        violated(std::string("a gap byte between rows of ") + what + " was written");
      }
    }
  }
  if (!got.guards_intact()) violated(std::string("a guard byte around ") + what + " was written");
}

// make_view_2d takes a negative row stride to mean "contiguous", so the stride is set after.
TensorView view2(void* data, DType dtype, const Shape2& s) {
  TensorView v = embag::make_view_2d(data, dtype, s.rows, s.cols);
  v.strides[0] = s.stride;
  return v;
}
TensorView view2(GuardedBuffer& b, DType dtype, const Shape2& s) {
  return view2(b.data(), dtype, s);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const DType wd = embag::difftest::kWeightDTypes[in.below(4)];
  const DType id = embag::difftest::kIndexDTypes[in.below(2)];
  const size_t es = ref::element_size(wd);
  embag::Options o;
  const uint8_t mode = in.below(16);
  o.mode = mode < 5    ? embag::Mode::kSum
           : mode < 10 ? embag::Mode::kMean
           : mode < 15 ? embag::Mode::kMax
                       : embag::Mode(7);
  bool must_refuse = mode == 15;

  // The table.
  int64_t V = in.below(13), D = in.below(20);
  Shape2 ws = decode_strided(in, V, D);
  if (in.below(32) == 0) {  // an extent beyond int32 over the same small buffer
    (in.flag() ? ws.rows : ws.cols) = kBeyondInt32 + in.below(3);
    ws.beyond = true;
  }
  must_refuse = must_refuse || ws.beyond;
  GuardedBuffer weight = make_values(in, wd, ws.span());
  const std::vector<unsigned char> weight_before = weight.contents();

  // Indices: mostly rows of the table, sometimes just outside, sometimes anything.
  const bool two_d = in.below(4) == 0;
  const int64_t N = two_d ? 0 : in.below(24);
  const int64_t rows2 = in.below(8), cols2 = in.below(6);
  const int64_t positions = two_d ? rows2 * cols2 : N;
  std::vector<unsigned char> index_bytes(static_cast<size_t>(positions) * ref::element_size(id));
  for (int64_t p = 0; p < positions; ++p) {
    const int64_t value = in.below(16) == 0 ? static_cast<int64_t>(in.take<int32_t>())
                                            : static_cast<int64_t>(in.below(V + 3)) - 1;
    ref::put_index(index_bytes.data(), id, p, value);
  }
  GuardedBuffer input(index_bytes);
  TensorView input_view = two_d ? embag::make_view_2d(input.data(), id, rows2, cols2)
                                : embag::make_view_1d(input.data(), id, N);
  if (two_d && in.below(16) == 0) {  // the (3, 0x5555555555555556): N wraps to 2
    input_view.shape[0] = 3;
    input_view.shape[1] = 0x5555555555555556;
    input_view.strides[0] = 0x5555555555555556;
    must_refuse = true;
  }

  // Offsets: non-decreasing from 0 to at most N, or decoded as they come.
  const bool with_offsets = !two_d ? in.below(16) != 0 : in.below(16) == 0;
  const int64_t num_offsets = in.below(10);
  const bool raw_offsets = in.below(8) == 0;
  std::vector<unsigned char> offset_bytes(static_cast<size_t>(num_offsets) * ref::element_size(id));
  int64_t at = 0;
  for (int64_t i = 0; i < num_offsets; ++i) {
    if (raw_offsets) {
      at = static_cast<int64_t>(in.take<int8_t>());
    } else if (i > 0) {
      at = std::min<int64_t>(N, at + in.below(6));
    }
    ref::put_index(offset_bytes.data(), id, i, at);
  }
  GuardedBuffer offsets(offset_bytes);
  TensorView offsets_view = embag::make_view_1d(offsets.data(), id, num_offsets);

  // per_sample_weights, options.
  const bool with_psw = in.below(4) == 0;
  const DType psw_dtype = in.below(16) == 0 ? DType::kFloat64 : wd;
  GuardedBuffer psw = make_values(in, psw_dtype, static_cast<size_t>(positions));
  TensorView psw_view = two_d ? embag::make_view_2d(psw.data(), psw_dtype, rows2, cols2)
                              : embag::make_view_1d(psw.data(), psw_dtype, N);
  if (in.below(4) == 0) o.padding_idx = static_cast<int64_t>(in.below(2 * V + 3)) - V - 1;
  o.include_last_offset = in.flag();
  if (in.below(4) == 0) {
    const double max_norms[] = {0.5, 1.0, 2.0, 0.0, -1.0, INFINITY};
    const double norm_types[] = {2.0, 1.0, 0.0, INFINITY, -INFINITY};
    o.max_norm = max_norms[in.below(6)];
    o.norm_type = norm_types[in.below(5)];
  }
  o.scale_grad_by_freq = in.below(4) == 0;
  o.sparse = in.below(3) == 0;

  embag::ForwardInputs fin{view2(weight, wd, ws), input_view,
                           with_offsets ? &offsets_view : nullptr, with_psw ? &psw_view : nullptr};

  // Outputs: (B, D) as the call forms it (now and then one row too many), row-strided at times.
  const int64_t B = embag::num_bags(input_view, fin.offsets, o);
  const int64_t out_rows = std::max<int64_t>(0, B + (in.below(16) == 0 ? 1 : 0));
  Shape2 os = decode_strided(in, out_rows, D);
  Shape2 as = decode_strided(in, out_rows, D);
  const bool with_count = in.flag(), with_argmax = o.mode == embag::Mode::kMax && in.below(4) != 0;
  must_refuse = must_refuse || os.beyond || (with_argmax && as.beyond) || out_rows != B ||
                (with_psw && psw_dtype != wd);
  GuardedBuffer out(os.span() * es), argmax(as.span() * 8),
      count(static_cast<size_t>(out_rows) * 8);
  TensorView out_view = view2(out, wd, os), argmax_view = view2(argmax, DType::kInt64, as);
  TensorView count_view = embag::make_view_1d(count.data(), DType::kInt64, out_rows);
  embag::ForwardOutputs fout{out_view, with_count ? &count_view : nullptr,
                             with_argmax ? &argmax_view : nullptr};

  const std::vector<unsigned char> input_before = input.contents(),
                                   offsets_before = offsets.contents(), psw_before = psw.contents();
  auto inputs_unchanged = [&] {
    if (!same_bytes(input, input_before) || !same_bytes(offsets, offsets_before) ||
        !same_bytes(psw, psw_before)) {
      violated("a read-only input (input, offsets, per_sample_weights) was written");
    }
  };

  const Status v = embag::validate(fin, fout, o);
  const Status f = embag::forward(fin, fout, o);
  inputs_unchanged();
  if (v.ok() != f.ok())
    violated("validate says '" + v.message() + "', forward '" + f.message() + "'");
  if (!f.ok()) {
    if (f.message().empty()) violated("a refusal without a message");
    if (!same_bytes(weight, weight_before) ||
        !same_bytes(out, std::vector<unsigned char>(out.size(), embag::difftest::kSentinel)) ||
        !same_bytes(argmax,
                    std::vector<unsigned char>(argmax.size(), embag::difftest::kSentinel)) ||
        !same_bytes(count, std::vector<unsigned char>(count.size(), embag::difftest::kSentinel))) {
      violated("forward refused the call (" + f.message() + ") but wrote something");
    }
    return 0;
  }
  if (must_refuse) violated("forward accepted a view beyond the kernels' limits");

  // The reference on copies, with contiguous outputs.
  std::vector<unsigned char> ref_weight = weight_before;
  std::vector<unsigned char> ref_out(static_cast<size_t>(B * D) * es), ref_argmax(B * D * 8),
      ref_count(B * 8);
  TensorView ref_argmax_view = embag::make_view_2d(ref_argmax.data(), DType::kInt64, B, D);
  TensorView ref_count_view = embag::make_view_1d(ref_count.data(), DType::kInt64, B);
  embag::ForwardInputs rin = fin;
  rin.weight = view2(ref_weight.data(), wd, ws);
  const Status r = ref::forward(rin,
                                {embag::make_view_2d(ref_out.data(), wd, B, D), &ref_count_view,
                                 o.mode == embag::Mode::kMax ? &ref_argmax_view : nullptr},
                                o);
  if (!r.ok()) violated("forward accepted a call the reference refuses: " + r.message());
  // The table as a whole (gap elements of a strided table included: neither may change them).
  const int64_t span = static_cast<int64_t>(ws.span());
  const std::string table_diff = embag::difftest::first_difference(
      "renormed weight", "element", wd, weight.data(), span, ref_weight.data(), span, 1, span);
  if (!table_diff.empty()) violated(table_diff);
  if (!weight.guards_intact()) violated("a guard byte around the table was written");
  compare("output", wd, out, os.stride, ref_out, B, D);
  if (with_argmax) compare("argmax", DType::kInt64, argmax, as.stride, ref_argmax, B, D);
  if (with_count) compare("bag_count", DType::kInt64, count, 1, ref_count, B, 1);

  // ---- Backward, on the table as forward left it.
  Shape2 gs = decode_strided(in, B, D);
  GuardedBuffer grad = make_values(in, wd, gs.span());
  std::vector<int64_t> argmax_in(static_cast<size_t>(B * D), -1);
  if (o.mode == embag::Mode::kMax && !argmax_in.empty()) {
    std::memcpy(argmax_in.data(), ref_argmax.data(), argmax_in.size() * 8);
    if (!argmax_in.empty() && in.below(4) == 0) {  // an argmax forward did not produce
      argmax_in[in.below(static_cast<uint32_t>(argmax_in.size()))] =
          static_cast<int64_t>(in.below(V + 3)) - 2;
    }
  }
  TensorView bargmax = embag::make_view_2d(argmax_in.data(), DType::kInt64, B, D);
  embag::BackwardInputs bin;
  bin.weight = fin.weight;
  bin.input = fin.input;
  bin.offsets = fin.offsets;
  bin.per_sample_weights = fin.per_sample_weights;
  bin.grad_output = view2(grad, wd, gs);
  bin.argmax = o.mode == embag::Mode::kMax || in.below(16) == 0 ? &bargmax : nullptr;
  bool b_must_refuse = gs.beyond;
  const std::vector<unsigned char> weight_after = weight.contents(), grad_before = grad.contents();

  int64_t U = -1;
  const Status u = embag::sparse_gradient_rows(bin, o, &U);
  int64_t ref_u = -1;
  const Status ru = ref::sparse_gradient_rows(bin, o, &ref_u);
  // (sparse_gradient_rows reads only the forward's arguments; the reference's also checks
  // grad_output and argmax, so only two answers are compared)
  if (u.ok() && ru.ok() && U != ref_u) {
    violated("sparse_gradient_rows gave " + std::to_string(U) + ", the reference " +
             std::to_string(ref_u) + " (" + ru.message() + ")");
  }
  const int64_t out_u = std::max<int64_t>(0, U + (in.below(16) == 0 ? 1 : 0));
  Shape2 dense_s = decode_strided(in, V, D);
  Shape2 values_s = decode_strided(in, out_u, D);
  GuardedBuffer dense(dense_s.span() * es), rows(static_cast<size_t>(out_u) * 8),
      values(values_s.span() * es), gpsw(static_cast<size_t>(positions) * es);
  TensorView dense_view = view2(dense, wd, dense_s), values_view = view2(values, wd, values_s);
  TensorView rows_view = embag::make_view_1d(rows.data(), DType::kInt64, out_u);
  TensorView gpsw_view = two_d ? embag::make_view_2d(gpsw.data(), wd, rows2, cols2)
                               : embag::make_view_1d(gpsw.data(), wd, N);
  embag::BackwardOutputs bout;
  const bool sparse_outputs = in.below(8) == 0 ? !o.sparse : o.sparse;
  if (sparse_outputs) {
    bout.grad_weight_rows = &rows_view;
    bout.grad_weight_values = &values_view;
    b_must_refuse = b_must_refuse || values_s.beyond || out_u != U;
  } else {
    bout.grad_weight = &dense_view;
    b_must_refuse = b_must_refuse || dense_s.beyond;
  }
  if (with_psw && in.below(4) != 0) bout.grad_per_sample_weights = &gpsw_view;

  const Status vb = embag::validate_backward(bin, bout, o);
  const Status b = embag::backward(bin, bout, o);
  inputs_unchanged();
  if (!same_bytes(weight, weight_after) || !same_bytes(grad, grad_before)) {
    violated("backward wrote its table or grad_output");
  }
  if (vb.ok() != b.ok()) {
    violated("validate_backward says '" + vb.message() + "', backward '" + b.message() + "'");
  }
  const auto untouched = [](const GuardedBuffer& g) {
    return same_bytes(g, std::vector<unsigned char>(g.size(), embag::difftest::kSentinel));
  };
  if (!b.ok()) {
    if (!untouched(dense) || !untouched(rows) || !untouched(values) || !untouched(gpsw)) {
      violated("backward refused the call (" + b.message() + ") but wrote a gradient");
    }
    return 0;
  }
  if (b_must_refuse) violated("backward accepted a view beyond the kernels' limits");

  // The reference: dense (and sparse) gradients, contiguous.
  std::vector<unsigned char> ref_dense(static_cast<size_t>(V * D) * es),
      ref_gpsw(static_cast<size_t>(positions) * es);
  TensorView ref_dense_view = embag::make_view_2d(ref_dense.data(), wd, V, D);
  TensorView ref_gpsw_view = two_d ? embag::make_view_2d(ref_gpsw.data(), wd, rows2, cols2)
                                   : embag::make_view_1d(ref_gpsw.data(), wd, N);
  embag::BackwardOutputs rout;
  embag::Options dense_o = o;
  dense_o.sparse = false;
  rout.grad_weight = &ref_dense_view;
  rout.grad_per_sample_weights = bout.grad_per_sample_weights ? &ref_gpsw_view : nullptr;
  const Status rb = ref::backward(bin, rout, dense_o);
  if (!rb.ok()) violated("backward accepted a call the reference refuses: " + rb.message());
  if (sparse_outputs) {
    std::vector<int64_t> got_rows(static_cast<size_t>(U));
    if (U > 0) std::memcpy(got_rows.data(), rows.data(), got_rows.size() * 8);
    std::vector<unsigned char> want(static_cast<size_t>(U * D) * es);
    for (int64_t k = 0; k < U; ++k) {
      const int64_t row = got_rows[static_cast<size_t>(k)];
      if (row < 0 || row >= V || (k > 0 && row <= got_rows[static_cast<size_t>(k - 1)])) {
        violated("sparse rows are not strictly ascending rows of the table");
      }
      std::copy_n(ref_dense.begin() + static_cast<size_t>(row * D) * es,
                  static_cast<size_t>(D) * es, want.begin() + static_cast<size_t>(k * D) * es);
    }
    compare("grad_weight_values", wd, values, values_s.stride, want, U, D);
    if (!rows.guards_intact()) violated("a guard byte around grad_weight_rows was written");
  } else {
    compare("grad_weight", wd, dense, dense_s.stride, ref_dense, V, D);
  }
  if (bout.grad_per_sample_weights) {
    compare("grad_per_sample_weights", wd, gpsw, 1, ref_gpsw, positions, 1);
  }
  return 0;
}
