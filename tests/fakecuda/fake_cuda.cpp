// tests/fakecuda/fake_cuda.cpp: a fake CUDA driver (built as libcuda.so.1, with libcuda.so
// beside it) that checks the driver-API contract on every call embag and Halide's CUDA runtime
// make, and runs the kernels' PTX through the PTX interpreter (ptx_interpreter.h) when this
// build has it.
//
// Why a fake: no development machine or CI runner has a GPU, and no emulator takes the driver
// calls Halide makes (PTX 7.x through cuModuleLoadData). Device memory is host memory (mmap'd,
// MAP_NORESERVE, so record-only tests can allocate far past RAM), every "asynchronous"
// operation completes before its call returns, contexts are a per-thread stack and streams
// remember their context. Every rule the fake checks is one a real driver enforces (grid and
// block limits), or one whose breach a real GPU shows only as a wrong result or a crash some of
// the time (the wrong stream, the wrong context, memory outside an allocation): the fake records
// each breach as a violation, which tests read through fake_cuda.h.
#include "fake_cuda.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>

#if FAKECUDA_HAS_INTERPRETER
#include "ptx_interpreter.h"
#endif

#define FAKECUDA_API extern "C" __attribute__((visibility("default")))

namespace fakecuda {
namespace {

// Driver ABI values (cuda.h), the few the fake returns or reads.
enum Result : int {
  kSuccess = 0,
  kInvalidValue = 1,
  kOutOfMemory = 2,
  kNotInitialized = 3,
  kNoDevice = 100,
  kInvalidDevice = 101,
  kInvalidContext = 201,
  kInvalidPtx = 218,
  kInvalidHandle = 400,
  kNotFound = 500,
  kIllegalAddress = 700,
  kLaunchFailed = 719,
  kNotSupported = 801,
};
constexpr uint64_t kMaxGridX = 2147483647u;  // CUDA's limits, compute capability 3.0 and up
constexpr uint32_t kMaxGridYZ = 65535;
constexpr uint32_t kMaxThreadsPerBlock = 1024;
constexpr uint32_t kMaxBlockXY = 1024, kMaxBlockZ = 64;
constexpr uint32_t kMaxSharedBytes = 48 * 1024;

struct Context {
  int device = 0;
  bool primary = false;
  int primary_refs = 0;
};

struct Stream {
  Context* context = nullptr;
};

struct Allocation {
  uint64_t base = 0;
  size_t bytes = 0;   // as asked
  size_t mapped = 0;  // as mapped (whole pages)
  Context* context = nullptr;
  bool async = false;      // cuMemAllocAsync (embag's scratch) or cuMemAlloc (Halide's, tests')
  void* stream = nullptr;  // the stream of an async allocation
  uint64_t call = 0;       // the call it was made in (0: outside any)
};

struct Function;
struct Module {
  Context* context = nullptr;
  std::string text;
  std::map<std::string, std::vector<size_t>> entries;  // entry -> parameter sizes (bytes)
  std::vector<std::unique_ptr<Function>> functions;
#if FAKECUDA_HAS_INTERPRETER
  std::unique_ptr<PtxModule> program;
#endif
};

struct Function {
  Module* module = nullptr;
  std::string entry;
};

// One open embag call on a thread (fakecuda_begin_call .. fakecuda_end_call).
struct OpenCall {
  uint64_t id = 0;
  void* stream = nullptr;
  Context* stream_context = nullptr;  // the legacy stream's context when `stream` is null
  std::vector<Context*> stack_at_start;
  CallRecord record;
};

// Everything shared between threads, behind one lock: calls are serialised through the fake
// (the tests that use it are not the concurrency tests).
struct State {
  std::mutex mutex;
  bool record_only = false;
  int devices = 2;
  int capability = 86;
  std::vector<std::unique_ptr<Context>> contexts;  // never freed: handles stay recognisable
  std::set<Context*> live_contexts;
  std::vector<Context*> primary;  // per device
  std::set<Stream*> streams;
  std::map<uint64_t, Allocation> allocations;  // by base
  std::map<uint64_t, size_t> freed;            // base -> mapped bytes, until mapped again
  std::set<Module*> modules;
  std::set<Function*> functions;
  std::vector<std::string> violations;
  std::vector<LaunchRecord> launches;
  uint64_t next_call = 1;
};

State& state() {
  static State* s = [] {
    auto* st = new State;
    if (const char* cc = std::getenv("FAKECUDA_COMPUTE_CAPABILITY")) st->capability = std::atoi(cc);
    if (const char* n = std::getenv("FAKECUDA_DEVICES")) st->devices = std::atoi(n);
    if (const char* r = std::getenv("FAKECUDA_RECORD_ONLY")) st->record_only = std::atoi(r) != 0;
    st->primary.resize(static_cast<size_t>(std::max(st->devices, 0)), nullptr);
    return st;
  }();
  return *s;
}

thread_local std::vector<Context*> t_stack;
thread_local std::unique_ptr<OpenCall> t_call;
thread_local CallRecord t_last_call;
thread_local std::string t_last_message;

std::string hex(uint64_t v) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "0x%llx", static_cast<unsigned long long>(v));
  return buffer;
}
std::string ptr(const void* p) { return hex(reinterpret_cast<uint64_t>(p)); }

