// The search space and the bundle: see tune_plan.h.
#include "tune_plan.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

namespace embag::tune {
namespace fs = std::filesystem;

std::string join_params(const ParamSet& params) {
  std::string text;
  for (const std::string& p : params) text += (text.empty() ? "" : " ") + p;
  return text;
}

std::vector<int> tasks_per_thread_values() { return {4, 1, 2, 8, 16}; }

std::vector<ParamSet> candidate_space(const KernelSpec& kernel, const std::string& isa,
                                      const std::vector<ParamSet>& user, size_t limit) {
  if (kernel.pipeline != "forward") {
    // The backward kernels' one knob each (generators/backward_generator.cpp): rows per task of
    // the row fold (default 32: fewer for short batches with many threads, more for long ones),
    // vectors of columns per task of the dense scatter (default 1: wider tasks read the indices
    // fewer times, at the cost of parallel slack at small D).
    std::vector<ParamSet> out = {{}};
    if (kernel.pipeline == "backward_rows") {
      for (int v : {8, 128, 16, 64, 4, 256}) out.push_back({"rows_per_task=" + std::to_string(v)});
    } else {
      for (int v : {2, 4, 8}) out.push_back({"column_vectors=" + std::to_string(v)});
    }
    if (out.size() > limit) out.resize(std::max<size_t>(limit, 1));
    return out;
  }
  // The tile width the generator picks by itself (forward_generator.cpp, schedule_cpu), so the
  // search does not spend a compile and a timing slot on a copy of the default.
  int default_tile = kernel.mode == "max" || kernel.mode == "max_values" ? 4 : 8;
  if (isa == "neon" && default_tile == 8 && (kernel.weight == "f32" || kernel.weight == "f64"))
    default_tile *= 2;

  std::vector<ParamSet> out = {{}};
  std::set<std::string> seen = {""};
  auto add = [&](ParamSet p) {
    if (seen.insert(join_params(p)).second) out.push_back(std::move(p));
  };
  for (const ParamSet& p : user) add(p);
  // The cache-resident kernels' default (the build compiles them with no prefetch): timed
  // early, as the baseline that choices for warm tables are measured against.
  add({"prefetch_distance=0"});
  auto prefetch = [](int d) { return "prefetch_distance=" + std::to_string(d); };
  auto tile = [](int v) { return "max_tile_vectors=" + std::to_string(v); };
  // One knob at a time, most promising first: the prefetch distance matters most on cold
  // tables (and 0 on warm ones, where a prefetch is pure overhead), the tile width on small D
  // and for max.
  const std::vector<int> prefetches = {8, 32, 0, 24, 4, 12, 48, 64};
  std::vector<int> tiles;
  for (int v : {default_tile / 2, default_tile * 2, default_tile / 4, 1, 16, 8, 4, 2})
    if (v >= 1 && v <= 16 && v != default_tile) tiles.push_back(v);
  size_t ip = 0, it = 0;
  while (ip < prefetches.size() || it < tiles.size()) {
    if (ip < prefetches.size()) add({prefetch(prefetches[ip++])});
    if (ip < prefetches.size()) add({prefetch(prefetches[ip++])});
    if (it < tiles.size()) add({tile(tiles[it++])});
  }
  // Then pairs of the likeliest values.
  for (int p : {8, 32, 0, 24})
    for (size_t t = 0; t < std::min<size_t>(tiles.size(), 3); ++t)
      add({prefetch(p), tile(tiles[t])});
  if (out.size() > limit) out.resize(std::max<size_t>(limit, 1));
  return out;
}

int run_command(const std::vector<std::string>& argv, const std::string& log, bool low_priority) {
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    // Compiles run at the lowest priority: on a shared machine (or while an earlier timing run
    // of another tool holds the CPU) they must not skew anyone's timings.
    if (low_priority) setpriority(PRIO_PROCESS, 0, 19);
    const int fd = log.empty() ? -1 : open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

namespace {

Status write_int64s(const fs::path& path, const std::vector<int64_t>& values) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(values.data()),
            static_cast<std::streamsize>(values.size() * sizeof(int64_t)));
  if (!out) return Status(StatusCode::kInvalidArgument, "cannot write " + path.string());
  return Status::Ok();
}

std::string halide_type(const std::string& short_name) {
  if (short_name == "f32") return "float32";
  if (short_name == "f64") return "float64";
  if (short_name == "f16") return "float16";
  if (short_name == "bf16") return "bfloat16";
  if (short_name == "i32") return "int32";
  return "int64";
}

// A C string literal (descriptions and params hold no quotes or backslashes, but be safe).
std::string quoted(const std::string& s) {
  std::string q = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') q += '\\';
    q += c;
  }
  return q + "\"";
}

