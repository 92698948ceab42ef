// `embag backward`: the gradients of embedding_bag, from arrays stored as .npy files.
//
// Backward needs what the forward call produced (for mode max, which row won each output
// element), so the command first runs forward on the same arguments into scratch buffers, then
// backward. As with `embag forward`, everything is loaded and validated before anything is
// written, and the outputs are written only after both calls succeeded, all of them or none.
#include <cstdint>
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

constexpr char kShortUsage[] =
    "usage: embag backward --weight W.npy --input I.npy --grad-output G.npy [options]\n"
    "                      --grad-weight GW.npy\n";

constexpr char kUsage[] =
    R"(usage: embag backward --weight W.npy --input I.npy --grad-output G.npy [options]
                      --grad-weight GW.npy

Computes the gradients of torch.nn.functional.embedding_bag(input, weight, ...) given the
gradient of its (B, D) result: the gradient of the table, dense (V, D) or, with --sparse, only
the rows the bags reference; and with --per-sample-weights, the gradient of those weights.

required:
  --weight W.npy              (V, D) table the forward call read: float32, float64 or float16
  --input I.npy               indices: (N) with --offsets, or (B, L) one bag per row; int32/int64
  --grad-output G.npy         (B, D) gradient of the forward result, in the weight's dtype
  --grad-weight GW.npy        where the table's gradient goes: (V, D), or with --sparse (U, D),
                              one row per entry of --grad-weight-rows; the weight's dtype

options:
  --offsets O.npy             1-D int32/int64: where each bag starts in a 1-D --input
  --per-sample-weights P.npy  one weight per index (--input's shape, weight's dtype); mode sum
  --mode sum|mean|max         how the forward call reduced a bag (default: mean, as in PyTorch)
  --padding-idx N             index skipped in every bag (gets no gradient); negative counts
                              from the end
  --include-last-offset       --offsets has B+1 entries; the last one ends the last bag
  --device cpu|cuda|opencl    where to run (default cpu); a GPU run copies the arrays there and
                              the results back (opencl: any OpenCL device, e.g. POCL)
  --scale-grad-by-freq        divide each row's gradient by how often the bags hold the row
  --sparse                    write only the U referenced rows; needs --grad-weight-rows
  --grad-weight-rows ROWS.npy (U) int64: the strictly ascending rows of --grad-weight (--sparse)
  --grad-per-sample-weights GP.npy
                              gradient of --per-sample-weights (its shape and dtype)
  -h, --help                  print this help

No input file is modified. On any error nothing is written; the exit status is 2 for a wrong
command line and 1 for anything else (unreadable or invalid data).
)";

const std::vector<FlagSpec> kFlags = {
    {"weight", true},           {"input", true},
    {"offsets", true},          {"per-sample-weights", true},
    {"grad-output", true},      {"mode", true},
    {"padding-idx", true},      {"include-last-offset", false},
    {"device", true},           {"scale-grad-by-freq", false},
    {"sparse", false},          {"grad-weight", true},
    {"grad-weight-rows", true}, {"grad-per-sample-weights", true},
};

// Everything the command line asks for, checked for form but not yet loaded.
struct BackwardRequest {
  std::string weight_path;
  std::string input_path;
  std::optional<std::string> offsets_path;
  std::optional<std::string> per_sample_weights_path;
  std::string grad_output_path;
  std::string grad_weight_path;
  std::optional<std::string> grad_weight_rows_path;
  std::optional<std::string> grad_per_sample_weights_path;
  Options options;
  DeviceType device = DeviceType::kCPU;
};

Status parse_request(const ParsedFlags& flags, BackwardRequest* request) {
  for (const char* required : {"weight", "input", "grad-output", "grad-weight"}) {
    if (!flags.has(required)) {
      return usage_error(std::string("--") + required + " is required");
    }
  }
  request->weight_path = *flags.value("weight");
  request->input_path = *flags.value("input");
  request->grad_output_path = *flags.value("grad-output");
  request->grad_weight_path = *flags.value("grad-weight");
  request->offsets_path = flags.value("offsets");
  request->per_sample_weights_path = flags.value("per-sample-weights");
  request->grad_weight_rows_path = flags.value("grad-weight-rows");
  request->grad_per_sample_weights_path = flags.value("grad-per-sample-weights");

  Options& options = request->options;
  if (Status status = parse_bag_options(flags, &options); !status.ok()) return status;
  if (Status status = parse_device(flags, &request->device); !status.ok()) return status;
  options.scale_grad_by_freq = flags.has("scale-grad-by-freq");
  options.sparse = flags.has("sparse");

  // A sparse gradient's values are meaningless without the rows they belong to, and a rows file
  // for a dense gradient could only be empty or invented: both are mistakes worth naming. (Which
  // modes allow --sparse is the library's rule; it says so with PyTorch's message.)
  if (options.sparse && !request->grad_weight_rows_path) {
    return usage_error("--sparse needs --grad-weight-rows for the rows of --grad-weight");
  }
  if (!options.sparse && request->grad_weight_rows_path) {
    return usage_error("--grad-weight-rows is only written with --sparse");
  }
  if (request->grad_per_sample_weights_path && !request->per_sample_weights_path) {
    return usage_error("--grad-per-sample-weights needs --per-sample-weights");
  }

  std::vector<FlagPath> inputs = {{"--weight", request->weight_path},
                                  {"--input", request->input_path},
                                  {"--grad-output", request->grad_output_path}};
  if (request->offsets_path) {
    inputs.push_back({"--offsets", *request->offsets_path});
  }
  if (request->per_sample_weights_path) {
    inputs.push_back({"--per-sample-weights", *request->per_sample_weights_path});
  }
  std::vector<FlagPath> outputs = {{"--grad-weight", request->grad_weight_path}};
  if (request->grad_weight_rows_path) {
    outputs.push_back({"--grad-weight-rows", *request->grad_weight_rows_path});
  }
  if (request->grad_per_sample_weights_path) {
    outputs.push_back({"--grad-per-sample-weights", *request->grad_per_sample_weights_path});
  }
  return check_output_paths(inputs, outputs);
}

