// embag._embag: the Python extension, a thin nanobind layer over embag's public C++ API.
//
// Arrays arrive as DLPack capsules (the Python side calls `__dlpack__()` on whatever it was given
// and allocates the outputs with the caller's own array library), so nothing is copied here and
// no array library is needed to import the module. The capsules are held by the Python caller
// for the whole call, which keeps every producer's memory alive while the kernels run with the
// GIL released. Status codes become Python exceptions with the C++ message unchanged:
// kInvalidArgument -> embag.EmbeddingBagError (both a RuntimeError, as PyTorch raises for these
// rules, and a ValueError, embag's earlier contract), or its NotImplementedError subclass for the
// one rule PyTorch reports as not implemented; kUnsupported -> embag.UnsupportedError (a
// RuntimeError); kInternal -> RuntimeError.
#include <dlpack/dlpack.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "embag/batched.h"
#include "embag/dlpack.h"
#include "embag/embag.h"

namespace nb = nanobind;

namespace {

// Thrown for StatusCode::kUnsupported; registered as embag._embag.UnsupportedError.
struct UnsupportedError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A broken rule. Python code written against PyTorch catches RuntimeError (what
// torch.embedding_bag raises for these rules); code written against embag catches ValueError.
// The class derives from both, so each keeps working. Created in NB_MODULE.
PyObject* g_rule_error = nullptr;
// PyTorch raises NotImplementedError for per_sample_weights with mode mean or max; this subclass
// of the above is one too.
PyObject* g_not_implemented_error = nullptr;

struct RuleError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The runtime's message for per_sample_weights with mode mean or max (validation.cpp); its
// prefix picks the NotImplementedError class, the one rule PyTorch reports as unimplemented.
constexpr std::string_view kNotImplementedPrefix =
    "embedding_bag: per_sample_weights was not None.";

[[noreturn]] void raise_rule(const std::string& message) { throw RuleError(message); }

void raise_if_error(const embag::Status& status) {
  switch (status.code()) {
    case embag::StatusCode::kOk:
      return;
    case embag::StatusCode::kInvalidArgument:
      raise_rule(status.message());
    case embag::StatusCode::kUnsupported:
      throw UnsupportedError(status.message());
    case embag::StatusCode::kInternal:
      break;
  }
  throw std::runtime_error("embag internal error: " + status.message());
}

// DLPack 1.0's versioned managed tensor (capsule "dltensor_versioned"), which adds the flags
// that say whether the producer lets the consumer write. Debian's dlpack.h is 0.6, which lacks
// it; the layout is fixed by the DLPack ABI (DLTensor itself is unchanged since 0.6).
struct ManagedTensorVersioned {
  struct {
    uint32_t major, minor;
  } version;
  void* manager_ctx;
  void (*deleter)(ManagedTensorVersioned* self);
  uint64_t flags;
  DLTensor dl_tensor;
};
constexpr uint64_t kDLPackFlagReadOnly = uint64_t{1} << 0;

// Whether a call writes the array: outputs always, the table only under max_norm.
enum class Access { kRead, kWrite };

// A TensorView of a DLPack capsule the caller still owns. The capsule is not renamed to
// "used_dltensor": the caller's reference keeps the producer's memory alive during the call and
// the capsule's destructor releases it afterwards, as the DLPack protocol allows for borrowers.
// Versioned capsules (DLPack 1.x, `__dlpack__(max_version=(1, 0))`) carry a read-only flag:
// read-only arrays (NumPy's read-only and memory-mapped ones) are accepted where the call only
// reads them and refused, naming the argument, where it would write them.
embag::TensorView view_of(nb::handle capsule, const char* name, Access access = Access::kRead,
                          const char* why_written = nullptr) {
  PyObject* object = capsule.ptr();
  const DLTensor* tensor = nullptr;
  if (PyCapsule_IsValid(object, "dltensor_versioned")) {
    auto* managed =
        static_cast<ManagedTensorVersioned*>(PyCapsule_GetPointer(object, "dltensor_versioned"));
    if (managed->version.major != 1) {
      throw nb::type_error((std::string(name) + " was exported with DLPack " +
                            std::to_string(managed->version.major) + "." +
                            std::to_string(managed->version.minor) + ", but embag reads DLPack 1.x")
                               .c_str());
    }
    if ((managed->flags & kDLPackFlagReadOnly) != 0 && access == Access::kWrite) {
      raise_rule((std::string(name) + " is read-only, but " +
                  (why_written ? why_written : "this call writes it") +
                  "; pass a writable array (for NumPy: numpy.array(" + name + "))"));
    }
    tensor = &managed->dl_tensor;
  } else if (PyCapsule_IsValid(object, "dltensor")) {
    tensor = &static_cast<DLManagedTensor*>(PyCapsule_GetPointer(object, "dltensor"))->dl_tensor;
  } else {
    throw nb::type_error(
        (std::string(name) + " must be a DLPack capsule named 'dltensor' or 'dltensor_versioned'")
            .c_str());
  }
  // A view has at most two dimensions, so the runtime never sees a 3-D table, input or offsets;
  // give PyTorch's message for them here, as the runtime does for a 0-D one.
  const int ndim = tensor->ndim;
  const std::string rank = std::to_string(ndim);
  if (ndim > 2 && std::string(name) == "weight") {
    raise_rule("weight has to be a 2D Tensor, but got Tensor of dimension " + rank);
  }
  if (ndim > 2 && std::string(name) == "input") {
    raise_rule("input has to be 1D or 2D Tensor, but got Tensor of dimension " + rank);
  }
  if (ndim > 2 && std::string(name) == "offsets") {
    raise_rule("offsets has to be a 1D Tensor, but got Tensor of dimension " + rank);
  }
  embag::TensorView view;
  const embag::Status status = embag::from_dlpack(*tensor, &view);
  if (!status.ok()) {
    // from_dlpack reports dtypes, ranks and devices embag cannot view; name the argument.
    raise_if_error(embag::Status(status.code(), std::string(name) + ": " + status.message()));
  }
  return view;
}

// Optional arrays: None stays a null pointer; `storage` owns the view the pointer refers to.
const embag::TensorView* optional_view(nb::handle capsule, const char* name,
                                       std::optional<embag::TensorView>* storage,
                                       Access access = Access::kRead) {
  if (capsule.is_none()) return nullptr;
  storage->emplace(view_of(capsule, name, access));
  return &**storage;
}

// Releases the GIL for a call into embag and takes it back afterwards, surviving interpreter
// exit. When the interpreter finalizes, Python 3.11 ends a daemon thread that asks for the GIL
// with pthread_exit; its forced unwinding through this destructor (noexcept) or nanobind's
// dispatcher (catch (...) without rethrow) aborts the whole process ("terminate called without
// an active exception", rc 134; F.embedding_bag does the same). So a thread that comes back from
// a kernel during finalization parks instead of asking, and one that was already waiting for
// the GIL when finalization began catches the forced unwind right here and parks inside the
// handler: it holds nothing, and the exiting process ends it. (Leaving the handler would
// terminate; never leaving it does not.)
class GilRelease {
 public:
  GilRelease() : state_(PyEval_SaveThread()) {}
  ~GilRelease() {
    if (finalizing()) park();
    try {
      PyEval_RestoreThread(state_);
    } catch (...) {  // abi::__forced_unwind from pthread_exit: the interpreter ended this thread
      park();
    }
  }
  GilRelease(const GilRelease&) = delete;
  GilRelease& operator=(const GilRelease&) = delete;

 private:
  [[noreturn]] static void park() {
    for (;;) pause();
  }
  static bool finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing() != 0;
#else
    return _Py_IsFinalizing() != 0;
#endif
  }
  PyThreadState* state_;
};

embag::Options make_options(const std::string& mode, std::optional<double> max_norm,
                            double norm_type, bool scale_grad_by_freq, bool sparse,
                            bool include_last_offset, std::optional<int64_t> padding_idx) {
  const std::optional<embag::Mode> parsed = embag::parse_mode(mode);
  // PyTorch's words (torch.nn.functional.embedding_bag raises ValueError with them).
  if (!parsed) raise_rule("mode has to be one of sum, mean or max");
  embag::Options options;
  options.mode = *parsed;
  options.max_norm = max_norm;
  options.norm_type = norm_type;
  options.scale_grad_by_freq = scale_grad_by_freq;
  options.sparse = sparse;
  options.include_last_offset = include_last_offset;
  options.padding_idx = padding_idx;
  return options;
}

// `stream` is the integer handle of the caller's queue (a cudaStream_t for CUDA tensors, as
// torch.cuda.Stream.cuda_stream gives it); 0 is the default stream and is ignored on the CPU.
embag::Execution make_execution(uintptr_t stream, bool check_indices) {
  embag::Execution execution;
  execution.stream = reinterpret_cast<void*>(stream);
  execution.index_check = check_indices ? embag::IndexCheck::kFull : embag::IndexCheck::kNone;
  return execution;
}

int64_t num_bags(nb::handle input, nb::handle offsets, bool include_last_offset) {
  std::optional<embag::TensorView> offsets_view;
  embag::Options options;
  options.include_last_offset = include_last_offset;
  // One statement each: the input's rank is checked before the offsets' (PyTorch's order), which
  // the unspecified order of a call's arguments would not guarantee.
  const embag::TensorView input_view = view_of(input, "input");
  const embag::TensorView* offsets_ptr = optional_view(offsets, "offsets", &offsets_view);
  return embag::num_bags(input_view, offsets_ptr, options);
}

void forward(nb::handle weight, nb::handle input, nb::handle offsets, nb::handle per_sample_weights,
             nb::handle output, nb::handle bag_count, nb::handle argmax,
             const embag::Options& options, uintptr_t stream, bool check_indices) {
  std::optional<embag::TensorView> offsets_view, psw_view, bag_count_view, argmax_view;
  embag::ForwardInputs inputs;
  inputs.weight =
      view_of(weight, "weight", options.max_norm ? Access::kWrite : Access::kRead,
              "max_norm renormalises the rows it references in place (pass max_norm=None to "
              "only read it)");
  inputs.input = view_of(input, "input");
  inputs.offsets = optional_view(offsets, "offsets", &offsets_view);
  inputs.per_sample_weights = optional_view(per_sample_weights, "per_sample_weights", &psw_view);
  embag::ForwardOutputs outputs;
  outputs.output = view_of(output, "out", Access::kWrite, "the output is written into it");
  outputs.bag_count = optional_view(bag_count, "bag_count", &bag_count_view, Access::kWrite);
  outputs.argmax = optional_view(argmax, "argmax", &argmax_view, Access::kWrite);
  const embag::Execution execution = make_execution(stream, check_indices);
  embag::Status status;
  {
    GilRelease release;
    status = embag::forward(inputs, outputs, options, execution);
  }
  raise_if_error(status);
}

// A quantized table from a capsule of uint8 bytes, (V, row bytes or more) with contiguous rows,
// on the CPU, plus its format and D (the Python side, embag.QuantizedTable, knows both). DLPack
// views of other dtypes go through from_dlpack, which has no uint8: the bytes are read here.
embag::QuantizedTable quantized_view(nb::handle capsule, const char* name,
                                     const std::string& format, int64_t dim, Access access) {
  PyObject* object = capsule.ptr();
  const DLTensor* tensor = nullptr;
  if (PyCapsule_IsValid(object, "dltensor_versioned")) {
    auto* managed =
        static_cast<ManagedTensorVersioned*>(PyCapsule_GetPointer(object, "dltensor_versioned"));
    if ((managed->flags & kDLPackFlagReadOnly) != 0 && access == Access::kWrite) {
      throw nb::value_error((std::string(name) + " is read-only, but quantize writes it").c_str());
    }
    tensor = &managed->dl_tensor;
  } else if (PyCapsule_IsValid(object, "dltensor")) {
    tensor = &static_cast<DLManagedTensor*>(PyCapsule_GetPointer(object, "dltensor"))->dl_tensor;
  } else {
    throw nb::type_error((std::string(name) + " must be a DLPack capsule").c_str());
  }
  const std::optional<embag::QuantFormat> parsed = embag::parse_quant_format(format);
  if (!parsed) {
    throw nb::value_error(
        ("unknown quantized format '" + format + "' (known: " + embag::quant_format_names() + ")")
            .c_str());
  }
  if (tensor->dtype.code != kDLUInt || tensor->dtype.bits != 8 || tensor->dtype.lanes != 1) {
    throw nb::value_error(
        (std::string(name) + " must hold uint8 bytes (a quantized table's rows)").c_str());
  }
  if (tensor->ndim != 2) {
    throw nb::value_error((std::string(name) + " must be 2-D (rows, bytes per row), but has " +
                           std::to_string(tensor->ndim) + " dimensions")
                              .c_str());
  }
  if (tensor->device.device_type != kDLCPU) {
    throw UnsupportedError("quantized tables run on the CPU only: " + std::string(name) +
                           " is not in CPU memory");
  }
  const int64_t rows = tensor->shape[0], cols = tensor->shape[1];
  const int64_t inner = tensor->strides ? tensor->strides[1] : 1;
  const int64_t stride = tensor->strides ? tensor->strides[0] : cols;
  if (cols > 1 && inner != 1) {
    throw nb::value_error((std::string(name) +
                           " must have contiguous rows (its bytes within a row "
                           "are " +
                           std::to_string(inner) + " apart)")
                              .c_str());
  }
  const int64_t row_bytes = embag::quantized_row_bytes(*parsed, dim);
  if (rows > 0 && cols < row_bytes) {
    throw nb::value_error((std::string(name) + " has rows of " + std::to_string(cols) +
                           " bytes, but a row of format " + format + " with D = " +
                           std::to_string(dim) + " takes " + std::to_string(row_bytes))
                              .c_str());
  }
  embag::QuantizedTable table;
  table.data = static_cast<const char*>(tensor->data) + tensor->byte_offset;
  table.format = *parsed;
  table.rows = rows;
  table.dim = dim;
  table.row_stride = rows > 1 ? stride : std::max<int64_t>(stride, row_bytes);
  return table;
}

void quantize(nb::handle weight, nb::handle out, const std::string& format, int64_t dim) {
  const embag::TensorView w = view_of(weight, "weight");
  const embag::QuantizedTable table = quantized_view(out, "out", format, dim, Access::kWrite);
  embag::Status status;
  {
    GilRelease release;
    status = embag::quantize_rows(w, table);
  }
  raise_if_error(status);
}

void dequantize(nb::handle data, const std::string& format, int64_t dim, nb::handle out) {
  const embag::QuantizedTable table = quantized_view(data, "table", format, dim, Access::kRead);
  const embag::TensorView o = view_of(out, "out", Access::kWrite, "the output is written into it");
  embag::Status status;
  {
    GilRelease release;
    status = embag::dequantize_rows(table, o);
  }
  raise_if_error(status);
}

void forward_quantized(nb::handle data, const std::string& format, int64_t dim, nb::handle input,
                       nb::handle offsets, nb::handle per_sample_weights, nb::handle output,
                       nb::handle bag_count, nb::handle argmax, const embag::Options& options) {
  std::optional<embag::TensorView> offsets_view, psw_view, bag_count_view, argmax_view;
  const embag::QuantizedTable table = quantized_view(data, "weight", format, dim, Access::kRead);
  embag::ForwardInputs inputs;
  inputs.quantized_weight = &table;
  inputs.input = view_of(input, "input");
  inputs.offsets = optional_view(offsets, "offsets", &offsets_view);
  inputs.per_sample_weights = optional_view(per_sample_weights, "per_sample_weights", &psw_view);
  embag::ForwardOutputs outputs;
  outputs.output = view_of(output, "out", Access::kWrite, "the output is written into it");
  outputs.bag_count = optional_view(bag_count, "bag_count", &bag_count_view, Access::kWrite);
  outputs.argmax = optional_view(argmax, "argmax", &argmax_view, Access::kWrite);
  embag::Status status;
  {
    GilRelease release;
    status = embag::forward(inputs, outputs, options);
  }
  raise_if_error(status);
}

int64_t quantized_row_bytes(const std::string& format, int64_t dim) {
  const std::optional<embag::QuantFormat> parsed = embag::parse_quant_format(format);
  if (!parsed) {
    throw nb::value_error(
        ("unknown quantized format '" + format + "' (known: " + embag::quant_format_names() + ")")
            .c_str());
  }
  return embag::quantized_row_bytes(*parsed, dim);
}

// The arrays a backward call reads, viewed from capsules, with the storage their pointers use.
struct BackwardViews {
  std::optional<embag::TensorView> offsets, psw, argmax;
  embag::BackwardInputs inputs;

