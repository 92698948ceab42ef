// embag-tune: retunes the kernels' schedules (forward, per D bucket and table-size class, and the
// backward row fold and dense scatter) for this machine (or a board) and these shapes, and
// writes a tuning file that `cmake -DEMBAG_TUNING_FILE=...` builds from.
//
// The flow: workloads (shape files and/or the user's indices) -> a candidate set per kernel sized
// to the budget -> the host generators compile every candidate and tools/tune/runner.cpp into one
// program (the "bundle") -> the runner checks every candidate bit for bit against the default
// kernel and times them interleaved -> the results become the tuning file and a table. With
// --bundle the program is cross-compiled and left for a board; --collect reads what it wrote.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "bench_data.h"
#include "cli_args.h"
#include "embag/embag.h"
#include "npy/npy_file.h"
#include "shape_file.h"
#include "tune_plan.h"
#include "tune_results.h"

namespace {

namespace fs = std::filesystem;
using embag::Status;
using embag::StatusCode;
using embag::tune::KernelSpec;
using embag::tune::ParamSet;
using embag::tune::Workload;

constexpr char kUsage[] = R"(usage: embag-tune [workload] [what] [how long] --out TUNING.json
       embag-tune --isa neon --bundle DIR [workload] [what] [--budget 5m]
       embag-tune --collect RESULTS --out TUNING.json

Searches the kernels' schedule parameters (forward: prefetch distance, register tile width,
tasks per thread; backward: rows per task of the row fold, columns per task of the dense
scatter) for this machine and these shapes, checks every candidate bit for bit against the
default kernel, times them interleaved with the default (medians), and writes the winners to a
tuning file: configure with cmake -DEMBAG_TUNING_FILE=TUNING.json (or make TUNING=...).
Forward kernels choose per D bucket and per table-size class: workloads whose table fits the
cache-resident limit of the machine that times them (embag info's rule; on a board, the board's)
tune the cache-resident kernels, the others the memory-resident ones; a class no workload
falls in keeps its defaults. A candidate is only chosen when it is no slower than the default on
every workload (of its bucket) and faster by --margin overall; otherwise the default stays.

workload (at least one):
  --shapes F[,F]       shape files (rows,dim,bags,pooling,distribution a line; bench/shapes/)
  --indices I.npy --offsets O.npy --dim D [--rows V]
                       the user's own batch (int32/int64; offsets are bag starts, PyTorch style)
what:
  --modes sum,mean,max      pooling modes: sum, wsum (sum with per_sample_weights), mean,
                            max (with argmax, training), max_values (max without argmax:
                            inference)                                    [sum,mean,max]
  --dtypes f32              table dtypes (f32, f64, f16, bf16)
                            [the shape files' dtypes (their sixth field), else f32]
  --index-dtypes i64        index dtypes (i32, i64)                       [i64]
  --pipelines P[,P]         forward, backward_rows (the row fold of the sparse and the
                            half-precision gradients), dense_scatter (the dense float32/float64
                            gradient), for the --modes that have them (not max_values)
                                                    [forward,backward_rows,dense_scatter]
  --isa ISA                 avx512, avx2, sse41 (run here), neon, armv7 (--bundle)
                            [the best ISA of this CPU]
  --candidate "k=v k=v;..." extra forward candidates (any forward GeneratorParams), tried first
how long:
  --budget 10m         wall-clock budget for the whole run (s, m or h suffix)  [10m]
  --candidates N       at most N candidates per kernel (default: what the budget allows)
  --threads N          threads the kernels run on                       [all cores]
  --margin X           required geometric-mean gain over the default    [0.02]
  --timing-lock FILE   hold an flock on FILE while timing (shared benchmark machines)
where:
  --out FILE           the tuning file to write                          [tuning.json]
  --work DIR           scratch directory (kept: build.log, results.txt)  [embag-tune-work]
  --bundle DIR         cross-compile the candidates and a static runner into DIR for a board;
                       run DIR/embag-tune-runner there, then --collect its results
  --collect RESULTS    turn a runner's results file into the tuning file
  --generators PATH, --cxx COMPILER, --jobs N   (defaults from the build)
)";

// Exit 2 for a wrong command line, 1 for data, files, tools or kernels that failed (as `embag`).
int fail(const std::string& message, int status = 1) {
  std::cerr << "embag-tune: error: " << message << "\n";
  return status;
}
int usage(const std::string& message) { return fail(message, 2); }

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, sep))
    if (!part.empty()) parts.push_back(part);
  return parts;
}

