// The table-size rule: the limit between cache-resident and memory-resident tables, where it
// came from, and the class of a call's table. The limit is read on every call (one relaxed
// atomic load), so set_cache_resident_bytes() takes effect at once on every thread.
#include "table_class.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

#include "cpu_features.h"

namespace embag::internal {
namespace {

// Without any cache size reported: 256 KiB, the smallest L2 of the CPUs embag targets
// (Cortex-A53 boards have 128 KiB to 1 MiB; x86 cores 256 KiB and up).
constexpr int64_t kDefaultLimitBytes = int64_t{256} << 10;

struct Limit {
  int64_t bytes;
  const char* source;
};

// A quarter of the L3, and at most 8 MiB. Measured on a 2-core AMD EPYC (Zen 3, AVX2, 512 KiB L2,
// 32 MiB L3), 2048 bags of 40 uniform indices, 1 thread, both variants of one build alternated:
// at 5 MiB (10k x 128 float32) the variant without prefetch ran sum at 0.99 of the gather loop
// against 0.57 with it (mean 0.80 against 0.42; max even); at 20 MiB (40k x 128, still inside the
// L3) the prefetch won everywhere (max 0.83 against 0.26, sum 0.89 against 0.70). What changes
// between the two is less the L3 than the TLB: 8 MiB is what the 2048-entry second-level TLBs of
// current x86 cores (Zen 2-4, Ice Lake and later) reach with 4 KiB pages; past it every row costs
// a page walk, which only a prefetch issued well ahead hides. The quarter keeps a small L3 (8 MiB
// on the AVX2-only EPYC seen) from counting tables it cannot hold beside the indices, the output
// and its other tenants. Without an L3 (many ARM boards) the L2 is the last cache level.
constexpr int64_t kTlbReachBytes = int64_t{8} << 20;

Limit limit_from_caches() {
  const CacheSizes& caches = cpu_cache_sizes();
  if (caches.l3 > 0) return {std::min(caches.l3 / 4, kTlbReachBytes), "L3 / 4, at most 8 MiB"};
  if (caches.l2 > 0) return {caches.l2, "L2"};
  return {kDefaultLimitBytes, "default"};
}

// The limit in force: the environment's at start-up, set_cache_resident_bytes() later.
struct LimitState {
  std::atomic<int64_t> override_bytes{-1};
  std::atomic<bool> from_call{false};
};

LimitState& limit_state() {
  static LimitState* state = [] {
    auto* s = new LimitState;
    if (const char* env = std::getenv("EMBAG_CACHE_RESIDENT_BYTES"); env != nullptr && *env) {
      char* end = nullptr;
      const long long bytes = std::strtoll(env, &end, 10);
      if (end != env && *end == '\0' && bytes >= 0) s->override_bytes = bytes;
    }
    return s;
  }();
  return *state;
}

}  // namespace

kernels::TableClass table_class_of(const TensorView& weight) {
  int64_t limit = limit_state().override_bytes.load(std::memory_order_relaxed);
  if (limit < 0) {
    static const Limit from_caches = limit_from_caches();
    limit = from_caches.bytes;
  }
  const int64_t row_elements = std::max(weight.strides[0], weight.shape[1]);
  const int64_t bytes =
      weight.shape[0] * row_elements * static_cast<int64_t>(dtype_size(weight.dtype));
  return bytes <= limit ? kernels::TableClass::kCacheResident
                        : kernels::TableClass::kMemoryResident;
}

}  // namespace embag::internal

namespace embag {

TableSizeRule table_size_rule() {
  const internal::CacheSizes& caches = internal::cpu_cache_sizes();
  TableSizeRule rule;
  rule.l1d_bytes = caches.l1d;
  rule.l2_bytes = caches.l2;
  rule.l3_bytes = caches.l3;
  rule.cache_source = caches.source;
  internal::LimitState& state = internal::limit_state();
  const int64_t override_bytes = state.override_bytes.load();
  if (override_bytes >= 0) {
    rule.cache_resident_max_bytes = override_bytes;
    rule.limit_source = state.from_call ? "set_cache_resident_bytes" : "EMBAG_CACHE_RESIDENT_BYTES";
  } else {
    const internal::Limit limit = internal::limit_from_caches();
    rule.cache_resident_max_bytes = limit.bytes;
    rule.limit_source = limit.source;
  }
  return rule;
}

void set_cache_resident_bytes(int64_t bytes) {
  internal::LimitState& state = internal::limit_state();
  state.from_call = bytes >= 0;
  state.override_bytes = bytes < 0 ? -1 : bytes;
}

}  // namespace embag
