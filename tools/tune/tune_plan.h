// What embag-tune measures and how it builds the program that measures it: the workloads (from
// shape files or the user's own indices), the kernels, the candidate schedules per kernel, and
// the bundle -- workload data, candidate objects from the host generators, the generated plan
// table and the compiled runner (tools/tune/runner.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "embag/status.h"

namespace embag::tune {

// One workload the kernels are timed on. Shape-file workloads are drawn like bench_forward's
// (same seeds, same Zipf sampler); data workloads are the user's indices and offsets verbatim.
struct Workload {
  int64_t rows = 0, dim = 0, bags = 0;
  std::vector<int64_t> offsets;               // bags + 1 entries
  std::vector<std::vector<int64_t>> batches;  // index batches (all of one length)
  std::string description;                    // "1000000x64 B=2048 L=40 uniform"
};

// A kernel family: pipeline, pooling mode and element types, in the registry's short names.
// Pipelines: forward; backward_rows (the sparse / per-row weight gradient, embag_backward_rows,
// which takes sorted int32 positions: no index dtype) and dense_scatter (the dense gradient in
// one pass, embag_dense_scatter: float32 / float64 tables; max reads the argmax: no index dtype).
struct KernelSpec {
  std::string mode;    // sum | wsum | mean | max | max_values
  std::string weight;  // f32 | f64 | f16 | bf16
  std::string index;   // i32 | i64, or "" where the kernel reads no indices
  std::string pipeline = "forward";
  // "sum f32 i64" for forward kernels (as before backward kernels were tuned), else
  // "backward_rows sum f32" / "dense_scatter sum f32 i64".
  std::string label() const {
    return (pipeline == "forward" ? "" : pipeline + " ") + mode + " " + weight +
           (index.empty() ? "" : " " + index);
  }
  std::string generator() const {
    return pipeline == "forward" ? "embag_forward" : "embag_" + pipeline;
  }
};

// A schedule: GeneratorParams beyond the defaults, "name=value" words; empty is the default.
using ParamSet = std::vector<std::string>;
std::string join_params(const ParamSet& params);

// The candidates for one kernel in the order worth trying: the default first, then the user's
// own (--candidate; forward kernels only, since their GeneratorParams are forward's), then one
// knob at a time, then pairs. Backward kernels: backward_rows' rows_per_task, dense_scatter's
// column_vectors. `limit` keeps the first `limit`.
std::vector<ParamSet> candidate_space(const KernelSpec& kernel, const std::string& isa,
                                      const std::vector<ParamSet>& user, size_t limit);

// Tasks per thread the runner tries for the best candidate; the first is the runtime's default.
std::vector<int> tasks_per_thread_values();

// Where the tools embag-tune drives live, and what it builds for.
struct Toolchain {
  std::string generators;  // the host build's embag_generators
  std::string cxx;         // compiles the runner for the target (a cross compiler for ARM)
  std::string halide_include;
  std::string runner_source;
  std::string source_dir;  // embag's sources: the runner compiles embag's thread pool in
  std::string isa;
  std::string target;  // Halide target of the ISA, with embag's kernel features
  bool static_link = false;
  int jobs = 1;
  std::string embag_version, halide_version;
  // The prefetch hint the build gives forward kernels (t0 or nta) and how: candidates for 64-bit
  // x86 and ARM are compiled to assembly, passed through `cmake -P hint_script`, and assembled by
  // `cxx`, as cmake/EmbagKernels.cmake does.
  std::string cmake, prefetch_hint, hint_script;
  double seconds = 30;  // the runner's default timing budget
};

// Builds the bundle in `dir`: data files, candidate objects, the runtime object, tune_plan.inc
// and the runner executable `embag-tune-runner`. `progress(done, total, what)` is called as
// generator runs finish. Returns the candidates actually built per kernel.
Status build_bundle(const std::string& dir, const Toolchain& toolchain,
                    const std::vector<Workload>& workloads, const std::vector<KernelSpec>& kernels,
                    const std::vector<std::vector<ParamSet>>& candidates,
                    const std::function<void(int, int, const std::string&)>& progress);

// Runs a command (argv[0] looked up on PATH) and returns its exit status (-1: could not start).
// Output goes to `log` (appended), or to this process's own stdout/stderr when `log` is empty.
// Compiles run with `low_priority`, so they never compete with a timing run for the CPU.
int run_command(const std::vector<std::string>& argv, const std::string& log,
                bool low_priority = true);

}  // namespace embag::tune
