// `embag backward`'s contract: SEMANTICS.md's worked gradients through .npy files (dense,
// sparse, padding, per-sample weights, scale_grad_by_freq), and on any error a message, a
// non-zero exit and no output file.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cli_test_support.h"
#include "embag/embag.h"
#include "npy/npy_file.h"

namespace {

namespace fs = std::filesystem;
using embag::DType;

class CliBackward : public embag::clitest::CliTest {
 protected:
  void SetUp() override {
    make_scratch_dir("embag_cli_backward_test_");
    save_worked_example();
    // The 99s are the gradients of empty bags (0 and 2 and 4): they must reach no row.
    save_f64("G.npy", {5, 2}, {99, 99, 1, 2, 99, 99, 3, 4, 99, 99});
  }

  // The worked example's arrays, ahead of the flags a case adds.
  static std::string example(const std::string& flags) {
    return "backward --weight W.npy --input I.npy --offsets O.npy --grad-output G.npy " + flags;
  }
};

TEST_F(CliBackward, DenseGradientsOfSumMeanAndMax) {
  std::string err;
  ASSERT_EQ(run(example("--mode sum --grad-weight GW.npy"), &err), 0) << err;
  EXPECT_EQ(load_f64("GW.npy", {5, 2}), (std::vector<double>{3, 4, 5, 8, 0, 0, 1, 2, 3, 4}));

  // No --mode: PyTorch's default, mean; every non-empty bag holds 3 indices.
  ASSERT_EQ(run(example("--grad-weight mean.npy"), &err), 0) << err;
  const std::vector<double> mean = load_f64("mean.npy", {5, 2});
  const std::vector<double> sum = {3, 4, 5, 8, 0, 0, 1, 2, 3, 4};
  ASSERT_EQ(mean.size(), sum.size());
  for (size_t i = 0; i < sum.size(); ++i) {
    EXPECT_DOUBLE_EQ(mean[i], sum[i] / 3) << i;
  }

  // Max: each column's gradient goes to the row that won it in the forward call the CLI runs
  // first (bag 1 -> row 3, bag 3 -> row 4).
  ASSERT_EQ(run(example("--mode max --grad-weight max.npy"), &err), 0) << err;
  EXPECT_EQ(load_f64("max.npy", {5, 2}), (std::vector<double>{0, 0, 0, 0, 0, 0, 1, 2, 3, 4}));
}

TEST_F(CliBackward, PaddingRowGetsNoGradient) {
  std::string err;
  ASSERT_EQ(run(example("--mode sum --padding-idx 1 --grad-weight GW.npy"), &err), 0) << err;
  EXPECT_EQ(load_f64("GW.npy", {5, 2}), (std::vector<double>{3, 4, 0, 0, 0, 0, 1, 2, 3, 4}));
  // Negative padding_idx counts from the end: -4 is row 1 of 5.
  ASSERT_EQ(run(example("--mode sum --padding-idx -4 --grad-weight GW2.npy"), &err), 0) << err;
  EXPECT_EQ(file_bytes("GW2.npy"), file_bytes("GW.npy"));
}

TEST_F(CliBackward, PerSampleWeightsAndTheirGradient) {
  save_f64("P.npy", {6}, {1, 2, 3, 4, 5, 6});
  std::string err;
  ASSERT_EQ(run(example("--mode sum --per-sample-weights P.npy --grad-weight GW.npy "
                        "--grad-per-sample-weights GP.npy"),
                &err),
            0)
      << err;
  EXPECT_EQ(load_f64("GW.npy", {5, 2}), (std::vector<double>{18, 24, 17, 26, 0, 0, 1, 2, 15, 20}));
  EXPECT_EQ(load_f64("GP.npy", {6}), (std::vector<double>{23, 11, 11, 25, 67, 11}));
}

TEST_F(CliBackward, SparseGradientIsCoalescedAscendingRows) {
  std::string err;
  ASSERT_EQ(run(example("--mode sum --sparse --grad-weight GW.npy --grad-weight-rows R.npy"), &err),
            0)
      << err;
  EXPECT_EQ(load_i64("R.npy", {4}), (std::vector<int64_t>{0, 1, 3, 4}));
  EXPECT_EQ(load_f64("GW.npy", {4, 2}), (std::vector<double>{3, 4, 5, 8, 1, 2, 3, 4}));
}

TEST_F(CliBackward, ScaleGradByFreqDividesByEachRowsOwnCount) {
  // One bag holding rows 1, 1, 3: row 1 gets (1 + 1) / 2, row 3 gets 1 / 1 (PyTorch CPU gives
  // row 3 one half; SEMANTICS.md documents the choice).
  save_i64("I1.npy", {3}, {1, 1, 3});
  save_i64("O1.npy", {1}, {0});
  save_f64("G1.npy", {1, 2}, {1, 1});
  std::string err;
  ASSERT_EQ(run("backward --weight W.npy --input I1.npy --offsets O1.npy --grad-output G1.npy "
                "--mode sum --scale-grad-by-freq --grad-weight GW.npy",
                &err),
            0)
      << err;
  EXPECT_EQ(load_f64("GW.npy", {5, 2}), (std::vector<double>{0, 0, 1, 1, 0, 0, 1, 1, 0, 0}));
}

TEST_F(CliBackward, ErrorsPrintAMessageExitNonZeroAndCreateNoOutput) {
  save_i64("bad_index.npy", {6}, {3, 1, 1, 1, 9, 0});
  save_f64("G_wrong.npy", {4, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  save_f64("P.npy", {6}, {1, 2, 3, 4, 5, 6});
  const std::string outputs = "--grad-weight GW.npy --grad-weight-rows R.npy";
  const struct {
    std::string args;
    int status;
    std::string fragment;
  } cases[] = {
      // The library's rule, in PyTorch's words (as with forward, a rejected option combination
      // is the data's error, exit 1).
      {example("--mode max --sparse " + outputs), 1, "max mode does not support sparse weights"},
      {example("--mode max --scale-grad-by-freq --grad-weight GW.npy"), 1,
       "max mode does not support scaling the gradient by the frequency"},
      {example("--mode sum --sparse --grad-weight GW.npy"), 2, "--grad-weight-rows"},
      {example("--mode sum " + outputs), 2, "--grad-weight-rows is only written with --sparse"},
      {example("--mode sum --grad-weight GW.npy --grad-per-sample-weights GP.npy"), 2,
       "--per-sample-weights"},
      {"backward --weight W.npy --input I.npy --offsets O.npy --grad-output G_wrong.npy "
       "--mode sum --grad-weight GW.npy",
       1, "grad_output"},
      {"backward --weight W.npy --input bad_index.npy --offsets O.npy --grad-output G.npy "
       "--mode sum --per-sample-weights P.npy --grad-weight GW.npy --grad-per-sample-weights "
       "GP.npy",
       1, "Index 4 of input takes value 9 which is not in the valid range [0, 5)"},
      // Same, through the sparse path (sparse_gradient_rows sees the bad index first).
      {"backward --weight W.npy --input bad_index.npy --offsets O.npy --grad-output G.npy "
       "--mode sum --sparse " +
           outputs,
       1, "Index 4 of input takes value 9"},
      // Same, through the forward call mode max runs first (in PyTorch's wording for max).
      {"backward --weight W.npy --input bad_index.npy --offsets O.npy --grad-output G.npy "
       "--mode max --grad-weight GW.npy",
       1, "embedding_bag: Expected idx >= 0 && idx < num_embeddings but found idx to be 9"},
      {example("--grad-weight missing_dir/GW.npy --mode sum"), 1, "missing_dir"},
      // The first of two outputs is written (staged) before the second fails: it must go too.
      {example("--mode sum --sparse --grad-weight GW.npy --grad-weight-rows missing_dir/R.npy"), 1,
       "missing_dir"},
      {example("--grad-weight G.npy"), 2, "inputs are never overwritten"},
      {example("--mode sum --sparse --grad-weight GW.npy --grad-weight-rows GW.npy"), 2,
       "are the same file"},
      {example("--mode median --grad-weight GW.npy"), 2, "median"},
      {"backward --weight W.npy --input I.npy --offsets O.npy --grad-weight GW.npy", 2,
       "--grad-output"},
      {example(""), 2, "--grad-weight"},
  };
  const std::string grad_output_before = file_bytes("G.npy");
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    expect_error(c.args, c.status, c.fragment);
    // Nothing at all is left behind: no output and no half-staged file.
    for (const auto& entry : fs::directory_iterator(dir_)) {
      const std::string name = entry.path().filename().string();
      EXPECT_TRUE(name == "W.npy" || name == "I.npy" || name == "O.npy" || name == "G.npy" ||
                  name == "bad_index.npy" || name == "G_wrong.npy" || name == "P.npy")
          << "left behind: " << name;
    }
  }
  EXPECT_EQ(file_bytes("G.npy"), grad_output_before);
}

TEST_F(CliBackward, HelpIsListed) {
  const std::string out = path("help.txt");
  ASSERT_EQ(std::system((EMBAG_CLI_COMMAND " --help > '" + out + "'").c_str()), 0);
  EXPECT_NE(file_bytes("help.txt").find("backward"), std::string::npos);
  ASSERT_EQ(std::system((EMBAG_CLI_COMMAND " backward --help > '" + out + "'").c_str()), 0);
  const std::string help = file_bytes("help.txt");
  EXPECT_NE(help.find("--grad-weight-rows"), std::string::npos) << help;
  EXPECT_NE(help.find("--grad-per-sample-weights"), std::string::npos) << help;
}

}  // namespace
