// `embag forward`: embedding_bag on arrays stored as .npy files.
//
// Everything is loaded and validated before anything is written, and the outputs are written
// only after the kernel succeeded, all of them or none: a failed run leaves no output file and
// never touches the weight file (max_norm renormalises the in-memory copy only).
#include <algorithm>
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cli_args.h"
#include "cli_commands.h"
#include "cli_files.h"
#include "embag/embag.h"
#include "gpu_mirror.h"
#include "npy/npy_file.h"

namespace embag::cli {
namespace {

constexpr char kUsage[] =
    R"(usage: embag forward --weight W.npy --input I.npy [options] --output OUT.npy

Computes torch.nn.functional.embedding_bag(input, weight, ...) and writes the (B, D) result,
in the weight's dtype.

required:
  --weight W.npy              (V, D) table: float32, float64 or float16; with --format, a
                              quantized table ((V, row bytes) uint8, e.g. from embag quantize
                              or torch's embedding_bag_byte_prepack): the output is float32
  --input I.npy               indices: (N) with --offsets, or (B, L) one bag per row; int32/int64
  --output OUT.npy            where the result goes

options:
  --format FORMAT             --weight is quantized: int8, int4, int2, tbe_int8, tbe_int4,
                              tbe_int2, fp8_e4m3fn, fp8_e5m2, hfp8 (docs/quantized.md)
  --dim D                     a quantized table's D (default: what fills a row, e.g. the row's
                              bytes - 8 for int8; needed for padded rows or odd 4-bit D)
  --offsets O.npy             1-D int32/int64: where each bag starts in a 1-D --input
  --per-sample-weights P.npy  one weight per index (--input's shape, weight's dtype); mode sum
  --mode sum|mean|max         how a bag is reduced (default: mean, as in PyTorch)
  --padding-idx N             index skipped in every bag; negative counts from the end
  --max-norm X                first rescale each referenced row whose norm exceeds X
  --norm-type P               p of that norm; 'inf' means max |x| (default: 2)
  --include-last-offset       --offsets has B+1 entries; the last one ends the last bag
  --device cpu|cuda|opencl    where to run (default cpu); a GPU run copies the arrays there and
                              the results back (opencl: any OpenCL device, e.g. POCL)
  --weight-output W2.npy      also write the table as the kernel saw it (after --max-norm)
  -h, --help                  print this help

W.npy is never modified. On any error nothing is written; the exit status is 2 for a wrong
command line and 1 for anything else (unreadable or invalid data).
)";

const std::vector<FlagSpec> kFlags = {
    {"weight", true},
    {"input", true},
    {"offsets", true},
    {"per-sample-weights", true},
    {"mode", true},
    {"padding-idx", true},
    {"max-norm", true},
    {"norm-type", true},
    {"include-last-offset", false},
    {"device", true},
    {"output", true},
    {"weight-output", true},
    {"format", true},
    {"dim", true},
};

// Everything the command line asks for, checked for form but not yet loaded.
struct ForwardRequest {
  std::string weight_path;
  std::string input_path;
  std::optional<std::string> offsets_path;
  std::optional<std::string> per_sample_weights_path;
  std::string output_path;
  std::optional<std::string> weight_output_path;
  Options options;
  DeviceType device = DeviceType::kCPU;
  std::optional<QuantFormat> format;  // --format: the weight is a quantized table
  std::optional<int64_t> dim;
};

Status parse_request(const ParsedFlags& flags, ForwardRequest* request) {
  for (const char* required : {"weight", "input", "output"}) {
    if (!flags.has(required)) {
      return usage_error(std::string("--") + required + " is required");
    }
  }
  request->weight_path = *flags.value("weight");
  request->input_path = *flags.value("input");
  request->output_path = *flags.value("output");
  request->offsets_path = flags.value("offsets");
  request->per_sample_weights_path = flags.value("per-sample-weights");
  request->weight_output_path = flags.value("weight-output");

  Options& options = request->options;
  if (Status status = parse_bag_options(flags, &options); !status.ok()) return status;
  if (Status status = parse_device(flags, &request->device); !status.ok()) return status;
  if (flags.has("format")) {
    QuantFormat format{};
    if (Status status = parse_format(flags, &format); !status.ok()) return status;
    request->format = format;
    if (request->weight_output_path) {
      return usage_error("--weight-output is for float tables (a quantized table is not changed)");
    }
    if (request->device != DeviceType::kCPU) {
      return usage_error("quantized tables run on the CPU only (no --device with --format)");
    }
  }
  if (const auto text = flags.value("dim")) {
    if (!request->format) return usage_error("--dim is for a quantized --weight (give --format)");
    int64_t dim = 0;
    if (Status status = parse_int64("dim", *text, &dim); !status.ok()) return status;
    request->dim = dim;
  }
  if (const auto text = flags.value("max-norm")) {
    double max_norm = 0;
    Status status = parse_double("max-norm", *text, &max_norm);
    if (!status.ok()) {
      return status;
    }
    options.max_norm = max_norm;
  }
  if (const auto text = flags.value("norm-type")) {
    Status status = parse_double("norm-type", *text, &options.norm_type);
    if (!status.ok()) {
      return status;
    }
  }

  std::vector<FlagPath> inputs = {{"--weight", request->weight_path},
                                  {"--input", request->input_path}};
  if (request->offsets_path) {
    inputs.push_back({"--offsets", *request->offsets_path});
  }
  if (request->per_sample_weights_path) {
    inputs.push_back({"--per-sample-weights", *request->per_sample_weights_path});
  }
  std::vector<FlagPath> outputs = {{"--output", request->output_path}};
  if (request->weight_output_path) {
    outputs.push_back({"--weight-output", *request->weight_output_path});
  }
  return check_output_paths(inputs, outputs);
}

int run(const ForwardRequest& request) {
  npy::Array weight;
  npy::Array input;
  npy::Array offsets;
  npy::Array per_sample_weights;
  std::vector<std::pair<const std::string*, npy::Array*>> loads = {{&request.weight_path, &weight},
                                                                   {&request.input_path, &input}};
  if (request.offsets_path) {
    loads.emplace_back(&*request.offsets_path, &offsets);
  }
  if (request.per_sample_weights_path) {
    loads.emplace_back(&*request.per_sample_weights_path, &per_sample_weights);
  }
  for (const auto& [path, array] : loads) {
    Status status = npy::load(*path, array);
    if (!status.ok()) {
      return report_error(kExitFailure, status.message());
    }
  }

  const TensorView offsets_view = view_with_true_ndim(offsets);
  const TensorView per_sample_weights_view = view_with_true_ndim(per_sample_weights);
  ForwardInputs inputs;
  QuantizedTable table;
  if (request.format) {
    // A quantized table: (V, row bytes) uint8; D from --dim or from what fills a row.
    if (!weight.bytes || weight.shape.size() != 2) {
      return report_error(kExitFailure, request.weight_path +
                                            ": --format needs a 2-D uint8 table (a quantized "
                                            "table's rows)");
    }
    const int64_t cols = weight.shape[1];
    const int bits = quant_format_bits(*request.format);
    const int64_t qparams = quantized_row_bytes(*request.format, 0);
    table = {weight.data.data(),
             *request.format,
             weight.shape[0],
             request.dim ? *request.dim : std::max<int64_t>(cols - qparams, 0) * (8 / bits),
             cols,
             {}};
    inputs.quantized_weight = &table;
  } else if (weight.bytes) {
    return report_error(kExitFailure, request.weight_path +
                                          " holds uint8 bytes: give its --format (a quantized "
                                          "table)");
  } else {
    inputs.weight = view_with_true_ndim(weight);
  }
  inputs.input = view_with_true_ndim(input);
  inputs.offsets = request.offsets_path ? &offsets_view : nullptr;
  inputs.per_sample_weights = request.per_sample_weights_path ? &per_sample_weights_view : nullptr;

  // The output's shape comes from the arguments; if they are invalid, validate() says why
  // before the (then meaningless) shape matters.
  const int64_t bags = num_bags(inputs.input, inputs.offsets, request.options);
  const int64_t dim = request.format ? table.dim : (weight.shape.size() == 2 ? weight.shape[1] : 0);
  npy::Array output = npy::make_array(request.format ? DType::kFloat32 : weight.dtype, {bags, dim});
  ForwardOutputs outputs;
  outputs.output = output.view();

  Status status = validate(inputs, outputs, request.options);
  if (status.ok()) {
    status = gpu_mirror::forward(request.device, inputs, outputs, request.options);
  }
  if (!status.ok()) {
    return report_error(kExitFailure, status.message());
  }

  std::vector<std::pair<std::string, const npy::Array*>> files = {{request.output_path, &output}};
  if (request.weight_output_path) {
    files.emplace_back(*request.weight_output_path, &weight);
  }
  return save_outputs(files);
}

}  // namespace

int run_forward(const std::vector<std::string>& args) {
  ForwardRequest request;
  return run_subcommand(
      args, kFlags, kUsage,
      std::string("usage: embag forward --weight W.npy --input I.npy [options] --output OUT.npy\n"
                  "       ('embag forward --help' lists the options)\n"),
      [&](const ParsedFlags& flags) { return parse_request(flags, &request); },
      [&] { return run(request); });
}

}  // namespace embag::cli
