// A reader over libFuzzer's bytes: fixed-width values taken from the front, zeros once the bytes
// run out, so every input decodes to some call and short inputs stay meaningful.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace embag::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  template <typename T>
  T take() {
    T value{};
    const size_t n = size_ - pos_ < sizeof(T) ? size_ - pos_ : sizeof(T);
    std::memcpy(&value, data_ + pos_, n);
    pos_ += n;
    return value;
  }
  // A value in [0, n).
  uint32_t below(uint32_t n) { return n == 0 ? 0 : take<uint8_t>() % n; }
  bool flag() { return take<uint8_t>() & 1; }
  size_t remaining() const { return size_ - pos_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace embag::fuzz
