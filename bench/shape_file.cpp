// Parser for the plain-text shape files described in shape_file.h.
#include "shape_file.h"

#include <charconv>
#include <fstream>
#include <sstream>

namespace embag::bench {
namespace {

std::string trim(const std::string& s) {
  const char* space = " \t\r\n";
  const size_t first = s.find_first_not_of(space);
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(space) - first + 1);
}

Status error_at(const std::string& name, int line, const std::string& message) {
  return Status(StatusCode::kInvalidArgument, name + ":" + std::to_string(line) + ": " + message);
}

// A whole-field decimal integer in [min, max]; anything else ("1e6", "64x", "") is an error.
Status parse_int(const std::string& field, const char* what, int64_t min, int64_t max,
                 const std::string& name, int line, int64_t* value) {
  const char* end = field.data() + field.size();
  const auto [ptr, ec] = std::from_chars(field.data(), end, *value);
  if (ec == std::errc::result_out_of_range) {
    return error_at(name, line, std::string(what) + " is out of range: " + field);
  }
  if (field.empty() || ec != std::errc() || ptr != end) {
    return error_at(name, line,
                    std::string(what) + " must be a decimal integer, but got '" + field + "'");
  }
  if (*value < min || *value > max) {
    return error_at(name, line,
                    std::string(what) + " must be in [" + std::to_string(min) + ", " +
                        std::to_string(max) + "], but got " + field);
  }
  return Status::Ok();
}

}  // namespace

const char* distribution_name(Distribution distribution) {
  switch (distribution) {
    case Distribution::kUniform:
      return "uniform";
    case Distribution::kZipf:
      return "zipf";
  }
  return "?";
}

Status parse_shapes(const std::string& text, const std::string& name, std::vector<Shape>* shapes) {
  // Generous bounds that still keep rows * dim and bags * pooling far from int64 overflow.
  constexpr int64_t kMaxRows = int64_t{1} << 40;
  constexpr int64_t kMaxDim = int64_t{1} << 20;
  constexpr int64_t kMaxBags = int64_t{1} << 32;
  constexpr int64_t kMaxPooling = int64_t{1} << 24;

  std::vector<Shape> parsed;
  std::istringstream in(text);
  std::string raw;
  for (int line = 1; std::getline(in, raw); ++line) {
    const std::string content = trim(raw.substr(0, raw.find('#')));
    if (content.empty()) continue;

    std::vector<std::string> fields;
    std::istringstream cells(content);
    for (std::string cell; std::getline(cells, cell, ',');) fields.push_back(trim(cell));
    // getline drops an empty last field; keep it so "1,2,3,4," counts 5 fields, one empty.
    if (content.back() == ',') fields.push_back("");
    if (fields.size() != 5 && fields.size() != 6) {
      return error_at(name, line,
                      "expected 5 or 6 comma-separated fields "
                      "rows,dim,bags,pooling,distribution[,dtype], but got " +
                          std::to_string(fields.size()) + " in '" + content + "'");
    }

    Shape shape;
    shape.line = line;
    Status status = parse_int(fields[0], "rows", 1, kMaxRows, name, line, &shape.rows);
    if (status.ok()) status = parse_int(fields[1], "dim", 1, kMaxDim, name, line, &shape.dim);
    if (status.ok()) status = parse_int(fields[2], "bags", 1, kMaxBags, name, line, &shape.bags);
    if (status.ok()) {
      status = parse_int(fields[3], "pooling", 0, kMaxPooling, name, line, &shape.pooling);
    }
    if (!status.ok()) return status;

    if (fields[4] == "uniform") {
      shape.distribution = Distribution::kUniform;
    } else if (fields[4] == "zipf") {
      shape.distribution = Distribution::kZipf;
    } else {
      return error_at(name, line,
                      "distribution must be 'uniform' or 'zipf', but got '" + fields[4] + "'");
    }
    if (fields.size() == 6) {
      static const std::pair<const char*, DType> kDtypes[] = {{"f32", DType::kFloat32},
                                                              {"f64", DType::kFloat64},
                                                              {"f16", DType::kFloat16},
                                                              {"bf16", DType::kBFloat16}};
      bool known = false;
      for (const auto& [dtype_text, dtype] : kDtypes) {
        if (fields[5] == dtype_text) {
          shape.dtype = dtype;
          known = true;
        }
      }
      if (!known) {
        return error_at(name, line,
                        "dtype must be 'f32', 'f64', 'f16' or 'bf16', but got '" + fields[5] + "'");
      }
    }
    parsed.push_back(shape);
  }
  if (parsed.empty()) {
    return Status(StatusCode::kInvalidArgument,
                  name + ": no shapes (every line is blank or a comment)");
  }
  *shapes = std::move(parsed);
  return Status::Ok();
}

Status read_shape_file(const std::string& path, std::vector<Shape>* shapes) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return Status(StatusCode::kInvalidArgument, path + ": cannot open shape file");
  std::ostringstream text;
  text << file.rdbuf();
  if (file.bad()) return Status(StatusCode::kInvalidArgument, path + ": read error");
  return parse_shapes(text.str(), path, shapes);
}

}  // namespace embag::bench