  BackwardViews(nb::handle grad_output, nb::handle weight, nb::handle input, nb::handle offsets_c,
                nb::handle psw_c, nb::handle argmax_c) {
    inputs.weight = view_of(weight, "weight");
    inputs.input = view_of(input, "input");
    inputs.offsets = optional_view(offsets_c, "offsets", &offsets);
    inputs.per_sample_weights = optional_view(psw_c, "per_sample_weights", &psw);
    inputs.grad_output = view_of(grad_output, "grad_output");
    inputs.argmax = optional_view(argmax_c, "argmax", &argmax);
  }
};

int64_t sparse_gradient_rows(nb::handle grad_output, nb::handle weight, nb::handle input,
                             nb::handle offsets, nb::handle per_sample_weights, nb::handle argmax,
                             const embag::Options& options, uintptr_t stream, bool check_indices) {
  BackwardViews views(grad_output, weight, input, offsets, per_sample_weights, argmax);
  const embag::Execution execution = make_execution(stream, check_indices);
  int64_t rows = 0;
  embag::Status status;
  {
    GilRelease release;
    status = embag::sparse_gradient_rows(views.inputs, options, &rows, execution);
  }
  raise_if_error(status);
  return rows;
}

void backward(nb::handle grad_output, nb::handle weight, nb::handle input, nb::handle offsets,
              nb::handle per_sample_weights, nb::handle argmax, nb::handle grad_weight,
              nb::handle grad_weight_rows, nb::handle grad_weight_values,
              nb::handle grad_per_sample_weights, const embag::Options& options, uintptr_t stream,
              bool check_indices) {
  BackwardViews views(grad_output, weight, input, offsets, per_sample_weights, argmax);
  std::optional<embag::TensorView> gw, rows, values, gpsw;
  embag::BackwardOutputs outputs;
  outputs.grad_weight = optional_view(grad_weight, "grad_weight", &gw, Access::kWrite);
  outputs.grad_weight_rows =
      optional_view(grad_weight_rows, "grad_weight_rows", &rows, Access::kWrite);
  outputs.grad_weight_values =
      optional_view(grad_weight_values, "grad_weight_values", &values, Access::kWrite);
  outputs.grad_per_sample_weights =
      optional_view(grad_per_sample_weights, "grad_per_sample_weights", &gpsw, Access::kWrite);
  const embag::Execution execution = make_execution(stream, check_indices);
  embag::Status status;
  {
    GilRelease release;
    status = embag::backward(views.inputs, outputs, options, execution);
  }
  raise_if_error(status);
}

// ---- Table-batched calls (embag/batched.h) -------------------------------------------------
//
// The Python side (embag.torch.TableBatchedEmbeddingBags) passes the tables as a list of
// capsules, with per-table pooling names and padding indices, and the feature -> table map.

// A batched call's inputs viewed from capsules, with the storage their pointers use.
struct BatchedViews {
  std::optional<embag::TensorView> psw;
  embag::BatchedInputs inputs;

