// Binding KernelArgs to a kernel's metadata and running it.
#include "kernel_call.h"

#include <cstring>
#include <string>

#include "runtime_state.h"

namespace embag::internal {
namespace {

Status binding_error(const KernelEntry& kernel, const std::string& what) {
  return Status(StatusCode::kInternal,
                std::string("kernel ") + kernel.name + ": " + what + " (an embag bug)");
}

// A table stored as float16 / bfloat16 may be declared to a GPU kernel as its uint16 bits (the
// GPU back ends convert in software); the memory is the same, only the declared type differs.
bool same_bits_storage(const halide_type_t& declared, const halide_type_t& given) {
  return declared.code == halide_type_uint && declared.bits == 16 && given.bits == 16 &&
         (given.code == halide_type_float || given.code == halide_type_bfloat);
}

}  // namespace

KernelArgs& KernelArgs::add(const char* name, void* pointer, bool is_buffer, size_t scalar_bytes) {
  if (count_ < kMaxArgs) args_[count_++] = Arg{name, pointer, is_buffer, scalar_bytes};
  return *this;
}

KernelArgs& KernelArgs::buffer(const char* name, halide_buffer_t* buffer) {
  return add(name, buffer, true, 0);
}

const KernelArgs::Arg* KernelArgs::find(const char* name) const {
  for (size_t i = 0; i < count_; ++i) {
    if (std::strcmp(args_[i].name, name) == 0) return &args_[i];
  }
  return nullptr;
}

Status run_kernel(CallContext& call, const KernelEntry& kernel, const KernelArgs& args) {
  const halide_filter_metadata_t* metadata = kernel.metadata();
  constexpr int kMaxArguments = 32;  // (KernelArgs::kMaxArgs, and the user context)
  if (metadata->num_arguments > kMaxArguments) return binding_error(kernel, "too many arguments");
  void* argv[kMaxArguments];
  void* user_context = &call;
  for (int i = 0; i < metadata->num_arguments; ++i) {
    const halide_filter_argument_t& declared = metadata->arguments[i];
    if (std::strcmp(declared.name, "__user_context") == 0) {
      argv[i] = &user_context;
      continue;
    }
    const KernelArgs::Arg* given = args.find(declared.name);
    if (given == nullptr) {
      return binding_error(kernel, std::string("argument '") + declared.name + "' was not passed");
    }
    const bool declared_buffer = declared.kind != halide_argument_kind_input_scalar;
    if (declared_buffer != given->is_buffer) {
      return binding_error(kernel, std::string("argument '") + declared.name +
                                       "' passed as the wrong kind (buffer vs scalar)");
    }
    if (declared_buffer) {
      auto* buffer = static_cast<halide_buffer_t*>(given->pointer);
      if (buffer->dimensions != declared.dimensions) {
        return binding_error(kernel, std::string("buffer '") + declared.name + "' has " +
                                         std::to_string(buffer->dimensions) + " dimensions, not " +
                                         std::to_string(declared.dimensions));
      }
      if (same_bits_storage(declared.type, buffer->type)) buffer->type = declared.type;
      if (buffer->type != declared.type) {
        return binding_error(
            kernel, std::string("buffer '") + declared.name + "' has the wrong element type");
      }
    } else if (given->scalar_bytes != static_cast<size_t>(declared.type.bytes())) {
      return binding_error(kernel,
                           std::string("scalar '") + declared.name + "' has the wrong size");
    }
    argv[i] = given->pointer;
  }

  int result = 0;
  {
    ActiveCallScope active(&call);
    result = kernel.argv(argv);
  }
  if (result != 0) {
    const std::string message = call.error();
    return Status(StatusCode::kInternal,
                  std::string("kernel ") + kernel.name + " failed (Halide error " +
                      std::to_string(result) + "): " +
                      (message.empty() ? "no message reached embag (a host program's Halide error "
                                         "handler, installed after embag's, received it)"
                                       : message));
  }
  record_last_variant(kernel.name);
  return Status::Ok();
}

}  // namespace embag::internal
