// `embag demo` (what `make run` runs): one DLRM-like batch — a large float32 table, int64
// indices, fixed-size bags — generated from a fixed seed, run through embag::forward, checked
// against a plain loop written here, then timed. It shows in a few lines that the kernels are
// right and how fast the gather runs on this machine.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cli_args.h"
#include "cli_commands.h"
#include "embag/embag.h"

namespace embag::cli {
namespace {

constexpr char kUsage[] = R"(usage: embag demo [options]

Generates one DLRM-like batch (float32 table, int64 indices, 1-D input with offsets), runs
embag::forward, checks the result against a plain C++ loop, and times the call.

options:
  --rows R      table rows (default 1000000)
  --dim D       table columns (default 64)
  --bags B      bags per batch (default 2048)
  --pooling L   indices per bag (default 40)
  --mode M      sum, mean or max (default sum)
  --iters K     timed calls; the median is reported (default 20)
  --seed S      seed of the generated table and indices (default 42)
  -h, --help    print this help

Exits 1 if the check fails. EMBAG_ISA and EMBAG_NUM_THREADS choose the ISA and threads.
)";

const std::vector<FlagSpec> kFlags = {
    {"rows", true}, {"dim", true},   {"bags", true}, {"pooling", true},
    {"mode", true}, {"iters", true}, {"seed", true},
};

struct DemoConfig {
  int64_t rows = 1000000;
  int64_t dim = 64;
  int64_t bags = 2048;
  int64_t pooling = 40;
  Mode mode = Mode::kSum;
  int64_t iters = 20;
  int64_t seed = 42;
};

struct Batch {
  std::vector<float> weight;     // rows x dim
  std::vector<int64_t> indices;  // bags x pooling
  std::vector<int64_t> offsets;  // bags
};

Status parse_config(const ParsedFlags& flags, DemoConfig* config) {
  struct Count {
    const char* flag;
    int64_t* value;
    int64_t minimum;
  };
  for (const Count& count : {Count{"rows", &config->rows, 1}, Count{"dim", &config->dim, 1},
                             Count{"bags", &config->bags, 0}, Count{"pooling", &config->pooling, 0},
                             Count{"iters", &config->iters, 1}, Count{"seed", &config->seed, 0}}) {
    if (const auto text = flags.value(count.flag)) {
      Status status = parse_int64(count.flag, *text, count.value);
      if (!status.ok()) {
        return status;
      }
      if (*count.value < count.minimum) {
        return Status(
            StatusCode::kInvalidArgument,
            std::string("--") + count.flag + " must be at least " + std::to_string(count.minimum));
      }
    }
  }
  if (const auto text = flags.value("mode")) {
    const std::optional<Mode> mode = parse_mode(*text);
    if (!mode) {
      return Status(StatusCode::kInvalidArgument,
                    "--mode must be sum, mean or max, got '" + *text + "'");
    }
    config->mode = *mode;
  }
  // The table and the index list are held in memory; refuse sizes whose byte count overflows
  // rather than wrap around into a small allocation.
  const int64_t limit = std::numeric_limits<int64_t>::max() / 8;
  if (config->rows > limit / config->dim || config->bags > limit / config->dim ||
      (config->pooling > 0 && config->bags > limit / config->pooling)) {
    return Status(StatusCode::kInvalidArgument,
                  "--rows x --dim, --bags x --dim or --bags x --pooling is too large");
  }
  return Status::Ok();
}

// Values and indices come straight from the generator's bits, not through std::*_distribution,
// whose algorithms differ between standard libraries: a seed gives the same batch everywhere.
Batch generate(const DemoConfig& config) {
  std::mt19937_64 bits(static_cast<uint64_t>(config.seed));
  Batch batch;
  batch.weight.resize(static_cast<size_t>(config.rows * config.dim));
  for (float& value : batch.weight) {
    // 24 random bits: exact in float32, uniform in [-1, 1).
    value = static_cast<float>(bits() >> 40) * 0x1p-23f - 1.0f;
  }
  batch.indices.resize(static_cast<size_t>(config.bags * config.pooling));
  for (int64_t& index : batch.indices) {
    index = static_cast<int64_t>(bits() % static_cast<uint64_t>(config.rows));
  }
  batch.offsets.resize(static_cast<size_t>(config.bags));
  for (int64_t bag = 0; bag < config.bags; ++bag) {
    batch.offsets[static_cast<size_t>(bag)] = bag * config.pooling;
  }
  return batch;
}

// The plain loop the kernel must agree with: per bag, a left fold over the rows in input
// order, as SEMANTICS.md defines it (no padding, no per-sample weights in this batch).
std::vector<float> reference_forward(const DemoConfig& config, const Batch& batch) {
  const size_t dim = static_cast<size_t>(config.dim);
  std::vector<float> output(static_cast<size_t>(config.bags) * dim, 0.0f);
  for (int64_t bag = 0; bag < config.bags; ++bag) {
    float* out = &output[static_cast<size_t>(bag) * dim];
    for (int64_t position = 0; position < config.pooling; ++position) {
      const int64_t row = batch.indices[static_cast<size_t>(bag * config.pooling + position)];
      const float* values = &batch.weight[static_cast<size_t>(row) * dim];
      for (size_t d = 0; d < dim; ++d) {
        if (config.mode == Mode::kMax) {
          // The first position starts the scan; later ones win only when strictly greater.
          out[d] = position == 0 || values[d] > out[d] ? values[d] : out[d];
        } else {
          out[d] += values[d];
        }
      }
    }
    if (config.mode == Mode::kMean && config.pooling > 0) {
      for (size_t d = 0; d < dim; ++d) {
        out[d] /= static_cast<float>(config.pooling);
      }
    }
  }
  return output;
}

std::string format_double(double value, int precision) {
  std::ostringstream text;
  text << std::fixed << std::setprecision(precision) << value;
  return text.str();
}

}  // namespace

