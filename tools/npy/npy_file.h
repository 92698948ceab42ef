// Reading and writing NumPy .npy files (format versions 1.0-3.0, little-endian, C order), so the
// CLI and the golden-vector tests exchange arrays with Python without any extra dependency.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "embag/status.h"
#include "embag/tensor.h"

namespace embag::npy {

// An array loaded from or destined for a .npy file. `data` holds shape-product elements of
// `dtype`, C order. bfloat16 has no NumPy dtype; it is never read or written here.
struct Array {
  DType dtype = DType::kFloat32;
  // uint8 data ('|u1': a quantized table's rows, embag quantize's output): `dtype` is unused
  // and `data` holds the bytes. view() is not meaningful for it.
  bool bytes = false;
  std::vector<int64_t> shape;
  std::vector<unsigned char> data;

  int64_t numel() const;
  // A view of this array's memory (1-D or 2-D; 0-D arrays give a 1-D view of one element).
  TensorView view();
};

// An array of the given dtype and shape, zero-filled.
Array make_array(DType dtype, std::vector<int64_t> shape);

// Loads `path`. Accepts <i4, <i8, <f2, <f4, <f8, |u1 (and '|' / '=' byte orders where meaningful),
// any number of dimensions, C order only. Errors name the path and what is wrong with the file.
Status load(const std::string& path, Array* out);

// Writes `array` to `path` as format 1.0. Writes to a temporary file beside it and renames, so a
// failure never leaves a partial or empty file at `path`.
Status save(const std::string& path, const Array& array);

// The first half of save(): writes `array` complete (and fsynced) to a new file with a unique
// name beside `path` (mkstemp), and returns that name in `staged_path`. The caller renames it
// into place or removes it; concurrent writers of one `path` never share a staging file.
Status save_staged(const std::string& path, const Array& array, std::string* staged_path);

}  // namespace embag::npy