  BatchedViews(nb::list weights, const std::vector<std::string>& modes,
               const std::vector<std::optional<int64_t>>& padding_idx,
               const std::vector<int64_t>& feature_table, nb::handle indices, nb::handle offsets,
               nb::handle per_sample_weights, const std::vector<int64_t>& feature_columns,
               Access weight_access) {
    const size_t tables = nb::len(weights);
    if (modes.size() != tables || padding_idx.size() != tables) {
      throw nb::value_error(("batched call: " + std::to_string(tables) + " tables, but " +
                             std::to_string(modes.size()) + " poolings and " +
                             std::to_string(padding_idx.size()) + " padding indices")
                                .c_str());
    }
    inputs.tables.resize(tables);
    for (size_t t = 0; t < tables; ++t) {
      const std::string name = "weights[" + std::to_string(t) + "]";
      inputs.tables[t].weight = view_of(weights[t], name.c_str(), weight_access,
                                        "the fused optimizer updates the tables in place");
      const std::optional<embag::Mode> mode = embag::parse_mode(modes[t]);
      if (!mode) {
        raise_rule("table " + std::to_string(t) + ": pooling has to be one of sum, mean or max, " +
                   "but got '" + modes[t] + "'");
      }
      inputs.tables[t].mode = *mode;
      inputs.tables[t].padding_idx = padding_idx[t];
    }
    inputs.feature_table = feature_table;
    inputs.indices = view_of(indices, "indices");
    inputs.offsets = view_of(offsets, "offsets");
    inputs.per_sample_weights = optional_view(per_sample_weights, "per_sample_weights", &psw);
    inputs.feature_columns = feature_columns;
  }
};

// A list of optional capsules (None: the view is left empty), viewed for writing.
std::vector<embag::TensorView> writable_views(nb::list capsules, const char* name) {
  std::vector<embag::TensorView> views(nb::len(capsules));
  for (size_t t = 0; t < views.size(); ++t) {
    if (capsules[t].is_none()) continue;
    const std::string label = std::string(name) + "[" + std::to_string(t) + "]";
    views[t] = view_of(capsules[t], label.c_str(), Access::kWrite, "this call writes it");
  }
  return views;
}

void batched_forward(nb::list weights, const std::vector<std::string>& modes,
                     const std::vector<std::optional<int64_t>>& padding_idx,
                     const std::vector<int64_t>& feature_table, nb::handle indices,
                     nb::handle offsets, nb::handle per_sample_weights,
                     const std::vector<int64_t>& feature_columns, nb::handle output) {
  BatchedViews views(weights, modes, padding_idx, feature_table, indices, offsets,
                     per_sample_weights, feature_columns, Access::kRead);
  const embag::TensorView out =
      view_of(output, "out", Access::kWrite, "the output is written into it");
  embag::Status status;
  {
    GilRelease release;
    status = embag::batched_forward(views.inputs, out);
  }
  raise_if_error(status);
}

std::vector<int64_t> batched_sparse_gradient_rows(
    nb::list weights, const std::vector<std::string>& modes,
    const std::vector<std::optional<int64_t>>& padding_idx,
    const std::vector<int64_t>& feature_table, nb::handle indices, nb::handle offsets,
    nb::handle per_sample_weights, const std::vector<int64_t>& feature_columns) {
  BatchedViews views(weights, modes, padding_idx, feature_table, indices, offsets,
                     per_sample_weights, feature_columns, Access::kRead);
  std::vector<int64_t> rows;
  embag::Status status;
  {
    GilRelease release;
    status = embag::batched_sparse_gradient_rows(views.inputs, &rows);
  }
  raise_if_error(status);
  return rows;
}

// Dense: grad_weight[t] for every table (rows and values empty lists). Sparse: rows[t] and
// values[t] for every table (grad_weight an empty list).
void batched_backward(nb::list weights, const std::vector<std::string>& modes,
                      const std::vector<std::optional<int64_t>>& padding_idx,
                      const std::vector<int64_t>& feature_table, nb::handle indices,
                      nb::handle offsets, nb::handle per_sample_weights,
                      const std::vector<int64_t>& feature_columns, nb::handle grad_output,
                      nb::list grad_weight, nb::list grad_weight_rows, nb::list grad_weight_values,
                      bool sparse) {
  BatchedViews views(weights, modes, padding_idx, feature_table, indices, offsets,
                     per_sample_weights, feature_columns, Access::kRead);
  const embag::TensorView grad = view_of(grad_output, "grad_output");
  const std::vector<embag::TensorView> dense = writable_views(grad_weight, "grad_weight");
  const std::vector<embag::TensorView> rows = writable_views(grad_weight_rows, "grad_weight_rows");
  const std::vector<embag::TensorView> values =
      writable_views(grad_weight_values, "grad_weight_values");
  const size_t tables = views.inputs.tables.size();
  if ((sparse ? rows.size() : dense.size()) != tables || (sparse && values.size() != tables)) {
    throw nb::value_error("batched_backward: one gradient per table is needed");
  }
  std::vector<embag::BatchedTableGradient> grads(tables);
  for (size_t t = 0; t < tables; ++t) {
    if (sparse) {
      grads[t].grad_weight_rows = &rows[t];
      grads[t].grad_weight_values = &values[t];
    } else {
      grads[t].grad_weight = &dense[t];
    }
  }
  embag::Status status;
  {
    GilRelease release;
    status = embag::batched_backward(views.inputs, grad, grads, sparse);
  }
  raise_if_error(status);
}

void batched_fused_backward(nb::list weights, const std::vector<std::string>& modes,
                            const std::vector<std::optional<int64_t>>& padding_idx,
                            const std::vector<int64_t>& feature_table, nb::handle indices,
                            nb::handle offsets, nb::handle per_sample_weights,
                            const std::vector<int64_t>& feature_columns, nb::handle grad_output,
                            const std::string& optimizer, double learning_rate, double eps,
                            double beta1, double beta2, double weight_decay,
                            const std::string& weight_decay_mode, int64_t step, nb::list momentum1,
                            nb::list momentum2) {
  BatchedViews views(weights, modes, padding_idx, feature_table, indices, offsets,
                     per_sample_weights, feature_columns, Access::kWrite);
  const embag::TensorView grad = view_of(grad_output, "grad_output");
  embag::OptimizerConfig config;
  const std::optional<embag::Optimizer> parsed = embag::parse_optimizer(optimizer);
  if (!parsed) {
    raise_rule("optimizer has to be one of sgd, adagrad, rowwise_adagrad or adam, but got '" +
               optimizer + "'");
  }
  config.optimizer = *parsed;
  if (weight_decay_mode == "none") {
    config.weight_decay_mode = embag::WeightDecayMode::kNone;
  } else if (weight_decay_mode == "l2") {
    config.weight_decay_mode = embag::WeightDecayMode::kL2;
  } else if (weight_decay_mode == "decoupled") {
    config.weight_decay_mode = embag::WeightDecayMode::kDecoupled;
  } else {
    raise_rule("weight_decay_mode has to be one of none, l2 or decoupled, but got '" +
               weight_decay_mode + "'");
  }
  // (float32 hyper-parameters, as the kernels and FBGEMM's learning_rate_tensor hold them)
  config.learning_rate = static_cast<float>(learning_rate);
  config.eps = static_cast<float>(eps);
  config.beta1 = static_cast<float>(beta1);
  config.beta2 = static_cast<float>(beta2);
  config.weight_decay = static_cast<float>(weight_decay);
  config.step = step;
  const std::vector<embag::TensorView> m1 = writable_views(momentum1, "momentum1");
  const std::vector<embag::TensorView> m2 = writable_views(momentum2, "momentum2");
  const size_t tables = views.inputs.tables.size();
  if (m1.size() != tables || m2.size() != tables) {
    throw nb::value_error(
        "batched_fused_backward: one momentum1 and momentum2 entry per table "
        "is needed (None where the optimizer keeps none)");
  }
  std::vector<embag::OptimizerState> state(tables);
  for (size_t t = 0; t < tables; ++t) {
    state[t].momentum1 = m1[t];
    state[t].momentum2 = m2[t];
  }
  embag::Status status;
  {
    GilRelease release;
    status = embag::batched_fused_backward(views.inputs, grad, config, state);
  }
  raise_if_error(status);
}

std::vector<std::string> isa_names(const std::vector<embag::Isa>& isas) {
  std::vector<std::string> names;
  for (embag::Isa isa : isas) names.emplace_back(embag::isa_name(isa));
  return names;
}

void set_isa(std::optional<std::string> name) {
  std::optional<embag::Isa> isa;
  if (name) {
    isa = embag::parse_isa(*name);
    if (!isa) {
      std::string known;
      for (embag::Isa k : embag::known_isas())
        known += (known.empty() ? "" : ", ") + std::string(embag::isa_name(k));
      throw nb::value_error(("unknown ISA '" + *name + "' (known: " + known + ")").c_str());
    }
  }
  raise_if_error(embag::set_isa(isa));
}

std::string selected_isa() {
  embag::Isa isa{};
  raise_if_error(embag::selected_isa(&isa));
  return embag::isa_name(isa);
}

nb::list compiled_variants() {
  nb::list variants;
  for (const embag::VariantInfo& v : embag::compiled_variants()) {
    nb::dict row;
    row["name"] = v.name;
    row["pipeline"] = v.pipeline;
    row["mode"] = v.mode;
    // (None for pipelines without that dimension, such as the GPU planning kernels)
    row["weight_dtype"] =
        v.weight_dtype ? nb::object(nb::str(embag::dtype_name(*v.weight_dtype))) : nb::none();
    row["index_dtype"] =
        v.index_dtype ? nb::object(nb::str(embag::dtype_name(*v.index_dtype))) : nb::none();
    row["device"] = embag::device_type_name(v.device);
    row["isa"] = embag::isa_name(v.isa);
    row["target"] = v.target;
    row["schedule"] = v.schedule;
    row["schedule_source"] = v.schedule_source;
    row["dim_min"] = v.dim_min;
    row["dim_max"] = v.dim_max;
    row["table_class"] = v.table_class;
    row["quant_codec"] = v.quant_codec;
    variants.append(row);
  }
  return variants;
}

}  // namespace