// "90", "90s", "10m", "1.5h" -> seconds.
Status parse_budget(const std::string& text, double* seconds) {
  double scale = 1;
  std::string number = text;
  if (!text.empty() && (text.back() == 's' || text.back() == 'm' || text.back() == 'h')) {
    scale = text.back() == 'h' ? 3600 : text.back() == 'm' ? 60 : 1;
    number.pop_back();
  }
  double value = 0;
  Status s = embag::cli::parse_double("--budget", number, &value);
  if (!s.ok() || !(value > 0))
    return Status(
        StatusCode::kInvalidArgument,
        "--budget must be a positive duration such as 90s, 10m or 1h, but got '" + text + "'");
  *seconds = value * scale;
  return Status::Ok();
}

// The Halide target for each ISA, as cmake/EmbagKernels.cmake defines it (CMake passes them in as
// "isa=target,isa=target").
std::map<std::string, std::string> isa_targets() {
  std::map<std::string, std::string> targets;
  for (const std::string& pair : split(EMBAG_TUNE_ISA_TARGETS, ',')) {
    const size_t eq = pair.find('=');
    if (eq != std::string::npos) targets[pair.substr(0, eq)] = pair.substr(eq + 1);
  }
  return targets;
}

// The short dtype names of the registry and the tuning file.
std::string short_dtype(embag::DType dtype) {
  switch (dtype) {
    case embag::DType::kFloat64:
      return "f64";
    case embag::DType::kFloat16:
      return "f16";
    case embag::DType::kBFloat16:
      return "bf16";
    default:
      return "f32";
  }
}

// Appends the shapes of `path` to `out`, and their table dtypes (the optional sixth field) to
// `dtypes`.
Status shape_workloads(const std::string& path, std::vector<Workload>* out,
                       std::vector<std::string>* dtypes) {
  std::vector<embag::bench::Shape> shapes;
  Status s = embag::bench::read_shape_file(path, &shapes);
  if (!s.ok()) return s;
  for (const embag::bench::Shape& shape : shapes) {
    const std::string dtype = short_dtype(shape.dtype);
    if (std::find(dtypes->begin(), dtypes->end(), dtype) == dtypes->end()) dtypes->push_back(dtype);
    Workload w;
    w.rows = shape.rows;
    w.dim = shape.dim;
    w.bags = shape.bags;
    for (int64_t b = 0; b <= shape.bags; ++b) w.offsets.push_back(b * shape.pooling);
    // The same batches bench_forward draws for this shape (seeds from the shape); several, so
    // a cold table stays cold from call to call.
    std::unique_ptr<embag::bench::ZipfSampler> zipf;
    if (shape.distribution == embag::bench::Distribution::kZipf)
      zipf = std::make_unique<embag::bench::ZipfSampler>(shape.rows, embag::bench::kZipfExponent);
    for (uint64_t k = 0; k < 4; ++k) {
      embag::bench::Rng rng(embag::bench::seed_for(shape, k + 1));
      std::vector<int64_t> batch(static_cast<size_t>(shape.bags * shape.pooling));
      for (int64_t& idx : batch) idx = zipf ? zipf->sample(rng) : rng.below(shape.rows);
      w.batches.push_back(std::move(batch));
    }
    w.description = std::to_string(shape.rows) + "x" + std::to_string(shape.dim) +
                    " B=" + std::to_string(shape.bags) + " L=" + std::to_string(shape.pooling) +
                    " " + embag::bench::distribution_name(shape.distribution);
    out->push_back(std::move(w));
  }
  return Status::Ok();
}

Status load_int_array(const std::string& flag, const std::string& path,
                      std::vector<int64_t>* values) {
  embag::npy::Array array;
  Status s = embag::npy::load(path, &array);
  if (!s.ok()) return s;
  if (array.shape.size() != 1 ||
      (array.dtype != embag::DType::kInt64 && array.dtype != embag::DType::kInt32))
    return Status(StatusCode::kInvalidArgument,
                  flag + " " + path + ": expected a 1-D int32 or int64 array");
  values->resize(static_cast<size_t>(array.numel()));
  for (size_t i = 0; i < values->size(); ++i) {
    if (array.dtype == embag::DType::kInt64) {
      (*values)[i] = reinterpret_cast<const int64_t*>(array.data.data())[i];
    } else {
      (*values)[i] = reinterpret_cast<const int32_t*>(array.data.data())[i];
    }
  }
  return Status::Ok();
}

