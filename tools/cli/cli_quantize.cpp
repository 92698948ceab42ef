// `embag quantize`: a float table in a .npy file to a quantized table (uint8 .npy), with the
// bytes PyTorch's prepack ops and FBGEMM's quantizers write (include/embag/quantized.h).
//
// Everything is loaded and checked before the output is written, and the output only after
// quantize_rows succeeded: a failed run leaves no file.
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "cli_args.h"
#include "cli_commands.h"
#include "cli_files.h"
#include "embag/embag.h"
#include "npy/npy_file.h"

namespace embag::cli {
namespace {

constexpr char kUsage[] =
    R"(usage: embag quantize --weight W.npy --format FORMAT --output Q.npy

Quantizes a (V, D) float table row by row and writes the (V, row bytes) uint8 table, byte for
byte what torch.ops.quantized.embedding_bag_byte_prepack (int8), embedding_bag_4bit_prepack
(int4), embedding_bag_2bit_prepack (int2) or FBGEMM's inference TBE quantizer (tbe_int8,
tbe_int4, tbe_int2: scale and bias in front) write for it; or its 8-bit floats, one byte per
element, as torch's .to(torch.float8_e4m3fn) (fp8_e4m3fn) or .to(torch.float8_e5m2)
(fp8_e5m2) or FBGEMM's FloatToHFP8Quantized (hfp8, its TBE's SparseType.FP8) give them.
`embag forward --format FORMAT` reads the result.

required:
  --weight W.npy       (V, D) table: float32 or float16
  --format FORMAT      int8, int4, int2, tbe_int8, tbe_int4, tbe_int2, fp8_e4m3fn, fp8_e5m2
                       or hfp8
  --output Q.npy       where the quantized table goes

options:
  -h, --help           print this help

On any error nothing is written; the exit status is 2 for a wrong command line and 1 for
anything else.
)";

const std::vector<FlagSpec> kFlags = {{"weight", true}, {"format", true}, {"output", true}};

struct QuantizeRequest {
  std::string weight_path, output_path;
  QuantFormat format = QuantFormat::kInt8;
};

Status parse_request(const ParsedFlags& flags, QuantizeRequest* request) {
  for (const char* required : {"weight", "format", "output"}) {
    if (!flags.has(required)) return usage_error(std::string("--") + required + " is required");
  }
  request->weight_path = *flags.value("weight");
  request->output_path = *flags.value("output");
  if (Status s = parse_format(flags, &request->format); !s.ok()) return s;
  return check_output_paths({{"--weight", request->weight_path}},
                            {{"--output", request->output_path}});
}

int run(const QuantizeRequest& request) {
  npy::Array weight;
  if (Status s = npy::load(request.weight_path, &weight); !s.ok()) {
    return report_error(kExitFailure, s.message());
  }
  if (weight.bytes || weight.shape.size() != 2) {
    return report_error(kExitFailure, request.weight_path +
                                          ": the table to quantize must be a 2-D "
                                          "float32 or float16 array");
  }
  const int64_t rows = weight.shape[0], dim = weight.shape[1];
  const int64_t row_bytes = quantized_row_bytes(request.format, dim);
  npy::Array out;
  out.bytes = true;
  out.shape = {rows, row_bytes};
  out.data.assign(static_cast<size_t>(rows * row_bytes), 0);
  const QuantizedTable table{out.data.data(), request.format, rows, dim, row_bytes, {}};
  if (Status s = quantize_rows(view_with_true_ndim(weight), table); !s.ok()) {
    return report_error(kExitFailure, s.message());
  }
  return save_outputs({{request.output_path, &out}});
}

}  // namespace

Status parse_format(const ParsedFlags& flags, QuantFormat* format) {
  const std::optional<std::string> text = flags.value("format");
  if (!text) return Status::Ok();
  const std::optional<QuantFormat> parsed = parse_quant_format(*text);
  if (!parsed) {
    return usage_error("--format must be one of " + quant_format_names() + ", not '" + *text + "'");
  }
  *format = *parsed;
  return Status::Ok();
}

int run_quantize(const std::vector<std::string>& args) {
  QuantizeRequest request;
  return run_subcommand(
      args, kFlags, kUsage,
      "usage: embag quantize --weight W.npy --format FORMAT --output Q.npy\n"
      "       ('embag quantize --help' lists the options)\n",
      [&](const ParsedFlags& flags) { return parse_request(flags, &request); },
      [&] { return run(request); });
}

}  // namespace embag::cli
