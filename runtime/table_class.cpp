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

// Without any cache size reported: 64 KiB, a quarter of the smallest L2 of the CPUs embag
// targets (Cortex-A53 boards have 128 KiB to 1 MiB; x86 cores 256 KiB and up).
constexpr int64_t kDefaultLimitBytes = int64_t{64} << 10;

struct Limit {
  int64_t bytes;
  const char* source;
};

// A quarter of one core's L2. Measured on a 2-core AMD EPYC (Zen 3, AVX2, 32 KiB L1d, 512 KiB L2,
// 32 MiB L3), sum, 2048 bags of 40 uniform indices, 1 thread, both variants of one build
// (EMBAG_CACHE_RESIDENT_BYTES=0 against 1e9), medians of 5-7: the variant without prefetch won
// at 25-128 KiB (100 x 64: 199 against 349 us; 250 x 128: 763 against 845), the two were even
// at 128 KiB (500 x 64), and the T0-prefetching variant won from 256 KiB on (1000 x 128: 619
// against 910; 10k x 64, 2.5 MiB: 472 against 639; 100k x 64: 1819 against 2774). So a table
// that fits a fraction of L2 is read at L1/L2 latency that the out-of-order window hides; past
// that, each row is an L2 miss (L3 or DRAM, 40 cycles and up) that only a prefetch issued 16
// positions ahead covers. The quarter leaves the rest of L2 to the indices, the output and the
// rows' neighbours. (An earlier rule, a quarter of L3, was measured when the prefetch issued
// non-temporal hints, one prefetch per line per register tile and the offsets spilled; with T0
// hints and one tile per 128-float row the prefetch pays already at L2 size.) On CPUs that
// report no L2, the L1d times four (L2 is rarely smaller), else the default.
Limit limit_from_caches() {
  const CacheSizes& caches = cpu_cache_sizes();
  if (caches.l2 > 0) return {caches.l2 / 4, "L2 / 4"};
  if (caches.l1d > 0) return {caches.l1d * 4, "L1d x 4"};
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

kernels::TableClass table_class_of_bytes(int64_t bytes) {
  int64_t limit = limit_state().override_bytes.load(std::memory_order_relaxed);
  if (limit < 0) {
    static const Limit from_caches = limit_from_caches();
    limit = from_caches.bytes;
  }
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
