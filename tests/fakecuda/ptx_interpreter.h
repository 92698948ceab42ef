// tests/fakecuda/ptx_interpreter.h: executes the PTX modules Halide's CUDA back end emits, one
// thread after another, for the fake CUDA driver (tests/fakecuda/).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fakecuda {

struct Dim3 {
  uint32_t x = 1, y = 1, z = 1;
};

// The fake driver's allocations: every global load/store of a kernel is checked here first.
class MemoryChecker {
 public:
  virtual ~MemoryChecker() = default;
  // True when [address, address + bytes) lies inside one live allocation; otherwise false and
  // *error says which access, where, and why.
  virtual bool check_access(uint64_t address, size_t bytes, bool is_store, std::string* error) = 0;
};

// One entry's parameter as declared in the PTX (.param .u64 / .b32 / .align N .b8 name[K]).
struct ParamInfo {
  std::string name;
  size_t size = 0;       // bytes
  size_t alignment = 0;  // bytes
};

class PtxModule {
 public:
  virtual ~PtxModule() = default;
  // Parses a whole module (the text cuModuleLoadData receives). Returns null with *error naming
  // the first line it does not understand (never skips anything silently).
  static std::unique_ptr<PtxModule> parse(const std::string& ptx_text, std::string* error);
  virtual bool has_entry(const std::string& name) const = 0;
  virtual std::vector<ParamInfo> entry_params(const std::string& name) const = 0;
  // Runs every thread of the grid. `params[i]` points at the bytes of parameter i, as
  // cuLaunchKernel's kernelParams do. Global addresses are host addresses (the fake's device
  // memory is host memory). Returns false with *error on an unknown instruction, a memory access
  // the checker refuses, or a trap; nothing after the failing instruction runs.
  virtual bool launch(const std::string& entry, Dim3 grid, Dim3 block,
                      const std::vector<const void*>& params, MemoryChecker& memory,
                      std::string* error) = 0;
};

}  // namespace fakecuda