int run_demo(const std::vector<std::string>& args) {
  ParsedFlags flags;
  DemoConfig config;
  Status status = parse_flags(args, kFlags, &flags);
  if (status.ok() && flags.help()) {
    std::cout << kUsage;
    return kExitOk;
  }
  if (status.ok()) {
    status = parse_config(flags, &config);
  }
  if (!status.ok()) {
    return report_error(kExitUsage, status.message());
  }

  std::cout << "embag demo: " << config.rows << " x " << config.dim << " float32 table, "
            << config.bags << " bags x " << config.pooling << " int64 indices, mode "
            << mode_name(config.mode) << ", seed " << config.seed << "\n";
  Batch batch = generate(config);
  std::vector<float> output(static_cast<size_t>(config.bags * config.dim), 0.0f);

  ForwardInputs inputs;
  inputs.weight = make_view_2d(batch.weight.data(), DType::kFloat32, config.rows, config.dim);
  inputs.input =
      make_view_1d(batch.indices.data(), DType::kInt64, static_cast<int64_t>(batch.indices.size()));
  const TensorView offsets = make_view_1d(batch.offsets.data(), DType::kInt64, config.bags);
  inputs.offsets = &offsets;
  ForwardOutputs outputs;
  outputs.output = make_view_2d(output.data(), DType::kFloat32, config.bags, config.dim);
  Options options;
  options.mode = config.mode;

  // The checked call also warms the thread pool and the caches before timing.
  status = forward(inputs, outputs, options);
  if (!status.ok()) {
    return report_error(kExitFailure, status.message());
  }
  const std::vector<float> expected = reference_forward(config, batch);
  double max_difference = 0;
  size_t worst = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double difference = std::fabs(double{output[i]} - double{expected[i]});
    // `!(difference <= max)` also catches a NaN, which must fail the check, not vanish.
    if (!(difference <= max_difference)) {
      max_difference = difference;
      worst = i;
      if (std::isnan(difference)) {
        break;
      }
    }
  }
  // Sum and max fold in the reference's order, so they must match bit for bit. Mean may
  // legitimately divide differently (e.g. by a reciprocal); a few float32 ulps of |x| <= 1 pass.
  const double tolerance = config.mode == Mode::kMean ? 4 * 0x1p-24 : 0.0;
  const bool correct = max_difference <= tolerance;
  std::ostringstream rule;
  rule << "must be " << (tolerance == 0 ? "0" : "<= ");
  if (tolerance != 0) {
    rule << tolerance;
  }
  std::cout << "check:    max |embag - plain loop| = " << max_difference << " over "
            << expected.size() << " values (" << rule.str() << "): " << (correct ? "OK" : "WRONG")
            << "\n";
  if (!correct) {
    const size_t dim = static_cast<size_t>(config.dim);
    std::ostringstream where;
    where << std::setprecision(9) << "embag::forward disagrees with the plain loop; worst at bag "
          << worst / dim << ", column " << worst % dim << ": embag " << output[worst]
          << ", plain loop " << expected[worst];
    return report_error(kExitFailure, where.str());
  }

  std::vector<double> seconds;
  for (int64_t iteration = 0; iteration < config.iters; ++iteration) {
    const auto start = std::chrono::steady_clock::now();
    status = forward(inputs, outputs, options);
    const auto stop = std::chrono::steady_clock::now();
    if (!status.ok()) {
      return report_error(kExitFailure, status.message());
    }
    seconds.push_back(std::chrono::duration<double>(stop - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  // Useful bytes: the rows gathered, the indices and offsets read and the output written; the
  // rest of the table is never touched and does not count.
  const double bytes = static_cast<double>(config.bags) * static_cast<double>(config.pooling) *
                           static_cast<double>(config.dim) * 4 +
                       static_cast<double>(batch.indices.size() + batch.offsets.size()) * 8 +
                       static_cast<double>(output.size()) * 4;

  std::cout << "variant:  " << last_variant() << "\n"
            << "threads:  " << num_threads() << "\n"
            << "time:     " << format_double(median * 1e3, 3) << " ms per batch (median of "
            << config.iters << ")\n"
            << "traffic:  " << format_double(bytes / 1e6, 1) << " MB per batch, "
            << (median > 0 ? format_double(bytes / median / 1e9, 1) + " GB/s" : "too fast to time")
            << "\n";
  return kExitOk;
}

}  // namespace embag::cli
