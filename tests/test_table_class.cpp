// The table-size rule: which variant of a CPU forward kernel a call runs, by its table's bytes
// against the limit from this CPU's caches (embag::TableSizeRule), checked through
// last_variant(); the limit's sources (the caches, set_cache_resident_bytes); and that both
// variants of a call give the same bytes. The prefetch instructions each variant carries are
// checked by disassembly in tests/check_prefetch_hint.sh.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "embag/embag.h"
#include "sparse_table_support.h"

namespace {

using embag::DType;

// Whether this build has both classes of the selected ISA's forward kernels (a tuning file
// whose workloads were not classed, or with several D buckets for every table, has one class).
bool has_table_classes() {
  embag::Isa isa{};
  if (!embag::selected_isa(&isa).ok()) return false;
  for (const embag::VariantInfo& v : embag::compiled_variants()) {
    if (v.isa == isa && v.pipeline == "forward" && v.table_class == "cache-resident") return true;
  }
  return false;
}

// A sum over rows of a rows x dim float32 table (sparse_table_support.h); the variant that ran
// goes to `variant`.
std::vector<float> sum_of_rows(int64_t rows, int64_t dim, std::string* variant) {
  return embag::testing_support::forward_on_sparse_table(embag::Mode::kSum, rows, dim, variant);
}

class TableClass : public ::testing::Test {
 protected:
  void TearDown() override { embag::set_cache_resident_bytes(-1); }
};

TEST_F(TableClass, RuleComesFromThisCpusCaches) {
  const embag::TableSizeRule rule = embag::table_size_rule();
  std::cout << "caches (" << rule.cache_source << "): L1d " << rule.l1d_bytes << " B, L2 "
            << rule.l2_bytes << " B, L3 " << rule.l3_bytes << " B; cache-resident up to "
            << rule.cache_resident_max_bytes << " B (" << rule.limit_source << ")\n";
  EXPECT_GT(rule.cache_resident_max_bytes, 0);
  if (rule.l2_bytes > 0) {
    EXPECT_EQ(rule.cache_resident_max_bytes, rule.l2_bytes / 4);
    EXPECT_EQ(rule.limit_source, "L2 / 4");
  } else if (rule.l1d_bytes > 0) {
    EXPECT_EQ(rule.cache_resident_max_bytes, rule.l1d_bytes * 4);
    EXPECT_EQ(rule.limit_source, "L1d x 4");
  } else {
    EXPECT_EQ(rule.cache_resident_max_bytes, 64 << 10);
    EXPECT_EQ(rule.limit_source, "default");
  }
  embag::set_cache_resident_bytes(12345);
  EXPECT_EQ(embag::table_size_rule().cache_resident_max_bytes, 12345);
  EXPECT_EQ(embag::table_size_rule().limit_source, "set_cache_resident_bytes");
  embag::set_cache_resident_bytes(-1);
  EXPECT_EQ(embag::table_size_rule().cache_resident_max_bytes, rule.cache_resident_max_bytes);
}

// A table inside the limit runs the cache-resident variant and one a row past it the
// memory-resident variant, with the limit from the caches; the two give the same bytes.
TEST_F(TableClass, CacheAndMemoryResidentTablesRunTheirVariants) {
  if (!has_table_classes()) GTEST_SKIP() << "this build's forward kernels serve every table";
  const int64_t dim = 64, row_bytes = dim * 4;
  const int64_t limit = embag::table_size_rule().cache_resident_max_bytes;
  std::string small_variant, large_variant, at_limit_variant;
  const int64_t small_rows = std::max<int64_t>(limit / row_bytes / 2, 1);
  sum_of_rows(small_rows, dim, &small_variant);
  EXPECT_NE(small_variant.find("_cache_"), std::string::npos) << small_variant;
  // The largest table still inside the limit, and one row more.
  sum_of_rows(limit / row_bytes, dim, &at_limit_variant);
  EXPECT_NE(at_limit_variant.find("_cache_"), std::string::npos) << at_limit_variant;
  sum_of_rows(limit / row_bytes + 1, dim, &large_variant);
  EXPECT_EQ(large_variant.find("_cache_"), std::string::npos) << large_variant;
  // The two classes of one kernel (by the registry's rows, not the names: a tuning file may give
  // a class its own D buckets, named _d<min>).
  auto row_of = [](const std::string& name) {
    for (const embag::VariantInfo& v : embag::compiled_variants())
      if (v.name == name) return v;
    ADD_FAILURE() << name << " is not in the registry";
    return embag::VariantInfo{};
  };
  const embag::VariantInfo small_row = row_of(small_variant), large_row = row_of(large_variant);
  EXPECT_EQ(small_row.table_class, "cache-resident") << small_variant;
  EXPECT_EQ(large_row.table_class, "memory-resident") << large_variant;
  for (const embag::VariantInfo* v : {&small_row, &large_row}) {
    EXPECT_EQ(v->mode, "sum") << v->name;
    EXPECT_EQ(v->weight_dtype, DType::kFloat32) << v->name;
    EXPECT_EQ(v->index_dtype, DType::kInt64) << v->name;
    EXPECT_EQ(v->isa, small_row.isa) << v->name;
  }
  std::cout << "a " << small_rows * row_bytes << " B table ran " << small_variant << ", a "
            << (limit / row_bytes + 1) * row_bytes << " B table ran " << large_variant << "\n";
}

// set_cache_resident_bytes moves the limit for every later call, and both variants of a call
// give the same bytes.
TEST_F(TableClass, SetLimitMovesTheBoundaryAndBothVariantsAgree) {
  if (!has_table_classes()) GTEST_SKIP() << "this build's forward kernels serve every table";
  const int64_t rows = 300, dim = 33, bytes = rows * dim * 4;
  std::string variant;
  embag::set_cache_resident_bytes(bytes);
  const std::vector<float> cached = sum_of_rows(rows, dim, &variant);
  EXPECT_NE(variant.find("_cache_"), std::string::npos) << variant;
  embag::set_cache_resident_bytes(bytes - 1);
  const std::vector<float> streamed = sum_of_rows(rows, dim, &variant);
  EXPECT_EQ(variant.find("_cache_"), std::string::npos) << variant;
  ASSERT_EQ(cached.size(), streamed.size());
  EXPECT_EQ(std::memcmp(cached.data(), streamed.data(), cached.size() * sizeof(float)), 0);
  embag::set_cache_resident_bytes(std::numeric_limits<int64_t>::max());
  sum_of_rows(rows, dim, &variant);
  EXPECT_NE(variant.find("_cache_"), std::string::npos) << variant;
}

}  // namespace