// The user's own batch: their indices and bag boundaries as they are (so the bag lengths and the
// row frequencies are exactly theirs); the table is random, of the given size.
Status data_workload(const std::string& indices_path, const std::string& offsets_path, int64_t rows,
                     int64_t dim, Workload* w) {
  std::vector<int64_t> indices, offsets;
  Status s = load_int_array("--indices", indices_path, &indices);
  if (s.ok()) s = load_int_array("--offsets", offsets_path, &offsets);
  if (!s.ok()) return s;
  const int64_t n = static_cast<int64_t>(indices.size());
  if (offsets.empty() || offsets[0] != 0)
    return Status(StatusCode::kInvalidArgument, "--offsets must start with 0");
  for (size_t i = 1; i < offsets.size(); ++i)
    if (offsets[i] < offsets[i - 1] || offsets[i] > n)
      return Status(
          StatusCode::kInvalidArgument,
          "--offsets must be non-decreasing and at most len(indices) = " + std::to_string(n) +
              ", but offsets[" + std::to_string(i) + "] = " + std::to_string(offsets[i]));
  // PyTorch's offsets are bag starts; the kernels take bag boundaries (B + 1 of them).
  offsets.push_back(n);
  int64_t max_index = -1;
  for (const int64_t v : indices) {
    if (v < 0) return Status(StatusCode::kInvalidArgument, "--indices holds a negative index");
    max_index = std::max(max_index, v);
  }
  if (rows <= 0) rows = max_index + 1;
  if (max_index >= rows)
    return Status(StatusCode::kInvalidArgument, "--indices holds " + std::to_string(max_index) +
                                                    ", not below --rows " + std::to_string(rows));
  w->rows = std::max<int64_t>(rows, 1);
  w->dim = dim;
  w->bags = static_cast<int64_t>(offsets.size()) - 1;
  w->offsets = std::move(offsets);
  w->batches.push_back(std::move(indices));
  w->description = fs::path(indices_path).filename().string() + " " + std::to_string(w->rows) +
                   "x" + std::to_string(dim) + " B=" + std::to_string(w->bags);
  return Status::Ok();
}

