// CPU feature detection: cpuid and xgetbv on x86-64, the kernel's hardware capabilities
// (getauxval) on ARM, and the data cache sizes (Linux's sysfs, else cpuid through glibc). Every
// other file asks cpu_supports() and cpu_cache_sizes().
#include "cpu_features.h"

#if defined(__x86_64__)
#include <cpuid.h>
#elif defined(__aarch64__) || defined(__arm__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <string>

#include "enum_tables.h"

namespace embag::internal {
namespace {

// On another architecture than the one a flag belongs to, it stays false: an x86 build never
// claims NEON, and an ARM build never claims AVX.
struct CpuFeatures {
  bool sse41 = false, avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false, avx512cd = false;
  // 64-bit ARM: Advanced SIMD, and the optional half-precision arithmetic (reported, not
  // required). 32-bit ARM: NEON and VFPv3 (Halide's arm-32-linux code uses both).
  bool asimd = false, asimd_fp16 = false;
  bool neon = false, vfpv3 = false;
};

#if defined(__x86_64__)

uint64_t read_xcr0() {
  uint32_t eax = 0, edx = 0;
  // xgetbv(0): which register states the OS saves on context switch.
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  f.sse41 = ecx & bit_SSE4_1;
  const bool osxsave = ecx & bit_OSXSAVE;
  const bool cpu_avx = ecx & bit_AVX;
  f.fma = ecx & bit_FMA;
  f.f16c = ecx & bit_F16C;
  const uint64_t xcr0 = osxsave ? read_xcr0() : 0;
  const bool os_ymm = (xcr0 & 0x6) == 0x6;    // SSE and AVX state
  const bool os_zmm = (xcr0 & 0xE6) == 0xE6;  // plus opmask and both ZMM halves
  f.avx = cpu_avx && os_ymm;
  f.fma = f.fma && f.avx;
  f.f16c = f.f16c && f.avx;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    f.avx2 = f.avx && (ebx & bit_AVX2);
    f.avx512f = os_zmm && (ebx & bit_AVX512F);
    f.avx512bw = f.avx512f && (ebx & bit_AVX512BW);
    f.avx512dq = f.avx512f && (ebx & bit_AVX512DQ);
    f.avx512vl = f.avx512f && (ebx & bit_AVX512VL);
    f.avx512cd = f.avx512f && (ebx & bit_AVX512CD);
  }
  return f;
}
#elif defined(__aarch64__) || defined(__arm__)
CpuFeatures detect() {
  CpuFeatures f;
  const unsigned long hwcap = getauxval(AT_HWCAP);
#if defined(__aarch64__)
  f.asimd = hwcap & HWCAP_ASIMD;
  f.asimd_fp16 = hwcap & HWCAP_ASIMDHP;
#else
  f.neon = hwcap & HWCAP_NEON;
  f.vfpv3 = hwcap & HWCAP_VFPv3;
#endif
  return f;
}
#else
CpuFeatures detect() { return {}; }
#endif

const CpuFeatures& features() {
  static const CpuFeatures cached = detect();
  return cached;
}

}  // namespace

bool cpu_supports(Isa isa) {
  const CpuFeatures& f = features();
  switch (isa) {
    case Isa::kSse41:
      return f.sse41;
    // The avx2 kernels are compiled for AVX + AVX2 + FMA + F16C + SSE4.1.
    case Isa::kAvx2:
      return f.avx2 && f.fma && f.f16c && f.sse41;
    // Halide's avx512_skylake feature set: F, BW, DQ, VL and CD, on top of the avx2 set.
    case Isa::kAvx512:
      return f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl && f.avx512cd && f.avx2 && f.fma &&
             f.f16c;
    // ARMv8-A Advanced SIMD; mandatory in the architecture, but asked rather than assumed.
    case Isa::kNeon:
      return f.asimd;
    case Isa::kArmv7:
      return f.neon && f.vfpv3;
    // GPU instruction sets: the device decides, not the CPU.
    case Isa::kCudaSm86:
    case Isa::kCudaSm80:
    case Isa::kOpenCL:
      return false;
  }
  return false;
}

const char* isa_requirement(Isa isa) {
  const IsaInfo* row = find_row(kIsaTable, &IsaInfo::isa, isa);
  return row ? row->requirement : "?";
}

std::string cpu_feature_summary() {
  const CpuFeatures& f = features();
  std::string s;
  auto add = [&s](bool has, const char* name) {
    if (!has) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(f.sse41, "sse4.1");
  add(f.avx, "avx");
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.f16c, "f16c");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512dq, "avx512dq");
  add(f.avx512vl, "avx512vl");
  add(f.avx512cd, "avx512cd");
  add(f.asimd, "asimd");
  add(f.asimd_fp16, "asimdhp");
  add(f.neon, "neon");
  add(f.vfpv3, "vfpv3");
  return s.empty() ? "(none of interest)" : s;
}

namespace {

// "48K", "2048K", "32M" (sysfs's cache size format) -> bytes; 0 for anything else.
int64_t parse_cache_size(const std::string& text) {
  size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (...) {
    return 0;
  }
  const std::string unit = text.substr(used);
  if (unit.empty()) return value;
  if (unit[0] == 'K') return value << 10;
  if (unit[0] == 'M') return value << 20;
  if (unit[0] == 'G') return value << 30;
  return 0;
}

std::string read_line(const std::string& path) {
  std::ifstream file(path);
  std::string line;
  std::getline(file, line);
  return line;
}

// The caches of the CPU this thread started on (cpu0: the sizes are per cache instance and alike
// across cores on every machine embag targets). Linux lists them under sysfs on x86 and ARM
// alike; glibc's sysconf asks cpuid on x86 where sysfs is missing (some containers).
CacheSizes detect_caches() {
  CacheSizes sizes;
  for (int index = 0; index < 16; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index);
    const std::string level = read_line(dir + "/level");
    if (level.empty()) break;
    const std::string type = read_line(dir + "/type");
    if (type != "Data" && type != "Unified") continue;
    const int64_t bytes = parse_cache_size(read_line(dir + "/size"));
    if (level == "1") sizes.l1d = bytes;
    if (level == "2") sizes.l2 = bytes;
    if (level == "3") sizes.l3 = bytes;
  }
  if (sizes.l1d > 0 || sizes.l2 > 0 || sizes.l3 > 0) {
    sizes.source = "sysfs";
    return sizes;
  }
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE) && \
    defined(_SC_LEVEL3_CACHE_SIZE)
  sizes.l1d = std::max<long>(sysconf(_SC_LEVEL1_DCACHE_SIZE), 0);
  sizes.l2 = std::max<long>(sysconf(_SC_LEVEL2_CACHE_SIZE), 0);
  sizes.l3 = std::max<long>(sysconf(_SC_LEVEL3_CACHE_SIZE), 0);
  if (sizes.l1d > 0 || sizes.l2 > 0 || sizes.l3 > 0) sizes.source = "cpuid";
#endif
  return sizes;
}

}  // namespace

const CacheSizes& cpu_cache_sizes() {
  static const CacheSizes cached = detect_caches();
  return cached;
}

}  // namespace embag::internal
