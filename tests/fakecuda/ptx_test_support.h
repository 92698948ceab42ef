// tests/fakecuda/ptx_test_support.h: what the PTX interpreter's tests share: a MemoryChecker over
// the test's own buffers, and assembling a module with ptxas (so that every hand-written module
// is PTX a GPU would accept, not only PTX this interpreter accepts).
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "ptx_interpreter.h"

namespace fakecuda::testing_support {

// Allocations are registered by the test; an access must lie inside one of them.
class BufferChecker : public MemoryChecker {
 public:
  template <typename T>
  void add(const std::vector<T>& v) {
    add(v.data(), v.size() * sizeof(T));
  }
  void add(const void* p, size_t bytes) {
    ranges_.push_back({reinterpret_cast<uintptr_t>(p), bytes});
  }
  bool check_access(uint64_t address, size_t bytes, bool is_store, std::string* error) override {
    ++accesses_;
    for (const auto& r : ranges_) {
      if (address >= r.first && address - r.first <= r.second &&
          bytes <= r.second - (address - r.first)) {
        return true;
      }
    }
    char buf[128];
    std::snprintf(buf, sizeof buf, "%s of %zu bytes at 0x%llx is outside every allocation",
                  is_store ? "store" : "load", bytes, static_cast<unsigned long long>(address));
    *error = buf;
    return false;
  }
  uint64_t accesses() const { return accesses_; }

 private:
  std::vector<std::pair<uintptr_t, size_t>> ranges_;
  uint64_t accesses_ = 0;
};

inline std::string ptxas_path() { return FAKECUDA_PTXAS; }

// Assembles `ptx` with ptxas for the architecture its .target names; "" when it assembles,
// otherwise ptxas's message.
inline std::string ptxas_check(const std::string& ptx) {
  std::string arch = "sm_86";
  size_t t = ptx.find(".target ");
  if (t != std::string::npos) arch = ptx.substr(t + 8, ptx.find_first_of(" \n,", t + 8) - t - 8);
  char dir[] = "/tmp/fakecuda_ptxas_XXXXXX";
  if (!mkdtemp(dir)) return "mkdtemp failed";
  std::string path = std::string(dir) + "/module.ptx";
  std::string log = std::string(dir) + "/log.txt";
  {
    std::ofstream out(path);
    out << ptx;
  }
  std::string cmd =
      "'" + ptxas_path() + "' -arch=" + arch + " '" + path + "' -o /dev/null > '" + log + "' 2>&1";
  int rc = std::system(cmd.c_str());
  std::string message;
  if (rc != 0) {
    std::ifstream in(log);
    message.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (message.empty()) message = "ptxas exited with " + std::to_string(rc);
  }
  std::remove(path.c_str());
  std::remove(log.c_str());
  rmdir(dir);
  return message;
}

}  // namespace fakecuda::testing_support
