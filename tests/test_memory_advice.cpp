// embag::advise_huge_pages: its argument rules, and that advised memory reads back what was
// written (the advice changes page sizes, never contents).
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>

#include "embag/embag.h"

namespace {

TEST(HugePages, NullDataWithBytesIsRefusedAndNothingToAdviseIsOk) {
  const embag::Status null_data = embag::advise_huge_pages(nullptr, 4096);
  EXPECT_EQ(null_data.code(), embag::StatusCode::kInvalidArgument);
  EXPECT_NE(null_data.message().find("null"), std::string::npos) << null_data.message();
  EXPECT_TRUE(embag::advise_huge_pages(nullptr, 0).ok());
  // Under 2 MiB there is no whole huge page to advise: nothing is done, and that is fine.
  char small[4096];
  EXPECT_TRUE(embag::advise_huge_pages(small, sizeof(small)).ok());
}

TEST(HugePages, AdvisedMemoryKeepsItsContents) {
  constexpr size_t kBytes = size_t{8} << 20;
  void* memory = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(memory, MAP_FAILED);
  auto* bytes = static_cast<unsigned char*>(memory);
  for (size_t i = 0; i < kBytes; i += 4096) bytes[i] = static_cast<unsigned char>(i >> 12);
  // Unaligned on purpose: only the whole 2 MiB pages inside are advised.
  const embag::Status status = embag::advise_huge_pages(bytes + 100, kBytes - 200);
  // A Linux kernel with transparent huge pages (it has this file) accepts the advice.
  if (std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled")) {
    EXPECT_TRUE(status.ok()) << status.message();
  } else {
    EXPECT_EQ(status.code(), embag::StatusCode::kUnsupported) << status.message();
  }
  for (size_t i = 0; i < kBytes; i += 4096) {
    ASSERT_EQ(bytes[i], static_cast<unsigned char>(i >> 12)) << "byte " << i;
  }
  munmap(memory, kBytes);
}

}  // namespace
