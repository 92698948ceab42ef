// From the runner's results to a decision: reads the results file (runner.cpp writes it, on
// this machine or a board), picks per kernel the schedule to keep -- never one slower than the
// default on any workload -- and writes the tuning file and the default-vs-tuned table.
#pragma once

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "embag/status.h"

namespace embag::tune {

// One confirm-phase measurement: a schedule on one workload.
struct Measurement {
  int workload = 0;
  std::string params;  // "" for the default schedule
  int tasks_per_thread = 4;
  bool ok = true;
  double nanoseconds = 0;
  double gbps = 0;
};

struct KernelResults {
  std::string mode, weight, index;  // index "" where the kernel reads none
  std::string pipeline = "forward";
  std::vector<Measurement> confirm;
  std::vector<std::string> rejected;  // "params on workload w: why"
};

struct WorkloadInfo {
  int64_t rows = 0, dim = 0, bags = 0, positions = 0;
  std::string description;
};

struct Results {
  std::string isa, target, embag_version, halide_version, cpu;
  int threads = 0;
  double seconds = 0;
  // The cache-resident limit of the machine the runner timed on (the runtime's rule there) and
  // where it came from; -1 when the results do not say (then forward choices serve any table).
  int64_t table_limit = -1;
  std::string table_limit_source;
  std::vector<WorkloadInfo> workloads;
  std::vector<KernelResults> kernels;
};

// Reads a results file; errors name the file and line.
Status read_results(const std::string& path, Results* out);

// The largest D a bucket can reach (the last bucket of a kernel ends here).
constexpr int64_t kMaxDim = 2147483647;

// The decision for one kernel on one D bucket, and the numbers behind it (per workload of the
// bucket, same run).
struct Choice {
  std::string mode, weight, index;
  std::string pipeline = "forward";
  // The tables the choice serves: "cache-resident", "memory-resident", or "any" (backward
  // kernels, and forward ones from results that give no table limit).
  std::string table_class = "any";
  int64_t dim_min = 1, dim_max = kMaxDim;
  std::string params;  // "" keeps the default schedule
  int tasks_per_thread = 4;
  double geomean_gain = 1;
  std::vector<size_t> workloads;                 // the bucket's workloads
  std::vector<double> default_gbps, tuned_gbps;  // per workload of the bucket
  size_t rejected = 0;
};

// The class of workload `w` for kernel `k` under the results' limit: the table's bytes in the
// kernel's weight type against it, as the runtime classes a call's table.
std::string workload_class(const Results& results, const KernelResults& k, size_t w);

// Picks, per kernel, table class and D bucket (forward; backward kernels: one choice over every
// workload), the schedule with the best geometric-mean speedup among those
// that checked out on every workload of the bucket and are no slower than the default on any of
// them; it must beat the default by `margin` (0.02 = 2%) in geometric mean, otherwise the default
// is kept. Buckets: workloads grouped by D, each reaching halfway to the next tuned D (the first
// from 1, the last to kMaxDim); neighbours with the same choice merge.
std::vector<Choice> choose(const Results& results, double margin);

// The tuning file (JSON; see README "Retune for your machine" for the format).
std::string tuning_json(const Results& results, const std::vector<Choice>& choices,
                        const std::string& created_by);

// The report: one line per kernel and workload, default vs tuned GB/s and the parameters.
void print_table(std::ostream& out, const Results& results, const std::vector<Choice>& choices);

}  // namespace embag::tune