// Records a broken rule (caller holds the lock). Also on stderr, so a failing test's log shows
// where it happened.
void violation(const char* entry_point, const std::string& what) {
  State& s = state();
  std::string line = std::string(entry_point) + ": " + what;
  std::fprintf(stderr, "fakecuda violation: %s\n", line.c_str());
  s.violations.push_back(line);
  if (t_call) t_call->record.violations.push_back(line);
}

Context* current() { return t_stack.empty() ? nullptr : t_stack.back(); }

bool is_context(Context* c) { return c != nullptr && state().live_contexts.count(c) != 0; }

// The context of `stream` (null and the legacy / per-thread handles 0x1, 0x2: the current one),
// or null with a violation when the stream is unknown.
bool stream_context(const char* entry_point, void* stream, Context** out) {
  const auto value = reinterpret_cast<uintptr_t>(stream);
  if (value <= 2) {
    *out = current();
    return true;
  }
  auto* st = static_cast<Stream*>(stream);
  if (state().streams.count(st) == 0) {
    violation(entry_point, "stream " + ptr(stream) + " is not a live stream");
    return false;
  }
  *out = st->context;
  return true;
}

// A context must be current (caller holds the lock).
bool need_current(const char* entry_point) {
  if (current() == nullptr) {
    violation(entry_point, "no context is current on this thread");
    return false;
  }
  return true;
}

// The rules for work issued on a stream: the stream's context is current, and inside an embag
// call the stream is the caller's.
bool check_stream_work(const char* entry_point, void* stream) {
  Context* context = nullptr;
  if (!stream_context(entry_point, stream, &context)) return false;
  if (!need_current(entry_point)) return false;
  bool ok = true;
  if (context != current()) {
    violation(entry_point, "stream " + ptr(stream) + " belongs to context " + ptr(context) +
                               ", but context " + ptr(current()) + " is current");
    ok = false;
  }
  if (t_call) {
    const std::string name = "stream " + ptr(stream);
    auto& used = t_call->record.streams_used;
    if (std::find(used.begin(), used.end(), name) == used.end()) used.push_back(name);
    const bool same = stream == t_call->stream ||
                      (reinterpret_cast<uintptr_t>(stream) <= 2 && t_call->stream == nullptr &&
                       context == t_call->stream_context);
    if (!same) {
      violation(entry_point, "work issued on stream " + ptr(stream) +
                                 ", not on the caller's stream " + ptr(t_call->stream));
      ok = false;
    }
  }
  return ok;
}

void count_sync() {
  if (t_call) ++t_call->record.synchronisations;
}

// The live allocation holding [address, address + bytes), or null.
const Allocation* find_allocation(uint64_t address, size_t bytes) {
  auto& allocations = state().allocations;
  auto it = allocations.upper_bound(address);
  if (it == allocations.begin()) return nullptr;
  --it;
  const Allocation& a = it->second;
  if (address < a.base || bytes > a.bytes || address - a.base > a.bytes - bytes) return nullptr;
  return &a;
}

bool in_freed_range(uint64_t address) {
  auto& freed = state().freed;
  auto it = freed.upper_bound(address);
  if (it == freed.begin()) return false;
  --it;
  return address - it->first < it->second;
}

bool check_range(const char* entry_point, const char* role, uint64_t address, size_t bytes) {
  if (bytes == 0) return true;
  if (find_allocation(address, bytes) != nullptr) return true;
  violation(entry_point, std::string(role) + " [" + hex(address) + ", +" + std::to_string(bytes) +
                             ") is not inside one live allocation");
  return false;
}

