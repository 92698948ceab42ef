// The `embag` command-line program's contract: results in .npy files, PyTorch's default mode,
// the table file never modified, and on any error a message, a non-zero exit and no output file.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cli_test_support.h"
#include "embag/embag.h"
#include "npy/npy_file.h"

namespace {

namespace fs = std::filesystem;
using embag::DType;

class Cli : public embag::clitest::CliTest {
 protected:
  void SetUp() override {
    make_scratch_dir("embag_cli_test_");
    save_worked_example();
  }
};

TEST_F(Cli, ForwardWritesTheResultAndDefaultsToMean) {
  ASSERT_EQ(run("forward --weight W.npy --input I.npy --offsets O.npy --mode sum "
                "--output out.npy"),
            0);
  EXPECT_EQ(load_f64("out.npy"), (std::vector<double>{0, 0, 13, 16, 0, 0, 13, 16, 0, 0}));
  // No --mode: PyTorch's default, mean.
  ASSERT_EQ(run("forward --weight W.npy --input I.npy --offsets O.npy --output mean.npy"), 0);
  const std::vector<double> mean = load_f64("mean.npy");
  EXPECT_DOUBLE_EQ(mean[2], 13.0 / 3);
  EXPECT_DOUBLE_EQ(mean[3], 16.0 / 3);
}

// `embag quantize` writes quantize_rows' bytes as a uint8 .npy, and `embag forward --format`
// pools them: the same numbers as the C++ API on the same table (max here, a real max).
TEST_F(Cli, QuantizeAndForwardOnTheQuantizedTable) {
  const std::vector<float> w = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  embag::npy::Array weight = embag::npy::make_array(embag::DType::kFloat32, {5, 2});
  std::memcpy(weight.data.data(), w.data(), sizeof(float) * w.size());
  ASSERT_TRUE(embag::npy::save(path("W32.npy"), weight).ok());
  for (const char* format : {"int8", "int4", "tbe_int2", "fp8_e5m2"}) {
    SCOPED_TRACE(format);
    const embag::QuantFormat f = *embag::parse_quant_format(format);
    const int64_t row = embag::quantized_row_bytes(f, 2);
    ASSERT_EQ(run(std::string("quantize --weight W32.npy --format ") + format + " --output Q.npy"),
              0);
    embag::npy::Array q;
    ASSERT_TRUE(embag::npy::load(path("Q.npy"), &q).ok());
    ASSERT_TRUE(q.bytes);
    ASSERT_EQ(q.shape, (std::vector<int64_t>{5, row}));
    std::vector<uint8_t> want(static_cast<size_t>(5 * row));
    const embag::QuantizedTable table{want.data(), f, 5, 2, row, {}};
    ASSERT_TRUE(embag::quantize_rows(weight.view(), table).ok());
    EXPECT_EQ(std::vector<uint8_t>(q.data.begin(), q.data.end()), want);

    // --dim: int4 and int2 rows of D = 2 hold a whole byte of codes, which says D = 2 or 4.
    ASSERT_EQ(run(std::string("forward --weight Q.npy --format ") + format +
                  " --dim 2 --input I.npy --offsets O.npy --mode max --output out.npy"),
              0);
    embag::npy::Array out;
    ASSERT_TRUE(embag::npy::load(path("out.npy"), &out).ok());
    ASSERT_EQ(out.dtype, embag::DType::kFloat32);
    std::vector<float> expected(10);
    const std::vector<int64_t> idx = {3, 1, 1, 1, 4, 0}, off = {0, 0, 3, 3, 6};
    embag::TensorView off_view =
        embag::make_view_1d(const_cast<int64_t*>(off.data()), embag::DType::kInt64, 5);
    embag::ForwardInputs in;
    in.quantized_weight = &table;
    in.input = embag::make_view_1d(const_cast<int64_t*>(idx.data()), embag::DType::kInt64, 6);
    in.offsets = &off_view;
    embag::Options options;
    options.mode = embag::Mode::kMax;
    ASSERT_TRUE(embag::forward(in,
                               {embag::make_view_2d(expected.data(), embag::DType::kFloat32, 5, 2)},
                               options)
                    .ok());
    EXPECT_EQ(0, std::memcmp(out.data.data(), expected.data(), sizeof(float) * 10));
  }
  // A quantized file without --format, and a float file with it, are refused.
  expect_error("forward --weight Q.npy --input I.npy --offsets O.npy --output x.npy", 1,
               "give its --format");
  expect_error("forward --weight W.npy --format int8 --input I.npy --offsets O.npy --output x.npy",
               1, "--format needs a 2-D uint8 table");
  expect_error("quantize --weight W32.npy --format int3 --output Q.npy", 2, "--format must be");
  EXPECT_FALSE(fs::exists(path("x.npy")));
}

// --device runs the same call on a GPU (here OpenCL, on POCL where there is no GPU): the same
// file, byte for byte, forward and backward (max, whose argmax the forward run makes on the
// device too). --device cuda works where a CUDA GPU is, and says why not elsewhere.
TEST_F(Cli, DeviceRunsTheSameCallOnAGpu) {
  const std::vector<embag::Isa> isas = embag::compiled_isas();
  if (std::find(isas.begin(), isas.end(), embag::Isa::kOpenCL) == isas.end()) {
    GTEST_SKIP() << "this build has no OpenCL kernels (EMBAG_GPU_ISAS without opencl)";
  }
  ASSERT_EQ(run("forward --weight W.npy --input I.npy --offsets O.npy --mode sum "
                "--output cpu.npy"),
            0);
  ASSERT_EQ(run("forward --weight W.npy --input I.npy --offsets O.npy --mode sum "
                "--output gpu.npy --device opencl"),
            0);
  EXPECT_EQ(file_bytes("gpu.npy"), file_bytes("cpu.npy"));
  save_f64("G.npy", {5, 2}, {99, 99, 1, 2, 99, 99, 3, 4, 99, 99});
  for (const char* device : {"cpu", "opencl"}) {
    ASSERT_EQ(run(std::string("backward --weight W.npy --input I.npy --offsets O.npy --mode max "
                              "--grad-output G.npy --grad-weight gw_") +
                  device + ".npy --device " + device),
              0);
  }
  EXPECT_EQ(load_f64("gw_opencl.npy"), (std::vector<double>{0, 0, 0, 0, 0, 0, 1, 2, 3, 4}));
  std::string err;
  const int cuda =
      run("forward --weight W.npy --input I.npy --offsets O.npy --output c.npy "
          "--device cuda",
          &err);
  if (embag::cuda_status().rfind("unavailable", 0) == 0) {
    EXPECT_EQ(cuda, 1);
    EXPECT_NE(err.find("CUDA"), std::string::npos) << err;
  } else {
    EXPECT_EQ(cuda, 0) << err;
  }
  EXPECT_EQ(run("forward --weight W.npy --input I.npy --offsets O.npy --output x.npy "
                "--device tpu"),
            2);
}

TEST_F(Cli, MaxNormWritesTheRenormalisedTableAndLeavesTheInputFileAlone) {
  const std::string before = file_bytes("W.npy");
  ASSERT_EQ(run("forward --weight W.npy --input I.npy --offsets O.npy --mode max --max-norm 5 "
                "--output out.npy --weight-output W2.npy"),
            0);
  EXPECT_EQ(file_bytes("W.npy"), before);
  const std::vector<double> renormed = load_f64("W2.npy");
  // Row 2 ([5, 6]) is referenced by no bag: untouched. Row 0 ([1, 2], norm 2.24) is within.
  EXPECT_EQ(renormed[4], 5.0);
  EXPECT_EQ(renormed[0], 1.0);
  // Row 3 ([7, 8], norm 10.63) is scaled to norm 5.
  EXPECT_NEAR(std::hypot(renormed[6], renormed[7]), 5.0, 1e-6);
}

// Outputs are staged under unique names (mkstemp beside the target): concurrent runs writing the
// same two files all succeed, the results are whole, and no staging file is left. With one fixed
// staging name, one run renamed another's staged file away and failed.
TEST_F(Cli, ConcurrentRunsWritingTheSameOutputsDoNotCollide) {
  constexpr int kRuns = 8;
  std::string script = "cd '" + dir_.string() + "' || exit 1; ";
  for (int i = 0; i < kRuns; ++i) {
    script += "(" EMBAG_CLI_COMMAND
              " forward --weight W.npy --input I.npy --offsets O.npy --mode sum --max-norm 5 "
              "--output out.npy --weight-output W2.npy > /dev/null 2>> errors.txt; echo $? > "
              "status" +
              std::to_string(i) + ".txt) & ";
  }
  script += "wait";
  ASSERT_EQ(std::system(script.c_str()), 0);
  for (int i = 0; i < kRuns; ++i) {
    EXPECT_EQ(file_bytes("status" + std::to_string(i) + ".txt"), "0\n") << "run " << i;
  }
  EXPECT_EQ(file_bytes("errors.txt"), "");
  EXPECT_EQ(load_f64("W2.npy").size(), 10u);
  std::vector<double> out = load_f64("out.npy");
  ASSERT_EQ(out.size(), 10u);
  EXPECT_EQ(out[0], 0.0);
  for (const auto& entry : fs::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().filename().string().find("embag-"), std::string::npos)
        << "staging file left behind: " << entry.path();
  }
}

