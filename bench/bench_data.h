// Deterministic benchmark data shared by bench_forward and bench_backward: a fast seeded RNG,
// per-shape seeds, a Zipf sampler and 64-byte-aligned float tables.
//
// Every seed is derived from the shape and a salt, so both benchmarks draw the same table and
// index batches for the same shape and runs reproduce exactly.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <vector>

#include "shape_file.h"

namespace embag::bench {

// Rank k of a Zipf draw has weight (k+1)^-kZipfExponent.
constexpr double kZipfExponent = 1.05;

// The high 64 bits of a 64x64-bit product, and a product modulo m, for index draws: with a
// 128-bit integer where the compiler has one (__extension__ keeps -Wpedantic quiet), else from
// 32-bit halves and by doubling (32-bit targets such as armv7).
#if defined(__SIZEOF_INT128__)
__extension__ typedef unsigned __int128 Uint128;
inline uint64_t multiply_high(uint64_t a, uint64_t b) {
  return static_cast<uint64_t>((static_cast<Uint128>(a) * b) >> 64);
}
inline uint64_t multiply_modulo(uint64_t a, uint64_t b, uint64_t m) {
  return static_cast<uint64_t>((static_cast<Uint128>(a) * b) % m);
}
#else
inline uint64_t multiply_high(uint64_t a, uint64_t b) {
  const uint64_t a_lo = a & 0xFFFFFFFFu, a_hi = a >> 32, b_lo = b & 0xFFFFFFFFu, b_hi = b >> 32;
  const uint64_t lo_lo = a_lo * b_lo, hi_lo = a_hi * b_lo, lo_hi = a_lo * b_hi;
  const uint64_t middle = (lo_lo >> 32) + (hi_lo & 0xFFFFFFFFu) + lo_hi;
  return a_hi * b_hi + (hi_lo >> 32) + (middle >> 32);
}
inline uint64_t multiply_modulo(uint64_t a, uint64_t b, uint64_t m) {
  uint64_t result = 0;
  a %= m;
  for (; b != 0; b >>= 1) {
    if (b & 1) result = result >= m - a ? result - (m - a) : result + a;
    a = a >= m - a ? a - (m - a) : a + a;
  }
  return result;
}
#endif

// splitmix64: tiny, fast and good enough to fill 128M floats in a fraction of a second.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1): 24 random bits, exactly representable.
  float symmetric_unit() {
    return static_cast<float>(static_cast<int32_t>(next() >> 40) - (1 << 23)) * 0x1p-23f;
  }
  // Uniform in [0, n) by a 64x64->128 multiply (no modulo bias worth the name).
  int64_t below(int64_t n) {
    return static_cast<int64_t>(multiply_high(next(), static_cast<uint64_t>(n)));
  }
  double unit() { return static_cast<double>(next() >> 11) * 0x1p-53; }

 private:
  uint64_t state_;
};

// FNV-1a over the shape's fields and a salt: one independent stream per (shape, purpose).
inline uint64_t seed_for(const Shape& shape, uint64_t salt) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (uint64_t v : {static_cast<uint64_t>(shape.rows), static_cast<uint64_t>(shape.dim),
                     static_cast<uint64_t>(shape.bags), static_cast<uint64_t>(shape.pooling),
                     static_cast<uint64_t>(shape.distribution), salt}) {
    h = (h ^ v) * 0x100000001B3ull;
  }
  return h;
}