uint64_t map_memory(size_t bytes, size_t* mapped) {
  const size_t page = 4096;
  *mapped = (std::max<size_t>(bytes, 1) + page - 1) / page * page;
  void* p = mmap(nullptr, *mapped, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? 0 : reinterpret_cast<uint64_t>(p);
}

Result allocate(const char* entry_point, unsigned long long* out, size_t bytes, bool async,
                void* stream) {
  State& s = state();
  if (out == nullptr) {
    violation(entry_point, "null result pointer");
    return kInvalidValue;
  }
  size_t mapped = 0;
  const uint64_t base = map_memory(bytes, &mapped);
  if (base == 0) return kOutOfMemory;
  // The range is live again: forget any freed allocation it overlaps.
  // (Freed ranges never overlap each other, so walking down from the new range's end stops at
  // the first one wholly below it.)
  for (auto it = s.freed.lower_bound(base + mapped); it != s.freed.begin();) {
    --it;
    if (it->first + it->second <= base) break;
    it = s.freed.erase(it);
  }
  Allocation a;
  a.base = base;
  a.bytes = bytes;
  a.mapped = mapped;
  a.context = current();
  a.async = async;
  a.stream = stream;
  a.call = t_call ? t_call->id : 0;
  s.allocations[base] = a;
  *out = base;
  return kSuccess;
}

Result release(const char* entry_point, uint64_t base, bool async, void* stream) {
  State& s = state();
  auto it = s.allocations.find(base);
  if (it == s.allocations.end()) {
    violation(entry_point, hex(base) + " is not the start of a live allocation");
    return kInvalidValue;
  }
  const Allocation& a = it->second;
  if (a.async && (!async || a.stream != stream)) {
    violation(entry_point, "allocation " + hex(base) + " came from cuMemAllocAsync on stream " +
                               ptr(a.stream) + " but is freed " +
                               (async ? "on stream " + ptr(stream) : std::string("synchronously")));
  }
  // (No context rule: with unified addressing a pointer names its allocation in any context,
  // and Halide's runtime frees the cached buffers of other contexts when it trims its free list.)
  munmap(reinterpret_cast<void*>(a.base), a.mapped);
  s.freed[a.base] = a.mapped;
  s.allocations.erase(it);
  return kSuccess;
}

// The entries of a PTX module and their parameters' sizes, read from the entries' signatures
// (`.visible .entry name(.param .u64 name_param_0, .param .align 8 .b8 name_param_1[16])`). The
// fake needs this even without the interpreter: cuLaunchKernel's argument list has no length.
bool parse_entries(const std::string& text, std::map<std::string, std::vector<size_t>>* entries,
                   std::string* error) {
  size_t at = 0;
  while ((at = text.find(".entry", at)) != std::string::npos) {
    at += 6;
    size_t open = text.find('(', at);
    size_t close = text.find(')', at);
    if (open == std::string::npos || close == std::string::npos || close < open) {
      *error = "an .entry without a parameter list";
      return false;
    }
    std::string name = text.substr(at, open - at);
    name.erase(std::remove_if(name.begin(), name.end(), [](char c) { return std::isspace(c); }),
               name.end());
    std::vector<size_t> sizes;
    std::stringstream params(text.substr(open + 1, close - open - 1));
    for (std::string param; std::getline(params, param, ',');) {
      if (param.find(".param") == std::string::npos) continue;
      size_t bytes = 0;
      if (const size_t bracket = param.find('['); bracket != std::string::npos) {
        bytes = std::strtoull(param.c_str() + bracket + 1, nullptr, 10);  // .b8 name[K]
      } else if (param.find("64") != std::string::npos) {
        bytes = 8;
      } else if (param.find("32") != std::string::npos) {
        bytes = 4;
      } else if (param.find("16") != std::string::npos) {
        bytes = 2;
      } else if (param.find(".b8") != std::string::npos || param.find(".u8") != std::string::npos ||
                 param.find(".s8") != std::string::npos) {
        bytes = 1;
      } else {
        *error = "a parameter of " + name + " the fake cannot size: " + param;
        return false;
      }
      sizes.push_back(bytes);
    }
    (*entries)[name] = sizes;
    at = close;
  }
  return true;
}

#if FAKECUDA_HAS_INTERPRETER
// Kernel loads and stores checked against the live allocations.
class AllocationChecker : public MemoryChecker {
 public:
  bool check_access(uint64_t address, size_t bytes, bool is_store, std::string* error) override {
    if (find_allocation(address, bytes) != nullptr) return true;
    *error = std::string(is_store ? "store" : "load") + " of " + std::to_string(bytes) +
             " bytes at " + hex(address) + " is not inside one live allocation";
    return false;
  }
};
#endif

}  // namespace

std::vector<std::string> violations() {
  std::lock_guard<std::mutex> lock(state().mutex);
  return state().violations;
}
std::vector<LaunchRecord> launches() {
  std::lock_guard<std::mutex> lock(state().mutex);
  return state().launches;
}
CallRecord last_call() { return t_last_call; }
void clear() {
  std::lock_guard<std::mutex> lock(state().mutex);
  state().violations.clear();
  state().launches.clear();
}
void set_record_only(bool on) {
  std::lock_guard<std::mutex> lock(state().mutex);
  state().record_only = on;
}
void set_compute_capability(int capability) {
  std::lock_guard<std::mutex> lock(state().mutex);
  state().capability = capability;
}
bool executes_kernels() {
  std::lock_guard<std::mutex> lock(state().mutex);
#if FAKECUDA_HAS_INTERPRETER
  return !state().record_only;
#else
  return false;
#endif
}
size_t live_allocations() {
  std::lock_guard<std::mutex> lock(state().mutex);
  return state().allocations.size();
}

}  // namespace fakecuda

