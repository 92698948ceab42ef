// The .npy reader's limits and the writer's staging: NumPy's header-size cap, nothing but padding
// after the header dict, and unique staging files so concurrent writers of one path never collide.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "npy/npy_file.h"

namespace {

namespace fs = std::filesystem;

class Npy : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("embag_npy_test_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes a format 1.0 file with `header` as the header text, followed by `data_bytes` zeros.
  std::string write_raw(const std::string& header, size_t data_bytes, int major = 1) {
    const std::string file = (dir_ / "raw.npy").string();
    std::ofstream out(file, std::ios::binary);
    out.write("\x93NUMPY", 6);
    out.put(static_cast<char>(major));
    out.put('\0');
    const size_t length_size = major == 1 ? 2 : 4;
    for (size_t i = 0; i < length_size; ++i)
      out.put(static_cast<char>((header.size() >> (8 * i)) & 0xff));
    out << header;
    out << std::string(data_bytes, '\0');
    return file;
  }

  fs::path dir_;
};

const char kDict[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";

TEST_F(Npy, AWellFormedHeaderWithPaddingLoads) {
  embag::npy::Array a;
  const embag::Status s = embag::npy::load(write_raw(std::string(kDict) + "     \n", 8), &a);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(a.shape, std::vector<int64_t>{2});
}

// NumPy's literal_eval refuses anything but whitespace after the dict; so does embag.
TEST_F(Npy, JunkAfterTheHeaderDictIsRefused) {
  for (const char* junk : {"x\n", " , \n", "}\n", "{'a': 1}\n"}) {
    embag::npy::Array a;
    const embag::Status s = embag::npy::load(write_raw(std::string(kDict) + junk, 8), &a);
    EXPECT_FALSE(s.ok()) << "junk '" << junk << "' after the header dict was accepted";
    EXPECT_NE(s.message().find("junk after the dict"), std::string::npos) << s.message();
  }
}

// NumPy refuses headers over 10,000 bytes (format._MAX_HEADER_SIZE); embag does too, before it
// reads or allocates the header (a 2.0 header length can claim 4 GiB).
TEST_F(Npy, HeadersOverNumPysCapAreRefused) {
  std::string header = std::string(kDict) + std::string(10001 - sizeof(kDict), ' ') + "\n";
  ASSERT_EQ(header.size(), 10001u);
  embag::npy::Array a;
  embag::Status s = embag::npy::load(write_raw(header, 8, 2), &a);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("header length 10001 exceeds NumPy's limit of 10000"),
            std::string::npos)
      << s.message();
  header.erase(header.size() - 2, 1);  // 10,000 bytes: NumPy's largest
  s = embag::npy::load(write_raw(header, 8, 2), &a);
  EXPECT_TRUE(s.ok()) << s.message();
}

// Two staging files for one target get different names (mkstemp), and a stale file or directory
// under any fixed name cannot get in the way.
TEST_F(Npy, StagingNamesAreUnique) {
  const embag::npy::Array a = embag::npy::make_array(embag::DType::kFloat32, {3});
  const std::string target = (dir_ / "out.npy").string();
  std::string first, second;
  ASSERT_TRUE(embag::npy::save_staged(target, a, &first).ok());
  ASSERT_TRUE(embag::npy::save_staged(target, a, &second).ok());
  EXPECT_NE(first, second);
  EXPECT_EQ(fs::path(first).parent_path(), dir_) << "staged outside the target's folder";
  EXPECT_FALSE(fs::exists(target)) << "staging wrote the target itself";
}

// Many threads saving the same path at once: every save succeeds, the file is whole, and no
// staging file is left behind.
TEST_F(Npy, ConcurrentSavesOfOnePathAllSucceed) {
  const std::string target = (dir_ / "out.npy").string();
  std::vector<std::thread> threads;
  std::vector<int> ok(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      embag::npy::Array a = embag::npy::make_array(embag::DType::kInt64, {64});
      for (int64_t i = 0; i < 64; ++i) std::memcpy(a.data.data() + i * 8, &i, 8);
      bool all = true;
      for (int round = 0; round < 20; ++round) all = all && embag::npy::save(target, a).ok();
      ok[static_cast<size_t>(t)] = all;
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < 8; ++t) EXPECT_TRUE(ok[static_cast<size_t>(t)]) << "thread " << t;
  embag::npy::Array back;
  ASSERT_TRUE(embag::npy::load(target, &back).ok());
  EXPECT_EQ(back.numel(), 64);
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 1u) << "staging files were left behind";
}

}  // namespace
