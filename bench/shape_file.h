// Plain-text shape files (benchdnn style), shared by the benchmarks and, later, the tests.
//
// One shape a line, `rows,dim,bags,pooling,distribution[,dtype]`:
//   rows          table rows V (>= 1)
//   dim           embedding dimension D (>= 1)
//   bags          bags B per call (>= 1)
//   pooling       positions per bag L (>= 0; every bag has exactly L)
//   distribution  how indices are drawn over [0, rows): uniform | zipf
//   dtype         optional table element type: f32 (the default) | f64 | f16 | bf16
// `#` starts a comment; blank lines are skipped; spaces around fields are ignored. Users add
// their production shapes here without writing code.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "embag/embag.h"

namespace embag::bench {

enum class Distribution : uint8_t { kUniform, kZipf };

// "uniform" / "zipf".
const char* distribution_name(Distribution distribution);

struct Shape {
  int64_t rows = 0;
  int64_t dim = 0;
  int64_t bags = 0;
  int64_t pooling = 0;
  Distribution distribution = Distribution::kUniform;
  DType dtype = DType::kFloat32;
  int line = 0;  // where it came from, for messages

  bool same_problem(const Shape& other) const {
    return rows == other.rows && dim == other.dim && bags == other.bags &&
           pooling == other.pooling && distribution == other.distribution && dtype == other.dtype;
  }
};

// Reads a shape file. Errors name the file and line: "bench/shapes/perf.txt:7: ...". A file
// without a single shape is an error (it is almost always a wrong path or a bad edit).
Status read_shape_file(const std::string& path, std::vector<Shape>* shapes);

// The same for text already in memory; `name` stands for the file in messages.
Status parse_shapes(const std::string& text, const std::string& name, std::vector<Shape>* shapes);

}  // namespace embag::bench