using namespace fakecuda;

// ---- Introspection (C, for dlsym) --------------------------------------------------------------

FAKECUDA_API void fakecuda_begin_call(void* caller_stream) {
  std::lock_guard<std::mutex> lock(state().mutex);
  if (t_call) violation("fakecuda_begin_call", "a call is already open on this thread");
  t_call = std::make_unique<OpenCall>();
  t_call->id = state().next_call++;
  t_call->stream = caller_stream;
  t_call->stream_context = current();
  t_call->stack_at_start = t_stack;
}

FAKECUDA_API const char* fakecuda_end_call(void) {
  std::lock_guard<std::mutex> lock(state().mutex);
  if (!t_call) {
    violation("fakecuda_end_call", "no call is open on this thread");
  } else {
    if (t_stack != t_call->stack_at_start) {
      violation("embag call", "the thread's context stack has " + std::to_string(t_stack.size()) +
                                  " contexts after the call, " +
                                  std::to_string(t_call->stack_at_start.size()) +
                                  " before (pushes and pops do not balance)");
    }
    for (const auto& [base, a] : state().allocations) {
      if (a.call != t_call->id) continue;
      const std::string what =
          "allocation " + hex(base) + " of " + std::to_string(a.bytes) + " bytes";
      if (a.async) {
        violation("embag call",
                  "cuMemAllocAsync " + what + " made during the call is alive after it returned");
      } else {
        t_call->record.halide_cached.push_back("cuMemAlloc " + what);
      }
    }
    t_last_call = std::move(t_call->record);
    t_call.reset();
  }
  if (t_last_call.violations.empty()) return nullptr;
  t_last_message.clear();
  for (const std::string& v : t_last_call.violations) t_last_message += v + "\n";
  return t_last_message.c_str();
}

// ---- The driver API
// ------------------------------------------------------------------------------

#define LOCK std::lock_guard<std::mutex> lock(state().mutex)

FAKECUDA_API int cuInit(unsigned int flags) {
  LOCK;
  if (flags != 0) violation("cuInit", "flags must be 0");
  return state().devices > 0 ? kSuccess : kNoDevice;
}

FAKECUDA_API int cuDriverGetVersion(int* version) {
  *version = 12040;
  return kSuccess;
}

FAKECUDA_API int cuDeviceGetCount(int* count) {
  LOCK;
  *count = state().devices;
  return kSuccess;
}

FAKECUDA_API int cuDeviceGet(int* device, int ordinal) {
  LOCK;
  if (ordinal < 0 || ordinal >= state().devices) return kInvalidDevice;
  *device = ordinal;
  return kSuccess;
}

FAKECUDA_API int cuDeviceGetName(char* name, int length, int device) {
  LOCK;
  if (device < 0 || device >= state().devices) return kInvalidDevice;
  std::snprintf(name, static_cast<size_t>(length), "fakecuda device %d (sm_%d, host memory)",
                device, state().capability);
  return kSuccess;
}

FAKECUDA_API int cuDeviceTotalMem_v2(size_t* bytes, int device) {
  LOCK;
  if (device < 0 || device >= state().devices) return kInvalidDevice;
  *bytes = size_t{80} << 30;
  return kSuccess;
}

FAKECUDA_API int cuDeviceGetAttribute(int* value, int attribute, int device) {
  LOCK;
  if (device < 0 || device >= state().devices) return kInvalidDevice;
  switch (attribute) {
    case 1:
      *value = kMaxThreadsPerBlock;
      break;  // MAX_THREADS_PER_BLOCK
    case 2:
    case 3:
      *value = kMaxBlockXY;
      break;  // MAX_BLOCK_DIM_X, Y
    case 4:
      *value = kMaxBlockZ;
      break;  // MAX_BLOCK_DIM_Z
    case 5:
      *value = static_cast<int>(kMaxGridX);
      break;  // MAX_GRID_DIM_X
    case 6:
    case 7:
      *value = kMaxGridYZ;
      break;  // MAX_GRID_DIM_Y, Z
    case 8:
      *value = kMaxSharedBytes;
      break;  // SHARED_MEMORY_PER_BLOCK
    case 9:
      *value = 65536;
      break;  // TOTAL_CONSTANT_MEMORY
    case 10:
      *value = 32;
      break;  // WARP_SIZE
    case 16:
      *value = 108;
      break;  // MULTIPROCESSOR_COUNT
    case 75:
      *value = state().capability / 10;
      break;  // COMPUTE_CAPABILITY_MAJOR
    case 76:
      *value = state().capability % 10;
      break;  // COMPUTE_CAPABILITY_MINOR
    default:
      violation("cuDeviceGetAttribute",
                "attribute " + std::to_string(attribute) + " is not one the fake knows (add it)");
      return kInvalidValue;
  }
  return kSuccess;
}