int run(const BackwardRequest& request) {
  npy::Array weight;
  npy::Array input;
  npy::Array offsets;
  npy::Array per_sample_weights;
  npy::Array grad_output;
  std::vector<std::pair<const std::string*, npy::Array*>> loads = {
      {&request.weight_path, &weight},
      {&request.input_path, &input},
      {&request.grad_output_path, &grad_output}};
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
  const Options& options = request.options;
  const TensorView offsets_view = view_with_true_ndim(offsets);
  const TensorView per_sample_weights_view = view_with_true_ndim(per_sample_weights);
  BackwardInputs inputs;
  inputs.weight = view_with_true_ndim(weight);
  inputs.input = view_with_true_ndim(input);
  inputs.offsets = request.offsets_path ? &offsets_view : nullptr;
  inputs.per_sample_weights = request.per_sample_weights_path ? &per_sample_weights_view : nullptr;
  inputs.grad_output = view_with_true_ndim(grad_output);

  // Shapes come from the arguments; if they are invalid, validation says why before the (then
  // meaningless) shapes matter.
  const bool weight_is_2d = weight.shape.size() == 2;
  const int64_t rows = weight_is_2d ? weight.shape[0] : 0;
  const int64_t dim = weight_is_2d ? weight.shape[1] : 0;

  // Only mode max needs anything from the forward call (the winning row of each output
  // element); the other modes' gradients follow from the inputs alone, so forward runs for max
  // only. Its own validation also rejects max with --sparse / --scale-grad-by-freq.
  const int64_t bags = num_bags(inputs.input, inputs.offsets, options);
  npy::Array forward_output;
  npy::Array argmax;
  TensorView argmax_view;
  if (options.mode == Mode::kMax) {
    forward_output = npy::make_array(weight.dtype, {bags, dim});
    argmax = npy::make_array(DType::kInt64, {bags, dim});
    argmax_view = argmax.view();
    ForwardInputs forward_inputs;
    forward_inputs.weight = inputs.weight;
    forward_inputs.input = inputs.input;
    forward_inputs.offsets = inputs.offsets;
    forward_inputs.per_sample_weights = inputs.per_sample_weights;
    ForwardOutputs forward_outputs;
    forward_outputs.output = forward_output.view();
    forward_outputs.argmax = &argmax_view;
    Status status = gpu_mirror::forward(request.device, forward_inputs, forward_outputs, options);
    if (!status.ok()) {
      return report_error(kExitFailure, status.message());
    }
    inputs.argmax = &argmax_view;
  }

  // A sparse gradient has one row per distinct referenced row, a count only the data gives.
  int64_t sparse_rows = 0;
  if (options.sparse) {
    Status status = gpu_mirror::sparse_gradient_rows(request.device, inputs, options, &sparse_rows);
    if (!status.ok()) {
      return report_error(kExitFailure, status.message());
    }
  }

  npy::Array grad_weight =
      npy::make_array(weight.dtype, {options.sparse ? sparse_rows : rows, dim});
  npy::Array grad_weight_rows = npy::make_array(DType::kInt64, {sparse_rows});
  // Allocated only when asked for: it is as large as the input.
  npy::Array grad_per_sample_weights;
  if (request.grad_per_sample_weights_path) {
    grad_per_sample_weights = npy::make_array(weight.dtype, input.shape);
  }
  const TensorView grad_weight_view = grad_weight.view();
  const TensorView grad_weight_rows_view = grad_weight_rows.view();
  const TensorView grad_per_sample_weights_view = view_with_true_ndim(grad_per_sample_weights);
  BackwardOutputs outputs;
  if (options.sparse) {
    outputs.grad_weight_rows = &grad_weight_rows_view;
    outputs.grad_weight_values = &grad_weight_view;
  } else {
    outputs.grad_weight = &grad_weight_view;
  }
  if (request.grad_per_sample_weights_path) {
    outputs.grad_per_sample_weights = &grad_per_sample_weights_view;
  }

  Status status = validate_backward(inputs, outputs, options);
  if (status.ok()) {
    status = gpu_mirror::backward(request.device, inputs, outputs, options);
  }
  if (!status.ok()) {
    return report_error(kExitFailure, status.message());
  }

  std::vector<std::pair<std::string, const npy::Array*>> files = {
      {request.grad_weight_path, &grad_weight}};
  if (request.grad_weight_rows_path) {
    files.emplace_back(*request.grad_weight_rows_path, &grad_weight_rows);
  }
  if (request.grad_per_sample_weights_path) {
    files.emplace_back(*request.grad_per_sample_weights_path, &grad_per_sample_weights);
  }
  return save_outputs(files);
}

}  // namespace

int run_backward(const std::vector<std::string>& args) {
  BackwardRequest request;
  return run_subcommand(
      args, kFlags, kUsage,
      std::string(kShortUsage) + "       ('embag backward --help' lists the options)\n",
      [&](const ParsedFlags& flags) { return parse_request(flags, &request); },
      [&] { return run(request); });
}

}  // namespace embag::cli
