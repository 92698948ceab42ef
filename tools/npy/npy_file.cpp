// Reading and writing NumPy .npy files: the header parser, the dtype table, and the atomic save.
//
// The format (numpy/lib/format.py): the magic "\x93NUMPY", a major and minor version byte, the
// header length (uint16 little-endian in 1.0, uint32 in 2.0 and 3.0), then the header, a Python
// dict literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } padded with
// spaces and a newline so the data starts on a 64-byte boundary, then the raw C-order data.
#include "npy/npy_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>

// Element bytes are copied to and from the file unchanged, which is only right on a
// little-endian host (every target embag builds for).
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy_file.cpp assumes a little-endian host"
#endif

namespace embag::npy {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
// NumPy pads headers so the data is 64-byte aligned (format.ARRAY_ALIGN); memory-mapping
// readers rely on it.
constexpr size_t kDataAlignment = 64;
// NumPy refuses longer headers (format._MAX_HEADER_SIZE) as unsafe to parse; so does embag,
// before reading or allocating anything for one.
constexpr size_t kMaxHeaderSize = 10000;

Status file_error(const std::string& path, const std::string& what) {
  return Status(StatusCode::kInvalidArgument, path + ": " + what);
}

// The dtypes NumPy and embag share, by the descr NumPy writes without its byte-order character.
struct DescrEntry {
  const char* type;  // "f4"
  DType dtype;
};
constexpr DescrEntry kDescrTable[] = {
    {"i4", DType::kInt32},   {"i8", DType::kInt64},   {"f2", DType::kFloat16},
    {"f4", DType::kFloat32}, {"f8", DType::kFloat64},
};

std::optional<std::string> descr_type_of(DType dtype) {
  for (const DescrEntry& entry : kDescrTable) {
    if (entry.dtype == dtype) {
      return std::string(entry.type);
    }
  }
  return std::nullopt;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  // Python's tuple spelling, so messages and headers read like NumPy's.
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    text += (i > 0 ? ", " : "") + std::to_string(shape[i]);
  }
  return text + (shape.size() == 1 ? ",)" : ")");
}

// Product of the dimensions times the element size, or nullopt when it overflows int64: a
// hostile header must give an error, not a huge allocation.
std::optional<int64_t> byte_count(const std::vector<int64_t>& shape, size_t element_size) {
  int64_t count = static_cast<int64_t>(element_size);
  for (int64_t dim : shape) {
    if (dim < 0) {
      return std::nullopt;
    }
    if (dim != 0 && count > std::numeric_limits<int64_t>::max() / dim) {
      return std::nullopt;
    }
    count *= dim;
  }
  return count;
}

// The fields of a header; a field stays empty when the header lacks it.
struct Header {
  std::optional<std::string> descr;
  std::optional<bool> fortran_order;
  std::optional<std::vector<int64_t>> shape;
};

// Parses the one dict literal NumPy writes. Only the literal forms NumPy produces are accepted
// (quoted strings, True/False, tuples of integers); anything else is an error message.
class HeaderParser {
 public:
  explicit HeaderParser(const std::string& text) : text_(text) {}

  // Returns an empty string on success, otherwise what is wrong.
  std::string parse(Header* header) {
    skip_space();
    if (!take('{')) {
      return "header is not a Python dict";
    }
    skip_space();
    while (!take('}')) {
      std::string key;
      if (!parse_string(&key)) {
        return "header has a malformed key at byte " + std::to_string(pos_);
      }
      skip_space();
      if (!take(':')) {
        return "header has no ':' after key '" + key + "'";
      }
      skip_space();
      std::string error = parse_value(key, header);
      if (!error.empty()) {
        return error;
      }
      skip_space();
      if (!take(',')) {
        skip_space();
        if (!take('}')) {
          return "header dict is not closed after key '" + key + "'";
        }
        break;
      }
      skip_space();
    }
    // NumPy pads with spaces and ends with a newline; anything else after the dict is junk that
    // NumPy's literal_eval refuses.
    skip_space();
    if (pos_ != text_.size()) {
      return "header has junk after the dict at byte " + std::to_string(pos_);
    }
    if (!header->descr || !header->fortran_order || !header->shape) {
      return "header lacks one of 'descr', 'fortran_order', 'shape'";
    }
    return "";
  }

