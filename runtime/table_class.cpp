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

// Without any cache size reported: a table of up to 4 MiB counts as cache-resident, the L3 share
// of one core on the smallest machines embag was measured on (8 MiB of L3 for 2 cores).
constexpr int64_t kDefaultLimitBytes = int64_t{4} << 20;

struct Limit {
  int64_t bytes;
  const char* source;
};

Limit limit_from_caches() {
  const CacheSizes& caches = cpu_cache_sizes();
  // Half the L3: a gather from a table that size misses L2 on nearly every row but finds it in
  // L3, where an out-of-order core keeps enough loads in flight without prefetching; past it, the
  // table competes with the indices, the output and everything else the L3 holds (and with other
  // tenants on a shared machine), and rows come from DRAM.
  if (caches.l3 > 0) return {caches.l3 / 2, "half of L3"};
  // No L3 (many ARM boards): the L2 is the last level before memory.
  if (caches.l2 > 0) return {caches.l2 * 4, "L2 x 4"};
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
