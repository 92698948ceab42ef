// Calling a generated kernel: arguments bound by name to the kernel's own argument list.
//
// Every kernel has the uniform entry point `int <name>_argv(void** args)` and a metadata table
// naming its arguments in order. A call site names what it passes (KernelArgs); run_kernel puts
// each one where the kernel's metadata says, after checking kinds, types and dimensions, so a
// generator that reorders or renames an argument fails loudly instead of reading the wrong array.
#pragma once

#include <HalideRuntime.h>

#include <array>
#include <cstddef>
#include <type_traits>

#include "call_context.h"
#include "kernel_registry.h"

namespace embag::internal {

class KernelArgs {
 public:
  // A buffer argument (input or output).
  KernelArgs& buffer(const char* name, halide_buffer_t* buffer);
  // A scalar argument; `value` must stay alive until the kernel returns.
  template <typename T>
  KernelArgs& scalar(const char* name, const T* value) {
    static_assert(std::is_arithmetic_v<T>, "scalar kernel arguments are numbers or bool");
    return add(name, const_cast<T*>(value), false, sizeof(T));
  }

  struct Arg {
    const char* name;
    void* pointer;
    bool is_buffer;
    size_t scalar_bytes;
  };
  const Arg* find(const char* name) const;

 private:
  KernelArgs& add(const char* name, void* pointer, bool is_buffer, size_t scalar_bytes);
  static constexpr size_t kMaxArgs = 32;  // (the fused optimizer kernels take 27)
  std::array<Arg, kMaxArgs> args_{};
  size_t count_ = 0;
};

// Runs `kernel` with `args` in `call`'s context (its user_context). A non-zero result becomes a
// kInternal Status carrying Halide's message; a call that cannot be bound (missing or mismatched
// argument) is a kInternal Status too, and nothing runs. Records the kernel as this thread's
// last variant on success.
Status run_kernel(CallContext& call, const KernelEntry& kernel, const KernelArgs& args);

}  // namespace embag::internal