NB_MODULE(_embag, m) {
  m.doc() = "embag's native extension; use the `embag` package, not this module.";
  nb::exception<UnsupportedError>(m, "UnsupportedError", PyExc_RuntimeError);
  // Two bases, which nb::exception cannot express; the module owns the references.
  g_rule_error = PyErr_NewException(
      "embag._embag.EmbeddingBagError",
      nb::make_tuple(nb::handle(PyExc_RuntimeError), nb::handle(PyExc_ValueError)).ptr(), nullptr);
  g_not_implemented_error = PyErr_NewException(
      "embag._embag.EmbeddingBagNotImplementedError",
      nb::make_tuple(nb::handle(g_rule_error), nb::handle(PyExc_NotImplementedError)).ptr(),
      nullptr);
  if (g_rule_error == nullptr || g_not_implemented_error == nullptr) throw nb::python_error();
  m.attr("EmbeddingBagError") = nb::borrow(g_rule_error);
  m.attr("EmbeddingBagNotImplementedError") = nb::borrow(g_not_implemented_error);
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const RuleError& e) {
      const std::string_view message(e.what());
      PyErr_SetString(message.substr(0, kNotImplementedPrefix.size()) == kNotImplementedPrefix
                          ? g_not_implemented_error
                          : g_rule_error,
                      e.what());
    }
  });

  nb::class_<embag::Options>(m, "Options")
      .def_prop_ro("mode",
                   [](const embag::Options& o) { return std::string(embag::mode_name(o.mode)); })
      .def_ro("max_norm", &embag::Options::max_norm)
      .def_ro("norm_type", &embag::Options::norm_type)
      .def_ro("scale_grad_by_freq", &embag::Options::scale_grad_by_freq)
      .def_ro("sparse", &embag::Options::sparse)
      .def_ro("include_last_offset", &embag::Options::include_last_offset)
      .def_ro("padding_idx", &embag::Options::padding_idx);

  m.def("make_options", &make_options, nb::arg("mode"), nb::arg("max_norm").none(),
        nb::arg("norm_type"), nb::arg("scale_grad_by_freq"), nb::arg("sparse"),
        nb::arg("include_last_offset"), nb::arg("padding_idx").none());
  m.def("num_bags", &num_bags, nb::arg("input"), nb::arg("offsets").none(),
        nb::arg("include_last_offset"));
  m.def("forward", &forward, nb::arg("weight"), nb::arg("input"), nb::arg("offsets").none(),
        nb::arg("per_sample_weights").none(), nb::arg("output"), nb::arg("bag_count").none(),
        nb::arg("argmax").none(), nb::arg("options"), nb::arg("stream"), nb::arg("check_indices"));
  m.def("quantize", &quantize, nb::arg("weight"), nb::arg("out"), nb::arg("format"),
        nb::arg("dim"));
  m.def("dequantize", &dequantize, nb::arg("data"), nb::arg("format"), nb::arg("dim"),
        nb::arg("out"));
  m.def("forward_quantized", &forward_quantized, nb::arg("data"), nb::arg("format"), nb::arg("dim"),
        nb::arg("input"), nb::arg("offsets").none(), nb::arg("per_sample_weights").none(),
        nb::arg("output"), nb::arg("bag_count").none(), nb::arg("argmax").none(),
        nb::arg("options"));
  m.def("quantized_row_bytes", &quantized_row_bytes, nb::arg("format"), nb::arg("dim"));
  m.def("sparse_gradient_rows", &sparse_gradient_rows, nb::arg("grad_output"), nb::arg("weight"),
        nb::arg("input"), nb::arg("offsets").none(), nb::arg("per_sample_weights").none(),
        nb::arg("argmax").none(), nb::arg("options"), nb::arg("stream"), nb::arg("check_indices"));
  m.def("backward", &backward, nb::arg("grad_output"), nb::arg("weight"), nb::arg("input"),
        nb::arg("offsets").none(), nb::arg("per_sample_weights").none(), nb::arg("argmax").none(),
        nb::arg("grad_weight").none(), nb::arg("grad_weight_rows").none(),
        nb::arg("grad_weight_values").none(), nb::arg("grad_per_sample_weights").none(),
        nb::arg("options"), nb::arg("stream"), nb::arg("check_indices"));

  m.def("batched_forward", &batched_forward, nb::arg("weights"), nb::arg("modes"),
        nb::arg("padding_idx"), nb::arg("feature_table"), nb::arg("indices"), nb::arg("offsets"),
        nb::arg("per_sample_weights").none(), nb::arg("feature_columns"), nb::arg("output"));
  m.def("batched_sparse_gradient_rows", &batched_sparse_gradient_rows, nb::arg("weights"),
        nb::arg("modes"), nb::arg("padding_idx"), nb::arg("feature_table"), nb::arg("indices"),
        nb::arg("offsets"), nb::arg("per_sample_weights").none(), nb::arg("feature_columns"));
  m.def("batched_backward", &batched_backward, nb::arg("weights"), nb::arg("modes"),
        nb::arg("padding_idx"), nb::arg("feature_table"), nb::arg("indices"), nb::arg("offsets"),
        nb::arg("per_sample_weights").none(), nb::arg("feature_columns"), nb::arg("grad_output"),
        nb::arg("grad_weight"), nb::arg("grad_weight_rows"), nb::arg("grad_weight_values"),
        nb::arg("sparse"));
  m.def("batched_fused_backward", &batched_fused_backward, nb::arg("weights"), nb::arg("modes"),
        nb::arg("padding_idx"), nb::arg("feature_table"), nb::arg("indices"), nb::arg("offsets"),
        nb::arg("per_sample_weights").none(), nb::arg("feature_columns"), nb::arg("grad_output"),
        nb::arg("optimizer"), nb::arg("learning_rate"), nb::arg("eps"), nb::arg("beta1"),
        nb::arg("beta2"), nb::arg("weight_decay"), nb::arg("weight_decay_mode"), nb::arg("step"),
        nb::arg("momentum1"), nb::arg("momentum2"));

  m.def("set_isa", &set_isa, nb::arg("name").none());
  m.def("selected_isa", &selected_isa);
  m.def("compiled_isas", [] { return isa_names(embag::compiled_isas()); });
  m.def("supported_isas", [] { return isa_names(embag::supported_isas()); });
  m.def("cpu_features", &embag::cpu_features);
  m.def("cuda_status", [] {
    // Loading the CUDA driver can take a while; other Python threads may run meanwhile.
    GilRelease release;
    return embag::cuda_status();
  });
  m.def("compiled_variants", &compiled_variants);
  m.def("last_variant", [] { return embag::last_variant(); });
  m.def(
      "set_num_threads",
      [](int n) {
        embag::Status status;
        {
          // Starting threads can take a while; other Python threads may run meanwhile.
          GilRelease release;
          status = embag::set_num_threads(n);
        }
        raise_if_error(status);
      },
      nb::arg("n"));
  m.def("num_threads", &embag::num_threads);
  m.def("max_num_threads", &embag::max_num_threads);
}