// A stale file under what used to be the fixed staging name does not get in the way.
TEST_F(Cli, AStaleStagingFileDoesNotBlockAnOutput) {
  fs::create_directories(path("out.npy.embag-staged"));
  fs::create_directories(path("W2.npy.embag-staged"));
  std::string err;
  EXPECT_EQ(run("forward --weight W.npy --input I.npy --offsets O.npy --mode sum --max-norm 5 "
                "--output out.npy --weight-output W2.npy",
                &err),
            0)
      << err;
  EXPECT_TRUE(fs::is_regular_file(path("out.npy")));
}

TEST_F(Cli, ErrorsPrintAMessageExitNonZeroAndCreateNoOutput) {
  save_i64("bad_index.npy", {6}, {3, 1, 1, 1, 9, 0});
  save_i64("bad_offsets.npy", {3}, {1, 3, 6});
  const struct {
    std::string args;
    int status;
    std::string fragment;
  } cases[] = {
      {"forward --weight W.npy --input bad_index.npy --offsets O.npy --output out.npy "
       "--weight-output W2.npy --max-norm 1",
       1, "Index 4 of input takes value 9 which is not in the valid range [0, 5)"},
      {"forward --weight W.npy --input I.npy --offsets bad_offsets.npy --output out.npy", 1,
       "offsets[0] has to be 0"},
      {"forward --weight W.npy --input I.npy --offsets O.npy --mode mean "
       "--per-sample-weights W.npy --output out.npy",
       1, "per_sample_weights"},
      {"forward --weight W.npy --input I.npy --offsets O.npy --padding-idx 5 --output out.npy", 1,
       "padding_idx must be within the number of embeddings"},
      {"forward --weight missing.npy --input I.npy --offsets O.npy --output out.npy", 1,
       "missing.npy"},
      {"forward --weight W.npy --input I.npy --offsets O.npy --mode median --output out.npy", 2,
       "median"},
      {"forward --weight W.npy --input I.npy --offsets O.npy", 2, "--output"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    expect_error(c.args, c.status, c.fragment);
    EXPECT_FALSE(fs::exists(path("out.npy")));
    EXPECT_FALSE(fs::exists(path("W2.npy")));
  }
}

TEST_F(Cli, EmbagIsaForcesTheVariantOrFailsClearly) {
  std::string err;
  EXPECT_EQ(run("info", &err), 0) << err;
  // A value that is no ISA makes every call fail, with the variable named.
  const std::string bad = "EMBAG_ISA=bogus";
  EXPECT_NE(std::system(("cd '" + dir_.string() + "' && " + bad +
                         " " EMBAG_CLI_COMMAND
                         " forward --weight W.npy --input I.npy --offsets O.npy --output o.npy "
                         "2> err.txt")
                            .c_str()),
            0);
  EXPECT_NE(file_bytes("err.txt").find("EMBAG_ISA=bogus is not an instruction set"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(path("o.npy")));
  // Each ISA compiled in and supported here runs when forced, and `info` names it.
  for (embag::Isa isa : embag::compiled_isas()) {
    bool supported = false;
    for (embag::Isa s : embag::supported_isas()) supported = supported || s == isa;
    if (!supported) continue;
    const std::string name = embag::isa_name(isa);
    ASSERT_EQ(std::system(("cd '" + dir_.string() + "' && EMBAG_ISA=" + name +
                           " " EMBAG_CLI_COMMAND " info > info.txt")
                              .c_str()),
              0);
    // The line saying which variant a float32/int64 sum runs (the variant table lists them all).
    const std::string info = file_bytes("info.txt");
    const size_t at = info.find("float32/int64 sum:");
    ASSERT_NE(at, std::string::npos) << info;
    const std::string line = info.substr(at, info.find('\n', at) - at);
    EXPECT_NE(line.find("embag_forward_sum_f32_i64_" + name), std::string::npos) << line;
    // (and, for a table inside the table-size rule's limit, its cache-resident variant)
    EXPECT_NE(line.find("embag_forward_sum_f32_i64_cache_" + name), std::string::npos) << line;
  }
}

// `embag info` shows the caches it read and the table-size rule, and EMBAG_CACHE_RESIDENT_BYTES
// sets the rule's limit.
TEST_F(Cli, InfoShowsTheTableSizeRuleAndTheEnvironmentSetsIt) {
  ASSERT_EQ(std::system(("cd '" + dir_.string() + "' && EMBAG_CACHE_RESIDENT_BYTES=4096 " +
                         EMBAG_CLI_COMMAND " info > info.txt")
                            .c_str()),
            0);
  const std::string info = file_bytes("info.txt");
  EXPECT_NE(info.find("CPU caches:"), std::string::npos) << info;
  EXPECT_NE(info.find("tables of at most 4 KiB run the cache-resident forward variants, larger "
                      "ones the memory-resident (EMBAG_CACHE_RESIDENT_BYTES)"),
            std::string::npos)
      << info;
}

// `embag info` shows every kernel's schedule parameters and where they came from (default,
// cmake, or a tuning file from embag-tune), from the same registry columns compiled_variants()
// reports.
TEST_F(Cli, InfoShowsEachKernelsScheduleAndItsSource) {
  ASSERT_EQ(
      std::system(("cd '" + dir_.string() + "' && " EMBAG_CLI_COMMAND " info > info.txt").c_str()),
      0);
  const std::string info = file_bytes("info.txt");
  const size_t header = info.find("  name ");
  ASSERT_NE(header, std::string::npos) << info;
  const std::string heading = info.substr(header, info.find('\n', header) - header);
  EXPECT_NE(heading.find(" schedule "), std::string::npos) << heading;
  EXPECT_NE(heading.find(" from "), std::string::npos) << heading;
  for (const embag::VariantInfo& v : embag::compiled_variants()) {
    EXPECT_TRUE(v.schedule_source == "default" || v.schedule_source == "cmake" ||
                v.schedule_source.rfind("tuning file", 0) == 0)
        << v.name << ": " << v.schedule_source;
    const size_t row = info.find("  " + v.name + " ");
    ASSERT_NE(row, std::string::npos) << v.name;
    const std::string line = info.substr(row, info.find('\n', row) - row);
    EXPECT_NE(line.find("  " + (v.schedule.empty() ? std::string("-") : v.schedule) + "  "),
              std::string::npos)
        << line;
    EXPECT_NE(line.find("  " + v.schedule_source + "  "), std::string::npos) << line;
  }
}

// A build from a tuning file with schedules per D bucket has one forward variant per bucket; a
// call runs the variant whose range holds its D (float32 / int64 sum, mean and max variants of
// the selected ISA, at both ends of each range), on a table of the variant's class (a tuning file
// from warm and cold shapes gives each class its own buckets). Nothing to check in an untuned
// build.
TEST(TunedBuckets, ForwardRunsTheVariantOfItsDBucket) {
  embag::Isa isa{};
  ASSERT_TRUE(embag::selected_isa(&isa).ok());
  int checked = 0;
  for (const embag::VariantInfo& v : embag::compiled_variants()) {
    if (v.pipeline != "forward" || v.isa != isa || v.dim_max == 0 ||
        v.weight_dtype != embag::DType::kFloat32 || v.index_dtype != embag::DType::kInt64)
      continue;
    const std::optional<embag::Mode> mode = embag::parse_mode(v.mode);
    if (!mode) continue;  // wsum / max_values: reached through other options
    for (const int64_t dim : {v.dim_min, std::min<int64_t>(v.dim_max, v.dim_min + 200)}) {
      // 4 rows stay within any cache-resident limit; a memory-resident variant needs a table
      // one row past it.
      const int64_t limit = embag::table_size_rule().cache_resident_max_bytes;
      const int64_t rows = v.table_class == "memory-resident" ? limit / (dim * 4) + 1 : 4;
      const int64_t bags = 2;
      std::vector<float> table(static_cast<size_t>(rows * dim), 1.0f);
      std::vector<float> out(static_cast<size_t>(bags * dim));
      std::vector<int64_t> argmax(static_cast<size_t>(bags * dim));
      std::vector<int64_t> idx = {0, 1, 2, 3}, off = {0, 2};
      embag::ForwardInputs in;
      in.weight = embag::make_view_2d(table.data(), embag::DType::kFloat32, rows, dim);
      in.input = embag::make_view_1d(idx.data(), embag::DType::kInt64, 4);
      const embag::TensorView offsets = embag::make_view_1d(off.data(), embag::DType::kInt64, 2);
      in.offsets = &offsets;
      embag::TensorView argmax_view =
          embag::make_view_2d(argmax.data(), embag::DType::kInt64, bags, dim);
      embag::ForwardOutputs outs;
      outs.output = embag::make_view_2d(out.data(), embag::DType::kFloat32, bags, dim);
      if (*mode == embag::Mode::kMax) outs.argmax = &argmax_view;
      embag::Options options;
      options.mode = *mode;
      const embag::Status status = embag::forward(in, outs, options);
      ASSERT_TRUE(status.ok()) << status.message();
      EXPECT_EQ(embag::last_variant(), v.name) << "D = " << dim;
    }
    ++checked;
  }
  std::cout << checked << " D-bucket variant(s) checked\n";
}

}  // namespace