FAKECUDA_API int cuGetErrorName(int error, const char** name) {
  static const std::map<int, const char*> names = {
      {0, "CUDA_SUCCESS"},
      {1, "CUDA_ERROR_INVALID_VALUE"},
      {2, "CUDA_ERROR_OUT_OF_MEMORY"},
      {3, "CUDA_ERROR_NOT_INITIALIZED"},
      {100, "CUDA_ERROR_NO_DEVICE"},
      {101, "CUDA_ERROR_INVALID_DEVICE"},
      {201, "CUDA_ERROR_INVALID_CONTEXT"},
      {218, "CUDA_ERROR_INVALID_PTX"},
      {400, "CUDA_ERROR_INVALID_HANDLE"},
      {500, "CUDA_ERROR_NOT_FOUND"},
      {700, "CUDA_ERROR_ILLEGAL_ADDRESS"},
      {719, "CUDA_ERROR_LAUNCH_FAILED"},
      {801, "CUDA_ERROR_NOT_SUPPORTED"},
  };
  auto it = names.find(error);
  if (it == names.end()) {
    *name = nullptr;
    return kInvalidValue;
  }
  *name = it->second;
  return kSuccess;
}

FAKECUDA_API int cuGetErrorString(int error, const char** text) {
  return cuGetErrorName(error, text);
}

// ---- Contexts
// ------------------------------------------------------------------------------------

FAKECUDA_API int cuCtxCreate_v2(void** context, unsigned int flags, int device) {
  LOCK;
  (void)flags;
  if (device < 0 || device >= state().devices) return kInvalidDevice;
  state().contexts.push_back(std::make_unique<Context>());
  Context* c = state().contexts.back().get();
  c->device = device;
  state().live_contexts.insert(c);
  t_stack.push_back(c);  // cuCtxCreate makes the new context current
  *context = c;
  return kSuccess;
}

FAKECUDA_API int cuCtxDestroy_v2(void* context) {
  LOCK;
  auto* c = static_cast<Context*>(context);
  if (!is_context(c) || c->primary) {
    violation("cuCtxDestroy_v2", ptr(context) + " is not a live, non-primary context");
    return kInvalidContext;
  }
  state().live_contexts.erase(c);
  t_stack.erase(std::remove(t_stack.begin(), t_stack.end(), c), t_stack.end());
  return kSuccess;
}

FAKECUDA_API int cuDevicePrimaryCtxRetain(void** context, int device) {
  LOCK;
  if (device < 0 || device >= state().devices) return kInvalidDevice;
  Context*& p = state().primary[static_cast<size_t>(device)];
  if (p == nullptr) {
    state().contexts.push_back(std::make_unique<Context>());
    p = state().contexts.back().get();
    p->device = device;
    p->primary = true;
    state().live_contexts.insert(p);
  }
  ++p->primary_refs;
  *context = p;
  return kSuccess;
}

FAKECUDA_API int cuDevicePrimaryCtxRelease_v2(int device) {
  LOCK;
  if (device < 0 || device >= state().devices) return kInvalidDevice;
  Context* p = state().primary[static_cast<size_t>(device)];
  if (p == nullptr || p->primary_refs == 0) {
    violation("cuDevicePrimaryCtxRelease_v2",
              "device " + std::to_string(device) + "'s primary context is not retained");
    return kInvalidContext;
  }
  --p->primary_refs;  // the context stays (a real driver may keep it too)
  return kSuccess;
}

FAKECUDA_API int cuCtxGetCurrent(void** context) {
  LOCK;
  *context = current();
  return kSuccess;
}

FAKECUDA_API int cuCtxSetCurrent(void* context) {
  LOCK;
  auto* c = static_cast<Context*>(context);
  if (c != nullptr && !is_context(c)) return kInvalidContext;
  if (t_stack.empty()) {
    if (c != nullptr) t_stack.push_back(c);
  } else if (c == nullptr) {
    t_stack.pop_back();
  } else {
    t_stack.back() = c;
  }
  return kSuccess;
}

FAKECUDA_API int cuCtxPushCurrent_v2(void* context) {
  LOCK;
  auto* c = static_cast<Context*>(context);
  if (!is_context(c)) {
    violation("cuCtxPushCurrent_v2", ptr(context) + " is not a live context");
    return kInvalidContext;
  }
  t_stack.push_back(c);
  return kSuccess;
}

FAKECUDA_API int cuCtxPopCurrent_v2(void** context) {
  LOCK;
  if (t_stack.empty()) {
    violation("cuCtxPopCurrent_v2", "the thread's context stack is empty");
    return kInvalidContext;
  }
  if (context != nullptr) *context = t_stack.back();
  t_stack.pop_back();
  return kSuccess;
}

FAKECUDA_API int cuCtxGetDevice(int* device) {
  LOCK;
  if (!need_current("cuCtxGetDevice")) return kInvalidContext;
  *device = current()->device;
  return kSuccess;
}