 private:
  std::string parse_value(const std::string& key, Header* header) {
    if (key == "descr") {
      if (peek() == '[') {
        return "structured dtypes (a list descr) are not supported";
      }
      std::string descr;
      if (!parse_string(&descr)) {
        return "header's 'descr' is not a string";
      }
      header->descr = descr;
      return "";
    }
    if (key == "fortran_order") {
      if (take_word("True")) {
        header->fortran_order = true;
      } else if (take_word("False")) {
        header->fortran_order = false;
      } else {
        return "header's 'fortran_order' is not True or False";
      }
      return "";
    }
    if (key == "shape") {
      std::vector<int64_t> shape;
      if (!parse_shape(&shape)) {
        return "header's 'shape' is not a tuple of non-negative integers";
      }
      header->shape = shape;
      return "";
    }
    return "header has an unexpected key '" + key + "'";
  }

  bool parse_shape(std::vector<int64_t>* shape) {
    if (!take('(')) {
      return false;
    }
    skip_space();
    while (!take(')')) {
      int64_t dim = 0;
      if (!parse_dim(&dim)) {
        return false;
      }
      shape->push_back(dim);
      skip_space();
      if (!take(',')) {
        skip_space();
        return take(')');
      }
      skip_space();
    }
    return true;
  }

  bool parse_dim(int64_t* dim) {
    if (pos_ >= text_.size() || !std::isdigit(static_cast<unsigned char>(text_[pos_]))) {
      return false;
    }
    int64_t value = 0;
    while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) {
      const int digit = text_[pos_] - '0';
      if (value > (std::numeric_limits<int64_t>::max() - digit) / 10) {
        return false;
      }
      value = value * 10 + digit;
      ++pos_;
    }
    // Python 2 wrote long integers with an 'L' suffix; NumPy still reads such files.
    take('L');
    *dim = value;
    return true;
  }

  bool parse_string(std::string* out) {
    const char quote = peek();
    if (quote != '\'' && quote != '"') {
      return false;
    }
    ++pos_;
    const size_t end = text_.find(quote, pos_);
    if (end == std::string::npos) {
      return false;
    }
    *out = text_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return true;
  }

  bool take_word(const char* word) {
    const size_t length = std::strlen(word);
    if (text_.compare(pos_, length, word) != 0) {
      return false;
    }
    pos_ += length;
    return true;
  }

  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  bool take(char c) {
    if (peek() != c) {
      return false;
    }
    ++pos_;
    return true;
  }

  void skip_space() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) {
      ++pos_;
    }
  }

  const std::string& text_;
  size_t pos_ = 0;
};

// Maps a descr such as "<f4" to a DType, or explains why it cannot.
Status dtype_of_descr(const std::string& path, const std::string& descr, DType* dtype) {
  if (descr.size() >= 2) {
    const char order = descr[0];
    const std::string type = descr.substr(1);
    for (const DescrEntry& entry : kDescrTable) {
      if (type != entry.type) {
        continue;
      }
      // '=' is native order and '|' means "not applicable"; both are little-endian here.
      if (order == '<' || order == '=' || order == '|') {
        *dtype = entry.dtype;
        return Status::Ok();
      }
      if (order == '>') {
        return file_error(path, "big-endian data ('" + descr +
                                    "') is not supported; save arr.astype('<" + type + "')");
      }
    }
  }
  return file_error(
      path, "dtype '" + descr + "' is not supported; embag reads <i4, <i8, <f2, <f4 and <f8");
}

// Reads exactly `size` bytes or reports the file as truncated.
Status read_exact(std::ifstream& file, const std::string& path, void* buffer, size_t size,
                  const char* what) {
  file.read(static_cast<char*>(buffer), static_cast<std::streamsize>(size));
  if (static_cast<size_t>(file.gcount()) != size) {
    return file_error(path, std::string("file is truncated in its ") + what);
  }
  return Status::Ok();
}

// The text of a format 1.0 header, padded so the data is aligned. Falls back to 2.0 only when
// the dict cannot fit 1.0's 16-bit length (thousands of dimensions), as NumPy does.
std::string encode_header(const std::string& descr, const std::vector<int64_t>& shape) {
  std::string dict =
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape_string(shape) + ", }";
  for (const int major : {1, 2}) {
    const size_t length_size = major == 1 ? 2 : 4;
    const size_t prefix = kMagicSize + 2 + length_size;
    std::string header = dict;
    // At least the terminating newline; spaces before it reach the alignment.
    const size_t unpadded = prefix + header.size() + 1;
    header.append((kDataAlignment - unpadded % kDataAlignment) % kDataAlignment, ' ');
    header += '\n';
    if (major == 2 || header.size() <= std::numeric_limits<uint16_t>::max()) {
      std::string out(kMagic, kMagicSize);
      out += static_cast<char>(major);
      out += '\0';
      for (size_t i = 0; i < length_size; ++i) {
        out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
      }
      return out + header;
    }
  }
  return "";  // unreachable: the 2.0 iteration always returns
}

