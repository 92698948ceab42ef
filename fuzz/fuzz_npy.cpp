// Fuzzes the .npy reader (tools/npy): any bytes must load cleanly or be refused with a message,
// never crash, over-read or allocate what the file cannot hold; an array that loads must hold
// exactly its shape's bytes and survive a save and a second load unchanged.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "npy/npy_file.h"

namespace {

// One scratch directory per process (libFuzzer may run several jobs at once).
const std::string& scratch_dir() {
  static const std::string dir = [] {
    char name[] = "/tmp/embag-fuzz-npy-XXXXXX";
    if (mkdtemp(name) == nullptr) std::abort();
    return std::string(name);
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = scratch_dir() + "/in.npy";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);

  embag::npy::Array array;
  const embag::Status s = embag::npy::load(path, &array);
  if (!s.ok()) {
    if (s.message().empty()) std::abort();  // a refusal must say why
    return 0;
  }
  // Loaded: the bytes match the shape, and the array round-trips.
  if (array.data.size() != static_cast<size_t>(array.numel()) * embag::dtype_size(array.dtype)) {
    std::abort();
  }
  if (array.data.size() > size) std::abort();  // never more data than the file held
  const std::string out = scratch_dir() + "/out.npy";
  if (!embag::npy::save(out, array).ok()) std::abort();
  embag::npy::Array back;
  if (!embag::npy::load(out, &back).ok()) std::abort();
  if (back.dtype != array.dtype || back.shape != array.shape || back.data != array.data) {
    std::abort();
  }
  return 0;
}