FAKECUDA_API int cuCtxGetApiVersion(void* context, unsigned int* version) {
  LOCK;
  if (!is_context(static_cast<Context*>(context))) return kInvalidContext;
  *version = 12040;
  return kSuccess;
}

FAKECUDA_API int cuCtxSynchronize() {
  LOCK;
  if (!need_current("cuCtxSynchronize")) return kInvalidContext;
  count_sync();
  return kSuccess;
}

FAKECUDA_API int cuProfilerStop() { return kSuccess; }

// ---- Streams
// -------------------------------------------------------------------------------------

FAKECUDA_API int cuStreamCreate(void** stream, unsigned int flags) {
  LOCK;
  (void)flags;
  if (!need_current("cuStreamCreate")) return kInvalidContext;
  auto* s = new Stream;
  s->context = current();
  state().streams.insert(s);
  *stream = s;
  return kSuccess;
}

FAKECUDA_API int cuStreamDestroy_v2(void* stream) {
  LOCK;
  auto* s = static_cast<Stream*>(stream);
  if (state().streams.erase(s) == 0) {
    violation("cuStreamDestroy_v2", ptr(stream) + " is not a live stream");
    return kInvalidHandle;
  }
  delete s;
  return kSuccess;
}

FAKECUDA_API int cuStreamGetCtx(void* stream, void** context) {
  LOCK;
  Context* c = nullptr;
  if (reinterpret_cast<uintptr_t>(stream) > 2 &&
      state().streams.count(static_cast<Stream*>(stream)) == 0) {
    return kInvalidHandle;  // embag turns this into its "not a CUDA stream" refusal
  }
  if (!stream_context("cuStreamGetCtx", stream, &c)) return kInvalidHandle;
  if (c == nullptr) return kInvalidContext;
  *context = c;
  return kSuccess;
}

FAKECUDA_API int cuStreamSynchronize(void* stream) {
  LOCK;
  Context* c = nullptr;
  if (!stream_context("cuStreamSynchronize", stream, &c)) return kInvalidHandle;
  count_sync();
  return kSuccess;
}

// ---- Memory
// --------------------------------------------------------------------------------------

FAKECUDA_API int cuMemAlloc_v2(unsigned long long* pointer, size_t bytes) {
  LOCK;
  if (!need_current("cuMemAlloc_v2")) return kInvalidContext;
  return allocate("cuMemAlloc_v2", pointer, bytes, false, nullptr);
}

FAKECUDA_API int cuMemFree_v2(unsigned long long pointer) {
  LOCK;
  if (!need_current("cuMemFree_v2")) return kInvalidContext;
  return release("cuMemFree_v2", pointer, false, nullptr);
}

FAKECUDA_API int cuMemAllocAsync(unsigned long long* pointer, size_t bytes, void* stream) {
  LOCK;
  if (!check_stream_work("cuMemAllocAsync", stream)) return kInvalidContext;
  return allocate("cuMemAllocAsync", pointer, bytes, true, stream);
}

FAKECUDA_API int cuMemFreeAsync(unsigned long long pointer, void* stream) {
  LOCK;
  if (!check_stream_work("cuMemFreeAsync", stream)) return kInvalidContext;
  return release("cuMemFreeAsync", pointer, true, stream);
}

// Copies: both ends checked, then done at once (the fake's streams complete every operation
// before the call returns, which is one legal schedule of a real stream).
static int copy(const char* entry_point, uint64_t dst, bool dst_device, uint64_t src,
                bool src_device, size_t bytes, bool async, void* stream) {
  if (async) {
    if (!check_stream_work(entry_point, stream)) return kInvalidContext;
  } else {
    if (!need_current(entry_point)) return kInvalidContext;
    count_sync();  // a synchronous copy waits for the device
  }
  bool ok = true;
  if (dst_device) ok = check_range(entry_point, "destination", dst, bytes) && ok;
  if (src_device) ok = check_range(entry_point, "source", src, bytes) && ok;
  if (!ok) return kInvalidValue;
  if (bytes > 0)
    std::memmove(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), bytes);
  return kSuccess;
}

