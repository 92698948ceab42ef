// Validation of forward calls: every rule of SEMANTICS.md, checked before anything is written.
//
// Messages use PyTorch's words where PyTorch has a rule, and always say which value broke which
// rule, where it sits, and what was expected. The checks run in PyTorch's order so the first
// message a caller sees is the one PyTorch would give.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <sstream>
#include <vector>

#include "cpu_features.h"
#include "enum_tables.h"
#include "forward_plan.h"
#include "quantized_format.h"

namespace embag::internal {
namespace {

constexpr int64_t kMaxExtent = std::numeric_limits<int32_t>::max();

Status invalid(const std::string& message) { return Status(StatusCode::kInvalidArgument, message); }

// PyTorch's legacy CPU tensor type names, which its type-mismatch messages use.
const char* legacy_type_name(DType dtype) {
  const DTypeInfo* row = find_row(kDTypeTable, &DTypeInfo::dtype, dtype);
  return row ? row->torch_legacy_name : "torch.Tensor";
}

std::string device_string(const Device& device) {
  return device.type == DeviceType::kCPU
             ? "cpu"
             : std::string(device_type_name(device.type)) + ":" + std::to_string(device.index);
}

bool same_device(const Device& a, const Device& b) {
  return a.type == b.type && (a.type == DeviceType::kCPU || a.index == b.index);
}

// All tensors of one call live on the weight's device.
Status check_device(const Device& expected, const TensorView* v, const char* name) {
  if (v == nullptr || same_device(v->device, expected)) return Status::Ok();
  return invalid(std::string("all tensors of a call must be on one device, but weight is on ") +
                 device_string(expected) + " and " + name + " is on " + device_string(v->device));
}

bool is_float_dtype(DType t) {
  return t == DType::kFloat32 || t == DType::kFloat64 || t == DType::kFloat16 ||
         t == DType::kBFloat16;
}
bool is_index_dtype(DType t) { return t == DType::kInt32 || t == DType::kInt64; }

std::string strides_string(const TensorView& v) {
  std::ostringstream out;
  out << '[';
  for (int i = 0; i < v.ndim && i < 2; ++i) out << (i ? ", " : "") << v.strides[i];
  out << ']';
  return out.str();
}

// Memory checks shared by every view: on the CPU, sizes that the kernels can address, data present
// when non-empty, rows contiguous, and (for 1-D arrays and the input) fully contiguous.
//
// Kernels take int32 extents and strides (halide_dimension_t) and address elements in 64 bits,
// so every extent and the row stride must fit int32, and the memory a view spans must fit int64
// bytes (on a 32-bit build: 2^31 - 1 elements, the most Halide addresses there). All of it is
// checked here, before anything is narrowed or written.
Status check_memory(const TensorView& v, const char* name, bool require_contiguous) {
  if (!device_has_kernels(v.device.type)) {
    return Status(StatusCode::kUnsupported, std::string(name) + " is on " +
                                                device_string(v.device) +
                                                ", but this build of embag has no " +
                                                device_type_name(v.device.type) + " kernels");
  }
  const int dims = v.ndim < 2 ? v.ndim : 2;
  for (int i = 0; i < dims; ++i) {
    if (v.shape[i] < 0) {
      return invalid(std::string(name) + " has a negative size " + v.shape_string());
    }
    if (v.shape[i] > kMaxExtent) {
      return invalid(std::string(name) + " has size " + std::to_string(v.shape[i]) +
                     " in dimension " + std::to_string(i) + " (shape " + v.shape_string() +
                     "), but embag's kernels take extents of at most " +
                     std::to_string(kMaxExtent));
    }
  }
  // Only 2-D views hand a stride to a kernel (1-D views must be contiguous), but a 2-D view's row
  // stride is narrowed even when it has one row, so it is checked whatever the shape.
  if (dims == 2 && (v.strides[0] > kMaxExtent || v.strides[0] < -kMaxExtent)) {
    return invalid(std::string(name) + " has row stride " + std::to_string(v.strides[0]) +
                   ", but embag's kernels take strides of at most " + std::to_string(kMaxExtent) +
                   " elements");
  }
  const int64_t n = v.numel();
  if (n < 0) {  // both extents fit int32 here, so this is a defensive check only
    return invalid(std::string(name) + " has shape " + v.shape_string() +
                   ", whose element count overflows int64");
  }
  if (n > 0 && v.data == nullptr) {
    return invalid(std::string(name) + " has a null data pointer but " + std::to_string(n) +
                   " elements");
  }
  if (n > 0) {
    const bool inner_ok = v.ndim == 0 || v.strides[v.ndim - 1] == 1 || v.shape[v.ndim - 1] <= 1;
    if (!inner_ok) {
      return invalid(std::string(name) + " must have unit stride in its last dimension, but its " +
                     "strides are " + strides_string(v));
    }
    if (require_contiguous && !v.is_contiguous()) {
      return invalid(std::string(name) + " must be contiguous, but has shape " + v.shape_string() +
                     " and strides " + strides_string(v));
    }
    if (v.ndim == 2 && v.shape[0] > 1 && v.strides[0] < 0) {
      return invalid(std::string(name) + " has a negative row stride " +
                     std::to_string(v.strides[0]) +
                     " (its rows run backwards in memory, as a reversed view's do); embag reads "
                     "rows in ascending memory order: pass a copy");
    }
    if (v.ndim == 2 && v.shape[0] > 1 && v.strides[0] < v.shape[1]) {
      return invalid(std::string(name) + "'s row stride " + std::to_string(v.strides[0]) +
                     " is smaller than its row length " + std::to_string(v.shape[1]) +
                     " (rows would overlap)");
    }
    // Elements from the first to one past the last: (rows - 1) * row_stride + cols. With the
    // extents and the stride within int32 this fits int64; the bytes may not.
    const int64_t span = v.ndim == 2 ? (v.shape[0] - 1) * v.strides[0] + v.shape[1] : n;
    int64_t bytes = 0;
    if (__builtin_mul_overflow(span, static_cast<int64_t>(dtype_size(v.dtype)), &bytes)) {
      return invalid(std::string(name) + " spans " + std::to_string(span) + " elements of " +
                     dtype_name(v.dtype) + ", more bytes than a 64-bit size can count");
    }
    if (sizeof(void*) == 4 && span > kMaxExtent) {
      return invalid(std::string(name) + " spans " + std::to_string(span) +
                     " elements, but a 32-bit build supports at most " +
                     std::to_string(kMaxExtent));
    }
  }
  return Status::Ok();
}

Status check_extent(int64_t value, const char* what) {
  if (value > kMaxExtent) {
    return invalid(std::string(what) + " is " + std::to_string(value) +
                   ", but embag supports at most " + std::to_string(kMaxExtent));
  }
  return Status::Ok();
}

Status check_output(const TensorView* view, const char* name, DType dtype, const char* dtype_rule,
                    int ndim, int64_t rows, int64_t cols) {
  if (view == nullptr) return Status::Ok();
  const TensorView& v = *view;
  const std::string expected = ndim == 1
                                   ? "[" + std::to_string(rows) + "]"
                                   : "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
  if (v.ndim != ndim || v.shape[0] != rows || (ndim == 2 && v.shape[1] != cols)) {
    return invalid(std::string(name) + " must have shape " + expected + " but has shape " +
                   v.shape_string());
  }
  if (v.dtype != dtype) {
    return invalid(std::string(name) + " must have dtype " + dtype_name(dtype) + " (" + dtype_rule +
                   ") but has dtype " + dtype_name(v.dtype));
  }
  return check_memory(v, name, ndim == 1);
}

// A set of at most kMaxRows table rows (>= 0): open addressing over kSlots slots, -1 empty.
class SmallRowSet {
 public:
  static constexpr size_t kMaxRows = 64;
  void assign(const std::vector<int64_t>& rows) {
    std::fill(std::begin(slots_), std::end(slots_), int64_t{-1});
    for (const int64_t r : rows) {
      size_t at = slot_of(r);
      while (slots_[at] != -1 && slots_[at] != r) at = (at + 1) & (kSlots - 1);
      slots_[at] = r;
    }
  }
  bool contains(int64_t value) const {
    if (value < 0) return false;
    for (size_t at = slot_of(value);; at = (at + 1) & (kSlots - 1)) {
      if (slots_[at] == value) return true;
      if (slots_[at] == -1) return false;  // at most half full: an empty slot always comes
    }
  }