// Writes all of `size` bytes, retrying short writes and signals.
bool write_all(int fd, const void* buffer, size_t size) {
  const char* bytes = static_cast<const char*>(buffer);
  while (size > 0) {
    const ssize_t written = ::write(fd, bytes, size);
    if (written < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    bytes += written;
    size -= static_cast<size_t>(written);
  }
  return true;
}

}  // namespace

int64_t Array::numel() const {
  int64_t count = 1;
  for (int64_t dim : shape) {
    count *= dim;
  }
  return count;
}

TensorView Array::view() {
  // A zero-element array has no storage, but a null data pointer reads as "no tensor" to
  // checks downstream; a static anchor gives it an address that is never read or written.
  alignas(16) static unsigned char empty_anchor[16];
  void* base = data.empty() ? static_cast<void*>(empty_anchor) : data.data();
  if (shape.size() <= 1) {
    return make_view_1d(base, dtype, shape.empty() ? 1 : shape[0]);
  }
  TensorView view = make_view_2d(base, dtype, shape[0], shape[1]);
  if (shape.size() > 2) {
    // TensorView holds two dimensions; keeping the real ndim lets validation say "got Tensor of
    // dimension 3" instead of silently flattening. The strides are those of the real layout.
    view.ndim = static_cast<int>(shape.size());
    int64_t inner = 1;
    for (size_t i = 2; i < shape.size(); ++i) {
      inner *= shape[i];
    }
    view.strides[1] = inner;
    view.strides[0] = inner * shape[1];
  }
  return view;
}

Array make_array(DType dtype, std::vector<int64_t> shape) {
  Array array;
  array.dtype = dtype;
  array.shape = std::move(shape);
  array.data.assign(static_cast<size_t>(array.numel()) * dtype_size(dtype), 0);
  return array;
}

Status load(const std::string& path, Array* out) {
  // A directory opens as a stream on Linux and would read as a baffling truncated file.
  std::error_code ignored;
  if (std::filesystem::is_directory(path, ignored)) {
    return file_error(path, "is a directory");
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return file_error(path, std::string("cannot open: ") + std::strerror(errno));
  }
  file.seekg(0, std::ios::end);
  const std::streamoff file_size = file.tellg();
  file.seekg(0, std::ios::beg);
  if (file_size < 0) {
    return file_error(path, "cannot determine the file size");
  }

  unsigned char preamble[kMagicSize + 2];
  Status status = read_exact(file, path, preamble, sizeof(preamble), "magic string");
  if (!status.ok()) {
    return status;
  }
  if (std::memcmp(preamble, kMagic, kMagicSize) != 0) {
    return file_error(path, "not a .npy file (no \\x93NUMPY magic string)");
  }
  const int major = preamble[kMagicSize];
  const int minor = preamble[kMagicSize + 1];
  if (major < 1 || major > 3 || minor != 0) {
    return file_error(path, "unsupported .npy format version " + std::to_string(major) + "." +
                                std::to_string(minor) + " (embag reads 1.0, 2.0 and 3.0)");
  }
  // 3.0 differs from 2.0 only in allowing UTF-8 in the header, which the parser passes through.
  const size_t length_size = major == 1 ? 2 : 4;
  unsigned char length_bytes[4] = {0, 0, 0, 0};
  status = read_exact(file, path, length_bytes, length_size, "header length");
  if (!status.ok()) {
    return status;
  }
  size_t header_length = 0;
  for (size_t i = 0; i < length_size; ++i) {
    header_length |= static_cast<size_t>(length_bytes[i]) << (8 * i);
  }
  if (header_length > kMaxHeaderSize) {
    return file_error(path, "header length " + std::to_string(header_length) +
                                " exceeds NumPy's limit of " + std::to_string(kMaxHeaderSize) +
                                " bytes");
  }
  const int64_t header_end = static_cast<int64_t>(kMagicSize + 2 + length_size + header_length);
  if (header_end > file_size) {
    return file_error(path, "file is truncated in its header (header length " +
                                std::to_string(header_length) + ", file size " +
                                std::to_string(file_size) + ")");
  }
  std::string header_text(header_length, '\0');
  status = read_exact(file, path, header_text.data(), header_length, "header");
  if (!status.ok()) {
    return status;
  }

  Header header;
  const std::string parse_error = HeaderParser(header_text).parse(&header);
  if (!parse_error.empty()) {
    return file_error(path, parse_error);
  }
  DType dtype = DType::kFloat32;
  const std::string& descr = *header.descr;
  const bool bytes = descr == "|u1" || descr == "<u1" || descr == "=u1";
  if (!bytes) {
    status = dtype_of_descr(path, descr, &dtype);
    if (!status.ok()) {
      return status;
    }
  }
  if (*header.fortran_order) {
    return file_error(path,
                      "fortran_order (column-major) arrays are not supported; save "
                      "np.ascontiguousarray(arr)");
  }
  const std::vector<int64_t>& shape = *header.shape;
  const std::optional<int64_t> data_size = byte_count(shape, bytes ? 1 : dtype_size(dtype));
  if (!data_size) {
    return file_error(path, "shape " + shape_string(shape) + " is too large");
  }
  const int64_t available = file_size - header_end;
  if (available != *data_size) {
    return file_error(path, std::string(available < *data_size ? "file is truncated: " : "") +
                                "shape " + shape_string(shape) + " of " +
                                (bytes ? "uint8" : dtype_name(dtype)) + " needs " +
                                std::to_string(*data_size) + " bytes of data but the file holds " +
                                std::to_string(available));
  }

  Array array;
  array.dtype = dtype;
  array.bytes = bytes;
  array.shape = shape;
  array.data.resize(static_cast<size_t>(*data_size));
  status = read_exact(file, path, array.data.data(), array.data.size(), "data");
  if (!status.ok()) {
    return status;
  }
  *out = std::move(array);
  return Status::Ok();
}