FAKECUDA_API int cuMemcpyHtoD_v2(unsigned long long dst, const void* src, size_t bytes) {
  LOCK;
  return copy("cuMemcpyHtoD_v2", dst, true, reinterpret_cast<uint64_t>(src), false, bytes, false,
              nullptr);
}
FAKECUDA_API int cuMemcpyDtoH_v2(void* dst, unsigned long long src, size_t bytes) {
  LOCK;
  return copy("cuMemcpyDtoH_v2", reinterpret_cast<uint64_t>(dst), false, src, true, bytes, false,
              nullptr);
}
FAKECUDA_API int cuMemcpyDtoD_v2(unsigned long long dst, unsigned long long src, size_t bytes) {
  LOCK;
  return copy("cuMemcpyDtoD_v2", dst, true, src, true, bytes, false, nullptr);
}
FAKECUDA_API int cuMemcpyHtoDAsync_v2(unsigned long long dst, const void* src, size_t bytes,
                                      void* stream) {
  LOCK;
  return copy("cuMemcpyHtoDAsync_v2", dst, true, reinterpret_cast<uint64_t>(src), false, bytes,
              true, stream);
}
FAKECUDA_API int cuMemcpyDtoHAsync_v2(void* dst, unsigned long long src, size_t bytes,
                                      void* stream) {
  LOCK;
  return copy("cuMemcpyDtoHAsync_v2", reinterpret_cast<uint64_t>(dst), false, src, true, bytes,
              true, stream);
}
FAKECUDA_API int cuMemcpyDtoDAsync_v2(unsigned long long dst, unsigned long long src, size_t bytes,
                                      void* stream) {
  LOCK;
  return copy("cuMemcpyDtoDAsync_v2", dst, true, src, true, bytes, true, stream);
}

// Halide resolves it but copies row by row with the 1-D copies above; refused loudly if that
// ever changes, rather than emulated untested.
FAKECUDA_API int cuMemcpy3D_v2(const void*) {
  LOCK;
  violation("cuMemcpy3D_v2", "not implemented by the fake (Halide 21 does not call it)");
  return kNotSupported;
}

FAKECUDA_API int cuMemsetD8_v2(unsigned long long dst, unsigned char value, size_t bytes) {
  LOCK;
  if (!need_current("cuMemsetD8_v2")) return kInvalidContext;
  count_sync();
  if (!check_range("cuMemsetD8_v2", "destination", dst, bytes)) return kInvalidValue;
  std::memset(reinterpret_cast<void*>(dst), value, bytes);
  return kSuccess;
}

FAKECUDA_API int cuPointerGetAttribute(void* result, int attribute, unsigned long long pointer) {
  LOCK;
  const Allocation* a = find_allocation(pointer, 1);
  if (a == nullptr) return kInvalidValue;
  if (attribute == 1) {  // CU_POINTER_ATTRIBUTE_CONTEXT
    *static_cast<void**>(result) = a->context;
    return kSuccess;
  }
  violation("cuPointerGetAttribute", "attribute " + std::to_string(attribute) + " not implemented");
  return kNotSupported;
}

// ---- Modules and launches
// ------------------------------------------------------------------------

FAKECUDA_API int cuModuleLoadData(void** module, const void* image) {
  LOCK;
  if (!need_current("cuModuleLoadData")) return kInvalidContext;
  auto m = std::make_unique<Module>();
  m->context = current();
  m->text = static_cast<const char*>(image);
  std::string error;
  if (!parse_entries(m->text, &m->entries, &error)) {
    violation("cuModuleLoadData", error);
    return kInvalidPtx;
  }
#if FAKECUDA_HAS_INTERPRETER
  // Parsed at load time, like the driver's JIT: PTX the interpreter does not know fails here,
  // loudly, whatever the mode.
  m->program = PtxModule::parse(m->text, &error);
  if (!m->program) {
    violation("cuModuleLoadData", "the PTX interpreter refused the module: " + error);
    return kInvalidPtx;
  }
#endif
  *module = m.get();
  state().modules.insert(m.release());
  return kSuccess;
}

FAKECUDA_API int cuModuleLoadDataEx(void** module, const void* image, unsigned int, void*, void**) {
  return cuModuleLoadData(module, image);
}

FAKECUDA_API int cuModuleUnload(void* module) {
  LOCK;
  auto* m = static_cast<Module*>(module);
  if (state().modules.erase(m) == 0) {
    violation("cuModuleUnload", ptr(module) + " is not a loaded module");
    return kInvalidHandle;
  }
  // Halide's runtime unloads every cached module when the program exits, from a static
  // destructor with no context current: not a call of embag's, and no rule a real driver
  // enforces there (the modules go with their contexts). Inside a call, the module's context
  // must be current.
  if (current() != m->context && (t_call || current() != nullptr)) {
    violation("cuModuleUnload", "module " + ptr(module) + " was loaded in context " +
                                    ptr(m->context) + ", but " + ptr(current()) + " is current");
  }
  for (auto& f : m->functions) state().functions.erase(f.get());
  delete m;
  return kSuccess;
}

FAKECUDA_API int cuModuleGetFunction(void** function, void* module, const char* name) {
  LOCK;
  auto* m = static_cast<Module*>(module);
  if (state().modules.count(m) == 0) {
    violation("cuModuleGetFunction", ptr(module) + " is not a loaded module");
    return kInvalidHandle;
  }
  if (current() != m->context) {
    violation("cuModuleGetFunction", "module " + ptr(module) + " was loaded in context " +
                                         ptr(m->context) + ", but " + ptr(current()) +
                                         " is current");
  }
  if (m->entries.count(name) == 0) return kNotFound;
  m->functions.push_back(std::make_unique<Function>());
  Function* f = m->functions.back().get();
  f->module = m;
  f->entry = name;
  state().functions.insert(f);
  *function = f;
  return kSuccess;
}

