// The fixture both CLI suites (test_cli.cpp, test_cli_backward.cpp) build on: a scratch
// directory per test, .npy files in and out of it, and running the `embag` program there
// (EMBAG_CLI_COMMAND, set by tests/CMakeLists.txt). Test-only; not part of the library.
#ifndef EMBAG_TESTS_CLI_TEST_SUPPORT_H_
#define EMBAG_TESTS_CLI_TEST_SUPPORT_H_

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

#include "embag/embag.h"
#include "npy/npy_file.h"

namespace embag::clitest {

class CliTest : public ::testing::Test {
 protected:
  // Creates an empty scratch directory named `prefix` + gtest's seed + the test's name.
  void make_scratch_dir(const std::string& prefix) {
    const ::testing::UnitTest& unit = *::testing::UnitTest::GetInstance();
    dir_ = std::filesystem::temp_directory_path() /
           (prefix + std::to_string(unit.random_seed()) + "_" + unit.current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // SEMANTICS.md's worked example as W.npy (5, 2), I.npy (6) and O.npy (5 bags).
  void save_worked_example() {
    save_f64("W.npy", {5, 2}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
    save_i64("I.npy", {6}, {3, 1, 1, 1, 4, 0});
    save_i64("O.npy", {5}, {0, 0, 3, 3, 6});
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  void save_f64(const std::string& name, std::vector<int64_t> shape, std::vector<double> values) {
    npy::Array a = npy::make_array(DType::kFloat64, shape);
    std::memcpy(a.data.data(), values.data(), values.size() * sizeof(double));
    ASSERT_TRUE(npy::save(path(name), a).ok());
  }
  void save_i64(const std::string& name, std::vector<int64_t> shape, std::vector<int64_t> values) {
    npy::Array a = npy::make_array(DType::kInt64, shape);
    std::memcpy(a.data.data(), values.data(), values.size() * sizeof(int64_t));
    ASSERT_TRUE(npy::save(path(name), a).ok());
  }
  // Loads `name`, checking its dtype (and its shape, when given), and returns its elements.
  template <typename T>
  std::vector<T> load(const std::string& name, DType dtype, const std::vector<int64_t>* shape) {
    npy::Array a;
    const Status status = npy::load(path(name), &a);
    EXPECT_TRUE(status.ok()) << status.message();
    EXPECT_EQ(a.dtype, dtype) << name;
    if (shape != nullptr) EXPECT_EQ(a.shape, *shape) << name;
    std::vector<T> v(static_cast<size_t>(a.numel()));
    if (a.data.size() == v.size() * sizeof(T)) {
      std::memcpy(v.data(), a.data.data(), a.data.size());
    }
    return v;
  }
  std::vector<double> load_f64(const std::string& name) {
    return load<double>(name, DType::kFloat64, nullptr);
  }
  std::vector<double> load_f64(const std::string& name, const std::vector<int64_t>& shape) {
    return load<double>(name, DType::kFloat64, &shape);
  }
  std::vector<int64_t> load_i64(const std::string& name, const std::vector<int64_t>& shape) {
    return load<int64_t>(name, DType::kInt64, &shape);
  }
  std::string file_bytes(const std::string& name) {
    std::ifstream in(path(name), std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // Runs the CLI with `args` (paths relative to the scratch directory); returns the exit status
  // and what it printed on stderr. The stderr file is removed again, so a test can check that a
  // failed run left nothing behind.
  int run(const std::string& args, std::string* err = nullptr) {
    const std::string stderr_path = path("stderr.txt");
    const std::string command = "cd '" + dir_.string() + "' && " EMBAG_CLI_COMMAND " " + args +
                                " > /dev/null 2> '" + stderr_path + "'";
    const int status = std::system(command.c_str());
    const std::string text = file_bytes("stderr.txt");
    if (err) *err = text;
    std::filesystem::remove(stderr_path);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // Runs `args`, which must fail: exit status `status` and an "embag: error:" message on stderr
  // that holds `fragment`.
  void expect_error(const std::string& args, int status, const std::string& fragment) {
    std::string err;
    EXPECT_EQ(run(args, &err), status);
    EXPECT_NE(err.find("embag: error:"), std::string::npos) << err;
    EXPECT_NE(err.find(fragment), std::string::npos) << err;
  }

  std::filesystem::path dir_;
};

}  // namespace embag::clitest

#endif  // EMBAG_TESTS_CLI_TEST_SUPPORT_H_