// A bar redrawn in place on a terminal; in a log, a line per tenth of the way.
void progress(const char* phase, int done, int total, const std::string& what) {
  const int width = 30;
  const int filled = total ? done * width / total : width;
  const bool terminal = isatty(2) != 0;
  if (!terminal && done != total &&
      done * 10 / std::max(total, 1) == (done - 1) * 10 / std::max(total, 1))
    return;
  std::fprintf(stderr, "%s  %s [%s%s] %3d/%d %-48.48s%s", terminal ? "\r" : "", phase,
               std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(), done,
               total, what.c_str(), terminal && done != total ? "" : "\n");
  std::fflush(stderr);
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Reads the runner's results, chooses, prints the table, writes the tuning file.
int collect(const std::string& results_path, const std::string& out_path, double margin) {
  embag::tune::Results results;
  Status s = embag::tune::read_results(results_path, &results);
  if (!s.ok()) return fail(s.message());
  const std::vector<embag::tune::Choice> choices = embag::tune::choose(results, margin);
  embag::tune::print_table(std::cout, results, choices);
  const std::string staged = out_path + ".tmp";
  {
    std::ofstream out(staged);
    out << embag::tune::tuning_json(results, choices, "embag-tune " EMBAG_TUNE_VERSION);
    if (!out) return fail("cannot write " + staged);
  }
  if (std::rename(staged.c_str(), out_path.c_str()) != 0) return fail("cannot write " + out_path);
  std::cout << "\nwrote " << out_path
            << " (build with it: cmake -DEMBAG_TUNING_FILE=" << fs::absolute(out_path).string()
            << ", or make TUNING=" << out_path << ")\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const double start = now_seconds();
  const std::vector<std::string> args(argv + 1, argv + argc);
  const std::vector<embag::cli::FlagSpec> specs = {
      {"shapes", true},    {"indices", true}, {"offsets", true},     {"rows", true},
      {"dim", true},       {"modes", true},   {"dtypes", true},      {"index-dtypes", true},
      {"isa", true},       {"budget", true},  {"out", true},         {"work", true},
      {"bundle", true},    {"collect", true}, {"threads", true},     {"candidates", true},
      {"candidate", true}, {"margin", true},  {"timing-lock", true}, {"generators", true},
      {"cxx", true},       {"jobs", true},    {"pipelines", true}};
  embag::cli::ParsedFlags flags;
  Status s = embag::cli::parse_flags(args, specs, &flags);
  if (!s.ok()) return usage(s.message() + " (embag-tune --help lists the options)");
  if (flags.help()) {
    std::cout << kUsage;
    return 0;
  }
  auto text = [&](const char* name, const std::string& fallback) {
    return flags.value(name).value_or(fallback);
  };
  auto integer = [&](const char* name, int64_t fallback, int64_t* out) {
    *out = fallback;
    return flags.has(name)
               ? embag::cli::parse_int64(std::string("--") + name, *flags.value(name), out)
               : Status::Ok();
  };
  const std::string out_path = text("out", "tuning.json");
  double margin = 0.02;
  if (flags.has("margin")) {
    s = embag::cli::parse_double("--margin", *flags.value("margin"), &margin);
    if (!s.ok() || margin < 0 || margin > 1) return usage("--margin must be in [0, 1]");
  }
  if (flags.has("collect")) return collect(*flags.value("collect"), out_path, margin);

  double budget = 600;
  if (flags.has("budget")) {
    s = parse_budget(*flags.value("budget"), &budget);
    if (!s.ok()) return usage(s.message());
  }
  int64_t threads = 0, limit = 0, rows = 0, dim = 0, jobs = 0;
  for (const auto& [name, fallback, out] :
       {std::tuple<const char*, int64_t, int64_t*>{"threads", 0, &threads},
        {"candidates", 0, &limit},
        {"rows", 0, &rows},
        {"dim", 0, &dim},
        {"jobs", 0, &jobs}}) {
    s = integer(name, fallback, out);
    if (!s.ok()) return usage(s.message());
    if (*out < 0) return usage(std::string("--") + name + " must not be negative");
  }

  // The target.
  const std::map<std::string, std::string> targets = isa_targets();
  std::string isa;
  if (flags.has("isa")) {
    isa = *flags.value("isa");
  } else {
    for (const embag::Isa candidate : embag::supported_isas()) {
      if (embag::isa_device(candidate) == embag::DeviceType::kCPU) {
        isa = embag::isa_name(candidate);
        break;
      }
    }
  }
  if (targets.count(isa) == 0) {
    std::string known;
    for (const auto& [name, target] : targets) known += (known.empty() ? "" : ", ") + name;
    return usage("--isa: unknown ISA '" + isa + "' (known: " + known + ")");
  }
  const bool bundle_only = flags.has("bundle");
  if (!bundle_only) {
    bool runnable = false;
    for (const embag::Isa here : embag::supported_isas()) runnable |= isa == embag::isa_name(here);
    if (!runnable)
      return fail("this CPU cannot run " + isa + " kernels: tune on the target with --bundle DIR");
  }

  // The workloads.
  std::vector<Workload> workloads;
  std::vector<std::string> shape_dtypes;
  for (const std::string& path : split(text("shapes", ""), ',')) {
    s = shape_workloads(path, &workloads, &shape_dtypes);
    if (!s.ok()) return fail(s.message());
  }
  if (flags.has("indices") != flags.has("offsets"))
    return usage("--indices and --offsets go together");
  if (flags.has("indices")) {
    if (dim <= 0) return usage("--indices needs --dim (the embedding dimension to tune for)");
    Workload w;
    s = data_workload(*flags.value("indices"), *flags.value("offsets"), rows, dim, &w);
    if (!s.ok()) return fail(s.message());
    workloads.push_back(std::move(w));
  }
  if (workloads.empty()) return usage("no workload: give --shapes FILE and/or --indices/--offsets");

  // The kernels: forward ones first, then the backward kernels of the same modes and dtypes.
  std::vector<std::string> pipelines =
      split(text("pipelines", "forward,backward_rows,dense_scatter"), ',');
  for (const std::string& p : pipelines)
    if (p != "forward" && p != "backward_rows" && p != "dense_scatter")
      return usage("--pipelines: unknown pipeline '" + p +
                   "' (forward, backward_rows, dense_scatter)");
  auto wanted = [&](const char* p) {
    return std::find(pipelines.begin(), pipelines.end(), p) != pipelines.end();
  };
  std::vector<KernelSpec> kernels;
  for (const std::string& mode : split(text("modes", "sum,mean,max"), ','))
    for (const std::string& w : flags.has("dtypes") || shape_dtypes.empty()
                                    ? split(text("dtypes", "f32"), ',')
                                    : shape_dtypes)
      for (const std::string& i : split(text("index-dtypes", "i64"), ',')) {
        if (mode != "sum" && mode != "wsum" && mode != "mean" && mode != "max" &&
            mode != "max_values")
          return usage("--modes: unknown mode '" + mode + "' (sum, wsum, mean, max, max_values)");
        if (w != "f32" && w != "f64" && w != "f16" && w != "bf16")
          return usage("--dtypes: unknown dtype '" + w + "' (f32, f64, f16, bf16)");
        if (i != "i32" && i != "i64")
          return usage("--index-dtypes: unknown dtype '" + i + "' (i32, i64)");
        if (wanted("forward")) kernels.push_back(KernelSpec{mode, w, i, "forward"});
      }
  std::vector<KernelSpec> backward;
  auto add_backward = [&](KernelSpec k) {
    for (const KernelSpec& have : backward)
      if (have.label() == k.label()) return;
    backward.push_back(std::move(k));
  };
  for (const std::string& mode : split(text("modes", "sum,mean,max"), ','))
    for (const std::string& w : flags.has("dtypes") || shape_dtypes.empty()
                                    ? split(text("dtypes", "f32"), ',')
                                    : shape_dtypes)
      for (const std::string& i : split(text("index-dtypes", "i64"), ',')) {
        if (mode == "max_values") continue;  // inference only: no backward
        if (wanted("backward_rows")) add_backward(KernelSpec{mode, w, "", "backward_rows"});
        if (wanted("dense_scatter") && (w == "f32" || w == "f64"))
          add_backward(KernelSpec{mode, w, mode == "max" ? "" : i, "dense_scatter"});
      }
  kernels.insert(kernels.end(), backward.begin(), backward.end());
  if (kernels.empty()) return fail("no kernel to tune (--modes / --dtypes are empty)");
  std::vector<ParamSet> user;
  for (const std::string& set : split(text("candidate", ""), ';')) {
    ParamSet p;
    std::istringstream words(set);
    std::string word;
    while (words >> word) {
      if (word.find('=') == std::string::npos || word.front() == '=')
        return usage("--candidate: '" + word + "' is not name=value");
      p.push_back(word);
    }
    if (!p.empty()) user.push_back(p);
  }

  // The toolchain.
  embag::tune::Toolchain tc;
  tc.generators = text("generators", EMBAG_TUNE_GENERATORS);
  tc.halide_include = EMBAG_TUNE_HALIDE_INCLUDE;
  tc.runner_source = EMBAG_TUNE_RUNNER_SOURCE;
  tc.source_dir = EMBAG_TUNE_SOURCE_DIR;
  tc.isa = isa;
  const bool is_32_bit = targets.at(isa).find("-32-") != std::string::npos;
  tc.target = targets.at(isa) + "-user_context" + (is_32_bit ? "" : "-large_buffers");
  tc.embag_version = EMBAG_TUNE_VERSION;
  tc.halide_version = EMBAG_TUNE_HALIDE_VERSION;
  tc.cmake = EMBAG_TUNE_CMAKE;
  tc.prefetch_hint = EMBAG_TUNE_PREFETCH_HINT;
  tc.hint_script = EMBAG_TUNE_PREFETCH_HINT_SCRIPT;
  const bool cross = targets.at(isa).rfind(EMBAG_TUNE_HOST_PLATFORM, 0) != 0;
  tc.cxx = text("cxx", cross ? (is_32_bit ? "arm-linux-gnueabihf-g++" : "aarch64-linux-gnu-g++")
                             : EMBAG_TUNE_CXX);
  tc.static_link = bundle_only;
  tc.jobs = jobs > 0 ? static_cast<int>(jobs)
                     : std::max(1, static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)) / 2);
  if (cross && !bundle_only) return fail(isa + " is not this machine's architecture: use --bundle");

  // How many candidates the budget allows: one generator run is timed first (about a second on
  // a desktop core), and compiling may take a third of the budget; the rest is for timing. A
  // bundle's budget is the board's timing time, so there compiling is not limited.
  const std::string work = bundle_only ? *flags.value("bundle") : text("work", "embag-tune-work");
  std::error_code ec;
  fs::create_directories(work, ec);
  if (ec) return fail("cannot create " + work + ": " + ec.message());
  size_t per_kernel = limit > 0 ? static_cast<size_t>(limit) : 64;
  if (!bundle_only && limit == 0) {
    const double t0 = now_seconds();
    const std::string probe_log = (fs::path(work) / "probe.log").string();
    const int rc = embag::tune::run_command(
        {tc.generators, "-g", "embag_forward", "-f", "tune_probe", "-e", "object", "-o", work,
         "target=" + tc.target + "-no_runtime", "mode=sum"},
        probe_log);
    if (rc != 0) return fail("the generator " + tc.generators + " failed; see " + probe_log);
    const double per_run = std::max(now_seconds() - t0, 0.05);
    // Generator runs the compile third of the budget allows. Every kernel needs two (its
    // default and one candidate) to be tuned at all; when the budget cannot give that to every
    // kernel, the forward kernels come first and the backward ones are left out, saying so,
    // rather than run past the budget.
    const double slots = budget / 3 / (per_run / tc.jobs);
    const size_t forward_kernels =
        static_cast<size_t>(std::count_if(kernels.begin(), kernels.end(), [](const KernelSpec& k) {
          return k.pipeline == "forward";
        }));
    if (forward_kernels < kernels.size() && forward_kernels > 0 &&
        slots < 2.0 * static_cast<double>(kernels.size())) {
      std::cerr << "embag-tune: a " << budget << " s budget compiles about "
                << static_cast<int>(slots) << " candidate(s): too few for "
                << kernels.size() - forward_kernels << " backward kernel(s) beside "
                << forward_kernels << " forward one(s); tuning the forward kernels only (give "
                << "--budget " << static_cast<int>(2.0 * kernels.size() * 3 * per_run / tc.jobs) + 1
                << "s or more, or --pipelines backward_rows,dense_scatter)\n";
      kernels.resize(forward_kernels);
    }
    per_kernel = static_cast<size_t>(
        std::max(2.0, budget / 3 / (per_run * static_cast<double>(kernels.size()) / tc.jobs)));
  }
  std::vector<std::vector<ParamSet>> candidates;
  size_t total_candidates = 0;
  for (const KernelSpec& k : kernels) {
    candidates.push_back(embag::tune::candidate_space(
        k, isa, k.pipeline == "forward" ? user : std::vector<ParamSet>{}, per_kernel));
    total_candidates += candidates.back().size();
  }
  std::cerr << "embag-tune: " << kernels.size() << " kernel(s) x " << workloads.size()
            << " workload(s) on " << isa << ", " << total_candidates << " candidate(s), budget "
            << budget << " s\n";

  const double elapsed_before = now_seconds() - start;
  tc.seconds = bundle_only ? budget : 30;
  s = embag::tune::build_bundle(
      work, tc, workloads, kernels, candidates,
      [](int done, int total, const std::string& what) { progress("compile", done, total, what); });
  if (!s.ok()) return fail(s.message());
  const std::string runner = (fs::path(work) / "embag-tune-runner").string();
  if (bundle_only) {
    std::cout << "bundle ready in " << work << " (" << total_candidates << " candidates, built in "
              << static_cast<int>(now_seconds() - start - elapsed_before) << " s). On the board:\n"
              << "  ./embag-tune-runner --seconds " << budget
              << " --out results.txt   (in the copied directory)\n"
              << "then here:\n  embag-tune --collect results.txt --out " << out_path << "\n";
    return 0;
  }

  // Time: what is left of the budget, less a small reserve for writing the results.
  const double left = budget - (now_seconds() - start);
  const double timing = std::max(left * 0.95 - 1, 2.0);
  int lock_fd = -1;
  if (flags.has("timing-lock")) {
    lock_fd = open(flags.value("timing-lock")->c_str(), O_RDWR | O_CREAT, 0666);
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX) != 0)
      return fail("cannot lock " + *flags.value("timing-lock"));
  }
  const std::string results = (fs::path(work) / "results.txt").string();
  std::vector<std::string> run = {runner, "--seconds", std::to_string(timing), "--out", results};
  if (threads > 0) run.insert(run.end(), {"--threads", std::to_string(threads)});
  const int rc = embag::tune::run_command(run, "", /*low_priority=*/false);
  if (lock_fd >= 0) close(lock_fd);
  if (rc != 0) return fail("the runner failed (exit " + std::to_string(rc) + ")");
  const int status = collect(results, out_path, margin);
  std::cout << "total time " << static_cast<int>(now_seconds() - start + 0.5) << " s of a "
            << budget << " s budget\n";
  return status;
}
