// The command-line and registration scaffolding shared by bench_forward and bench_backward:
// taking their own flags (--shapes, --llc_mib) out of argv before Google Benchmark reads it,
// the cold/warm decision, the shape part of a row name, row configuration, reading the shape
// file and the closing failure report. Each program keeps its own rows and data.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_data.h"
#include "shape_file.h"

namespace embag::bench {

// Cold when the float32 table is larger than half the last-level cache.
inline bool is_cold_shape(const Shape& shape, int64_t llc_bytes) {
  return shape.rows * shape.dim * static_cast<int64_t>(dtype_size(shape.dtype)) > llc_bytes / 2;
}

// "[/dtype:T]/rows:V/dim:D/bags:B/pool:L/<dist>/<cold|warm>/threads:N", the shape part of a
// row name (the dtype only when it is not float32).
inline std::string shape_row_suffix(const Shape& s, bool cold, int threads) {
  const std::string dtype =
      s.dtype == DType::kFloat32 ? "" : std::string("/dtype:") + dtype_name(s.dtype);
  return dtype + "/rows:" + std::to_string(s.rows) + "/dim:" + std::to_string(s.dim) +
         "/bags:" + std::to_string(s.bags) + "/pool:" + std::to_string(s.pooling) + "/" +
         distribution_name(s.distribution) + (cold ? "/cold" : "/warm") +
         "/threads:" + std::to_string(threads);
}

// Wall time, because the work runs on pools: the calling thread's CPU time would hide the
// workers' share. (Google Benchmark appends "/real_time" to the names for it.)
inline void configure(benchmark::internal::Benchmark* b) {
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

inline void print_own_flags(const char* program, const char* default_shapes) {
  std::printf(
      "%s flags (the rest go to Google Benchmark):\n"
      "  --shapes=FILE   shape file, rows,dim,bags,pooling,distribution[,dtype] a line\n"
      "                  (default %s)\n"
      "  --llc_mib=N     LLC size deciding cold (table > LLC/2) or warm (default 32)\n"
      "  --huge_pages    tables (and other allocations of 2 MiB and more) on transparent huge\n"
      "                  pages (embag::advise_huge_pages), for every row alike\n\n",
      program, default_shapes);
}

// Takes --shapes, --llc_mib and --huge_pages out of argv so Google Benchmark does not reject them
// as unknown, initialises Google Benchmark with the rest and reads the shape file. On an error
// prints it (prefixed with `program`) and returns false; the caller then exits with status 1.
inline bool parse_flags_and_shapes(const char* program, const char* default_shapes, int argc,
                                   char** argv, std::string* shapes_path, int64_t* llc_bytes,
                                   std::vector<Shape>* shapes) {
  *shapes_path = default_shapes;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--shapes=", 0) == 0) {
      *shapes_path = arg.substr(9);
    } else if (arg == "--huge_pages") {
      huge_pages() = true;
    } else if (arg.rfind("--llc_mib=", 0) == 0) {
      char* end = nullptr;
      const long mib = std::strtol(arg.c_str() + 10, &end, 10);
      if (*end != '\0' || mib <= 0) {
        std::fprintf(stderr, "%s: --llc_mib wants a positive integer, got '%s'\n", program,
                     arg.c_str() + 10);
        return false;
      }
      *llc_bytes = static_cast<int64_t>(mib) << 20;
    } else {
      if (arg == "--help" || arg == "-h") print_own_flags(program, default_shapes);
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  argv[argc] = nullptr;

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return false;

  const Status status = read_shape_file(*shapes_path, shapes);
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, status.message().c_str());
    return false;
  }
  return true;
}

// The exit status after the rows ran: 1, with a line saying so, if any row failed a check.
inline int exit_status(const char* program, int failures) {
  if (failures > 0) {
    std::fprintf(stderr, "%s: %d row(s) failed (see ERROR OCCURRED above)\n", program, failures);
    return 1;
  }
  return 0;
}

}  // namespace embag::bench