 private:
  static constexpr size_t kSlots = 2 * kMaxRows;
  static size_t slot_of(int64_t r) {
    // Fibonacci hashing: the top bits of r times 2^64 / phi.
    return static_cast<size_t>((static_cast<uint64_t>(r) * 0x9E3779B97F4A7C15ull) >> 57);
  }
  int64_t slots_[kSlots];
};
static_assert(size_t{1} << (64 - 57) == 2 * SmallRowSet::kMaxRows, "slot_of covers the slots");

// Max backward routes g[b][d] to the row argmax[b][d] names, so each entry must be a row that
// bag b holds at a valid (non-padding) position, or -1 for a bag with no valid position: an
// argmax from another call, or one the caller edited, would otherwise put gradient on a row the
// bag never read. Each bag's valid rows are put in a set once and every entry is looked up in
// it: O(N + B D) for bags of up to 64 valid rows, O(N log L + B D log L) beyond.
// With `copy` (B x D, contiguous), each bag's entries of `argmax` are copied there first and the
// copy is checked (see IndexSnapshot).
Status check_argmax_rows(const BackwardInputs& in, const ForwardPlan& plan,
                         const TensorView* argmax, int64_t* copy) {
  const int64_t B = plan.num_bags, D = plan.dim, V = plan.num_rows;
  const TensorView& input = in.input;
  std::vector<int64_t> rows;
  SmallRowSet small_set;
  for (int64_t b = 0; b < B; ++b) {
    int64_t begin = 0, end = 0;
    if (input.ndim == 2) {
      begin = b * input.shape[1];
      end = begin + input.shape[1];
    } else {
      begin = load_index(*in.offsets, b);
      // With include_last_offset B = len(offsets) - 1, so offsets[b + 1] always exists there.
      end = b + 1 < in.offsets->shape[0] ? load_index(*in.offsets, b + 1) : plan.num_indices;
    }
    rows.clear();
    for (int64_t p = begin; p < end; ++p) {
      const int64_t r = load_index(input, p);
      if (r != plan.padding_idx) rows.push_back(r);
    }
    // Membership of each of the B x D entries: bags of up to kSmallBag valid rows (the common
    // case) go into a small open-addressing set, one or two probes a lookup; larger bags are
    // sorted and searched. (A binary search per entry, which mispredicts about every other
    // step, and a scan of the bag each cost several times the max backward kernel.)
    const bool small = rows.size() <= SmallRowSet::kMaxRows;
    if (small) {
      small_set.assign(rows);
    } else {
      std::sort(rows.begin(), rows.end());
    }
    auto bag_holds = [&](int64_t value) {
      return small ? small_set.contains(value)
                   : std::binary_search(rows.begin(), rows.end(), value);
    };
    const int64_t* entries = static_cast<const int64_t*>(argmax->data) + b * argmax->strides[0];
    if (copy != nullptr && D > 0) {
      std::memcpy(copy + b * D, entries, static_cast<size_t>(D) * sizeof(int64_t));
      entries = copy + b * D;
    }
    for (int64_t d = 0; d < D; ++d) {
      const int64_t value = entries[d];
      // (the text only on failure: built for each of the B x D entries it was most of max
      // backward's time)
      auto where = [&] {
        return "argmax[" + std::to_string(b) + "][" + std::to_string(d) + "] is " +
               std::to_string(value);
      };
      if (value < -1 || value >= V) {
        return invalid(where() + ", which is neither -1 nor a row in [0, " + std::to_string(V) +
                       ")");
      }
      if (value == -1) {
        if (rows.empty()) continue;
        return invalid(where() + ", but bag " + std::to_string(b) + " holds " +
                       std::to_string(rows.size()) +
                       " valid positions (-1 is only for a bag with no valid position)");
      }
      if (!bag_holds(value)) {
        return invalid(where() + ", a row that bag " + std::to_string(b) +
                       " does not hold at a valid position (argmax must name a row of its bag)");
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Status check_view_memory(const TensorView& view, const char* name, bool require_contiguous) {
  return check_memory(view, name, require_contiguous);
}

Status offsets_value_error(int64_t first, int64_t last, int64_t num_indices, int64_t decreasing_at,
                           int64_t before, int64_t after) {
  if (first != 0) {
    return invalid(
        "offsets[0] has to be 0, i.e., the first sequence in the mini-batch has to start "
        "from position 0. However, got " +
        std::to_string(first));
  }
  if (last > num_indices) {
    return invalid("offsets[-1] can not be greater than input's length " +
                   std::to_string(num_indices) + " but got offsets[-1] of " + std::to_string(last));
  }
  if (decreasing_at >= 0) {
    return invalid("offsets must be non-decreasing, but offsets[" + std::to_string(decreasing_at) +
                   "] = " + std::to_string(before) + " > offsets[" +
                   std::to_string(decreasing_at + 1) + "] = " + std::to_string(after));
  }
  return Status::Ok();
}

Status index_value_error(int64_t position, int64_t value, int64_t num_rows, const Options& opt) {
  // PyTorch 2.14 words it two ways, by which of its loops finds the index: the padding-aware
  // and max loops say "Expected idx ...", the plain sum/mean gather "Index i of input ...". Code
  // that matches PyTorch's message (its own tests do) finds the same one here. The position is
  // counted in the flattened input, as PyTorch counts it.
  if (opt.padding_idx.has_value() || opt.mode == Mode::kMax) {
    return invalid("embedding_bag: Expected idx >= 0 && idx < num_embeddings but found idx to be " +
                   std::to_string(value));
  }
  return invalid("Index " + std::to_string(position) + " of input takes value " +
                 std::to_string(value) + " which is not in the valid range [0, " +
                 std::to_string(num_rows) + ")");
}

namespace {

// The first of positions [0, n) whose index is outside [0, rows), or -1. Blocks are checked
// with a branch-free reduction (an unsigned compare catches negative indices too), which the
// compiler vectorises; only a block that holds a bad index is scanned again for its position.
// (An early exit per index kept the loop scalar: a tenth of a cold forward call on 2 threads.)
// With `copy`, each index is copied there as it is checked: the value loaded once into a
// register is both stored and compared, so the verdict holds for the copy whatever another
// thread writes to `source` meanwhile; the rescan for the position reads the copy.
// (__restrict__: the copy is embag's own buffer, never the caller's.) The OR of 0/1 words is the
// form GCC vectorises; baseline x86-64 has no 64-bit compare (SSE4.2's pcmpgtq), so on x86 an
// AVX2 instance is picked where the CPU has it: the copy then costs about nothing next to the
// check (callgrind, 10k x 64 warm forward: +3.2 instructions an index scalar).
template <typename Index>
inline __attribute__((always_inline)) bool block_out_of_range(const Index* __restrict__ source,
                                                              Index* __restrict__ copy,
                                                              int64_t length, uint64_t limit) {
  uint64_t bad = 0;
  if (copy != nullptr) {
    for (int64_t p = 0; p < length; ++p) {
      const Index value = source[p];
      copy[p] = value;
      bad |= static_cast<uint64_t>(static_cast<int64_t>(value)) >= limit ? 1u : 0u;
    }
  } else {
    for (int64_t p = 0; p < length; ++p) {
      bad |= static_cast<uint64_t>(static_cast<int64_t>(source[p])) >= limit ? 1u : 0u;
    }
  }
  return bad != 0;
}

template <typename Index>
int64_t scan_blocks(const Index* __restrict__ source, Index* __restrict__ copy, int64_t n,
                    int64_t rows, bool (*block)(const Index*, Index*, int64_t, uint64_t)) {
  constexpr int64_t kBlock = 1024;
  const uint64_t limit = static_cast<uint64_t>(rows);
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t length = std::min(n - begin, kBlock);
    if (!block(source + begin, copy != nullptr ? copy + begin : nullptr, length, limit)) continue;
    const Index* indices = copy != nullptr ? copy : source;
    for (int64_t p = begin; p < begin + length; ++p) {
      if (static_cast<uint64_t>(static_cast<int64_t>(indices[p])) >= limit) return p;
    }
  }
  return -1;
}

template <typename Index>
bool block_generic(const Index* source, Index* copy, int64_t length, uint64_t limit) {
  return block_out_of_range(source, copy, length, limit);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
template <typename Index>
__attribute__((target("avx2"))) bool block_avx2(const Index* source, Index* copy, int64_t length,
                                                uint64_t limit) {
  return block_out_of_range(source, copy, length, limit);
}
#endif

template <typename Index>
int64_t first_out_of_range(const Index* source, Index* copy, int64_t n, int64_t rows) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool avx2 = cpu_supports(Isa::kAvx2);
  if (avx2) return scan_blocks<Index>(source, copy, n, rows, &block_avx2<Index>);
#endif
  return scan_blocks<Index>(source, copy, n, rows, &block_generic<Index>);
}

int64_t first_index_out_of_range(const TensorView& input, void* copy, int64_t n, int64_t rows) {
  return input.dtype == DType::kInt32 ? first_out_of_range(static_cast<const int32_t*>(input.data),
                                                           static_cast<int32_t*>(copy), n, rows)
                                      : first_out_of_range(static_cast<const int64_t*>(input.data),
                                                           static_cast<int64_t*>(copy), n, rows);
}

// The calling thread's snapshot buffers (see IndexSnapshot), grown as needed and kept: 8-byte
// words, so either index dtype fits aligned.
enum SnapshotBuffer { kOffsetsCopy, kIndicesCopy, kArgmaxCopy, kSnapshotBuffers };
void* snapshot_buffer(SnapshotBuffer which, int64_t bytes) {
  thread_local std::vector<int64_t> buffers[kSnapshotBuffers];
  std::vector<int64_t>& buffer = buffers[which];
  // (at least one word: an empty copy still has an address, as the caller's array had)
  const size_t words = std::max<size_t>(1, static_cast<size_t>((bytes + 7) / 8));
  if (buffer.size() < words) buffer.resize(words);
  return buffer.data();
}

// The bytes [begin, end) a view spans (first to one past the last element); empty when it has
// no elements. Validated views only: non-negative extents, rows contiguous, row stride >= cols.
struct Span {
  uintptr_t begin = 0, end = 0;
  int64_t rows = 1;  // rows of `row_bytes`, `stride_bytes` apart
  int64_t row_bytes = 0;
  int64_t stride_bytes = 0;
};
Span span_of(const TensorView& v) {
  Span s;
  const int64_t n = v.numel();
  if (n <= 0 || v.data == nullptr) return s;
  const int64_t element = static_cast<int64_t>(dtype_size(v.dtype));
  if (v.ndim == 2) {
    s.rows = v.shape[0];
    s.row_bytes = v.shape[1] * element;
    s.stride_bytes = v.strides[0] * element;
  } else {
    s.row_bytes = n * element;
    s.stride_bytes = s.row_bytes;
  }
  s.begin = reinterpret_cast<uintptr_t>(v.data);
  s.end = s.begin + static_cast<uintptr_t>((s.rows - 1) * s.stride_bytes + s.row_bytes);
  return s;
}

// Whether any byte of `a`'s rows is a byte of `b`'s rows. Byte ranges decide almost every case;
// two row-strided views whose ranges interleave (columns [0, 4) and [4, 8) of one table) are
// compared row by row over their common range.
bool spans_overlap(const Span& a, const Span& b) {
  if (a.begin >= a.end || b.begin >= b.end) return false;
  if (a.end <= b.begin || b.end <= a.begin) return false;
  const bool a_dense = a.rows == 1 || a.stride_bytes == a.row_bytes;
  const bool b_dense = b.rows == 1 || b.stride_bytes == b.row_bytes;
  if (a_dense && b_dense) return true;
  // Walk the rows of `x` inside the common range; for each, the rows of `y` that could touch
  // it follow from y's stride (b_dense: y is one interval).
  const Span& x = a.rows <= b.rows ? a : b;
  const Span& y = a.rows <= b.rows ? b : a;
  const uintptr_t lo = std::max(a.begin, b.begin), hi = std::min(a.end, b.end);
  for (int64_t i = 0; i < x.rows; ++i) {
    const uintptr_t from = x.begin + static_cast<uintptr_t>(i * x.stride_bytes);
    const uintptr_t to = from + static_cast<uintptr_t>(x.row_bytes);
    if (to <= lo) continue;
    if (from >= hi) break;
    // y's rows j with y.begin + j * stride < to and y.begin + j * stride + row_bytes > from.
    const int64_t stride = y.stride_bytes > 0 ? y.stride_bytes : 1;
    const int64_t rel_from = static_cast<int64_t>(from) - static_cast<int64_t>(y.begin);
    const int64_t rel_to = static_cast<int64_t>(to) - static_cast<int64_t>(y.begin);
    int64_t j = rel_from - y.row_bytes < 0 ? 0 : (rel_from - y.row_bytes) / stride;
    for (; j < y.rows; ++j) {
      const int64_t start = j * stride;
      if (start >= rel_to) break;
      if (start + y.row_bytes > rel_from) return true;
    }
  }
  return false;
}

bool views_overlap(const TensorView& a, const TensorView& b) {
  if (a.device.type != b.device.type) return false;
  if (a.device.type == DeviceType::kOpenCL) {
    // cl_mem handles, not addresses: one buffer is one allocation.
    return a.data != nullptr && a.data == b.data && a.numel() > 0 && b.numel() > 0;
  }
  return spans_overlap(span_of(a), span_of(b));
}

}  // namespace

namespace {

// The bytes [begin, end) a validated view spans, computed inline (this runs on every call: a
// couple of compares per pair when nothing overlaps); begin == end when it holds no element.
struct ByteRange {
  uintptr_t begin, end;
};
inline ByteRange byte_range(const TensorView& v) {
  int64_t rows = 1, cols = 1, stride = 0;
  if (v.ndim == 1) cols = v.shape[0];
  if (v.ndim == 2) {
    rows = v.shape[0];
    cols = v.shape[1];
    stride = v.strides[0];
  }
  if (rows <= 0 || cols <= 0 || v.data == nullptr) return {0, 0};
  // (DType order: int32, int64, float16, bfloat16, float32, float64)
  static constexpr uint8_t kBytes[] = {4, 8, 2, 2, 4, 8};
  const int64_t element = kBytes[static_cast<size_t>(v.dtype)];
  const uintptr_t begin = reinterpret_cast<uintptr_t>(v.data);
  return {begin, begin + static_cast<uintptr_t>(((rows - 1) * stride + cols) * element)};
}

// Whether any written view's byte range meets another view's (OpenCL handles always count):
// the every-call fast path, a few compares and no strings. Only when it says yes are the views
// compared exactly (row by row for row-strided views, by handle for OpenCL buffers).
bool ranges_may_overlap(std::initializer_list<NamedView> writes,
                        std::initializer_list<NamedView> reads) {
  constexpr size_t kMax = 16;
  ByteRange ranges[kMax];
  const TensorView* views[kMax];
  size_t n = 0;
  for (const NamedView& r : reads) {
    if (r.view != nullptr && n < kMax) {
      ranges[n] = byte_range(*r.view);
      views[n++] = r.view;
    }
  }
  const size_t first_write = n;
  for (const NamedView& w : writes) {
    if (w.view == nullptr) continue;
    if (w.view->device.type == DeviceType::kOpenCL) return true;
    if (n < kMax) {
      ranges[n] = byte_range(*w.view);
      views[n++] = w.view;
    }
  }
  for (size_t i = first_write; i < n; ++i) {
    const ByteRange w = ranges[i];
    if (w.begin >= w.end) continue;
    for (size_t j = 0; j < n; ++j) {
      // (the table under max_norm is read and written: the same view, not an overlap)
      if (views[j] == views[i]) continue;
      if (w.begin < ranges[j].end && ranges[j].begin < w.end) return true;
    }
  }
  return false;
}

}  // namespace

Status check_no_overlap(std::initializer_list<NamedView> writes,
                        std::initializer_list<NamedView> reads) {
  if (!ranges_may_overlap(writes, reads)) return Status::Ok();
  for (auto w = writes.begin(); w != writes.end(); ++w) {
    if (w->view == nullptr) continue;
    const ByteRange wr = byte_range(*w->view);
    const bool opencl = w->view->device.type == DeviceType::kOpenCL;
    auto clash = [&](const NamedView& other) {
      if (other.view == nullptr || other.view == w->view) return false;
      if (!opencl) {
        const ByteRange r = byte_range(*other.view);
        if (wr.begin >= wr.end || r.begin >= r.end || wr.end <= r.begin || r.end <= wr.begin) {
          return false;
        }
      }
      return views_overlap(*w->view, *other.view);
    };
    const NamedView* hit = nullptr;
    bool hit_is_write = false;
    for (const NamedView& r : reads) {
      // (the table under max_norm is read and written: the same view, not an overlap)
      if (clash(r)) {
        hit = &r;
        break;
      }
    }
    for (auto other = std::next(w); hit == nullptr && other != writes.end(); ++other) {
      if (clash(*other)) {
        hit = other;
        hit_is_write = true;
      }
    }
    if (hit != nullptr) {
      return invalid(
          std::string("unsupported operation: some elements of the input tensor and the "
                      "written-to tensor refer to a single memory location. Please clone() the "
                      "tensor before performing the operation. (") +
          (hit_is_write ? hit->name : w->name) + " overlaps " +
          (hit_is_write ? w->name : hit->name) + ")");
    }
  }
  return Status::Ok();
}

namespace {

// The rules of a quantized table (include/embag/quantized.h), checked in place of the float
// table's dtype and memory rules. A quantized table is an inference table: no max_norm.
Status check_quantized_table(const ForwardInputs& in, const Options& opt) {
  const QuantizedTable& t = *in.quantized_weight;
  if (in.weight.data != nullptr || in.weight.ndim != 0) {
    return invalid(
        "a call takes one table: weight or quantized_weight, not both (weight has shape " +
        in.weight.shape_string() + ")");
  }
  if (!parse_quant_format(quant_format_name(t.format))) {
    return invalid("quantized_weight has an unknown format (" +
                   std::to_string(static_cast<int>(t.format)) + ")");
  }
  if (t.device.type != DeviceType::kCPU) {
    return Status(StatusCode::kUnsupported,
                  "quantized tables run on the CPU only: this build of embag has no GPU kernels "
                  "for them (quantized_weight is on " +
                      device_string(t.device) + ")");
  }
  if (t.rows < 0 || t.dim < 0) {
    return invalid("quantized_weight has a negative size (" + std::to_string(t.rows) +
                   " rows, D = " + std::to_string(t.dim) + ")");
  }
  for (auto [value, what] :
       {std::pair{t.rows, "rows"}, {t.dim, "D"}, {t.row_stride, "row stride"}}) {
    if (value > kMaxExtent) {
      return invalid(std::string("quantized_weight's ") + what + " is " + std::to_string(value) +
                     ", but embag's kernels take at most " + std::to_string(kMaxExtent));
    }
  }
  const int64_t row_bytes = quantized_row_bytes(t.format, t.dim);
  if (t.rows > 0 && t.row_stride < row_bytes) {
    const QuantLayout layout = quant_layout(t.format);
    const std::string parts =
        layout.qparam_bytes == 0 ? "one per element"
                                 : std::to_string(quant_code_bytes(layout, t.dim)) + " of codes, " +
                                       std::to_string(layout.qparam_bytes) + " of scale and bias";
    return invalid("quantized_weight's row stride (" + std::to_string(t.row_stride) +
                   " bytes) must hold a row of format " + quant_format_name(t.format) +
                   " with D = " + std::to_string(t.dim) + ": " + std::to_string(row_bytes) +
                   " bytes (" + parts + ")");
  }
  if (t.rows > 0 && row_bytes > 0 && t.data == nullptr) {
    return invalid("quantized_weight has " + std::to_string(t.rows) + " rows but no data");
  }
  if (opt.max_norm) {
    return invalid(
        "max_norm is not supported with a quantized table: it would rewrite rows in place, and "
        "quantized tables are read-only inference tables (PyTorch's quantized embedding_bag has "
        "no max_norm either)");
  }
  return Status::Ok();
}

// The float32 (V, D) table a quantized table stands for, for the rules that look only at V, D
// and the device (its data and strides are never read as floats).
TensorView logical_view(const QuantizedTable& t) {
  TensorView v;
  v.dtype = DType::kFloat32;
  v.ndim = 2;
  v.shape[0] = t.rows;
  v.shape[1] = t.dim;
  v.strides[0] = t.dim;
  v.strides[1] = 1;
  v.device = t.device;
  return v;
}

// No output may share bytes with a quantized table (its bytes are not a TensorView, so this is
// check_no_overlap's byte-range test done here).
Status check_outputs_miss_table(const QuantizedTable& t, std::initializer_list<NamedView> writes) {
  const int64_t row_bytes = quantized_row_bytes(t.format, t.dim);
  if (t.rows <= 0 || row_bytes <= 0 || t.data == nullptr) return Status::Ok();
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data);
  const uintptr_t end = begin + static_cast<uintptr_t>((t.rows - 1) * t.row_stride + row_bytes);
  for (const NamedView& w : writes) {
    if (w.view == nullptr) continue;
    const ByteRange r = byte_range(*w.view);
    if (r.begin < r.end && r.begin < end && begin < r.end) {
      return invalid(std::string("unsupported operation: some elements of the input tensor and the "
                                 "written-to tensor refer to a single memory location. Please "
                                 "clone() the tensor before performing the operation. (") +
                     w.name + " overlaps quantized_weight)");
    }
  }
  return Status::Ok();
}

}  // namespace

ForwardInputs IndexSnapshot::apply(const ForwardInputs& in) const {
  if (!taken) return in;
  ForwardInputs out = in;
  out.input = input;
  if (in.offsets != nullptr) out.offsets = &offsets;
  return out;
}

BackwardInputs IndexSnapshot::apply(const BackwardInputs& in) const {
  if (!taken) return in;
  BackwardInputs out = in;
  out.input = input;
  if (in.offsets != nullptr) out.offsets = &offsets;
  if (has_argmax) out.argmax = &argmax;
  return out;
}

Status validate_forward_inputs(const ForwardInputs& in, const Options& opt, ForwardPlan* plan,
                               IndexSnapshot* snapshot) {
  const bool quantized = in.quantized_weight != nullptr;
  if (quantized) {
    if (Status s = check_quantized_table(in, opt); !s.ok()) return s;
  }
  const TensorView weight = quantized ? logical_view(*in.quantized_weight) : in.weight;
  const TensorView& input = in.input;
  const TensorView* psw = in.per_sample_weights;

  // The rules are checked in PyTorch's order (torch.nn.functional.embedding_bag's Python checks,
  // then its C++ ones), so a call that breaks two gets PyTorch's message: per_sample_weights'
  // shape first, then the ranks, the mode, and the dtypes and values.
  if (psw != nullptr &&
      (psw->ndim != input.ndim || (input.ndim >= 1 && psw->shape[0] != input.shape[0]) ||
       (input.ndim == 2 && psw->shape[1] != input.shape[1]))) {
    return invalid("embedding_bag: If per_sample_weights (" + psw->shape_string() +
                   ") is not None, then it must have the same shape as the input (" +
                   input.shape_string() + ")");
  }

  // Tables.
  if (weight.ndim != 2) {
    return invalid("weight has to be a 2D Tensor, but got Tensor of dimension " +
                   std::to_string(weight.ndim));
  }
  if (!is_float_dtype(weight.dtype)) {
    return invalid(std::string("weight must be float32, float64, float16 or bfloat16, but got ") +
                   dtype_name(weight.dtype));
  }
  if (!quantized) {
    if (Status s = check_memory(weight, "weight", false); !s.ok()) return s;
  }

  // Indices and offsets.
  if (input.ndim != 1 && input.ndim != 2) {
    return invalid("input has to be 1D or 2D Tensor, but got Tensor of dimension " +
                   std::to_string(input.ndim));
  }
  if (!is_index_dtype(input.dtype)) {
    return invalid(std::string("input must be int32 or int64, but got ") + dtype_name(input.dtype));
  }
  if (Status s = check_memory(input, "input", true); !s.ok()) return s;
  const TensorView* offsets = in.offsets;
  for (auto [view, name] : {std::pair{&in.input, "input"},
                            {offsets, "offsets"},
                            {in.per_sample_weights, "per_sample_weights"}}) {
    if (Status s = check_device(weight.device, view, name); !s.ok()) return s;
  }
  // Values in GPU memory are checked by a kernel on the device (see gpu_forward.cpp); here only
  // shapes, dtypes and options.
  const bool on_host = weight.device.type == DeviceType::kCPU;
  if (input.ndim == 1) {
    if (offsets == nullptr) return invalid("offsets has to be a 1D Tensor but got None");
    if (offsets->ndim != 1) {
      return invalid("offsets has to be a 1D Tensor, but got Tensor of dimension " +
                     std::to_string(offsets->ndim));
    }
    if (!is_index_dtype(offsets->dtype)) {
      return invalid(std::string("offsets must be int32 or int64, but got ") +
                     dtype_name(offsets->dtype));
    }
    if (Status s = check_memory(*offsets, "offsets", true); !s.ok()) return s;
    if (snapshot != nullptr && on_host) {
      // From here on the offsets are read from the copy (see IndexSnapshot).
      const int64_t bytes = offsets->shape[0] * static_cast<int64_t>(dtype_size(offsets->dtype));
      void* copy = snapshot_buffer(kOffsetsCopy, bytes);
      if (bytes > 0) std::memcpy(copy, offsets->data, static_cast<size_t>(bytes));
      snapshot->offsets = make_view_1d(copy, offsets->dtype, offsets->shape[0], offsets->device);
      offsets = &snapshot->offsets;
    }
  } else if (offsets != nullptr) {
    return invalid(
        "if input is 2D, then offsets has to be None, as input is treated is a mini-batch of "
        "fixed length sequences. However, found offsets of shape " +
        offsets->shape_string());
  }

  // Options.
  if (opt.mode != Mode::kSum && opt.mode != Mode::kMean && opt.mode != Mode::kMax) {
    return invalid("mode has to be one of sum, mean or max");
  }
  if (opt.mode == Mode::kMax && opt.scale_grad_by_freq) {
    return invalid("max mode does not support scaling the gradient by the frequency");
  }
  if (opt.mode == Mode::kMax && opt.sparse) {
    return invalid("max mode does not support sparse weights");
  }
  if (psw != nullptr) {
    if (opt.mode != Mode::kSum) {
      return invalid(
          std::string("embedding_bag: per_sample_weights was not None. per_sample_weights is "
                      "only supported for mode='sum' (got mode='") +
          mode_name(opt.mode) + "')");
    }
    if (psw->dtype != weight.dtype) {
      if (quantized) {
        return invalid(std::string("embedding_bag: per_sample_weights has dtype ") +
                       dtype_name(psw->dtype) + ", but it must have the weight's dtype " +
                       dtype_name(weight.dtype) + " (a quantized table pools in float32)");
      }
      // PyTorch's words (its checkSameType), legacy type names included.
      return invalid(
          std::string("Expected tensor for argument #1 'weight' to have the same type as "
                      "tensor for argument #1 'per_sample_weights'; but type ") +
          legacy_type_name(weight.dtype) + " does not equal " + legacy_type_name(psw->dtype) +
          " (while checking arguments for embedding_bag)");
    }
    if (Status s = check_memory(*psw, "per_sample_weights", true); !s.ok()) return s;
  }
  const int64_t V = weight.shape[0];
  const int64_t D = weight.shape[1];
  int32_t padding = -1;
  if (opt.padding_idx) {
    const int64_t p = *opt.padding_idx;
    if (p < -V || p > V - 1) {
      return invalid("padding_idx must be within the number of embeddings, -" + std::to_string(V) +
                     " through " + std::to_string(V - 1) + ", but got " + std::to_string(p));
    }
    padding = static_cast<int32_t>(p < 0 ? p + V : p);
  }

  // Sizes the kernels address with 32-bit extents (elements are addressed in 64 bits). Each
  // view's extents and row stride were checked by check_memory; what is left are the products.
  const int64_t N = input.numel();
  if (Status s = check_extent(N, "the number of indices"); !s.ok()) return s;

  // Bags.
  int64_t B = 0;
  int64_t positions_end = N;
  if (input.ndim == 2) {
    B = input.shape[0];
  } else {
    const int64_t num_offsets = offsets->shape[0];
    if (opt.include_last_offset && num_offsets < 1) {
      return invalid("include_last_offset: number of offset should be at least 1");
    }
    if (num_offsets > 0 && on_host) {
      const int64_t first = load_index(*offsets, 0);
      const int64_t last = load_index(*offsets, num_offsets - 1);
      int64_t decreasing_at = -1;
      for (int64_t i = 1; i < num_offsets && decreasing_at < 0; ++i) {
        if (load_index(*offsets, i) < load_index(*offsets, i - 1)) decreasing_at = i - 1;
      }
      const int64_t before = decreasing_at < 0 ? 0 : load_index(*offsets, decreasing_at);
      const int64_t after = decreasing_at < 0 ? 0 : load_index(*offsets, decreasing_at + 1);
      if (Status s = offsets_value_error(first, last, N, decreasing_at, before, after); !s.ok()) {
        return s;
      }
      // With include_last_offset the last offset closes the last bag; positions after it belong
      // to no bag and are never read (SEMANTICS.md, "Choice").
      if (opt.include_last_offset) positions_end = last;
    }
    B = opt.include_last_offset ? num_offsets - 1 : num_offsets;
    // Without include_last_offset and without offsets there are no bags, so nothing is read.
    if (num_offsets == 0) positions_end = 0;
  }
  if (Status s = check_extent(B + 1, "the number of bags + 1"); !s.ok()) return s;

  // Every index that is read must name a row.
  if (on_host) {
    void* copy = nullptr;
    if (snapshot != nullptr) {
      copy = snapshot_buffer(kIndicesCopy,
                             positions_end * static_cast<int64_t>(dtype_size(input.dtype)));
      snapshot->input = input;
      snapshot->input.data = copy;
      snapshot->taken = true;
    }
    const int64_t bad = first_index_out_of_range(input, copy, positions_end, V);
    if (bad >= 0) {
      return index_value_error(bad, load_index(copy ? snapshot->input : input, bad), V, opt);
    }
  }

  plan->num_rows = V;
  plan->dim = D;
  plan->num_bags = B;
  plan->num_indices = N;
  plan->positions_end = positions_end;
  plan->padding_idx = padding;
  plan->pooling = pooling_for(opt.mode, psw != nullptr);
  return Status::Ok();
}

Status validate_forward(const ForwardInputs& in, const ForwardOutputs& out, const Options& opt,
                        ForwardPlan* plan, IndexSnapshot* snapshot) {
  if (Status s = validate_forward_inputs(in, opt, plan, snapshot); !s.ok()) return s;
  const QuantizedTable* quantized = in.quantized_weight;
  const Device device = quantized ? quantized->device : in.weight.device;
  for (auto [view, name] :
       {std::pair{&out.output, "output"}, {out.bag_count, "bag_count"}, {out.argmax, "argmax"}}) {
    if (Status s = check_device(device, view, name); !s.ok()) return s;
  }
  const int64_t B = plan->num_bags, D = plan->dim;
  // A quantized table's output is float32 (what it dequantises to).
  const DType weight_dtype = quantized ? DType::kFloat32 : in.weight.dtype;
  if (Status s =
          check_output(&out.output, "output", weight_dtype,
                       quantized ? "float32 for a quantized table" : "the weight's dtype", 2, B, D);
      !s.ok()) {
    return s;
  }
  if (Status s = check_output(out.bag_count, "bag_count", DType::kInt64, "int64", 1, B, 0);
      !s.ok()) {
    return s;
  }
  if (out.argmax != nullptr && opt.mode != Mode::kMax) {
    return invalid(std::string("argmax is only produced by mode='max' (mode is '") +
                   mode_name(opt.mode) + "'); pass no argmax view");
  }
  if (Status s = check_output(out.argmax, "argmax", DType::kInt64, "int64", 2, B, D); !s.ok()) {
    return s;
  }
  if (quantized) {
    if (Status s = check_outputs_miss_table(
            *quantized,
            {{&out.output, "output"}, {out.bag_count, "bag_count"}, {out.argmax, "argmax"}});
        !s.ok()) {
      return s;
    }
  }
  // (the caller's arrays, not the snapshot's copies: it is their memory the kernels write)
  return check_no_overlap(
      {{&out.output, "output"},
       {out.bag_count, "bag_count"},
       {out.argmax, "argmax"},
       {opt.max_norm ? &in.weight : nullptr, "weight (renormalised by max_norm)"}},
      {{&in.weight, "weight"},
       {&in.input, "input"},
       {in.offsets, "offsets"},
       {in.per_sample_weights, "per_sample_weights"}});
}

Status validate_backward_rest(const BackwardInputs& in, const BackwardOutputs& out,
                              const Options& opt, const ForwardPlan& plan, int64_t sparse_rows,
                              IndexSnapshot* snapshot) {
  const int64_t B = plan.num_bags, D = plan.dim, V = plan.num_rows;
  const DType weight_dtype = in.weight.dtype;
  const TensorView& g = in.grad_output;
  for (auto [view, name] : {std::pair{&in.grad_output, "grad_output"},
                            {in.argmax, "argmax"},
                            {out.grad_weight, "grad_weight"},
                            {out.grad_weight_rows, "grad_weight_rows"},
                            {out.grad_weight_values, "grad_weight_values"},
                            {out.grad_per_sample_weights, "grad_per_sample_weights"}}) {
    if (Status s = check_device(in.weight.device, view, name); !s.ok()) return s;
  }
  if (g.ndim != 2 || g.shape[0] != B || g.shape[1] != D) {
    std::string which = g.ndim != 2       ? "it is " + std::to_string(g.ndim) + "-D"
                        : g.shape[0] != B ? "dimension 0 is " + std::to_string(g.shape[0]) +
                                                ", the number of bags is " + std::to_string(B)
                                          : "dimension 1 is " + std::to_string(g.shape[1]) +
                                                ", the embedding dimension is " + std::to_string(D);
    return invalid("grad_output must have shape [" + std::to_string(B) + ", " + std::to_string(D) +
                   "] but has shape " + g.shape_string() + " (" + which + ")");
  }
  if (g.dtype != weight_dtype) {
    return invalid(std::string("grad_output must have dtype ") + dtype_name(weight_dtype) +
                   " (the weight's dtype) but has dtype " + dtype_name(g.dtype));
  }
  if (Status s = check_memory(g, "grad_output", false); !s.ok()) return s;

  if (opt.mode == Mode::kMax) {
    if (in.argmax == nullptr) {
      return invalid("mode='max' backward needs the argmax that forward produced");
    }
    if (Status s = check_output(in.argmax, "argmax", DType::kInt64, "int64", 2, B, D); !s.ok()) {
      return s;
    }
    // Every entry must be a row its bag holds, or -1 for a bag with no valid position. (In GPU
    // memory the entries are not read on the host: the GPU kernel adds a bag's gradient only to
    // rows the bag holds, so other entries are ignored there.)
    if (in.weight.device.type == DeviceType::kCPU) {
      int64_t* copy = nullptr;
      if (snapshot != nullptr && snapshot->taken) {
        copy = static_cast<int64_t*>(snapshot_buffer(kArgmaxCopy, B * D * 8));
        snapshot->argmax = make_view_2d(copy, DType::kInt64, B, D, D, in.argmax->device);
        snapshot->has_argmax = true;
      }
      const BackwardInputs read = snapshot != nullptr ? snapshot->apply(in) : in;
      if (Status s = check_argmax_rows(read, plan, in.argmax, copy); !s.ok()) return s;
    }
  } else if (in.argmax != nullptr) {
    return invalid(std::string("argmax is only used by mode='max' (mode is '") +
                   mode_name(opt.mode) + "'); pass no argmax view");
  }

  const bool dense = out.grad_weight != nullptr;
  const bool sparse = out.grad_weight_rows != nullptr || out.grad_weight_values != nullptr;
  if (opt.sparse) {
    if (dense || out.grad_weight_rows == nullptr || out.grad_weight_values == nullptr) {
      return invalid(
          "sparse=True writes grad_weight_rows and grad_weight_values (and no dense grad_weight)");
    }
    if (Status s = check_output(out.grad_weight_rows, "grad_weight_rows", DType::kInt64, "int64", 1,
                                sparse_rows, 0);
        !s.ok()) {
      return Status(s.code(), s.message() + " (the bags reference " + std::to_string(sparse_rows) +
                                  " distinct rows; see sparse_gradient_rows)");
    }
    if (Status s = check_output(out.grad_weight_values, "grad_weight_values", weight_dtype,
                                "the weight's dtype", 2, sparse_rows, D);
        !s.ok()) {
      return Status(s.code(), s.message() + " (the bags reference " + std::to_string(sparse_rows) +
                                  " distinct rows; see sparse_gradient_rows)");
    }
  } else {
    if (!dense || sparse) {
      return invalid(
          "sparse=False writes the dense grad_weight (and no grad_weight_rows / "
          "grad_weight_values)");
    }
    if (Status s = check_output(out.grad_weight, "grad_weight", weight_dtype, "the weight's dtype",
                                2, V, D);
        !s.ok()) {
      return s;
    }
  }
  if (out.grad_per_sample_weights != nullptr) {
    if (in.per_sample_weights == nullptr) {
      return invalid("grad_per_sample_weights needs per_sample_weights");
    }
    const TensorView& gp = *out.grad_per_sample_weights;
    if (gp.ndim != in.input.ndim || gp.shape[0] != in.input.shape[0] ||
        (gp.ndim == 2 && gp.shape[1] != in.input.shape[1])) {
      return invalid("grad_per_sample_weights must have the input's shape " +
                     in.input.shape_string() + " but has shape " + gp.shape_string());
    }
    if (gp.dtype != weight_dtype) {
      return invalid(std::string("grad_per_sample_weights must have dtype ") +
                     dtype_name(weight_dtype) + " (the weight's dtype) but has dtype " +
                     dtype_name(gp.dtype));
    }
    if (Status s = check_memory(gp, "grad_per_sample_weights", true); !s.ok()) return s;
  }
  return check_no_overlap({{out.grad_weight, "grad_weight"},
                           {out.grad_weight_rows, "grad_weight_rows"},
                           {out.grad_weight_values, "grad_weight_values"},
                           {out.grad_per_sample_weights, "grad_per_sample_weights"}},
                          {{&in.weight, "weight"},
                           {&in.input, "input"},
                           {in.offsets, "offsets"},
                           {in.per_sample_weights, "per_sample_weights"},
                           {&in.grad_output, "grad_output"},
                           {in.argmax, "argmax"}});
}

}  // namespace embag::internal