FAKECUDA_API int cuLaunchKernel(void* function, unsigned int grid_x, unsigned int grid_y,
                                unsigned int grid_z, unsigned int block_x, unsigned int block_y,
                                unsigned int block_z, unsigned int shared_bytes, void* stream,
                                void** params, void** extra) {
  LOCK;
  const char* name = "cuLaunchKernel";
  auto* f = static_cast<Function*>(function);
  if (state().functions.count(f) == 0) {
    violation(name, ptr(function) + " is not a function of a loaded module");
    return kInvalidHandle;
  }
  const std::string entry = "kernel " + f->entry + ": ";
  bool ok = check_stream_work(name, stream);
  if (current() != f->module->context) {
    violation(name, entry + "its module was loaded in context " + ptr(f->module->context) +
                        ", but " + ptr(current()) + " is current");
    ok = false;
  }
  // CUDA's limits (the driver refuses a launch past them with CUDA_ERROR_INVALID_VALUE).
  std::string geometry = "grid (" + std::to_string(grid_x) + ", " + std::to_string(grid_y) + ", " +
                         std::to_string(grid_z) + "), block (" + std::to_string(block_x) + ", " +
                         std::to_string(block_y) + ", " + std::to_string(block_z) + ")";
  bool geometry_ok = true;
  if (grid_x == 0 || grid_y == 0 || grid_z == 0 || block_x == 0 || block_y == 0 || block_z == 0) {
    violation(name, entry + geometry + " has an empty dimension");
    geometry_ok = false;
  }
  if (grid_x > kMaxGridX || grid_y > kMaxGridYZ || grid_z > kMaxGridYZ) {
    violation(name, entry + geometry +
                        " exceeds CUDA's grid limits (x <= 2^31 - 1, y and z <= " + "65,535)");
    geometry_ok = false;
  }
  if (block_x > kMaxBlockXY || block_y > kMaxBlockXY || block_z > kMaxBlockZ ||
      uint64_t{block_x} * block_y * block_z > kMaxThreadsPerBlock) {
    violation(name, entry + geometry + " exceeds CUDA's block limits (1,024 threads; x, y <= " +
                        "1,024, z <= 64)");
    geometry_ok = false;
  }
  if (shared_bytes > kMaxSharedBytes) {
    violation(name, entry + std::to_string(shared_bytes) + " bytes of dynamic shared memory");
    geometry_ok = false;
  }
  // Arguments: the kernelParams form only (Halide's), one pointer per declared parameter; a
  // 64-bit argument that points into the fake's memory must point into a live allocation (a
  // buffer freed before the launch that reads it).
  const std::vector<size_t>& sizes = f->module->entries.at(f->entry);
  if (extra != nullptr) {
    violation(name, entry + "the `extra` argument form is not what Halide uses");
    ok = false;
  }
  if (!sizes.empty() && params == nullptr) {
    violation(name, entry + "has " + std::to_string(sizes.size()) + " parameters, none passed");
    return kInvalidValue;
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (params[i] == nullptr) {
      violation(name, entry + "parameter " + std::to_string(i) + " is a null pointer");
      ok = false;
      continue;
    }
    if (sizes[i] != 8) continue;
    uint64_t value = 0;
    std::memcpy(&value, params[i], 8);
    // A 64-bit argument inside memory the fake handed out and took back is a buffer freed
    // before the kernel that reads it (other 64-bit values are scalars, or live buffers).
    if (find_allocation(value, 1) == nullptr && in_freed_range(value)) {
      violation(name, entry + "argument " + std::to_string(i) + " (" + hex(value) +
                          ") points into freed device memory");
      ok = false;
    }
  }
  LaunchRecord record{f->entry, {grid_x, grid_y, grid_z}, {block_x, block_y, block_z}, false};
  if (!geometry_ok) {
    state().launches.push_back(record);
    if (t_call) t_call->record.launches.push_back(record);
    return kInvalidValue;
  }
#if FAKECUDA_HAS_INTERPRETER
  if (ok && !state().record_only) {
    std::vector<const void*> arguments(params, params + sizes.size());
    AllocationChecker checker;
    std::string error;
    Dim3 grid{grid_x, grid_y, grid_z}, block{block_x, block_y, block_z};
    if (!f->module->program->launch(f->entry, grid, block, arguments, checker, &error)) {
      violation(name, entry + "failed: " + error);
      ok = false;
    }
    record.executed = true;
  }
#endif
  state().launches.push_back(record);
  if (t_call) t_call->record.launches.push_back(record);
  return ok ? kSuccess : kLaunchFailed;
}