std::string log_tail(const std::string& log) {
  std::ifstream in(log);
  std::stringstream all;
  all << in.rdbuf();
  const std::string text = all.str();
  return text.size() > 2000 ? "..." + text.substr(text.size() - 2000) : text;
}

}  // namespace

Status build_bundle(const std::string& dir, const Toolchain& tc,
                    const std::vector<Workload>& workloads, const std::vector<KernelSpec>& kernels,
                    const std::vector<std::vector<ParamSet>>& candidates,
                    const std::function<void(int, int, const std::string&)>& progress) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status(StatusCode::kInvalidArgument, "cannot create " + dir + ": " + ec.message());
  const fs::path root(dir), objects = root / "objects";
  // Every object in it is linked into the runner: none may be left from an earlier run.
  fs::remove_all(objects, ec);
  fs::create_directories(objects, ec);
  const std::string log = (root / "build.log").string();
  std::remove(log.c_str());

  // The workloads' data, read by the runner.
  for (size_t w = 0; w < workloads.size(); ++w) {
    const std::string prefix = "workload" + std::to_string(w);
    Status s = write_int64s(root / (prefix + "_offsets.bin"), workloads[w].offsets);
    for (size_t j = 0; s.ok() && j < workloads[w].batches.size(); ++j)
      s = write_int64s(root / (prefix + "_indices" + std::to_string(j) + ".bin"),
                       workloads[w].batches[j]);
    if (!s.ok()) return s;
  }

  // Generator runs: the shared runtime, then every candidate (in parallel, `jobs` at a time).
  // A job is one or more commands run in order.
  struct Job {
    std::vector<std::vector<std::string>> steps;
    std::string what;
  };
  std::vector<Job> jobs;
  jobs.push_back({{{tc.generators, "-r", "tune_runtime", "-e", "object", "-o", objects.string(),
                    "target=" + tc.target}},
                  "Halide runtime"});
  // 64-bit x86 and ARM prefetch with a hint the build sets in the assembly (see
  // cmake/EmbagPrefetchHint.cmake); 32-bit ARM's pld has none.
  const std::string arch = tc.target.substr(0, tc.target.find('-', tc.target.find('-') + 1));
  const bool set_hint = arch == "x86-64" || arch == "arm-64";
  std::ostringstream plan;
  plan << "// Generated by embag-tune: the kernels, candidates and workloads this runner checks "
          "and times.\n";
  plan << "static const char kPlanIsa[] = " << quoted(tc.isa) << ";\n"
       << "static const char kPlanTarget[] = " << quoted(tc.target) << ";\n"
       << "static const char kPlanEmbagVersion[] = " << quoted(tc.embag_version) << ";\n"
       << "static const char kPlanHalideVersion[] = " << quoted(tc.halide_version) << ";\n"
       << "static const double kPlanSeconds = " << tc.seconds << ";\n";
  std::ostringstream decls, kernel_rows, candidate_rows;
  for (size_t k = 0; k < kernels.size(); ++k) {
    const KernelSpec& spec = kernels[k];
    kernel_rows << "    {" << quoted(spec.pipeline) << ", " << quoted(spec.mode) << ", "
                << quoted(spec.weight) << ", " << quoted(spec.index) << "},\n";
    // Only forward kernels hold software prefetches (their hint is set in the assembly).
    const bool hint = set_hint && spec.pipeline == "forward";
    for (size_t c = 0; c < candidates[k].size(); ++c) {
      const std::string fn = "tune_k" + std::to_string(k) + "_c" + std::to_string(c);
      // (the assembly is written beside the objects, not in them: every object there is linked)
      const std::string assembly = (root / (fn + ".s")).string();
      const std::string hinted = (root / (fn + ".hinted.s")).string();
      std::vector<std::string> argv = {tc.generators,
                                       "-g",
                                       spec.generator(),
                                       "-f",
                                       fn,
                                       "-e",
                                       hint ? "assembly" : "object",
                                       "-o",
                                       hint ? root.string() : objects.string(),
                                       "target=" + tc.target + "-no_runtime",
                                       "mode=" + spec.mode,
                                       "weight_type=" + halide_type(spec.weight)};
      if (!spec.index.empty()) argv.push_back("index_type=" + halide_type(spec.index));
      for (const std::string& p : candidates[k][c]) argv.push_back(p);
      Job job{{argv}, spec.label() + " [" + join_params(candidates[k][c]) + "]"};
      if (hint) {
        job.steps.push_back({tc.cmake, "-DIN=" + assembly, "-DOUT=" + hinted, "-DARCH=" + arch,
                             "-DHINT=" + tc.prefetch_hint, "-P", tc.hint_script});
        job.steps.push_back(
            {tc.cxx, "-c", "-x", "assembler", hinted, "-o", (objects / (fn + ".o")).string()});
      }
      jobs.push_back(std::move(job));
      decls << "extern \"C\" int " << fn << "_argv(void**);\n"
            << "extern \"C\" const halide_filter_metadata_t* " << fn << "_metadata();\n";
      candidate_rows << "    {" << k << ", " << quoted(join_params(candidates[k][c])) << ", &" << fn
                     << "_argv, &" << fn << "_metadata},\n";
    }
  }
  plan << decls.str() << "static const PlanKernel kPlanKernels[] = {\n"
       << kernel_rows.str() << "};\n"
       << "static const PlanCandidate kPlanCandidates[] = {\n"
       << candidate_rows.str() << "};\n"
       << "static const PlanWorkload kPlanWorkloads[] = {\n";
  for (const Workload& w : workloads) {
    plan << "    {" << w.rows << ", " << w.dim << ", " << w.bags << ", "
         << (w.batches.empty() ? 0 : w.batches[0].size()) << ", " << quoted(w.description) << ", "
         << w.batches.size() << "},\n";
  }
  plan << "};\nstatic const int kPlanTasksPerThread[] = {";
  for (int t : tasks_per_thread_values()) plan << t << ", ";
  plan << "};\n";
  {
    std::ofstream out(root / "tune_plan.inc");
    out << plan.str();
    if (!out) return Status(StatusCode::kInvalidArgument, "cannot write tune_plan.inc in " + dir);
  }

  std::atomic<size_t> next{0};
  std::atomic<int> done{0};
  std::mutex lock;
  std::string failure;
  const int total = static_cast<int>(jobs.size()) + 1;  // + the runner's compile
  auto worker = [&] {
    for (size_t i = next++; i < jobs.size(); i = next++) {
      const std::string job_log = log + "." + std::to_string(i);
      int rc = 0;
      for (size_t step = 0; rc == 0 && step < jobs[i].steps.size(); ++step) {
        {
          std::ofstream part(job_log, std::ios::app);
          part << "$ " << join_params(jobs[i].steps[step]) << "\n";
        }
        rc = run_command(jobs[i].steps[step], job_log);
      }
      std::lock_guard<std::mutex> guard(lock);
      {
        std::ifstream part(job_log);
        std::ofstream whole(log, std::ios::app);
        whole << part.rdbuf();
      }
      std::remove(job_log.c_str());
      if (rc != 0 && failure.empty())
        failure = "building " + jobs[i].what + " failed (exit " + std::to_string(rc) + ")";
      progress(++done, total, jobs[i].what);
    }
  };
  std::vector<std::thread> threads;
  for (int j = 0; j < std::max(tc.jobs, 1); ++j) threads.emplace_back(worker);
  for (std::thread& t : threads) t.join();
  if (!failure.empty())
    return Status(StatusCode::kInternal, failure + "; log " + log + ":\n" + log_tail(log));

  // The runner: one program with every candidate and embag's thread pool (its sources copied in,
  // so a bundle is complete), statically linked for a board.
  fs::copy_file(tc.runner_source, root / "runner.cpp", fs::copy_options::overwrite_existing, ec);
  const fs::path pool = root / "embag_pool";
  fs::create_directories(pool / "embag", ec);
  const fs::path src(tc.source_dir);
  for (const char* file :
       {"runtime/call_context.h", "runtime/call_context.cpp", "runtime/kernel_thread_pool.h",
        "runtime/kernel_thread_pool.cpp", "runtime/cpu_features.h", "runtime/cpu_features.cpp",
        "runtime/table_class.h", "runtime/table_class.cpp", "runtime/enum_tables.h",
        "generators/kernel_enums.h"})
    fs::copy_file(src / file, pool / fs::path(file).filename(),
                  fs::copy_options::overwrite_existing, ec);
  for (const auto& header : fs::directory_iterator(src / "include" / "embag"))
    fs::copy_file(header.path(), pool / "embag" / header.path().filename(),
                  fs::copy_options::overwrite_existing, ec);
  if (ec) return Status(StatusCode::kInternal, "cannot copy embag's pool sources: " + ec.message());
  // One translation unit of them all: the standard headers they share are parsed once, which
  // keeps the runner's compile (part of every run's budget) at what it was with three sources
  // when the table-size rule's two joined them (measured: 6.2 s of CPU against 7.8 s as five).
  {
    std::ofstream unity(root / "runner_all.cpp");
    unity << "// Generated by embag-tune: the runner and the embag sources it needs, one unit.\n";
    for (const char* file :
         {"runner.cpp", "embag_pool/call_context.cpp", "embag_pool/kernel_thread_pool.cpp",
          "embag_pool/cpu_features.cpp", "embag_pool/table_class.cpp"})
      unity << "#include \"" << file << "\"\n";
    if (!unity)
      return Status(StatusCode::kInvalidArgument, "cannot write runner_all.cpp in " + dir);
  }
  std::vector<std::string> cc = {tc.cxx,
                                 "-O2",
                                 "-std=c++17",
                                 "-Wall",
                                 "-Wextra",
                                 "-I" + tc.halide_include,
                                 "-I" + root.string(),
                                 "-I" + pool.string(),
                                 (root / "runner_all.cpp").string()};
  for (const auto& entry : fs::directory_iterator(objects))
    if (entry.path().extension() == ".o") cc.push_back(entry.path().string());
  cc.insert(cc.end(), {"-o", (root / "embag-tune-runner").string(), "-lpthread", "-ldl"});
  if (tc.static_link) cc.insert(cc.begin() + 1, "-static");
  {
    std::ofstream whole(log, std::ios::app);
    whole << "$ " << join_params(cc) << "\n";
  }
  const int rc = run_command(cc, log);
  progress(total, total, "runner");
  if (rc != 0)
    return Status(StatusCode::kInternal, "compiling the runner failed (exit " + std::to_string(rc) +
                                             "); log " + log + ":\n" + log_tail(log));
  return Status::Ok();
}

}  // namespace embag::tune