Status save_staged(const std::string& path, const Array& array, std::string* staged_path) {
  const std::optional<std::string> type =
      array.bytes ? std::optional<std::string>("u1") : descr_type_of(array.dtype);
  if (!type) {
    return file_error(path, std::string(dtype_name(array.dtype)) + " has no .npy dtype");
  }
  const std::optional<int64_t> data_size =
      byte_count(array.shape, array.bytes ? 1 : dtype_size(array.dtype));
  if (!data_size || static_cast<uint64_t>(*data_size) != array.data.size()) {
    return file_error(path, "array holds " + std::to_string(array.data.size()) +
                                " bytes, which does not match shape " + shape_string(array.shape) +
                                " of " + (array.bytes ? "uint8" : dtype_name(array.dtype)));
  }
  const std::string header = encode_header((array.bytes ? "|" : "<") + *type, array.shape);

  // mkstemp picks a name no other process or thread holds (O_EXCL), beside the target so the
  // final rename stays within one file system and is atomic: concurrent runs writing the same
  // output never share a staging file.
  std::string temp_path = path + ".embag-XXXXXX";
  const int fd = ::mkstemp(temp_path.data());
  if (fd < 0) {
    return file_error(
        path, "cannot create a temporary file beside it: " + std::string(std::strerror(errno)));
  }
  // mkstemp creates 0600; a finished output gets the permissions of any new file (0666 less the
  // umask). The umask can only be read by setting it; the CLI is single-threaded here.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  // fsync before rename: otherwise a crash soon after can leave the new name with no data.
  const bool written = ::fchmod(fd, 0666 & ~mask) == 0 &&
                       write_all(fd, header.data(), header.size()) &&
                       write_all(fd, array.data.data(), array.data.size()) && ::fsync(fd) == 0;
  const int write_errno = errno;
  const bool closed = ::close(fd) == 0;
  if (!written || !closed) {
    ::unlink(temp_path.c_str());
    return file_error(path,
                      std::string("cannot write: ") + std::strerror(written ? errno : write_errno));
  }
  *staged_path = temp_path;
  return Status::Ok();
}

Status save(const std::string& path, const Array& array) {
  std::string temp_path;
  if (Status s = save_staged(path, array, &temp_path); !s.ok()) {
    return s;
  }
  if (std::rename(temp_path.c_str(), path.c_str()) != 0) {
    const int rename_errno = errno;
    ::unlink(temp_path.c_str());
    return file_error(path, std::string("cannot rename the temporary file into place: ") +
                                std::strerror(rename_errno));
  }
  return Status::Ok();
}

}  // namespace embag::npy