// Zipf over `rows` ranks (rank k drawn with weight (k+1)^-s) by inverting the CDF. Rank k is
// then sent to row (k * step) mod rows with step coprime to rows: a bijection that spreads the
// hot rows over the table, as hashing spreads hot ids in production, instead of packing them
// into a few pages at the start.
class ZipfSampler {
 public:
  ZipfSampler(int64_t rows, double exponent) : rows_(rows), cdf_(static_cast<size_t>(rows)) {
    double total = 0;
    for (int64_t k = 0; k < rows; ++k) {
      total += std::pow(static_cast<double>(k + 1), -exponent);
      cdf_[static_cast<size_t>(k)] = total;
    }
    step_ = static_cast<int64_t>(0x9E3779B97F4A7C15ull % static_cast<uint64_t>(rows));
    while (std::gcd(step_, rows_) != 1) ++step_;
  }
  int64_t sample(Rng& rng) const {
    const double u = rng.unit() * cdf_.back();
    const int64_t rank =
        std::min<int64_t>(std::upper_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin(), rows_ - 1);
    return static_cast<int64_t>(multiply_modulo(
        static_cast<uint64_t>(rank), static_cast<uint64_t>(step_), static_cast<uint64_t>(rows_)));
  }

 private:
  int64_t rows_;
  std::vector<double> cdf_;
  int64_t step_ = 1;
};

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using AlignedFloats = std::unique_ptr<float, FreeDeleter>;

// Whether large allocations go on transparent huge pages (the benchmarks' --huge_pages flag).
inline bool& huge_pages() {
  static bool enabled = false;
  return enabled;
}

// `elements` floats on a 64-byte boundary (a cache line, as PyTorch aligns), uninitialised;
// null when the allocation fails. aligned_alloc wants a multiple of the alignment. With
// huge_pages(), allocations of 2 MiB and more are 2 MiB-aligned and advised onto transparent
// huge pages before anything touches them (embag::advise_huge_pages).
inline AlignedFloats allocate_floats(int64_t elements) {
  const size_t bytes = (static_cast<size_t>(elements) * sizeof(float) + 63) / 64 * 64;
  constexpr size_t kHugePage = size_t{2} << 20;
  if (huge_pages() && bytes >= kHugePage) {
    const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    AlignedFloats memory(static_cast<float*>(std::aligned_alloc(kHugePage, rounded)));
    if (memory) (void)embag::advise_huge_pages(memory.get(), rounded);  // best effort
    return memory;
  }
  return AlignedFloats(static_cast<float*>(std::aligned_alloc(64, bytes == 0 ? 64 : bytes)));
}

// What a forward or backward benchmark gathers from: a random table, the bag offsets (every bag
// holds `pooling` positions) and `batch_count` index batches drawn by the shape's distribution.
// The same shape always gives the same data, in both benchmarks.
struct GatherData {
  AlignedFloats table;
  std::vector<int64_t> offsets;               // bags + 1 entries, shared by every batch
  std::vector<std::vector<int64_t>> batches;  // index batches the timed loop cycles through
};

// False when the table cannot be allocated.
inline bool make_gather_data(const Shape& shape, size_t batch_count, GatherData* data) {
  const int64_t elements = shape.rows * shape.dim;
  data->table = allocate_floats(elements);
  if (!data->table) return false;
  Rng values(seed_for(shape, 0));
  float* table = data->table.get();
  for (int64_t i = 0; i < elements; ++i) table[i] = values.symmetric_unit();

  data->offsets.resize(static_cast<size_t>(shape.bags) + 1);
  for (int64_t b = 0; b <= shape.bags; ++b) {
    data->offsets[static_cast<size_t>(b)] = b * shape.pooling;
  }
  std::unique_ptr<ZipfSampler> zipf;
  if (shape.distribution == Distribution::kZipf) {
    zipf = std::make_unique<ZipfSampler>(shape.rows, kZipfExponent);
  }
  data->batches.resize(batch_count);
  for (size_t k = 0; k < batch_count; ++k) {
    Rng rng(seed_for(shape, k + 1));
    std::vector<int64_t>& batch = data->batches[k];
    batch.resize(static_cast<size_t>(shape.bags * shape.pooling));
    for (int64_t& idx : batch) idx = zipf ? zipf->sample(rng) : rng.below(shape.rows);
  }
  return true;
}

}  // namespace embag::bench
