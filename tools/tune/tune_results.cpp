// Reading the runner's results, choosing, and writing the tuning file: see tune_results.h.
#include "tune_results.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <sstream>

namespace embag::tune {
namespace {

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> fields;
  size_t start = 0;
  while (true) {
    const size_t tab = line.find('\t', start);
    fields.push_back(
        line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
    if (tab == std::string::npos) return fields;
    start = tab + 1;
  }
}

std::string unfield(const std::string& s) { return s == "-" ? "" : s; }

// JSON string escaping for the few free-text values (CPU model, descriptions).
std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string number(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

// "a=1 b=x" -> {"a": 1, "b": "x"}: integers as JSON numbers, anything else as a string.
std::string params_json(const std::string& params) {
  std::istringstream words(params);
  std::string word, out;
  while (words >> word) {
    const size_t eq = word.find('=');
    const std::string key = word.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : word.substr(eq + 1);
    const bool integer =
        !value.empty() && value.find_first_not_of("-0123456789") == std::string::npos;
    out += (out.empty() ? "" : ", ") + json_string(key) + ": " +
           (integer ? value : json_string(value));
  }
  return "{" + out + "}";
}

}  // namespace

Status read_results(const std::string& path, Results* out) {
  std::ifstream in(path);
  if (!in) return Status(StatusCode::kInvalidArgument, "cannot open results file " + path);
  std::string line;
  int number_of_line = 0;
  bool ended = false;
  auto bad = [&](const std::string& what) {
    return Status(StatusCode::kInvalidArgument,
                  path + ":" + std::to_string(number_of_line) + ": " + what);
  };
  while (std::getline(in, line)) {
    ++number_of_line;
    const std::vector<std::string> f = split_tabs(line);
    const std::string& tag = f[0];
    try {
      if (number_of_line == 1) {
        if (tag != "embag-tune-results" || f.size() < 2 || f[1] != "1")
          return bad("not an embag-tune results file (version 1)");
      } else if (tag == "isa" && f.size() == 2) {
        out->isa = f[1];
      } else if (tag == "target" && f.size() == 2) {
        out->target = f[1];
      } else if (tag == "embag_version" && f.size() == 2) {
        out->embag_version = f[1];
      } else if (tag == "halide_version" && f.size() == 2) {
        out->halide_version = f[1];
      } else if (tag == "cpu" && f.size() == 2) {
        out->cpu = f[1];
      } else if (tag == "threads" && f.size() == 2) {
        out->threads = std::stoi(f[1]);
      } else if (tag == "seconds" && f.size() == 2) {
        out->seconds = std::stod(f[1]);
      } else if (tag == "table_limit" && f.size() == 3) {
        out->table_limit = std::stoll(f[1]);
        out->table_limit_source = f[2];
      } else if (tag == "workload" && f.size() == 7) {
        out->workloads.push_back(WorkloadInfo{std::stoll(f[2]), std::stoll(f[3]), std::stoll(f[4]),
                                              std::stoll(f[5]), f[6]});
      } else if (tag == "kernel" && (f.size() == 5 || f.size() == 6)) {
        KernelResults k;
        k.mode = f[2];
        k.weight = f[3];
        k.index = f[4];
        if (f.size() == 6) k.pipeline = f[5];
        if (k.pipeline != "forward" && k.pipeline != "backward_rows" &&
            k.pipeline != "dense_scatter")
          return bad("unknown pipeline '" + k.pipeline + "'");
        out->kernels.push_back(k);
      } else if (tag == "rejected" && f.size() == 5 && !out->kernels.empty()) {
        out->kernels.back().rejected.push_back("[" + unfield(f[2]) + "] on workload " + f[3] +
                                               ": " + f[4]);
      } else if (tag == "screen" && f.size() == 5) {
        // Screening scores are informative only; the decision uses the confirm phase.
      } else if (tag == "confirm" && f.size() == 8 && !out->kernels.empty()) {
        Measurement m;
        m.workload = std::stoi(f[2]);
        m.params = unfield(f[3]);
        m.tasks_per_thread = std::stoi(f[4]);
        m.ok = f[5] == "ok";
        m.nanoseconds = std::stod(f[6]);
        m.gbps = std::stod(f[7]);
        if (m.workload < 0 || m.workload >= static_cast<int>(out->workloads.size()))
          return bad("confirm line names workload " + f[2] + ", which was not declared");
        out->kernels.back().confirm.push_back(m);
      } else if (tag == "end" && f.size() == 1) {
        ended = true;
      } else {
        return bad("unexpected line '" + line + "'");
      }
    } catch (const std::exception&) {
      return bad("a number field is not a number in '" + line + "'");
    }
  }
  if (number_of_line == 0) return Status(StatusCode::kInvalidArgument, path + ": empty file");
  if (!ended)
    return Status(StatusCode::kInvalidArgument,
                  path + ": truncated (no 'end' line): did the runner finish?");
  if (out->isa.empty() || out->embag_version.empty() || out->halide_version.empty())
    return Status(StatusCode::kInvalidArgument, path +
                                                    ": isa, embag_version or halide_version "
                                                    "missing");
  return Status::Ok();
}

namespace {

// The choice for one kernel over the workloads `subset`: the best eligible schedule, or the
// default.
Choice choose_over(const KernelResults& k, const Results& results,
                   const std::vector<size_t>& subset, double margin,
                   const std::string& baseline = "") {
  Choice choice;
  choice.mode = k.mode;
  choice.weight = k.weight;
  choice.index = k.index;
  choice.pipeline = k.pipeline;
  choice.rejected = k.rejected.size();
  choice.workloads = subset;
  const int default_tpt = 4;
  // (params, tasks per thread) -> per-workload measurement
  std::map<std::pair<std::string, int>, std::vector<const Measurement*>> by_schedule;
  for (const Measurement& m : k.confirm) {
    auto& slots = by_schedule[{m.params, m.tasks_per_thread}];
    slots.resize(results.workloads.size(), nullptr);
    slots[static_cast<size_t>(m.workload)] = &m;
  }
  // The schedule the build compiles for these tables without a tuning file: the generator's
  // defaults, or for cache-resident tables prefetch_distance=0 (`baseline`).
  choice.params = baseline;
  const auto def = by_schedule.find({baseline, default_tpt});
  for (size_t w : subset) {
    const double g = def != by_schedule.end() && def->second[w] ? def->second[w]->gbps : 0;
    choice.default_gbps.push_back(g);
    choice.tuned_gbps.push_back(g);
  }
  if (def == by_schedule.end() || subset.empty()) return choice;
  double best = 1 + margin;
  for (const auto& [schedule, slots] : by_schedule) {
    if (schedule == def->first) continue;
    bool eligible = true;
    double log_sum = 0;
    for (size_t w : subset) {
      const Measurement* m = slots[w];
      const Measurement* d = def->second[w];
      // Every workload checked and measured, and none slower than the default.
      eligible = m && d && m->ok && m->nanoseconds > 0 && m->nanoseconds <= d->nanoseconds;
      if (!eligible) break;
      log_sum += std::log(d->nanoseconds / m->nanoseconds);
    }
    if (!eligible) continue;
    const double gain = std::exp(log_sum / static_cast<double>(subset.size()));
    if (gain > best) {
      best = gain;
      choice.params = schedule.first;
      choice.tasks_per_thread = schedule.second;
      choice.geomean_gain = gain;
      for (size_t i = 0; i < subset.size(); ++i) choice.tuned_gbps[i] = slots[subset[i]]->gbps;
    }
  }
  return choice;
}

}  // namespace

namespace {

// D buckets over the workloads `subset`: grouped by D, each group choosing on its own; a bucket
// reaches halfway to the next tuned D, the first from 1 and the last to kMaxDim. Neighbours that
// chose the same schedule merge, so a kernel whose schedule suits every D gets one bucket.
std::vector<Choice> choose_buckets(const Results& results, const KernelResults& k,
                                   const std::vector<size_t>& subset,
                                   const std::string& table_class, double margin) {
  std::vector<int64_t> dims;
  for (size_t w : subset) dims.push_back(results.workloads[w].dim);
  std::sort(dims.begin(), dims.end());
  dims.erase(std::unique(dims.begin(), dims.end()), dims.end());
  std::vector<Choice> buckets;
  for (size_t g = 0; g < dims.size(); ++g) {
    std::vector<size_t> group;
    for (size_t w : subset)
      if (results.workloads[w].dim == dims[g]) group.push_back(w);
    Choice c = choose_over(k, results, group, margin,
                           table_class == "cache-resident" ? "prefetch_distance=0" : "");
    c.table_class = table_class;
    c.dim_min = g == 0 ? 1 : buckets.back().dim_max + 1;
    c.dim_max = g + 1 == dims.size() ? kMaxDim : (dims[g] + dims[g + 1]) / 2;
    if (!buckets.empty() && buckets.back().params == c.params &&
        buckets.back().tasks_per_thread == c.tasks_per_thread) {
      Choice& merged = buckets.back();
      merged.dim_max = c.dim_max;
      merged.workloads.insert(merged.workloads.end(), c.workloads.begin(), c.workloads.end());
      merged.default_gbps.insert(merged.default_gbps.end(), c.default_gbps.begin(),
                                 c.default_gbps.end());
      merged.tuned_gbps.insert(merged.tuned_gbps.end(), c.tuned_gbps.begin(), c.tuned_gbps.end());
      double log_sum = 0;
      for (size_t i = 0; i < merged.workloads.size(); ++i)
        if (merged.default_gbps[i] > 0)
          log_sum += std::log(merged.tuned_gbps[i] / merged.default_gbps[i]);
      merged.geomean_gain = std::exp(log_sum / static_cast<double>(merged.workloads.size()));
    } else {
      buckets.push_back(c);
    }
  }
  return buckets;
}

int64_t weight_bytes(const std::string& w) {
  if (w == "f64") return 8;
  if (w == "f32") return 4;
  return 2;
}

}  // namespace

std::string workload_class(const Results& results, const KernelResults& k, size_t w) {
  if (results.table_limit < 0) return "any";
  const WorkloadInfo& wl = results.workloads[w];
  return wl.rows * wl.dim * weight_bytes(k.weight) <= results.table_limit ? "cache-resident"
                                                                          : "memory-resident";
}

std::vector<Choice> choose(const Results& results, double margin) {
  std::vector<Choice> choices;
  std::vector<size_t> all;
  for (size_t w = 0; w < results.workloads.size(); ++w) all.push_back(w);
  for (const KernelResults& k : results.kernels) {
    if (k.pipeline != "forward") {
      // Backward kernels have one variant for every table and D: one choice over everything.
      Choice c = choose_over(k, results, all, margin);
      choices.push_back(c);
      continue;
    }
    // Forward: the cache-resident kernels on the warm workloads, the memory-resident ones on
    // the cold, each with its own D buckets; a class without workloads is left out (its
    // kernels keep the defaults).
    for (const char* table_class : {"cache-resident", "memory-resident", "any"}) {
      std::vector<size_t> subset;
      for (size_t w : all)
        if (workload_class(results, k, w) == table_class) subset.push_back(w);
      if (subset.empty()) continue;
      std::vector<Choice> buckets = choose_buckets(results, k, subset, table_class, margin);
      // Without a measurement of the class's own default there is nothing to compare with: the
      // class keeps the build's defaults (no entries).
      bool measured = true;
      for (const Choice& c : buckets)
        for (double g : c.default_gbps) measured = measured && g > 0;
      if (!measured) {
        std::fprintf(stderr,
                     "embag-tune: %s %s %s: the %s default (%s) was not timed; that class keeps "
                     "its default kernels\n",
                     k.mode.c_str(), k.weight.c_str(), k.index.c_str(), table_class,
                     table_class == std::string("cache-resident") ? "prefetch_distance=0"
                                                                  : "default schedule");
        continue;
      }
      for (Choice& c : buckets) choices.push_back(std::move(c));
    }
  }
  return choices;
}

std::string tuning_json(const Results& r, const std::vector<Choice>& choices,
                        const std::string& created_by) {
  std::ostringstream j;
  j << "{\n"
    << "  \"format\": \"embag-tuning\",\n"
    << "  \"format_version\": 1,\n"
    << "  \"isa\": " << json_string(r.isa) << ",\n"
    << "  \"target\": " << json_string(r.target) << ",\n"
    << "  \"embag_version\": " << json_string(r.embag_version) << ",\n"
    << "  \"halide_version\": " << json_string(r.halide_version) << ",\n"
    << "  \"cpu_model\": " << json_string(r.cpu) << ",\n"
    << "  \"threads\": " << r.threads << ",\n"
    << "  \"cache_resident_max_bytes\": " << r.table_limit << ",\n"
    << "  \"created_by\": " << json_string(created_by) << ",\n"
    << "  \"workloads\": [\n";
  for (size_t w = 0; w < r.workloads.size(); ++w) {
    const WorkloadInfo& wl = r.workloads[w];
    j << "    {\"rows\": " << wl.rows << ", \"dim\": " << wl.dim << ", \"bags\": " << wl.bags
      << ", \"positions\": " << wl.positions << ", \"description\": " << json_string(wl.description)
      << "}" << (w + 1 < r.workloads.size() ? "," : "") << "\n";
  }
  j << "  ],\n  \"kernels\": [\n";
  for (size_t i = 0; i < choices.size(); ++i) {
    const Choice& c = choices[i];
    j << "    {\n"
      << "      \"pipeline\": " << json_string(c.pipeline) << ", \"mode\": " << json_string(c.mode)
      << ", \"weight\": " << json_string(c.weight);
    if (!c.index.empty()) j << ", \"index\": " << json_string(c.index);
    j << ",\n"
      << "      \"table_class\": " << json_string(c.table_class) << ",\n"
      << "      \"dim_min\": " << c.dim_min << ", \"dim_max\": " << c.dim_max << ",\n"
      << "      \"params\": " << params_json(c.params) << ",\n"
      << "      \"tasks_per_thread\": " << c.tasks_per_thread << ",\n"
      << "      \"gain\": " << number(c.geomean_gain, 4) << ",\n"
      << "      \"workloads\": [";
    for (size_t w = 0; w < c.workloads.size(); ++w) j << (w ? ", " : "") << c.workloads[w];
    j << "],\n      \"default_gbps\": [";
    for (size_t w = 0; w < c.default_gbps.size(); ++w)
      j << (w ? ", " : "") << number(c.default_gbps[w], 3);
    j << "],\n      \"tuned_gbps\": [";
    for (size_t w = 0; w < c.tuned_gbps.size(); ++w)
      j << (w ? ", " : "") << number(c.tuned_gbps[w], 3);
    j << "]\n    }" << (i + 1 < choices.size() ? "," : "") << "\n";
  }
  j << "  ]\n}\n";
  return j.str();
}

void print_table(std::ostream& out, const Results& r, const std::vector<Choice>& choices) {
  std::vector<std::vector<std::string>> rows = {
      {"kernel", "workload", "default GB/s", "tuned GB/s", "gain", "chosen"}};
  for (size_t i = 0; i < choices.size(); ++i) {
    const Choice& c = choices[i];
    const bool kept = c.params.empty() ||
                      (c.table_class == "cache-resident" && c.params == "prefetch_distance=0");
    std::string chosen = kept ? "default schedule" : c.params;
    if (c.tasks_per_thread != 4)
      chosen += " tasks_per_thread=" + std::to_string(c.tasks_per_thread);
    auto same_kernel = [&](const Choice& o) {
      return o.pipeline == c.pipeline && o.mode == c.mode && o.weight == c.weight &&
             o.index == c.index;
    };
    const bool first_bucket = i == 0 || !same_kernel(choices[i - 1]);
    const bool first_of_class = first_bucket || choices[i - 1].table_class != c.table_class;
    const bool bucketed = !(c.dim_min == 1 && c.dim_max == kMaxDim);
    std::string label = first_bucket ? (c.pipeline == "forward" ? "" : c.pipeline + " ") + c.mode +
                                           " " + c.weight + (c.index.empty() ? "" : " " + c.index)
                                     : "";
    if (first_of_class && c.table_class != "any")
      label += (label.empty() ? "" : " ") +
               std::string(c.table_class == "cache-resident" ? "warm" : "cold");
    if (bucketed)
      label += (label.empty() ? "" : " ") + std::string("D ") + std::to_string(c.dim_min) + "-" +
               (c.dim_max == kMaxDim ? std::string("") : std::to_string(c.dim_max));
    for (size_t w = 0; w < c.workloads.size(); ++w) {
      const double gain = c.default_gbps[w] > 0 ? c.tuned_gbps[w] / c.default_gbps[w] : 1;
      rows.push_back({w == 0 ? label : "", r.workloads[c.workloads[w]].description,
                      number(c.default_gbps[w], 2), number(c.tuned_gbps[w], 2),
                      number(gain, 3) + "x", w == 0 ? chosen : ""});
    }
    const bool last_bucket = i + 1 == choices.size() || !same_kernel(choices[i + 1]);
    if (c.rejected && last_bucket)
      rows.push_back({"",
                      "(" + std::to_string(c.rejected) +
                          " candidate(s) rejected: output "
                          "differed from the default)",
                      "", "", "", ""});
  }
  std::vector<size_t> widths(rows[0].size(), 0);
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  out << "\n" << r.isa << " on " << r.cpu << ", " << r.threads << " thread(s)";
  if (r.table_limit >= 0)
    out << "; warm = cache-resident (table <= " << r.table_limit << " bytes, "
        << r.table_limit_source << "), cold = memory-resident";
  out << ":\n";
  for (const auto& row : rows) {
    std::string line = "  ";
    for (size_t i = 0; i < row.size(); ++i) {
      const bool right = i >= 2 && i <= 4;
      const std::string pad(widths[i] - row[i].size(), ' ');
      line += right ? pad + row[i] : row[i] + (i + 1 < row.size() ? pad : "");
      if (i + 1 < row.size()) line += "  ";
    }
    out << line << "\n";
  }
}

}  // namespace embag::tune
